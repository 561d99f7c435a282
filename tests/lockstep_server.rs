//! The lockstep server under hostile and careless clients: idle sockets and slowloris do not
//! lock anyone out, a catch-up of huge values costs no memory per client that does not read,
//! finite requests and follow streams have separate limits, a client that reads nothing is
//! dropped after `write_timeout_ms`, HTTP details (Host, NUL, HEAD, keep-alive after a 4xx),
//! TLS with a certificate made in the test, and the protocol exactly as the 2017 Erlang
//! lockstep client speaks it. Every socket is on 127.0.0.1; nothing asserts on time.
#![cfg(feature = "http")]

mod lockstep_support;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use lockstep_support::*;
use serde_json::{json, Value};
use tidemark::lockstep::{FollowOptions, Follower, Server, ServerOptions};
use tidemark::Store;

fn memory() -> Arc<Store> {
    Arc::new(Store::memory(None).unwrap())
}

fn serve(store: &Arc<Store>, opts: Value) -> Server {
    Server::start(store.clone(), "127.0.0.1:0", ServerOptions::from_json(Some(&opts.to_string())).unwrap())
        .unwrap()
}

/// Sends `raw` on a fresh connection and reads until the server closes (or 10 s pass).
fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Opens a request that asks for a large catch-up and reads nothing of it.
fn stalled_reader(addr: SocketAddr, target: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    // A small receive buffer: the server's side fills sooner.
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn idle_sockets_and_slowloris_lock_nobody_out() {
    let store = memory();
    store.put(b"/s/1", b"{}").unwrap();
    let server = serve(&store, json!({"writable": true, "token": "t0k", "request_timeout_ms": 6000}));
    let addr = server.addr();
    // 1,000 idle sockets and 64 that send a request head a few bytes at a time.
    let idle: Vec<TcpStream> = (0..1000).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut slow: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for s in &mut slow {
        s.write_all(b"GET /s/0 HTTP/1.1\r\nHost: x\r\nX-A: ").unwrap();
    }
    // Counted as accepted, not as open: under load, the first idle sockets may already have been
    // closed by request_timeout_ms when the last ones are accepted.
    wait_until("every socket accepted", || server.status()["accepted_connections"].as_u64() >= Some(1064));
    let base = format!("http://{addr}");
    let auth = [("Authorization", "Bearer t0k")];
    // A well-behaved client: reads, writes and follows.
    assert_eq!(request("GET", &format!("{base}/s/0"), &auth, b"").status, 200);
    assert_eq!(request("PUT", &format!("{base}/s/2"), &auth, b"{\"x\":1}").status, 200);
    let mut follow = TcpStream::connect(addr).unwrap();
    follow
        .write_all(b"GET /s/0?follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"id\":\"2\"") {
        let n = follow.read(&mut buf).unwrap();
        assert!(n > 0, "the follow stream ended");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    for s in &mut slow {
        s.write_all(b"a").unwrap();
    }
    // Neither the idle nor the slow sockets send a head within request_timeout_ms: closed.
    drop(follow);
    wait_until("the idle and slow sockets closed", || server.status()["connections"] == 0);
    let mut closed = 0;
    for mut s in idle.into_iter().chain(slow) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        if s.read_to_end(&mut rest).is_ok() {
            closed += 1;
        }
    }
    assert_eq!(closed, 1064);
    server.stop();
}

#[test]
fn a_catch_up_of_huge_values_holds_no_copy_per_client_and_a_client_that_reads_nothing_is_dropped() {
    let store = memory();
    let pad = "v".repeat((16 << 20) - 16); // values of 16 MiB (the default max_value_size)
    for i in 0..8 {
        store.put(format!("/big/{i}").as_bytes(), format!(r#"{{"pad":"{pad}"}}"#).as_bytes()).unwrap();
    }
    drop(pad);
    let server = serve(&store, json!({"write_timeout_ms": 500}));
    let addr = server.addr();
    let before = rss_bytes();
    // Six clients ask for the 128 MiB catch-up (since 0 and since 1) and read nothing.
    let stalled: Vec<TcpStream> =
        (0..6).map(|i| stalled_reader(addr, if i % 2 == 0 { "/big/0" } else { "/big/1" })).collect();
    wait_until("six catch-ups started", || server.status()["requests"] == 6);
    std::thread::sleep(Duration::from_millis(200)); // let them fill what they can
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("six stalled catch-ups of 8 x 16 MiB: RSS grew by {} KiB", grown >> 10);
    assert!(grown < 48 << 20, "six stalled catch-ups grew RSS by {} MiB", grown >> 20);
    // They take no bytes for write_timeout_ms: dropped.
    wait_until("the stalled clients dropped", || server.status()["connections"] == 0);
    drop(stalled);
    // And a client that reads gets every record, whole.
    let g = get(&format!("http://{addr}/big/0"));
    assert_eq!(g.status, 200);
    let lines = g.lines();
    assert_eq!(lines.len(), 8);
    assert!(lines.iter().all(|l| l["pad"].as_str().map(str::len) == Some((16 << 20) - 16)));
    server.stop();
}

#[test]
fn finite_requests_and_follow_streams_have_separate_limits() {
    let store = memory();
    let pad = "w".repeat(4 << 20);
    for i in 0..8 {
        store.put(format!("/f/{i}").as_bytes(), format!(r#"{{"pad":"{pad}"}}"#).as_bytes()).unwrap();
    }
    let server = serve(&store, json!({"max_connections": 2, "max_follows": 1, "writable": true}));
    let addr = server.addr();
    let base = format!("http://{addr}");
    // Two finite responses in progress (their clients do not read) take both finite slots.
    let held: Vec<TcpStream> = (0..2).map(|_| stalled_reader(addr, "/f/0")).collect();
    wait_until("two finite responses", || server.status()["requests"] == 2);
    let g = get(&format!("{base}/f/0"));
    assert_eq!(g.status, 503, "{}", g.text());
    assert!(g.text().contains("max_connections"));
    assert_eq!(request("PUT", &format!("{base}/f/x"), &[], b"{}").status, 503);
    // A follow stream still gets in; a second one does not.
    let mut follow = TcpStream::connect(addr).unwrap();
    follow.write_all(b"GET /other/0?follow=true HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    follow.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let second = exchange(addr, b"GET /other/0?follow=true HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status_of(&second), 503, "{second}");
    assert!(second.contains("max_follows"));
    drop(held);
    wait_until("the finite slots are free", || get(&format!("{base}/other/0")).status == 200);
    drop(follow);
    server.stop();
}

#[test]
fn every_follow_client_gets_every_record() {
    // Many streams woken by the same commits: none may miss one (a lost wake-up would only be
    // repaired by the next heartbeat, a minute away here).
    let store = memory();
    let server = serve(&store, json!({"heartbeat_ms": 60_000}));
    let addr = server.addr();
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /m/0?follow=true HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&got).contains("\"id\":\"49\"") {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0, "the stream ended");
                    got.extend_from_slice(&buf[..n]);
                }
                String::from_utf8_lossy(&got).matches("\"updated_at\"").count()
            })
        })
        .collect();
    wait_until("every stream open", || server.status()["following"] == 100);
    for i in 0..50 {
        store.put(format!("/m/{i}").as_bytes(), b"{}").unwrap();
    }
    for c in clients {
        assert_eq!(c.join().unwrap(), 50);
    }
    server.stop();
}

