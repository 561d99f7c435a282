//! Compaction: drops log entries below a revision, ending the watchers that still needed a
//! dropped matching event with a `Compacted` notice first.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::selector::Selector;

use super::{Inner, Store};

impl Store {
    /// Drops log entries below `keep` (the keys' current state is kept). Watchers that still
    /// needed a dropped matching event end with a `Compacted` notice. Returns entries dropped.
    pub fn compact(&self, keep: u64) -> Result<u64> {
        self.inner.compact(keep)
    }
}

impl Inner {
    fn compact(&self, keep: u64) -> Result<u64> {
        let mut st = self.state.write();
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let current = st.log.last_revision();
        if keep > current + 1 {
            return Err(Error::FutureRevision { requested: keep, current });
        }
        let earliest = st.log.earliest_revision();
        if keep <= earliest {
            return Ok(0);
        }
        self.metrics.add(&self.metrics.compactions, 1);
        // Watchers behind `keep` lose nothing unless a dropped entry matches them.
        for w in st.watches.iter() {
            let mut s = w.state.lock();
            if s.synced || s.done || s.terminal.is_some() || s.next_rev >= keep {
                continue;
            }
            let mut missed = false;
            // A watcher whose position is already gone (a read error) missed something too.
            // A filtered watcher is visited past the selector's first match until one it accepts.
            let limit = if w.filter.is_some() { usize::MAX } else { 1 };
            if st.log.scan(&w.selector, s.next_rev, keep - 1, limit, &mut |e| missed |= w.accepts(e)).is_err()
            {
                missed = true;
            }
            if missed {
                s.terminal = Some(Event::notice(EventKind::Compacted, keep));
                w.wake(&mut s, &self.dispatcher);
            } else {
                s.next_rev = keep;
            }
        }
        let st = &mut *st;
        let kv = &st.kv;
        st.log.compact(keep, &mut |visit| {
            kv.range(&Selector::every_key(), 0, visit);
        })
    }
}
