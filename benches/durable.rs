//! Durable stores side by side with SQLite (WAL, synchronous=FULL, one row per transaction
//! in a change table), in one run: `cargo bench --bench durable`.
//! `TIDEMARK_BENCH_QUICK=1` makes a smoke run; `TIDEMARK_BENCH_DIR` picks the directory
//! (default: the system temporary directory) — it should be on the disk you care about.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tidemark::Store;

const DISTINCT_KEYS: u64 = 100_000;
const VALUE: [u8; 100] = [b'v'; 100];

fn key(i: u64) -> [u8; 16] {
    let mut k = *b"key-000000000000";
    let mut n = i % DISTINCT_KEYS;
    for b in k[4..].iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

fn temp() -> tempfile::TempDir {
    match std::env::var("TIDEMARK_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

/// Runs `op(thread, i)` on `threads` threads for `secs`; returns operations per second.
fn run(threads: usize, dur: Duration, op: impl Fn(usize, u64) + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, total, op) = (&stop, &total, &op);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    op(t, (t as u64) << 40 | i);
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

/// Puts per second, and what the store's own metrics say of its write groups.
fn tidemark_puts(sync: &str, threads: usize, dur: Duration) -> (f64, Groups) {
    let dir = temp();
    let opts = format!(r#"{{"sync":"{sync}"}}"#);
    let s = Store::open(Some(dir.path().to_str().unwrap()), Some(&opts)).unwrap();
    let rate = run(threads, dur, |_, i| {
        s.put(&key(i.wrapping_mul(2654435761)), &VALUE).unwrap();
    });
    let m = s.metrics_json().unwrap();
    let mean = |name: &str| m[name]["sum"].as_f64().unwrap() / m[name]["count"].as_f64().unwrap().max(1.0);
    let groups = Groups {
        size: mean("tidemark_write_group_size"),
        sync_us: mean("tidemark_log_sync_duration_seconds") * 1e6,
        commit_us: mean("tidemark_commit_duration_seconds") * 1e6,
    };
    (rate, groups)
}

/// Means over the sampled write groups and calls (`tidemark_write_group_size`, ...).
struct Groups {
    size: f64,
    sync_us: f64,
    commit_us: f64,
}

fn sqlite_open(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c.execute_batch("CREATE TABLE IF NOT EXISTS changes (rev INTEGER PRIMARY KEY AUTOINCREMENT, key BLOB NOT NULL, value BLOB NOT NULL)")
        .unwrap();
    c
}

/// One row per transaction (autocommit); writers share one connection, which is SQLite's
/// best case for many writer threads (separate connections would contend on its lock).
fn sqlite_puts(threads: usize, dur: Duration) -> f64 {
    let dir = temp();
    let c = Mutex::new(sqlite_open(&dir.path().join("db.sqlite")));
    run(threads, dur, |_, i| {
        let c = c.lock().unwrap();
        let mut st = c.prepare_cached("INSERT INTO changes (key, value) VALUES (?1, ?2)").unwrap();
        st.execute((&key(i.wrapping_mul(2654435761))[..], &VALUE[..])).unwrap();
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

fn main() {
    let quick = std::env::var("TIDEMARK_BENCH_QUICK").is_ok();
    let dur = Duration::from_millis(if quick { 300 } else { 4000 });
    let events: u64 = if quick { 200_000 } else { 2_000_000 };
    println!(
        "# tidemark durable benchmark ({} run; {} per point)",
        if quick { "quick" } else { "full" },
        fmt_dur(dur)
    );
    println!("16-byte keys over {DISTINCT_KEYS} distinct keys, 100-byte values, one put per commit.\n");

    let only = std::env::var("TIDEMARK_BENCH_ONLY").unwrap_or_default();
    if only != "replay" {
        puts(dur);
    }
    if only != "puts" {
        replay(events);
    }
}

fn puts(dur: Duration) {
    let mut rows = Vec::new();
    let mut always = Vec::new();
    let mut sqlite = Vec::new();
    let mut groups = Vec::new();
    for w in [1usize, 8, 64] {
        let (t, g) = tidemark_puts("always", w, dur);
        let q = sqlite_puts(w, dur);
        always.push(t);
        sqlite.push(q);
        groups.push((w, t, g));
        rows.push((format!("sync=always, {w} writer(s)"), t, Some(q)));
    }
    let none1 = tidemark_puts("none", 1, dur).0;
    let none8 = tidemark_puts("none", 8, dur).0;
    let interval1 = tidemark_puts("interval", 1, dur).0;
    rows.push(("sync=none, 1 writer".into(), none1, Some(sqlite[0])));
    rows.push(("sync=none, 8 writers".into(), none8, Some(sqlite[1])));
    rows.push(("sync=interval (100 ms), 1 writer".into(), interval1, Some(sqlite[0])));

    println!("| durable puts/s | tidemark | SQLite (WAL, FULL) | tidemark / SQLite |");
    println!("|---|---:|---:|---:|");
    for (name, t, q) in &rows {
        let q = q.unwrap();
        println!("| {name} | {} | {} | {:.1}× |", fmt_rate(*t), fmt_rate(q), t / q);
    }
    println!();
    for (i, w) in [8usize, 64].iter().enumerate() {
        let ratio = always[i + 1] / (*w as f64 * always[0]);
        println!(
            "group commit, {w} writers: {} = {:.2} × W × the one-writer rate (target ≥ 0.75)",
            fmt_rate(always[i + 1]),
            ratio
        );
    }
    println!("64 writers vs SQLite: {:.1}× (target ≥ 30×)\n", always[2] / sqlite[2]);
    // Where a group's time goes: its sync, and the rest of the cycle (planning, the write,
    // waking the writers); from the store's own sampled metrics.
    println!("| sync=always | commits per group | sync per group (µs) | group cycle (µs) | rest of the cycle (µs) | write call (µs) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (w, rate, g) in &groups {
        let cycle = 1e6 * g.size / rate;
        println!(
            "| {w} writer(s) | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
            g.size,
            g.sync_us,
            cycle,
            cycle - g.sync_us,
            g.commit_us
        );
    }
    println!();
}

fn replay(events: u64) {
    // Replay: a log of `events` puts, reopened without a checkpoint, then with one.
    let dir = temp();
    let opts = r#"{"sync":"none","checkpoint_bytes":0}"#;
    let path = dir.path().to_str().unwrap();
    {
        let s = Store::open(Some(path), Some(opts)).unwrap();
        for i in 0..events {
            s.put(&key(i), &VALUE).unwrap();
        }
    }
    let t_bytes = dir_bytes(dir.path());
    let start = Instant::now();
    let s = Store::open(Some(path), Some(opts)).unwrap();
    let replay = start.elapsed();
    assert_eq!(s.current_revision(), events);
    // `changes` reading the whole log back (from the in-memory tail and from disk).
    let start = Instant::now();
    let mut from = 1;
    let mut n = 0u64;
    loop {
        let (more, next) =
            s.changes_visit(&tidemark::Selector::All, from, 0, 10_000, &mut |_| n += 1).unwrap();
        if !more {
            break;
        }
        from = next;
    }
    let scan = start.elapsed();
    assert_eq!(n, events);
    s.compact(s.current_revision() + 1).unwrap();
    drop(s);
    let start = Instant::now();
    let s = Store::open(Some(path), Some(opts)).unwrap();
    let reopen_ckpt = start.elapsed();
    assert_eq!(s.key_count() as u64, DISTINCT_KEYS.min(events));
    drop(s);

    // SQLite: the same number of rows, for bytes per event and reading back.
    let sdir = temp();
    let db = sdir.path().join("db.sqlite");
    {
        let mut c = sqlite_open(&db);
        c.pragma_update(None, "synchronous", "OFF").unwrap();
        let tx = c.transaction().unwrap();
        {
            let mut st = tx.prepare("INSERT INTO changes (key, value) VALUES (?1, ?2)").unwrap();
            for i in 0..events {
                st.execute((&key(i)[..], &VALUE[..])).unwrap();
            }
        }
        tx.commit().unwrap();
        c.pragma_update(None, "wal_checkpoint", "TRUNCATE").unwrap();
    }
    let q_bytes = dir_bytes(sdir.path());
    let c = sqlite_open(&db);
    let start = Instant::now();
    let mut st = c.prepare("SELECT rev, key, value FROM changes ORDER BY rev").unwrap();
    let mut rows = st.query([]).unwrap();
    let mut m = 0u64;
    while let Some(r) = rows.next().unwrap() {
        let _: (i64, Vec<u8>, Vec<u8>) = (r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap());
        m += 1;
    }
    let q_scan = start.elapsed();
    assert_eq!(m, events);

    let per = |d: Duration| events as f64 / d.as_secs_f64();
    println!("| {events} events | tidemark | SQLite |");
    println!("|---|---:|---:|");
    println!(
        "| reopen, replaying the whole log (no checkpoint) | {} events/s ({}) | – |",
        fmt_rate(per(replay)),
        fmt_dur(replay)
    );
    println!("| reopen from a checkpoint ({DISTINCT_KEYS} keys) | {} | – |", fmt_dur(reopen_ckpt));
    println!(
        "| read the log back in order (`changes` / SELECT) | {} events/s | {} rows/s |",
        fmt_rate(per(scan)),
        fmt_rate(per(q_scan))
    );
    println!(
        "| disk bytes per event | {:.1} | {:.1} |",
        t_bytes as f64 / events as f64,
        q_bytes as f64 / events as f64
    );
    println!("\nreplay target ≥ 2 M events/s: {}", if per(replay) >= 2e6 { "met" } else { "NOT met" });
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

fn fmt_dur(d: Duration) -> String {
    if d.as_secs_f64() >= 1.0 {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}
