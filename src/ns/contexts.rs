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

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use serde_json::{Map, Value};

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

/// Hands a context to user code: `context_export`, and `context_cleanup` before it deletes an
/// expired context. An `Err` (the exporter's message) fails the export, and cleanup keeps the
/// context for a later pass.
pub type Exporter = Arc<dyn Fn(&Context) -> std::result::Result<(), String> + Send + std::marker::Sync>;

/// Fetches the document of a missing context from user code (`get`, `update` and `sync` ask
/// it): `Ok(None)` when it has none either, `Err` (its message) when it failed.
pub type Provider =
    Arc<dyn Fn(&[u8]) -> std::result::Result<Option<Restored>, String> + Send + std::marker::Sync>;

/// A provider's answer: the document (a JSON object) and the version it had where it was kept
/// (0 = unknown). See `context_restore` for the version it is stored at.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    pub document: Value,
    pub version: u64,
}

/// What a store keeps for its contexts beside the log: the cleanup thread, the parsed
/// documents of the contexts written last, and the user's exporter and provider.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) cleaner: Cleaner,
    cache: Mutex<Cache>,
    exporter: RwLock<Option<Exporter>>,
    provider: RwLock<Option<Provider>>,
}

/// How many parsed documents `Cache` holds.
const CACHE_ENTRIES: usize = 256;

/// Parsed documents by id, so that an `update` neither parses the stored JSON again nor
/// serializes the whole document: it serializes the members it changed and joins them with
/// the others. An entry holds for the document key's mod_revision it was written or read at;
/// any other write of the key makes it stale (the document is then parsed from the store), so
/// it is never wrong.
#[derive(Default)]
struct Cache(HashMap<Vec<u8>, (u64, Doc), foldhash::fast::RandomState>);

/// A document and its top-level members as JSON text (`"key":value`), in key order: the
/// order `serde_json` writes an object in, so `text` is what `serde_json::to_vec` gives.
#[derive(Default)]
struct Doc {
    value: Value,
    members: std::collections::BTreeMap<String, Vec<u8>>,
}

impl Doc {
    fn new(value: Value) -> Doc {
        let mut doc = Doc { value, members: Default::default() };
        let keys: Vec<String> = doc.object().keys().cloned().collect();
        doc.refresh(keys.iter());
        doc
    }

    fn object(&self) -> &Map<String, Value> {
        self.value.as_object().expect("documents are checked to be objects")
    }

    /// Serializes the members `keys` again (and forgets those the document no longer has).
    fn refresh<'k>(&mut self, keys: impl Iterator<Item = &'k String>) {
        for k in keys {
            match self.value.get(k) {
                Some(v) => {
                    let mut text = serde_json::to_vec(k).expect("a key serializes");
                    text.push(b':');
                    serde_json::to_writer(&mut text, v).expect("a value serializes");
                    self.members.insert(k.clone(), text);
                }
                None => {
                    self.members.remove(k);
                }
            }
        }
    }

    /// The document as JSON text.
    fn text(&self) -> Vec<u8> {
        let len = self.members.values().map(|m| m.len() + 1).sum::<usize>();
        let mut text = Vec::with_capacity(len + 2);
        text.push(b'{');
        for (i, m) in self.members.values().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            text.extend_from_slice(m);
        }
        text.push(b'}');
        text
    }
}

impl Cache {
    /// The document of `id` at `mod_revision`, taken out (an update changes it in place).
    fn take(&mut self, id: &[u8], mod_revision: u64) -> Option<Doc> {
        let entry = self.0.get_mut(id).filter(|e| e.0 == mod_revision)?;
        entry.0 = 0;
        Some(std::mem::take(&mut entry.1))
    }

    fn put(&mut self, id: &[u8], mod_revision: u64, doc: Doc) {
        if let Some(entry) = self.0.get_mut(id) {
            *entry = (mod_revision, doc);
            return;
        }
        if self.0.len() >= CACHE_ENTRIES {
            // Bounded: forget one entry (whichever the hash order gives first).
            let victim = self.0.keys().next().cloned().expect("the cache is full");
            self.0.remove(&victim);
        }
        self.0.insert(id.to_vec(), (mod_revision, doc));
    }
}

