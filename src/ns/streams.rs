//! Event streams: append-only sequences of events, each stream a run of current keys.
//!
//! # Schema (under `\0s/`, see `ns`)
//!
//! | key | value |
//! |---|---|
//! | `\0s/h<name>` (head) | `version u64`, `first u64`: the stream's last version, and the first version of its last append |
//! | `\0s/e<name as part><version u64>` (event) | `id [16]`, `timestamp_ms u64`, `type` (u32 length + bytes), `metadata` (u32 length + bytes), `data` (the rest) |
//!
//! All integers are big-endian. A stream exists while its head exists; its events are the
//! versions `0..=version`, all present (an append is one commit of the events and the head,
//! with a `Require` on the head's `mod_revision`). An event's revision is its key's
//! `mod_revision`. `delete_stream` deletes every event and the head in one commit, so a
//! deleted stream is absent (version −1): appending to its name again starts at version 0
//! and needs `NoStream` or `Any`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use once_cell::sync::Lazy;

use super::{transact, Feature, Fields, Key, Plan, Txn};
use crate::error::{Error, Result};
use crate::event::{Bytes, Event, EventKind};
use crate::kv::Kv;
use crate::selector::{prefix_end, Selector};
use crate::store::{Store, DEFAULT_LIMIT};

/// The longest stream (or snapshot source) name, in bytes.
pub const MAX_NAME: usize = 1024;

/// What an append expects of the stream's current version. The C numbers are
/// `TIDEMARK_EXPECT_*`: `Any` −2, `NoStream` −1, `Exists` −4, `Exact(n)` n ≥ 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Whatever the stream's state, absent included.
    Any,
    /// The stream must not exist (version −1).
    NoStream,
    /// The stream must exist (version ≥ 0).
    Exists,
    /// The stream's last version must be this.
    Exact(u64),
}

impl ExpectedVersion {
    /// From the C encoding; −3 and anything below −4 are invalid.
    pub fn from_i64(v: i64) -> Result<ExpectedVersion> {
        match v {
            -2 => Ok(ExpectedVersion::Any),
            -1 => Ok(ExpectedVersion::NoStream),
            -4 => Ok(ExpectedVersion::Exists),
            n if n >= 0 => Ok(ExpectedVersion::Exact(n as u64)),
            n => Err(Error::InvalidArgument(format!(
                "expected version {n}: use -2 (any), -1 (no stream), -4 (stream exists) or a version >= 0"
            ))),
        }
    }

    pub fn as_i64(self) -> i64 {
        match self {
            ExpectedVersion::Any => -2,
            ExpectedVersion::NoStream => -1,
            ExpectedVersion::Exists => -4,
            ExpectedVersion::Exact(n) => n as i64,
        }
    }

    fn admits(self, current: i64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == -1,
            ExpectedVersion::Exists => current >= 0,
            ExpectedVersion::Exact(n) => current == n as i64,
        }
    }
}

/// An event to append. `id` None = generate one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEvent<'a> {
    pub id: Option<[u8; 16]>,
    pub event_type: &'a [u8],
    pub data: &'a [u8],
    pub metadata: &'a [u8],
}

/// What an append wrote (or, for an idempotent retry, had written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The version of the append's first event.
    pub first_version: u64,
    /// The stream's version after the append (its last event's version).
    pub version: u64,
    /// The revision of the append's first event; the others follow it consecutively.
    pub first_revision: u64,
}

/// An event of a stream, as read back. Its fields are decoded from the one stored value
/// on access, so reading shares the stored bytes instead of copying them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    pub stream: Bytes,
    pub version: u64,
    /// The event's global position in the store's log.
    pub revision: u64,
    record: Bytes,
    /// Where `type`, `metadata` and `data` start in `record`.
    offsets: [u32; 3],
}

/// The fixed part of an event record: id and timestamp.
const RECORD_HEAD: usize = 16 + 8;

impl StreamEvent {
    fn decode(stream: Bytes, version: u64, revision: u64, record: Bytes) -> Option<StreamEvent> {
        let len_at = |at: usize| -> Option<usize> {
            let b: [u8; 4] = record.get(at..at + 4)?.try_into().ok()?;
            Some(u32::from_be_bytes(b) as usize)
        };
        let type_at = RECORD_HEAD + 4;
        let meta_len_at = type_at + len_at(RECORD_HEAD)?;
        let meta_at = meta_len_at + 4;
        let data_at = meta_at + len_at(meta_len_at)?;
        if data_at > record.len() {
            return None;
        }
        let offsets = [type_at as u32, meta_at as u32, data_at as u32];
        Some(StreamEvent { stream, version, revision, record, offsets })
    }

