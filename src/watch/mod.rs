//! The watch registry. A watcher is *synced* while every matching commit is copied into its
//! bounded queue as it happens; when the queue would pass `max_queue` it stops buffering and
//! remembers the next revision it needs (`next_rev`), and whoever consumes it later reads the
//! missing commits from the log and becomes synced again, under the store's read lock so no
//! commit can slip between. Writers therefore never wait for a consumer, no event is dropped,
//! and a watcher holds at most `max_queue` events (or one commit, if a commit is larger).

mod catch_up;
mod dispatch;
mod index;
mod pull;

pub(crate) use catch_up::{catch_up, drain};
pub(crate) use dispatch::{in_callback, on_dispatcher_of, Dispatcher};
pub use pull::PullWatch;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::event::{Event, EventKind};
use crate::selector::Selector;
use crate::storage::Storage;
use index::Index;

/// What the watch layer needs from the store that owns its watchers, and nothing more. The
/// store implements it and hands it to the dispatcher and to pull watches; nothing in
/// `watch` sees the store's internals (its key state, lock or options).
pub(crate) trait Feed: Send + Sync {
    /// The store's id, for telling callbacks of this store from those of another.
    fn store_id(&self) -> u64;
    /// The revision of the last commit every watcher has been offered.
    fn revision(&self) -> u64;
    fn dispatcher(&self) -> &Dispatcher;
    /// Runs `read` with the log under the store's read lock, so no commit can slip between
    /// a catch-up's read and its watcher becoming synced.
    fn read_log(&self, read: &mut dyn FnMut(&dyn Storage));
    /// Removes a finished watcher from the registry.
    fn forget(&self, id: u64);
}

/// How a watch is consumed and configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// 0 = only commits after the watch is created; N = replay from revision N, then live.
    pub start_revision: u64,
    /// Events buffered before the watch switches to reading the log (0 = 1000).
    pub max_queue: usize,
    /// Send a progress event after this long without one (None = never).
    pub progress_interval: Option<Duration>,
    /// Push watches only: events that may be delivered before more credit is granted
    /// (None = unlimited). A commit is never split, so a delivery may overshoot by the rest
    /// of one commit.
    pub credit: Option<u64>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            start_revision: 0,
            max_queue: DEFAULT_MAX_QUEUE,
            progress_interval: None,
            credit: None,
        }
    }
}

pub const DEFAULT_MAX_QUEUE: usize = 1000;

/// A push watch's consumer. Dropped exactly once, after its last call.
pub type Callback = Box<dyn FnMut(&[Event]) + Send>;

/// Narrows a watch below its key selector, for feature feeds that select by more than the
/// key (a subscription's event type): only the events it accepts are queued, counted against
/// `max_queue` and credit, and delivered. Called under the store's write lock, so it is cheap.
pub(crate) type Filter = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

pub(crate) struct Watcher {
    pub id: u64,
    pub selector: Selector,
    pub filter: Option<Filter>,
    pub max_queue: usize,
    pub progress: Option<Duration>,
    pub push: bool,
    pub state: Mutex<WatchState>,
    /// Wakes a pull consumer waiting in `next`, and `unwatch` waiting for a running callback.
    pub cond: Condvar,
}

pub(crate) struct WatchState {
    pub queue: VecDeque<Event>,
    pub synced: bool,
    /// When not synced: the next revision to read from the log.
    pub next_rev: u64,
    /// A terminal notice waiting to be delivered after the queue.
    pub terminal: Option<Event>,
    /// Nothing more will be delivered (terminal delivered, or cancelled).
    pub done: bool,
    pub cancelled: bool,
    /// Push: in the dispatcher's ready queue or being run by a dispatcher thread.
    pub scheduled: bool,
    /// Push: the thread currently inside the callback.
    pub running: Option<ThreadId>,
    pub callback: Option<Callback>,
    pub credit: Option<u64>,
    pub last_activity: Instant,
    pub timer_armed: bool,
}

impl Watcher {
    pub fn new(
        id: u64,
        selector: Selector,
        filter: Option<Filter>,
        opts: &WatchOptions,
        callback: Option<Callback>,
        start: u64,
        synced: bool,
    ) -> Watcher {
        let push = callback.is_some();
        Watcher {
            id,
            selector,
            filter,
            max_queue: if opts.max_queue == 0 { DEFAULT_MAX_QUEUE } else { opts.max_queue },
            progress: opts.progress_interval.filter(|d| !d.is_zero()),
            push,
            state: Mutex::new(WatchState {
                queue: VecDeque::new(),
                synced,
                next_rev: start,
                terminal: None,
                done: false,
                cancelled: false,
                scheduled: false,
                running: None,
                callback,
                credit: if push { opts.credit } else { None },
                last_activity: Instant::now(),
                timer_armed: false,
            }),
            cond: Condvar::new(),
        }
    }

