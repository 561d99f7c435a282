//! The Redis store URL's options against real redis-servers: `rediss://` with `ca=` (a server
//! started with TLS on a certificate made here), and `replicas=N&wait_ms=T` (`WAIT`, with a
//! second redis-server started as a replica).

mod common;

use std::time::{Duration, Instant};

use common::redis::{free_port, unique_name, Server};
use common::Sink;
use tidemark::{Error, Selector, Store, WatchOptions};

/// Polls `done` until it holds (no timed assertion: the deadline only stops a hung test).
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn info(port: u16, section: &str) -> String {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap().get_connection().unwrap();
    redis::cmd("INFO").arg(section).query(&mut c).unwrap()
}

#[test]
fn rediss_with_a_ca_file() {
    let certs = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let (crt, key) = (certs.path().join("server.crt"), certs.path().join("server.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.key_pair.serialize_pem()).unwrap();
    let tls = free_port();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let _server = Server::start_with(vec![
        "--tls-port".into(),
        tls.to_string(),
        "--tls-cert-file".into(),
        path(&crt),
        "--tls-key-file".into(),
        path(&key),
        "--tls-ca-cert-file".into(),
        path(&crt),
        "--tls-auth-clients".into(),
        "no".into(),
    ]);
    let name = unique_name("tls");
    let url = format!("rediss://127.0.0.1:{tls}/0?store={name}&ca={}", path(&crt));
    let a = Store::open(Some(&url), None).unwrap();
    let b = Store::open(Some(&url), None).unwrap();
    let seen = Sink::default();
    b.watch(Selector::All, &WatchOptions { start_revision: 1, ..WatchOptions::default() }, seen.callback())
        .unwrap();
    assert_eq!(a.put(b"k", b"v").unwrap(), 1);
    assert_eq!(b.put(b"k", b"w").unwrap(), 2);
    let evs = seen.wait_for(|e| e.len() == 2);
    assert_eq!(common::revisions(&evs), vec![1, 2]);
    assert!(a.status().unwrap()["path"].as_str().unwrap().starts_with("rediss://127.0.0.1"));

    // Without the CA the server's certificate is not trusted; plain redis:// to the TLS port fails.
    for url in [
        format!("rediss://127.0.0.1:{tls}/0?store={name}"),
        format!("redis://127.0.0.1:{tls}/0?store={name}"),
    ] {
        match Store::open(Some(&url), None) {
            Err(e @ Error::Io(_)) => assert!(e.to_string().contains("Redis at"), "{url}: {e}"),
            Err(e) => panic!("{url}: {e:?}"),
            Ok(_) => panic!("{url} opened"),
        }
    }
}

#[test]
fn replicas_acknowledge_each_commit() {
    let primary = Server::start();
    let replica =
        Server::start_with(vec!["--replicaof".into(), "127.0.0.1".into(), primary.port.to_string()]);
    eventually("the replica did not connect", || {
        info(replica.port, "replication").contains("master_link_status:up")
            && info(primary.port, "replication").contains("connected_slaves:1")
    });
    let name = unique_name("wait");
    let url = format!("{}&replicas=1&wait_ms=60000", primary.url(&name));
    let s = Store::open(Some(&url), None).unwrap();
    let rev = s.put(b"k", b"v").unwrap();
    // WAIT returned: the replica has the commit already.
    let mut r =
        redis::Client::open(format!("redis://127.0.0.1:{}", replica.port)).unwrap().get_connection().unwrap();
    let last: u64 =
        redis::cmd("HGET").arg(format!("tidemark:{{{name}}}:meta")).arg("last").query(&mut r).unwrap();
    assert_eq!(last, rev);

    // Two replicas asked, one there: the call fails with IO, the commit stays in the log once.
    let two = Store::open(Some(&format!("{}&replicas=2&wait_ms=20", primary.url(&name))), None).unwrap();
    match two.put(b"k", b"w") {
        Err(e @ Error::Io(_)) => assert!(e.to_string().contains("only 1 of 2 replicas"), "{e}"),
        other => panic!("{other:?}"),
    }
    eventually("the store did not find its own commit", || two.current_revision() == rev + 1);
    assert_eq!(&two.get(b"k").unwrap().value[..], b"w");
    assert_eq!(s.put(b"j", b"1").unwrap(), rev + 2);
    let ch = s.changes(&Selector::All, 1, 0, 0).unwrap();
    assert_eq!(common::revisions(&ch.events), vec![rev, rev + 1, rev + 2]);
}