    pub fn id(&self) -> &[u8; 16] {
        self.record[..16].try_into().expect("checked by decode")
    }

    /// When the event was appended, in ms since the epoch, by the store's clock.
    pub fn timestamp_ms(&self) -> u64 {
        u64::from_be_bytes(self.record[16..24].try_into().expect("checked by decode"))
    }

    pub fn event_type(&self) -> &[u8] {
        &self.record[self.offsets[0] as usize..self.offsets[1] as usize - 4]
    }

    pub fn metadata(&self) -> &[u8] {
        &self.record[self.offsets[1] as usize..self.offsets[2] as usize]
    }

    pub fn data(&self) -> &[u8] {
        &self.record[self.offsets[2] as usize..]
    }
}

/// A page of `list_streams`: (name, version) pairs, and whether more names follow.
pub type StreamPage = (Vec<(Vec<u8>, i64)>, bool);

/// Which way `read_stream` goes from its starting version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// Checks a stream (or snapshot source) name: non-empty, at most `MAX_NAME` bytes.
pub(crate) fn check_name(name: &[u8], what: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} names must not be empty")));
    }
    if name.len() > MAX_NAME {
        return Err(Error::TooLarge(format!("{what} name of {} bytes exceeds {MAX_NAME}", name.len())));
    }
    Ok(())
}

fn head_key(stream: &[u8]) -> Vec<u8> {
    Key::with_capacity(Feature::Streams, 1 + stream.len()).raw(b"h").raw(stream).into_vec()
}

fn event_key(stream: &[u8], version: u64) -> Vec<u8> {
    Key::with_capacity(Feature::Streams, 1 + 2 + stream.len() + 8)
        .raw(b"e")
        .part(stream)
        .u64(version)
        .into_vec()
}

/// A stream's head: its last version and the first version of its last append.
#[derive(Clone, Copy)]
struct Head {
    version: u64,
    first: u64,
    mod_revision: u64,
}

fn head(kv: &Kv, head_key: &[u8]) -> Option<Head> {
    let e = kv.get(head_key)?;
    let v = &e.value;
    Some(Head {
        version: u64::from_be_bytes(v.get(..8)?.try_into().ok()?),
        first: u64::from_be_bytes(v.get(8..16)?.try_into().ok()?),
        mod_revision: e.mod_revision,
    })
}

fn current(h: Option<Head>) -> i64 {
    h.map_or(-1, |h| h.version as i64)
}

/// The prefix of the event keys of `stream` (None: of every stream), for feeds over events.
pub(crate) fn event_prefix(stream: Option<&[u8]>) -> Vec<u8> {
    let key = Key::new(Feature::Streams).raw(b"e");
    match stream {
        Some(name) => key.part(name).into_vec(),
        None => key.into_vec(),
    }
}

/// Rewrites the version (the last 8 bytes) of an event key.
fn set_version(key: &mut [u8], version: u64) {
    let at = key.len() - 8;
    key[at..].copy_from_slice(&version.to_be_bytes());
}

/// Reads the event at `version` of `stream` (`key` is a buffer holding its event key with
/// any version: only the last 8 bytes are rewritten).
fn event_at(kv: &Kv, name: &Bytes, key: &mut [u8], version: u64) -> Option<StreamEvent> {
    set_version(key, version);
    let e = kv.get(key)?;
    StreamEvent::decode(name.clone(), version, e.mod_revision, e.value.clone())
}

