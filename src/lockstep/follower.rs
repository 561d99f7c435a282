//! The lockstep follower: mirrors any lockstep endpoint into a store under a prefix.
//!
//! A record whose `deleted_at` is set deletes `PREFIX + id`; any other record is put there as
//! the JSON line received. The cursor (the greatest order value seen) is written in the same
//! atomic commit as the records it covers, under a key outside the prefix, so a follower
//! killed at any moment resumes exactly where its data is. It asks from the last value seen
//! (inclusive), so records that tie on `updated_at` are never skipped; repeats that change
//! nothing write nothing. A `410 Gone` starts a full resync (since 0) that ends by deleting
//! the local records the server no longer has; the resync flag is committed too, so a resync
//! interrupted by a crash is redone. Connection failures are retried with exponential backoff
//! and jitter until the follower is stopped.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde_json::{json, Value};

use super::http::{self, BodyRead, Client, Url};
use super::record::{compare_order, cursor_text, parse_line, Line, LineSplitter, Parsed};
use super::{options_object, StoreHandle};
use crate::error::{Error, Result};
use crate::op::Op;
use crate::selector::Selector;
use crate::store::Store;

/// Follower options, given as a JSON object (every field optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowOptions {
    /// Where records go: `prefix + id`. Default: the URL's path (ending with `/`).
    pub prefix: Option<Vec<u8>>,
    /// The record field that names it (default `id`): a string or a number.
    pub id_field: String,
    /// The record field the server sorts by (default `updated_at`): a number or a string.
    pub order_by: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Ask for live changes (`follow=true`) once in sync (default true). Without it, or when
    /// the server ends its response, the follower asks again after `poll_ms`.
    pub follow: bool,
    /// Send the cursor as this query parameter instead of as the last path segment.
    pub cursor_param: Option<String>,
    /// Where the cursor is stored (a user key). Default: the reserved key `"\0l/" + prefix`.
    pub cursor_key: Option<Vec<u8>>,
    pub poll_ms: u64,
    pub connect_timeout_ms: u64,
    /// Reconnect when nothing (not even a heartbeat) arrived for this long (0 = never).
    pub idle_timeout_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Records per local commit at most.
    pub batch_records: usize,
    /// A longer line is reported as malformed and skipped.
    pub max_line_bytes: usize,
    /// Allow a first sync into a prefix that already holds keys: the follower then owns them
    /// and its first sync deletes those the server does not send. Without it such a start is
    /// refused, so a follower never deletes keys it did not mirror.
    pub adopt: bool,
    /// Allow the prefix `/` (every key that starts with a slash).
    pub allow_root_prefix: bool,
    /// PEM file of the certificates trusted for `https://` URLs (default: the Mozilla roots).
    pub tls_ca_file: Option<String>,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            prefix: None,
            id_field: "id".into(),
            order_by: "updated_at".into(),
            token: None,
            follow: true,
            cursor_param: None,
            cursor_key: None,
            poll_ms: 1000,
            connect_timeout_ms: 2000,
            idle_timeout_ms: 60_000,
            backoff_initial_ms: 100,
            backoff_max_ms: 30_000,
            batch_records: 1000,
            max_line_bytes: 16 * 1024 * 1024,
            adopt: false,
            allow_root_prefix: false,
            tls_ca_file: None,
        }
    }
}

