//! lockstep over HTTP benchmarks (release build, loopback, in-process server and follower):
//!
//! 1. records/s served in catch-up mode (`GET /servers/0`: snapshot path; `GET /servers/1`:
//!    changes path with dedupe), read by our client, and by curl when it is installed;
//! 2. put -> follower-applied latency in follow mode (p50 / p99 / p99.9), paced puts, the
//!    follower writing into an in-memory store and into a durable one (`sync: "always"`);
//! 3. follower apply rate: a fresh follower mirroring N records (first sync, since 0), and a
//!    follower catching up N updates from its cursor (follow mode), into in-memory and durable
//!    stores.
//!
//! Every figure: several repetitions, median with min and max. Nothing asserts on time.
//! `TIDEMARK_BENCH_QUICK=1` runs a reduced version. Results are printed and written as
//! markdown to `target/bench-lockstep.md` (or `$CARGO_TARGET_DIR/bench-lockstep.md`).
//!
//! Run: `cargo bench --bench lockstep`.

use std::fmt::Write as _;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidemark::lockstep::http::{self, BodyRead, Url};
use tidemark::lockstep::{FollowOptions, Follower, Server, ServerOptions};
use tidemark::{Event, Selector, Store, WatchOptions};

const VALUE: &[u8] = br#"{"ip":"10.0.0.1","port":1234,"role":"web","zone":"eu-west-1a","weight":100}"#;

fn quick() -> bool {
    std::env::var("TIDEMARK_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty())
}

struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(mut xs: Vec<f64>) -> Stat {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Stat { median: xs[xs.len() / 2], min: xs[0], max: xs[xs.len() - 1] }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.0} k/s", r / 1e3)
    }
}

fn fill(store: &Store, n: u64) {
    let mut i = 0;
    while i < n {
        let keys: Vec<Vec<u8>> =
            (i..(i + 1000).min(n)).map(|j| format!("/servers/{j:08}").into_bytes()).collect();
        let ops: Vec<tidemark::Op<'_>> = keys.iter().map(|k| tidemark::Op::Put(k, VALUE)).collect();
        store.commit(&ops).unwrap();
        i += 1000;
    }
}

/// Reads a whole feed with our client; returns the number of lines.
fn read_feed(url: &str) -> u64 {
    let u = Url::parse(url).unwrap();
    let stop = AtomicBool::new(false);
    let client = http::Client::new(None, Duration::from_secs(5)).unwrap();
    let mut r = client.request("GET", &u, &[], b"", Duration::from_secs(60), &stop).unwrap();
    assert_eq!(r.status, 200);
    let mut body = Vec::with_capacity(1 << 20);
    let mut lines = 0;
    loop {
        body.clear();
        match r.read_body(&mut body).unwrap() {
            BodyRead::End => return lines,
            BodyRead::Idle => {}
            BodyRead::Data(_) => lines += body.iter().filter(|&&b| b == b'\n').count() as u64,
        }
    }
}

fn have_curl() -> bool {
    Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn catch_up(report: &mut String, n: u64, reps: usize) {
    let store = Arc::new(Store::memory(None).unwrap());
    fill(&store, n);
    // Updates so the changes path has something to dedupe: every record changed twice.
    fill(&store, n);
    let server = Server::start(store.clone(), "127.0.0.1:0", ServerOptions::default()).unwrap();
    let base = format!("http://{}", server.addr());
    let mut rows = Vec::new();
    for (label, since) in [("since 0 (snapshot)", 0u64), ("since 1 (changes, 2 changes per record)", 1)] {
        let url = format!("{base}/servers/{since}");
        assert_eq!(read_feed(&url), n); // warm-up
        let rates: Vec<f64> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                let got = read_feed(&url);
                got as f64 / t.elapsed().as_secs_f64()
            })
            .collect();
        rows.push((format!("{label}, our client"), stat(rates)));
        if have_curl() {
            let rates: Vec<f64> = (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    let out = Command::new("curl").args(["-s", "-o", "/dev/null", &url]).status().unwrap();
                    assert!(out.success());
                    n as f64 / t.elapsed().as_secs_f64()
                })
                .collect();
            rows.push((format!("{label}, curl (incl. process start)"), stat(rates)));
        }
    }
    server.stop();
    let _ = writeln!(report, "\n### Catch-up served ({n} records of {} bytes, loopback)\n", VALUE.len());
    let _ = writeln!(report, "| request | records/s (median) | min | max |\n|---|---|---|---|");
    for (label, s) in rows {
        let _ = writeln!(
            report,
            "| {label} | {} | {} | {} |",
            fmt_rate(s.median),
            fmt_rate(s.min),
            fmt_rate(s.max)
        );
    }
}

