//! Following a log shared with other processes: `catch_up` applies and publishes the commits
//! they appended, the one path by which another process's write reaches this store (the
//! write path calls it when its append is refused, the tail thread whenever the log grows).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::kv::Kv;
use crate::storage::Tail;

use super::{Inner, State};

impl Inner {
    /// Applies and publishes (to the key state, the watchers and the current revision) every
    /// commit other processes appended to the log. Returns how many there were.
    pub(super) fn catch_up(&self, st: &mut State) -> Result<usize> {
        let mut commits = Vec::new();
        let mut n = 0;
        loop {
            let more = match st.log.pull(&mut commits) {
                Err(Error::Compacted { .. }) => {
                    self.reload(st)?;
                    // Counts as progress: the state changed, so a refused write plans again.
                    n += 1;
                    continue;
                }
                more => more?,
            };
            n += commits.len();
            self.metrics.add_locked(&self.metrics.tail_commits, commits.len() as u64);
            for commit in commits.drain(..) {
                self.publish(st, &commit, true);
            }
            if !more {
                return Ok(n);
            }
        }
    }
}

impl Inner {
    /// Another process compacted the shared log past this store's position (it was away
    /// longer than the log waits for a silent reader): the store starts again from the log's
    /// checkpoint. The commits in between are gone, so every live watch ends with a
    /// `Compacted` notice at the log's earliest revision, as when a local compaction drops
    /// events a watch still needed; the key state is the checkpoint's, and `catch_up` goes on
    /// with the log after it.
    fn reload(&self, st: &mut State) -> Result<()> {
        let mut kv = Kv::default();
        st.log.reload(&mut |e| kv.apply(e))?;
        st.kv = kv;
        let earliest = st.log.earliest_revision();
        for w in st.watches.iter() {
            w.terminate(Event::notice(EventKind::Compacted, earliest), &self.dispatcher);
        }
        self.revision.store(st.log.last_revision(), Ordering::Release);
        Ok(())
    }
}

/// The thread that waits on a shared log's tail and catches the store up.
pub(super) struct Follower {
    tail: Arc<dyn Tail>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    stopped: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Retry delays after a failure: doubling from the first to the last, so a restarted server
/// is found again within about a second.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// At least this often the tail catches up (which reports the store's position to the log's
/// compactors) even when only the store's own commits woke it.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How long the tail rests after a wake-up for this store's own commit.
const OWN_PAUSE: Duration = Duration::from_micros(250);

impl Follower {
    /// Starts following `tail` for the store `inner` (held weakly: the store may go away).
    pub(super) fn start(inner: &Arc<Inner>, tail: Box<dyn Tail>) -> std::io::Result<Follower> {
        let tail: Arc<dyn Tail> = Arc::from(tail);
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let weak: Weak<Inner> = Arc::downgrade(inner);
        let (t, s) = (tail.clone(), stop.clone());
        let thread =
            std::thread::Builder::new().name("tidemark-tail".into()).spawn(move || follow(&weak, &*t, &s))?;
        Ok(Follower { tail, stop, stopped: AtomicBool::new(false), thread: Mutex::new(Some(thread)) })
    }

    /// Stops the thread and waits for it. Idempotent.
    pub(super) fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        self.tail.interrupt();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

fn follow(weak: &Weak<Inner>, tail: &dyn Tail, stop: &(Mutex<bool>, Condvar)) {
    let mut backoff = BACKOFF_FIRST;
    let mut last_catch_up = Instant::now();
    loop {
        if *stop.0.lock() {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        let after = inner.revision();
        let result = tail.wait(after).and_then(|reached| {
            // This store's own commit woke the tail: nothing to catch up on (but report the
            // position now and then, which `catch_up` does).
            let own = |last_catch_up: Instant| {
                reached.is_some_and(|r| r <= inner.revision()) && last_catch_up.elapsed() < REPORT_EVERY
            };
            if own(last_catch_up) {
                // A busy writer's next commits then wake the tail once, not once each (the
                // wake-ups take CPU from the writer); another process's commit waits that
                // much longer to be seen.
                std::thread::sleep(OWN_PAUSE);
                return Ok(0);
            }
            let mut st = inner.state.write();
            // The store's own commit may have been read before its append returned.
            if inner.closed.load(Ordering::Acquire) || own(last_catch_up) {
                return Ok(0);
            }
            last_catch_up = Instant::now();
            inner.catch_up(&mut st)
        });
        drop(inner);
        match result {
            Ok(_) => backoff = BACKOFF_FIRST,
            Err(_) => {
                // The server is away (or the log cannot be read): try again later.
                let mut stopped = stop.0.lock();
                if !*stopped {
                    stop.1.wait_for(&mut stopped, backoff);
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