#[test]
fn http_details() {
    let store = memory();
    store.put(b"/h/1", b"{\"a\":1}").unwrap();
    let server = serve(&store, json!({"token": "k"}));
    let addr = server.addr();
    // HTTP/1.1 without Host, a NUL in a header value, a head over max_header_bytes.
    let r = exchange(addr, b"GET /h/0 HTTP/1.1\r\nAuthorization: Bearer k\r\n\r\n");
    assert_eq!(status_of(&r), 400, "{r}");
    assert!(r.contains("Host"), "{r}");
    let r = exchange(addr, b"GET /h/0 HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\nAuthorization: Bearer k\r\n\r\n");
    assert_eq!(status_of(&r), 400, "{r}");
    let long = format!("GET /h/{} HTTP/1.1\r\nHost: x\r\n\r\n", "9".repeat(40_000));
    let r = exchange(addr, long.as_bytes());
    assert!([414, 431].contains(&status_of(&r)), "{r}");
    // HEAD: the head of the finite answer, no body.
    let r = exchange(
        addr,
        b"HEAD /h/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(r.ends_with("\r\n\r\n"), "{r:?}");
    assert!(r.contains("x-tidemark-revision: 1"), "{r}");
    // A 4xx keeps the connection usable (keep-alive), and the close is clean, not a reset.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /h/0 HTTP/1.1\r\nHost: x\r\n\r\nGET /h/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("a clean close");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"a\":1"), "{text}");
    server.stop();
}

/// Reads a chunked body off `s` (after the head), the way the 2017 client does: line by line.
fn read_chunked(s: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        s.read_line(&mut size).unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            let mut end = String::new();
            s.read_line(&mut end).unwrap();
            return body;
        }
        let mut chunk = vec![0u8; n + 2];
        s.read_exact(&mut chunk).unwrap();
        body.extend_from_slice(&chunk[..n]);
    }
}

