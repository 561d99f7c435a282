//! Snapshots: a source's saved state of a stream at a version, to rebuild from without
//! replaying the stream from its start.
//!
//! # Schema (under `\0n/`, see `ns`)
//!
//! | key | value |
//! |---|---|
//! | `\0n/<source as part><stream as part><version u64>` | `timestamp_ms u64` (big-endian), then the data |
//!
//! Versions are big-endian, so the snapshots of one (source, stream) are in version order
//! and "the latest at or below N" is the last key of one range. Recording a version that
//! exists replaces it. Snapshots are independent of the stream's events: deleting a stream
//! keeps its snapshots.

use super::streams::check_name;
use super::{Feature, Fields, Key};
use crate::error::{Error, Result};
use crate::event::{Bytes, Event, EventKind};
use crate::kv::Kv;
use crate::op::Op;
use crate::selector::Selector;
use crate::store::Store;

/// A recorded snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub source: Vec<u8>,
    pub stream: Vec<u8>,
    pub version: u64,
    /// The revision of the commit that recorded it.
    pub revision: u64,
    /// When it was recorded, in ms since the epoch, by the store's clock.
    pub timestamp_ms: u64,
    pub data: Bytes,
}

fn key(source: &[u8], stream: &[u8], version: u64) -> Vec<u8> {
    Key::new(Feature::Snapshots).part(source).part(stream).u64(version).into_vec()
}

fn check(source: &[u8], stream: &[u8]) -> Result<()> {
    check_name(source, "snapshot source")?;
    check_name(stream, "stream")
}

/// Decodes a snapshot key and its value (as stored, or as a PUT event's value).
fn snapshot(key: &[u8], revision: u64, value: &Bytes) -> Option<Snapshot> {
    let mut f = Fields::of(key, Feature::Snapshots)?;
    let (source, stream, version) = (f.part()?.to_vec(), f.part()?.to_vec(), f.u64()?);
    let timestamp_ms = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    Some(Snapshot { source, stream, version, revision, timestamp_ms, data: value[8..].into() })
}

impl Store {
    /// Records `data` as `source`'s snapshot of `stream` at `version` (replacing one
    /// recorded at the same version); returns the commit's revision.
    pub fn snapshot_record(&self, source: &[u8], stream: &[u8], version: u64, data: &[u8]) -> Result<u64> {
        check(source, stream)?;
        let mut value = self.now_ms().to_be_bytes().to_vec();
        value.extend_from_slice(data);
        self.commit_reserved(&[Op::Put(&key(source, stream, version), &value)])
    }

    /// The snapshot of `stream` by `source` with the greatest version at or below
    /// `max_version`; `NotFound` when there is none.
    pub fn snapshot_read(&self, source: &[u8], stream: &[u8], max_version: u64) -> Result<Snapshot> {
        check(source, stream)?;
        let range = Selector::Range(key(source, stream, 0), upper(source, stream, max_version));
        self.read_kv(|kv| kv.last(&range).and_then(|e| snapshot(&e.key, e.revision, &e.value)))?
            .ok_or_else(|| Error::NotFound(format!("no snapshot at or below version {max_version}")))
    }

    /// Deletes the snapshot at exactly `version`; returns the commit's revision.
    pub fn snapshot_delete(&self, source: &[u8], stream: &[u8], version: u64) -> Result<u64> {
        check(source, stream)?;
        self.commit_reserved(&[Op::Delete(&key(source, stream, version))]).map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(format!("no snapshot at version {version}")),
            e => e,
        })
    }

    /// The snapshots of `stream` by `source`, by version ascending.
    pub fn snapshot_list(&self, source: &[u8], stream: &[u8]) -> Result<Vec<Snapshot>> {
        check(source, stream)?;
        let range = Selector::Range(key(source, stream, 0), upper(source, stream, u64::MAX));
        self.read_kv(|kv| {
            let mut out = Vec::new();
            kv.range(&range, 0, &mut |e| out.extend(snapshot(&e.key, e.revision, &e.value)));
            out
        })
    }
}

/// The key just above version `max` of (source, stream).
fn upper(source: &[u8], stream: &[u8], max: u64) -> Vec<u8> {
    let mut k = key(source, stream, max);
    k.push(0);
    k
}

/// The number of snapshots (for the store's status).
pub(crate) fn count(kv: &Kv) -> usize {
    let mut n = 0;
    kv.range(&Selector::Prefix(Feature::Snapshots.prefix().to_vec()), 0, &mut |_| n += 1);
    n
}

/// Decodes a log event of a snapshot key (see `ns::decode`).
pub(crate) fn decode(e: &Event) -> Option<super::FeatureEvent> {
    match e.kind {
        EventKind::Put => snapshot(&e.key, e.revision, &e.value).map(super::FeatureEvent::Snapshot),
        EventKind::Delete => {
            let mut f = Fields::of(&e.key, Feature::Snapshots)?;
            let (source, stream, version) = (f.part()?.to_vec(), f.part()?.to_vec(), f.u64()?);
            Some(super::FeatureEvent::SnapshotDeleted { source, stream, version })
        }
        _ => None,
    }
}