/// What a write of a context did: `Written`, borrowed, with the document's JSON text.
pub(crate) struct Outcome<'a> {
    pub document: &'a Value,
    /// The document as stored (JSON text).
    pub text: &'a [u8],
    pub version: u64,
    /// The delta as JSON text (an array).
    pub delta: &'a [u8],
    pub revision: u64,
}

impl Outcome<'_> {
    fn written(&self) -> Written {
        let delta = serde_json::from_slice(self.delta).expect("a delta is JSON text");
        Written { document: self.document.clone(), version: self.version, delta, revision: self.revision }
    }
}

/// How a write changes the document.
#[derive(Clone, Copy)]
pub(crate) enum Change<'a> {
    Replace(&'a Value),
    Merge(&'a Value),
}

/// Applies the RFC 7386 merge `patch` (an object) to `doc` in place and appends to `ops` the
/// RFC 6902 operations that make the same change, as the JSON text of an array begun with
/// `[` (the caller ends it), so an update neither diffs whole documents nor builds the ops as `Value`s. `path` is the
/// JSON Pointer of `doc`.
fn merge_recording(
    doc: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut String,
    ops: &mut Vec<u8>,
) {
    for (k, v) in patch {
        let at = path.len();
        path.push('/');
        path.push_str(&k.replace('~', "~0").replace('/', "~1"));
        match (v, doc.get_mut(k)) {
            (Value::Null, None) => {}
            (Value::Null, Some(_)) => {
                doc.remove(k);
                push_op(ops, "remove", path, None);
            }
            (Value::Object(p), Some(Value::Object(d))) => merge_recording(d, p, path, ops),
            (_, Some(old)) => {
                let new = merged(v);
                if *old != new {
                    push_op(ops, "replace", path, Some(&new));
                    *old = new;
                }
            }
            (_, None) => {
                let new = merged(v);
                push_op(ops, "add", path, Some(&new));
                doc.insert(k.clone(), new);
            }
        }
        path.truncate(at);
    }
}

/// Appends `{"op":…,"path":…,"value":…}` (after a comma unless it is the first): the text
/// `serde_json` writes for the op as a `Value` (keys in order).
fn push_op(ops: &mut Vec<u8>, op: &str, path: &str, value: Option<&Value>) {
    if ops.len() > 1 {
        ops.push(b',');
    }
    ops.extend_from_slice(b"{\"op\":\"");
    ops.extend_from_slice(op.as_bytes());
    ops.extend_from_slice(b"\",\"path\":");
    serde_json::to_writer(&mut *ops, path).expect("a path serializes");
    if let Some(v) = value {
        ops.extend_from_slice(b",\"value\":");
        serde_json::to_writer(&mut *ops, v).expect("a value serializes");
    }
    ops.push(b'}');
}

/// A merge patch's value as it lands where there was no object: objects lose their nulls.
fn merged(v: &Value) -> Value {
    let mut out = Value::Null;
    json_patch::merge(&mut out, v);
    out
}

fn doc_key(id: &[u8]) -> Vec<u8> {
    Key::with_capacity(Feature::Contexts, 1 + id.len()).raw(b"d").raw(id).into_vec()
}

fn gone_key(id: &[u8]) -> Vec<u8> {
    Key::new(Feature::Contexts).raw(b"g").raw(id).into_vec()
}

fn delta_prefix(id: &[u8]) -> Vec<u8> {
    Key::new(Feature::Contexts).raw(b"p").part(id).into_vec()
}

fn delta_key(id: &[u8], version: u64) -> Vec<u8> {
    Key::with_capacity(Feature::Contexts, 11 + id.len()).raw(b"p").part(id).u64(version).into_vec()
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

/// Puts the document record: `[version, created_ms, updated_ms]`, then the JSON text.
fn put_record(txn: &mut Txn, dkey: &[u8], head: [u64; 3], text: &[u8]) {
    txn.put_with(dkey, |v| {
        head.iter().for_each(|n| v.extend_from_slice(&n.to_be_bytes()));
        v.extend_from_slice(text);
    });
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

/// A failure reported by the user's exporter or provider.
fn hook_failed(what: &str, id: &[u8], message: String) -> Error {
    Error::io_other(format!("the context {what} failed for {}: {message}", String::from_utf8_lossy(id)))
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

/// Adds to `txn` the deletes that keep the deltas (version − threshold, version] when
/// `version` is written. The retained deltas are one run ending at the version before, so
/// usually exactly one falls out; older ones are left only when the threshold was higher at
/// an earlier open (or is 0), and then they are found by a scan.
fn prune(kv: &Kv, id: &[u8], version: u64, threshold: u64, txn: &mut Txn) {
    let keep_from = (version + 1).saturating_sub(threshold).max(2);
    if threshold == 0 {
        return drop_below(kv, id, keep_from, txn);
    }
    if keep_from <= 2 {
        return;
    }
    let mut key = delta_key(id, keep_from - 1);
    let Some(rev) = kv.get(&key).map(|e| e.mod_revision) else { return };
    let at = key.len() - 8;
    key[at..].copy_from_slice(&(keep_from - 2).to_be_bytes());
    if kv.get(&key).is_some() {
        return drop_below(kv, id, keep_from, txn);
    }
    key[at..].copy_from_slice(&(keep_from - 1).to_be_bytes());
    txn.require(&key, rev);
    txn.delete(key);
}

/// Adds to `txn` the deletes of every delta below `keep_from`, oldest first.
fn drop_below(kv: &Kv, id: &[u8], keep_from: u64, txn: &mut Txn) {
    let Some((first, _)) = first_delta(kv, id).filter(|(first, _)| *first < keep_from) else { return };
    for (v, rev, _) in deltas(kv, id, (keep_from - first) as usize) {
        if v < keep_from {
            let k = delta_key(id, v);
            txn.require(&k, rev);
            txn.delete(k);
        }
    }
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
        self.context_write(id, Change::Replace(document), |o| o.written())
    }

    /// Applies `patch` (an RFC 7386 JSON Merge Patch, a JSON object) to the context `id`
    /// (an absent context is `{}`, or what the provider restores). Returns the new document,
    /// version and delta.
    pub fn context_update(&self, id: &[u8], patch: &Value) -> Result<Written> {
        self.context_write(id, Change::Merge(patch), |o| o.written())
    }

    /// `context_set` / `context_update` answering through `answer` (the C layer writes its
    /// JSON from the stored text without copying the document).
    pub(crate) fn context_write<R>(
        &self,
        id: &[u8],
        change: Change<'_>,
        answer: impl FnOnce(&Outcome<'_>) -> R,
    ) -> Result<R> {
        check_name(id, "context")?;
        match change {
            Change::Replace(doc) => check_object(doc, "document")?,
            Change::Merge(patch) => {
                check_object(patch, "merge patch")?;
                self.context_restore_if_missing(id)?;
            }
        }
        let dkey = doc_key(id);
        let threshold = self.options().delta_threshold;
        let cache = &self.contexts().cache;
        /// What the plan wrote (or found unchanged), and the revision the document has now.
        struct Planned {
            doc: Doc,
            text: Vec<u8>,
            version: u64,
            delta: Vec<u8>,
            at: u64,
        }
        let (p, revision) = transact(self, || {
            let now = self.now_ms();
            self.read_kv(|kv| {
                let current = read(kv, id)?;
                let mut doc = match current {
                    Some((h, text)) => match cache.lock().take(id, h.mod_revision) {
                        Some(doc) => doc,
                        None => Doc::new(parse_doc(id, text)?),
                    },
                    None => Doc::new(Value::Object(Map::new())),
                };
                let mut delta = Vec::with_capacity(128);
                match change {
                    Change::Replace(new) => {
                        let patch = json_patch::diff(&doc.value, new);
                        doc = Doc::new(new.clone());
                        serde_json::to_writer(&mut delta, &patch).expect("a patch serializes");
                    }
                    Change::Merge(patch) => {
                        let (Value::Object(d), Value::Object(p)) = (&mut doc.value, patch) else {
                            unreachable!("documents and patches are checked to be objects")
                        };
                        delta.push(b'[');
                        merge_recording(d, p, &mut String::new(), &mut delta);
                        delta.push(b']');
                        doc.refresh(p.keys());
                    }
                }
                if let Some((h, text)) = current.filter(|_| delta == b"[]") {
                    let (version, at, text) = (h.version, h.mod_revision, text.to_vec());
                    return Ok(Plan::Done((Planned { doc, text, version, delta, at }, 0)));
                }
                let text = doc.text();
                let mut txn = Txn::with_capacity(3 * dkey.len() + HEAD + text.len() + 256, 6);
                let (version, created_ms, tombstone) = match current {
                    Some((h, _)) => {
                        txn.require(&dkey, h.mod_revision);
                        (h.version + 1, h.created_ms, None)
                    }
                    None => {
                        txn.require(&dkey, 0);
                        let (version, tombstone) = first_version(kv, id, &mut txn);
                        (version, now, tombstone)
                    }
                };
                put_record(&mut txn, &dkey, [version, created_ms, now], &text);
                if let Some(gkey) = tombstone {
                    txn.delete(gkey);
                }
                if current.is_some() && threshold > 0 {
                    txn.put_with(delta_key(id, version), |d| {
                        d.extend_from_slice(&now.to_be_bytes());
                        d.extend_from_slice(&delta);
                    });
                }
                prune(kv, id, version, threshold, &mut txn);
                let planned = Planned { doc, text, version, delta, at: 0 };
                Ok(Plan::Commit(txn, Box::new(move |revision| (planned, revision))))
            })?
        })?;
        // The document put is the commit's first event: its mod_revision is `revision`.
        let at = if revision == 0 { p.at } else { revision };
        let out =
            Outcome { document: &p.doc.value, text: &p.text, version: p.version, delta: &p.delta, revision };
        let answer = answer(&out);
        cache.lock().put(id, at, p.doc);
        Ok(answer)
    }

    /// The context `id`. When it does not exist, the provider (if any) is asked for it (see
    /// `context_set_provider`); `NotFound` when it has none either.
    pub fn context_get(&self, id: &[u8]) -> Result<Context> {
        check_name(id, "context")?;
        match self.read_kv(|kv| context(id, kv))?? {
            Some(c) => Ok(c),
            None => self.context_restore_missing(id),
        }
    }

    /// Stores `document` (a JSON object) as the context `id` if it does not exist (one commit),
    /// and returns the context as it is then: the one stored, or the one another writer
    /// created first. Its version is the larger of `version` (where the document was kept,
    /// 0 = unknown) and the version a new write of the id gets (1, or the one after a deleted
    /// context's), so a client of that earlier version is never taken for a current one
    /// unless the restored version is really its version. No delta is recorded.
    pub fn context_restore(&self, id: &[u8], document: &Value, version: u64) -> Result<Context> {
        check_name(id, "context")?;
        check_object(document, "restored document")?;
        let dkey = doc_key(id);
        let text = serde_json::to_vec(document).expect("a document serializes");
        transact(self, || {
            let now = self.now_ms();
            self.read_kv(|kv| {
                if let Some(c) = context(id, kv)? {
                    return Ok(Plan::Done(c));
                }
                let mut txn = Txn::default();
                txn.require(&dkey, 0);
                let (first, tombstone) = first_version(kv, id, &mut txn);
                let version = version.max(first);
                put_record(&mut txn, &dkey, [version, now, now], &text);
                if let Some(gkey) = tombstone {
                    txn.delete(gkey);
                }
                let head = Head { version, created_ms: now, updated_ms: now, mod_revision: 0 };
                let (id, doc) = (id.to_vec(), document.clone());
                let answer = move |revision| Head { mod_revision: revision, ..head }.context(&id, doc);
                Ok(Plan::Commit(txn, Box::new(answer)))
            })?
        })
    }

    /// A missing context from the provider, stored; `NotFound` without a provider or when it
    /// has none, `Io` when it failed.
    fn context_restore_missing(&self, id: &[u8]) -> Result<Context> {
        let Some(provider) = self.contexts().provider.read().clone() else { return Err(not_found(id)) };
        // Called outside every lock: the provider may call into the store.
        match provider(id) {
            Ok(Some(r)) => self.context_restore(id, &r.document, r.version),
            Ok(None) => Err(not_found(id)),
            Err(message) => Err(hook_failed("provider", id, message)),
        }
    }

    /// Restores `id` from the provider when there is one and the context does not exist
    /// (a provider without the context is no error here: the caller goes on without it).
    fn context_restore_if_missing(&self, id: &[u8]) -> Result<()> {
        if self.contexts().provider.read().is_none() || self.read_kv(|kv| kv.get(&doc_key(id)).is_some())? {
            return Ok(());
        }
        match self.context_restore_missing(id) {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Installs (or with `None` removes) the provider that `get`, `update` and `sync` ask for
    /// a context that does not exist.
    pub fn context_set_provider(&self, provider: Option<Provider>) {
        *self.contexts().provider.write() = provider;
    }

    /// Installs (or with `None` removes) the exporter of `context_export` and cleanup.
    pub fn context_set_exporter(&self, exporter: Option<Exporter>) {
        *self.contexts().exporter.write() = exporter;
    }

    /// Hands the current context `id` (document and version) to the exporter and returns it.
    /// `NotFound` when the context does not exist (the provider is not asked), `InvalidArgument`
    /// without an exporter, `Io` with its message when the exporter failed.
    pub fn context_export(&self, id: &[u8]) -> Result<Context> {
        check_name(id, "context")?;
        let Some(exporter) = self.contexts().exporter.read().clone() else {
            return Err(Error::InvalidArgument("no context exporter is set".into()));
        };
        let c = self.read_kv(|kv| context(id, kv))??.ok_or_else(|| not_found(id))?;
        exporter(&c).map_err(|m| hook_failed("exporter", id, m))?;
        Ok(c)
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
        self.context_restore_if_missing(id)?;
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
    /// context is cleaned in a commit of its own. With an exporter, an expired context is
    /// exported first and deleted only if the exporter succeeded and the context is still the
    /// version it was given; otherwise it stays for a later pass.
    pub fn context_cleanup(&self, limit: usize) -> Result<Cleaned> {
        let opts = self.options();
        let (ctx_ttl, delta_ttl) =
            (opts.context_ttl_ms.filter(|_| opts.context_auto_delete), opts.delta_ttl_ms);
        let mut cleaned = Cleaned::default();
        if ctx_ttl.is_none() && delta_ttl.is_none() {
            return Ok(cleaned);
        }
        let exporter = self.contexts().exporter.read().clone();
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
            // The mod_revision of the version the exporter took (0 = none yet).
            let mut exported = 0;
            let done = loop {
                let step = transact(self, || {
                    let now = self.now_ms();
                    self.read_kv(|kv| {
                        let Some((h, text)) = read(kv, &id)? else { return Ok(Plan::Done(None)) };
                        if expired(now, h.updated_ms, ctx_ttl) {
                            if exporter.is_some() && exported != h.mod_revision {
                                return Ok(Plan::Done(Some(Err(h.context(&id, parse_doc(&id, text)?)))));
                            }
                            let n = deltas(kv, &id, 0).len() as u64;
                            let answer = move |_| Some(Ok(Cleaned { contexts: 1, deltas: n }));
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
                            return Ok(Plan::Done(None));
                        }
                        Ok(Plan::Commit(txn, Box::new(move |_| Some(Ok(Cleaned { contexts: 0, deltas: n })))))
                    })?
                })?;
                match (step, &exporter) {
                    // Exported outside every lock (the exporter may call into the store).
                    (Some(Err(c)), Some(export)) => match export(&c) {
                        Ok(()) => exported = c.revision,
                        Err(_) => {
                            let failures = &self.contexts().cleaner.export_failures;
                            failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            break Cleaned::default();
                        }
                    },
                    (Some(Ok(done)), _) => break done,
                    _ => break Cleaned::default(),
                }
            };
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
    /// Exports that failed in cleanup passes (each kept its context), by any caller.
    export_failures: std::sync::atomic::AtomicU64,
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

    /// `{running, interval_ms, limit, passes, export_failures}` for the store's status.
    pub(crate) fn status(&self) -> Value {
        let st = self.state.lock();
        let export_failures = self.export_failures.load(std::sync::atomic::Ordering::Relaxed);
        serde_json::json!({"running": st.running, "interval_ms": st.interval_ms, "limit": st.limit,
            "passes": st.passes, "export_failures": export_failures})
    }

    fn run(store: Store) {
        let c = &store.contexts().cleaner;
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
        let c = &self.contexts().cleaner;
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
        let c = &self.contexts().cleaner;
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
        self.contexts().cleaner.stop()
    }
}
