//! Core benchmarks of tidemark, measured through the C API (`tidemark::ffi::*`, the same
//! `extern "C"` functions a C program links against), in-memory store, release build.
//!
//! Workload (issue 2, "Benchmarks"): 16-byte keys drawn from 100,000 distinct keys,
//! 100-byte values.
//!
//! 1. `tidemark_store_put` throughput on one thread;
//! 2. `tidemark_store_changes` scan rate (events/s) over a large log, default and big limit,
//!    selector ALL and a 10 % prefix;
//! 3. put throughput with 0 / 1 / 10,000 registered prefix watchers (push and pull);
//! 4. put -> callback latency p50 / p99 / p99.9: one put every 20 µs with the writer yielding
//!    or busy-waiting between puts, and back to back (queueing); push and pull watches;
//! 5. bytes of memory per retained event beyond key and value (counting global allocator).
//!
//! Every figure: warm-up, several repetitions, median with min and max. Nothing here asserts
//! on time. `TIDEMARK_BENCH_QUICK=1` runs a reduced smoke version (about 10 s);
//! `TIDEMARK_BENCH_ONLY=put,changes,watchers,latency,memory` runs a subset (e.g. under perf).
//! The full run takes about 50 s on the project's 2-CPU machine. Results are in
//! `docs/benchmarks.md` ("Core").
//! Results are printed as a table and written as markdown to `target/bench-core.md`
//! (or `$CARGO_TARGET_DIR/bench-core.md`).
//!
//! Run: `cargo bench --bench core` (or `make bench`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;
use std::fmt::Write as _;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::*};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tidemark::ffi::tidemark_status::*;
use tidemark::ffi::*;

// ---------------------------------------------------------------------------------------
// A counting allocator (for the memory measurement). Counting is off except inside the
// measured window, so the other benchmarks pay one predictable relaxed load per allocation.

struct CountingAlloc;

static COUNT_ON: AtomicBool = AtomicBool::new(false);
/// Net bytes requested (alloc - free) while counting.
static NET_REQ: AtomicI64 = AtomicI64::new(0);
/// Net bytes as malloc sees them (`malloc_usable_size`) while counting.
static NET_USABLE: AtomicI64 = AtomicI64::new(0);
/// Net bytes of allocations of at least `LARGE` bytes (the log's ring buffer).
static NET_LARGE: AtomicI64 = AtomicI64::new(0);
/// Net number of live allocations.
static NET_BLOCKS: AtomicI64 = AtomicI64::new(0);
/// Calls of `alloc`, `alloc_zeroed` and `realloc` while counting (gross, not net).
static ALLOC_CALLS: AtomicU64 = AtomicU64::new(0);
const LARGE: usize = 1 << 20;

fn usable(p: *mut u8) -> i64 {
    unsafe { libc::malloc_usable_size(p as *mut c_void) as i64 }
}

fn note(req: i64, usable: i64, large: i64, blocks: i64) {
    if req > 0 || blocks > 0 {
        ALLOC_CALLS.fetch_add(1, Relaxed);
    }
    NET_REQ.fetch_add(req, Relaxed);
    NET_USABLE.fetch_add(usable, Relaxed);
    NET_LARGE.fetch_add(large, Relaxed);
    NET_BLOCKS.fetch_add(blocks, Relaxed);
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if COUNT_ON.load(Relaxed) && !p.is_null() {
            let big = if l.size() >= LARGE { l.size() as i64 } else { 0 };
            note(l.size() as i64, usable(p), big, 1);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if COUNT_ON.load(Relaxed) && !p.is_null() {
            let big = if l.size() >= LARGE { l.size() as i64 } else { 0 };
            note(l.size() as i64, usable(p), big, 1);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if COUNT_ON.load(Relaxed) {
            let big = if l.size() >= LARGE { l.size() as i64 } else { 0 };
            note(-(l.size() as i64), -usable(p), -big, -1);
        }
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if !COUNT_ON.load(Relaxed) {
            return System.realloc(p, l, new);
        }
        let old_usable = usable(p);
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            let old_big = if l.size() >= LARGE { l.size() as i64 } else { 0 };
            let new_big = if new >= LARGE { new as i64 } else { 0 };
            note(new as i64 - l.size() as i64, usable(q) - old_usable, new_big - old_big, 0);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------------------------------
// Workload.

const KEYS: usize = 100_000;
const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;

struct Cfg {
    quick: bool,
    reps: usize,
    put_n: usize,
    scan_log: usize,
    watch_n: usize,
    lat_paced: usize,
    lat_b2b: usize,
    mem_n: usize,
}

impl Cfg {
    fn get() -> Cfg {
        let quick = std::env::var("TIDEMARK_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Cfg {
                quick,
                reps: 3,
                put_n: 200_000,
                scan_log: 300_000,
                watch_n: 100_000,
                lat_paced: 5_000,
                lat_b2b: 20_000,
                mem_n: 200_000,
            }
        } else {
            Cfg {
                quick,
                reps: 7,
                put_n: 1_000_000,
                scan_log: 1_000_000,
                watch_n: 400_000,
                lat_paced: 40_000,
                lat_b2b: 200_000,
                mem_n: 1_000_000,
            }
        }
    }
}

/// Key `i`: "k" + 15 decimal digits, e.g. "k000000000012345" (16 bytes).
fn key(i: usize) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    let s = format!("k{i:015}");
    k.copy_from_slice(s.as_bytes());
    k
}

/// All 100,000 keys, and a pseudo-random order of writes over them (xorshift, fixed seed).
struct Workload {
    keys: Vec<[u8; KEY_LEN]>,
    order: Vec<u32>,
}

impl Workload {
    fn new(len: usize) -> Workload {
        let keys = (0..KEYS).map(key).collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let order = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % KEYS as u64) as u32
            })
            .collect();
        Workload { keys, order }
    }
    fn key(&self, n: usize) -> &[u8; KEY_LEN] {
        &self.keys[self.order[n % self.order.len()] as usize]
    }
}

