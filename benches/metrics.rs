//! What metrics cost the write path: single-thread put rate with the store option
//! `"metrics": true` (the default) against `false`, in memory and in a directory store with
//! `sync: "none"` (its write groups take the flush timing). Runs alternate on and off so that
//! machine noise hits both alike; each figure is the median of the runs with min and max.
//! Nothing here asserts on time. `TIDEMARK_BENCH_QUICK=1` for a smoke run;
//! `TIDEMARK_BENCH_ONE` for one run under callgrind (see `one`).
//!
//! Run: `cargo bench --bench metrics`. Results are in `docs/benchmarks.md` ("Metrics").

use std::time::Instant;

use tidemark::Store;

const KEYS: u64 = 100_000;

fn put_rate(path: Option<&str>, metrics: bool, n: u64) -> f64 {
    let opts =
        format!(r#"{{"metrics": {metrics}{}}}"#, if path.is_some() { r#", "sync": "none""# } else { "" });
    let s = Store::open(path, Some(&opts)).unwrap();
    let value = [b'v'; 100];
    let t = Instant::now();
    for i in 0..n {
        let key = format!("key-{:011}", (i * 7919) % KEYS);
        s.put(key.as_bytes(), &value).unwrap();
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    s.close();
    rate
}

fn summary(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// `TIDEMARK_BENCH_ONE=memory|directory,on|off,N`: one run of N puts and nothing else, for
/// counting instructions under callgrind (run it at two N: the difference divided by the
/// difference in N is the cost per put, without the store's opening and closing).
fn one(spec: &str) {
    let parts: Vec<&str> = spec.split(',').collect();
    let [kind, m, n] = parts[..] else { panic!("TIDEMARK_BENCH_ONE=memory|directory,on|off,N") };
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s");
    let p = (kind == "directory").then(|| path.to_str().unwrap().to_string());
    let rate = put_rate(p.as_deref(), m == "on", n.parse().unwrap());
    println!("{spec}: {rate:.0} puts/s");
}

fn main() {
    if let Ok(spec) = std::env::var("TIDEMARK_BENCH_ONE") {
        return one(&spec);
    }
    let quick = std::env::var_os("TIDEMARK_BENCH_QUICK").is_some();
    let (runs, n) = if quick { (3, 50_000) } else { (9, 300_000) };
    println!("| store | metrics on (puts/s, median [min, max]) | off | on vs off (medians) |");
    println!("|---|---|---|---|");
    for dir in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let (mut on, mut off) = (Vec::new(), Vec::new());
        put_rate(None, true, n / 10); // warm-up
        for r in 0..runs {
            let path = tmp.path().join(format!("s{r}"));
            let p = dir.then(|| path.to_str().unwrap().to_string());
            for m in if r % 2 == 0 { [true, false] } else { [false, true] } {
                let p = p.as_ref().map(|p| format!("{p}-{m}"));
                let rate = put_rate(p.as_deref(), m, n);
                if m {
                    on.push(rate)
                } else {
                    off.push(rate)
                }
            }
        }
        let (a, b) = (summary(on), summary(off));
        println!(
            "| {} | {:.0} [{:.0}, {:.0}] | {:.0} [{:.0}, {:.0}] | {:+.1} % |",
            if dir { "directory, sync none" } else { "memory" },
            a.0,
            a.1,
            a.2,
            b.0,
            b.1,
            b.2,
            (a.0 / b.0 - 1.0) * 100.0
        );
    }
}
