//! Contexts: versioned JSON documents (objects) keyed by an id, each version change kept as
//! an RFC 6902 delta so that a client at an older version can be brought up to date with
//! one exact patch.
//!
//! # Schema (under `\0c/`, see `ns`)
//!
//! | key | value |
//! |---|---|
//! | `\0c/d<id>` (document) | `version u64`, `created_ms u64`, `updated_ms u64`, then the document as JSON text |
//! | `\0c/p<id as part><version u64>` (delta) | `timestamp_ms u64`, then the RFC 6902 patch (JSON array) that turns version − 1 into `version` |
//! | `\0c/g<id>` (tombstone) | `version u64`: the last version of a deleted id |
//!
//! All integers are big-endian. The first write of an id is version 1 and records no delta;
//! every later version change `v` records the delta `v` in the same commit as the document,
//! with a `Require` on the document key. The retained deltas of a context are always one
//! contiguous run ending at its current version: pruning (`delta_threshold`) and `cleanup`
//! (`delta_ttl_ms`) drop the oldest first, each delete guarded by a `Require` on that delta.
//! A write that leaves the document unchanged is no new version. `delete` removes the
//! document and every delta and leaves a tombstone with the last version, in one commit; a
//! new write of the id continues from that version (and removes the tombstone), so a client
//! of the deleted context never mistakes the new one's versions for its own: it gets FULL.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde_json::Value;

use super::streams::check_name;
use super::{transact, Feature, FeatureEvent, Fields, Key, Plan, Txn};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::kv::Kv;
use crate::selector::Selector;
use crate::store::{Store, DEFAULT_LIMIT};

/// A context as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub id: Vec<u8>,
    /// Always a JSON object.
    pub document: Value,
    /// 1 for the first write, +1 for every change.
    pub version: u64,
    /// When the id was first written, ms since the epoch by the store's clock.
    pub created_ms: u64,
    /// When the current version was written.
    pub updated_ms: u64,
    /// The revision of the commit that wrote the current version.
    pub revision: u64,
}

/// What `set`/`update` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub document: Value,
    pub version: u64,
    /// The RFC 6902 patch from the previous version (`{}` for a new context) to this one;
    /// `[]` when nothing changed (then no version was written and `revision` is 0).
    pub delta: Value,
    pub revision: u64,
}

/// A retained delta of a context.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// The version this delta produces (from version − 1).
    pub version: u64,
    pub timestamp_ms: u64,
    /// The RFC 6902 patch (a JSON array).
    pub patch: Value,
}

/// The answer of `context_sync`.
#[derive(Debug, Clone, PartialEq)]
pub enum Sync {
    /// The client is at the current version.
    NoChange { version: u64 },
    /// One RFC 6902 patch that turns exactly the client's version into `version`.
    Delta { patch: Value, version: u64 },
    /// The retained deltas cannot do that: the whole document.
    Full { document: Value, version: u64 },
}

/// The order of a listing: by id (contexts) or by version (deltas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// What one `context_cleanup` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub contexts: u64,
    pub deltas: u64,
}

fn doc_key(id: &[u8]) -> Vec<u8> {
    Key::new(Feature::Contexts).raw(b"d").raw(id).into_vec()
}

fn gone_key(id: &[u8]) -> Vec<u8> {
    Key::new(Feature::Contexts).raw(b"g").raw(id).into_vec()
}

fn delta_prefix(id: &[u8]) -> Vec<u8> {
    Key::new(Feature::Contexts).raw(b"p").part(id).into_vec()
}

fn delta_key(id: &[u8], version: u64) -> Vec<u8> {
    Key::new(Feature::Contexts).raw(b"p").part(id).u64(version).into_vec()
}

const HEAD: usize = 24;