// ---------------------------------------------------------------------------------------
// Thin, checked wrappers over the C API. A failing status is a bug, not a timing.

macro_rules! ok {
    ($e:expr) => {{
        let st = $e;
        if st != TIDEMARK_OK {
            let msg = unsafe { std::ffi::CStr::from_ptr(tidemark_last_error_message()) };
            panic!("{} failed: status {:?} ({:?})", stringify!($e), st, msg);
        }
    }};
}

struct Store(*mut tidemark_store);
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

impl Store {
    fn open() -> Store {
        let mut s = ptr::null_mut();
        ok!(unsafe { tidemark_store_open(ptr::null(), ptr::null(), &mut s) });
        Store(s)
    }
    #[inline]
    fn put(&self, k: &[u8], v: &[u8]) -> u64 {
        let mut rev = 0;
        ok!(unsafe { tidemark_store_put(self.0, k.as_ptr(), k.len(), v.as_ptr(), v.len(), &mut rev) });
        rev
    }
    fn current(&self) -> u64 {
        unsafe { tidemark_store_current_revision(self.0) }
    }
    /// Drops the whole log (keys stay): keeps memory bounded between repetitions.
    fn compact_all(&self) {
        ok!(unsafe { tidemark_store_compact(self.0, self.current() + 1, ptr::null_mut()) });
    }
    fn prefill(&self, w: &Workload, value: &[u8]) {
        for k in &w.keys {
            self.put(k, value);
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        unsafe { tidemark_store_close(self.0) }
    }
}

fn prefix_selector(p: &[u8]) -> tidemark_selector {
    tidemark_selector {
        kind: tidemark_selector_kind::TIDEMARK_SELECT_PREFIX as u32,
        start: tidemark_bytes { ptr: p.as_ptr(), len: p.len() },
        end: tidemark_bytes { ptr: ptr::null(), len: 0 },
    }
}

// ---------------------------------------------------------------------------------------
// Statistics and reporting.

#[derive(Clone, Copy)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(mut xs: Vec<f64>) -> Stat {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len();
    let median = if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 };
    Stat { median, min: xs[0], max: xs[n - 1] }
}

struct Row {
    area: &'static str,
    what: String,
    stat: Stat,
    unit: &'static str,
    target: String,
    verdict: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

fn human(x: f64, unit: &str) -> String {
    match unit {
        "ops/s" | "events/s" | "entries/s" => {
            if x >= 1e6 {
                format!("{:.2} M", x / 1e6)
            } else if x >= 1e3 {
                format!("{:.1} k", x / 1e3)
            } else {
                format!("{x:.0}")
            }
        }
        "µs" => {
            if x >= 100.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        }
        "%" => format!("{x:.0}"),
        _ => format!("{x:.1}"),
    }
}

impl Report {
    fn add(
        &mut self,
        area: &'static str,
        what: impl Into<String>,
        stat: Stat,
        unit: &'static str,
        target: impl Into<String>,
        verdict: impl Into<String>,
    ) {
        let row = Row { area, what: what.into(), stat, unit, target: target.into(), verdict: verdict.into() };
        eprintln!(
            "  {:<62} {:>10} {:<9} (min {}, max {})  {}",
            row.what,
            human(stat.median, unit),
            unit,
            human(stat.min, unit),
            human(stat.max, unit),
            row.verdict
        );
        self.rows.push(row);
    }
    fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        eprintln!("  note: {s}");
        self.notes.push(s);
    }

    fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "| area | measurement | median | min | max | unit | target | result |");
        let _ = writeln!(t, "|---|---|---:|---:|---:|---|---|---|");
        for r in &self.rows {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.area,
                r.what,
                human(r.stat.median, r.unit),
                human(r.stat.min, r.unit),
                human(r.stat.max, r.unit),
                r.unit,
                r.target,
                r.verdict
            );
        }
        t
    }
}

fn verdict_ge(x: f64, target: f64) -> String {
    if x >= target {
        "pass".into()
    } else {
        format!("short ({:.0} % of target)", 100.0 * x / target)
    }
}

fn verdict_le(x: f64, target: f64) -> String {
    if x <= target {
        "pass".into()
    } else {
        format!("short ({:.1}x the target)", x / target)
    }
}

