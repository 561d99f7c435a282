//! Stream benchmarks (issue 10), short runs: `cargo bench --bench streams`.
//!
//! 1. append of 1 event (100-byte data, generated id) to an in-memory store through the C
//!    API (`tidemark_store_append`, expected version ANY), one thread, one stream;
//! 2. read forward through the C API (`tidemark_store_read_stream`, pages of 1000 events);
//! 3. durable appends with `"sync": "always"` from 1, 8 and 64 writers (each its own stream,
//!    exact expected versions), side by side with SQLite (WAL, synchronous=FULL, one row per
//!    transaction) in the same run.
//!
//! Median of 3 repetitions for 1 and 2. Nothing asserts on time. `TIDEMARK_BENCH_QUICK=1`
//! makes a smoke run; `TIDEMARK_BENCH_DIR` picks the directory of the durable runs;
//! `TIDEMARK_BENCH_MEMORY_ONLY=1` skips 3 (for instruction counts under callgrind, where
//! `c_appends` and `c_read_forward` are the inclusive costs to compare).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tidemark::ffi::tidemark_status::*;
use tidemark::ffi::*;
use tidemark::{ExpectedVersion, NewEvent, Store};

const DATA: [u8; 100] = [b'd'; 100];

fn bytes(b: &[u8]) -> tidemark_bytes {
    tidemark_bytes { ptr: b.as_ptr(), len: b.len() }
}

fn empty() -> tidemark_bytes {
    tidemark_bytes { ptr: std::ptr::null(), len: 0 }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn open_memory() -> *mut tidemark_store {
    let mut s = std::ptr::null_mut();
    assert_eq!(unsafe { tidemark_store_open(std::ptr::null(), std::ptr::null(), &mut s) }, TIDEMARK_OK);
    s
}

/// Appends `n` one-event appends through C; returns appends per second.
#[inline(never)]
fn c_appends(s: *mut tidemark_store, stream: &[u8], n: u64) -> f64 {
    let ev = tidemark_stream_event {
        stream: empty(),
        id: empty(),
        event_type: bytes(b"bench"),
        data: bytes(&DATA),
        metadata: empty(),
        version: 0,
        revision: 0,
        timestamp_ms: 0,
    };
    let start = Instant::now();
    for _ in 0..n {
        let st = unsafe {
            tidemark_store_append(
                s,
                stream.as_ptr(),
                stream.len(),
                &ev,
                1,
                TIDEMARK_EXPECT_ANY,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(st, TIDEMARK_OK);
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Reads the whole stream forward in pages of 1000; returns events per second.
#[inline(never)]
fn c_read_forward(s: *mut tidemark_store, stream: &[u8]) -> f64 {
    let start = Instant::now();
    let mut from = 0i64;
    let mut total = 0u64;
    loop {
        let mut out = std::ptr::null_mut();
        let st = unsafe {
            tidemark_store_read_stream(
                s,
                stream.as_ptr(),
                stream.len(),
                from,
                1000,
                tidemark_direction::TIDEMARK_FORWARD as u32,
                &mut out,
            )
        };
        assert_eq!(st, TIDEMARK_OK);
        let n = unsafe { tidemark_stream_events_len(out) };
        if n > 0 {
            // Touch what a consumer reads: the last event's data.
            let d = unsafe { &*tidemark_stream_events_data(out).add(n - 1) };
            assert_eq!(d.data.len, DATA.len());
        }
        unsafe { tidemark_stream_events_free(out) };
        total += n as u64;
        if n < 1000 {
            break;
        }
        from += n as i64;
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn temp() -> tempfile::TempDir {
    match std::env::var("TIDEMARK_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

/// `op(writer)` on `threads` threads for `dur`; returns operations per second.
fn run(threads: usize, dur: Duration, op: impl Fn(usize) + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, total, op) = (&stop, &total, &op);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    op(t);
                    i += 1;
                }
                total.fetch_add(i, Ordering::Relaxed);
            });
        }
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
    });
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn durable_appends(threads: usize, dur: Duration) -> f64 {
    let dir = temp();
    let s = Store::open(Some(dir.path().to_str().unwrap()), Some(r#"{"sync":"always"}"#)).unwrap();
    let next: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    run(threads, dur, |t| {
        let v = next[t].load(Ordering::Relaxed);
        let expected = if v == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(v - 1) };
        let ev = NewEvent { id: None, event_type: b"bench", data: &DATA, metadata: b"" };
        s.append(format!("writer-{t}").as_bytes(), &[ev], expected).unwrap();
        next[t].store(v + 1, Ordering::Relaxed);
    })
}

fn sqlite_appends(threads: usize, dur: Duration) -> f64 {
    let dir = temp();
    let c = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c.execute_batch(
        "CREATE TABLE events (pos INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, version INTEGER NOT NULL, \
         type TEXT NOT NULL, data BLOB NOT NULL, UNIQUE (stream, version))",
    )
    .unwrap();
    let c = Mutex::new(c);
    let next: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    run(threads, dur, |t| {
        let v = next[t].load(Ordering::Relaxed);
        let c = c.lock().unwrap();
        let mut st = c
            .prepare_cached("INSERT INTO events (stream, version, type, data) VALUES (?1, ?2, 'bench', ?3)")
            .unwrap();
        st.execute((format!("writer-{t}"), v as i64, &DATA[..])).unwrap();
        next[t].store(v + 1, Ordering::Relaxed);
    })
}

fn main() {
    let quick = std::env::var("TIDEMARK_BENCH_QUICK").is_ok();
    let n: u64 = if quick { 50_000 } else { 300_000 };
    let dur = Duration::from_millis(if quick { 300 } else { 3000 });
    println!("# tidemark stream benchmark ({} run)\n", if quick { "quick" } else { "full" });

    let mut appends = Vec::new();
    let mut reads = Vec::new();
    for rep in 0..3 {
        let s = open_memory();
        let stream = format!("bench-{rep}");
        appends.push(c_appends(s, stream.as_bytes(), n));
        reads.push(c_read_forward(s, stream.as_bytes()));
        unsafe { tidemark_store_close(s) };
    }
    println!("| in memory, through C | median of 3 | min | max | target |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, v: &[f64], target: &str| {
        let lo = v.iter().cloned().fold(f64::MAX, f64::min);
        let hi = v.iter().cloned().fold(0.0, f64::max);
        println!("| {name} | {:.0} | {lo:.0} | {hi:.0} | {target} |", median(v.to_vec()));
    };
    row(&format!("append 1 event (100 B) /s, {n} appends"), &appends, "≥ 1,000,000");
    row(&format!("read forward events/s, {n} events, pages of 1000"), &reads, "≥ 10,000,000");
    if std::env::var("TIDEMARK_BENCH_MEMORY_ONLY").is_ok() {
        return;
    }

    println!("\n| durable appends/s, sync always | tidemark | SQLite (WAL, FULL) | ratio |");
    println!("|---|---|---|---|");
    for w in [1usize, 8, 64] {
        let t = durable_appends(w, dur);
        let q = sqlite_appends(w, dur);
        println!("| {w} writer(s) | {t:.0} | {q:.0} | {:.1}× |", t / q);
    }
}