/// A fresh event id: 48 bits of wall-clock ms, then 80 bits that are unique in this process
/// (a counter through a bijective mixer) and random across processes (a random seed).
pub fn new_event_id() -> [u8; 16] {
    static SEED: Lazy<u64> = Lazy::new(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut z = n.wrapping_add(*SEED).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    id[6..8].copy_from_slice(&((*SEED as u16 & 0x0fff) | 0x7000).to_be_bytes());
    id[8..].copy_from_slice(&z.to_be_bytes());
    id
}

/// Appends the stored record of `e` to `buf` (see the schema above).
fn encode_record(buf: &mut Vec<u8>, id: &[u8; 16], timestamp_ms: u64, e: &NewEvent<'_>) -> Result<()> {
    let len = |b: &[u8], what: &str| {
        u32::try_from(b.len()).map_err(|_| Error::TooLarge(format!("event {what} of {} bytes", b.len())))
    };
    let (type_len, meta_len) = (len(e.event_type, "type")?, len(e.metadata, "metadata")?);
    buf.reserve(RECORD_HEAD + 8 + e.event_type.len() + e.metadata.len() + e.data.len());
    buf.extend_from_slice(id);
    buf.extend_from_slice(&timestamp_ms.to_be_bytes());
    buf.extend_from_slice(&type_len.to_be_bytes());
    buf.extend_from_slice(e.event_type);
    buf.extend_from_slice(&meta_len.to_be_bytes());
    buf.extend_from_slice(e.metadata);
    buf.extend_from_slice(e.data);
    Ok(())
}

impl Store {
    /// Appends `events` to `stream` atomically (all or none, consecutive versions and
    /// revisions) if the stream's version is what `expected` says; otherwise
    /// `WrongExpectedVersion` with the current version. Events without an id get a fresh one.
    /// An append whose ids all equal those of the stream's last append is a retry of it: it
    /// returns that append's result and writes nothing, whatever `expected` says.
    pub fn append(
        &self,
        stream: &[u8],
        events: &[NewEvent<'_>],
        expected: ExpectedVersion,
    ) -> Result<Appended> {
        check_name(stream, "stream")?;
        if events.is_empty() {
            return Err(Error::InvalidArgument("an append needs at least one event".into()));
        }
        // Only an append that gives every id can be a retry; the others get fresh ids as
        // their records are written.
        let given: Option<Vec<[u8; 16]>> = events.iter().map(|e| e.id).collect();
        let hkey = head_key(stream);
        let mut ekey = event_key(stream, 0);
        let bytes: usize = events
            .iter()
            .map(|e| ekey.len() + RECORD_HEAD + 8 + e.event_type.len() + e.metadata.len() + e.data.len())
            .sum();
        transact(self, || {
            let now = self.now_ms();
            self.read_kv(|kv| {
                let h = head(kv, &hkey);
                if let (Some(h), Some(ids)) = (h, &given) {
                    if let Some(done) = previous_append(kv, &mut ekey, h, ids) {
                        return Ok(Plan::Done(done));
                    }
                }
                let cur = current(h);
                if !expected.admits(cur) {
                    return Err(Error::WrongExpectedVersion {
                        stream: stream.to_vec(),
                        expected: expected.as_i64(),
                        current: cur,
                    });
                }
                let first = (cur + 1) as u64;
                let last = first + events.len() as u64 - 1;
                let mut txn = Txn::with_capacity(bytes + 2 * hkey.len() + 16, events.len() + 2);
                txn.require(&hkey, h.map_or(0, |h| h.mod_revision));
                for (i, e) in events.iter().enumerate() {
                    set_version(&mut ekey, first + i as u64);
                    let id = e.id.unwrap_or_else(new_event_id);
                    txn.put_with(&ekey, |buf| encode_record(buf, &id, now, e))?;
                }
                let mut hv = [0u8; 16];
                hv[..8].copy_from_slice(&last.to_be_bytes());
                hv[8..].copy_from_slice(&first.to_be_bytes());
                txn.put(&hkey, hv);
                let answer =
                    move |first_revision| Appended { first_version: first, version: last, first_revision };
                Ok(Plan::Commit(txn, Box::new(answer)))
            })?
        })
    }

    /// The stream's last version; −1 when it does not exist.
    pub fn stream_version(&self, stream: &[u8]) -> Result<i64> {
        check_name(stream, "stream")?;
        let hkey = head_key(stream);
        self.read_kv(|kv| current(head(kv, &hkey)))
    }

    /// Reads up to `count` events (0 = all) of `stream` from version `from` on, in version
    /// order (`Forward`) or down to version 0 (`Backward`; `from` None = from the last
    /// version). A `from` past the end yields no events; an absent stream is `NotFound`.
    pub fn read_stream(
        &self,
        stream: &[u8],
        from: Option<u64>,
        count: usize,
        direction: Direction,
    ) -> Result<Vec<StreamEvent>> {
        check_name(stream, "stream")?;
        if direction == Direction::Forward && from.is_none() {
            return Err(Error::InvalidArgument("a forward read needs a start version".into()));
        }
        let name: Bytes = Arc::from(stream);
        let hkey = head_key(stream);
        let mut key = event_key(stream, 0);
        self.read_kv(|kv| {
            let Some(h) = head(kv, &hkey) else {
                return Err(Error::NotFound(format!(
                    "stream {} does not exist",
                    String::from_utf8_lossy(stream)
                )));
            };
            let count = if count == 0 { u64::MAX } else { count as u64 };
            // The versions to read, `lo..=hi`, visited upwards or downwards.
            let (lo, hi) = match (direction, from) {
                (Direction::Forward, f) => {
                    let lo = f.unwrap_or(0);
                    (lo, h.version.min(lo.saturating_add(count - 1)))
                }
                (Direction::Backward, f) => {
                    let hi = f.unwrap_or(h.version).min(h.version);
                    (hi.saturating_sub(count - 1), hi)
                }
            };
            let mut out = Vec::with_capacity((hi.saturating_sub(lo) as usize + 1).min(1 << 16));
            let mut read = |v| -> Result<()> {
                out.push(event_at(kv, &name, &mut key, v).ok_or_else(|| damaged(stream, v))?);
                Ok(())
            };
            if lo <= hi {
                match direction {
                    Direction::Forward => (lo..=hi).try_for_each(&mut read)?,
                    Direction::Backward => (lo..=hi).rev().try_for_each(&mut read)?,
                }
            }
            Ok(out)
        })?
    }

    /// Stream names in byte order with their versions, at most `limit` (0 = 1000), those
    /// starting with `prefix`, after `after` (exclusive; None = from the first). Returns
    /// the page and whether more names follow it.
    pub fn list_streams(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<StreamPage> {
        let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
        let lo = head_key(prefix);
        let start = match after {
            Some(a) if head_key(a) >= lo => {
                let mut k = head_key(a);
                k.push(0);
                k
            }
            _ => lo.clone(),
        };
        let end = prefix_end(&lo).expect("the head prefix has a successor");
        if start >= end {
            return Ok((Vec::new(), false));
        }
        let heads = lo.len() - prefix.len();
        self.read_kv(|kv| {
            let mut out = Vec::new();
            let more = kv.range(&Selector::Range(start, end), limit, &mut |e| {
                let version =
                    e.value.get(..8).map_or(-1, |v| u64::from_be_bytes(v.try_into().unwrap()) as i64);
                out.push((e.key[heads..].to_vec(), version));
            });
            (out, more)
        })
    }

    /// Deletes a stream's events and its head in one commit; returns the commit's first
    /// revision. The name is then free: appending to it again starts at version 0 and needs
    /// `NoStream` or `Any`.
    pub fn delete_stream(&self, stream: &[u8]) -> Result<u64> {
        check_name(stream, "stream")?;
        let hkey = head_key(stream);
        transact(self, || {
            self.read_kv(|kv| {
                let Some(h) = head(kv, &hkey) else {
                    return Err(Error::NotFound(format!(
                        "stream {} does not exist",
                        String::from_utf8_lossy(stream)
                    )));
                };
                let mut key = event_key(stream, 0);
                let n = h.version as usize + 1;
                let mut txn = Txn::with_capacity(n * key.len() + 2 * hkey.len(), n + 2);
                txn.require(&hkey, h.mod_revision);
                for v in 0..=h.version {
                    set_version(&mut key, v);
                    txn.delete(&key);
                }
                txn.delete(&hkey);
                Ok(Plan::Commit(txn, Box::new(|first| first)))
            })?
        })
    }
}

/// The result of the stream's last append if its ids are `ids` (`key` is a buffer holding
/// one of the stream's event keys).
fn previous_append(kv: &Kv, key: &mut [u8], h: Head, ids: &[[u8; 16]]) -> Option<Appended> {
    if h.version - h.first + 1 != ids.len() as u64 {
        return None;
    }
    let mut first_revision = 0;
    for (i, id) in ids.iter().enumerate() {
        set_version(key, h.first + i as u64);
        let e = kv.get(key)?;
        if e.value.get(..16)? != id {
            return None;
        }
        if i == 0 {
            first_revision = e.mod_revision;
        }
    }
    Some(Appended { first_version: h.first, version: h.version, first_revision })
}

fn damaged(stream: &[u8], version: u64) -> Error {
    Error::Corrupt(format!("stream {} lacks its event {version}", String::from_utf8_lossy(stream)))
}

/// The number of streams (for the store's status).
pub(crate) fn count(kv: &Kv) -> usize {
    let lo = head_key(b"");
    let mut n = 0;
    kv.range(&Selector::Prefix(lo), 0, &mut |_| n += 1);
    n
}

/// Decodes a log event of a stream's event key (see `ns::decode`).
pub(crate) fn decode(e: &Event) -> Option<super::FeatureEvent> {
    let mut f = Fields::of(&e.key, Feature::Streams)?;
    f.tag(b"e")?;
    let stream = f.part()?;
    let version = f.u64()?;
    match e.kind {
        EventKind::Put => StreamEvent::decode(Arc::from(stream), version, e.revision, e.value.clone())
            .map(super::FeatureEvent::StreamEvent),
        EventKind::Delete => {
            Some(super::FeatureEvent::StreamEventDeleted { stream: stream.to_vec(), version })
        }
        _ => None,
    }
}