    /// Whether the watcher wants `e`: its selector matches the key and its filter, if any,
    /// accepts the event.
    pub fn accepts(&self, e: &Event) -> bool {
        self.selector.matches(&e.key) && self.filter.as_ref().is_none_or(|f| f(e))
    }

    /// Hands the watcher its matching events (`idx` into `commit`) of a new commit.
    /// Called by the writer under the store's write lock.
    fn offer(self: &Arc<Self>, commit: &[Event], idx: &[u32], dispatcher: &Dispatcher) {
        let mut s = self.state.lock();
        if !s.synced || s.terminal.is_some() || s.done || s.cancelled {
            return;
        }
        if s.queue.len() + idx.len() > self.max_queue {
            s.synced = false;
            s.next_rev = commit[0].revision;
        } else {
            s.queue.extend(idx.iter().map(|&i| commit[i as usize].clone()));
            // The watcher's part of the commit ends here, whatever the commit's last key.
            if let Some(last) = s.queue.back_mut() {
                last.commit_end = true;
            }
        }
        self.wake(&mut s, dispatcher);
    }

    /// Ends the watch with a terminal notice, delivered after what is already queued.
    pub fn terminate(self: &Arc<Self>, notice: Event, dispatcher: &Dispatcher) {
        let mut s = self.state.lock();
        if s.terminal.is_none() && !s.done {
            s.terminal = Some(notice);
            self.wake(&mut s, dispatcher);
        }
    }

    /// Lets the consumer know there is something to do.
    pub fn wake(self: &Arc<Self>, s: &mut WatchState, dispatcher: &Dispatcher) {
        if !self.push {
            self.cond.notify_one();
        } else if !s.scheduled && (s.credit != Some(0) || s.terminal.is_some()) {
            s.scheduled = true;
            dispatcher.schedule(self.clone());
        }
    }

    /// When the next progress event is due, if this watch sends them.
    pub fn progress_due(&self, s: &WatchState) -> Option<Instant> {
        self.progress.map(|p| s.last_activity + p)
    }
}

/// Every live watcher of a store, and the index that finds the ones a key matches.
#[derive(Default)]
pub(crate) struct Registry {
    watchers: HashMap<u64, Arc<Watcher>>,
    index: Index,
    /// Scratch for grouping a multi-event commit by watcher: (watcher, event index).
    scratch: Vec<(Arc<Watcher>, u32)>,
    idx: Vec<u32>,
}

impl Registry {
    pub fn insert(&mut self, w: Arc<Watcher>) {
        self.index.insert(&w);
        self.watchers.insert(w.id, w);
    }

    pub fn remove(&mut self, id: u64) -> Option<Arc<Watcher>> {
        let w = self.watchers.remove(&id)?;
        self.index.remove(&w);
        Some(w)
    }

    pub fn get(&self, id: u64) -> Option<&Arc<Watcher>> {
        self.watchers.get(&id)
    }

    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    pub fn drain(&mut self) -> Vec<Arc<Watcher>> {
        self.index = Index::default();
        self.watchers.drain().map(|(_, w)| w).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Watcher>> {
        self.watchers.values()
    }

    /// Offers a commit to every watcher it matches, each receiving all of its matching
    /// events of the commit at once.
    pub fn dispatch(&mut self, commit: &[Event], dispatcher: &Dispatcher) {
        if self.watchers.is_empty() {
            return;
        }
        let wants = |w: &Watcher, e: &Event| w.filter.as_ref().is_none_or(|f| f(e));
        if let [event] = commit {
            self.index.matching(&event.key, &mut |w| {
                if wants(w, event) {
                    w.offer(commit, &[0], dispatcher)
                }
            });
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        for (i, e) in commit.iter().enumerate() {
            self.index.matching(&e.key, &mut |w| {
                if wants(w, e) {
                    scratch.push((w.clone(), i as u32))
                }
            });
        }
        scratch.sort_by_key(|(w, i)| (w.id, *i));
        let mut idx = std::mem::take(&mut self.idx);
        for (n, (w, i)) in scratch.iter().enumerate() {
            idx.push(*i);
            if scratch.get(n + 1).is_none_or(|(next, _)| next.id != w.id) {
                w.offer(commit, &idx, dispatcher);
                idx.clear();
            }
        }
        scratch.clear();
        self.scratch = scratch;
        self.idx = idx;
    }
}

/// A progress notice saying the watch has seen everything up to `revision`.
pub fn progress_event(revision: u64) -> Event {
    Event::notice(EventKind::Progress, revision)
}
