//! Runs push-watch callbacks on threads the store owns. A watcher with work is put on a ready
//! queue at most once (`scheduled`), so one thread at a time runs it and its events stay in
//! order; a watcher with steady traffic is requeued after a few deliveries so it cannot starve
//! the others. Progress timers sit in a heap next to the ready queue.

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::{catch_up, progress_event, Feed, WatchState, Watcher};
use crate::event::Event;

/// Deliveries one watcher gets in a row before it goes to the back of the ready queue.
const TURN: usize = 16;

/// How long an idle dispatcher thread polls for work before it sleeps: under steady traffic
/// the next commit usually comes within microseconds, and the writer then pays no wake-up.
/// Short, because an embedded library must not burn its host's CPU while idle.
const SPIN: std::time::Duration = std::time::Duration::from_micros(20);

thread_local! {
    /// The id of the store whose dispatcher runs on this thread (0 = none).
    static DISPATCHING_FOR: Cell<u64> = const { Cell::new(0) };
}

/// True on a dispatcher thread of store `id`, i.e. inside one of its callbacks.
pub(crate) fn on_dispatcher_of(id: u64) -> bool {
    DISPATCHING_FOR.with(|c| c.get() == id)
}

/// True on a dispatcher thread of any store, i.e. inside some watch callback.
pub(crate) fn in_callback() -> bool {
    DISPATCHING_FOR.with(|c| c.get() != 0)
}

struct Timer {
    at: Instant,
    watcher: Arc<Watcher>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at) // earliest first in a max-heap
    }
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Arc<Watcher>>,
    timers: BinaryHeap<Timer>,
    stopping: bool,
}

