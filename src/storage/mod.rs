//! Where the revision log lives. Everything above this trait (keys, watches, `changes`)
//! reads and writes the log only through it, so a backend may keep the log on disk or in
//! another process: nothing above assumes the whole log is in this process's memory.

mod memory;

pub use memory::MemoryLog;

use crate::error::Result;
use crate::event::Event;
use crate::selector::Selector;

pub trait Storage: Send + Sync {
    /// Appends one atomic commit. `commit[0].revision` must be `last_revision() + 1` and the
    /// revisions consecutive; a backend shared between processes refuses anything else
    /// (compare-and-append), which is how a revision is never handed out twice.
    fn append(&mut self, commit: &[Event]) -> Result<()>;

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

    /// The revision of the last committed event; 0 for a new log.
    fn last_revision(&self) -> u64;

    /// Drops the entries below `keep`; returns how many were dropped.
    fn compact(&mut self, keep: u64) -> Result<u64>;
}
