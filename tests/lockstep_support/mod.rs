//! Helpers for tests/lockstep.rs: an HTTP client over the crate's own, `curl`, waiting, and a
//! reference lockstep server written the way the protocol describes it (wall-clock-like
//! `updated_at` with ties, out-of-order records, heartbeats, dropped connections, blank and
//! malformed lines), independent of tidemark's server.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tidemark::lockstep::http::{self, Url};
use tidemark::{Selector, Store};

/// A response read whole.
pub struct Got {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Got {
    pub fn header(&self, n: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// The NDJSON lines as JSON values (blank lines skipped).
    pub fn lines(&self) -> Vec<Value> {
        ndjson(&self.body)
    }
}

pub fn ndjson(body: &[u8]) -> Vec<Value> {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| {
            serde_json::from_slice(l)
                .unwrap_or_else(|e| panic!("bad line {:?}: {e}", String::from_utf8_lossy(l)))
        })
        .collect()
}

/// Our client: one request, whole body (follow-mode responses must end by themselves).
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Got {
    let u = Url::parse(url).unwrap();
    let stop = AtomicBool::new(false);
    let client = http::Client::new(None, Duration::from_secs(5)).unwrap();
    let mut r = client.request(method, &u, headers, body, Duration::from_secs(20), &stop).unwrap();
    let body = r.read_all(usize::MAX, Duration::from_secs(30)).unwrap();
    Got { status: r.status, headers: r.headers.clone(), body }
}

pub fn get(url: &str) -> Got {
    request("GET", url, &[], b"")
}

pub fn have_curl() -> bool {
    let ok = Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("NOTICE: curl is not installed; the curl assertions are skipped (the same checks run with our client)");
    }
    ok
}

/// Runs curl with `-s -S` and returns (HTTP status, body).
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Polls `f` until it returns true (generous deadline; never a timed assertion on speed).
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The current records under `prefix` of `store`: id -> parsed JSON value.
pub fn local_records(store: &Store, prefix: &str) -> BTreeMap<String, Value> {
    let (events, _) = store.range(&Selector::Prefix(prefix.as_bytes().to_vec()), 0).unwrap();
    events
        .iter()
        .map(|e| {
            let id = String::from_utf8_lossy(&e.key[prefix.len()..]).into_owned();
            let v = serde_json::from_slice(&e.value).unwrap_or_else(|_| {
                panic!("local value of {id} is not JSON: {:?}", String::from_utf8_lossy(&e.value))
            });
            (id, v)
        })
        .collect()
}

/// What a tidemark server serves at since 0 for `prefix`, as id -> record.
pub fn served_records(addr: SocketAddr, path: &str) -> BTreeMap<String, Value> {
    let g = get(&format!("http://{addr}{path}0"));
    assert_eq!(g.status, 200);
    g.lines().into_iter().map(|r| (r["id"].as_str().unwrap().to_string(), r)).collect()
}

