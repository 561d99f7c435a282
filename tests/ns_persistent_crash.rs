//! Kill -9 of a consumer process on a durable store (ExESDB's defect as a test): the child
//! appends 10 events, consumes them through a persistent subscription, acks 5 and waits to be
//! killed; the parent reopens the store and delivery resumes at event 6, with 6 to 10
//! delivered again. Its own test binary, as `ns_streams_crash.rs` explains.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use tidemark::{ExpectedVersion, NewEvent, Start, Store, StreamSelector, SubscriptionOptions};

const OPTS: &str = r#"{"sync":"always"}"#;

/// The child: consume 10, ack 5, report, then hang until killed.
#[test]
fn persistent_crash_child() {
    let Ok(dir) = std::env::var("TIDEMARK_PERSISTENT_CRASH_CHILD") else { return };
    let s = Store::open(Some(&dir), Some(OPTS)).unwrap();
    let data: Vec<String> = (1..=10).map(|i| format!("event {i}")).collect();
    let evs: Vec<NewEvent> = data
        .iter()
        .map(|d| NewEvent { id: None, event_type: b"t", data: d.as_bytes(), metadata: b"" })
        .collect();
    s.append(b"orders", &evs, ExpectedVersion::NoStream).unwrap();
    let o = SubscriptionOptions { max_in_flight: 10, ..Default::default() };
    s.subscription_create(b"sub", &StreamSelector::stream("orders"), Start::Beginning, &o).unwrap();
    let c = s.subscription_connect(b"sub").unwrap();
    let mut got = Vec::new();
    while got.len() < 10 {
        got.extend(c.next(Duration::from_secs(10)).unwrap());
    }
    let first5: Vec<u64> = got[..5].iter().map(|d| d.event.revision).collect();
    c.ack(&first5).unwrap();
    println!("ACKED");
    loop {
        std::thread::park();
    }
}

#[test]
fn kill_after_acking_five_of_ten_resumes_at_the_sixth() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["persistent_crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("TIDEMARK_PERSISTENT_CRASH_CHILD", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.map(|l| l.unwrap()).any(|l| l.ends_with("ACKED")), "the child acked");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let s = Store::open(Some(dir.path().to_str().unwrap()), None).unwrap();
    let c = s.subscription_connect(b"sub").unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        got.extend(c.next(Duration::from_secs(10)).unwrap());
    }
    let data: Vec<String> = got.iter().map(|d| String::from_utf8(d.event.data().to_vec()).unwrap()).collect();
    assert_eq!(data, ["event 6", "event 7", "event 8", "event 9", "event 10"]);
    assert!(c.next(Duration::ZERO).is_err(), "nothing else");
    assert_eq!(s.subscription_list().unwrap()[0].lag, 5);
}