/// The stored head of a context: everything but the document.
#[derive(Clone, Copy)]
struct Head {
    version: u64,
    created_ms: u64,
    updated_ms: u64,
    mod_revision: u64,
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn damaged(id: &[u8], what: &str) -> Error {
    Error::Corrupt(format!("context {}: {what}", String::from_utf8_lossy(id)))
}

/// The head and the document text of a stored record.
fn record(v: &[u8], mod_revision: u64) -> Option<(Head, &[u8])> {
    let (version, created_ms, updated_ms) = (u64_at(v, 0)?, u64_at(v, 8)?, u64_at(v, 16)?);
    Some((Head { version, created_ms, updated_ms, mod_revision }, &v[HEAD..]))
}

/// The context's head and its stored value, if it exists.
fn read<'a>(kv: &'a Kv, id: &[u8]) -> Result<Option<(Head, &'a [u8])>> {
    let Some(e) = kv.get(&doc_key(id)) else { return Ok(None) };
    record(&e.value, e.mod_revision).map(Some).ok_or_else(|| damaged(id, "short record"))
}

/// The first version of a new write of `id`: 1, or the one after the version of a deleted
/// context. Returns the tombstone to delete with the write (after the document, so that the
/// commit's first revision stays the document's).
fn first_version(kv: &Kv, id: &[u8], txn: &mut Txn) -> (u64, Option<Vec<u8>>) {
    let gkey = gone_key(id);
    match kv.get(&gkey).and_then(|e| u64_at(&e.value, 0).map(|v| (v, e.mod_revision))) {
        Some((last, rev)) => {
            txn.require(&gkey, rev);
            (last + 1, Some(gkey))
        }
        None => (1, None),
    }
}

fn parse_doc(id: &[u8], text: &[u8]) -> Result<Value> {
    serde_json::from_slice(text).map_err(|e| damaged(id, &format!("stored document is not JSON: {e}")))
}

fn context(id: &[u8], kv: &Kv) -> Result<Option<Context>> {
    let Some((h, text)) = read(kv, id)? else { return Ok(None) };
    Ok(Some(h.context(id, parse_doc(id, text)?)))
}

impl Head {
    fn context(self, id: &[u8], document: Value) -> Context {
        let Head { version, created_ms, updated_ms, mod_revision } = self;
        Context { id: id.to_vec(), document, version, created_ms, updated_ms, revision: mod_revision }
    }
}

/// Decodes a log event of a context's document key (see `ns::decode`); deltas and
/// tombstones are bookkeeping, not feature events.
pub(crate) fn decode(e: &Event) -> Option<FeatureEvent> {
    let mut f = Fields::of(&e.key, Feature::Contexts)?;
    f.tag(b"d")?;
    let id = f.rest();
    match e.kind {
        EventKind::Put => {
            let (h, text) = record(&e.value, e.revision)?;
            let context = h.context(id, serde_json::from_slice(text).ok()?);
            Some(FeatureEvent::ContextWritten { context, created: e.create_revision == e.revision })
        }
        EventKind::Delete => Some(FeatureEvent::ContextDeleted { id: id.to_vec() }),
        _ => None,
    }
}

fn not_found(id: &[u8]) -> Error {
    Error::NotFound(format!("context {} does not exist", String::from_utf8_lossy(id)))
}

/// Checks a document or merge patch given by a caller: it must be a JSON object.
fn check_object(v: &Value, what: &str) -> Result<()> {
    if v.is_object() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("a context {what} must be a JSON object")))
    }
}

/// The retained deltas of a context as (version, mod_revision, value), in version order.
fn deltas(kv: &Kv, id: &[u8], limit: usize) -> Vec<(u64, u64, crate::event::Bytes)> {
    let prefix = delta_prefix(id);
    let at = prefix.len();
    let mut out = Vec::new();
    kv.range(&Selector::Prefix(prefix), limit, &mut |e| {
        if let Some(v) = u64_at(&e.key, at) {
            out.push((v, e.revision, e.value.clone()));
        }
    });
    out
}

