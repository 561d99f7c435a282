//! The reserved key namespace: where tidemark's own features keep their state in the one log.
//!
//! # Schema
//!
//! Every key whose first byte is `0x00` belongs to a feature; every other key is the user's.
//! The user key API (put/get/delete/commit/range/changes/watch) refuses reserved keys, and the
//! selector ALL covers user keys only, so a feature's data is read through its own API.
//!
//! A reserved key is `0x00`, one feature tag byte, `/`, then the feature's fields:
//!
//! | tag | feature | key after `\0<tag>/` | value |
//! |---|---|---|---|
//! | `s` | streams: head | `h` `<name>` | see `ns::streams` |
//! | `s` | streams: event | `e` `<name as part>` `<version u64>` | see `ns::streams` |
//! | `n` | snapshots | `<source as part>` `<stream as part>` `<version u64>` | see `ns::snapshots` |
//! | `l` | lockstep follower cursor | `<prefix>` | the follower's cursor document (JSON) |
//! | `c` | contexts: document | `d` `<id>` | see `ns::contexts` |
//! | `c` | contexts: delta | `p` `<id as part>` `<version u64>` | see `ns::contexts` |
//! | `c` | contexts: last version of a deleted id | `g` `<id>` | see `ns::contexts` |
//! | `t` | trackers: a user feature's last notification | `<feature as part>` | see `ns::trackers` |
//! | `u` | persistent subscriptions: definition, checkpoint, parked | see `ns::persistent` |
//!
//! Field encodings (`Key` writes them, `Fields` reads them back):
//! - a *part* is a length (u16, big-endian) then that many bytes, so a part can hold any
//!   bytes and the parts that follow it stay unambiguous;
//! - a *u64* is 8 bytes big-endian, so byte order is numeric order (range scans go in
//!   version order);
//! - a trailing raw field (the stream name of a head, the lockstep prefix) runs to the end
//!   of the key, so a prefix scan over it is a prefix scan over the name.
//!
//! A feature operation is one ordinary commit of puts and deletes whose preconditions are
//! `Require`s on the keys it read (`transact` plans it and retries it on `Conflict`), so it
//! is atomic, durable under the store's sync policy and survives compaction as current keys.

pub mod contexts;
pub mod persistent;
pub mod snapshots;
pub mod streams;
pub mod subscriptions;
pub mod trackers;

use crate::error::{Error, Result};
use crate::event::Event;
use crate::op::Op;
use crate::selector::Selector;
use crate::store::Store;

/// The first byte of every reserved key.
pub const RESERVED: u8 = 0x00;

/// The features that own a tag under the reserved namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Feature {
    Streams = b's',
    Snapshots = b'n',
    LockstepCursor = b'l',
    Contexts = b'c',
    Trackers = b't',
    Subscriptions = b'u',
}

impl Feature {
    /// The bytes every key of this feature starts with: `\0<tag>/`.
    pub fn prefix(self) -> [u8; 3] {
        [RESERVED, self as u8, b'/']
    }

    /// The feature a key belongs to, and the key's fields after the feature prefix.
    pub fn of(key: &[u8]) -> Option<(Feature, &[u8])> {
        let (head, rest) = key.split_at_checked(3)?;
        if head[0] != RESERVED || head[2] != b'/' {
            return None;
        }
        let feature = match head[1] {
            b's' => Feature::Streams,
            b'n' => Feature::Snapshots,
            b'l' => Feature::LockstepCursor,
            b'c' => Feature::Contexts,
            b't' => Feature::Trackers,
            b'u' => Feature::Subscriptions,
            _ => return None,
        };
        Some((feature, rest))
    }
}

/// Builds a reserved key field by field (see the schema above).
pub struct Key(Vec<u8>);

impl Key {
    pub fn new(feature: Feature) -> Key {
        Key::with_capacity(feature, 0)
    }

    /// A key with room for `fields` bytes after the feature prefix (one allocation when the
    /// caller knows the key's length).
    pub fn with_capacity(feature: Feature, fields: usize) -> Key {
        let mut key = Vec::with_capacity(3 + fields);
        key.extend_from_slice(&feature.prefix());
        Key(key)
    }

