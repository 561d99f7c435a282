//! The operator endpoints of a lockstep server: `GET /metrics` in Prometheus text, the
//! status page and its JSON, and the admin actions (compact, replay parked, reset a
//! subscription), which are refused with 401/403 and change nothing without the admin token.
#![cfg(feature = "http")]

mod lockstep_support;

use std::sync::Arc;
use std::time::Duration;

use lockstep_support::*;
use serde_json::Value;
use tidemark::lockstep::{Server, ServerOptions};
use tidemark::{ExpectedVersion, Nack, NewEvent, Start, Store, StreamSelector, SubscriptionOptions};

const TOKEN: &str = "adm1n";

fn serve(store: &Arc<Store>, opts: &str) -> Server {
    Server::start(store.clone(), "127.0.0.1:0", ServerOptions::from_json(Some(opts)).unwrap()).unwrap()
}

fn url(s: &Server, path: &str) -> String {
    format!("http://{}{path}", s.addr())
}

fn post(s: &Server, path: &str, token: Option<&str>) -> Got {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request("POST", &url(s, path), &headers, b"")
}

/// A store with a subscription "orders" whose first event is parked, and its consumer.
fn parked_store() -> (Arc<Store>, tidemark::Consumer, u64) {
    let store = Arc::new(Store::memory(None).unwrap());
    let evs: Vec<NewEvent> =
        (0..3).map(|_| NewEvent { id: None, event_type: b"t", data: b"{}", metadata: b"" }).collect();
    store.append(b"o-1", &evs, ExpectedVersion::Any).unwrap();
    let o = SubscriptionOptions { max_in_flight: 1, ..Default::default() };
    store.subscription_create(b"orders", &StreamSelector::all(), Start::Beginning, &o).unwrap();
    let c = store.subscription_connect(b"orders").unwrap();
    let d = c.next(Duration::from_secs(10)).unwrap();
    c.nack(d[0].event.revision, Nack::Park).unwrap();
    let first = d[0].event.revision;
    (store, c, first)
}

