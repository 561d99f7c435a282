//! The in-memory log: a deque of events indexed by `revision - earliest`.

use std::collections::VecDeque;

use super::{StateVisitor, Storage, StorageStats};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::selector::Selector;

#[derive(Default)]
pub struct MemoryLog {
    /// Revision of `entries[0]` (or of the next entry when empty).
    base: u64,
    entries: VecDeque<Event>,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog { base: 1, entries: VecDeque::new() }
    }

    /// A log whose next entry gets revision `base` (used as the durable log's cache).
    pub fn starting_at(base: u64) -> MemoryLog {
        MemoryLog { base, entries: VecDeque::new() }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops the oldest entries, whole commits at a time, while `too_many` says so.
    pub fn trim_front(&mut self, mut too_many: impl FnMut(&Event) -> bool) {
        while let Some(first) = self.entries.front() {
            if !too_many(first) {
                return;
            }
            // Drop the whole commit starting here.
            while let Some(e) = self.entries.pop_front() {
                self.base += 1;
                if e.commit_end {
                    break;
                }
            }
        }
    }

    /// Drops the newest entries above `last`.
    pub fn truncate_after(&mut self, last: u64) {
        let keep = last.saturating_sub(self.base - 1) as usize;
        self.entries.truncate(keep);
    }
}

impl Storage for MemoryLog {
    fn append(&mut self, commit: &[Event]) -> Result<()> {
        let expected = self.last_revision() + 1;
        if commit.first().map(|e| e.revision) != Some(expected) {
            return Err(Error::InvalidArgument(format!("commit must start at revision {expected}")));
        }
        self.entries.extend(commit.iter().cloned());
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
        let start = (from - self.base) as usize;
        let end = (to - self.base) as usize + 1;
        let mut matched = 0usize;
        for e in self.entries.range(start..end) {
            if selector.matches(&e.key) {
                visit(e);
                matched += 1;
            }
            if matched >= limit && e.commit_end {
                return Ok(e.revision + 1);
            }
        }
        Ok(to + 1)
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
        StorageStats { cached_events: self.entries.len() as u64, ..StorageStats::default() }
    }
}