fn quiet_follow() -> FollowOptions {
    FollowOptions::from_json(Some(r#"{"backoff_initial_ms":10,"backoff_max_ms":100,"poll_ms":10}"#)).unwrap()
}

fn latency(report: &mut String, n: usize, durable: Option<&str>) -> (Duration, Duration, Duration) {
    let src = Arc::new(Store::memory(None).unwrap());
    let server = Server::start(src.clone(), "127.0.0.1:0", ServerOptions::default()).unwrap();
    let dir = tempfile_dir("lat");
    let dst = Arc::new(match durable {
        Some(sync) => {
            Store::open(Some(dir.to_str().unwrap()), Some(&format!(r#"{{"sync":"{sync}"}}"#))).unwrap()
        }
        None => Store::memory(None).unwrap(),
    });
    let seen = Arc::new(AtomicU64::new(0));
    let at = Arc::new(Mutex::new(Instant::now()));
    let (s2, a2) = (seen.clone(), at.clone());
    dst.watch(
        Selector::Prefix(b"/servers/".to_vec()),
        &WatchOptions::default(),
        Box::new(move |evs: &[Event]| {
            if let Some(e) = evs.iter().rev().find(|e| e.kind == tidemark::EventKind::Put) {
                *a2.lock().unwrap() = Instant::now();
                let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
                s2.store(v["seq"].as_u64().unwrap_or(0), Ordering::Release);
            }
        }),
    )
    .unwrap();
    let f = Follower::start(dst.clone(), &format!("http://{}/servers/", server.addr()), quiet_follow(), None)
        .unwrap();
    // Wait until the follower streams (first sync done).
    src.put(b"/servers/warm", br#"{"seq":0}"#).unwrap();
    while f.status()["cursor"] != 1 || f.status()["resyncing"] != false {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut lat = Vec::with_capacity(n);
    for i in 1..=n as u64 {
        let value = format!(r#"{{"seq":{i},"ip":"10.0.0.1"}}"#);
        let t0 = Instant::now();
        src.put(format!("/servers/{}", i % 100).as_bytes(), value.as_bytes()).unwrap();
        while seen.load(Ordering::Acquire) < i {
            std::hint::spin_loop();
            if t0.elapsed() > Duration::from_secs(10) {
                panic!("follower did not apply seq {i}: {}", f.status());
            }
        }
        lat.push(at.lock().unwrap().duration_since(t0));
        std::thread::sleep(Duration::from_micros(500));
    }
    f.stop();
    server.stop();
    drop(dst);
    let _ = std::fs::remove_dir_all(&dir);
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    let _ = report;
    (p(0.5), p(0.99), p(0.999))
}

fn tempfile_dir(what: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tidemark-bench-lockstep-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Time for a fresh follower to mirror `n` records (first sync), then for it to catch up `n`
/// updates from its cursor in follow mode.
fn apply_rate(n: u64, durable: Option<&str>) -> (f64, f64) {
    let src = Arc::new(Store::memory(None).unwrap());
    fill(&src, n);
    let server = Server::start(src.clone(), "127.0.0.1:0", ServerOptions::default()).unwrap();
    let url = format!("http://{}/servers/", server.addr());
    let dir = tempfile_dir("apply");
    let open = || {
        Arc::new(match durable {
            Some(sync) => {
                Store::open(Some(dir.to_str().unwrap()), Some(&format!(r#"{{"sync":"{sync}"}}"#))).unwrap()
            }
            None => Store::memory(None).unwrap(),
        })
    };
    let dst = open();
    let target = src.current_revision();
    let t = Instant::now();
    let f = Follower::start(dst.clone(), &url, quiet_follow(), None).unwrap();
    while f.status()["cursor"] != target || f.status()["resyncing"] != false {
        std::thread::sleep(Duration::from_micros(200));
    }
    let first = n as f64 / t.elapsed().as_secs_f64();
    f.stop();
    fill(&src, n);
    let target = src.current_revision();
    let t = Instant::now();
    let f = Follower::start(dst.clone(), &url, quiet_follow(), None).unwrap();
    while f.status()["cursor"] != target {
        std::thread::sleep(Duration::from_micros(200));
    }
    let resumed = n as f64 / t.elapsed().as_secs_f64();
    f.stop();
    server.stop();
    drop(dst);
    let _ = std::fs::remove_dir_all(&dir);
    (first, resumed)
}

fn main() {
    let q = quick();
    let (n, reps, lat_n) = if q { (20_000, 3, 300) } else { (200_000, 5, 3000) };
    let mut report = String::from("## lockstep over HTTP\n");
    let _ = writeln!(
        report,
        "\nMachine: {} cores; release build; {}.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if q { "QUICK run" } else { "full run" }
    );

    eprintln!("catch-up ...");
    catch_up(&mut report, n, reps);

    eprintln!("latency ...");
    let _ = writeln!(report, "\n### put -> follower-applied latency (follow mode, {lat_n} paced puts)\n");
    let _ = writeln!(report, "From the put on the server's store to the follower's local commit being delivered to a watch on the follower's store.\n");
    let _ = writeln!(report, "| follower store | p50 | p99 | p99.9 |\n|---|---|---|---|");
    for (label, durable) in
        [("in-memory", None), ("durable, sync none", Some("none")), ("durable, sync always", Some("always"))]
    {
        let (p50, p99, p999) = latency(&mut report, lat_n, durable);
        let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
        let _ = writeln!(report, "| {label} | {} | {} | {} |", us(p50), us(p99), us(p999));
    }

    eprintln!("apply rate ...");
    let _ =
        writeln!(report, "\n### Follower apply rate ({n} records, batches of up to 1000 per local commit)\n");
    let _ = writeln!(report, "| follower store | first sync (since 0), records/s median [min, max] | catch-up of {n} updates from the cursor, records/s median [min, max] |\n|---|---|---|");
    let apply_reps = if q { 2 } else { 3 };
    for (label, durable) in
        [("in-memory", None), ("durable, sync none", Some("none")), ("durable, sync always", Some("always"))]
    {
        let runs: Vec<(f64, f64)> = (0..apply_reps).map(|_| apply_rate(n, durable)).collect();
        let a = stat(runs.iter().map(|r| r.0).collect());
        let b = stat(runs.iter().map(|r| r.1).collect());
        let _ = writeln!(
            report,
            "| {label} | {} [{}, {}] | {} [{}, {}] |",
            fmt_rate(a.median),
            fmt_rate(a.min),
            fmt_rate(a.max),
            fmt_rate(b.median),
            fmt_rate(b.min),
            fmt_rate(b.max)
        );
    }
    println!("{report}");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(std::path::Path::new(&target).join("bench-lockstep.md"), &report);
}