impl FollowOptions {
    /// Parses `{"prefix": "/mirror/", "id_field": "id", "order_by": "updated_at", ...}`;
    /// unknown keys and wrong types are errors.
    pub fn from_json(json: Option<&str>) -> Result<FollowOptions> {
        let mut o = FollowOptions::default();
        for (key, v) in options_object(json)? {
            let bad = |what: &str| Error::InvalidArgument(format!("option \"{key}\" must be {what}"));
            let string = |v: &Value| {
                v.as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| bad("a non-empty string"))
            };
            let pos = |v: &Value| v.as_u64().filter(|n| *n >= 1).ok_or_else(|| bad("a positive integer"));
            match key.as_str() {
                "prefix" => o.prefix = Some(string(&v)?.into_bytes()),
                "id_field" => o.id_field = string(&v)?,
                "order_by" => o.order_by = string(&v)?,
                "token" => o.token = Some(string(&v)?),
                "cursor_param" => o.cursor_param = Some(string(&v)?),
                "tls_ca_file" => o.tls_ca_file = Some(string(&v)?),
                "cursor_key" => o.cursor_key = Some(string(&v)?.into_bytes()),
                "follow" => o.follow = v.as_bool().ok_or_else(|| bad("true or false"))?,
                "adopt" => o.adopt = v.as_bool().ok_or_else(|| bad("true or false"))?,
                "allow_root_prefix" => {
                    o.allow_root_prefix = v.as_bool().ok_or_else(|| bad("true or false"))?
                }
                "poll_ms" => o.poll_ms = pos(&v)?,
                "connect_timeout_ms" => o.connect_timeout_ms = pos(&v)?,
                "idle_timeout_ms" => {
                    o.idle_timeout_ms = v.as_u64().ok_or_else(|| bad("a non-negative integer"))?
                }
                "backoff_initial_ms" => o.backoff_initial_ms = pos(&v)?,
                "backoff_max_ms" => o.backoff_max_ms = pos(&v)?,
                "batch_records" => o.batch_records = pos(&v)? as usize,
                "max_line_bytes" => o.max_line_bytes = pos(&v)? as usize,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                    "unknown follower option \"{key}\" (known: prefix, id_field, order_by, token, follow, \
                         cursor_param, cursor_key, poll_ms, connect_timeout_ms, idle_timeout_ms, \
                         backoff_initial_ms, backoff_max_ms, batch_records, max_line_bytes, adopt, \
                         allow_root_prefix, tls_ca_file)"
                )))
                }
            }
        }
        if o.backoff_max_ms < o.backoff_initial_ms {
            o.backoff_max_ms = o.backoff_initial_ms;
        }
        Ok(o)
    }
}

