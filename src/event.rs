//! Events: the entries of the revision log, and what watches and `changes` hand out.

use std::sync::Arc;

/// Immutable shared bytes: a key or value is stored once and shared by the
/// key index, the log and every watch queue that holds it.
pub type Bytes = Arc<[u8]>;

/// What an event says happened. The numbers are the C ABI's `tidemark_event_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum EventKind {
    Put = 1,
    Delete = 2,
    /// No key; the watch has seen everything up to `revision`.
    Progress = 3,
    /// Terminal; revisions the watch had not seen were compacted. `revision` is the earliest retained.
    Compacted = 4,
    /// Terminal; the store was closed.
    Closed = 5,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub revision: u64,
    pub kind: EventKind,
    pub key: Bytes,
    pub value: Bytes,
    /// 0 for deletes and non-key events.
    pub create_revision: u64,
    /// The key's version after this event; 0 for deletes and non-key events.
    pub version: u64,
    /// True on the last event of an atomic commit; deliveries never end elsewhere.
    pub commit_end: bool,
}

impl Event {
    /// An event that carries no key: progress and terminal notices.
    pub fn notice(kind: EventKind, revision: u64) -> Event {
        Event {
            revision,
            kind,
            key: empty(),
            value: empty(),
            create_revision: 0,
            version: 0,
            commit_end: true,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.kind, EventKind::Compacted | EventKind::Closed)
    }
}

/// The shared empty byte string (one allocation per process, not per event).
pub fn empty() -> Bytes {
    static EMPTY: once_cell::sync::Lazy<Bytes> = once_cell::sync::Lazy::new(|| Arc::from(&[][..]));
    EMPTY.clone()
}
