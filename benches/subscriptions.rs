//! Transient subscription benchmarks (issue 11), short runs: `cargo bench --bench subscriptions`.
//!
//! 1. catch-up from the beginning: a pull subscription from revision 1 over a store holding
//!    1 M stream events (100 streams, appends of 100 events, 20-byte data), reading until it
//!    has every event: all streams, one stream prefix matching half of them, and an event-type
//!    filter matching half;
//! 2. live: one writer appends 200 k one-event appends while a push subscription (all
//!    streams) consumes them on the store's dispatcher thread; events/s from the first
//!    append to the last event received, and the writer's appends/s with and without the
//!    subscriber.
//!
//! Median of 3 repetitions, min and max printed. Nothing asserts on time.
//! `TIDEMARK_BENCH_QUICK=1` makes a smoke run (20 k events).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark::{ExpectedVersion, NewEvent, Store, StreamSelector, SubscriptionEvent, WatchOptions};

const DATA: [u8; 20] = [b'd'; 20];

fn quick() -> bool {
    std::env::var_os("TIDEMARK_BENCH_QUICK").is_some()
}

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!("median {:.0}/s (min {:.0}, max {:.0})", v[v.len() / 2], v[0], v[v.len() - 1])
}

/// A store with `n` events over 100 streams `s-00`..`s-99`, types `even`/`odd` alternating.
fn populated(n: usize) -> Store {
    let s = Store::memory(None).unwrap();
    let per = 100;
    let evs: Vec<NewEvent<'_>> = (0..per)
        .map(|i| NewEvent {
            id: None,
            event_type: if i % 2 == 0 { b"even" } else { b"odd" },
            data: &DATA,
            metadata: b"",
        })
        .collect();
    for i in 0..n / per {
        let name = format!("s-{:02}", i % 100);
        s.append(name.as_bytes(), &evs, ExpectedVersion::Any).unwrap();
    }
    s
}

/// Reads a pull subscription from revision 1 until it has `want` events; events/s.
fn catch_up(s: &Store, sel: &StreamSelector, want: usize) -> f64 {
    let start = Instant::now();
    let feed = s.subscribe_pull(sel, &WatchOptions { start_revision: 1, ..Default::default() }).unwrap();
    let mut got = 0;
    while got < want {
        let batch = feed.next(Duration::from_secs(60)).unwrap();
        got += batch.iter().filter(|e| matches!(e, SubscriptionEvent::Event(_))).count();
    }
    assert_eq!(got, want);
    want as f64 / start.elapsed().as_secs_f64()
}

/// One writer, `n` one-event appends; with `subscribed`, a push subscription consumes them.
/// Returns (appends/s of the writer, events/s delivered end to end).
fn live(n: u64, subscribed: bool) -> (f64, f64) {
    let s = Store::memory(None).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    if subscribed {
        let seen = seen.clone();
        s.subscribe(
            &StreamSelector::all(),
            &WatchOptions::default(),
            Box::new(move |events| {
                let k = events.iter().filter(|e| matches!(e, SubscriptionEvent::Event(_))).count() as u64;
                if seen.fetch_add(k, Ordering::Relaxed) + k == n {
                    let _ = tx.send(Instant::now());
                }
            }),
        )
        .unwrap();
    }
    let ev = [NewEvent { id: None, event_type: b"t", data: &DATA, metadata: b"" }];
    let start = Instant::now();
    for _ in 0..n {
        s.append(b"live", &ev, ExpectedVersion::Any).unwrap();
    }
    let wrote = start.elapsed().as_secs_f64();
    let delivered = if subscribed {
        let end = rx.recv_timeout(Duration::from_secs(600)).unwrap();
        n as f64 / (end - start).as_secs_f64()
    } else {
        0.0
    };
    (n as f64 / wrote, delivered)
}

fn main() {
    let n = if quick() { 20_000 } else { 1_000_000 };
    let reps = 3;
    let s = populated(n);
    println!("catch-up from revision 1 over {n} stream events (100 streams, appends of 100):");
    let cases = [
        ("all streams", StreamSelector::all(), n),
        ("prefix s-0 (10 of 100 streams)", StreamSelector::prefix("s-0"), n / 10),
        ("event type even (half)", StreamSelector::event_type("even"), n / 2),
        ("one stream s-42", StreamSelector::stream("s-42"), n / 100),
    ];
    for (what, sel, want) in cases {
        let runs: Vec<f64> = (0..reps).map(|_| catch_up(&s, &sel, want)).collect();
        println!("  {what}: {want} events delivered, {} (delivered events)", stats(runs));
    }
    drop(s);
    let live_n = if quick() { 20_000 } else { 200_000 };
    println!("live: {live_n} one-event appends by one writer:");
    let base: Vec<f64> = (0..reps).map(|_| live(live_n, false).0).collect();
    println!("  writer alone: appends {}", stats(base));
    let (w, d): (Vec<f64>, Vec<f64>) = (0..reps).map(|_| live(live_n, true)).unzip();
    println!("  with a push subscription (all streams): writer {}, delivered {}", stats(w), stats(d));
}