    pub fn raw(mut self, bytes: &[u8]) -> Key {
        self.0.extend_from_slice(bytes);
        self
    }

    /// A length-prefixed part; callers bound their names well below `u16::MAX`.
    pub fn part(mut self, bytes: &[u8]) -> Key {
        let len = u16::try_from(bytes.len()).expect("name lengths are validated below u16::MAX");
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn u64(mut self, v: u64) -> Key {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

/// Reads the fields of a reserved key back, in the order `Key` wrote them.
pub struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    /// The fields of `key` if it belongs to `feature`.
    pub fn of(key: &'a [u8], feature: Feature) -> Option<Fields<'a>> {
        match Feature::of(key) {
            Some((f, rest)) if f == feature => Some(Fields(rest)),
            _ => None,
        }
    }

    pub fn tag(&mut self, tag: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(tag)?;
        Some(())
    }

    pub fn part(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let (part, rest) = rest.split_at_checked(u16::from_be_bytes(*len) as usize)?;
        self.0 = rest;
        Some(part)
    }

    pub fn u64(&mut self) -> Option<u64> {
        let (v, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_be_bytes(*v))
    }

    /// A trailing raw field: everything that is left.
    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// The key under which a lockstep follower of `prefix` keeps its cursor by default.
pub fn lockstep_cursor_key(prefix: &[u8]) -> Vec<u8> {
    Key::new(Feature::LockstepCursor).raw(prefix).into_vec()
}

/// Refuses a key the user key API may not touch: empty, or in the reserved namespace.
pub fn check_user_key(key: &[u8]) -> Result<()> {
    match key.first() {
        None => Err(Error::InvalidArgument("keys must not be empty".into())),
        Some(&RESERVED) => Err(reserved()),
        Some(_) => Ok(()),
    }
}

/// A selector of the user key API, checked and confined to user keys: ALL (and the empty
/// prefix, which means the same) covers user keys only, a RANGE from the empty key starts
/// at the first user key, and a KEY, PREFIX or RANGE in the reserved namespace is refused.
pub fn user_selector(selector: &Selector) -> Result<Selector> {
    selector.validate()?;
    let confined = match selector {
        Selector::Prefix(p) if p.is_empty() => Selector::All,
        Selector::Key(k) | Selector::Prefix(k) if k[0] == RESERVED => return Err(reserved()),
        Selector::Range(s, e) if s.first().is_none_or(|&b| b == RESERVED) => {
            if s.len() > 1 || e.first() == Some(&RESERVED) {
                return Err(reserved());
            }
            Selector::Range(vec![RESERVED + 1], e.clone())
        }
        s => s.clone(),
    };
    confined.validate()?;
    Ok(confined)
}

/// Checks every key of a user commit (see `check_user_key`).
pub fn check_user_ops(ops: &[Op<'_>]) -> Result<()> {
    ops.iter().try_for_each(|op| check_user_key(op.key()))
}

fn reserved() -> Error {
    Error::InvalidArgument("keys starting with the byte 0x00 are reserved for tidemark's features".into())
}

/// The owned operations of one feature commit, planned by `transact`. Keys and values are
/// copied into one buffer, so a commit of a few operations makes two allocations.
#[derive(Default)]
pub struct Txn {
    buf: Vec<u8>,
    /// Kind (`r`, `p`, `d`), where the key ends in `buf`, where the value ends (the value
    /// follows the key), and the required mod_revision.
    ops: Vec<(u8, usize, usize, u64)>,
}

impl Txn {
    /// A transaction with room for `bytes` bytes of keys and values and `ops` operations.
    pub fn with_capacity(bytes: usize, ops: usize) -> Txn {
        Txn { buf: Vec::with_capacity(bytes), ops: Vec::with_capacity(ops) }
    }

    /// The key's mod_revision must still be `mod_revision` (0 = absent) when the commit applies.
    pub fn require(&mut self, key: impl AsRef<[u8]>, mod_revision: u64) {
        self.push(b'r', key.as_ref(), mod_revision);
    }

    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.put_with(key, |buf| buf.extend_from_slice(value.as_ref()));
    }

    /// A put whose value `write` appends to the buffer it is given (no value of its own).
    pub fn put_with<R>(&mut self, key: impl AsRef<[u8]>, write: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        self.push(b'p', key.as_ref(), 0);
        let r = write(&mut self.buf);
        self.ops.last_mut().expect("just pushed").2 = self.buf.len();
        r
    }

    pub fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.push(b'd', key.as_ref(), 0);
    }

    fn push(&mut self, kind: u8, key: &[u8], mod_revision: u64) {
        self.buf.extend_from_slice(key);
        self.ops.push((kind, self.buf.len(), self.buf.len(), mod_revision));
    }

    fn ops(&self) -> Vec<Op<'_>> {
        let mut start = 0;
        self.ops
            .iter()
            .map(|&(kind, key_end, value_end, rev)| {
                let key = &self.buf[start..key_end];
                let value = &self.buf[key_end..value_end];
                start = value_end;
                match kind {
                    b'r' => Op::Require(key, rev),
                    b'p' => Op::Put(key, value),
                    _ => Op::Delete(key),
                }
            })
            .collect()
    }
}

/// What a feature's plan decided: commit these operations, or answer without writing.
pub enum Plan<T> {
    Commit(Txn, Box<dyn FnOnce(u64) -> T>),
    Done(T),
}

/// Runs a feature operation as one commit with optimistic concurrency: `plan` reads the
/// current state and returns the operations (with a `Require` on every key its decision
/// rests on) and how to build the answer from the commit's first revision. When another
/// writer changed one of those keys first, the commit fails with `Conflict` and the plan runs
/// again on the new state; every retry means another commit succeeded, so the loop always
/// makes progress. This is the one retry loop of the core.
pub fn transact<T>(store: &Store, mut plan: impl FnMut() -> Result<Plan<T>>) -> Result<T> {
    loop {
        match plan()? {
            Plan::Done(answer) => return Ok(answer),
            Plan::Commit(txn, answer) => match store.commit_reserved(&txn.ops()) {
                Ok(first) => return Ok(answer(first)),
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            },
        }
    }
}

/// A feature event decoded from the log, for feature feeds (`changes`/watches over a
/// feature's prefix). Events of keys outside the reserved namespace are not feature events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureEvent {
    /// An event appended to a stream.
    StreamEvent(streams::StreamEvent),
    /// A stream's event was deleted (its stream was deleted): the stream and the version.
    StreamEventDeleted { stream: Vec<u8>, version: u64 },
    /// A snapshot was recorded.
    Snapshot(snapshots::Snapshot),
    /// A snapshot was deleted.
    SnapshotDeleted { source: Vec<u8>, stream: Vec<u8>, version: u64 },
    /// A context got a new version (set, update or restore). `created` when this write made
    /// the id exist (its first write, or the first after a delete).
    ContextWritten { context: contexts::Context, created: bool },
    /// A context was deleted (by `context_delete` or by cleanup).
    ContextDeleted { id: Vec<u8> },
    /// A persistent subscription was created.
    SubscriptionCreated { name: Vec<u8>, definition: persistent::Definition },
    /// A persistent subscription's checkpoint was written (at creation, then as it moves).
    SubscriptionCheckpoint { name: Vec<u8>, checkpoint: u64 },
    /// A persistent subscription was deleted.
    SubscriptionDeleted { name: Vec<u8> },
}

/// Decodes a log event of the reserved namespace; `None` for user keys, bookkeeping keys
/// (stream heads, lockstep cursors, context deltas and tombstones) and notices.
pub fn decode(e: &Event) -> Option<FeatureEvent> {
    streams::decode(e)
        .or_else(|| snapshots::decode(e))
        .or_else(|| contexts::decode(e))
        .or_else(|| persistent::decode(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_order_by_version() {
        let a = Key::new(Feature::Streams).raw(b"e").part(b"x\0y").u64(7).into_vec();
        let b = Key::new(Feature::Streams).raw(b"e").part(b"x\0y").u64(300).into_vec();
        assert!(a < b);
        let mut f = Fields::of(&a, Feature::Streams).unwrap();
        assert_eq!(f.tag(b"e"), Some(()));
        assert_eq!(f.part(), Some(&b"x\0y"[..]));
        assert_eq!(f.u64(), Some(7));
        assert_eq!(f.u64(), None, "nothing after the version");
        assert!(Fields::of(&a, Feature::Snapshots).is_none());
        assert!(Feature::of(b"user").is_none());
        assert!(Feature::of(b"\0?/x").is_none());
        assert_eq!(lockstep_cursor_key(b"/m/"), b"\0l//m/");
    }

    #[test]
    fn user_api_never_sees_the_namespace() {
        let store = Store::memory(None).unwrap();
        store.put(b"a", b"1").unwrap();
        let reserved = Key::new(Feature::Streams).raw(b"x").into_vec();
        assert_eq!(store.commit_reserved(&[Op::Put(&reserved, b"f"), Op::Put(b"b", b"2")]).unwrap(), 2);
        assert!(matches!(store.put(&reserved, b"v"), Err(Error::InvalidArgument(_))));
        assert!(matches!(store.get(&reserved), Err(Error::InvalidArgument(_))));
        assert!(matches!(store.delete(&reserved), Err(Error::InvalidArgument(_))));
        assert!(matches!(store.commit(&[Op::Require(&reserved, 2)]), Err(Error::InvalidArgument(_))));
        assert_eq!(store.get_reserved(&reserved).unwrap().value[..], b"f"[..]);
        for sel in [Selector::All, Selector::Prefix(Vec::new()), Selector::Range(Vec::new(), Vec::new())] {
            let keys: Vec<_> =
                store.changes(&sel, 1, 0, 0).unwrap().events.iter().map(|e| e.key.to_vec()).collect();
            assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()], "{sel:?}");
            assert_eq!(store.range(&sel, 0).unwrap().0.len(), 2);
        }
        let mut every = 0;
        store.range_reserved(&Selector::every_key(), 0, &mut |_| every += 1).unwrap();
        assert_eq!(every, 3);
        // A mixed commit still ends where it ends for an ALL watcher catching up.
        let w = store
            .watch_pull(Selector::All, &crate::WatchOptions { start_revision: 1, ..Default::default() })
            .unwrap();
        let got = w.next(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|e| e.commit_end), "each delivered commit is whole: {got:?}");
        // Compaction keeps the namespace's current keys.
        store.compact(4).unwrap();
        assert!(store.get_reserved(&reserved).is_ok());
    }

