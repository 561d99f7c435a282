//! Many lockstep clients against one server (release build, loopback, short):
//!
//! 1. N concurrent follow clients (default 10,000; `TIDEMARK_BENCH_FOLLOWERS`), each
//!    receiving every record: the server process's RSS per connected client, and how long
//!    R puts take to reach every client;
//! 2. a well-behaved client's request latency, alone and while 64 slowloris sockets (a request
//!    head sent a byte at a time) and 1,000 idle sockets are open, the N followers included.
//!
//! The clients run in a child process (this binary again, `TIDEMARK_BENCH_CLIENT=addr,n`) so
//! the server's RSS is its own and each process stays within its file descriptor limit.
//! Prints a markdown table (also written to `target/bench-lockstep-clients.md`). Nothing
//! asserts on time. Run: `cargo bench --bench lockstep_clients`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidemark::lockstep::{Server, ServerOptions};
use tidemark::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RECORDS: u64 = 20;

fn main() {
    if let Ok(spec) = std::env::var("TIDEMARK_BENCH_CLIENT") {
        return clients(&spec);
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize =
        std::env::var("TIDEMARK_BENCH_FOLLOWERS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let store = Arc::new(Store::memory(None).unwrap());
    store.put(b"/s/0", br#"{"ip":"10.0.0.1","port":1234}"#).unwrap();
    let opts = ServerOptions {
        max_follows: n + 10,
        max_sockets: n + 2_000,
        heartbeat_ms: 60_000,
        ..Default::default()
    };
    let server = Server::start(store.clone(), "127.0.0.1:0", opts).unwrap();
    let addr = server.addr();
    let alone = latencies(addr, 50);
    let rss0 = rss_kib();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("TIDEMARK_BENCH_CLIENT", format!("{addr},{n}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    let t = Instant::now();
    assert_eq!(next(), "connected");
    let connect_time = t.elapsed();
    let rss1 = rss_kib();
    let following = server.status()["following"].as_u64().unwrap();
    let t = Instant::now();
    for i in 1..=RECORDS {
        store.put(format!("/s/{i}").as_bytes(), br#"{"ip":"10.0.0.2","port":1234}"#).unwrap();
    }
    assert_eq!(next(), "received");
    let deliver = t.elapsed();
    let rss2 = rss_kib();
    // The lock-out attempt, with the followers still connected.
    let idle: Vec<TcpStream> = (0..1000).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut slow: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for s in &mut slow {
        s.write_all(b"GET /s/0 HTTP/1.1\r\nHost: x\r\n").unwrap();
    }
    let dripping = Arc::new(AtomicUsize::new(1));
    let d = dripping.clone();
    let drip = std::thread::spawn(move || {
        while d.load(Ordering::Acquire) == 1 {
            for s in &mut slow {
                let _ = s.write_all(b"X");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(slow);
    });
    let sockets = server.status()["connections"].as_u64().unwrap();
    let attacked = latencies(addr, 50);
    dripping.store(0, Ordering::Release);
    drip.join().unwrap();
    drop(idle);
    child.kill().unwrap();
    let _ = child.wait();
    server.stop();

    let mut md = String::new();
    let per_client = (rss1.saturating_sub(rss0)) as f64 / n as f64;
    writeln!(md, "| measure | result |\n|---|---|").unwrap();
    writeln!(
        md,
        "| follow clients connected (server's `following`) | {following} of {n}, in {:.1} s |",
        connect_time.as_secs_f64()
    )
    .unwrap();
    writeln!(
        md,
        "| server RSS before / with the clients / after {RECORDS} records each | {} / {} / {} MiB |",
        rss0 / 1024,
        rss1 / 1024,
        rss2 / 1024
    )
    .unwrap();
    writeln!(md, "| server RSS per follow client | {per_client:.1} KiB |").unwrap();
    writeln!(
        md,
        "| {RECORDS} puts delivered to every client | {:.2} s ({:.0} k records delivered/s) |",
        deliver.as_secs_f64(),
        (n as f64 * RECORDS as f64) / deliver.as_secs_f64() / 1e3
    )
    .unwrap();
    writeln!(md, "| good client GET, alone: median / max | {} / {} ms |", ms(alone.0), ms(alone.1)).unwrap();
    writeln!(
        md,
        "| good client GET with 64 slowloris + 1,000 idle sockets ({sockets} open): median / max | {} / {} ms |",
        ms(attacked.0),
        ms(attacked.1)
    )
    .unwrap();
    println!("{md}");
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let _ = std::fs::write(format!("{dir}/bench-lockstep-clients.md"), md);
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `count` sequential GETs on fresh connections: (median, max) latency.
fn latencies(addr: std::net::SocketAddr, count: usize) -> (Duration, Duration) {
    let mut all: Vec<Duration> = (0..count)
        .map(|_| {
            let t = Instant::now();
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /s/0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).unwrap();
            assert!(out.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&out));
            t.elapsed()
        })
        .collect();
    all.sort();
    (all[count / 2], all[count - 1])
}

/// The client process: `n` follow clients; prints `connected` when each got its first record
/// and `received` when each got all `RECORDS` more.
fn clients(spec: &str) {
    let (addr, n) = spec.split_once(',').unwrap();
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let n: usize = n.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        for batch in 0..n.div_ceil(500) {
            let mut joins = Vec::new();
            for _ in 0..500.min(n - batch * 500) {
                let r = received.clone();
                joins.push(tokio::spawn(follow(addr, r)));
            }
            for j in joins {
                j.await.unwrap();
            }
        }
        while received.load(Ordering::Acquire) < n as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!("connected");
        while received.load(Ordering::Acquire) < n as u64 * (RECORDS + 1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!("received");
        // Stay connected until killed.
        std::future::pending::<()>().await;
    });
}

/// Connects and sends the request, then reads in the background, counting records (`}\n`).
async fn follow(addr: std::net::SocketAddr, received: Arc<AtomicU64>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /s/0?follow=true HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut last = 0u8;
        loop {
            let Ok(k) = s.read(&mut buf).await else { return };
            if k == 0 {
                return;
            }
            let mut records = u64::from(last == b'}' && buf[0] == b'\n');
            records += buf[..k].windows(2).filter(|w| w == b"}\n").count() as u64;
            last = buf[k - 1];
            received.fetch_add(records, Ordering::AcqRel);
        }
    });
}