/// One request as the 2017 Erlang lockstep client sends it: the cursor as the last path
/// element, then a chunked NDJSON response. Returns the records.
fn lockstep_2017_get(addr: SocketAddr, path: &str, since: u64) -> Vec<Value> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (&s).write_all(format!("GET {path}{since} HTTP/1.1\r\nHost: {addr}\r\nTE: trailers\r\n\r\n").as_bytes())
        .unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push(line.trim().to_ascii_lowercase());
    }
    assert!(head[0].starts_with("http/1.1 200"), "{head:?}");
    assert!(head.contains(&"transfer-encoding: chunked".to_string()), "{head:?}");
    assert!(head.contains(&"content-type: application/x-ndjson".to_string()), "{head:?}");
    ndjson(&read_chunked(&mut r))
}

#[test]
fn the_2017_erlang_lockstep_client_keeps_up() {
    let store = memory();
    let server = serve(&store, json!({}));
    let addr = server.addr();
    store.put(b"/servers/123", br#"{"ip":"10.0.0.1","port":1234}"#).unwrap();
    store.put(b"/servers/124", br#"{"ip":"10.0.0.2","port":1234}"#).unwrap();
    // Its table, keyed by id; its cursor, the greatest updated_at seen.
    let mut table = std::collections::BTreeMap::new();
    let mut cursor = 0u64;
    let apply =
        |records: Vec<Value>, table: &mut std::collections::BTreeMap<String, Value>, cursor: &mut u64| {
            for r in records {
                let at = r["updated_at"].as_u64().expect("a numeric updated_at");
                assert!(at >= *cursor, "sorted by updated_at");
                *cursor = at;
                let id = r["id"].as_str().unwrap().to_string();
                if r["deleted_at"].is_null() {
                    table.insert(id, r);
                } else {
                    assert_eq!(r["deleted_at"], r["updated_at"]);
                    table.remove(&id);
                }
            }
        };
    apply(lockstep_2017_get(addr, "/servers/", 0), &mut table, &mut cursor);
    assert_eq!(table.keys().collect::<Vec<_>>(), ["123", "124"]);
    store.delete(b"/servers/123").unwrap();
    store.put(b"/servers/125", br#"{"ip":"10.0.0.3"}"#).unwrap();
    // Asked again from its cursor (inclusive): the repeat, the tombstone, the new record.
    let again = lockstep_2017_get(addr, "/servers/", cursor);
    assert_eq!(again.len(), 3, "{again:?}");
    apply(again, &mut table, &mut cursor);
    assert_eq!(table.keys().collect::<Vec<_>>(), ["124", "125"]);
    assert_eq!(table["125"]["ip"], "10.0.0.3");
    server.stop();
}

#[test]
fn tls_on_both_sides_with_a_certificate_made_here() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let src = memory();
    src.put(b"/t/1", b"{\"secret\":true}").unwrap();
    let server = serve(&src, json!({"tls_cert": cert, "tls_key": key}));
    assert_eq!(server.status()["tls"], true);
    let url = format!("https://127.0.0.1:{}/t/", server.addr().port());
    let dst = memory();
    let opts = |extra: Value| {
        let mut o = json!({"backoff_initial_ms": 20, "backoff_max_ms": 100});
        o.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        FollowOptions::from_json(Some(&o.to_string())).unwrap()
    };
    let f = Follower::start(dst.clone(), &url, opts(json!({"tls_ca_file": cert})), None).unwrap();
    wait_until("mirrored over TLS", || dst.get(b"/t/1").is_ok());
    src.put(b"/t/2", b"{}").unwrap();
    wait_until("live over TLS", || dst.get(b"/t/2").is_ok());
    f.stop();
    // Without trusting the certificate: errors, nothing mirrored.
    let other = memory();
    let f = Follower::start(other.clone(), &url, opts(json!({})), None).unwrap();
    wait_until("an untrusted certificate is refused", || f.status()["errors"].as_u64() >= Some(2));
    let st = f.status();
    assert!(st["last_error"].as_str().unwrap().contains("certificate"), "{st}");
    f.stop();
    assert!(other.get(b"/t/1").is_err());
    // Plain HTTP to the TLS port is no request.
    let r = exchange(server.addr(), b"GET /t/0 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!r.contains("secret"));
    // Half a TLS configuration is refused.
    assert!(ServerOptions::from_json(Some(&json!({"tls_cert": cert}).to_string())).is_err());
    let bad = ServerOptions::from_json(Some(&json!({"tls_cert": key, "tls_key": key}).to_string())).unwrap();
    assert!(Server::start(src.clone(), "127.0.0.1:0", bad).is_err());
    server.stop();
}
