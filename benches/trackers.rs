//! Tracker benchmarks (issue 13), in-memory store, release build:
//!
//! 1. notifications/s to 1 member: `notify` 100,000 times, until the tracker has them all;
//! 2. notifications/s to 1,000 members: 1,000 trackers of one feature, 10,000 `notify`,
//!    until every tracker has every one (10 M deliveries);
//! 3. the cost trackers of *other* features add to a stream append: appends/s of one event
//!    with no tracker, and with 1,000 trackers (250 each on contexts, snapshots, `keys/x/` and
//!    a user feature), alternating A and B in every repetition.
//!
//! Every figure: warm-up, 5 repetitions, median (min–max). Nothing asserts on time.
//! Run: `cargo bench --bench trackers` (about a minute). `TIDEMARK_BENCH_APPENDS=bare` or
//! `=tracked` runs only 200,000 (`TIDEMARK_BENCH_N`) appends to the store without / with the
//! 1,000 trackers, for counting instructions (`valgrind --tool=callgrind`), which do not
//! depend on the load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tidemark::{Action, ExpectedVersion, NewEvent, Store, WatchOptions};

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn print(what: &str, v: Vec<f64>, unit: &str) {
    let (m, lo, hi) = median(v);
    println!("{what}: {m:.0} {unit} (min {lo:.0}, max {hi:.0})");
}

/// Notifies `changes` times and waits until `members` trackers have every notification;
/// returns deliveries per second.
fn fan_out(members: usize, changes: u64) -> f64 {
    let s = Store::memory(None).unwrap();
    let got = Arc::new(AtomicU64::new(0));
    for _ in 0..members {
        let got = got.clone();
        let count = move |_: &tidemark::Notification| {
            got.fetch_add(1, Ordering::Relaxed);
        };
        s.track("jobs", &WatchOptions::default(), Box::new(count)).unwrap();
    }
    let want = members as u64 * changes;
    let t = Instant::now();
    for i in 0..changes {
        s.notify("jobs", Action::Updated, i.to_string().as_bytes(), "{}").unwrap();
    }
    while got.load(Ordering::Relaxed) < want {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    want as f64 / t.elapsed().as_secs_f64()
}

fn appends(s: &Store, n: u64) -> f64 {
    let ev = [NewEvent { id: None, event_type: b"t", data: b"0123456789abcdef", metadata: b"" }];
    let t = Instant::now();
    for i in 0..n {
        s.append(format!("s{}", i % 64).as_bytes(), &ev, ExpectedVersion::Any).unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// A store with 1,000 trackers on features other than streams.
fn tracked_store() -> Store {
    let s = Store::memory(None).unwrap();
    for i in 0..1000 {
        let feature = ["contexts", "snapshots", "keys/x/", "jobs"][i % 4];
        s.track(feature, &WatchOptions::default(), Box::new(|_| {})).unwrap();
    }
    s
}

fn main() {
    if let Ok(which) = std::env::var("TIDEMARK_BENCH_APPENDS") {
        let s = if which == "tracked" { tracked_store() } else { Store::memory(None).unwrap() };
        let n = std::env::var("TIDEMARK_BENCH_N").map_or(200_000, |n| n.parse().expect("a count"));
        println!("{which}: {:.0} appends/s", appends(&s, n));
        return;
    }
    fan_out(1, 10_000);
    print("notify to 1 member", (0..5).map(|_| fan_out(1, 100_000)).collect(), "notifications/s");
    print("notify to 1,000 members", (0..5).map(|_| fan_out(1000, 10_000)).collect(), "deliveries/s");

    let bare = Store::memory(None).unwrap();
    let tracked = tracked_store();
    let n = 200_000;
    appends(&bare, n / 4);
    appends(&tracked, n / 4);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        a.push(appends(&bare, n));
        b.push(appends(&tracked, n));
    }
    let ratio: Vec<f64> = a.iter().zip(&b).map(|(a, b)| (a / b - 1.0) * 100.0).collect();
    print("append, no tracker", a, "appends/s");
    print("append, 1,000 trackers on other features", b, "appends/s");
    let (m, lo, hi) = median(ratio);
    println!(
        "cost of the 1,000 trackers per append: {m:.1} % (min {lo:.1}, max {hi:.1}), paired by repetition"
    );
}
