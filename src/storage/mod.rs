//! Where the revision log lives. Everything above this trait (keys, watches, `changes`)
//! reads and writes the log only through it, so a backend may keep the log on disk or in
//! another process: nothing above assumes the whole log is in this process's memory.
//!
//! Writing is two steps so that several commits can share one sync (group commit):
//! `append` stages commits, `flush` makes every staged commit durable as the backend's
//! policy says, or, on failure, forgets all of them (`last_revision` goes back to what it was).

mod codec;
mod file;
pub(crate) mod group;
mod memory;

pub use file::FileLog;
pub use memory::MemoryLog;

use crate::error::Result;
use crate::event::Event;
use crate::selector::Selector;

/// Visits every current entry of the derived state as PUT events (`revision` =
/// `mod_revision`); a checkpoint is written from it and restored by applying those events.
pub type StateVisitor<'a> = &'a mut dyn FnMut(&mut dyn FnMut(&Event));

/// What a backend tells `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageStats {
    pub durable: bool,
    pub path: Option<String>,
    pub bytes_on_disk: u64,
    pub segments: u64,
    pub sync: Option<&'static str>,
    pub read_only: bool,
    /// Revision of the newest checkpoint (0 = none).
    pub last_checkpoint_revision: u64,
    /// Log entries (events) held in memory.
    pub cached_events: u64,
}

pub trait Storage: Send + Sync {
    /// Stages one atomic commit. `commit[0].revision` must be `last_revision() + 1` and the
    /// revisions consecutive; a backend shared between processes refuses anything else
    /// (compare-and-append), which is how a revision is never handed out twice.
    fn append(&mut self, commit: &[Event]) -> Result<()>;

    /// Makes every staged commit durable (as the sync policy promises) and readable. On an
    /// error none of them is: they are forgotten, and the log is as before the first of them.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    /// Visits, in order, the events with revision in `[from, to]` that match `selector`,
    /// stopping at the end of the commit in which the `limit`-th match was visited.
    /// Returns the revision to continue from (`to + 1` when the range was exhausted).
    /// `from` below `earliest_revision()` is `Error::Compacted`.
    fn scan(
        &self,
        selector: &Selector,
        from: u64,
        to: u64,
        limit: usize,
        visit: &mut dyn FnMut(&Event),
    ) -> Result<u64>;

    /// The first revision still retained (`last_revision() + 1` when the log is empty).
    fn earliest_revision(&self) -> u64;

    /// The revision of the last committed (or staged) event; 0 for a new log.
    fn last_revision(&self) -> u64;

    /// Drops the entries below `keep`; returns how many were dropped. A durable backend
    /// first checkpoints the derived state (visited by `state`, which is the state at
    /// `last_revision()`) so the files holding them can be deleted.
    fn compact(&mut self, keep: u64, state: StateVisitor<'_>) -> Result<u64>;

    /// True when the backend would like a checkpoint of the derived state (`checkpoint`).
    fn wants_checkpoint(&self) -> bool {
        false
    }

    /// Writes a checkpoint of the derived state at `last_revision()`.
    fn checkpoint(&mut self, _state: StateVisitor<'_>) -> Result<()> {
        Ok(())
    }

    /// Refuses writes when the store was opened read-only.
    fn check_writable(&self) -> Result<()> {
        Ok(())
    }

    /// Flushes and syncs what is written, stops background work and releases the files.
    fn close(&mut self) {}

    fn stats(&self) -> StorageStats {
        StorageStats::default()
    }
}

/// The revisions of `[from, to]` a log holding `[earliest, last]` can serve, for `scan`:
/// `from` 0 reads as 1, `to` is clamped to `last`, and a `from` below `earliest` is
/// `Compacted`. The range is empty when the returned `from` exceeds `to`.
pub(crate) fn scan_range(from: u64, to: u64, earliest: u64, last: u64) -> Result<(u64, u64)> {
    let from = from.max(1);
    if from < earliest {
        return Err(crate::error::Error::Compacted { requested: from, earliest });
    }
    Ok((from, to.min(last)))
}
