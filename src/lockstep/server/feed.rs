//! Feed requests (`GET /<path>/<since>`): query parsing, the catch-up index, and the
//! producer that sends the catch-up then, for a follow stream, live changes and heartbeats.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use serde_json::json;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::body::{core_error, error_response, Payload};
use super::followers::Registered;
use super::{stopped, Shared};
use crate::error::{Error, Result};
use crate::event::{Bytes as StoreBytes, EventKind};
use crate::lockstep::http::decode_component;
use crate::lockstep::record::{self, HEARTBEAT, RECORD_END};
use crate::selector::Selector;
use crate::store::Store;
use crate::watch::{PullWatch, WatchOptions};

/// What a feed request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FeedQuery {
    pub prefix: Vec<u8>,
    pub since: u64,
    pub follow: bool,
    /// `follower=NAME`: how the server's metrics and status page name this stream.
    pub name: Option<String>,
}

pub(crate) fn parse_feed(target: &str) -> std::result::Result<FeedQuery, String> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut since_q = None;
    let mut follow = false;
    let mut name = None;
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
            "follower" => {
                let n =
                    decode_component(v).ok_or_else(|| "malformed percent-escape in follower".to_string())?;
                name = Some(String::from_utf8_lossy(&n).into_owned()).filter(|n| !n.is_empty());
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
    Ok(FeedQuery { prefix, since, follow, name })
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

pub(super) async fn feed(sh: &Arc<Shared>, req: Request<Incoming>) -> Response<Payload> {
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
    let follower = watch.map(|w| {
        let peer = req.extensions().get::<SocketAddr>().map(SocketAddr::to_string);
        let name = q.name.or(peer).unwrap_or_else(|| "unknown".into());
        (w, name)
    });
    let (tx, rx) = mpsc::channel(2);
    let out = Out { tx, buf: Vec::with_capacity(CHUNK), records: 0, sent: 0 };
    let stream = Stream { prefix: q.prefix, since: q.since, at, index };
    tokio::spawn(produce(sh.clone(), out, stream, follower, permit));
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
    /// The revision of the last record rendered.
    sent: u64,
}

/// What a response serves: its prefix, the request's cursor, and the catch-up at `at`.
struct Stream {
    prefix: Vec<u8>,
    since: u64,
    at: u64,
    index: Vec<Indexed>,
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
        self.sent = revision;
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }
}

/// Produces a feed response: the catch-up (each record read from the store as it is sent),
/// then, for a follow stream, live changes and heartbeats until the server stops, the store
/// closes, the watch ends or the client goes away. Ending drops the channel: the final chunk.
/// A follow stream is in the server's followers from its first record to its end.
async fn produce(
    sh: Arc<Shared>,
    mut out: Out,
    stream: Stream,
    follower: Option<(PullWatch, String)>,
    _slot: OwnedSemaphorePermit,
) {
    let plen = stream.prefix.len();
    let registered =
        follower.as_ref().map(|(_, name)| sh.followers.register(name, &stream.prefix, stream.since));
    for (revision, key, deleted) in stream.index {
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
    if let (Some((watch, _)), Some(me)) = (follower, registered) {
        me.sent_up_to(stream.at);
        sh.following.fetch_add(1, Ordering::AcqRel);
        let _ = live(&sh, &mut out, &watch, plen, &me).await;
        sh.following.fetch_sub(1, Ordering::AcqRel);
        sh.records.fetch_add(out.records, Ordering::Relaxed);
    }
}

async fn live(
    sh: &Shared,
    out: &mut Out,
    watch: &PullWatch,
    plen: usize,
    me: &Registered<'_>,
) -> std::result::Result<(), Gone> {
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
        // Everything committed up to `notified` was in the watch and is now sent.
        me.sent_up_to(notified.max(out.sent));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_targets() {
        let q = |t: &str| parse_feed(t);
        assert_eq!(
            q("/servers/998").unwrap(),
            FeedQuery { prefix: b"/servers/".to_vec(), since: 998, follow: false, name: None }
        );
        assert_eq!(
            q("/servers/").unwrap(),
            FeedQuery { prefix: b"/servers/".to_vec(), since: 0, follow: false, name: None }
        );
        assert_eq!(
            q("/servers/?since=5&follow=true&follower=eu%201").unwrap(),
            FeedQuery { prefix: b"/servers/".to_vec(), since: 5, follow: true, name: Some("eu 1".into()) }
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
        assert!(q("/x/1?follower=%zz").is_err());
        assert_eq!(q("/x/1?follower=").unwrap().name, None);
    }
}
