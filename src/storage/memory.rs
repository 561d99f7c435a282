//! The in-memory log: a deque of events indexed by `revision - earliest`, with the index
//! that lets a selective scan skip what it does not match (`index.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use super::index::{self, LogIndex};
use super::{StateVisitor, Storage, StorageStats};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::selector::Selector;

#[derive(Default)]
pub struct MemoryLog {
    /// Revision of `entries[0]` (or of the next entry when empty).
    base: u64,
    entries: VecDeque<Event>,
    index: LogIndex,
    /// Entries read by scans (see `StorageStats::entries_read`).
    read: AtomicU64,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::starting_at(1)
    }

    /// A log whose next entry gets revision `base` (used as the durable log's cache).
    pub fn starting_at(base: u64) -> MemoryLog {
        MemoryLog { base, ..MemoryLog::default() }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops the oldest entries, whole commits at a time, while `too_many` says so.
    pub fn trim_front(&mut self, mut too_many: impl FnMut(&Event) -> bool) {
        let base = self.base;
        while let Some(first) = self.entries.front() {
            if !too_many(first) {
                break;
            }
            // Drop the whole commit starting here.
            while let Some(e) = self.entries.pop_front() {
                self.base += 1;
                if e.commit_end {
                    break;
                }
            }
        }
        if self.base != base {
            self.index.trim_front(self.base);
        }
    }

    /// Drops the newest entries above `last`.
    pub fn truncate_after(&mut self, last: u64) {
        let keep = last.saturating_sub(self.base - 1) as usize;
        self.entries.truncate(keep);
        self.index.truncate_after(last);
    }
}

impl Storage for MemoryLog {
    fn append(&mut self, commit: &[Event]) -> Result<()> {
        let expected = self.last_revision() + 1;
        if commit.first().map(|e| e.revision) != Some(expected) {
            return Err(Error::InvalidArgument(format!("commit must start at revision {expected}")));
        }
        self.entries.extend(commit.iter().cloned());
        self.index.append(commit);
        Ok(())
    }

    fn scan(
        &self,
        selector: &Selector,
        from: u64,
        to: u64,
        limit: usize,
        visit: &mut dyn FnMut(&Event),
    ) -> Result<u64> {
        let (from, to) = super::scan_range(from, to, self.base, self.last_revision())?;
        if from > to {
            return Ok(to + 1);
        }
        let (next, read) =
            index::scan(&self.index, &self.entries, self.base, (selector, from, to, limit), visit);
        self.read.fetch_add(read, Ordering::Relaxed);
        Ok(next)
    }

    fn earliest_revision(&self) -> u64 {
        self.base
    }

    fn last_revision(&self) -> u64 {
        self.base + self.entries.len() as u64 - 1
    }

    fn compact(&mut self, keep: u64, _state: StateVisitor<'_>) -> Result<u64> {
        if keep <= self.base {
            return Ok(0);
        }
        let n = ((keep - self.base) as usize).min(self.entries.len());
        self.entries.drain(..n);
        self.base = keep;
        self.index.trim_front(keep);
        Ok(n as u64)
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        Ok(())
    }

    fn close(&mut self) {}

    fn stats(&self) -> StorageStats {
        StorageStats {
            cached_events: self.entries.len() as u64,
            entries_read: self.read.load(Ordering::Relaxed),
            ..StorageStats::default()
        }
    }
}