    #[test]
    fn transact_replans_after_a_conflict() {
        let store = Store::memory(None).unwrap();
        let key = Key::new(Feature::Streams).raw(b"counter").into_vec();
        let mut runs = 0;
        let first = transact(&store, || {
            runs += 1;
            let seen = store.get_reserved(&key).map_or(0, |e| e.mod_revision);
            if runs == 1 {
                // Another writer gets in between the read and the commit.
                store.commit_reserved(&[Op::Put(&key, b"other")]).unwrap();
            }
            let mut txn = Txn::default();
            txn.require(key.clone(), seen);
            txn.put(key.clone(), format!("run {runs}").into_bytes());
            Ok(Plan::Commit(txn, Box::new(|first| first)))
        })
        .unwrap();
        assert_eq!((runs, first), (2, 2));
        assert_eq!(store.get_reserved(&key).unwrap().value[..], b"run 2"[..]);
        assert_eq!(transact(&store, || Ok(Plan::Done(7))).unwrap(), 7);
    }

    #[test]
    fn feature_events_decode() {
        use crate::event::EventKind;
        use streams::{ExpectedVersion, NewEvent};
        let store = Store::memory(None).unwrap();
        store.set_clock(std::sync::Arc::new(|| 5));
        let ev = NewEvent { id: Some([7; 16]), event_type: b"t", data: b"d", metadata: b"m" };
        store.append(b"s", &[ev], ExpectedVersion::Any).unwrap();
        store.snapshot_record(b"src", b"s", 0, b"snap").unwrap();
        store.put(b"user", b"1").unwrap();
        let mut decoded = Vec::new();
        let mut deletes = Vec::new();
        store
            .range_reserved(&Selector::every_key(), 0, &mut |e| {
                decoded.push(decode(e));
                deletes.push(decode(&Event { kind: EventKind::Delete, ..e.clone() }));
            })
            .unwrap();
        let [snapshot, event, head, user] = &decoded[..] else { panic!("{decoded:?}") };
        let Some(FeatureEvent::StreamEvent(event)) = event else { panic!("{event:?}") };
        assert_eq!(
            (event.id(), event.data(), event.timestamp_ms(), event.version),
            (&[7; 16], &b"d"[..], 5, 0)
        );
        let Some(FeatureEvent::Snapshot(snapshot)) = snapshot else { panic!("{snapshot:?}") };
        assert_eq!((&snapshot.data[..], snapshot.version), (&b"snap"[..], 0));
        assert_eq!((head, user), (&None, &None), "stream heads and user keys are not feature events");
        assert_eq!(deletes[1], Some(FeatureEvent::StreamEventDeleted { stream: b"s".to_vec(), version: 0 }));
        let deleted =
            FeatureEvent::SnapshotDeleted { source: b"src".to_vec(), stream: b"s".to_vec(), version: 0 };
        assert_eq!(deletes[0], Some(deleted));
    }

