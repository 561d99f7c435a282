//! The lockstep server: serves the keys under a prefix of a store as NDJSON records over HTTP,
//! finite or followed live, with hyper (HTTP/1.1) on a tokio runtime whose threads belong to
//! the server (the host process never sees the runtime), and rustls for TLS.
//!
//! A connection costs a task and hyper's buffers until its request is authorized; only then
//! does it take a slot: one of `max_connections` for a finite response, one of `max_follows`
//! for a follow stream. A response reads the store incrementally and is produced into a
//! channel of two chunks, so what it holds is bounded whatever the size of the catch-up; large
//! values are sent from the store's own buffers, never copied.
//!
//! This file: `Server` start/stop, the accept loop, connections, authorization and routing;
//! `options`, `feed`, `write` and `body` hold the rest.

mod body;
mod feed;
mod followers;
mod ops;
mod options;
mod write;

use std::convert::Infallible;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use super::http::{crypto, read_certs, Io};
use super::StoreHandle;
use crate::error::{Error, Result};
use crate::selector::Selector;
use crate::store::Store;
use crate::watch::WatchOptions;

use body::{error_response, Payload, WriteTimeout};
use feed::feed;
pub use options::ServerOptions;
use options::MIN_HEADER_BYTES;
use write::write_through;

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
    /// Connections accepted since the start (never goes down, unlike `sockets`).
    accepted: AtomicU64,
    following: AtomicUsize,
    followers: followers::Followers,
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
            accepted: AtomicU64::new(0),
            following: AtomicUsize::new(0),
            followers: followers::Followers::default(),
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

    /// Counters: open connections, connections accepted in all, follow responses, requests, records served, refused
    /// connections (over `max_sockets`, or 503 for want of a slot).
    pub fn status(&self) -> Value {
        let mut v = self.shared.counters();
        v["addr"] = json!(self.addr.to_string());
        v
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

impl Shared {
    /// The server's counters (`Server::status` without the address).
    fn counters(&self) -> Value {
        let sh = self;
        json!({
            "connections": sh.sockets.load(Ordering::Relaxed),
            "accepted_connections": sh.accepted.load(Ordering::Relaxed),
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
        sh.accepted.fetch_add(1, Ordering::Relaxed);
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
    let peer = tcp.peer_addr().ok();
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
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let sh = service_sh.clone();
        if let Some(a) = peer {
            req.extensions_mut().insert(a);
        }
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

fn authorized(sh: &Shared, req: &Request<Incoming>) -> bool {
    sh.opts.token.as_ref().is_none_or(|token| bearer(req, token) == Some(true))
}

/// Whether the request's `Authorization: Bearer` token is `token` (`None`: no such header).
fn bearer(req: &Request<Incoming>, token: &str) -> Option<bool> {
    let h = req.headers().get(hyper::header::AUTHORIZATION)?;
    let Some((scheme, given)) = h.to_str().ok().and_then(|h| h.split_once(' ')) else { return Some(false) };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Some(false);
    }
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    // Constant time in the token's content.
    Some(a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0)
}

async fn handle(sh: &Arc<Shared>, req: Request<Incoming>) -> Response<Payload> {
    sh.requests.fetch_add(1, Ordering::Relaxed);
    if req.version() == Version::HTTP_11 && !req.headers().contains_key(hyper::header::HOST) {
        return error_response(400, "HTTP/1.1 requests need a Host header", None);
    }
    // Admin actions are authorized by the admin token alone (see `ops`).
    if req.uri().path().starts_with("/admin/") {
        return ops::route(sh, &req).await.expect("an admin path");
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
    if let Some(r) = ops::route(sh, &req).await {
        return r;
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