/// The oldest retained delta: (version, mod_revision).
fn first_delta(kv: &Kv, id: &[u8]) -> Option<(u64, u64)> {
    deltas(kv, id, 1).first().map(|(v, r, _)| (*v, *r))
}

fn expired(now: u64, at: u64, ttl: Option<u64>) -> bool {
    ttl.is_some_and(|ttl| now >= at.saturating_add(ttl))
}

impl Store {
    /// Replaces the context `id` with `document` (a JSON object). Returns the new document,
    /// version and delta.
    pub fn context_set(&self, id: &[u8], document: &Value) -> Result<Written> {
        check_name(id, "context")?;
        check_object(document, "document")?;
        self.context_write(id, |_| document.clone())
    }

    /// Applies `patch` (an RFC 7386 JSON Merge Patch, a JSON object) to the context `id`
    /// (an absent context is `{}`). Returns the new document, version and delta.
    pub fn context_update(&self, id: &[u8], patch: &Value) -> Result<Written> {
        check_name(id, "context")?;
        check_object(patch, "merge patch")?;
        self.context_write(id, |old| {
            let mut doc = old.clone();
            json_patch::merge(&mut doc, patch);
            doc
        })
    }

    fn context_write(&self, id: &[u8], next: impl Fn(&Value) -> Value) -> Result<Written> {
        let dkey = doc_key(id);
        let threshold = self.options().delta_threshold;
        transact(self, || {
            let now = self.now_ms();
            self.read_kv(|kv| {
                let current = read(kv, id)?;
                let old = match current {
                    Some((_, text)) => parse_doc(id, text)?,
                    None => Value::Object(Default::default()),
                };
                let doc = next(&old);
                let delta = json_patch::diff(&old, &doc);
                if current.is_some() && delta.0.is_empty() {
                    let version = current.map_or(0, |(h, _)| h.version);
                    let answer = Written { document: doc, version, delta: Value::Array(vec![]), revision: 0 };
                    return Ok(Plan::Done(answer));
                }
                let delta = serde_json::to_value(&delta).expect("a patch serializes");
                let mut txn = Txn::default();
                let (version, created_ms, tombstone) = match current {
                    Some((h, _)) => {
                        txn.require(dkey.clone(), h.mod_revision);
                        (h.version + 1, h.created_ms, None)
                    }
                    None => {
                        txn.require(dkey.clone(), 0);
                        let (version, tombstone) = first_version(kv, id, &mut txn);
                        (version, now, tombstone)
                    }
                };
                let mut value = Vec::with_capacity(HEAD + 256);
                value.extend_from_slice(&version.to_be_bytes());
                value.extend_from_slice(&created_ms.to_be_bytes());
                value.extend_from_slice(&now.to_be_bytes());
                serde_json::to_writer(&mut value, &doc).expect("a document serializes");
                txn.put(dkey.clone(), value);
                if let Some(gkey) = tombstone {
                    txn.delete(gkey);
                }
                // Retain the deltas (version - threshold, version]; drop the oldest beyond.
                let keep_from = (version + 1).saturating_sub(threshold).max(2);
                if current.is_some() && threshold > 0 {
                    let mut d = now.to_be_bytes().to_vec();
                    serde_json::to_writer(&mut d, &delta).expect("a patch serializes");
                    txn.put(delta_key(id, version), d);
                }
                if let Some((first, _)) = first_delta(kv, id).filter(|(first, _)| *first < keep_from) {
                    for (v, rev, _) in deltas(kv, id, (keep_from - first) as usize) {
                        if v < keep_from {
                            let k = delta_key(id, v);
                            txn.require(k.clone(), rev);
                            txn.delete(k);
                        }
                    }
                }
                let answer = move |revision| Written { document: doc, version, delta, revision };
                Ok(Plan::Commit(txn, Box::new(answer)))
            })?
        })
    }

    /// The context `id`; `NotFound` when it does not exist.
    pub fn context_get(&self, id: &[u8]) -> Result<Context> {
        check_name(id, "context")?;
        self.read_kv(|kv| context(id, kv))??.ok_or_else(|| not_found(id))
    }