/// A tiny deterministic generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51afd7ed558ccd);
        x ^ (x >> 33)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub fn seed() -> u64 {
    let s = std::env::var("LOCKSTEP_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("LOCKSTEP_SEED={s}");
    s
}

// ---------------------------------------------------------------------------------------------
// The reference server.

#[derive(Clone, Debug)]
struct Row {
    updated_at: u64,
    deleted_at: Option<u64>,
    data: Value,
    seq: u64,
}

#[derive(Default)]
pub struct Table {
    /// Wall-clock-like milliseconds; several changes share a tick (ties).
    pub clock: u64,
    /// Send `updated_at` / `deleted_at` as fixed-width ISO-8601-like strings instead of numbers.
    pub string_times: bool,
    seq: u64,
    rows: BTreeMap<String, Row>,
}

impl Table {
    fn time(t: u64, string_times: bool) -> Value {
        if string_times {
            Value::from(format!("2023-11-14T{t:013}Z"))
        } else {
            Value::from(t)
        }
    }

    fn record(id: &str, r: &Row, st: bool) -> Value {
        let deleted = r.deleted_at.map_or(Value::Null, |d| Table::time(d, st));
        let mut v = json!({"id": id, "updated_at": Table::time(r.updated_at, st), "deleted_at": deleted});
        if let (Value::Object(m), Value::Object(d)) = (&mut v, &r.data) {
            for (k, x) in d {
                m.insert(k.clone(), x.clone());
            }
        }
        v
    }

    pub fn put(&mut self, id: &str, data: Value) {
        self.seq += 1;
        self.rows
            .insert(id.to_string(), Row { updated_at: self.clock, deleted_at: None, data, seq: self.seq });
    }

    pub fn delete(&mut self, id: &str) {
        self.seq += 1;
        if let Some(r) = self.rows.get_mut(id) {
            r.updated_at = self.clock;
            r.deleted_at = Some(self.clock);
            r.seq = self.seq;
        }
    }

    pub fn live_ids(&self) -> Vec<String> {
        self.rows.iter().filter(|(_, r)| r.deleted_at.is_none()).map(|(k, _)| k.clone()).collect()
    }

    /// id -> record of the live rows: what a mirror must hold.
    pub fn live(&self) -> BTreeMap<String, Value> {
        self.rows
            .iter()
            .filter(|(_, r)| r.deleted_at.is_none())
            .map(|(k, r)| (k.clone(), Table::record(k, r, self.string_times)))
            .collect()
    }
}

pub struct RefServer {
    pub addr: SocketAddr,
    pub table: Arc<Mutex<Table>>,
    pub connections: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RefServer {
    pub fn start() -> RefServer {
        RefServer::start_with(false)
    }

    pub fn start_with(string_times: bool) -> RefServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let table =
            Arc::new(Mutex::new(Table { clock: 1_700_000_000_000, string_times, ..Table::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let (t, s, c) = (table.clone(), stop.clone(), connections.clone());
        let thread = std::thread::spawn(move || {
            let mut workers = Vec::new();
            while !s.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let n = c.fetch_add(1, Ordering::AcqRel);
                        let (t, s) = (t.clone(), s.clone());
                        workers.push(std::thread::spawn(move || {
                            let _ = serve_ref(stream, n, &t, &s);
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        RefServer { addr, table, connections, stop, thread: Some(thread) }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for RefServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chunk(w: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    write!(w, "{:x}\r\n", data.len())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")
}

/// Serves `GET /items/<since>`: the rows with `updated_at >= since` (live ones only for 0),
/// sorted by `updated_at` except that every fifth pair is swapped (out of order). The
/// connection number picks the framing: 0 mod 3 streams (chunked, heartbeat, live changes,
/// then a connection dropped in the middle of a line); 1 mod 3 is Content-Length with blank,
/// CRLF and malformed lines; 2 mod 3 is chunked in 7-byte chunks.
fn serve_ref(mut s: TcpStream, n: u64, table: &Mutex<Table>, stop: &AtomicBool) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let k = s.read(&mut b)?;
        if k == 0 {
            return Ok(());
        }
        head.extend_from_slice(&b[..k]);
    }
    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string();
    let target = line.split(' ').nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap();
    // The cursor is the last path segment, or the `since` query parameter.
    let query_since =
        target.split_once('?').and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("since=")));
    let since_raw = query_since.unwrap_or_else(|| path.rsplit('/').next().unwrap_or("0"));
    let since = String::from_utf8(http::decode_component(since_raw).unwrap_or_default()).unwrap_or_default();
    let since = if since.is_empty() { "0".to_string() } else { since };
    let st = table.lock().unwrap().string_times;
    // Numbers compare numerically, strings byte-wise (the fixed-width times sort as they read).
    let changed_since = |r: &Row| match Table::time(r.updated_at, st) {
        Value::String(t) => t.as_str() >= since.as_str(),
        _ => r.updated_at >= since.parse::<u64>().unwrap_or(0),
    };
    let (mut rows, snapshot_seq) = {
        let t = table.lock().unwrap();
        let mut rows: Vec<(String, Row)> = t
            .rows
            .iter()
            .filter(|(_, r)| changed_since(r) && (since != "0" || r.deleted_at.is_none()))
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        rows.sort_by_key(|(_, r)| r.updated_at);
        (rows, t.seq)
    };
    let mut i = 3;
    while i + 1 < rows.len() {
        if rows[i].1.updated_at != rows[i + 1].1.updated_at {
            rows.swap(i, i + 1);
        }
        i += 5;
    }
    let lines: Vec<Vec<u8>> = rows
        .iter()
        .map(|(k, r)| {
            let mut l = serde_json::to_vec(&Table::record(k, r, st)).unwrap();
            l.push(b'\n');
            l
        })
        .collect();
    match n % 3 {
        0 => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            for l in &lines {
                chunk(&mut s, l)?;
            }
            chunk(&mut s, b"{\"heartbeat\":true}\n")?;
            let mut sent = snapshot_seq;
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(400) && !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(20));
                let fresh: Vec<Vec<u8>> = {
                    let t = table.lock().unwrap();
                    let mut changed: Vec<(&String, &Row)> =
                        t.rows.iter().filter(|(_, r)| r.seq > sent).collect();
                    changed.sort_by_key(|(_, r)| r.seq);
                    sent = t.seq;
                    changed
                        .into_iter()
                        .map(|(k, r)| {
                            let mut l = serde_json::to_vec(&Table::record(k, r, st)).unwrap();
                            l.push(b'\n');
                            l
                        })
                        .collect()
                };
                for l in &fresh {
                    chunk(&mut s, l)?;
                }
                if fresh.is_empty() {
                    chunk(&mut s, b"{\"heartbeat\":true}\n")?;
                }
            }
            // Dropped in the middle of a record: the partial line must not be applied.
            chunk(&mut s, b"{\"id\":\"torn\",\"upd")?;
            s.flush()?;
            s.shutdown(Shutdown::Both)?;
        }
        1 => {
            let mut body = b"\n\nthis is not json\n\r\n".to_vec();
            for (j, l) in lines.iter().enumerate() {
                if j % 4 == 1 {
                    body.extend_from_slice(&l[..l.len() - 1]);
                    body.extend_from_slice(b"\r\n\n");
                } else {
                    body.extend_from_slice(l);
                }
            }
            body.extend_from_slice(b"{\"no_id\":true,\"updated_at\":1}\n");
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )?;
            s.write_all(&body)?;
        }
        _ => {
            s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            let body: Vec<u8> = lines.concat();
            for c in body.chunks(7) {
                chunk(&mut s, c)?;
            }
            s.write_all(b"0\r\n\r\n")?;
        }
    }
    s.flush()
}

/// What a `Scripted` server writes on one connection: the raw bytes, then it closes.
pub type Script = dyn Fn(u64, &str) -> Vec<u8> + Send + Sync;

/// A hand-made server on 127.0.0.1 that answers connection `n` (from 0), whose request
/// target is the `&str`, with `script(n, target)` written raw, then closes the connection:
/// for hostile or broken servers (cut bodies, unframed bodies, 400 answers).
pub struct Scripted {
    pub addr: SocketAddr,
    pub targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Scripted {
    pub fn start(script: Box<Script>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let (s, t) = (stop.clone(), targets.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::Acquire) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => head.extend_from_slice(&b[..k]),
                    }
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string();
                let target = line.split(' ').nth(1).unwrap_or("/").to_string();
                t.lock().unwrap().push(target.clone());
                let _ = stream.write_all(&script(n, &target));
                let _ = stream.flush();
                let _ = stream.shutdown(Shutdown::Both);
                n += 1;
            }
        });
        Scripted { addr, targets, stop, thread: Some(thread) }
    }

    pub fn requests(&self) -> usize {
        self.targets.lock().unwrap().len()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// `n` NDJSON records `{"id":"<i>","updated_at":<i+1>,"deleted_at":null}` for i in `range`.
pub fn records(range: std::ops::Range<u64>) -> Vec<u8> {
    range
        .map(|i| format!("{{\"id\":\"{i}\",\"updated_at\":{},\"deleted_at\":null}}\n", i + 1))
        .collect::<String>()
        .into_bytes()
}

/// A 200 response head with the given framing header line (or none).
pub fn ok_head(framing: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n{framing}\r\n").into_bytes()
}
