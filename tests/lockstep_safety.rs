//! The follower never deletes what it does not own: it refuses a non-empty prefix (unless
//! told to adopt it) and the prefix `/` (unless allowed), a full sync whose body was cut or
//! not framed deletes nothing, and a 400 on the cursor leads to a clean resync. Every server
//! is a hand-made one on 127.0.0.1; nothing asserts on time.
#![cfg(feature = "http")]

mod lockstep_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use lockstep_support::*;
use serde_json::{json, Value};
use tidemark::lockstep::{FollowEvent, FollowOptions, Follower};
use tidemark::{Error, Store};

fn memory() -> Arc<Store> {
    Arc::new(Store::memory(None).unwrap())
}

fn opts(extra: Value) -> FollowOptions {
    let mut o = json!({"backoff_initial_ms": 10, "backoff_max_ms": 50, "poll_ms": 20});
    if let (Value::Object(m), Value::Object(e)) = (&mut o, extra) {
        m.extend(e);
    }
    FollowOptions::from_json(Some(&o.to_string())).unwrap()
}

/// A server with `full` records at since 0, Content-Length framed.
fn full_response(full: u64) -> Vec<u8> {
    let body = records(0..full);
    let mut out = ok_head(&format!("Content-Length: {}\r\n", body.len()));
    out.extend_from_slice(&body);
    out
}

#[test]
fn a_first_sync_refuses_a_prefix_holding_keys_it_did_not_mirror() {
    let server = Scripted::start(Box::new(|_, _| full_response(3)));
    let url = format!("http://{}/s/", server.addr);
    let dst = memory();
    dst.put(b"/s/mine", b"local data").unwrap();
    let err = Follower::start(dst.clone(), &url, opts(json!({})), None).err().expect("refused");
    assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("adopt")), "{err}");
    assert_eq!(server.requests(), 0, "refused before any request");
    assert_eq!(dst.get(b"/s/mine").unwrap().value.as_ref(), b"local data");
    // Adopting the prefix: the first sync owns it and sweeps what the server does not send.
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let cb = Box::new(move |e: &FollowEvent<'_>| {
        if let FollowEvent::ResyncDone { deleted, .. } = e {
            assert_eq!(*deleted, 1);
            d.store(true, Ordering::Release);
        }
    });
    let f =
        Follower::start(dst.clone(), &url, opts(json!({"adopt": true, "follow": false})), Some(cb)).unwrap();
    wait_until("the adopting sync", || done.load(Ordering::Acquire));
    f.stop();
    assert!(dst.get(b"/s/mine").is_err());
    assert_eq!(local_records(&dst, "/s/").len(), 3);
    // Once it has a cursor, restarting it is fine: the prefix is its own.
    Follower::start(dst.clone(), &url, opts(json!({})), None).unwrap().stop();
}

#[test]
fn the_root_prefix_is_refused_unless_allowed() {
    let server = Scripted::start(Box::new(|_, _| full_response(2)));
    let dst = memory();
    for url in [format!("http://{}/", server.addr), format!("http://{}", server.addr)] {
        let err = Follower::start(dst.clone(), &url, opts(json!({})), None).err().expect("refused");
        assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("allow_root_prefix")), "{err}");
    }
    let url = format!("http://{}/s/", server.addr);
    let err = Follower::start(dst.clone(), &url, opts(json!({"prefix": "/"})), None).err().expect("refused");
    assert!(err.to_string().contains("allow_root_prefix"));
    assert_eq!(server.requests(), 0);
    let f = Follower::start(
        dst.clone(),
        &url,
        opts(json!({"prefix": "/", "allow_root_prefix": true, "follow": false})),
        None,
    )
    .unwrap();
    wait_until("mirrored under /", || dst.get(b"/1").is_ok());
    f.stop();
}

