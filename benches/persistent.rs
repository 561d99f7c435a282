//! Persistent subscription benchmarks (issue 11), short runs: `cargo bench --bench persistent`.
//!
//! Over an in-memory store holding N stream events (100-byte data, appends of 100 events over
//! 10 streams), through the Rust API:
//! 1. catch-up from the beginning with a transient subscription (`subscribe_pull`), for scale;
//! 2. the same through a persistent subscription, 1 and 4 consumers (threads), each `next`
//!    batch (up to `max_in_flight` = 1000) acked with one `ack` call (one commit per batch);
//! 3. the same with one `ack` call (one commit) per event;
//! 4. ack round trip: `max_in_flight` 1, `next` + `ack` of one event at a time, in memory and
//!    on a directory store with `"sync": "always"`.
//!
//! Median of 3 repetitions (min and max printed). Nothing asserts on time.
//! `TIDEMARK_BENCH_QUICK=1` makes a smoke run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark::{
    ExpectedVersion, NewEvent, Start, Store, StreamSelector, SubscriptionEvent, SubscriptionOptions,
    WatchOptions,
};

const DATA: [u8; 100] = [b'd'; 100];
const WAIT: Duration = Duration::from_secs(30);

fn fill(s: &Store, n: u64) {
    let evs: Vec<NewEvent> =
        (0..100).map(|_| NewEvent { id: None, event_type: b"bench", data: &DATA, metadata: b"" }).collect();
    for i in 0..n / 100 {
        s.append(format!("s{}", i % 10).as_bytes(), &evs, ExpectedVersion::Any).unwrap();
    }
}

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = if v[0] < 100.0 { 2 } else { 0 };
    format!("median {:.p$} (min {:.p$}, max {:.p$})", v[v.len() / 2], v[0], v[v.len() - 1])
}

fn transient(s: &Store, n: u64) -> f64 {
    let feed = s
        .subscribe_pull(&StreamSelector::all(), &WatchOptions { start_revision: 1, ..Default::default() })
        .unwrap();
    let start = Instant::now();
    let mut got = 0;
    while got < n {
        got += feed.next(WAIT).unwrap().iter().filter(|e| matches!(e, SubscriptionEvent::Event(_))).count()
            as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Events/s through a new persistent subscription from the beginning with `consumers` threads.
fn persistent(s: &Arc<Store>, name: &str, n: u64, consumers: u64, per_event: bool, in_flight: u32) -> f64 {
    let o = SubscriptionOptions { max_in_flight: in_flight, ..Default::default() };
    s.subscription_create(name.as_bytes(), &StreamSelector::all(), Start::Beginning, &o).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..consumers)
        .map(|_| {
            let (s, done, name) = (s.clone(), done.clone(), name.to_string());
            std::thread::spawn(move || {
                let c = s.subscription_connect(name.as_bytes()).unwrap();
                use std::sync::atomic::Ordering::SeqCst;
                while done.load(SeqCst) < n {
                    let Ok(got) = c.next(Duration::from_millis(20)) else { continue };
                    let revs: Vec<u64> = got.iter().map(|d| d.event.revision).collect();
                    if per_event {
                        revs.iter().for_each(|r| c.ack(&[*r]).unwrap());
                    } else {
                        c.ack(&revs).unwrap();
                    }
                    done.fetch_add(revs.len() as u64, SeqCst);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    s.subscription_delete(name.as_bytes()).unwrap();
    rate
}

/// Microseconds per `next` + `ack` of one event.
fn round_trip(s: &Arc<Store>, name: &str, n: u64) -> f64 {
    let o = SubscriptionOptions { max_in_flight: 1, ..Default::default() };
    s.subscription_create(name.as_bytes(), &StreamSelector::all(), Start::Beginning, &o).unwrap();
    let c = s.subscription_connect(name.as_bytes()).unwrap();
    let start = Instant::now();
    for _ in 0..n {
        let d = c.next(WAIT).unwrap();
        c.ack(&[d[0].event.revision]).unwrap();
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    drop(c);
    s.subscription_delete(name.as_bytes()).unwrap();
    us
}

fn main() {
    let quick = std::env::var("TIDEMARK_BENCH_QUICK").is_ok();
    let n: u64 = if quick { 20_000 } else { 1_000_000 };
    let s = Arc::new(Store::memory(None).unwrap());
    fill(&s, n);
    println!("persistent subscriptions over {n} events in memory (events/s; 3 runs)");
    println!("transient catch-up: {}", stats((0..3).map(|_| transient(&s, n)).collect()));
    let mut k = 0;
    let mut run = |consumers, per_event, in_flight| {
        stats(
            (0..3)
                .map(|_| {
                    k += 1;
                    persistent(&s, &format!("b{k}"), n, consumers, per_event, in_flight)
                })
                .collect(),
        )
    };
    println!("persistent, 1 consumer, ack per batch of 1000: {}", run(1, false, 1000));
    println!("persistent, 4 consumers, ack per batch of 1000: {}", run(4, false, 1000));
    let m = n / 10;
    let mut k = 100;
    let mut run_m = |consumers| {
        stats(
            (0..3)
                .map(|_| {
                    k += 1;
                    persistent(&s, &format!("c{k}"), m, consumers, true, 1000)
                })
                .collect(),
        )
    };
    println!("persistent, 1 consumer, one ack (commit) per event, first {m}: {}", run_m(1));
    println!("persistent, 4 consumers, one ack (commit) per event, first {m}: {}", run_m(4));
    let rt = if quick { 2_000 } else { 50_000 };
    println!(
        "ack round trip in memory (us): {}",
        stats((0..3).map(|i| round_trip(&s, &format!("r{i}"), rt)).collect())
    );
    let dir = tempfile::tempdir().unwrap();
    let d = Arc::new(Store::open(Some(dir.path().to_str().unwrap()), Some(r#"{"sync":"always"}"#)).unwrap());
    fill(&d, 10_000);
    let drt = if quick { 200 } else { 3_000 };
    println!(
        "ack round trip durable sync=always (us): {}",
        stats((0..3).map(|i| round_trip(&d, &format!("r{i}"), drt)).collect())
    );
}
