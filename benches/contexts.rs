//! Context benchmarks (issue 12), through the C API (`tidemark::ffi::*`, the functions a C
//! program links against), in-memory store, release build, one thread:
//!
//! 1. `tidemark_store_context_update` on a 1 KB document (20 fields), each update changing
//!    one field (merge patch `{"f07": n}`), result JSON requested and freed;
//! 2. `tidemark_store_context_sync` of a client 10 versions behind (one DELTA composed from
//!    10 retained deltas): latency p50 / p99 per call, bytes of the answer;
//! 3. the baseline "store the whole document, send the whole document": `tidemark_store_put`
//!    of the 1 KB JSON text and `tidemark_store_get` of it, and the bytes a client is sent.
//!
//! Every figure: warm-up, 5 repetitions, median (min–max). Nothing asserts on time.
//! Run: `cargo bench --bench contexts` (about 20 s). `TIDEMARK_BENCH_QUICK=1` runs a tenth of
//! it (for `valgrind --tool=callgrind`, whose instruction counts do not depend on the load).

use std::ffi::{c_char, CStr, CString};
use std::ptr;
use std::time::Instant;

use tidemark::ffi::tidemark_status::*;
use tidemark::ffi::*;

fn doc_1k() -> String {
    let fields: Vec<String> = (0..20).map(|i| format!("\"f{i:02}\":\"{}\"", "v".repeat(43))).collect();
    format!("{{{}}}", fields.join(","))
}

fn ok(st: tidemark_status) {
    assert_eq!(st, TIDEMARK_OK, "{:?}", unsafe { CStr::from_ptr(tidemark_last_error_message()) });
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let mut store = ptr::null_mut();
    ok(unsafe { tidemark_store_open(ptr::null(), ptr::null(), &mut store) });
    let doc = CString::new(doc_1k()).unwrap();
    println!("document: {} bytes of JSON", doc.as_bytes().len());
    let id = b"bench";
    ok(unsafe { tidemark_store_context_set(store, id.as_ptr(), id.len(), doc.as_ptr(), ptr::null_mut()) });

    // 1. update throughput
    let patches: Vec<CString> =
        (0..1000).map(|n| CString::new(format!("{{\"f07\":{n}}}")).unwrap()).collect();
    let n = if std::env::var("TIDEMARK_BENCH_QUICK").is_ok() { 5_000 } else { 50_000 };
    let mut rates = Vec::new();
    for rep in 0..6 {
        let t = Instant::now();
        for i in 0..n {
            let mut out: *mut c_char = ptr::null_mut();
            let p = &patches[(i + rep * 7) % patches.len()];
            ok(unsafe { tidemark_store_context_update(store, id.as_ptr(), id.len(), p.as_ptr(), &mut out) });
            unsafe { tidemark_string_free(out) };
        }
        if rep > 0 {
            rates.push(n as f64 / t.elapsed().as_secs_f64());
        }
    }
    let (m, lo, hi) = median(rates);
    println!("context_update (1 KB doc, result JSON): {:.0} k/s ({:.0}–{:.0})", m / 1e3, lo / 1e3, hi / 1e3);

    // 2. sync of a client 10 versions behind
    let mut kind = tidemark_sync_kind::TIDEMARK_SYNC_NO_CHANGE;
    let mut version = 0u64;
    let mut out: *mut c_char = ptr::null_mut();
    ok(unsafe {
        tidemark_store_context_sync(store, id.as_ptr(), id.len(), 1, &mut kind, &mut version, &mut out)
    });
    let full_bytes = unsafe { CStr::from_ptr(out) }.to_bytes().len();
    unsafe { tidemark_string_free(out) };
    let client = version as i64 - 10;
    let mut delta_bytes = 0;
    let mut lat = Vec::with_capacity(20_000);
    for i in 0..22_000 {
        let mut out: *mut c_char = ptr::null_mut();
        let t = Instant::now();
        ok(unsafe {
            tidemark_store_context_sync(
                store,
                id.as_ptr(),
                id.len(),
                client,
                &mut kind,
                &mut version,
                &mut out,
            )
        });
        let dt = t.elapsed().as_secs_f64() * 1e6;
        assert_eq!(kind, tidemark_sync_kind::TIDEMARK_SYNC_DELTA);
        delta_bytes = unsafe { CStr::from_ptr(out) }.to_bytes().len();
        unsafe { tidemark_string_free(out) };
        if i >= 2_000 {
            lat.push(dt);
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "context_sync DELTA over 10 deltas: p50 {:.2} µs, p99 {:.2} µs, {} bytes sent (FULL: {} bytes)",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        delta_bytes,
        full_bytes
    );

    // 3. baseline: put the whole document, get the whole document
    let key = b"doc";
    let text = doc.as_bytes();
    let mut rates = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        for _ in 0..n {
            let mut rev = 0;
            ok(unsafe {
                tidemark_store_put(store, key.as_ptr(), key.len(), text.as_ptr(), text.len(), &mut rev)
            });
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    rates.remove(0);
    let (m, lo, hi) = median(rates);
    println!("baseline put of the whole 1 KB document: {:.0} k/s ({:.0}–{:.0})", m / 1e3, lo / 1e3, hi / 1e3);
    let mut lat = Vec::with_capacity(20_000);
    for i in 0..22_000 {
        let mut e = ptr::null_mut();
        let t = Instant::now();
        ok(unsafe { tidemark_store_get(store, key.as_ptr(), key.len(), &mut e) });
        let dt = t.elapsed().as_secs_f64() * 1e6;
        unsafe { tidemark_entry_free(e) };
        if i >= 2_000 {
            lat.push(dt);
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "baseline get of the whole document: p50 {:.2} µs, p99 {:.2} µs, {} bytes sent per sync (10 versions behind: 10 × {} = {} bytes if every version is sent)",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        text.len(),
        text.len(),
        10 * text.len()
    );
    unsafe { tidemark_store_close(store) };
}