    #[test]
    fn context_events_decode() {
        use crate::event::EventKind;
        use serde_json::json;
        let store = Store::memory(None).unwrap();
        store.set_clock(std::sync::Arc::new(|| 9));
        // The decoded document key after each write (what a watch of `\0c/` delivers).
        let current = || {
            let mut got = Vec::new();
            store.range_reserved(&Selector::every_key(), 0, &mut |e| got.extend(decode(e))).unwrap();
            got
        };
        let written = |version, document, created, revision| FeatureEvent::ContextWritten {
            context: contexts::Context {
                id: b"c1".to_vec(),
                document,
                version,
                created_ms: 9,
                updated_ms: 9,
                revision,
            },
            created,
        };
        store.context_set(b"c1", &json!({"a": 1})).unwrap();
        assert_eq!(current(), [written(1, json!({"a": 1}), true, 1)]);
        store.context_update(b"c1", &json!({"b": 2})).unwrap();
        assert_eq!(
            current(),
            [written(2, json!({"a": 1, "b": 2}), false, 2)],
            "deltas are not feature events"
        );
        store.context_delete(b"c1").unwrap();
        assert_eq!(current(), [], "tombstones are not feature events");
        let doc = store.get_reserved(&Key::new(Feature::Contexts).raw(b"dc1").into_vec());
        assert!(doc.is_err());
        let deleted = Event {
            revision: 3,
            kind: EventKind::Delete,
            key: std::sync::Arc::from(&b"\0c/dc1"[..]),
            value: crate::event::empty(),
            create_revision: 0,
            version: 0,
            commit_end: true,
        };
        assert_eq!(decode(&deleted), Some(FeatureEvent::ContextDeleted { id: b"c1".to_vec() }));
        store.context_update(b"c1", &json!({"c": 3})).unwrap();
        assert_eq!(current(), [written(3, json!({"c": 3}), true, 7)], "re-created: versions go on");
    }

