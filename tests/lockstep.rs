//! lockstep over HTTP: the server (checked with curl and with our own client), the follower
//! (against our server and against a reference server written from the protocol), SIGKILL
//! resume, server restart, the C API, the CLI, and a property test of the parsers.
//!
//! Servers listen on 127.0.0.1 with ephemeral ports; every thread and child process is
//! stopped at the end of its test; nothing asserts on time.
#![cfg(feature = "http")]

mod common;
mod lockstep_support;

use std::ffi::{c_void, CStr, CString};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cli;
use lockstep_support::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use tidemark::lockstep::record::{parse_line, Line, LineSplitter, Parsed};
use tidemark::lockstep::{FollowEvent, FollowOptions, Follower, Server, ServerOptions};
use tidemark::{Error, Store};

fn memory() -> Arc<Store> {
    Arc::new(Store::memory(None).unwrap())
}

fn serve(store: &Arc<Store>, opts: &str) -> Server {
    Server::start(store.clone(), "127.0.0.1:0", ServerOptions::from_json(Some(opts)).unwrap()).unwrap()
}

fn fast_follow(extra: Value) -> FollowOptions {
    let mut o = json!({"backoff_initial_ms": 20, "backoff_max_ms": 300, "poll_ms": 50});
    if let (Value::Object(m), Value::Object(e)) = (&mut o, extra) {
        m.extend(e);
    }
    FollowOptions::from_json(Some(&o.to_string())).unwrap()
}

