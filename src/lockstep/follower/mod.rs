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
//!
//! This file: the events, `Follower` start/status/stop and the runner's state; `options`,
//! `runner` (reconnect loop and HTTP session) and `sync` (commits and resync) hold the rest.

mod options;
mod runner;
mod sync;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde_json::{json, Value};

use super::http::{self, Client, Url};
use super::StoreHandle;
use crate::error::{Error, Result};
use crate::selector::Selector;
use crate::store::Store;

pub use options::FollowOptions;

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
