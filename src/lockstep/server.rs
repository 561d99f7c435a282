//! The lockstep server: serves the keys under a prefix of a store as NDJSON records over HTTP,
//! finite or followed live, with hyper (HTTP/1.1) on a tokio runtime whose threads belong to
//! the server (the host process never sees the runtime), and rustls for TLS.
//!
//! A connection costs a task and hyper's buffers until its request is authorized; only then
//! does it take a slot: one of `max_connections` for a finite response, one of `max_follows`
//! for a follow stream. A response reads the store incrementally and is produced into a
//! channel of two chunks, so what it holds is bounded whatever the size of the catch-up; large
//! values are sent from the store's own buffers, never copied.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::http::{crypto, decode_component, read_certs, Io};
use super::record::{self, HEARTBEAT, RECORD_END};
use super::{options_object, StoreHandle};
use crate::error::{Error, Result};
use crate::event::{Bytes as StoreBytes, EventKind};
use crate::selector::Selector;
use crate::store::Store;
use crate::watch::{PullWatch, WatchOptions};
/// Server options, given as a JSON object (every field optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Accept `PUT /<path>/<id>` (JSON body) and `DELETE /<path>/<id>`.
    pub writable: bool,
    /// When set, every request needs `Authorization: Bearer <token>` (else 401).
    pub token: Option<String>,
    /// Follow mode: a `{"heartbeat":true}` chunk after this many ms without data.
    pub heartbeat_ms: u64,
    /// Finite responses served at once (counted after authorization); more get 503.
    pub max_connections: usize,
    /// Follow streams served at once (counted after authorization); more get 503.
    pub max_follows: usize,
    /// Open TCP connections, authorized or not; more are closed right after accept.
    pub max_sockets: usize,
    /// Threads of the server's runtime.
    pub threads: usize,
    /// PEM certificate chain and private key files: serve HTTPS (both or neither).
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
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
    /// A client must send a whole request head within this time of the connection opening
    /// (or of the previous response), and a PUT body within this time after its head.
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
            max_follows: 10_000,
            max_sockets: 16_384,
            threads: 2,
            tls_cert: None,
            tls_key: None,
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
                "max_follows" => o.max_follows = pos(&v)? as usize,
                "max_sockets" => o.max_sockets = pos(&v)? as usize,
                "threads" => o.threads = pos(&v)?.min(64) as usize,
                "tls_cert" | "tls_key" => {
                    let path = v.as_str().filter(|p| !p.is_empty()).map(str::to_string).ok_or_else(|| {
                        Error::InvalidArgument(format!("option \"{key}\" must be a file name"))
                    })?;
                    if key == "tls_cert" {
                        o.tls_cert = Some(path);
                    } else {
                        o.tls_key = Some(path);
                    }
                }
                "max_header_bytes" => o.max_header_bytes = pos(&v)?.max(MIN_HEADER_BYTES as u64) as usize,
                "max_body_bytes" => o.max_body_bytes = pos(&v)? as usize,
                "max_queue" => o.max_queue = pos(&v)? as usize,
                "idle_timeout_ms" => o.idle_timeout_ms = pos(&v)?,
                "request_timeout_ms" => o.request_timeout_ms = pos(&v)?,
                "write_timeout_ms" => o.write_timeout_ms = pos(&v)?,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown server option \"{key}\" (known: writable, token, heartbeat_ms, max_connections, \
                         max_follows, max_sockets, threads, tls_cert, tls_key, max_header_bytes, max_body_bytes, \
                         allow_remote, max_queue, idle_timeout_ms, request_timeout_ms, write_timeout_ms)"
                    )))
                }
            }
        }
        if o.tls_cert.is_some() != o.tls_key.is_some() {
            return Err(Error::InvalidArgument("options \"tls_cert\" and \"tls_key\" go together".into()));
        }
        Ok(o)
    }
}

/// hyper's smallest read buffer: a smaller `max_header_bytes` is raised to it.
const MIN_HEADER_BYTES: usize = 8192;

struct Shared {
    store: StoreHandle,
    opts: ServerOptions,
    /// Slots for finite responses and for follow streams, taken after authorization.
    finite: Arc<Semaphore>,
    follows: Arc<Semaphore>,
    /// The latest committed revision (changes wake follow streams); its sender lives in a
    /// push watch on the whole store.
    revision: watch::Receiver<u64>,
    /// Set to true when the server stops.
    stopping: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    sockets: AtomicUsize,
    following: AtomicUsize,
    requests: AtomicU64,
    records: AtomicU64,
    refused: AtomicU64,
}

