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
mod index;
mod memory;
mod redis;

pub(crate) use file::fs;
pub use file::FileLog;
pub use memory::MemoryLog;
pub use redis::{is_url as is_redis_url, RedisLog};

use crate::error::{Error, Result};
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
    /// What the last open cut off the end of the log, if anything.
    pub tail_repair: Option<TailRepair>,
    /// Log entries held in memory that scans have read since open (what the log index saves).
    pub entries_read: u64,
}

/// A torn tail found on open: the end of the last segment that did not hold whole commits
/// (the commit being written when the process or machine stopped) and was cut (or, for a
/// read-only open, ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailRepair {
    /// The segment file.
    pub segment: String,
    /// The byte offset the log now ends at.
    pub offset: u64,
    /// Bytes cut (non-zero bytes after `offset`).
    pub bytes: u64,
    /// Commits cut: the partial one, plus any whole commit found after it (a hole left by a
    /// power loss under `"interval"`/`"none"`).
    pub commits: u64,
    /// Revisions cut, as far as the damaged bytes still tell (0 when they do not).
    pub revisions: u64,
    /// The first revision cut (the log now ends at `first_revision - 1`).
    pub first_revision: u64,
    /// True when the file was changed (false for a read-only open, which only ignores it).
    pub cut: bool,
}

/// What every log backend provides (the in-memory log, the directory log, and next a
/// backend in another process such as Redis). The store holds it behind its own lock, so
/// calls never overlap; `&self` methods may still be called from several reader threads at
/// once (under a shared lock), hence `Sync`.
///
/// Revisions are consecutive from 1; an event's revision is its position in the log. A
/// commit is one or more events written atomically: after any failure or crash it is
/// wholly there or wholly absent.
/// Where `Storage::append_after` put a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Right after `last_revision()`, as planned: the caller applies and publishes it.
    AsPlanned,
    /// After commits of other processes that touched none of its keys, its revisions moved
    /// up to start at `first`. Not staged here: the caller catches up (`pull`), which brings
    /// those commits and then this one, as the log has them.
    Later { first: u64 },
}

pub trait Storage: Send + Sync {
    /// Stages one atomic commit. `commit[0].revision` must be `last_revision() + 1` and the
    /// revisions consecutive, or it is `InvalidArgument` and nothing is staged; a backend
    /// shared between processes refuses anything else (compare-and-append), which is how a
    /// revision is never handed out twice. A staged commit is not yet durable nor readable
    /// through `scan`, but `last_revision` counts it.
    fn append(&mut self, commit: &[Event]) -> Result<()>;

    /// `append` for a commit planned by the store (`required`: the keys it only required):
    /// a shared log may put it after other processes' newer commits when none of them
    /// changed a key the commit touches (`Placed::Later`), so that writers of different keys
    /// do not refuse each other. A private log always places it as planned.
    fn append_after(&mut self, commit: &[Event], _required: &[&[u8]]) -> Result<Placed> {
        self.append(commit).map(|()| Placed::AsPlanned)
    }

    /// Makes every staged commit durable (as the backend's sync policy promises) and
    /// readable. On an error none of them is: they are forgotten and `last_revision` goes
    /// back to what it was before the first of them (what reached the medium may still be
    /// found after a reopen only when the backend cannot know, e.g. after a failed fsync).
    fn flush(&mut self) -> Result<()>;

    /// Visits, in order, the flushed events with revision in `[from, to]` that match
    /// `selector`, stopping at the end of the commit in which the `limit`-th match was
    /// visited. The last event visited of each commit has `commit_end` set (the selector may
    /// not match the commit's last event), so a commit's matches can be delivered whole. Returns the revision to continue from (`to + 1` when the range was
    /// exhausted). `from` below `earliest_revision()` is `Error::Compacted`; `to` beyond the
    /// log is clamped (see `scan_range`). Damage found while reading is `Error::Corrupt`.
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

    /// Drops the entries below `keep` (clamped to `last_revision() + 1`); returns how many
    /// were dropped. A durable backend first persists the derived state (visited by `state`,
    /// the state at `last_revision()`) so that the dropped entries are no longer needed to
    /// rebuild it; the new earliest revision survives a reopen.
    fn compact(&mut self, keep: u64, state: StateVisitor<'_>) -> Result<u64>;

    /// `Ok` when `append` may be called: not closed, not read-only, no earlier failure that
    /// makes the backend refuse writes. Called before a write is planned.
    fn check_writable(&self) -> Result<()>;

    /// Flushes and syncs what is written, stops background work and releases the backend's
    /// resources (files, locks, connections). Idempotent; every later write is refused.
    fn close(&mut self);

    /// What `status` reports about the backend.
    fn stats(&self) -> StorageStats;

    /// Called after each successful flush: a backend that rebuilds the derived state from a
    /// snapshot writes one (from `state`, at `last_revision()`) when it judges it due, to
    /// bound the replay on open. Best effort: the flushed commits are durable either way.
    fn checkpoint_if_due(&mut self, _state: StateVisitor<'_>) -> Result<()> {
        Ok(())
    }

    /// A log shared with other processes: appends to `out` the next commits they appended
    /// after `last_revision()` (a batch of them; none when there are none), which then count
    /// in `last_revision` and `scan`; returns whether there may be more. The store applies
    /// and publishes them (`Inner::catch_up`), after a refused `append` and whenever its
    /// `tail` wakes. `Compacted` when another process compacted the log past this one's
    /// position (see `reload`). A private log has none.
    fn pull(&mut self, _out: &mut Vec<Vec<Event>>) -> Result<bool> {
        Ok(false)
    }

    /// A shared log whose `pull` found this process's next revision compacted away by another
    /// process (`Compacted`): starts again from the log's checkpoint, whose key state it
    /// applies to `apply` (the caller starts from an empty state); `pull` then goes on after
    /// it. Private logs never need it.
    fn reload(&mut self, _apply: &mut dyn FnMut(&Event)) -> Result<()> {
        Err(Error::InvalidArgument("this log is not shared: nothing to reload".into()))
    }

    /// A log shared with other processes: a way to wait for their commits without holding the
    /// store's lock (the store runs a thread on it). `None` for a private log.
    fn tail(&self) -> Option<Result<Box<dyn Tail>>> {
        None
    }
}

/// Waits for commits that other processes append to a shared log (see `Storage::tail`).
pub trait Tail: Send + Sync {
    /// Returns when the log may hold revisions after `after`, after about a second without
    /// news, or at once after `interrupt`; with the revision the log reached when known (the
    /// caller skips a catch-up for commits it wrote itself). An error (the server is
    /// unreachable) is retried by the caller, with backoff.
    fn wait(&self, after: u64) -> Result<Option<u64>>;

    /// Makes the current and every later `wait` return at once (the store is closing).
    fn interrupt(&self);
}

/// For a matching event followed by `rest` (the log's later events, in order): the revision
/// its commit ends at when no later event of the commit matches `selector`, so the event is
/// the commit's last for the reader; `None` when a later one matches or `rest` ends first.
pub(crate) fn last_match<'e>(selector: &Selector, rest: impl Iterator<Item = &'e Event>) -> Option<u64> {
    for n in rest {
        if selector.matches(&n.key) {
            return None;
        }
        if n.commit_end {
            return Some(n.revision);
        }
    }
    None
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
