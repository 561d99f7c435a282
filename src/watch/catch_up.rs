//! Catch-up: a watcher that fell behind reads what it missed from the log, through the
//! store's `Feed`, and becomes synced again when it reaches the head.

use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::storage::Storage;

use super::{Feed, Watcher};

/// Reads what a lagging watcher missed from the log, up to its queue's room; when it
/// reaches the head it becomes synced again, atomically with respect to writers (the log is
/// read under the store's read lock). The last matching event of each commit is marked as
/// its end (by `Storage::scan`), so consumers that pace deliveries (credit) can stop between
/// commits. A read error other than compaction is returned; the watcher keeps its position
/// and can try again.
pub(crate) fn catch_up(feed: &dyn Feed, w: &Watcher) -> Result<()> {
    loop {
        let room = {
            let s = w.state.lock();
            if s.synced || s.done || s.terminal.is_some() || s.queue.len() >= w.max_queue {
                return Ok(());
            }
            w.max_queue - s.queue.len()
        };
        let mut read = Ok(());
        feed.read_log(&mut |log| read = read_missed(log, w, room));
        read?;
    }
}

/// Reads every event a lagging watcher still needs up to the log's head, whatever its queue
/// holds, so that it can be handed out after the store closed (`Store::close`). The caller
/// holds the store's write lock.
pub(crate) fn drain(log: &dyn Storage, w: &Watcher) {
    loop {
        let s = w.state.lock();
        if s.synced || s.done || s.terminal.is_some() {
            return;
        }
        drop(s);
        if read_missed(log, w, usize::MAX).is_err() {
            // The log could not be read: the watch ends with what it has.
            return;
        }
    }
}

/// One catch-up step: reads at most about `room` events from the watcher's position and
/// queues the matching ones, or ends it with a `Compacted` notice when the position is gone.
fn read_missed(log: &dyn Storage, w: &Watcher, room: usize) -> Result<()> {
    let from = w.state.lock().next_rev;
    let head = log.last_revision();
    let mut got = Vec::new();
    let mut pending: Option<Event> = None;
    // The log visits the selector's matches only (its index skips the rest), with each
    // commit's last one marked as its end; the filter may refuse that one, so the end moves
    // to the last event the watcher accepts.
    let scanned = log.scan(&w.selector, from, head, room, &mut |e| {
        if w.accepts(e) {
            got.extend(pending.take());
            pending = Some(Event { commit_end: false, ..e.clone() });
        }
        if e.commit_end {
            got.extend(pending.take().map(|p| Event { commit_end: true, ..p }));
        }
    });
    let mut s = w.state.lock();
    match scanned {
        Err(Error::Compacted { earliest, .. }) => {
            s.terminal = Some(Event::notice(EventKind::Compacted, earliest));
            Ok(())
        }
        Err(e) => Err(e),
        Ok(next) => {
            s.queue.extend(got);
            s.next_rev = next;
            s.synced = next > head;
            Ok(())
        }
    }
}