/// A running lockstep server. Stop it with `stop` (or drop it).
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
    accept: Option<tokio::task::JoinHandle<()>>,
    notifier: u64,
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
        let tls = match (&opts.tls_cert, &opts.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let listener = std::net::TcpListener::bind(&addrs[..])
            .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))?;
        let bound = listener.local_addr().map_err(|e| Error::io("cannot read the listening address", e))?;
        listener.set_nonblocking(true).map_err(|e| Error::io("cannot set up the listener", e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads)
            .max_blocking_threads(opts.threads)
            .thread_name("tidemark-lockstep")
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the server threads", e))?;
        let (rev_tx, revision) = watch::channel(store.current_revision());
        // Every commit (and the store closing) wakes the follow streams, which then read
        // their own pull watches.
        let notifier = store.watch(
            Selector::All,
            &WatchOptions::default(),
            Box::new(move |events| {
                if let Some(e) = events.last() {
                    rev_tx.send_replace(e.revision);
                }
            }),
        )?;
        let (stop, stopping) = watch::channel(false);
        let shared = Arc::new(Shared {
            finite: Arc::new(Semaphore::new(opts.max_connections)),
            follows: Arc::new(Semaphore::new(opts.max_follows)),
            store,
            opts,
            revision,
            stopping,
            tls,
            sockets: AtomicUsize::new(0),
            following: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            records: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let listener = {
            let _enter = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|e| Error::io("cannot set up the listener", e))?
        };
        let accept = runtime.spawn(accept_loop(shared.clone(), listener));
        Ok(Server { addr: bound, shared, stop, runtime: Some(runtime), accept: Some(accept), notifier })
    }

    /// The bound address (with the actual port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters: open connections, follow responses, requests, records served, refused
    /// connections (over `max_sockets`, or 503 for want of a slot).
    pub fn status(&self) -> Value {
        let sh = &self.shared;
        json!({
            "addr": self.addr.to_string(),
            "connections": sh.sockets.load(Ordering::Relaxed),
            "following": sh.following.load(Ordering::Relaxed),
            "requests": sh.requests.load(Ordering::Relaxed),
            "records_served": sh.records.load(Ordering::Relaxed),
            "refused_connections": sh.refused.load(Ordering::Relaxed),
            "writable": sh.opts.writable,
            "auth": sh.opts.token.is_some(),
            "tls": sh.tls.is_some(),
            "heartbeat_ms": sh.opts.heartbeat_ms,
        })
    }

    /// Stops accepting, ends every response (follow responses get their final chunk), and
    /// stops the server's threads. Clients that do not read are cut after one second.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(runtime) = self.runtime.take() else { return };
        self.stop.send_replace(true);
        if let Some(accept) = self.accept.take() {
            let sh = self.shared.clone();
            runtime.block_on(async move {
                let _ = accept.await;
                // Connections finish their responses (follow streams end at once); one second
                // at most for clients that do not read.
                let grace = tokio::time::Instant::now() + Duration::from_millis(1200);
                while sh.sockets.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < grace {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        runtime.shutdown_timeout(Duration::from_secs(1));
        let _ = self.shared.store.unwatch(self.notifier);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn tls_acceptor(cert: &str, key: &str) -> Result<tokio_rustls::TlsAcceptor> {
    let chain = read_certs(cert)?;
    let pem = std::fs::read(key).map_err(|e| Error::io(format!("cannot read {key}"), e))?;
    let key_der = rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| Error::InvalidArgument(format!("{key} is not PEM: {e}")))?
        .ok_or_else(|| Error::InvalidArgument(format!("{key} holds no PEM private key")))?;
    let config = rustls::ServerConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::io_other(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| Error::InvalidArgument(format!("TLS certificate {cert} / key {key}: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Completes when the server stops.
async fn stopped(sh: &Shared) {
    let mut stopping = sh.stopping.clone();
    let _ = stopping.wait_for(|s| *s).await;
}

async fn accept_loop(sh: Arc<Shared>, listener: tokio::net::TcpListener) {
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = stopped(&sh) => return,
        };
        if sh.sockets.load(Ordering::Acquire) >= sh.opts.max_sockets {
            sh.refused.fetch_add(1, Ordering::Relaxed);
            continue; // dropped: closed at once
        }
        sh.sockets.fetch_add(1, Ordering::AcqRel);
        let sh = sh.clone();
        tokio::spawn(async move {
            serve_socket(&sh, tcp).await;
            sh.sockets.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// The time a connection has to deliver a request head.
fn head_timeout(o: &ServerOptions) -> Duration {
    Duration::from_millis(o.request_timeout_ms.min(o.idle_timeout_ms))
}

async fn serve_socket(sh: &Arc<Shared>, tcp: tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match &sh.tls {
        None => Box::new(tcp),
        Some(acceptor) => match tokio::time::timeout(head_timeout(&sh.opts), acceptor.accept(tcp)).await {
            Ok(Ok(s)) => Box::new(s),
            _ => return,
        },
    };
    let io = TokioIo::new(WriteTimeout::new(io, Duration::from_millis(sh.opts.write_timeout_ms)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout(&sh.opts))
        .max_buf_size(sh.opts.max_header_bytes.max(MIN_HEADER_BYTES))
        .max_headers(100)
        .keep_alive(true);
    let service_sh = sh.clone();
    let service = hyper::service::service_fn(move |req| {
        let sh = service_sh.clone();
        async move { Ok::<_, Infallible>(handle(&sh, req).await) }
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stopped(sh) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
        }
    }
}

/// Fails a write that has made no progress for `limit` (a client that takes no bytes), so
/// the connection is dropped as documented instead of after the kernel's own timeout.
struct WriteTimeout {
    inner: Box<dyn Io>,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteTimeout {
    fn new(inner: Box<dyn Io>, limit: Duration) -> WriteTimeout {
        WriteTimeout { inner, limit, stalled: None }
    }

    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client took no bytes")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteTimeout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body: all at once, or chunks from a producer task (bounded channel).
enum Payload {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for Payload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            Payload::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Payload::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Payload::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Payload::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Payload::Stream(_) => SizeHint::default(),
        }
    }
}

fn error_response(status: u16, message: &str, extra: Option<Value>) -> Response<Payload> {
    let mut v = json!({"error": message, "status": status});
    if let (Some(Value::Object(extra)), Value::Object(map)) = (extra, &mut v) {
        map.extend(extra);
    }
    let mut body = serde_json::to_vec(&v).expect("JSON");
    body.push(b'\n');
    let mut r = Response::new(Payload::Full(Some(Bytes::from(body))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    match status {
        401 => {
            h.insert("WWW-Authenticate", HeaderValue::from_static("Bearer"));
        }
        405 => {
            h.insert("Allow", HeaderValue::from_static("GET, HEAD, PUT, DELETE"));
        }
        503 => {
            h.insert("Retry-After", HeaderValue::from_static("1"));
        }
        _ => {}
    }
    r
}

fn authorized(sh: &Shared, req: &Request<Incoming>) -> bool {
    let Some(token) = &sh.opts.token else { return true };
    let Some(h) = req.headers().get(hyper::header::AUTHORIZATION).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some((scheme, given)) = h.split_once(' ') else { return false };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    // Constant time in the token's content.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn handle(sh: &Arc<Shared>, req: Request<Incoming>) -> Response<Payload> {
    sh.requests.fetch_add(1, Ordering::Relaxed);
    if req.version() == Version::HTTP_11 && !req.headers().contains_key(hyper::header::HOST) {
        return error_response(400, "HTTP/1.1 requests need a Host header", None);
    }
    if !authorized(sh, &req) {
        return error_response(
            401,
            "missing or wrong bearer token (send Authorization: Bearer <token>)",
            None,
        );
    }
    if req.headers().contains_key(hyper::header::TRANSFER_ENCODING) {
        return error_response(501, "request bodies must use Content-Length", None);
    }
    if *sh.stopping.borrow() {
        return error_response(503, "the server is stopping", None);
    }
    match *req.method() {
        Method::GET | Method::HEAD => feed(sh, req).await,
        Method::PUT | Method::DELETE if sh.opts.writable => write_through(sh, req).await,
        Method::PUT | Method::DELETE => {
            error_response(405, "this server is read-only (start it with the writable option)", None)
        }
        ref m => error_response(405, &format!("method {m} is not supported"), None),
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
        |s: &str| decode_component(s).ok_or_else(|| "malformed percent-escape in the path".to_string());
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

fn core_error(e: &Error) -> Response<Payload> {
    let status = match e {
        Error::InvalidArgument(_) => 400,
        Error::NotFound(_) => 404,
        Error::TooLarge(_) => 413,
        Error::Compacted { .. } | Error::FutureRevision { .. } => 410,
        Error::Closed => 503,
        _ => 500,
    };
    error_response(status, &e.to_string(), None)
}

fn gone(store: &Store, since: u64) -> Response<Payload> {
    let earliest = store.earliest_revision();
    let current = store.current_revision();
    let message = if since > current + 1 {
        format!("since {since} is beyond this feed's current revision {current}: resync from 0")
    } else {
        format!("since {since} was compacted; the earliest retained revision is {earliest}: resync from 0")
    };
    error_response(410, &message, Some(json!({"earliest_revision": earliest, "current_revision": current})))
}

/// One record of a catch-up: revision, key, deleted.
type Indexed = (u64, StoreBytes, bool);

/// What a feed starts with, without the values: the records' revisions and keys sorted by
/// revision, and the revision they are consistent at. `since` 0: the live keys (one range
/// read under the store's read lock). Otherwise every key changed in `[since, R]`, once, at
/// its latest change. Memory: a key and two words per record, whatever the values' size.
fn catch_up_index(store: &Store, sel: &Selector, since: u64) -> Result<(Vec<Indexed>, u64)> {
    if since == 0 {
        // The range holds the store's read lock while it visits, so the revision read at the
        // first visit is the one the whole snapshot is at. An empty range is consistent with
        // the revision read before it.
        let before = store.current_revision();
        let mut at = None;
        let mut index = Vec::new();
        store.range_visit(sel, 0, &mut |e| {
            if at.is_none() {
                at = Some(store.current_revision());
            }
            index.push((e.revision, e.key.clone(), false));
        })?;
        index.sort_unstable_by_key(|r| r.0);
        return Ok((index, at.unwrap_or(before)));
    }
    let at = store.current_revision();
    let mut from = since.max(store.earliest_revision());
    if from > at {
        // since = earliest - 1 = the current revision: nothing is newer.
        return Ok((Vec::new(), at));
    }
    let mut latest: HashMap<StoreBytes, (u64, bool)> = HashMap::new();
    loop {
        let (more, next) = store.changes_visit(sel, from, at, 10_000, &mut |e| match e.kind {
            EventKind::Put | EventKind::Delete => {
                latest.insert(e.key.clone(), (e.revision, e.kind == EventKind::Delete));
            }
            _ => {}
        })?;
        if !more {
            break;
        }
        from = next;
    }
    let mut index: Vec<Indexed> = latest.into_iter().map(|(k, (rev, del))| (rev, k, del)).collect();
    index.sort_unstable_by_key(|r| r.0);
    Ok((index, at))
}

async fn feed(sh: &Arc<Shared>, req: Request<Incoming>) -> Response<Payload> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let q = match parse_feed(target) {
        Ok(q) => q,
        Err(msg) => return error_response(400, &msg, None),
    };
    // HEAD answers the head of the finite response.
    let follow = q.follow && req.method() == Method::GET;
    let slots = if follow { &sh.follows } else { &sh.finite };
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        sh.refused.fetch_add(1, Ordering::Relaxed);
        let what = if follow {
            "too many follow streams (max_follows)"
        } else {
            "too many requests (max_connections)"
        };
        return error_response(503, what, None);
    };
    let store: &Store = &sh.store;
    // A client at cursor `since` has seen revision `since` itself (revisions are unique and
    // served in order), so `since` = earliest - 1 loses nothing and is still served.
    if q.since > 0
        && (q.since.saturating_add(1) < store.earliest_revision() || q.since > store.current_revision() + 1)
    {
        return gone(store, q.since);
    }
    let sel = Selector::Prefix(q.prefix.clone());
    let blocking_sh = sh.clone();
    let blocking_sel = sel.clone();
    let built =
        tokio::task::spawn_blocking(move || catch_up_index(&blocking_sh.store, &blocking_sel, q.since)).await;
    let (index, at) = match built {
        Ok(Ok(x)) => x,
        Ok(Err(Error::Compacted { .. })) => return gone(store, q.since),
        Ok(Err(e)) => return core_error(&e),
        Err(_) => return error_response(500, "the catch-up could not be read", None),
    };
    let watch = if follow {
        let opts =
            WatchOptions { start_revision: at + 1, max_queue: sh.opts.max_queue, ..WatchOptions::default() };
        match store.watch_pull(sel, &opts) {
            Ok(w) => Some(w),
            Err(Error::Compacted { .. }) => return gone(store, q.since.max(1)),
            Err(e) => return core_error(&e),
        }
    } else {
        None
    };
    let (tx, rx) = mpsc::channel(2);
    let out = Out { tx, buf: Vec::with_capacity(CHUNK), records: 0 };
    tokio::spawn(produce(sh.clone(), out, index, q.prefix.len(), watch, permit));
    let mut r = Response::new(Payload::Stream(rx));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    h.insert("Cache-Control", HeaderValue::from_static("no-store"));
    h.insert("X-Tidemark-Revision", HeaderValue::from(at));
    if follow {
        h.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Records are sent in chunks of about this size; a value at least this large is sent from
/// the store's buffer as a chunk of its own.
const CHUNK: usize = 64 * 1024;

/// The producing end of a response: a small buffer in front of a channel of two chunks.
struct Out {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    records: u64,
}

/// The client went away (or stopped reading and was dropped).
struct Gone;

impl Out {
    async fn send(&mut self, b: Bytes) -> std::result::Result<(), Gone> {
        self.tx.send(b).await.map_err(|_| Gone)
    }

    async fn flush(&mut self) -> std::result::Result<(), Gone> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.send(chunk).await
    }

    async fn record(
        &mut self,
        id: &[u8],
        revision: u64,
        value: Option<StoreBytes>,
    ) -> std::result::Result<(), Gone> {
        let deleted_at = value.is_none().then_some(revision);
        let splice = record::render_record(&mut self.buf, id, revision, deleted_at, value.as_deref());
        if let (Some(range), Some(v)) = (splice, value) {
            if range.len() < CHUNK {
                self.buf.extend_from_slice(&v[range]);
            } else {
                self.flush().await?;
                self.send(Bytes::from_owner(v).slice(range)).await?;
            }
            self.buf.extend_from_slice(RECORD_END);
        }
        self.records += 1;
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }
}

/// Produces a feed response: the catch-up (each record read from the store as it is sent),
/// then, for a follow stream, live changes and heartbeats until the server stops, the store
/// closes, the watch ends or the client goes away. Ending drops the channel: the final chunk.
async fn produce(
    sh: Arc<Shared>,
    mut out: Out,
    index: Vec<Indexed>,
    plen: usize,
    watch: Option<PullWatch>,
    _slot: OwnedSemaphorePermit,
) {
    for (revision, key, deleted) in index {
        let value = if deleted {
            None
        } else {
            match sh.store.get(&key) {
                Ok(e) if e.mod_revision == revision => Some(e.value),
                // Changed since the catch-up's revision: the change comes with the next request
                // (or this stream's watch), and the cursor never passes it.
                Ok(_) | Err(Error::NotFound(_)) => continue,
                Err(_) => return,
            }
        };
        if out.record(&key[plen.min(key.len())..], revision, value).await.is_err() {
            return;
        }
    }
    if out.flush().await.is_err() {
        return;
    }
    sh.records.fetch_add(std::mem::take(&mut out.records), Ordering::Relaxed);
    if let Some(watch) = watch {
        sh.following.fetch_add(1, Ordering::AcqRel);
        let _ = live(&sh, &mut out, &watch, plen).await;
        sh.following.fetch_sub(1, Ordering::AcqRel);
        sh.records.fetch_add(out.records, Ordering::Relaxed);
    }
}

async fn live(sh: &Shared, out: &mut Out, watch: &PullWatch, plen: usize) -> std::result::Result<(), Gone> {
    let mut revision = sh.revision.clone();
    let client = out.tx.clone();
    let heartbeat = Duration::from_millis(sh.opts.heartbeat_ms);
    let mut last_write = tokio::time::Instant::now();
    loop {
        // The notice can come while the writer is still handing the commit to the watchers;
        // once the store's revision shows it (it is set after every watcher got its part),
        // this stream's watch holds its events. A later commit changes the notice again.
        let notified = *revision.borrow_and_update();
        let mut waits = 0u32;
        while sh.store.current_revision() < notified {
            // Microseconds as a rule: yield first, sleep if the writer is descheduled.
            waits += 1;
            if waits < 64 {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        if !drain(out, watch, plen).await? {
            return out.flush().await;
        }
        if !out.buf.is_empty() {
            out.flush().await?;
            last_write = tokio::time::Instant::now();
        }
        tokio::select! {
            changed = revision.changed() => {
                if changed.is_err() {
                    return Ok(()); // the store's watches ended: it is closed
                }
            }
            _ = tokio::time::sleep_until(last_write + heartbeat) => {
                out.send(Bytes::from_static(HEARTBEAT)).await?;
                last_write = tokio::time::Instant::now();
            }
            () = stopped(sh) => {
                // Everything committed before the stop is in the watch: send it, then end.
                drain(out, watch, plen).await?;
                return out.flush().await;
            }
            _ = client.closed() => return Err(Gone),
        }
    }
}

/// Sends every record the watch holds now. `Ok(false)` when the watch ended (closed store,
/// or compacted past this response): the caller ends the response cleanly and the client
/// reconnects from its cursor.
async fn drain(out: &mut Out, watch: &PullWatch, plen: usize) -> std::result::Result<bool, Gone> {
    loop {
        match watch.next(Duration::ZERO) {
            Ok(batch) => {
                for e in &batch {
                    if e.is_terminal() {
                        return Ok(false);
                    }
                    let id = &e.key[plen.min(e.key.len())..];
                    match e.kind {
                        EventKind::Put => out.record(id, e.revision, Some(e.value.clone())).await?,
                        EventKind::Delete => out.record(id, e.revision, None).await?,
                        _ => {}
                    }
                }
            }
            Err(Error::Timeout) => return Ok(true),
            Err(_) => return Ok(false),
        }
    }
}

async fn write_through(sh: &Arc<Shared>, req: Request<Incoming>) -> Response<Payload> {
    let Some(key) = decode_component(req.uri().path()) else {
        return error_response(400, "malformed percent-escape in the path", None);
    };
    let slash = key.iter().rposition(|&b| b == b'/').unwrap_or(0);
    let id = key[slash + 1..].to_vec();
    if id.is_empty() {
        return error_response(400, "the path must name a record: /<path>/<id>", None);
    }
    let Ok(_slot) = sh.finite.clone().try_acquire_owned() else {
        sh.refused.fetch_add(1, Ordering::Relaxed);
        return error_response(503, "too many requests (max_connections)", None);
    };
    let put = req.method() == Method::PUT;
    let body = if put {
        let max = sh.opts.max_body_bytes;
        if req.body().size_hint().lower() > max as u64 {
            return error_response(413, &format!("request body exceeds {max} bytes"), None);
        }
        let limited = http_body_util::Limited::new(req.into_body(), max);
        match tokio::time::timeout(Duration::from_millis(sh.opts.request_timeout_ms), limited.collect()).await
        {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return error_response(413, &format!("request body exceeds {max} bytes"), None)
            }
            Ok(Err(_)) => return error_response(400, "the request body was cut short", None),
            Err(_) => return error_response(408, "request body not received in time", None),
        }
    } else {
        Bytes::new()
    };
    if put && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return error_response(400, "the body must be a JSON document", None);
    }
    let blocking_sh = sh.clone();
    // A durable store may wait for the disk: not on the runtime's threads.
    let written = tokio::task::spawn_blocking(move || {
        let store: &Store = &blocking_sh.store;
        if put {
            store.put(&key, &body).map(|rev| (rev, None))
        } else {
            store.delete(&key).map(|rev| (rev, Some(rev)))
        }
    })
    .await;
    match written {
        Ok(Ok((rev, deleted_at))) => {
            let mut body = Vec::new();
            record::write_record(&mut body, &id, rev, deleted_at, None);
            let mut r = Response::new(Payload::Full(Some(Bytes::from(body))));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Ok(Err(e)) => core_error(&e),
        Err(_) => error_response(500, "the write could not be done", None),
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