    /// Deletes the context `id` and all its deltas in one commit; returns its revision.
    pub fn context_delete(&self, id: &[u8]) -> Result<u64> {
        check_name(id, "context")?;
        let dkey = doc_key(id);
        transact(self, || {
            self.read_kv(|kv| {
                let Some((h, _)) = read(kv, id)? else { return Err(not_found(id)) };
                Ok(Plan::Commit(delete_txn(kv, id, &dkey, h), Box::new(|first| first)))
            })?
        })
    }

    /// What a client at `client_version` (None or ≤ 0 = it has nothing) needs to reach the
    /// current version of `id`: `NoChange`, one exact `Delta` composed from the contiguous
    /// retained deltas, or `Full` when they cannot give that exactly (the client is older
    /// than the retained deltas, a delta it needs expired by `delta_ttl_ms`, or its version
    /// is unknown or in the future). `NotFound` when the context does not exist.
    pub fn context_sync(&self, id: &[u8], client_version: Option<i64>) -> Result<Sync> {
        check_name(id, "context")?;
        let now = self.now_ms();
        let ttl = self.options().delta_ttl_ms;
        self.read_kv(|kv| {
            let Some((h, text)) = read(kv, id)? else { return Err(not_found(id)) };
            let full = || Ok(Sync::Full { document: parse_doc(id, text)?, version: h.version });
            let client = match client_version {
                Some(v) if v > 0 => v as u64,
                _ => return full(),
            };
            if client == h.version {
                return Ok(Sync::NoChange { version: h.version });
            }
            if client > h.version {
                return full();
            }
            let mut ops = Vec::new();
            let mut key = delta_key(id, 0);
            let at = key.len() - 8;
            for v in client + 1..=h.version {
                key[at..].copy_from_slice(&v.to_be_bytes());
                let Some(e) = kv.get(&key) else { return full() };
                let Some(ts) = u64_at(&e.value, 0) else { return Err(damaged(id, "short delta")) };
                if expired(now, ts, ttl) {
                    return full();
                }
                match serde_json::from_slice(&e.value[8..]) {
                    Ok(Value::Array(a)) => ops.extend(a),
                    _ => return Err(damaged(id, &format!("delta {v} is not a JSON array"))),
                }
            }
            Ok(Sync::Delta { patch: Value::Array(ops), version: h.version })
        })?
    }

    /// Contexts in id order (`Asc`) or reverse, skipping `offset`, at most `limit`
    /// (0 = 1000).
    pub fn context_list(&self, limit: usize, offset: usize, order: Order) -> Result<Vec<Context>> {
        let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
        let prefix = Key::new(Feature::Contexts).raw(b"d").into_vec();
        let at = prefix.len();
        self.read_kv(|kv| {
            let mut ids = Vec::new();
            let scan = if order == Order::Asc { offset + limit } else { 0 };
            kv.range(&Selector::Prefix(prefix), scan, &mut |e| ids.push(e.key[at..].to_vec()));
            if order == Order::Desc {
                ids.reverse();
            }
            ids.into_iter()
                .skip(offset)
                .take(limit)
                .map(|id| context(&id, kv)?.ok_or_else(|| not_found(&id)))
                .collect()
        })?
    }

    /// The retained deltas of `id` by version (`Asc`) or reverse, skipping `offset`, at most
    /// `limit` (0 = all). `NotFound` when the context does not exist.
    pub fn context_deltas(&self, id: &[u8], limit: usize, offset: usize, order: Order) -> Result<Vec<Delta>> {
        check_name(id, "context")?;
        self.read_kv(|kv| {
            if read(kv, id)?.is_none() {
                return Err(not_found(id));
            }
            let mut all = deltas(kv, id, 0);
            if order == Order::Desc {
                all.reverse();
            }
            let limit = if limit == 0 { usize::MAX } else { limit };
            all.into_iter()
                .skip(offset)
                .take(limit)
                .map(|(version, _, value)| {
                    let timestamp_ms = u64_at(&value, 0).ok_or_else(|| damaged(id, "short delta"))?;
                    let patch = serde_json::from_slice(&value[8..])
                        .map_err(|_| damaged(id, &format!("delta {version} is not JSON")))?;
                    Ok(Delta { version, timestamp_ms, patch })
                })
                .collect()
        })?
    }