fn ids(lines: &[Value]) -> Vec<String> {
    lines.iter().map(|l| l["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn serves_records_finite_with_curl_and_our_client() {
    let store = memory();
    store.put(b"/servers/123", br#"{"ip":"10.0.0.1","port":1234}"#).unwrap(); // 1
    store.put(b"/servers/124", br#"{"ip":"10.0.0.2","port":1234}"#).unwrap(); // 2
    store.put(b"/servers/125", b"42").unwrap(); // 3
    store.put(b"/servers/123", br#"{"ip":"10.0.0.9","id":"spoof","updated_at":1}"#).unwrap(); // 4
    store.delete(b"/servers/124").unwrap(); // 5
    store.put(b"/other/1", b"{}").unwrap(); // 6
    store.put(b"/servers/126", b"not json").unwrap(); // 7
    let server = serve(&store, "{}");
    let base = format!("http://{}", server.addr());

    // since 0: live records only, sorted by updated_at, reserved names win.
    let g = get(&format!("{base}/servers/0"));
    assert_eq!(g.status, 200);
    assert_eq!(g.header("content-type"), Some("application/x-ndjson"));
    let lines = g.lines();
    assert_eq!(ids(&lines), ["125", "123", "126"]);
    assert_eq!(lines[0], json!({"id":"125","updated_at":3,"deleted_at":null,"value":42}));
    assert_eq!(lines[1], json!({"id":"123","updated_at":4,"deleted_at":null,"ip":"10.0.0.9"}));
    assert_eq!(lines[2]["value"], "not json");
    assert_eq!(get(&format!("{base}/servers/")).body, g.body, "an empty since is 0");

    // since N: every change at or after N, once, latest state; a tombstone for the delete.
    let g = get(&format!("{base}/servers/2"));
    let lines = g.lines();
    assert_eq!(ids(&lines), ["125", "123", "124", "126"]);
    assert_eq!(lines[2], json!({"id":"124","updated_at":5,"deleted_at":5}));
    assert_eq!(get(&format!("{base}/servers/?since=2")).body, g.body, "?since= is the same feed");
    assert_eq!(get(&format!("{base}/servers?since=2")).body, g.body);
    assert_eq!(get(&format!("{base}/servers/8")).lines().len(), 0, "since = current + 1 is empty");

    // 400 malformed since, 410 compacted and future since.
    let g = get(&format!("{base}/servers/abc"));
    assert_eq!(g.status, 400);
    assert!(g.json()["error"].as_str().unwrap().contains("since"));
    assert_eq!(get(&format!("{base}/servers/?since=-1")).status, 400);
    assert_eq!(get(&format!("{base}/servers/99")).status, 410);
    store.compact(4).unwrap();
    assert_eq!(get(&format!("{base}/servers/2")).status, 410);
    let g = get(&format!("{base}/servers/1"));
    assert_eq!(g.status, 410);
    assert_eq!(g.json()["earliest_revision"], 4);
    assert_eq!(get(&format!("{base}/servers/4")).lines().len(), 3, "since = earliest is served");
    assert_eq!(get(&format!("{base}/servers/3")).lines().len(), 3, "since = earliest - 1 loses nothing");

    if have_curl() {
        let (code, body) = curl(&[&format!("{base}/servers/0")]);
        assert_eq!(code, 200);
        assert_eq!(ids(&ndjson(body.as_bytes())), ["125", "123", "126"]);
        let (code, body) = curl(&[&format!("{base}/servers/4")]);
        assert_eq!(code, 200);
        assert!(body.contains(r#"{"id":"124","updated_at":5,"deleted_at":5}"#), "{body}");
        assert_eq!(curl(&[&format!("{base}/servers/abc")]).0, 400);
        let (code, body) = curl(&[&format!("{base}/servers/1")]);
        assert_eq!(code, 410);
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["earliest_revision"], 4);
        assert_eq!(curl(&["-X", "PUT", "-d", "{}", &format!("{base}/servers/9")]).0, 405);
        assert_eq!(curl(&["-X", "POST", &format!("{base}/servers/9")]).0, 405);
    }

    // A large finite response switches to chunked framing; every record arrives once.
    let value = format!(r#"{{"pad":"{}"}}"#, "x".repeat(200));
    for i in 0..3000 {
        store.put(format!("/big/{i:05}").as_bytes(), value.as_bytes()).unwrap();
    }
    let g = get(&format!("{base}/big/0"));
    assert_eq!(g.header("transfer-encoding"), Some("chunked"));
    let lines = g.lines();
    assert_eq!(lines.len(), 3000);
    assert!(lines.windows(2).all(|w| w[0]["updated_at"].as_u64() < w[1]["updated_at"].as_u64()));
    if have_curl() {
        let (code, body) = curl(&[&format!("{base}/big/0")]);
        assert_eq!(code, 200);
        assert_eq!(ndjson(body.as_bytes()).len(), 3000);
    }
    server.stop();
}

#[test]
fn auth_writes_and_bad_requests() {
    let store = memory();
    let server =
        serve(&store, r#"{"writable":true,"token":"s3cret","max_body_bytes":1000,"max_connections":4}"#);
    let base = format!("http://{}", server.addr());
    let auth = [("Authorization", "Bearer s3cret")];
    assert_eq!(get(&format!("{base}/servers/0")).status, 401);
    assert_eq!(
        request("GET", &format!("{base}/servers/0"), &[("Authorization", "Bearer nope")], b"").status,
        401
    );
    assert_eq!(request("GET", &format!("{base}/servers/0"), &auth, b"").status, 200);

    let g = request("PUT", &format!("{base}/servers/a1"), &auth, br#"{"ip":"10.0.0.1"}"#);
    assert_eq!(g.status, 200, "{}", g.text());
    assert_eq!(g.json()["updated_at"], 1);
    assert_eq!(store.get(b"/servers/a1").unwrap().value[..], br#"{"ip":"10.0.0.1"}"#[..]);
    assert_eq!(request("PUT", &format!("{base}/servers/a2"), &auth, b"{nope").status, 400);
    assert_eq!(request("PUT", &format!("{base}/servers/"), &auth, b"{}").status, 400);
    assert_eq!(request("PUT", &format!("{base}/servers/a3"), &auth, &vec![b' '; 2000]).status, 413);
    assert_eq!(request("PUT", &format!("{base}/servers/a1"), &[], b"{}").status, 401);
    let g = request("DELETE", &format!("{base}/servers/a1"), &auth, b"");
    assert_eq!((g.status, g.json()["deleted_at"].clone()), (200, json!(2)));
    assert_eq!(request("DELETE", &format!("{base}/servers/a1"), &auth, b"").status, 404);
    let huge = "x".repeat(20_000);
    assert_eq!(request("GET", &format!("{base}/servers/0"), &[("X-Big", huge.as_str())], b"").status, 431);

    if have_curl() {
        let (code, body) = curl(&[&format!("{base}/servers/0")]);
        assert_eq!(code, 401);
        assert!(body.contains("bearer"), "{body}");
        let (code, _) = curl(&[
            "-H",
            "Authorization: Bearer s3cret",
            "-X",
            "PUT",
            "-d",
            r#"{"x":1}"#,
            &format!("{base}/servers/c"),
        ]);
        assert_eq!(code, 200);
        let (code, body) = curl(&["-H", "Authorization: Bearer s3cret", &format!("{base}/servers/0")]);
        assert_eq!(code, 200);
        assert_eq!(ids(&ndjson(body.as_bytes())), ["c"]);
        assert_eq!(
            curl(&["-H", "Authorization: Bearer s3cret", "-X", "DELETE", &format!("{base}/servers/c")]).0,
            200
        );
        // A body large enough for curl to send `Expect: 100-continue` first.
        let big = format!(r#"{{"pad":"{}"}}"#, "y".repeat(900));
        let auth_h = "Authorization: Bearer s3cret";
        let url = format!("{base}/servers/big");
        let (code, _) = curl(&["-H", auth_h, "-H", "Expect: 100-continue", "-X", "PUT", "-d", &big, &url]);
        assert_eq!(code, 200);
        assert_eq!(curl(&["-H", auth_h, "-X", "DELETE", &url]).0, 200);
    }

    // Garbage on the socket gets a clear status (hyper's own, with an empty body, for what it
    // cannot parse), and the store is untouched.
    use std::io::{Read, Write};
    for raw in [
        &b"NOT HTTP\r\n\r\n"[..],
        b"GET /x/0 HTTP/2.0\r\n\r\n",
        b"GET x HTTP/1.1\r\n\r\n",
        b"GET /x/0 HTTP/1.1\r\nbad header\r\n\r\n",
    ] {
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        s.write_all(raw).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 4") || out.starts_with("HTTP/1.1 5"), "{out}");
    }
    // What parses but is wrong gets a JSON error.
    let g = request("GET", &format!("{base}/servers/abc"), &auth, b"");
    assert_eq!(g.status, 400);
    assert!(g.text().contains("\"error\""), "{}", g.text());
    wait_until("connections closed", || server.status()["connections"] == 0);
    assert_eq!(store.current_revision(), if have_curl() { 6 } else { 2 });
    server.stop();
}

#[test]
fn follow_mode_streams_catch_up_live_changes_and_heartbeats() {
    let store = memory();
    store.put(b"/s/a", br#"{"n":1}"#).unwrap();
    store.put(b"/s/b", br#"{"n":2}"#).unwrap();
    store.delete(b"/s/a").unwrap();
    let server = serve(&store, r#"{"heartbeat_ms":100}"#);
    let base = format!("http://{}", server.addr());

    // Our client: catch-up, then live records arrive as chunks, with heartbeats.
    let u = tidemark::lockstep::http::Url::parse(&format!("{base}/s/2?follow=true")).unwrap();
    let stop = AtomicBool::new(false);
    let client = tidemark::lockstep::http::Client::new(None, Duration::from_secs(5)).unwrap();
    let mut resp = client.request("GET", &u, &[], b"", Duration::from_secs(5), &stop).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    let mut body = Vec::new();
    let mut read_until = |body: &mut Vec<u8>, pred: &dyn Fn(&[Value]) -> bool| {
        wait_until("follow data", || {
            let _ = resp.read_body(body).unwrap();
            pred(&ndjson(body))
        })
    };
    read_until(&mut body, &|l| l.len() >= 2);
    assert_eq!(
        ndjson(&body)[..2],
        [
            json!({"id":"b","updated_at":2,"deleted_at":null,"n":2}),
            json!({"id":"a","updated_at":3,"deleted_at":3})
        ]
    );
    store.put(b"/s/c", br#"{"n":3}"#).unwrap();
    store.put(b"/x/ignored", b"{}").unwrap();
    store.delete(b"/s/b").unwrap();
    read_until(&mut body, &|l| l.iter().filter(|v| v.get("id").is_some()).count() >= 4);
    read_until(&mut body, &|l| l.iter().any(|v| v == &json!({"heartbeat":true})));
    let recs: Vec<Value> = ndjson(&body).into_iter().filter(|v| v.get("id").is_some()).collect();
    assert_eq!(recs[2], json!({"id":"c","updated_at":4,"deleted_at":null,"n":3}));
    assert_eq!(recs[3], json!({"id":"b","updated_at":6,"deleted_at":6}));

    // curl in follow mode sees the same stream.
    let curl_out = have_curl().then(|| {
        let child = Command::new("curl")
            .args(["-s", "-N", "--max-time", "30", &format!("{base}/s/0?follow=true")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
    });
    std::thread::sleep(Duration::from_millis(300));
    store.put(b"/s/d", br#"{"n":4}"#).unwrap();
    wait_until("follow responses", || server.status()["following"] == if curl_out.is_some() { 2 } else { 1 });

    // Stopping the server ends every follow response cleanly (final chunk).
    let stopper = std::thread::spawn(move || server.stop());
    wait_until("clean end", || {
        matches!(resp.read_body(&mut body).unwrap(), tidemark::lockstep::http::BodyRead::End)
    });
    stopper.join().unwrap();
    if let Some(child) = curl_out {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "curl ended with {:?}", out.status);
        let lines = ndjson(&out.stdout);
        let recs: Vec<&Value> = lines.iter().filter(|v| v.get("id").is_some()).collect();
        assert_eq!(recs.first().unwrap()["id"], "c");
        assert_eq!(recs.last().unwrap()["id"], "d");
    }
}

#[test]
fn follower_mirrors_a_tidemark_server_exactly() {
    let src = memory();
    for i in 0..50 {
        src.put(format!("/servers/{i}").as_bytes(), json!({"n": i}).to_string().as_bytes()).unwrap();
    }
    let server = serve(&src, r#"{"heartbeat_ms":50}"#);
    let dst = memory();
    dst.put(b"/mirror/stale", b"{}").unwrap(); // not on the server: the adopting first sync removes it
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let ev = events.clone();
    let follower = Follower::start(
        dst.clone(),
        &format!("http://{}/servers/", server.addr()),
        fast_follow(json!({"prefix": "/mirror/", "adopt": true})),
        Some(Box::new(move |e: &FollowEvent<'_>| {
            let name = match e {
                FollowEvent::Connected { .. } => "connected",
                FollowEvent::Applied { .. } => "applied",
                FollowEvent::Malformed { .. } => "malformed",
                FollowEvent::Error { .. } => "error",
                FollowEvent::ResyncStarted { .. } => "resync_started",
                FollowEvent::ResyncDone { .. } => "resync_done",
            };
            ev.lock().unwrap().push(name.into());
        })),
    )
    .unwrap();
    let mut rng = Rng(seed());
    for round in 0..400u64 {
        let k = format!("/servers/{}", rng.below(80));
        if rng.below(4) == 0 {
            let _ = src.delete(k.as_bytes());
        } else {
            src.put(k.as_bytes(), json!({"n": round, "tag": "x"}).to_string().as_bytes()).unwrap();
        }
        if round % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let target = src.current_revision();
    wait_until("follower caught up", || follower.status()["cursor"] == target);
    assert_eq!(local_records(&dst, "/mirror/"), served_records(server.addr(), "/servers/"));
    let st = follower.status();
    assert_eq!(st["malformed_lines"], 0);
    assert_eq!(st["resyncing"], false);
    assert!(st["heartbeats"].as_u64().is_some());
    // The cursor is kept in the reserved namespace, out of reach of the user key API.
    assert!(matches!(dst.get(b"\0l//mirror/"), Err(Error::InvalidArgument(_))));
    let evs = events.lock().unwrap().clone();
    assert_eq!(evs[0], "resync_started");
    assert!(evs.contains(&"resync_done".to_string()) && evs.contains(&"applied".to_string()), "{evs:?}");
    follower.stop();
    let n = events.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(events.lock().unwrap().len(), n, "no callback after stop returned");
    server.stop();
}

#[test]
fn follower_mirrors_the_reference_server() {
    mirror_reference(false, json!({"follow": false, "cursor_param": "since"}));
}

#[test]
fn follower_mirrors_a_reference_server_with_string_timestamps() {
    mirror_reference(true, json!({}));
}

fn mirror_reference(string_times: bool, options: Value) {
    let mut refs = RefServer::start_with(string_times);
    let dst = memory();
    let malformed = Arc::new(AtomicU64::new(0));
    let m = malformed.clone();
    let follower = Follower::start(
        dst.clone(),
        &format!("http://{}/items/", refs.addr),
        fast_follow(options),
        Some(Box::new(move |e: &FollowEvent<'_>| {
            if let FollowEvent::Malformed { .. } = e {
                m.fetch_add(1, Ordering::Relaxed);
            }
        })),
    )
    .unwrap();
    let mut rng = Rng(seed());
    let mut next_id = 0;
    for step in 0..300 {
        {
            let mut t = refs.table.lock().unwrap();
            if step % 4 == 0 {
                t.clock += 1 + rng.below(3); // several changes share a tick
            }
            let live = t.live_ids();
            match rng.below(5) {
                0 | 1 => {
                    next_id += 1;
                    t.put(
                        &format!("srv-{next_id}"),
                        json!({"ip": format!("10.0.0.{}", next_id % 250), "port": 1234}),
                    );
                }
                2 | 3 if !live.is_empty() => {
                    let id = live[rng.below(live.len() as u64) as usize].clone();
                    t.put(&id, json!({"ip": "10.9.9.9", "step": step}));
                }
                _ if !live.is_empty() => {
                    let id = live[rng.below(live.len() as u64) as usize].clone();
                    t.delete(&id);
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    let expected = refs.table.lock().unwrap().live();
    wait_until("mirror equals the reference table", || local_records(&dst, "/items/") == expected);
    // Keep following a little longer: repeats and reconnects change nothing.
    let conns = refs.connections.load(Ordering::Relaxed);
    wait_until("more connections", || refs.connections.load(Ordering::Relaxed) >= conns + 3);
    assert_eq!(local_records(&dst, "/items/"), expected);
    assert!(!dst
        .range(&tidemark::Selector::Prefix(b"/items/torn".to_vec()), 0)
        .unwrap()
        .0
        .iter()
        .any(|_| true));
    let st = follower.status();
    assert!(st["malformed_lines"].as_u64().unwrap() > 0, "{st}");
    assert!(malformed.load(Ordering::Relaxed) > 0);
    assert!(st["heartbeats"].as_u64().unwrap() > 0, "{st}");
    assert!(st["errors"].as_u64().unwrap() > 0, "dropped connections are reported: {st}");
    assert_eq!(st["cursor"].is_string(), string_times, "{st}");
    follower.stop();
    refs.stop();
}

#[test]
fn gone_triggers_a_full_resync_that_removes_what_the_server_lost() {
    let src = memory();
    for i in 0..20 {
        src.put(format!("/s/{i}").as_bytes(), b"{}").unwrap();
    }
    let server = serve(&src, "{}");
    let dst = memory();
    let url = format!("http://{}/s/", server.addr());
    let f = Follower::start(dst.clone(), &url, fast_follow(json!({})), None).unwrap();
    wait_until("first sync", || f.status()["cursor"] == 20 && f.status()["resyncing"] == false);
    f.stop();
    assert_eq!(local_records(&dst, "/s/").len(), 20);
    // While the follower is away: deletes, new records, and the log compacted past its cursor.
    for i in 0..10 {
        src.delete(format!("/s/{i}").as_bytes()).unwrap();
    }
    src.put(b"/s/new", br#"{"fresh":true}"#).unwrap();
    src.compact(src.current_revision() + 1).unwrap();
    assert_eq!(get(&format!("{url}20")).status, 410);
    let resynced = Arc::new(AtomicU64::new(0));
    let r = resynced.clone();
    let f = Follower::start(
        dst.clone(),
        &url,
        fast_follow(json!({})),
        Some(Box::new(move |e: &FollowEvent<'_>| {
            if let FollowEvent::ResyncDone { deleted, .. } = e {
                r.store(*deleted + 1, Ordering::Release);
            }
        })),
    )
    .unwrap();
    wait_until("resync", || resynced.load(Ordering::Acquire) > 0);
    assert_eq!(resynced.load(Ordering::Acquire), 11, "ten records deleted locally");
    assert_eq!(local_records(&dst, "/s/"), served_records(server.addr(), "/s/"));
    assert_eq!(f.status()["resyncs"], 1);
    // And it keeps following after the resync.
    src.put(b"/s/later", b"{}").unwrap();
    wait_until("live after resync", || dst.get(b"/s/later").is_ok());
    f.stop();
    server.stop();
}

#[test]
fn follower_survives_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src");
    let open = || Arc::new(Store::open(Some(path.to_str().unwrap()), Some(r#"{"sync":"none"}"#)).unwrap());
    let src = open();
    for i in 0..30 {
        src.put(format!("/s/{i}").as_bytes(), json!({"v": i}).to_string().as_bytes()).unwrap();
    }
    let server = serve(&src, r#"{"heartbeat_ms":50}"#);
    let addr = server.addr();
    let dst = memory();
    let errors = Arc::new(AtomicU64::new(0));
    let e2 = errors.clone();
    let f = Follower::start(
        dst.clone(),
        &format!("http://{addr}/s/"),
        fast_follow(json!({})),
        Some(Box::new(move |e: &FollowEvent<'_>| {
            if let FollowEvent::Error { .. } = e {
                e2.fetch_add(1, Ordering::Relaxed);
            }
        })),
    )
    .unwrap();
    wait_until("caught up", || f.status()["cursor"] == 30);
    // The server goes away (and its store is closed and reopened from disk), writes happen.
    server.stop();
    drop(src);
    wait_until("refused connections reported", || errors.load(Ordering::Relaxed) >= 2);
    let src = open();
    for i in 0..10 {
        src.put(format!("/s/{i}").as_bytes(), json!({"v": i, "after": "restart"}).to_string().as_bytes())
            .unwrap();
    }
    src.delete(b"/s/29").unwrap();
    let mut tries = 0;
    let server = loop {
        match Server::start(src.clone(), &addr.to_string(), ServerOptions::default()) {
            Ok(s) => break s,
            Err(e) if tries < 500 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot listen on {addr} again: {e}"),
        }
    };
    let target = src.current_revision();
    wait_until("caught up after restart", || f.status()["cursor"] == target);
    assert_eq!(local_records(&dst, "/s/"), served_records(server.addr(), "/s/"));
    f.stop();
    server.stop();
}

/// Lines a `tidemark follow` child prints, collected by a reader thread.
fn spawn_follow(store_dir: &str, url: &str) -> (Child, Arc<Mutex<Vec<Value>>>, std::thread::JoinHandle<()>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["follow", "--store", store_dir, "--url", url, "--into", "/m/"])
        .args([
            "--follow-options",
            r#"{"backoff_initial_ms":20,"backoff_max_ms":200}"#,
            "--options",
            r#"{"sync":"none"}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str(&line) {
                l.lock().unwrap().push(v);
            }
        }
    });
    (child, lines, reader)
}

#[test]
fn follower_killed_with_sigkill_resumes_exactly() {
    let src = memory();
    let server = serve(&src, r#"{"heartbeat_ms":100}"#);
    let url = format!("http://{}/servers/", server.addr());
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("mirror");
    let store_dir = store_dir.to_str().unwrap().to_string();
    let writing = Arc::new(AtomicBool::new(true));
    let seed = seed();
    let writer = {
        let (src, writing) = (src.clone(), writing.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(seed ^ 0x5eed);
            let mut n = 0u64;
            while writing.load(Ordering::Acquire) {
                // Batches of a few records at once, deletes, and ties in one commit.
                let mut ops_keys = Vec::new();
                for _ in 0..1 + rng.below(5) {
                    ops_keys.push(format!("/servers/{}", rng.below(200)));
                }
                for k in ops_keys {
                    n += 1;
                    if rng.below(5) == 0 {
                        let _ = src.delete(k.as_bytes());
                    } else {
                        src.put(
                            k.as_bytes(),
                            json!({"n": n, "pad": "p".repeat((n % 50) as usize)}).to_string().as_bytes(),
                        )
                        .unwrap();
                    }
                }
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    let mut rng = Rng(seed);
    for _round in 0..6 {
        let (mut child, _lines, reader) = spawn_follow(&store_dir, &url);
        std::thread::sleep(Duration::from_millis(80 + rng.below(500)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
    }
    writing.store(false, Ordering::Release);
    writer.join().unwrap();
    let target = src.current_revision();
    let (mut child, lines, reader) = spawn_follow(&store_dir, &url);
    wait_until("the restarted follower catches up", || {
        lines.lock().unwrap().iter().any(|l| l["event"] == "applied" && l["cursor"] == target)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    let mirror = Store::open(Some(&store_dir), None).unwrap();
    let local = local_records(&mirror, "/m/");
    let served = served_records(server.addr(), "/servers/");
    assert!(!served.is_empty());
    assert_eq!(local, served);
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// The C API.

#[derive(Default)]
struct CState {
    applied: AtomicU64,
    connected: AtomicU64,
    drops: AtomicU64,
    after_stop: AtomicU64,
    stopped: AtomicBool,
}

unsafe extern "C" fn c_callback(userdata: *mut c_void, event: *const tidemark::ffi::tidemark_lockstep_event) {
    let st = &*(userdata as *const CState);
    if st.stopped.load(Ordering::Acquire) {
        st.after_stop.fetch_add(1, Ordering::Relaxed);
    }
    let e = &*event;
    if e.kind == tidemark::ffi::tidemark_lockstep_event_kind::TIDEMARK_LOCKSTEP_APPLIED as u32 {
        st.applied.fetch_add(e.records, Ordering::Relaxed);
        let cursor = std::slice::from_raw_parts(e.cursor.ptr, e.cursor.len);
        assert!(serde_json::from_slice::<Value>(cursor).is_ok());
    }
    if e.kind == tidemark::ffi::tidemark_lockstep_event_kind::TIDEMARK_LOCKSTEP_CONNECTED as u32 {
        st.connected.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe extern "C" fn c_drop(userdata: *mut c_void) {
    (*(userdata as *const CState)).drops.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn c_api_serve_and_follow() {
    use std::ptr::null_mut;
    use tidemark::ffi::*;
    unsafe {
        let mut src: *mut tidemark_store = null_mut();
        let mut dst: *mut tidemark_store = null_mut();
        assert_eq!(
            tidemark_store_open(std::ptr::null(), std::ptr::null(), &mut src),
            tidemark_status::TIDEMARK_OK
        );
        assert_eq!(
            tidemark_store_open(std::ptr::null(), std::ptr::null(), &mut dst),
            tidemark_status::TIDEMARK_OK
        );
        for i in 0..10 {
            let k = format!("/c/{i}");
            tidemark_store_put(src, k.as_ptr(), k.len(), b"{}".as_ptr(), 2, null_mut());
        }
        let mut server: *mut tidemark_lockstep_server = null_mut();
        let bad = CString::new("10.1.2.3:0").unwrap();
        assert_eq!(
            tidemark_lockstep_serve(src, bad.as_ptr(), std::ptr::null(), &mut server),
            tidemark_status::TIDEMARK_ERR_INVALID_ARGUMENT,
            "non-loopback needs allow_remote"
        );
        let bad_opts = CString::new(r#"{"nope":1}"#).unwrap();
        assert_eq!(
            tidemark_lockstep_serve(src, std::ptr::null(), bad_opts.as_ptr(), &mut server),
            tidemark_status::TIDEMARK_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            tidemark_lockstep_serve(null_mut(), std::ptr::null(), std::ptr::null(), &mut server),
            tidemark_status::TIDEMARK_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            tidemark_lockstep_serve(src, std::ptr::null(), std::ptr::null(), &mut server),
            tidemark_status::TIDEMARK_OK
        );
        let addr = CStr::from_ptr(tidemark_lockstep_server_addr(server)).to_str().unwrap().to_string();
        assert!(addr.starts_with("127.0.0.1:"));
        assert_eq!(addr, format!("127.0.0.1:{}", tidemark_lockstep_server_port(server)));
        assert!(tidemark_lockstep_server_addr(std::ptr::null()).is_null());

        let state = Box::into_raw(Box::new(CState::default()));
        let url = CString::new(format!("http://{addr}/c/")).unwrap();
        let opts = CString::new(r#"{"prefix":"/copy/","backoff_initial_ms":20}"#).unwrap();
        let mut follower: *mut tidemark_lockstep_follower = null_mut();
        assert_eq!(
            tidemark_lockstep_follow(
                dst,
                url.as_ptr(),
                opts.as_ptr(),
                Some(c_callback),
                state.cast(),
                Some(c_drop),
                &mut follower
            ),
            tidemark_status::TIDEMARK_OK
        );
        wait_until("C follower applied", || (*state).applied.load(Ordering::Relaxed) >= 10);
        let mut json: *mut std::ffi::c_char = null_mut();
        assert_eq!(tidemark_lockstep_follower_status_json(follower, &mut json), tidemark_status::TIDEMARK_OK);
        let st: Value = serde_json::from_str(CStr::from_ptr(json).to_str().unwrap()).unwrap();
        tidemark_string_free(json);
        assert_eq!(st["prefix"], "/copy/");
        assert_eq!(tidemark_lockstep_server_status_json(server, &mut json), tidemark_status::TIDEMARK_OK);
        tidemark_string_free(json);
        tidemark_lockstep_follower_stop(follower);
        (*state).stopped.store(true, Ordering::Release);
        assert_eq!((*state).drops.load(Ordering::Relaxed), 1, "drop_userdata ran once, on stop");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!((*state).after_stop.load(Ordering::Relaxed), 0);
        assert!((*state).connected.load(Ordering::Relaxed) >= 1);

        // A callback may stop its own follower: it ends after that callback, and drops once.
        struct SelfStop {
            follower: std::sync::atomic::AtomicPtr<tidemark_lockstep_follower>,
            calls_after: AtomicU64,
            stopped: AtomicBool,
            drops: AtomicU64,
        }
        unsafe extern "C" fn self_stop_cb(ud: *mut c_void, _e: *const tidemark_lockstep_event) {
            let st = &*(ud as *const SelfStop);
            if st.stopped.swap(true, Ordering::AcqRel) {
                st.calls_after.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let mut f = st.follower.load(Ordering::Acquire);
            while f.is_null() {
                std::thread::yield_now();
                f = st.follower.load(Ordering::Acquire);
            }
            tidemark_lockstep_follower_stop(f);
        }
        unsafe extern "C" fn self_stop_drop(ud: *mut c_void) {
            (*(ud as *const SelfStop)).drops.fetch_add(1, Ordering::Relaxed);
        }
        let ss = Box::into_raw(Box::new(SelfStop {
            follower: std::sync::atomic::AtomicPtr::new(null_mut()),
            calls_after: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            drops: AtomicU64::new(0),
        }));
        let mut f2: *mut tidemark_lockstep_follower = null_mut();
        let opts2 = CString::new(r#"{"prefix":"/copy2/"}"#).unwrap();
        assert_eq!(
            tidemark_lockstep_follow(
                dst,
                url.as_ptr(),
                opts2.as_ptr(),
                Some(self_stop_cb),
                ss.cast(),
                Some(self_stop_drop),
                &mut f2
            ),
            tidemark_status::TIDEMARK_OK
        );
        (*ss).follower.store(f2, Ordering::Release);
        wait_until("self-stopped follower dropped", || (*ss).drops.load(Ordering::Relaxed) == 1);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!((*ss).drops.load(Ordering::Relaxed), 1);
        assert_eq!((*ss).calls_after.load(Ordering::Relaxed), 0);

        // A failed start drops the userdata before returning.
        let state2 = Box::into_raw(Box::new(CState::default()));
        let bad_url = CString::new("https://example.invalid/").unwrap();
        assert_eq!(
            tidemark_lockstep_follow(
                dst,
                bad_url.as_ptr(),
                std::ptr::null(),
                Some(c_callback),
                state2.cast(),
                Some(c_drop),
                &mut follower
            ),
            tidemark_status::TIDEMARK_ERR_INVALID_ARGUMENT
        );
        assert_eq!((*state2).drops.load(Ordering::Relaxed), 1);
        tidemark_lockstep_follower_stop(null_mut());
        tidemark_lockstep_server_stop(server);
        tidemark_lockstep_server_stop(null_mut());
        tidemark_store_close(src);
        tidemark_store_close(dst);
        drop(Box::from_raw(state));
        drop(Box::from_raw(state2));
        drop(Box::from_raw(ss));
    }
}

// ---------------------------------------------------------------------------------------------
// The command-line tool.

#[test]
fn cli_commands() {
    for cmd in ["put", "get", "delete", "changes", "watch", "compact", "status", "serve", "follow", "bench"] {
        let (code, out, _) = cli(&[cmd, "--help"]);
        assert_eq!(code, 0, "{cmd} --help");
        assert!(out.contains("Usage") && out.contains(cmd), "{cmd}: {out}");
    }
    assert_eq!(cli(&["--help"]).0, 0);
    assert_eq!(cli(&[]).0, 2);
    assert_eq!(cli(&["frobnicate"]).0, 2);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("s");
    let d = d.to_str().unwrap();
    assert_eq!(cli(&["put", "--bogus", "x"]).0, 2);
    assert_eq!(cli(&["get", "/k"]).0, 2, "--store is required");
    let (code, out, _) = cli(&["put", "--store", d, "/servers/123", r#"{"ip":"10.0.0.1","port":1234}"#]);
    assert_eq!((code, out.trim()), (0, "1"));
    assert_eq!(cli(&["put", "--store", d, "/servers/124", "{}"]).1.trim(), "2");
    let (code, out, _) = cli(&["get", "--store", d, "/servers/123"]);
    assert_eq!((code, out.trim()), (0, r#"{"ip":"10.0.0.1","port":1234}"#));
    let (_, out, _) = cli(&["get", "--store", d, "--meta", "/servers/123"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["mod_revision"], 1);
    let (code, _, err) = cli(&["get", "--store", d, "/nope"]);
    assert_eq!(code, 3);
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(cli(&["put", "--store", d, "--expect", "7", "/servers/123", "{}"]).0, 1, "conflict");
    assert_eq!(cli(&["delete", "--store", d, "/servers/124"]).1.trim(), "3");
    assert_eq!(cli(&["delete", "--store", d, "/servers/124"]).0, 3);
    let (code, out, _) = cli(&["changes", "--store", d, "--prefix", "/servers/"]);
    assert_eq!(code, 0);
    let evs = ndjson(out.as_bytes());
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[2]["kind"], "delete");
    assert_eq!(ndjson(cli(&["changes", "--store", d, "--from", "2", "--limit", "1"]).1.as_bytes()).len(), 1);
    let (code, out, _) = cli(&["status", "--store", d]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["revision"], 3);
    assert_eq!(cli(&["compact", "--store", d]).0, 2);
    assert_eq!(cli(&["compact", "--store", d, "--keep", "3"]).1.trim(), "2");
    let (code, out, _) = cli(&["watch", "--store", d, "--from", "1"]);
    assert_eq!(code, 1, "revision 1 was compacted: {out}");

    // serve: prints its address; answers curl or our client; SIGTERM stops it cleanly.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["serve", "--store", d, "--addr", "127.0.0.1:0", "--writable"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let base = first.trim().strip_prefix("listening on ").unwrap().to_string();
    assert_eq!(ids(&get(&format!("{base}/servers/0")).lines()), ["123"]);
    assert_eq!(request("PUT", &format!("{base}/servers/9"), &[], b"{\"a\":1}").status, 200);
    if have_curl() {
        let (code, body) = curl(&[&format!("{base}/servers/0")]);
        assert_eq!(code, 200);
        assert_eq!(ids(&ndjson(body.as_bytes())), ["123", "9"]);
    }
    // watch --url prints the feed's records, then live ones.
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["watch", "--url", &format!("{base}/servers/")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(watcher.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["id"], "123");
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["id"], "9");
    assert_eq!(request("PUT", &format!("{base}/servers/live"), &[], b"{}").status, 200);
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["id"], "live");
    unsafe { libc::kill(watcher.id() as i32, libc::SIGTERM) };
    assert!(watcher.wait().unwrap().success());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert_eq!(cli(&["get", "--store", d, "/servers/9"]).1.trim(), "{\"a\":1}");
}

#[test]
fn cli_usage_errors_name_the_flag_and_never_panic() {
    use std::os::unix::ffi::OsStrExt;
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark")).args(args).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let os = |s: &str| std::ffi::OsStr::new(s).to_os_string();
    // An empty --store (an unset variable) is an error naming the flag, not an in-memory store.
    for cmd in ["put", "get", "delete", "status"] {
        let (code, err) = run(&[&os(cmd), &os("--store"), &os(""), &os("/k"), &os("v")]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("--store"), "{cmd}: {err}");
    }
    let (code, err) = run(&[&os("serve"), &os("--store="), &os("--addr"), &os("127.0.0.1:0")]);
    assert_eq!((code, err.contains("--store")), (2, true), "{err}");
    // In memory only when asked for.
    let (code, err) = run(&[&os("serve"), &os("--addr"), &os("127.0.0.1:0")]);
    assert_eq!((code, err.contains("--store")), (2, true), "{err}");
    // Arguments that are not UTF-8: a usage error, never a panic.
    let bad = std::ffi::OsStr::from_bytes(b"/k\xff");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("s").into_os_string();
    for args in [
        vec![os("put"), os("--store"), d.clone(), bad.to_os_string(), os("v")],
        vec![os("get"), os("--store"), bad.to_os_string(), os("/k")],
    ] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (code, err) = run(&args);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("UTF-8") && !err.contains("panicked"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// The NDJSON parsers on malformed input (chunked framing is hyper's).

/// Splits `body` fed in pieces of the given sizes into lines and returns the records parsed
/// and the number of malformed lines; `complete`: the body ended (else it was cut there).
fn decode(body: &[u8], splits: &[usize], complete: bool) -> (Vec<String>, usize) {
    let mut sp = LineSplitter::new(4096);
    let mut ids = Vec::new();
    let mut bad = 0;
    let mut on_line = |l: Line<'_>| match l {
        Line::Text(t) => match parse_line(t, "id", "updated_at") {
            Ok(Parsed::Record { id, .. }) => ids.push(id),
            Ok(Parsed::Heartbeat) => {}
            Err(_) => bad += 1,
        },
        Line::TooLong(..) => bad += 1,
    };
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = splits[i % splits.len()].clamp(1, rest.len());
        sp.feed(&rest[..n], &mut on_line);
        rest = &rest[n..];
        i += 1;
    }
    if complete {
        sp.finish(&mut on_line);
    }
    (ids, bad)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic_on_garbage(wire in proptest::collection::vec(any::<u8>(), 0..600),
                                      splits in proptest::collection::vec(1usize..50, 1..8)) {
        let _ = decode(&wire, &splits, true);
        let mut sp = LineSplitter::new(64);
        for piece in wire.chunks(splits[0]) {
            sp.feed(piece, &mut |l| { if let Line::Text(t) = l { let _ = parse_line(t, "id", "updated_at"); } });
        }
        sp.finish(&mut |_| {});
    }

    #[test]
    fn parsers_never_lose_a_good_line(
        items in proptest::collection::vec((any::<bool>(), 0u64..1000, "[a-z0-9 :\\[\\]\"]{0,30}"), 1..40),
        cut_at in 0usize..41,
        splits in proptest::collection::vec(1usize..60, 1..6),
        crlf in any::<bool>(),
    ) {
        // Good records interleaved with garbage lines (never JSON objects), blank lines,
        // heartbeats, CRLF or LF endings, any chunk sizes and any read boundaries.
        let mut body = Vec::new();
        let mut good = Vec::new();
        let mut garbage = 0;
        let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        for (i, (is_good, n, junk)) in items.iter().enumerate() {
            if *is_good {
                let id = format!("r{i}-{n}");
                body.extend_from_slice(json!({"id": id, "updated_at": n, "deleted_at": null, "x": junk}).to_string().as_bytes());
                good.push(id);
            } else if junk.trim().is_empty() {
                body.extend_from_slice(b"{\"heartbeat\":true}");
            } else {
                body.extend_from_slice(junk.as_bytes());
                garbage += 1;
            }
            body.extend_from_slice(eol);
            if n % 7 == 0 {
                body.extend_from_slice(eol); // a blank line
            }
        }
        let (ids, bad) = decode(&body, &splits, true);
        prop_assert_eq!(&ids, &good);
        prop_assert_eq!(bad, garbage);
        // A body cut anywhere loses no complete line before the cut.
        let cut = body.len() * cut_at / 41;
        let (ids, _) = decode(&body[..cut], &splits, false);
        let expected = good.iter().take(ids.len()).cloned().collect::<Vec<_>>();
        prop_assert_eq!(ids, expected);
    }
}

#[test]
fn a_client_that_does_not_read_never_blocks_writers_and_loses_nothing() {
    let store = memory();
    let server = serve(&store, r#"{"max_queue":10,"heartbeat_ms":60000}"#);
    let u =
        tidemark::lockstep::http::Url::parse(&format!("http://{}/q/0?follow=true", server.addr())).unwrap();
    let stop = AtomicBool::new(false);
    let client = tidemark::lockstep::http::Client::new(None, Duration::from_secs(5)).unwrap();
    let mut resp = client.request("GET", &u, &[], b"", Duration::from_secs(5), &stop).unwrap();
    assert_eq!(resp.status, 200);
    // The client reads nothing while 20,000 records (megabytes) are written: every put returns.
    let value = format!(r#"{{"pad":"{}"}}"#, "z".repeat(300));
    for i in 0..20_000 {
        store.put(format!("/q/{}", i % 5000).as_bytes(), value.as_bytes()).unwrap();
    }
    let last = store.current_revision();
    // Then it reads: every change arrives, in revision order, without gaps.
    let mut body = Vec::new();
    let mut revs = Vec::new();
    let mut splitter = LineSplitter::new(1 << 20);
    wait_until("all changes delivered", || {
        body.clear();
        let _ = resp.read_body(&mut body).unwrap();
        splitter.feed(&body, &mut |l| {
            if let Line::Text(t) = l {
                let v: Value = serde_json::from_slice(t).unwrap();
                if let Some(r) = v["updated_at"].as_u64() {
                    revs.push(r);
                }
            }
        });
        revs.last() == Some(&last)
    });
    assert_eq!(revs, (1..=last).collect::<Vec<_>>());
    drop(resp);
    server.stop();
}

#[test]
fn follower_reconnects_after_silence_and_stops_promptly() {
    // A server that answers 200 and then says nothing, and one that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let acc = accepted.clone();
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    silent.set_nonblocking(true).unwrap();
    let t = std::thread::spawn(move || {
        use std::io::Write;
        let mut held = Vec::new();
        while !d2.load(Ordering::Acquire) {
            if let Ok((mut s, _)) = silent.accept() {
                let n = acc.fetch_add(1, Ordering::AcqRel);
                if n.is_multiple_of(2) {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                }
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let dst = memory();
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let m2 = messages.clone();
    let f = Follower::start(
        dst.clone(),
        &format!("http://{addr}/feed/"),
        fast_follow(json!({"idle_timeout_ms": 150})),
        Some(Box::new(move |e: &FollowEvent<'_>| {
            if let FollowEvent::Error { message, .. } = e {
                m2.lock().unwrap().push(message.to_string());
            }
        })),
    )
    .unwrap();
    wait_until("reconnects", || accepted.load(Ordering::Acquire) >= 4);
    let st = f.status();
    assert!(st["errors"].as_u64().unwrap() >= 3, "{st}");
    let msgs = messages.lock().unwrap().clone();
    assert!(msgs.iter().any(|m| m.contains("nothing received")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("no response head")), "{msgs:?}");
    f.stop(); // returns although the server never says anything
    done.store(true, Ordering::Release);
    t.join().unwrap();
}

#[test]
fn garbage_requests_never_disturb_the_server_or_the_store() {
    use std::io::{Read, Write};
    let store = memory();
    store.put(b"/g/1", b"{}").unwrap();
    let server = serve(&store, r#"{"writable":true,"request_timeout_ms":300,"idle_timeout_ms":300}"#);
    let mut rng = Rng(seed());
    let pieces: [&[u8]; 12] = [
        b"GET ",
        b"PUT ",
        b"/g/",
        b"?since=",
        b"&follow=",
        b" HTTP/1.1",
        b"\r\n",
        b"Content-Length: ",
        b"99999999999",
        b"%zz",
        b"\xff\xfe",
        b"Transfer-Encoding: chunked\r\n",
    ];
    for _ in 0..60 {
        let mut req = Vec::new();
        for _ in 0..rng.below(12) {
            req.extend_from_slice(pieces[rng.below(pieces.len() as u64) as usize]);
            if rng.below(4) == 0 {
                req.push(rng.below(256) as u8);
            }
        }
        req.extend_from_slice(b"\r\n\r\n");
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&req);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        if !out.is_empty() {
            assert!(out.starts_with(b"HTTP/1.1 "), "{:?}", String::from_utf8_lossy(&out));
        }
    }
    assert_eq!(store.current_revision(), 1);
    assert_eq!(get(&format!("http://{}/g/0", server.addr())).lines().len(), 1);
    server.stop();
}