#[test]
fn metrics_ui_and_status_are_served() {
    let store = Arc::new(Store::memory(None).unwrap());
    store.put(b"a", b"1").unwrap();
    let s = serve(&store, "{}");
    let m = get(&url(&s, "/metrics"));
    assert_eq!(m.status, 200);
    assert_eq!(m.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert!(m.text().contains("\ntidemark_revision 1\n"), "{}", m.text());
    let ui = get(&url(&s, "/ui"));
    assert_eq!(ui.status, 200);
    let page = ui.text();
    assert!(page.starts_with("<!doctype html>") && page.contains("/ui/status"));
    assert!(!page.contains("http://") && !page.contains("https://"), "the page loads nothing from elsewhere");
    let st = get(&url(&s, "/ui/status")).json();
    assert_eq!(st["metrics"]["tidemark_revision"], 1);
    assert_eq!(st["store"]["revision"], 1);
    assert_eq!(st["admin"], false);
    assert_eq!(st["subscriptions"], Value::Array(vec![]));
    // A feed path is still a feed.
    assert_eq!(get(&url(&s, "/x/0")).status, 200);
}

#[test]
fn the_server_token_guards_metrics_too() {
    let store = Arc::new(Store::memory(None).unwrap());
    let s = serve(&store, r#"{"token": "feed"}"#);
    assert_eq!(get(&url(&s, "/metrics")).status, 401);
    let ok = request("GET", &url(&s, "/metrics"), &[("Authorization", "Bearer feed")], b"");
    assert_eq!(ok.status, 200);
}

#[test]
fn admin_actions_are_refused_without_the_token_and_change_nothing() {
    let (store, _c, first) = parked_store();
    let off = serve(&store, "{}");
    assert_eq!(
        post(&off, "/admin/subscriptions/orders/replay", Some(TOKEN)).status,
        403,
        "no admin token: off"
    );
    let s = serve(&store, &format!(r#"{{"admin_token": "{TOKEN}"}}"#));
    let rev = store.current_revision();
    for path in [
        "/admin/compact?revision=3",
        "/admin/subscriptions/orders/replay",
        "/admin/subscriptions/orders/reset?revision=1",
    ] {
        let none = post(&s, path, None);
        assert_eq!(none.status, 401, "{path}");
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));
        assert_eq!(post(&s, path, Some("wrong")).status, 403, "{path}");
    }
    assert_eq!(store.current_revision(), rev, "nothing was written");
    assert_eq!(store.earliest_revision(), 1, "nothing compacted");
    let info = &store.subscription_list().unwrap()[0];
    assert_eq!((info.parked, info.checkpoint), (1, first));
    assert_eq!(
        request("GET", &url(&s, "/admin/compact?revision=2"), &[("Authorization", "Bearer adm1n")], b"")
            .status,
        405
    );
    assert_eq!(post(&s, "/admin/compact", Some(TOKEN)).status, 400, "needs a revision");
    assert_eq!(post(&s, "/admin/nothing", Some(TOKEN)).status, 404);
    assert_eq!(post(&s, "/admin/subscriptions/nobody/replay", Some(TOKEN)).status, 404);
}

#[test]
fn admin_actions_with_the_token() {
    let (store, c, first) = parked_store();
    let s = serve(&store, &format!(r#"{{"admin_token": "{TOKEN}"}}"#));
    assert_eq!(get(&url(&s, "/ui/status")).json()["subscriptions"][0]["parked_events"][0]["revision"], first);
    let r = post(&s, "/admin/subscriptions/orders/replay", Some(TOKEN));
    assert_eq!((r.status, r.json()["replayed"].clone()), (200, Value::from(1)));
    let again = c.next(Duration::from_secs(10)).unwrap();
    assert_eq!(again[0].event.revision, first);
    c.ack(&[first]).unwrap();
    assert_eq!(store.subscription_list().unwrap()[0].parked, 0);

    // Reset to the first event: the open consumer is ended, a new one gets everything again.
    let r = post(&s, "/admin/subscriptions/orders/reset?revision=1", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(store.subscription_list().unwrap()[0].checkpoint, 0);
    assert!(matches!(c.next(Duration::from_millis(1)), Err(tidemark::Error::Conflict { .. })));
    let c2 = store.subscription_connect(b"orders").unwrap();
    assert_eq!(c2.next(Duration::from_secs(10)).unwrap()[0].event.revision, 1);
    assert_eq!(post(&s, "/admin/subscriptions/orders/reset?revision=999", Some(TOKEN)).status, 400);

    let r = post(&s, "/admin/compact?revision=3", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(store.earliest_revision(), 3);
    assert_eq!(get(&url(&s, "/ui/status")).json()["admin"], true);
}

/// The value of the metric line `family{follower="name",...} v`, if there is one.
fn follower_metric(s: &Server, family: &str, name: &str) -> Option<u64> {
    let text = get(&url(s, "/metrics")).text();
    let start = format!("{family}{{follower=\"{name}\",");
    text.lines().find(|l| l.starts_with(&start))?.rsplit(' ').next()?.parse().ok()
}

#[test]
fn followers_are_listed_with_their_lag_while_connected() {
    use std::io::Write;
    use tidemark::lockstep::{FollowOptions, Follower};
    let store = Arc::new(Store::memory(None).unwrap());
    store.put(b"/s/a", b"{}").unwrap();
    let s = serve(&store, r#"{"heartbeat_ms": 50}"#);
    let m = get(&url(&s, "/metrics")).text();
    assert!(m.contains("\ntidemark_followers 0\n"), "{m}");
    // A named follower catches up: lag 0, also after writes elsewhere in the store.
    let dst = Arc::new(Store::memory(None).unwrap());
    let opts = FollowOptions::from_json(Some(r#"{"name": "eu-1", "poll_ms": 50}"#)).unwrap();
    let f = Follower::start(dst.clone(), &url(&s, "/s/"), opts, None).unwrap();
    wait_until("eu-1 listed at lag 0", || {
        follower_metric(&s, "tidemark_follower_lag_revisions", "eu-1") == Some(0)
    });
    store.put(b"/other", b"{}").unwrap();
    store.put(b"/s/b", b"{}").unwrap();
    let current = store.current_revision();
    wait_until("eu-1 at the current revision", || {
        follower_metric(&s, "tidemark_follower_position_revision", "eu-1") == Some(current)
    });
    // A follower that stops reading falls behind, and its lag shows it.
    let mut stuck = std::net::TcpStream::connect(s.addr()).unwrap();
    write!(stuck, "GET /s/0?follow=true&follower=stuck HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    wait_until("stuck listed", || follower_metric(&s, "tidemark_follower_lag_revisions", "stuck").is_some());
    let pad = format!("{{\"pad\":\"{}\"}}", "x".repeat(64 * 1024));
    for i in 0..400 {
        store.put(format!("/s/big{i}").as_bytes(), pad.as_bytes()).unwrap();
    }
    wait_until("stuck behind, eu-1 caught up", || {
        follower_metric(&s, "tidemark_follower_lag_revisions", "stuck").is_some_and(|lag| lag > 100)
            && follower_metric(&s, "tidemark_follower_lag_revisions", "eu-1") == Some(0)
    });
    let st = get(&url(&s, "/ui/status")).json();
    let names: Vec<&str> =
        st["followers"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["eu-1", "stuck"]);
    assert_eq!(st["followers"][0]["prefix"], "/s/");
    assert_eq!(st["followers"][0]["lag"], 0);
    assert!(get(&url(&s, "/metrics")).text().contains("\ntidemark_followers 2\n"));
    // Gone when their connections are.
    drop(stuck);
    f.stop();
    wait_until("no followers", || {
        let m = get(&url(&s, "/metrics")).text();
        m.contains("\ntidemark_followers 0\n") && !m.contains("tidemark_follower_lag_revisions{")
    });
    assert_eq!(get(&url(&s, "/ui/status")).json()["followers"], Value::Array(vec![]));
}

#[test]
fn an_unnamed_follower_is_named_by_its_address() {
    let store = Arc::new(Store::memory(None).unwrap());
    let s = serve(&store, "{}");
    let mut c = std::net::TcpStream::connect(s.addr()).unwrap();
    std::io::Write::write_all(&mut c, b"GET /s/0?follow=true HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let me = c.local_addr().unwrap().to_string();
    wait_until("listed by address", || {
        get(&url(&s, "/ui/status")).json()["followers"][0]["name"].as_str() == Some(me.as_str())
    });
}