    /// One cleanup pass by the store's clock: deletes contexts not updated for
    /// `context_ttl_ms` (only when `context_auto_delete` is true) and drops deltas older than
    /// `delta_ttl_ms`, oldest first, changing at most `limit` contexts (0 = no limit). Each
    /// context is cleaned in a commit of its own.
    pub fn context_cleanup(&self, limit: usize) -> Result<Cleaned> {
        let opts = self.options();
        let (ctx_ttl, delta_ttl) =
            (opts.context_ttl_ms.filter(|_| opts.context_auto_delete), opts.delta_ttl_ms);
        let mut cleaned = Cleaned::default();
        if ctx_ttl.is_none() && delta_ttl.is_none() {
            return Ok(cleaned);
        }
        let prefix = Key::new(Feature::Contexts).raw(b"d").into_vec();
        let at = prefix.len();
        let mut ids = Vec::new();
        self.range_reserved(&Selector::Prefix(prefix), 0, &mut |e| ids.push(e.key[at..].to_vec()))?;
        let mut changed = 0;
        for id in ids {
            if limit != 0 && changed == limit {
                break;
            }
            let dkey = doc_key(&id);
            let done = transact(self, || {
                let now = self.now_ms();
                self.read_kv(|kv| {
                    let Some((h, _)) = read(kv, &id)? else { return Ok(Plan::Done(Cleaned::default())) };
                    if expired(now, h.updated_ms, ctx_ttl) {
                        let n = deltas(kv, &id, 0).len() as u64;
                        let answer = move |_| Cleaned { contexts: 1, deltas: n };
                        return Ok(Plan::Commit(delete_txn(kv, &id, &dkey, h), Box::new(answer)));
                    }
                    let mut txn = Txn::default();
                    let mut n = 0;
                    for (v, rev, value) in deltas(kv, &id, 0) {
                        if !u64_at(&value, 0).is_some_and(|ts| expired(now, ts, delta_ttl)) {
                            break;
                        }
                        let k = delta_key(&id, v);
                        txn.require(k.clone(), rev);
                        txn.delete(k);
                        n += 1;
                    }
                    if n == 0 {
                        return Ok(Plan::Done(Cleaned::default()));
                    }
                    Ok(Plan::Commit(txn, Box::new(move |_| Cleaned { contexts: 0, deltas: n })))
                })?
            });
            let done = done?;
            if done != Cleaned::default() {
                changed += 1;
            }
            cleaned.contexts += done.contexts;
            cleaned.deltas += done.deltas;
        }
        Ok(cleaned)
    }
}

/// The commit that deletes a context's document and every delta, and keeps its last version.
fn delete_txn(kv: &Kv, id: &[u8], dkey: &[u8], h: Head) -> Txn {
    let mut txn = Txn::default();
    txn.require(dkey, h.mod_revision);
    for (v, rev, _) in deltas(kv, id, 0) {
        let k = delta_key(id, v);
        txn.require(k.clone(), rev);
        txn.delete(k);
    }
    txn.delete(dkey);
    txn.put(gone_key(id), h.version.to_be_bytes());
    txn
}

/// The number of contexts (for the store's status).
pub(crate) fn count(kv: &Kv) -> usize {
    let prefix = Key::new(Feature::Contexts).raw(b"d").into_vec();
    let mut n = 0;
    kv.range(&Selector::Prefix(prefix), 0, &mut |_| n += 1);
    n
}