pub(crate) struct Dispatcher {
    threads: usize,
    /// Watchers in `queue.ready`, readable without the lock (for the idle spin).
    ready_len: std::sync::atomic::AtomicUsize,
    queue: Mutex<Queue>,
    cond: Condvar,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Dispatcher {
    pub fn new(threads: usize) -> Dispatcher {
        Dispatcher {
            threads,
            ready_len: std::sync::atomic::AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
            cond: Condvar::new(),
            handles: Mutex::new(Vec::new()),
        }
    }

    pub fn schedule(&self, w: Arc<Watcher>) {
        let mut q = self.queue.lock();
        q.ready.push_back(w);
        // Counted under the lock, like the pop, so the count never runs below zero.
        self.ready_len.fetch_add(1, std::sync::atomic::Ordering::Release);
        drop(q);
        self.cond.notify_one();
    }

    fn arm(&self, at: Instant, watcher: Arc<Watcher>) {
        self.queue.lock().timers.push(Timer { at, watcher });
        self.cond.notify_one();
    }

    /// Starts the threads on first use, so stores without push watches run none.
    pub fn start(&self, feed: &Arc<dyn Feed>) -> std::io::Result<()> {
        let mut handles = self.handles.lock();
        if !handles.is_empty() || self.queue.lock().stopping {
            return Ok(());
        }
        for n in 0..self.threads {
            let feed = feed.clone();
            let h = thread::Builder::new()
                .name(format!("tidemark-dispatch-{n}"))
                .spawn(move || worker(&*feed))?;
            handles.push(h);
        }
        Ok(())
    }

    /// Lets the threads finish what is queued (terminal notices included), then joins them.
    /// A dispatcher thread calling this (a callback closing its store) is not joined: it
    /// finishes its loop on its own after the callback returns.
    pub fn stop(&self) {
        self.queue.lock().stopping = true;
        self.cond.notify_all();
        let handles = std::mem::take(&mut *self.handles.lock());
        let me = thread::current().id();
        for h in handles {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

fn worker(feed: &dyn Feed) {
    DISPATCHING_FOR.with(|c| c.set(feed.store_id()));
    let d = feed.dispatcher();
    loop {
        let mut q = d.queue.lock();
        let (w, timer) = loop {
            let now = Instant::now();
            if q.timers.peek().is_some_and(|t| t.at <= now) {
                break (q.timers.pop().expect("peeked").watcher, true);
            }
            if let Some(w) = q.ready.pop_front() {
                d.ready_len.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                break (w, false);
            }
            if q.stopping {
                return;
            }
            let mut found = false;
            parking_lot::MutexGuard::unlocked(&mut q, || {
                let until = Instant::now() + SPIN;
                while Instant::now() < until {
                    if d.ready_len.load(std::sync::atomic::Ordering::Acquire) > 0 {
                        found = true;
                        return;
                    }
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                }
            });
            // The lock was released while polling: whatever changed meanwhile (work, a stop
            // request, a timer) must be seen before sleeping, or its wake-up is lost.
            if found
                || !q.ready.is_empty()
                || q.stopping
                || q.timers.peek().is_some_and(|t| t.at <= Instant::now())
            {
                continue;
            }
            match q.timers.peek().map(|t| t.at) {
                Some(at) => {
                    d.cond.wait_until(&mut q, at);
                }
                None => d.cond.wait(&mut q),
            }
        };
        drop(q);
        if timer {
            let mut s = w.state.lock();
            s.timer_armed = false;
            if s.scheduled || s.done {
                continue; // whoever runs it re-arms the timer when it goes idle
            }
            s.scheduled = true;
        }
        run(feed, &w);
    }
}

/// Delivers what one watcher has ready: queued commits, a log catch-up, its terminal notice
/// or a progress notice, for up to `TURN` callbacks.
fn run(feed: &dyn Feed, w: &Arc<Watcher>) {
    for _ in 0..TURN {
        let read = catch_up(feed, w);
        let mut s = w.state.lock();
        if read.is_err() && s.queue.is_empty() {
            // The log could not be read: try again when the next commit wakes the watch.
            s.scheduled = false;
            return;
        }
        if s.done || s.cancelled {
            s.scheduled = false;
            return;
        }
        let now = Instant::now();
        let can_send = s.credit != Some(0);
        let (batch, last) = if can_send && !s.queue.is_empty() {
            (take_batch(&mut s), false)
        } else if can_send && !s.synced && s.terminal.is_none() {
            continue; // the catch-up made progress; deliver it next round
        } else if s.terminal.is_some() && (s.queue.is_empty() || !can_send) {
            // Nothing follows a terminal notice: from here on the watch is done for everyone
            // else (compaction, credit, new commits), though its callback is still running.
            s.done = true;
            (vec![s.terminal.take().expect("checked")], true)
        } else if can_send && s.synced && w.progress_due(&s).is_some_and(|at| at <= now) {
            (vec![progress_event(feed.revision())], false)
        } else {
            s.scheduled = false;
            if let Some(at) = w.progress_due(&s) {
                if !s.timer_armed {
                    s.timer_armed = true;
                    feed.dispatcher().arm(at, w.clone());
                }
            }
            return;
        };
        s.last_activity = now;
        let Some(mut callback) = s.callback.take() else {
            s.scheduled = false;
            return;
        };
        s.running = Some(thread::current().id());
        drop(s);
        // A panic cannot cross into C; a Rust callback that panics just loses this call.
        let _ = catch_unwind(AssertUnwindSafe(|| callback(&batch)));
        let mut s = w.state.lock();
        if last || s.cancelled {
            s.done = true;
            s.scheduled = false;
            drop(s);
            if last {
                // An ended watch stops counting before its owner hears of the end.
                feed.forget(w.id);
            }
            // drop_userdata runs before `running` clears, so an unwatch waiting for this
            // callback returns only after it.
            drop(callback);
            w.state.lock().running = None;
            w.cond.notify_all();
            return;
        }
        s.running = None;
        s.callback = Some(callback);
        drop(s);
        w.cond.notify_all();
    }
    feed.dispatcher().schedule(w.clone());
}

/// Takes queued events within the watch's credit, never splitting a commit.
fn take_batch(s: &mut WatchState) -> Vec<Event> {
    let n = match s.credit {
        None => s.queue.len(),
        Some(credit) => {
            let mut n = 0;
            for e in &s.queue {
                n += 1;
                if n as u64 >= credit && e.commit_end {
                    break;
                }
            }
            n
        }
    };
    if let Some(c) = s.credit.as_mut() {
        *c = c.saturating_sub(n as u64);
    }
    s.queue.drain(..n).collect()
}
