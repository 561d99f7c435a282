//! The lockstep server: serves the keys under a prefix of a store as NDJSON records over HTTP,
//! finite or followed live. One thread per connection (capped), one accept thread.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::http::{self, Conn, Limits, ReadError, Request, POLL};
use super::record::{self, HEARTBEAT};
use super::{options_object, StoreHandle};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::selector::Selector;
use crate::store::Store;
use crate::watch::WatchOptions;

/// Server options, given as a JSON object (every field optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Accept `PUT /<path>/<id>` (JSON body) and `DELETE /<path>/<id>`.
    pub writable: bool,
    /// When set, every request needs `Authorization: Bearer <token>` (else 401).
    pub token: Option<String>,
    /// Follow mode: a `{"heartbeat":true}` chunk after this many ms without data.
    pub heartbeat_ms: u64,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Request line plus headers.
    pub max_header_bytes: usize,
    /// PUT bodies.
    pub max_body_bytes: usize,
    /// Allow binding a non-loopback address.
    pub allow_remote: bool,
    /// Follow mode: events buffered per response before it reads from the log instead.
    pub max_queue: usize,
    /// A keep-alive connection idle this long is closed.
    pub idle_timeout_ms: u64,
    /// A client must send a whole request within this time.
    pub request_timeout_ms: u64,
    /// A client that accepts no bytes for this long is dropped.
    pub write_timeout_ms: u64,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            writable: false,
            token: None,
            heartbeat_ms: 10_000,
            max_connections: 64,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            allow_remote: false,
            max_queue: 1000,
            idle_timeout_ms: 30_000,
            request_timeout_ms: 10_000,
            write_timeout_ms: 30_000,
        }
    }
}

impl ServerOptions {
    /// Parses `{"writable": true, "token": "...", "heartbeat_ms": 5000, ...}`; `None` or an
    /// empty string = defaults; unknown keys and wrong types are errors.
    pub fn from_json(json: Option<&str>) -> Result<ServerOptions> {
        let mut o = ServerOptions::default();
        for (key, v) in options_object(json)? {
            let pos = |v: &Value| {
                v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                    Error::InvalidArgument(format!("option \"{key}\" must be a positive integer"))
                })
            };
            let boolean = |v: &Value| {
                v.as_bool()
                    .ok_or_else(|| Error::InvalidArgument(format!("option \"{key}\" must be true or false")))
            };
            match key.as_str() {
                "writable" => o.writable = boolean(&v)?,
                "allow_remote" => o.allow_remote = boolean(&v)?,
                "token" => {
                    o.token = match &v {
                        Value::Null => None,
                        Value::String(s) if !s.is_empty() && s.bytes().all(|b| (0x21..0x7f).contains(&b)) => {
                            Some(s.clone())
                        }
                        _ => {
                            return Err(Error::InvalidArgument(
                                "option \"token\" must be a non-empty string of visible ASCII characters".into(),
                            ))
                        }
                    }
                }
                "heartbeat_ms" => o.heartbeat_ms = pos(&v)?,
                "max_connections" => o.max_connections = pos(&v)? as usize,
                "max_header_bytes" => o.max_header_bytes = pos(&v)?.max(256) as usize,
                "max_body_bytes" => o.max_body_bytes = pos(&v)? as usize,
                "max_queue" => o.max_queue = pos(&v)? as usize,
                "idle_timeout_ms" => o.idle_timeout_ms = pos(&v)?,
                "request_timeout_ms" => o.request_timeout_ms = pos(&v)?,
                "write_timeout_ms" => o.write_timeout_ms = pos(&v)?,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown server option \"{key}\" (known: writable, token, heartbeat_ms, max_connections, \
                         max_header_bytes, max_body_bytes, allow_remote, max_queue, idle_timeout_ms, \
                         request_timeout_ms, write_timeout_ms)"
                    )))
                }
            }
        }
        Ok(o)
    }
}

