//! Redis backend benchmarks (issue 14), against a redis-server this bench starts on
//! 127.0.0.1 (a free port, a temporary directory, no persistence so that the disk is not what
//! is measured): `cargo bench --bench redis`.
//!
//! 1. puts/s from 1, 4 and 16 OS processes on one store (each its own keys), side by side
//!    with raw `XADD` unpipelined from the same number of processes through the same client;
//! 2. cross-process put -> watch latency: a child process watches, this one puts (one at a
//!    time, each after the previous was seen), latency measured on the host's wall clock;
//! 3. catch-up of a new process over 1 M events: open the store and read the whole log with a
//!    pull watch from revision 1.
//!
//! Each figure is the median of `TIDEMARK_BENCH_RUNS` (default 3) runs, with min and max.
//! Children are this binary run again (`child-*` arguments). Nothing asserts on time.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tidemark::{Selector, Store, WatchOptions};

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn runs() -> usize {
    std::env::var("TIDEMARK_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

fn me() -> Command {
    Command::new(std::env::current_exe().unwrap())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("child-put") => return child_put(&args[2], args[3].parse().unwrap(), &args[4]),
        Some("child-xadd") => return child_xadd(&args[2], args[3].parse().unwrap(), &args[4]),
        Some("child-watch") => return child_watch(&args[2], args[3].parse().unwrap()),
        _ => {}
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    let base = format!("redis://127.0.0.1:{port}/0");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ::redis::Client::open(base.as_str()).unwrap().get_connection().is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let quick = std::env::var("TIDEMARK_BENCH_QUICK").is_ok();
    let per_proc: u64 = if quick { 500 } else { 20_000 };
    println!("| processes | tidemark put/s (median, min-max) | raw XADD/s (median, min-max) | ratio |");
    println!("|---|---|---|---|");
    for procs in [1usize, 4, 16] {
        let n = per_proc / procs as u64 * if procs == 1 { 1 } else { 2 };
        let mut ours = Vec::new();
        let mut raw = Vec::new();
        for r in 0..runs() {
            let url = format!("{base}?store=put-{procs}-{r}");
            ours.push(fan_out("child-put", &url, procs, n));
            raw.push(fan_out("child-xadd", &base, procs, n));
        }
        let (o, oa, ob) = stats(ours);
        let (x, xa, xb) = stats(raw);
        println!("| {procs} | {o:.0} ({oa:.0}-{ob:.0}) | {x:.0} ({xa:.0}-{xb:.0}) | {:.2} |", o / x);
    }

    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let m: usize = if quick { 200 } else { 2000 };
    for r in 0..runs() {
        let (p50, p99) = latency(&format!("{base}?store=lat-{r}"), m);
        p50s.push(p50);
        p99s.push(p99);
    }
    let (a, amin, amax) = stats(p50s);
    let (b, bmin, bmax) = stats(p99s);
    println!("\ncross-process put -> watch, {m} puts: p50 {a:.0} us ({amin:.0}-{amax:.0}), p99 {b:.0} us ({bmin:.0}-{bmax:.0})");

    let events: u64 = if quick { 20_000 } else { 1_000_000 };
    let mut rates = Vec::new();
    for r in 0..runs() {
        rates.push(catch_up(&format!("{base}?store=catchup-{r}"), events));
    }
    let (c, cmin, cmax) = stats(rates);
    println!("\ncatch-up of a new process over {events} events: {c:.0} events/s ({cmin:.0}-{cmax:.0})");
    let _ = server.kill();
    let _ = server.wait();
}

/// Runs `procs` children doing `n` operations each; returns operations per second overall.
fn fan_out(what: &str, url: &str, procs: usize, n: u64) -> f64 {
    let children: Vec<Child> = (0..procs)
        .map(|i| {
            me().args([what, url, &n.to_string(), &i.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Each child connects, says "ready" and waits for a line on stdin: the clock covers only the work.
    let mut children: Vec<(Child, BufReader<std::process::ChildStdout>)> = children
        .into_iter()
        .map(|mut c| {
            let mut out = BufReader::new(c.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            (c, out)
        })
        .collect();
    let start = Instant::now();
    for (c, _) in &mut children {
        writeln!(c.stdin.as_mut().unwrap(), "go").unwrap();
    }
    for (c, _) in &mut children {
        assert!(c.wait().unwrap().success());
    }
    (procs as u64 * n) as f64 / start.elapsed().as_secs_f64()
}

fn wait_go() {
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
}

fn child_put(url: &str, n: u64, id: &str) {
    let s = Store::open(Some(url), None).unwrap();
    let value = [b'v'; 100];
    wait_go();
    for i in 0..n {
        s.put(format!("p{id}/{}", i % 1000).as_bytes(), &value).unwrap();
    }
}

fn child_xadd(url: &str, n: u64, id: &str) {
    let mut c = ::redis::Client::open(url).unwrap().get_connection().unwrap();
    let value = [b'v'; 100];
    wait_go();
    for _ in 0..n {
        let _: String = ::redis::cmd("XADD")
            .arg(format!("raw-{id}"))
            .arg("*")
            .arg("v")
            .arg(&value[..])
            .query(&mut c)
            .unwrap();
    }
}

/// Watches from revision 1 and prints, per event, the latency from the put's wall-clock
/// stamp (its value) to delivery, in ns; ends after `m` events.
fn child_watch(url: &str, m: usize) {
    let s = Store::open(Some(url), None).unwrap();
    let w =
        s.watch_pull(Selector::All, &WatchOptions { start_revision: 1, ..WatchOptions::default() }).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut seen = 0;
    while seen < m {
        if let Ok(evs) = w.next(Duration::from_secs(10)) {
            let t = now_ns();
            for e in evs.iter().filter(|e| !e.key.is_empty()) {
                let sent: u64 = std::str::from_utf8(&e.value).unwrap().parse().unwrap();
                println!("{}", t - sent);
                seen += 1;
            }
            std::io::stdout().flush().unwrap();
        }
    }
}

fn latency(url: &str, m: usize) -> (f64, f64) {
    let s = Store::open(Some(url), None).unwrap();
    let mut child = me().args(["child-watch", url, &m.to_string()]).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let mut lat = Vec::with_capacity(m);
    for i in 0..m {
        s.put(format!("l{}", i % 100).as_bytes(), now_ns().to_string().as_bytes()).unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        lat.push(line.trim().parse::<f64>().unwrap() / 1000.0);
    }
    child.wait().unwrap();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (lat[m / 2], lat[m * 99 / 100])
}

/// Writes `events` events (batches of 1000 over 10,000 keys), then times a new process's
/// open and read of the whole log (pull watch from revision 1). Returns events per second.
fn catch_up(url: &str, events: u64) -> f64 {
    {
        let s = Store::open(Some(url), None).unwrap();
        let value = [b'v'; 100];
        let keys: Vec<Vec<u8>> = (0..10_000).map(|i| format!("c{i:05}").into_bytes()).collect();
        for b in 0..events / 1000 {
            let ops: Vec<tidemark::Op> = (0..1000)
                .map(|i| tidemark::Op::Put(&keys[((b * 1000 + i) % 10_000) as usize], &value))
                .collect();
            s.commit(&ops).unwrap();
        }
    }
    let start = Instant::now();
    let s = Store::open(Some(url), None).unwrap();
    let w = s
        .watch_pull(
            Selector::All,
            &WatchOptions { start_revision: 1, max_queue: 100_000, ..WatchOptions::default() },
        )
        .unwrap();
    let mut got = 0u64;
    while got < events {
        got += w.next(Duration::from_secs(30)).unwrap().iter().filter(|e| !e.key.is_empty()).count() as u64;
    }
    events as f64 / start.elapsed().as_secs_f64()
}