// ---------------------------------------------------------------------------------------
// 1. put throughput.

/// The measured loop of the steady-state put, a function of its own so that a profiler can
/// count it alone (`valgrind --tool=callgrind --collect-atstart=no --toggle-collect=*put_keys*`).
#[inline(never)]
fn put_keys(s: &Store, w: &Workload, base: usize, n: usize, value: &[u8]) {
    for i in 0..n {
        s.put(w.key(base + i), value);
    }
}

fn bench_put(cfg: &Cfg, w: &Workload, rep: &mut Report) {
    eprintln!("[1/5] put throughput, one thread ({} puts x {} reps)", cfg.put_n, cfg.reps);
    let value = [b'v'; VALUE_LEN];

    // Steady state: one store, prefilled with every key, log emptied between repetitions
    // (its ring buffer keeps its capacity, as in a store compacted periodically).
    let s = Store::open();
    s.prefill(w, &value);
    let mut rates = Vec::new();
    let mut cpu_rates = Vec::new();
    for r in 0..=cfg.reps {
        s.compact_all();
        let base = r * cfg.put_n;
        let (t, c) = (Instant::now(), thread_cpu());
        put_keys(&s, w, base, cfg.put_n, &value);
        let (el, cpu) = (t.elapsed(), thread_cpu() - c);
        if r > 0 {
            rates.push(cfg.put_n as f64 / el.as_secs_f64());
            cpu_rates.push(cfg.put_n as f64 / cpu);
        }
    }
    // One more pass with the counting allocator on: allocations per put (issue 22 asks for 0).
    s.compact_all();
    let calls = ALLOC_CALLS.load(Relaxed);
    COUNT_ON.store(true, Relaxed);
    put_keys(&s, w, (cfg.reps + 1) * cfg.put_n, cfg.put_n, &value);
    COUNT_ON.store(false, Relaxed);
    let per_put = (ALLOC_CALLS.load(Relaxed) - calls) as f64 / cfg.put_n as f64;
    drop(s);
    let st = stat(rates);
    rep.add(
        "put",
        "`put`, 1 thread, keys exist, log buffer warm",
        st,
        "ops/s",
        "≥ 3 M/s",
        verdict_ge(st.median, 3e6),
    );
    rep.add("put", "  same, per CPU-second of the writer thread", stat(cpu_rates), "ops/s", "", "");
    let once = Stat { median: per_put, min: per_put, max: per_put };
    rep.add("put", "  same, allocator calls per put (counting allocator, one pass)", once, "calls", "0", "");

    // Cold: a new store each time, the first 100 k puts create the keys and the log grows
    // from empty (ring-buffer doublings included).
    let mut rates = Vec::new();
    for r in 0..cfg.reps.min(3) + 1 {
        let s = Store::open();
        let t = Instant::now();
        for n in 0..cfg.put_n {
            s.put(w.key(n), &value);
        }
        let el = t.elapsed();
        drop(s);
        if r > 0 {
            rates.push(cfg.put_n as f64 / el.as_secs_f64());
        }
    }
    let st = stat(rates);
    rep.add(
        "put",
        format!("`put`, 1 thread, new store ({} puts, log grows from empty)", cfg.put_n),
        st,
        "ops/s",
        "≥ 3 M/s",
        verdict_ge(st.median, 3e6),
    );
}

// ---------------------------------------------------------------------------------------
// 2. changes scan.

fn scan(s: &Store, sel: Option<&tidemark_selector>, limit: usize) -> (u64, u64) {
    let selp = sel.map_or(ptr::null(), |p| p as *const _);
    let (mut from, mut events, mut calls, mut check) = (1u64, 0u64, 0u64, 0u64);
    loop {
        let mut out = ptr::null_mut();
        ok!(unsafe { tidemark_store_changes(s.0, selp, from, 0, limit, &mut out) });
        let n = unsafe { tidemark_events_len(out) };
        if n > 0 {
            // Touch the batch as a reader would: the last event's revision.
            let last = unsafe { &*tidemark_events_data(out).add(n - 1) };
            check = check.wrapping_add(last.revision);
        }
        events += n as u64;
        calls += 1;
        let (more, next) = unsafe { (tidemark_events_has_more(out), tidemark_events_next_revision(out)) };
        from = next;
        unsafe { tidemark_events_free(out) };
        if !more {
            break;
        }
    }
    std::hint::black_box(check);
    (events, calls)
}