/// Mirrors 100 records, then the server forgets the cursor (410) and answers every full
/// sync with `cut` (the first 10 records, framed in some broken way): nothing is deleted.
fn cut_resync_deletes_nothing(cut: fn() -> Vec<u8>) {
    let server = Scripted::start(Box::new(move |n, target| {
        if n == 0 {
            full_response(100)
        } else if target.starts_with("/s/0") {
            cut()
        } else {
            b"HTTP/1.1 410 Gone\r\nContent-Length: 2\r\n\r\n{}".to_vec()
        }
    }));
    let url = format!("http://{}/s/", server.addr);
    let dst = memory();
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let ev = events.clone();
    let cb = Box::new(move |e: &FollowEvent<'_>| {
        let name = match e {
            FollowEvent::ResyncDone { deleted, .. } => format!("done {deleted}"),
            FollowEvent::ResyncStarted { .. } => "started".into(),
            FollowEvent::Error { message, .. } => format!("error {message}"),
            _ => return,
        };
        ev.lock().unwrap().push(name);
    });
    let f = Follower::start(dst.clone(), &url, opts(json!({"cursor_key": "/cursor/s"})), Some(cb)).unwrap();
    wait_until("several cut full syncs", || server.requests() >= 8);
    f.stop();
    let events = events.lock().unwrap().clone();
    assert_eq!(events.iter().filter(|e| e.starts_with("done")).collect::<Vec<_>>(), ["done 0"], "{events:?}");
    assert!(events.iter().filter(|e| *e == "started").count() >= 2, "{events:?}");
    assert_eq!(local_records(&dst, "/s/").len(), 100, "the cut resyncs deleted nothing");
    assert_eq!(f_status_resyncing(&dst), Some(true), "the resync is still due");
}

/// The committed resync flag (the cursor is kept at the user key `/cursor/s`).
fn f_status_resyncing(store: &Store) -> Option<bool> {
    let doc: Value = serde_json::from_slice(&store.get(b"/cursor/s").ok()?.value).ok()?;
    doc["resync"].as_bool()
}

#[test]
fn a_full_sync_cut_inside_its_content_length_deletes_nothing() {
    cut_resync_deletes_nothing(|| {
        let full = records(0..100).len();
        let mut out = ok_head(&format!("Content-Length: {full}\r\n"));
        out.extend_from_slice(&records(0..10));
        out
    });
}

#[test]
fn a_full_sync_cut_before_its_final_chunk_deletes_nothing() {
    cut_resync_deletes_nothing(|| {
        let body = records(0..10);
        let mut out = ok_head("Transfer-Encoding: chunked\r\n");
        out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\r\n");
        out
    });
}

#[test]
fn an_unframed_full_sync_deletes_nothing() {
    cut_resync_deletes_nothing(|| {
        let mut out = ok_head("");
        out.extend_from_slice(&records(0..10));
        out
    });
}

#[test]
fn a_400_on_the_cursor_leads_to_a_clean_resync() {
    // A poisoned record (a string updated_at sorts after every number) makes the cursor one
    // the server refuses with 400 from then on.
    let server = Scripted::start(Box::new(|_, target| {
        if target.starts_with("/s/0") {
            let mut body = records(0..5);
            body.extend_from_slice(b"{\"id\":\"poison\",\"updated_at\":\"x\",\"deleted_at\":null}\n");
            let mut out = ok_head(&format!("Content-Length: {}\r\n", body.len()));
            out.extend_from_slice(&body);
            out
        } else {
            let body = br#"{"error":"malformed since","status":400}"#;
            let mut out =
                format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            out.extend_from_slice(body);
            out
        }
    }));
    let url = format!("http://{}/s/", server.addr);
    let dst = memory();
    let reasons: Arc<Mutex<Vec<String>>> = Arc::default();
    let r = reasons.clone();
    let cb = Box::new(move |e: &FollowEvent<'_>| {
        if let FollowEvent::ResyncStarted { reason } = e {
            r.lock().unwrap().push(reason.to_string());
        }
    });
    let f = Follower::start(dst.clone(), &url, opts(json!({})), Some(cb)).unwrap();
    wait_until("a resync after the 400", || f.status()["resyncs"].as_u64() >= Some(2));
    f.stop();
    let reasons = reasons.lock().unwrap().clone();
    assert!(reasons.iter().any(|r| r.contains("400") && r.contains("\"x\"")), "{reasons:?}");
    let targets = server.targets.lock().unwrap().clone();
    assert!(targets.iter().filter(|t| t.starts_with("/s/0")).count() >= 2, "{targets:?}");
    assert_eq!(local_records(&dst, "/s/").len(), 6, "nothing lost");
}