/// The store's periodic cleanup thread (`context_cleaner_start`): one `context_cleanup(limit)`
/// pass every `interval_ms` until stopped or the store closes.
#[derive(Default)]
pub(crate) struct Cleaner {
    state: Mutex<CleanerState>,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct CleanerState {
    running: bool,
    stop: bool,
    interval_ms: u64,
    limit: usize,
    /// Bumped by every change, so a waiting thread starts its interval again.
    generation: u64,
    passes: u64,
}

impl Cleaner {
    /// Stops the thread (if any) and waits for it; true when one was running.
    pub(crate) fn stop(&self) -> bool {
        let handle = {
            let mut t = self.thread.lock();
            let h = t.take();
            let mut st = self.state.lock();
            st.stop = true;
            st.running = false;
            st.generation += 1;
            self.wake.notify_all();
            h
        };
        match handle {
            Some(h) => {
                let _ = h.join();
                true
            }
            None => false,
        }
    }

    /// `{running, interval_ms, limit, passes}` for the store's status.
    pub(crate) fn status(&self) -> Value {
        let st = self.state.lock();
        serde_json::json!({"running": st.running, "interval_ms": st.interval_ms, "limit": st.limit, "passes": st.passes})
    }

    fn run(store: Store) {
        let c = store.cleaner();
        loop {
            let limit = {
                let mut st = c.state.lock();
                loop {
                    if st.stop {
                        return;
                    }
                    let generation = st.generation;
                    let deadline = Instant::now() + Duration::from_millis(st.interval_ms);
                    while !st.stop && st.generation == generation && Instant::now() < deadline {
                        c.wake.wait_until(&mut st, deadline);
                    }
                    if !st.stop && st.generation == generation {
                        break st.limit;
                    }
                }
            };
            if let Err(Error::Closed) = store.context_cleanup(limit) {
                return;
            }
            c.state.lock().passes += 1;
        }
    }
}

impl Store {
    /// Starts the store's cleanup thread: a `context_cleanup(limit)` pass every `interval_ms`
    /// (> 0) until `context_cleaner_stop` or the store closes. When it runs already, this sets
    /// its interval and limit (the next pass is `interval_ms` from now).
    pub fn context_cleaner_start(&self, interval_ms: u64, limit: usize) -> Result<()> {
        if interval_ms == 0 {
            return Err(Error::InvalidArgument("a cleanup interval must be at least 1 ms".into()));
        }
        self.read_kv(|_| ())?;
        let c = self.cleaner();
        let mut thread = c.thread.lock();
        {
            let mut st = c.state.lock();
            st.interval_ms = interval_ms;
            st.limit = limit;
            st.generation += 1;
            st.stop = false;
            st.running = true;
            c.wake.notify_all();
        }
        if thread.is_none() {
            let store = self.handle();
            let spawned = std::thread::Builder::new()
                .name("tidemark-cleanup".into())
                .spawn(move || Cleaner::run(store))
                .map_err(|e| Error::io("cannot start the cleanup thread", e))?;
            *thread = Some(spawned);
        }
        Ok(())
    }

    /// Changes the running cleanup thread's interval (the next pass is `interval_ms` from
    /// now); `NotFound` when none runs.
    pub fn context_cleaner_set_interval(&self, interval_ms: u64) -> Result<()> {
        if interval_ms == 0 {
            return Err(Error::InvalidArgument("a cleanup interval must be at least 1 ms".into()));
        }
        let c = self.cleaner();
        let _thread = c.thread.lock();
        let mut st = c.state.lock();
        if !st.running {
            return Err(Error::NotFound("no cleanup thread runs".into()));
        }
        st.interval_ms = interval_ms;
        st.generation += 1;
        c.wake.notify_all();
        Ok(())
    }

    /// Stops the cleanup thread and waits until it has finished (a pass under way completes
    /// first); returns whether one was running.
    pub fn context_cleaner_stop(&self) -> bool {
        self.cleaner().stop()
    }
}