fn bench_changes(cfg: &Cfg, w: &Workload, rep: &mut Report) {
    eprintln!("[2/5] changes scan over a {}-event log ({} reps)", cfg.scan_log, cfg.reps);
    let value = [b'v'; VALUE_LEN];
    let s = Store::open();
    s.prefill(w, &value);
    for n in KEYS..cfg.scan_log {
        s.put(w.key(n), &value);
    }
    let log = s.current();
    // "k00000000001" covers keys 10000..=19999: 10 % of the key space.
    let p = b"k00000000001";
    let psel = prefix_selector(p);
    let cases: [(&str, Option<&tidemark_selector>, usize); 4] = [
        ("ALL, default limit (0 = 1000)", None, 0),
        ("ALL, limit 100 000", None, 100_000),
        ("PREFIX (10 % of keys), default limit", Some(&psel), 0),
        ("PREFIX (10 % of keys), limit 100 000", Some(&psel), 100_000),
    ];
    for (name, sel, limit) in cases {
        let mut rates = Vec::new();
        let mut cpu_rates = Vec::new();
        let mut scanned = Vec::new();
        let mut got = (0, 0);
        let mut first = 0.0;
        for r in 0..=cfg.reps {
            let (t, c) = (Instant::now(), thread_cpu());
            got = scan(&s, sel, limit);
            let (el, cpu) = (t.elapsed().as_secs_f64(), thread_cpu() - c);
            if r == 0 {
                first = got.0 as f64 / el;
            } else {
                rates.push(got.0 as f64 / el);
                cpu_rates.push(got.0 as f64 / cpu);
                scanned.push(log as f64 / el);
            }
        }
        let st = stat(rates);
        // DESIGN.md: ALL >= 20 M events/s; issue 22: a 10 % prefix >= 10 M matching events/s.
        let (target, goal) =
            if sel.is_some() { ("≥ 10 M events/s", 10e6) } else { ("≥ 20 M events/s", 20e6) };
        rep.add(
            "changes",
            format!("`changes` {name}: {} events in {} calls", got.0, got.1),
            st,
            "events/s",
            target,
            verdict_ge(st.median, goal),
        );
        rep.add(
            "changes",
            "  same, per CPU-second of the reader thread",
            stat(cpu_rates),
            "events/s",
            "",
            "",
        );
        if sel.is_some() && limit == 0 {
            // The first prefix case's warm-up is the first selective scan of this log.
            let once = Stat { median: first, min: first, max: first };
            rep.add(
                "changes",
                "  same, the first scan of the log (it orders each 1024-entry chunk by key, once)",
                once,
                "events/s",
                "(context)",
                "",
            );
        }
        if sel.is_some() {
            rep.add(
                "changes",
                format!("  same, log length covered per second ({log} entries)"),
                stat(scanned),
                "entries/s",
                "(context)",
                "",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. put throughput with watchers.

/// Userdata of a counting push watch: the callback only adds up PUT events.
struct Counter {
    events: AtomicU64,
    calls: AtomicU64,
}

unsafe extern "C" fn count_cb(ud: *mut c_void, ev: *const tidemark_event, n: usize) {
    let c = &*(ud as *const Counter);
    let evs = std::slice::from_raw_parts(ev, n);
    let puts = evs.iter().filter(|e| e.kind == tidemark_event_kind::TIDEMARK_EVENT_PUT as u32).count();
    c.events.fetch_add(puts as u64, Relaxed);
    c.calls.fetch_add(1, Relaxed);
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    None,
    Push,
    Pull,
}

/// A pull watch drained by its own thread, counting PUT events.
struct PullDrain {
    stop: std::sync::Arc<AtomicBool>,
    counter: std::sync::Arc<Counter>,
    handle: Option<std::thread::JoinHandle<()>>,
}

struct SendPtr<T>(*mut T);
unsafe impl<T> Send for SendPtr<T> {}

impl PullDrain {
    fn start(w: *mut tidemark_watch, on_events: Option<fn(&[tidemark_event])>) -> PullDrain {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let counter = std::sync::Arc::new(Counter { events: AtomicU64::new(0), calls: AtomicU64::new(0) });
        let wp = SendPtr(w);
        let (st2, c2) = (stop.clone(), counter.clone());
        let handle = std::thread::spawn(move || {
            let wp = wp;
            while !st2.load(Relaxed) {
                let mut out = ptr::null_mut();
                let r = unsafe { tidemark_watch_next(wp.0, 20, &mut out) };
                if r == TIDEMARK_OK {
                    let n = unsafe { tidemark_events_len(out) };
                    let evs = unsafe { std::slice::from_raw_parts(tidemark_events_data(out), n) };
                    if let Some(f) = on_events {
                        f(evs);
                    }
                    let puts = evs
                        .iter()
                        .filter(|e| e.kind == tidemark_event_kind::TIDEMARK_EVENT_PUT as u32)
                        .count();
                    c2.events.fetch_add(puts as u64, Relaxed);
                    c2.calls.fetch_add(1, Relaxed);
                    unsafe { tidemark_events_free(out) };
                } else if r != TIDEMARK_ERR_TIMEOUT {
                    break;
                }
            }
        });
        PullDrain { stop, counter, handle: Some(handle) }
    }
    fn stop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
    }
}

struct WatchSet {
    /// Boxed: each counter's address is a callback's userdata and must not move as the Vec grows.
    #[allow(clippy::vec_box)]
    counters: Vec<Box<Counter>>,
    pulls: Vec<*mut tidemark_watch>,
    drains: Vec<PullDrain>,
}

impl WatchSet {
    fn received(&self) -> u64 {
        self.counters.iter().map(|c| c.events.load(Relaxed)).sum::<u64>()
            + self.drains.iter().map(|d| d.counter.events.load(Relaxed)).sum::<u64>()
    }
    fn calls(&self) -> u64 {
        self.counters.iter().map(|c| c.calls.load(Relaxed)).sum::<u64>()
            + self.drains.iter().map(|d| d.counter.calls.load(Relaxed)).sum::<u64>()
    }
    /// Waits until `n` events were received (or 30 s passed); returns false on time-out.
    fn wait_for(&self, n: u64) -> bool {
        let t = Instant::now();
        while self.received() < n {
            if t.elapsed() > Duration::from_secs(30) {
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        true
    }
    fn close(mut self, s: Store) {
        for d in &mut self.drains {
            d.stop();
        }
        for &p in &self.pulls {
            unsafe { tidemark_watch_close(p) };
        }
        drop(s); // push watches get CLOSED, then their drop (no drop callback: counters are ours)
        drop(self.counters);
    }
}

/// Registers watches on `s`. `matching`: watch prefix "k" (every key), or `spread`: watcher
/// j covers keys 10j..10j+9 (each put matches exactly one of the 10,000). The other watchers
/// have prefixes interleaved with the key space that match no key ("k0000000000xxx/").
fn register(s: &Store, kind: Kind, total: usize, spread: bool) -> WatchSet {
    let mut set = WatchSet { counters: Vec::new(), pulls: Vec::new(), drains: Vec::new() };
    if kind == Kind::None || total == 0 {
        return set;
    }
    let mut prefixes: Vec<Vec<u8>> = Vec::new();
    if spread {
        // key(i) = "k" + 15 digits; the first 15 bytes fix i / 10.
        for j in 0..total {
            prefixes.push(key(j * 10)[..15].to_vec());
        }
    } else {
        prefixes.push(b"k".to_vec());
        for j in 1..total {
            // '/' sorts below '0' and never occurs in a key: near keys, matching none.
            let mut p = key(j * (KEYS / total))[..14].to_vec();
            p.push(b'/');
            prefixes.push(p);
        }
    }
    for p in &prefixes {
        let sel = prefix_selector(p);
        match kind {
            Kind::Push => {
                let c = Box::new(Counter { events: AtomicU64::new(0), calls: AtomicU64::new(0) });
                let mut id = 0;
                ok!(unsafe {
                    tidemark_store_watch(
                        s.0,
                        &sel,
                        ptr::null(),
                        Some(count_cb),
                        &*c as *const Counter as *mut c_void,
                        None,
                        &mut id,
                    )
                });
                set.counters.push(c);
            }
            Kind::Pull => {
                let mut wch = ptr::null_mut();
                ok!(unsafe { tidemark_watch_open(s.0, &sel, ptr::null(), &mut wch) });
                set.pulls.push(wch);
            }
            Kind::None => unreachable!(),
        }
    }
    if kind == Kind::Pull {
        // Drain the watches that can receive something; idle ones are never read.
        let live = if spread { set.pulls.len() } else { 1 };
        for &wch in &set.pulls[..live] {
            set.drains.push(PullDrain::start(wch, None));
        }
    }
    assert_eq!(unsafe { tidemark_store_watcher_count(s.0) }, total);
    set
}

fn bench_watchers(cfg: &Cfg, w: &Workload, rep: &mut Report) {
    eprintln!(
        "[3/5] put throughput with watchers ({} puts x {} reps per case)",
        cfg.watch_n,
        cfg.reps.min(5)
    );
    let value = [b'v'; VALUE_LEN];
    let reps = cfg.reps.min(5);
    let cases: [(&str, Kind, usize, bool); 6] = [
        ("0 watchers (baseline)", Kind::None, 0, false),
        ("1 push watcher (prefix \"k\", matches every put)", Kind::Push, 1, false),
        ("10,000 push watchers, 1 matches every put", Kind::Push, 10_000, false),
        ("10,000 push watchers, each put matches exactly 1 (spread)", Kind::Push, 10_000, true),
        ("1 pull watcher (matches every put, drained by a thread)", Kind::Pull, 1, false),
        ("10,000 pull watchers, 1 matches every put (drained)", Kind::Pull, 10_000, false),
    ];
    let mut medians = Vec::new();
    for (name, kind, total, spread) in cases {
        let s = Store::open();
        s.prefill(w, &value);
        let set = register(&s, kind, total, spread);
        let mut writer = Vec::new();
        let mut e2e = Vec::new();
        let mut batch = Vec::new();
        for r in 0..=reps {
            s.compact_all();
            let before = set.received();
            let calls_before = set.calls();
            let base = r * cfg.watch_n;
            let t = Instant::now();
            for n in 0..cfg.watch_n {
                s.put(w.key(base + n), &value);
            }
            let el_w = t.elapsed();
            let ok = kind == Kind::None || set.wait_for(before + cfg.watch_n as u64);
            let el_e = t.elapsed();
            if !ok {
                rep.note(format!(
                    "{name}: only {} of {} events arrived within 30 s",
                    set.received() - before,
                    cfg.watch_n
                ));
            }
            if r > 0 {
                writer.push(cfg.watch_n as f64 / el_w.as_secs_f64());
                e2e.push(cfg.watch_n as f64 / el_e.as_secs_f64());
                let calls = (set.calls() - calls_before).max(1);
                batch.push(cfg.watch_n as f64 / calls as f64);
            }
        }
        set.close(s);
        let st = stat(writer);
        medians.push(st.median);
        rep.add("watchers", format!("put, {name}: writer"), st, "ops/s", "", "");
        if kind != Kind::None {
            rep.add("watchers", "  same, until the last event was delivered", stat(e2e), "ops/s", "", "");
            rep.add(
                "watchers",
                "  same, events per callback / per `watch_next`",
                stat(batch),
                "events",
                "",
                "",
            );
        }
    }
    let push = 100.0 * medians[2] / medians[1];
    let spread = 100.0 * medians[3] / medians[1];
    let pull = 100.0 * medians[5] / medians[4];
    let one = Stat { median: push, min: push, max: push };
    rep.add(
        "watchers",
        "10,000 push (1 matches) vs 1 push, writer medians",
        one,
        "%",
        "≥ 50 %",
        verdict_ge(push, 50.0),
    );
    rep.add(
        "watchers",
        "10,000 push (spread) vs 1 push, writer medians",
        Stat { median: spread, min: spread, max: spread },
        "%",
        "≥ 50 %",
        verdict_ge(spread, 50.0),
    );
    rep.add(
        "watchers",
        "10,000 pull (1 matches) vs 1 pull, writer medians",
        Stat { median: pull, min: pull, max: pull },
        "%",
        "≥ 50 %",
        verdict_ge(pull, 50.0),
    );
}

// ---------------------------------------------------------------------------------------
// 4. put -> callback latency.

/// CPU time of the calling thread, in seconds: a rate per CPU-second is far less sensitive
/// to other processes taking the CPU away than a wall-clock rate (shared 2-CPU machine).
fn thread_cpu() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Involuntary context switches so far of every thread of this process but the main one
/// (the writer, whose `sched_yield`s would count): the dispatcher or consumer thread being
/// taken off its CPU shows up here (a noise indicator for latency figures).
fn preemptions() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0 };
    let main = std::process::id().to_string();
    dir.filter_map(|t| t.ok())
        .filter(|t| t.file_name().to_str() != Some(main.as_str()))
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|st| {
            st.lines()
                .find(|l| l.starts_with("nonvoluntary_ctxt_switches"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

fn clock() -> &'static Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    clock().elapsed().as_nanos() as u64
}

static LAT: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static LAT_SEEN: AtomicU64 = AtomicU64::new(0);

fn record(evs: &[tidemark_event]) {
    let now = now_ns();
    let mut lat = LAT.lock().unwrap();
    for e in evs {
        if e.kind == tidemark_event_kind::TIDEMARK_EVENT_PUT as u32 && e.value.len >= 8 {
            let mut b = [0u8; 8];
            b.copy_from_slice(unsafe { std::slice::from_raw_parts(e.value.ptr, 8) });
            lat.push(now.saturating_sub(u64::from_le_bytes(b)));
        }
    }
    drop(lat);
    LAT_SEEN.fetch_add(evs.len() as u64, Release);
}

unsafe extern "C" fn latency_cb(_ud: *mut c_void, ev: *const tidemark_event, n: usize) {
    record(std::slice::from_raw_parts(ev, n));
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[derive(Clone, Copy, PartialEq)]
enum Pace {
    /// One put every `interval`, the writer yielding its CPU while it waits.
    Yield(Duration),
    /// One put every `interval`, the writer busy-waiting (holds its CPU throughout).
    Spin(Duration),
    /// Back to back: the writer never waits (latency then includes queueing).
    None,
}

/// One latency run: `n` puts paced by `pace`; returns the sorted latencies in ns.
fn latency_run(s: &Store, w: &Workload, n: usize, pace: Pace, base: usize) -> Vec<u64> {
    LAT.lock().unwrap().clear();
    let seen0 = LAT_SEEN.load(Acquire);
    let mut value = [b'v'; VALUE_LEN];
    let (step, yielding) = match pace {
        Pace::Yield(d) => (Some(d.as_nanos() as u64), true),
        Pace::Spin(d) => (Some(d.as_nanos() as u64), false),
        Pace::None => (None, false),
    };
    let mut next = now_ns();
    for i in 0..n {
        if let Some(step) = step {
            next += step;
            let mut t = now_ns();
            while t < next {
                if yielding {
                    // Lets the dispatcher run on this CPU if the scheduler put it here.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                t = now_ns();
            }
            if t > next + step {
                next = t; // fell behind (preempted): do not burst to catch up
            }
        }
        value[..8].copy_from_slice(&now_ns().to_le_bytes());
        s.put(w.key(base + i), &value);
    }
    let t = Instant::now();
    while LAT_SEEN.load(Acquire) < seen0 + n as u64 && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_micros(100));
    }
    let mut v = std::mem::take(&mut *LAT.lock().unwrap());
    v.sort_unstable();
    v
}

fn bench_latency(cfg: &Cfg, w: &Workload, rep: &mut Report) {
    eprintln!("[4/5] put -> callback latency");
    let value = [b'v'; VALUE_LEN];
    let reps = cfg.reps.min(5);
    let pull_drain = |evs: &[tidemark_event]| record(evs);
    for kind in [Kind::Push, Kind::Pull] {
        let s = Store::open();
        s.prefill(w, &value);
        let sel = prefix_selector(b"k");
        let mut pull = ptr::null_mut();
        let mut drain = None;
        match kind {
            Kind::Push => {
                let mut id = 0;
                ok!(unsafe {
                    tidemark_store_watch(
                        s.0,
                        &sel,
                        ptr::null(),
                        Some(latency_cb),
                        ptr::null_mut(),
                        None,
                        &mut id,
                    )
                });
            }
            _ => {
                ok!(unsafe { tidemark_watch_open(s.0, &sel, ptr::null(), &mut pull) });
                drain = Some(PullDrain::start(pull, Some(pull_drain)));
            }
        }
        let label = if kind == Kind::Push {
            "push callback"
        } else {
            "pull `watch_next` (consumer thread blocked in it)"
        };
        let every = Duration::from_micros(20);
        let modes: [(String, Pace, usize); 3] = [
            (
                format!("paced 1 put / 20 µs, writer yields while waiting ({} puts/rep)", cfg.lat_paced),
                Pace::Yield(every),
                cfg.lat_paced,
            ),
            (
                format!("paced 1 put / 20 µs, writer busy-waits ({} puts/rep)", cfg.lat_paced),
                Pace::Spin(every),
                cfg.lat_paced,
            ),
            (
                format!("back to back, latency includes queueing ({} puts/rep)", cfg.lat_b2b),
                Pace::None,
                cfg.lat_b2b,
            ),
        ];
        for (mode, pace, n) in modes {
            if kind == Kind::Pull && matches!(pace, Pace::Spin(_)) {
                continue;
            }
            let (mut p50, mut p99, mut p999, mut mx, mut pre) = (vec![], vec![], vec![], vec![], vec![]);
            let mut off = 0;
            for r in 0..=reps {
                s.compact_all();
                let warm = r == 0;
                let pre0 = preemptions();
                let v = latency_run(&s, w, if warm { n / 4 } else { n }, pace, off);
                let pre1 = preemptions();
                off += n;
                if warm || v.is_empty() {
                    continue;
                }
                p50.push(pct(&v, 0.50));
                p99.push(pct(&v, 0.99));
                p999.push(pct(&v, 0.999));
                mx.push(*v.last().unwrap() as f64 / 1000.0);
                pre.push(pre1.saturating_sub(pre0) as f64);
            }
            let (a, b, c) = (stat(p50), stat(p99), stat(p999));
            rep.add("latency", format!("put → {label}, {mode}: p50"), a, "µs", "", "");
            let target = match (kind, pace) {
                (Kind::Push, Pace::Yield(_) | Pace::Spin(_)) => "p99 ≤ 100 µs",
                _ => "(p99 ≤ 100 µs)",
            };
            rep.add("latency", "  same, p99", b, "µs", target, verdict_le(b.median, 100.0));
            rep.add("latency", "  same, p99.9", c, "µs", "", "");
            rep.add("latency", "  same, max", stat(mx), "µs", "", "");
            rep.add(
                "latency",
                "  same, delivery thread preempted (involuntary context switches per rep)",
                stat(pre),
                "count",
                "",
                "",
            );
        }
        if let Some(mut d) = drain {
            d.stop();
            unsafe { tidemark_watch_close(pull) };
        }
        drop(s);
    }
}

// ---------------------------------------------------------------------------------------
// 5. memory per retained event.

fn counters() -> [i64; 4] {
    [NET_REQ.load(Relaxed), NET_USABLE.load(Relaxed), NET_LARGE.load(Relaxed), NET_BLOCKS.load(Relaxed)]
}

fn bench_memory(cfg: &Cfg, w: &Workload, rep: &mut Report) {
    eprintln!("[5/5] memory per retained event ({} puts)", cfg.mem_n);
    let value = [b'v'; VALUE_LEN];
    let mut per_req = Vec::new();
    let mut per_usable = Vec::new();
    let mut per_small = Vec::new();
    let mut per_large = Vec::new();
    let mut per_blocks = Vec::new();
    let mut new_key = Vec::new();
    for r in 0..cfg.reps.min(3) {
        let s = Store::open();
        // New keys: what the first write of a key costs (key, key-map node share, event).
        COUNT_ON.store(true, SeqCst);
        let a = counters();
        s.prefill(w, &value);
        let b = counters();
        COUNT_ON.store(false, SeqCst);
        new_key.push((b[0] - a[0]) as f64 / KEYS as f64 - (KEY_LEN + VALUE_LEN) as f64);
        // Updates of existing keys: what each retained event costs.
        COUNT_ON.store(true, SeqCst);
        let a = counters();
        for n in 0..cfg.mem_n {
            s.put(w.key(r * cfg.mem_n + n), &value);
        }
        let b = counters();
        COUNT_ON.store(false, SeqCst);
        let n = cfg.mem_n as f64;
        let kv = (KEY_LEN + VALUE_LEN) as f64;
        per_req.push((b[0] - a[0]) as f64 / n - kv);
        per_usable.push((b[1] - a[1]) as f64 / n - kv);
        per_large.push((b[2] - a[2]) as f64 / n);
        per_small.push(((b[0] - a[0]) - (b[2] - a[2])) as f64 / n);
        per_blocks.push((b[3] - a[3]) as f64 / n);
        drop(s);
    }
    let ev = std::mem::size_of::<tidemark::Event>();
    rep.add(
        "memory",
        format!(
            "bytes per retained event beyond key+value ({} B), requested from the allocator",
            KEY_LEN + VALUE_LEN
        ),
        stat(per_req),
        "B",
        "(report)",
        "",
    );
    rep.add(
        "memory",
        "  same, as malloc_usable_size sees it (size-class rounding)",
        stat(per_usable),
        "B",
        "",
        "",
    );
    rep.add(
        "memory",
        "  of which: log ring buffer (allocations ≥ 1 MiB), per event",
        stat(per_large),
        "B",
        "",
        "",
    );
    rep.add(
        "memory",
        "  of which: small allocations per event (all of them)",
        stat(per_small.clone()),
        "B",
        "",
        "",
    );
    rep.add("memory", "  heap blocks per event", stat(per_blocks.clone()), "blocks", "", "");
    let intrinsic: Vec<f64> =
        per_small.iter().map(|s| s + ev as f64 - (KEY_LEN + VALUE_LEN) as f64).collect();
    rep.add(
        "memory",
        format!("  without ring-buffer slack: small allocations + one {ev}-byte `Event`, beyond key+value"),
        stat(intrinsic),
        "B",
        "",
        "",
    );
    rep.add("memory", "first write of a new key: bytes beyond key+value", stat(new_key), "B", "(report)", "");
    rep.note(format!(
        "memory: a retained event is a {ev}-byte `Event` slot in the log's ring buffer plus whatever it allocates (here {:.0} B in {:.1} heap blocks per event: the value with its Arc header); an update of an existing key allocates no key bytes (the key is shared with the key map). The ring buffer grows by doubling, so its share per event lies between {ev} and {} B depending on where the log length falls between two powers of two ({} events retained here).",
        stat(per_small.clone()).median,
        stat(per_blocks.clone()).median,
        2 * ev,
        KEYS + cfg.mem_n
    ));
}

// ---------------------------------------------------------------------------------------

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn machine() -> String {
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let mhz = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let mem = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or("?".into(), |k| format!("{:.1} GiB", k / 1048576.0));
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    format!("{nproc} CPUs ({cpu}, {mhz} MHz), {mem} RAM, Linux {kernel}")
}

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore harness-style arguments.
    let cfg = Cfg::get();
    let started = Instant::now();
    let _ = clock();
    let load_before = loadavg();
    eprintln!(
        "tidemark core benchmarks{} — {}",
        if cfg.quick { " (QUICK smoke run)" } else { "" },
        machine()
    );
    let w = Workload::new(4_000_000);
    let mut rep = Report::default();
    // TIDEMARK_BENCH_ONLY=put,changes,watchers,latency,memory runs a subset (for profiling).
    let only = std::env::var("TIDEMARK_BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|o| o.trim() == name);
    if run("put") {
        bench_put(&cfg, &w, &mut rep);
    }
    if run("changes") {
        bench_changes(&cfg, &w, &mut rep);
    }
    if run("watchers") {
        bench_watchers(&cfg, &w, &mut rep);
    }
    if run("latency") {
        bench_latency(&cfg, &w, &mut rep);
    }
    if run("memory") {
        bench_memory(&cfg, &w, &mut rep);
    }
    let load_after = loadavg();

    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Core results{}\n",
        if cfg.quick { " (QUICK smoke run: reduced sizes, not for comparison)" } else { "" }
    );
    let _ = writeln!(md, "- date: {}", today());
    let _ = writeln!(md, "- machine: {}", machine());
    let _ = writeln!(
        md,
        "- tidemark {} (in-memory store, C API called from Rust, release build)",
        unsafe { std::ffi::CStr::from_ptr(tidemark_version()) }.to_string_lossy()
    );
    let _ = writeln!(
        md,
        "- workload: 16-byte keys over {KEYS} distinct keys in pseudo-random order, {VALUE_LEN}-byte values"
    );
    let _ = writeln!(md, "- repetitions: {} per figure after a warm-up (latency/watchers: {}); median, min, max over repetitions", cfg.reps, cfg.reps.min(5));
    let _ = writeln!(md, "- load average before / after: {load_before} / {load_after} (shared machine)");
    let _ = writeln!(md, "- wall time: {:.0} s\n", started.elapsed().as_secs_f64());
    md.push_str(&rep.table());
    if !rep.notes.is_empty() {
        md.push('\n');
        for n in &rep.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    println!("\n{md}");
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let path = format!("{dir}/bench-core.md");
    match std::fs::write(&path, &md) {
        Ok(()) => eprintln!("written to {path}"),
        Err(e) => eprintln!("could not write {path}: {e}"),
    }
}