/// What a follower reports to its callback, on its own thread.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowEvent<'a> {
    /// A response with status 200 started.
    Connected { url: &'a str },
    /// A batch was applied: `records` read, `writes` local puts/deletes (repeats write
    /// nothing), committed at local `revision` (0 = nothing written), cursor after it.
    Applied { records: u64, writes: u64, revision: u64, cursor: &'a Value },
    /// A line that is not a record was skipped.
    Malformed { line: &'a [u8], reason: &'a str },
    /// A connection or HTTP failure; retried after `retry_ms`.
    Error { message: &'a str, retry_ms: u64 },
    /// The server answered 410 Gone (or this is a first sync): a full resync from 0 begins.
    ResyncStarted { reason: &'a str },
    /// The resync completed: `deleted` local records the server no longer has were removed.
    ResyncDone { deleted: u64, cursor: &'a Value },
}

pub type FollowCallback = Box<dyn FnMut(&FollowEvent<'_>) + Send>;

#[derive(Debug, Default)]
struct Stats {
    state: &'static str,
    connected: bool,
    records: u64,
    writes: u64,
    batches: u64,
    malformed: u64,
    errors: u64,
    connections: u64,
    resyncs: u64,
    heartbeats: u64,
    local_revision: u64,
    last_error: Option<String>,
    last_malformed: Option<String>,
    cursor: Value,
    resyncing: bool,
}

struct Shared {
    stop: AtomicBool,
    stop_lock: Mutex<bool>,
    stop_cond: Condvar,
    stats: Mutex<Stats>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sleeps up to `d`; true if stopped.
    fn wait(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut s = self.stop_lock.lock();
        while !*s {
            if self.stop_cond.wait_until(&mut s, deadline).timed_out() {
                break;
            }
        }
        *s
    }
}

/// A running follower. Stop it with `stop` (or drop it).
pub struct Follower {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    thread_id: Option<ThreadId>,
    url: String,
    prefix: Vec<u8>,
}

impl Follower {
    /// Starts mirroring `url` (e.g. `http://127.0.0.1:4567/servers/`) into `store`.
    pub fn start<S>(
        store: S,
        url: &str,
        opts: FollowOptions,
        callback: Option<FollowCallback>,
    ) -> Result<Follower>
    where
        S: std::ops::Deref<Target = Store> + Send + Sync + 'static,
    {
        Follower::start_shared(Arc::new(store), url, opts, callback)
    }

    pub(crate) fn start_shared(
        store: StoreHandle,
        url: &str,
        opts: FollowOptions,
        callback: Option<FollowCallback>,
    ) -> Result<Follower> {
        let mut base = Url::parse(url).map_err(Error::InvalidArgument)?;
        let client =
            Client::new(opts.tls_ca_file.as_deref(), Duration::from_millis(opts.connect_timeout_ms))?;
        if opts.cursor_param.is_none() && !base.path.ends_with('/') {
            base.path.push('/');
        }
        let prefix = match &opts.prefix {
            Some(p) => p.clone(),
            None => {
                let mut p = http::decode_component(&base.path).ok_or_else(|| {
                    Error::InvalidArgument("malformed percent-escape in the URL path".into())
                })?;
                if !p.ends_with(b"/") {
                    p.push(b'/');
                }
                p
            }
        };
        // The mirrored keys are user keys; the cursor is too when the caller names it, and
        // otherwise lives in the reserved namespace.
        crate::ns::check_user_key(&prefix)?;
        let cursor_key = match &opts.cursor_key {
            Some(k) => {
                crate::ns::check_user_key(k)?;
                k.clone()
            }
            None => crate::ns::lockstep_cursor_key(&prefix),
        };
        if cursor_key.starts_with(&prefix) {
            return Err(Error::InvalidArgument("the cursor key must not be under the prefix".into()));
        }
        if prefix == b"/" && !opts.allow_root_prefix {
            return Err(Error::InvalidArgument(
                "refusing to follow into the prefix \"/\" (every key that starts with a slash): name a \
                 narrower prefix, or set \"allow_root_prefix\": true"
                    .into(),
            ));
        }
        // Where the data is: the committed cursor (absent = first sync, done as a resync).
        let (cursor, resync) = match store.get_reserved(&cursor_key) {
            Ok(entry) => match serde_json::from_slice::<Value>(&entry.value) {
                Ok(doc) => (
                    doc.get("cursor").cloned().unwrap_or(Value::Null),
                    doc.get("resync") == Some(&Value::Bool(true)),
                ),
                Err(_) => (Value::Null, true),
            },
            Err(Error::NotFound(_)) => {
                // A first sync sweeps what the server does not send: only into an empty
                // prefix, unless told to adopt what is there.
                let mut held = false;
                store.range_visit(&Selector::Prefix(prefix.clone()), 1, &mut |_| held = true)?;
                if held && !opts.adopt {
                    return Err(Error::InvalidArgument(format!(
                        "the prefix {:?} already holds keys this follower did not mirror: follow into an \
                         empty prefix, or set \"adopt\": true to let the follower own (and sweep) them",
                        String::from_utf8_lossy(&prefix)
                    )));
                }
                (Value::Null, true)
            }
            Err(e) => return Err(e),
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            stop_lock: Mutex::new(false),
            stop_cond: Condvar::new(),
            stats: Mutex::new(Stats {
                state: "starting",
                cursor: cursor.clone(),
                resyncing: resync,
                ..Stats::default()
            }),
        });
        let backoff = opts.backoff_initial_ms;
        let mut runner = Runner {
            client,
            store,
            shared: shared.clone(),
            base_text: url.to_string(),
            base,
            prefix: prefix.clone(),
            cursor_key,
            callback,
            cursor: cursor.clone(),
            resync,
            pending: Vec::new(),
            pending_idx: HashMap::new(),
            pending_cursor: cursor,
            pending_records: 0,
            seen: HashSet::new(),
            rng: seed(),
            backoff,
            opts,
        };
        let thread = std::thread::Builder::new()
            .name("tidemark-lockstep-follow".into())
            .spawn(move || runner.run())
            .map_err(|e| Error::io("cannot start the follower thread", e))?;
        let thread_id = Some(thread.thread().id());
        Ok(Follower { shared, thread: Some(thread), thread_id, url: url.to_string(), prefix })
    }

    /// The follower's state as JSON: `state` (connecting, streaming, backoff, polling,
    /// stopped), `cursor`, `resyncing`, `connected`, counters (`records`, `writes`,
    /// `batches`, `malformed_lines`, `errors`, `connections`, `resyncs`, `heartbeats`),
    /// `local_revision`, `last_error`, `last_malformed`, `url`, `prefix`.
    pub fn status(&self) -> Value {
        let s = self.shared.stats.lock();
        json!({
            "url": self.url,
            "prefix": String::from_utf8_lossy(&self.prefix),
            "state": if self.shared.stopped() { "stopped" } else { s.state },
            "cursor": s.cursor,
            "resyncing": s.resyncing,
            "connected": s.connected,
            "records": s.records,
            "writes": s.writes,
            "batches": s.batches,
            "malformed_lines": s.malformed,
            "errors": s.errors,
            "connections": s.connections,
            "resyncs": s.resyncs,
            "heartbeats": s.heartbeats,
            "local_revision": s.local_revision,
            "last_error": s.last_error,
            "last_malformed": s.last_malformed,
        })
    }

    /// Stops the follower. When it returns, the thread has ended and the callback was
    /// dropped, except when called from the follower's own callback: then the thread ends
    /// (and drops the callback) right after that callback returns, without another call.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        *self.shared.stop_lock.lock() = true;
        self.shared.stop_cond.notify_all();
        if let Some(t) = self.thread.take() {
            if Some(std::thread::current().id()) != self.thread_id {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn seed() -> u64 {
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    (t ^ (&local as *const u8 as u64).rotate_left(32)) | 1
}

enum Outcome {
    Stopped,
    /// The response ended normally; `framed`: its end was marked (the final chunk, or all of
    /// its Content-Length), not just the connection closing.
    Ended {
        framed: bool,
    },
    Gone(String),
    /// 400: the server refuses the cursor.
    BadCursor(String),
    Failed(String),
    StoreClosed,
}

struct Runner {
    client: Client,
    store: StoreHandle,
    shared: Arc<Shared>,
    opts: FollowOptions,
    base: Url,
    base_text: String,
    prefix: Vec<u8>,
    cursor_key: Vec<u8>,
    callback: Option<FollowCallback>,
    /// The committed cursor and resync flag.
    cursor: Value,
    resync: bool,
    /// Staged final state per key (None = delete), in first-seen order.
    pending: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pending_idx: HashMap<Vec<u8>, usize>,
    pending_cursor: Value,
    pending_records: u64,
    /// During a resync: every key the server sent.
    seen: HashSet<Vec<u8>>,
    rng: u64,
    backoff: u64,
}

impl Runner {
    fn emit(&mut self, ev: &FollowEvent<'_>) {
        if self.shared.stopped() {
            return;
        }
        if let Some(cb) = self.callback.as_mut() {
            let _ = catch_unwind(AssertUnwindSafe(|| cb(ev)));
        }
    }

    fn set_state(&self, state: &'static str) {
        self.shared.stats.lock().state = state;
    }

    fn jitter(&mut self, ms: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        ms / 2 + self.rng % (ms / 2 + 1)
    }

    fn run(&mut self) {
        if self.resync {
            self.emit(&FollowEvent::ResyncStarted {
                reason: "first sync (or an interrupted resync): full sync from 0",
            });
        }
        while !self.shared.stopped() {
            let resync = self.resync;
            if resync {
                self.seen.clear();
            }
            let url = self.request_url(resync);
            let outcome = self.session(&url);
            self.discard_pending();
            self.shared.stats.lock().connected = false;
            match outcome {
                Outcome::Stopped => break,
                Outcome::StoreClosed => {
                    self.store_closed();
                    break;
                }
                Outcome::Ended { framed: false } if resync => {
                    // Closing the connection also ends an unframed body when it was cut: do
                    // not sweep on that, ask again.
                    self.fail("the full sync's response was not framed (no Content-Length, not chunked), so it cannot be told from a cut one: nothing deleted; retrying".into())
                }
                Outcome::Ended { framed: true } if resync => match self.finish_resync() {
                    Ok(()) => {}
                    Err(Outcome::StoreClosed) => {
                        self.store_closed();
                        break;
                    }
                    Err(_) => self.fail("the resync could not be completed locally; retrying".into()),
                },
                Outcome::Ended { .. } => {
                    self.set_state("polling");
                    if self.shared.wait(Duration::from_millis(self.opts.poll_ms)) {
                        break;
                    }
                }
                Outcome::Gone(msg) | Outcome::BadCursor(msg) if !resync => match self.start_resync(&msg) {
                    // A server that keeps refusing the cursor it sends is not asked in a
                    // tight loop.
                    Ok(()) if msg.starts_with("400") => self.pause(),
                    Ok(()) => {}
                    Err(Outcome::StoreClosed) => {
                        self.store_closed();
                        break;
                    }
                    Err(_) => self.fail("cannot record the resync locally; retrying".into()),
                },
                Outcome::Gone(msg) | Outcome::BadCursor(msg) => {
                    self.fail(format!("the server refused a full sync: {msg}"))
                }
                Outcome::Failed(msg) => self.fail(msg),
            }
        }
        self.set_state("stopped");
    }

    /// Reports a failure and sleeps the backoff (with jitter), doubling it.
    /// The local store was closed under the follower: one ERROR event, then the follower
    /// ends (nothing more can be applied); its owner still stops it to free it.
    fn store_closed(&mut self) {
        let message = "the local store was closed; the follower has ended";
        {
            let mut s = self.shared.stats.lock();
            s.errors += 1;
            s.last_error = Some(message.into());
        }
        self.emit(&FollowEvent::Error { message, retry_ms: 0 });
    }

    /// The next backoff delay (with jitter); doubles the backoff.
    fn next_delay(&mut self) -> u64 {
        let delay = self.jitter(self.backoff);
        self.backoff = (self.backoff.saturating_mul(2)).min(self.opts.backoff_max_ms);
        delay
    }

    /// Sleeps the backoff, doubling it.
    fn pause(&mut self) {
        let delay = self.next_delay();
        self.shared.wait(Duration::from_millis(delay));
    }

    fn fail(&mut self, message: String) {
        let delay = self.next_delay();
        {
            let mut s = self.shared.stats.lock();
            s.errors += 1;
            s.last_error = Some(message.clone());
            s.state = "backoff";
        }
        self.emit(&FollowEvent::Error { message: &message, retry_ms: delay });
        self.shared.wait(Duration::from_millis(delay));
    }

    fn request_url(&self, resync: bool) -> Url {
        let mut u = self.base.clone();
        let cursor = if resync { "0".to_string() } else { cursor_text(&self.cursor) };
        let mut params: Vec<String> = Vec::new();
        match &self.opts.cursor_param {
            Some(p) => {
                params.push(format!("{}={}", http::encode_component(p), http::encode_component(&cursor)))
            }
            None => u.path.push_str(&http::encode_component(&cursor)),
        }
        let has_follow = u.query.split('&').any(|p| p == "follow" || p.starts_with("follow="));
        if self.opts.follow && !resync && !has_follow {
            params.push("follow=true".into());
        }
        for p in params {
            if !u.query.is_empty() {
                u.query.push('&');
            }
            u.query.push_str(&p);
        }
        u
    }

    fn session(&mut self, url: &Url) -> Outcome {
        self.set_state("connecting");
        let stop = &self.shared.stop;
        let auth = self.opts.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Accept", "application/x-ndjson")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let head_timeout = Duration::from_millis(match self.opts.idle_timeout_ms {
            0 => 60_000,
            n => n.max(self.opts.connect_timeout_ms),
        });
        let mut resp = match self.client.request("GET", url, &headers, b"", head_timeout, stop) {
            Ok(r) => r,
            Err(_) if self.shared.stopped() => return Outcome::Stopped,
            Err(e) => {
                return Outcome::Failed(format!(
                    "request to {}:{}{} failed: {e}",
                    url.host,
                    url.port,
                    url.target()
                ))
            }
        };
        if resp.status != 200 {
            let body = resp.read_all(4096, Duration::from_secs(2)).unwrap_or_default();
            let text = String::from_utf8_lossy(&body).trim().to_string();
            let cursor = cursor_text(&self.cursor);
            return if resp.status == 410 {
                Outcome::Gone(format!("410 Gone: {text}"))
            } else if resp.status == 400 {
                Outcome::BadCursor(format!("400 Bad Request for cursor {cursor:?}: {text}"))
            } else {
                Outcome::Failed(format!("HTTP {} from {}: {text}", resp.status, url.target()))
            };
        }
        self.backoff = self.opts.backoff_initial_ms;
        {
            let mut s = self.shared.stats.lock();
            s.connected = true;
            s.connections += 1;
            s.state = "streaming";
        }
        let target = url.target();
        self.emit(&FollowEvent::Connected { url: &target });
        let mut splitter = LineSplitter::new(self.opts.max_line_bytes);
        let mut body = Vec::with_capacity(64 * 1024);
        let mut last_data = Instant::now();
        let idle = Duration::from_millis(self.opts.idle_timeout_ms);
        let mut failure: Option<Outcome> = None;
        loop {
            if self.shared.stopped() {
                return self.flush().err().unwrap_or(Outcome::Stopped);
            }
            body.clear();
            let read = resp.read_body(&mut body);
            match read {
                Ok(BodyRead::Data(_)) => {
                    last_data = Instant::now();
                    splitter.feed(&body, &mut |line| {
                        if failure.is_none() {
                            if let Err(o) = self.on_line(line) {
                                failure = Some(o);
                            }
                        }
                    });
                }
                Ok(BodyRead::Idle) => {
                    if self.opts.idle_timeout_ms > 0 && last_data.elapsed() > idle {
                        let _ = self.flush();
                        return Outcome::Failed(format!(
                            "nothing received for {} ms (not even a heartbeat); reconnecting",
                            self.opts.idle_timeout_ms
                        ));
                    }
                    continue;
                }
                Ok(BodyRead::End) => {
                    splitter.finish(&mut |line| {
                        if failure.is_none() {
                            if let Err(o) = self.on_line(line) {
                                failure = Some(o);
                            }
                        }
                    });
                    if let Some(f) = failure {
                        return f;
                    }
                    let framed = resp.is_framed();
                    return self.flush().err().unwrap_or(Outcome::Ended { framed });
                }
                Err(e) => {
                    // Complete lines already read are applied; a partial one is dropped and
                    // asked again from the cursor.
                    if let Some(f) = failure {
                        return f;
                    }
                    if let Err(o) = self.flush() {
                        return o;
                    }
                    return Outcome::Failed(format!("connection to {} dropped: {e}", url.target()));
                }
            }
            if let Some(f) = failure.take() {
                return f;
            }
            if let Err(o) = self.flush() {
                return o;
            }
        }
    }

    fn malformed(&mut self, line: &[u8], reason: &str) {
        {
            let mut s = self.shared.stats.lock();
            s.malformed += 1;
            s.last_malformed = Some(reason.to_string());
        }
        let excerpt = &line[..line.len().min(1024)];
        self.emit(&FollowEvent::Malformed { line: excerpt, reason });
    }

    fn on_line(&mut self, line: Line<'_>) -> std::result::Result<(), Outcome> {
        match line {
            Line::TooLong(excerpt, n) => {
                self.malformed(
                    excerpt,
                    &format!("line of {n} bytes exceeds max_line_bytes ({})", self.opts.max_line_bytes),
                );
                Ok(())
            }
            Line::Text(t) => match parse_line(t, &self.opts.id_field, &self.opts.order_by) {
                Err(reason) => {
                    self.malformed(t, &reason);
                    Ok(())
                }
                Ok(Parsed::Heartbeat) => {
                    self.shared.stats.lock().heartbeats += 1;
                    Ok(())
                }
                Ok(Parsed::Record { id, order, deleted }) => self.stage(t, &id, order, deleted),
            },
        }
    }

    fn stage(
        &mut self,
        line: &[u8],
        id: &str,
        order: Value,
        deleted: bool,
    ) -> std::result::Result<(), Outcome> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(id.as_bytes());
        let limits = self.store.options();
        if key.len() > limits.max_key_size || (!deleted && line.len() > limits.max_value_size) {
            self.malformed(line, "record too large for the local store (max_key_size / max_value_size)");
            return Ok(());
        }
        if self.resync {
            self.seen.insert(key.clone());
        }
        let want: Option<&[u8]> = (!deleted).then_some(line);
        let same = match self.pending_idx.get(&key) {
            Some(&i) => self.pending[i].1.as_deref() == want,
            None => match self.store.get(&key) {
                Ok(e) => Some(&e.value[..]) == want,
                Err(Error::NotFound(_)) => want.is_none(),
                Err(Error::Closed) => return Err(Outcome::StoreClosed),
                Err(_) => false,
            },
        };
        if !same {
            let value = want.map(<[u8]>::to_vec);
            match self.pending_idx.get(&key) {
                Some(&i) => self.pending[i].1 = value,
                None => {
                    self.pending_idx.insert(key.clone(), self.pending.len());
                    self.pending.push((key, value));
                }
            }
        }
        if compare_order(&order, &self.pending_cursor).is_gt() {
            self.pending_cursor = order;
        }
        self.pending_records += 1;
        if self.pending_records >= self.opts.batch_records as u64 {
            self.flush()?;
        }
        Ok(())
    }

    fn discard_pending(&mut self) {
        self.pending.clear();
        self.pending_idx.clear();
        self.pending_cursor = self.cursor.clone();
        self.pending_records = 0;
    }

    fn cursor_doc(&self, cursor: &Value, resync: bool) -> Vec<u8> {
        serde_json::to_vec(&json!({"cursor": cursor, "resync": resync, "url": self.base_text})).expect("JSON")
    }

    /// Commits the staged records with the cursor that covers them.
    fn flush(&mut self) -> std::result::Result<(), Outcome> {
        let cursor_moved = compare_order(&self.pending_cursor, &self.cursor).is_gt();
        if self.pending_records == 0 && self.pending.is_empty() && !cursor_moved {
            return Ok(());
        }
        let doc = cursor_moved.then(|| self.cursor_doc(&self.pending_cursor, self.resync));
        let mut revision = 0;
        let mut writes = 0;
        for attempt in 0.. {
            let mut ops: Vec<Op<'_>> = Vec::with_capacity(self.pending.len() + 1);
            for (k, v) in &self.pending {
                match v {
                    Some(v) => ops.push(Op::Put(k, v)),
                    // A delete of a key that is already gone is a no-op.
                    None => match self.store.get(k) {
                        Ok(_) => ops.push(Op::Delete(k)),
                        Err(Error::Closed) => return Err(Outcome::StoreClosed),
                        Err(_) => {}
                    },
                }
            }
            writes = ops.len() as u64;
            if let Some(d) = &doc {
                ops.push(Op::Put(&self.cursor_key, d));
            }
            if ops.is_empty() {
                break;
            }
            match self.store.commit_reserved(&ops) {
                Ok(rev) => {
                    revision = rev;
                    break;
                }
                // Someone else deleted one of the keys meanwhile: plan again.
                Err(Error::NotFound(_)) if attempt < 5 => continue,
                Err(Error::Closed) => return Err(Outcome::StoreClosed),
                Err(e) => return Err(Outcome::Failed(format!("local commit failed: {e}"))),
            }
        }
        let records = self.pending_records;
        self.cursor = self.pending_cursor.clone();
        self.pending.clear();
        self.pending_idx.clear();
        self.pending_records = 0;
        {
            let mut s = self.shared.stats.lock();
            s.records += records;
            s.writes += writes;
            s.batches += 1;
            if revision > 0 {
                s.local_revision = revision;
            }
            s.cursor = self.cursor.clone();
        }
        if records > 0 {
            let cursor = self.cursor.clone();
            self.emit(&FollowEvent::Applied { records, writes, revision, cursor: &cursor });
        }
        Ok(())
    }

    fn start_resync(&mut self, reason: &str) -> std::result::Result<(), Outcome> {
        let doc = self.cursor_doc(&Value::Null, true);
        match self.store.commit_reserved(&[Op::Put(&self.cursor_key, &doc)]) {
            Ok(_) => {}
            Err(Error::Closed) => return Err(Outcome::StoreClosed),
            Err(e) => return Err(Outcome::Failed(e.to_string())),
        }
        self.cursor = Value::Null;
        self.pending_cursor = Value::Null;
        self.resync = true;
        {
            let mut s = self.shared.stats.lock();
            s.resyncs += 1;
            s.resyncing = true;
            s.cursor = Value::Null;
        }
        self.emit(&FollowEvent::ResyncStarted { reason });
        Ok(())
    }

    /// After a complete, framed since-0 response: deletes the local records it did not
    /// contain and clears the resync flag, in one atomic commit with the cursor.
    fn finish_resync(&mut self) -> std::result::Result<(), Outcome> {
        let doc = self.cursor_doc(&self.cursor, false);
        let mut deleted = 0u64;
        for attempt in 0.. {
            let mut stale: Vec<Vec<u8>> = Vec::new();
            let seen = &self.seen;
            let cursor_key = &self.cursor_key;
            match self.store.range_visit(&Selector::Prefix(self.prefix.clone()), 0, &mut |e| {
                if !seen.contains(&e.key[..]) && e.key[..] != cursor_key[..] {
                    stale.push(e.key.to_vec());
                }
            }) {
                Ok(_) => {}
                Err(Error::Closed) => return Err(Outcome::StoreClosed),
                Err(e) => return Err(Outcome::Failed(e.to_string())),
            }
            let mut ops: Vec<Op<'_>> = stale.iter().map(|k| Op::Delete(k)).collect();
            ops.push(Op::Put(&self.cursor_key, &doc));
            match self.store.commit_reserved(&ops) {
                Ok(_) => {
                    deleted = stale.len() as u64;
                    break;
                }
                // Someone else deleted one of the keys meanwhile: plan again.
                Err(Error::NotFound(_)) if attempt < 5 => continue,
                Err(Error::Closed) => return Err(Outcome::StoreClosed),
                Err(e) => return Err(Outcome::Failed(e.to_string())),
            }
        }
        self.resync = false;
        self.seen.clear();
        {
            let mut s = self.shared.stats.lock();
            s.resyncing = false;
            s.writes += deleted;
        }
        let cursor = self.cursor.clone();
        self.emit(&FollowEvent::ResyncDone { deleted, cursor: &cursor });
        Ok(())
    }
}