struct Shared {
    store: StoreHandle,
    opts: ServerOptions,
    stop: AtomicBool,
    /// Clones of the open connections, to shut them down on stop.
    conns: Mutex<HashMap<u64, TcpStream>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    active: AtomicUsize,
    next_conn: AtomicU64,
    requests: AtomicU64,
    records: AtomicU64,
    refused: AtomicU64,
    follows: AtomicUsize,
}

/// A running lockstep server. Stop it with `stop` (or drop it).
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` (e.g. `"127.0.0.1:4567"`, port 0 for any free port) and serves `store`.
    /// A non-loopback address needs the `allow_remote` option.
    pub fn start<S>(store: S, addr: &str, opts: ServerOptions) -> Result<Server>
    where
        S: std::ops::Deref<Target = Store> + Send + Sync + 'static,
    {
        Server::start_shared(Arc::new(store), addr, opts)
    }

    pub(crate) fn start_shared(store: StoreHandle, addr: &str, opts: ServerOptions) -> Result<Server> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| Error::InvalidArgument(format!("cannot resolve address {addr:?}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(Error::InvalidArgument(format!("address {addr:?} resolves to nothing")));
        }
        if !opts.allow_remote {
            if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                return Err(Error::InvalidArgument(format!(
                    "refusing to listen on {a}, which is not a loopback address, without the \"allow_remote\" option"
                )));
            }
        }
        let listener =
            TcpListener::bind(&addrs[..]).map_err(|e| Error::Io(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr().map_err(|e| Error::Io(e.to_string()))?;
        let shared = Arc::new(Shared {
            store,
            opts,
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            workers: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            requests: AtomicU64::new(0),
            records: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            follows: AtomicUsize::new(0),
        });
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name("tidemark-lockstep-accept".into())
            .spawn(move || accept_loop(&sh, listener))
            .map_err(|e| Error::Io(format!("cannot start the server thread: {e}")))?;
        Ok(Server { addr: bound, shared, accept: Some(accept) })
    }

    /// The bound address (with the actual port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters: open connections, follow responses, requests, records served, refused connections.
    pub fn status(&self) -> Value {
        let sh = &self.shared;
        json!({
            "addr": self.addr.to_string(),
            "connections": sh.active.load(Ordering::Relaxed),
            "following": sh.follows.load(Ordering::Relaxed),
            "requests": sh.requests.load(Ordering::Relaxed),
            "records_served": sh.records.load(Ordering::Relaxed),
            "refused_connections": sh.refused.load(Ordering::Relaxed),
            "writable": sh.opts.writable,
            "auth": sh.opts.token.is_some(),
            "heartbeat_ms": sh.opts.heartbeat_ms,
        })
    }

    /// Stops accepting, ends every response (follow responses get their final chunk), and
    /// waits for every connection thread. Clients that do not read are cut after one second.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else { return };
        let sh = &self.shared;
        sh.stop.store(true, Ordering::Release);
        // Wake the blocking accept with a connection of our own.
        let ip = match self.addr.ip() {
            IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let _ = TcpStream::connect_timeout(&SocketAddr::new(ip, self.addr.port()), Duration::from_secs(1));
        let _ = accept.join();
        let grace = Instant::now() + Duration::from_secs(1);
        while sh.active.load(Ordering::Acquire) > 0 && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(5));
        }
        for s in sh.conns.lock().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let workers = std::mem::take(&mut *sh.workers.lock());
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(sh: &Arc<Shared>, listener: TcpListener) {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) if sh.stop.load(Ordering::Acquire) => return,
            Err(_) => {
                // Out of file descriptors and the like: do not spin.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if sh.stop.load(Ordering::Acquire) {
            return;
        }
        if sh.active.load(Ordering::Acquire) >= sh.opts.max_connections {
            sh.refused.fetch_add(1, Ordering::Relaxed);
            refuse(stream, "too many connections");
            continue;
        }
        let id = sh.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            sh.conns.lock().insert(id, clone);
        }
        sh.active.fetch_add(1, Ordering::AcqRel);
        let worker_sh = sh.clone();
        let spawned = std::thread::Builder::new().name("tidemark-lockstep-conn".into()).spawn(move || {
            serve_connection(&worker_sh, stream);
            worker_sh.conns.lock().remove(&id);
            worker_sh.active.fetch_sub(1, Ordering::AcqRel);
        });
        let mut workers = sh.workers.lock();
        workers.retain(|w| !w.is_finished());
        match spawned {
            Ok(h) => workers.push(h),
            Err(_) => {
                sh.active.fetch_sub(1, Ordering::AcqRel);
                if let Some(s) = sh.conns.lock().remove(&id) {
                    refuse(s, "cannot start a connection thread");
                }
            }
        }
    }
}

fn refuse(stream: TcpStream, why: &str) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let body = error_body(503, why, None);
    let _ = http::write_response(
        &mut &stream,
        503,
        &[("Content-Type", "application/json"), ("Retry-After", "1")],
        &body,
        false,
    );
    let _ = stream.shutdown(Shutdown::Both);
}

fn error_body(status: u16, message: &str, extra: Option<Value>) -> Vec<u8> {
    let mut v = json!({"error": message, "status": status});
    if let (Some(Value::Object(extra)), Value::Object(map)) = (extra, &mut v) {
        map.extend(extra);
    }
    let mut out = serde_json::to_vec(&v).expect("JSON");
    out.push(b'\n');
    out
}

fn send_error(
    w: &mut impl Write,
    status: u16,
    message: &str,
    extra: Option<Value>,
    keep: bool,
) -> io::Result<bool> {
    let body = error_body(status, message, extra);
    let mut headers = vec![("Content-Type", "application/json")];
    if status == 401 {
        headers.push(("WWW-Authenticate", "Bearer"));
    }
    if status == 405 {
        headers.push(("Allow", "GET, PUT, DELETE"));
    }
    http::write_response(w, status, &headers, &body, keep)?;
    Ok(keep)
}

fn serve_connection(sh: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(sh.opts.write_timeout_ms)));
    let limits = Limits {
        max_head: sh.opts.max_header_bytes,
        max_headers: 100,
        max_body: sh.opts.max_body_bytes,
        idle: Duration::from_millis(sh.opts.idle_timeout_ms),
        request: Duration::from_millis(sh.opts.request_timeout_ms),
    };
    let mut conn = Conn::new(stream);
    loop {
        let req = match conn.read_request(&limits, &sh.stop) {
            Ok(r) => r,
            Err(ReadError::Bad(status, msg)) => {
                let _ = send_error(&mut &conn.stream, status, &msg, None, false);
                return;
            }
            Err(_) => return,
        };
        sh.requests.fetch_add(1, Ordering::Relaxed);
        let keep = req.keep_alive() && !sh.stop.load(Ordering::Acquire);
        let stream = &conn.stream;
        let mut w = BufWriter::with_capacity(64 * 1024, stream);
        let reuse = handle(sh, &mut w, &req, keep).and_then(|reuse| w.flush().map(|()| reuse));
        match reuse {
            Ok(true) => {}
            _ => {
                drop(w);
                let _ = conn.stream.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

fn authorized(sh: &Shared, req: &Request) -> bool {
    let Some(token) = &sh.opts.token else { return true };
    let Some(h) = req.header("authorization") else { return false };
    let Some((scheme, given)) = h.split_once(' ') else { return false };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    // Constant time in the token's content.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn handle(sh: &Shared, w: &mut impl Write, req: &Request, keep: bool) -> io::Result<bool> {
    if !authorized(sh, req) {
        return send_error(
            w,
            401,
            "missing or wrong bearer token (send Authorization: Bearer <token>)",
            None,
            keep,
        );
    }
    match req.method.as_str() {
        "GET" => feed(sh, w, req, keep),
        "PUT" | "DELETE" if sh.opts.writable => write_through(sh, w, req, keep),
        "PUT" | "DELETE" => {
            send_error(w, 405, "this server is read-only (start it with the writable option)", None, keep)
        }
        m => send_error(w, 405, &format!("method {m} is not supported"), None, keep),
    }
}

/// What a feed request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FeedQuery {
    pub prefix: Vec<u8>,
    pub since: u64,
    pub follow: bool,
}

pub(crate) fn parse_feed(target: &str) -> std::result::Result<FeedQuery, String> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut since_q = None;
    let mut follow = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "since" => since_q = Some(v),
            "follow" => {
                follow = match v {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => return Err(format!("malformed follow {v:?}: expected true or false")),
                }
            }
            _ => {}
        }
    }
    let decode =
        |s: &str| http::decode_component(s).ok_or_else(|| "malformed percent-escape in the path".to_string());
    let (mut prefix, since_text) = match since_q {
        Some(s) => (decode(path)?, s.to_string()),
        None => {
            let (dir, last) = path.rsplit_once('/').unwrap_or(("", path));
            let last = String::from_utf8(decode(last)?).map_err(|_| "malformed since".to_string())?;
            let mut p = decode(dir)?;
            p.push(b'/');
            (p, if last.is_empty() { "0".to_string() } else { last })
        }
    };
    if !prefix.ends_with(b"/") {
        prefix.push(b'/');
    }
    let since = since_text
        .parse::<u64>()
        .ok()
        .filter(|_| !since_text.is_empty() && since_text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            format!("malformed since {since_text:?}: expected a revision number (GET /<path>/<since> or /<path>/?since=N)")
        })?;
    Ok(FeedQuery { prefix, since, follow })
}

fn core_error(w: &mut impl Write, e: &Error, keep: bool) -> io::Result<bool> {
    let status = match e {
        Error::InvalidArgument(_) => 400,
        Error::NotFound(_) => 404,
        Error::TooLarge(_) => 413,
        Error::Compacted { .. } | Error::FutureRevision { .. } => 410,
        Error::Closed => 503,
        _ => 500,
    };
    send_error(w, status, &e.to_string(), None, keep)
}

fn gone(w: &mut impl Write, store: &Store, since: u64, keep: bool) -> io::Result<bool> {
    let earliest = store.earliest_revision();
    let current = store.current_revision();
    let message = if since > current + 1 {
        format!("since {since} is beyond this feed's current revision {current}: resync from 0")
    } else {
        format!("since {since} was compacted; the earliest retained revision is {earliest}: resync from 0")
    };
    send_error(
        w,
        410,
        &message,
        Some(json!({"earliest_revision": earliest, "current_revision": current})),
        keep,
    )
}

/// The records a feed starts with, as events sorted by revision, and the revision they are
/// consistent at. `since` 0: the live keys (a range read under one lock). Otherwise every key
/// changed in `[since, R]`, once, in its latest state.
fn catch_up(store: &Store, sel: &Selector, since: u64) -> Result<(Vec<Event>, u64)> {
    if since == 0 {
        // The range holds the store's read lock while it visits, so the revision read at the
        // first visit is the one the whole snapshot is at. An empty range is consistent with
        // the revision read before it.
        let before = store.current_revision();
        let mut at = None;
        let mut events = Vec::new();
        store.range_visit(sel, 0, &mut |e| {
            if at.is_none() {
                at = Some(store.current_revision());
            }
            events.push(e.clone());
        })?;
        events.sort_unstable_by_key(|e| e.revision);
        return Ok((events, at.unwrap_or(before)));
    }
    let at = store.current_revision();
    if since > at {
        return Ok((Vec::new(), at));
    }
    let mut latest: HashMap<crate::event::Bytes, Event> = HashMap::new();
    let mut from = since.max(store.earliest_revision());
    if from > at {
        // since = earliest - 1 = the current revision: nothing is newer.
        return Ok((Vec::new(), at));
    }
    loop {
        let (more, next) = store.changes_visit(sel, from, at, 10_000, &mut |e| {
            latest.insert(e.key.clone(), e.clone());
        })?;
        if !more {
            break;
        }
        from = next;
    }
    let mut events: Vec<Event> = latest.into_values().collect();
    events.sort_unstable_by_key(|e| e.revision);
    Ok((events, at))
}

fn push_record(out: &mut Vec<u8>, prefix_len: usize, e: &Event) -> bool {
    let id = &e.key[prefix_len.min(e.key.len())..];
    match e.kind {
        EventKind::Put => record::write_record(out, id, e.revision, None, Some(&e.value)),
        EventKind::Delete => record::write_record(out, id, e.revision, Some(e.revision), None),
        _ => return false,
    }
    true
}

const FLUSH_BYTES: usize = 256 * 1024;

fn feed(sh: &Shared, w: &mut impl Write, req: &Request, keep: bool) -> io::Result<bool> {
    let q = match parse_feed(&req.target) {
        Ok(q) => q,
        Err(msg) => return send_error(w, 400, &msg, None, keep),
    };
    let store: &Store = &sh.store;
    // A client at cursor `since` has seen revision `since` itself (revisions are unique and
    // served in order), so `since` = earliest - 1 loses nothing and is still served.
    if q.since > 0
        && (q.since.saturating_add(1) < store.earliest_revision() || q.since > store.current_revision() + 1)
    {
        return gone(w, store, q.since, keep);
    }
    let sel = Selector::Prefix(q.prefix.clone());
    let plen = q.prefix.len();
    let (events, at, watch) = {
        let (events, at) = match catch_up(store, &sel, q.since) {
            Ok(x) => x,
            Err(Error::Compacted { .. }) => return gone(w, store, q.since, keep),
            Err(e) => return core_error(w, &e, keep),
        };
        let watch = if q.follow {
            let opts = WatchOptions {
                start_revision: at + 1,
                max_queue: sh.opts.max_queue,
                ..WatchOptions::default()
            };
            match store.watch_pull(sel, &opts) {
                Ok(wt) => Some(wt),
                Err(Error::Compacted { .. }) => return gone(w, store, q.since.max(1), keep),
                Err(e) => return core_error(w, &e, keep),
            }
        } else {
            None
        };
        (events, at, watch)
    };
    let at_text = at.to_string();
    let headers = [
        ("Content-Type", "application/x-ndjson"),
        ("Cache-Control", "no-store"),
        ("X-Tidemark-Revision", at_text.as_str()),
    ];
    let mut buf = Vec::with_capacity(if watch.is_some() { 4096 } else { FLUSH_BYTES + 4096 });
    let Some(watch) = watch else {
        // Finite: one Content-Length response when it is small, chunked when it is not.
        let mut chunked = false;
        for e in &events {
            push_record(&mut buf, plen, e);
            if buf.len() >= FLUSH_BYTES {
                if !chunked {
                    http::write_chunked_head(w, 200, &headers, keep)?;
                    chunked = true;
                }
                http::write_chunk(w, &buf)?;
                buf.clear();
            }
        }
        sh.records.fetch_add(events.len() as u64, Ordering::Relaxed);
        if chunked {
            http::write_chunk(w, &buf)?;
            http::finish_chunks(w)?;
        } else {
            http::write_response(w, 200, &headers, &buf, keep)?;
        }
        return Ok(keep);
    };
    // Follow: the catch-up, then live changes, one record per chunk.
    sh.follows.fetch_add(1, Ordering::AcqRel);
    let result = (|| {
        http::write_chunked_head(w, 200, &headers, false)?;
        for e in &events {
            buf.clear();
            push_record(&mut buf, plen, e);
            http::write_chunk(w, &buf)?;
        }
        sh.records.fetch_add(events.len() as u64, Ordering::Relaxed);
        drop(events);
        w.flush()?;
        let heartbeat = Duration::from_millis(sh.opts.heartbeat_ms);
        let mut last_write = Instant::now();
        loop {
            if sh.stop.load(Ordering::Acquire) {
                return http::finish_chunks(w);
            }
            let wait = heartbeat.saturating_sub(last_write.elapsed()).min(POLL * 2);
            match watch.next(wait) {
                Ok(batch) => {
                    let mut n = 0;
                    for e in &batch {
                        if e.is_terminal() {
                            // Closed store or compacted past this response: end it cleanly;
                            // the client reconnects from its cursor.
                            w.flush()?;
                            return http::finish_chunks(w);
                        }
                        buf.clear();
                        if push_record(&mut buf, plen, e) {
                            http::write_chunk(w, &buf)?;
                            n += 1;
                        }
                    }
                    if n > 0 {
                        sh.records.fetch_add(n, Ordering::Relaxed);
                        w.flush()?;
                        last_write = Instant::now();
                    }
                }
                Err(Error::Timeout) => {
                    if last_write.elapsed() >= heartbeat {
                        http::write_chunk(w, HEARTBEAT)?;
                        w.flush()?;
                        last_write = Instant::now();
                    }
                }
                Err(_) => return http::finish_chunks(w),
            }
        }
    })();
    sh.follows.fetch_sub(1, Ordering::AcqRel);
    result.map(|()| false)
}

fn write_through(sh: &Shared, w: &mut impl Write, req: &Request, keep: bool) -> io::Result<bool> {
    let path = req.target.split_once('?').map_or(req.target.as_str(), |(p, _)| p);
    let Some(key) = http::decode_component(path) else {
        return send_error(w, 400, "malformed percent-escape in the path", None, keep);
    };
    let slash = key.iter().rposition(|&b| b == b'/').unwrap_or(0);
    let id = String::from_utf8_lossy(&key[slash + 1..]).into_owned();
    if id.is_empty() {
        return send_error(w, 400, "the path must name a record: /<path>/<id>", None, keep);
    }
    let store: &Store = &sh.store;
    if req.method == "PUT" {
        if serde_json::from_slice::<serde::de::IgnoredAny>(&req.body).is_err() {
            return send_error(w, 400, "the body must be a JSON document", None, keep);
        }
        match store.put(&key, &req.body) {
            Ok(rev) => {
                let mut body = Vec::new();
                record::write_record(&mut body, id.as_bytes(), rev, None, None);
                http::write_response(w, 200, &[("Content-Type", "application/json")], &body, keep)?;
                Ok(keep)
            }
            Err(e) => core_error(w, &e, keep),
        }
    } else {
        match store.delete(&key) {
            Ok(rev) => {
                let mut body = Vec::new();
                record::write_record(&mut body, id.as_bytes(), rev, Some(rev), None);
                http::write_response(w, 200, &[("Content-Type", "application/json")], &body, keep)?;
                Ok(keep)
            }
            Err(e) => core_error(w, &e, keep),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_targets() {
        let q = |t: &str| parse_feed(t);
        assert_eq!(
            q("/servers/998").unwrap(),
            FeedQuery { prefix: b"/servers/".to_vec(), since: 998, follow: false }
        );
        assert_eq!(
            q("/servers/").unwrap(),
            FeedQuery { prefix: b"/servers/".to_vec(), since: 0, follow: false }
        );
        assert_eq!(
            q("/servers/?since=5&follow=true").unwrap(),
            FeedQuery { prefix: b"/servers/".to_vec(), since: 5, follow: true }
        );
        assert_eq!(q("/servers?since=5").unwrap().prefix, b"/servers/");
        assert_eq!(q("/a%20b/c/7").unwrap().prefix, b"/a b/c/");
        assert_eq!(q("/7").unwrap().prefix, b"/");
        assert!(q("/servers/abc").is_err());
        assert!(q("/servers/-1").is_err());
        assert!(q("/servers/+1").is_err());
        assert!(q("/servers/?since=").is_err());
        assert!(q("/servers/1?follow=maybe").is_err());
        assert!(q("/servers/99999999999999999999999").is_err());
        assert!(q("/x%zz/1").is_err());
    }

    #[test]
    fn options() {
        let o = ServerOptions::from_json(Some(r#"{"writable":true,"token":"s3cret","heartbeat_ms":50}"#))
            .unwrap();
        assert!(o.writable);
        assert_eq!(o.token.as_deref(), Some("s3cret"));
        assert_eq!(o.heartbeat_ms, 50);
        for bad in [r#"{"nope":1}"#, r#"{"token":""}"#, r#"{"heartbeat_ms":0}"#, r#"{"writable":1}"#, "[]"] {
            assert!(ServerOptions::from_json(Some(bad)).is_err(), "{bad}");
        }
    }
}