    #[test]
    fn truncated_fields_are_none() {
        let mut f = Fields(&[0, 5, b'a']);
        assert_eq!(f.part(), None);
        let mut f = Fields(&[1, 2, 3]);
        assert_eq!(f.u64(), None);
    }

    #[test]
    fn user_selectors_are_confined() {
        let p = |b: &[u8]| Selector::Prefix(b.to_vec());
        let r = |s: &[u8], e: &[u8]| Selector::Range(s.to_vec(), e.to_vec());
        assert_eq!(user_selector(&p(b"")).unwrap(), Selector::All);
        assert_eq!(user_selector(&r(b"", b"b")).unwrap(), r(b"\x01", b"b"));
        assert_eq!(user_selector(&r(b"\0", b"")).unwrap(), r(b"\x01", b""));
        assert_eq!(user_selector(&p(b"a")).unwrap(), p(b"a"));
        assert!(user_selector(&p(b"\0s")).is_err());
        assert!(user_selector(&Selector::Key(b"\0".to_vec())).is_err());
        assert!(user_selector(&r(b"\0a", b"b")).is_err());
        assert!(user_selector(&r(b"", b"\0z")).is_err());
        assert!(user_selector(&r(b"", b"\x01")).is_err(), "covers no user key");
        assert!(check_user_key(b"\0x").is_err() && check_user_key(b"").is_err());
        assert!(check_user_key(b"x\0").is_ok());
    }
}
