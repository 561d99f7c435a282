//! Group commit: writers queue their operations; the first one to arrive when no group is
//! running becomes the leader, takes everything queued, commits it with one sync and hands
//! every writer its own result. A writer that arrives while a group is running waits, and
//! the leader that finishes hands leadership to the oldest waiting writer.
//!
//! Adaptive fill: the writers of the group that just finished are woken only after the
//! sync, so a leader that took the queue at once would get only those who queued during
//! the sync, and groups would alternate at half the writers. So a leader first waits for
//! as many writers as were active in the last cycle (the last group plus those queued
//! when it ended), for at most half the last group's commit time (and `MAX_FILL_WAIT`):
//! when nobody comes that costs at most a third of the throughput, and with many more
//! writers than cores (waking them all takes longer than a sync) the leader starts with a
//! part of them and the rest fill the next group during its sync. A lone writer was the
//! only active one, so it never waits; when writers go away, one bounded wait teaches the
//! group the smaller number. Commits that take no real sync (shorter than
//! `MIN_SHARED_COMMIT`, e.g. `sync: none`) never wait: a wake-up would cost more.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::Result;
use crate::op::Op;

const WAITING: u8 = 0;
const DONE: u8 = 1;
const LEAD: u8 = 2;

/// One writer's operations, copied so the leader's thread can read them.
pub(crate) struct Writer {
    bytes: Vec<u8>,
    ops: Vec<(u8, usize, usize, usize, u64)>, // kind, key end, value end (puts), -, expected
    state: AtomicU8,
    result: Mutex<Option<Result<u64>>>,
    thread: Thread,
}

impl Writer {
    pub fn new(ops: &[Op<'_>]) -> Arc<Writer> {
        let mut bytes = Vec::with_capacity(ops.iter().map(|o| o.key().len() + value_of(o).len()).sum());
        let mut owned = Vec::with_capacity(ops.len());
        for op in ops {
            let start = bytes.len();
            bytes.extend_from_slice(op.key());
            let key_end = bytes.len();
            bytes.extend_from_slice(value_of(op));
            let (kind, expected) = match *op {
                Op::Put(..) => (0, 0),
                Op::Delete(_) => (1, 0),
                Op::Require(_, e) => (2, e),
            };
            owned.push((kind, start, key_end, bytes.len(), expected));
        }
        Arc::new(Writer {
            bytes,
            ops: owned,
            state: AtomicU8::new(WAITING),
            result: Mutex::new(None),
            thread: thread::current(),
        })
    }

    /// The operations, borrowed from this writer.
    pub fn ops(&self) -> Vec<Op<'_>> {
        self.ops
            .iter()
            .map(|&(kind, start, key_end, end, expected)| {
                let key = &self.bytes[start..key_end];
                match kind {
                    0 => Op::Put(key, &self.bytes[key_end..end]),
                    1 => Op::Delete(key),
                    _ => Op::Require(key, expected),
                }
            })
            .collect()
    }

    /// Records this writer's result and wakes it (the leader calls it for every writer of
    /// its group, its own included).
    pub fn finish(&self, result: Result<u64>) {
        *self.result.lock() = Some(result);
        self.state.store(DONE, Ordering::Release);
        self.thread.unpark();
    }

    pub fn take_result(&self) -> Result<u64> {
        self.result.lock().take().expect("a finished writer has a result")
    }
}

fn value_of<'a>(op: &Op<'a>) -> &'a [u8] {
    match *op {
        Op::Put(_, v) => v,
        _ => &[],
    }
}

/// A leader waits for its group to fill only if the last commit took at least this long
/// (a real sync to share), and never longer than `MAX_FILL_WAIT` (a slow disk's sync).
const MIN_SHARED_COMMIT: Duration = Duration::from_micros(50);
const MAX_FILL_WAIT: Duration = Duration::from_millis(1);

struct Queue {
    waiting: Vec<Arc<Writer>>,
    leading: bool,
    /// A leader is waiting in `take` for the queue to reach `active` writers.
    filling: bool,
    /// Writers active in the last cycle: the last group and those queued when it ended.
    active: usize,
    /// How long the last group took from `take` to `hand_off`, and when this one started.
    last_commit: Duration,
    started: Instant,
    /// The fill wait's cap (`MAX_FILL_WAIT`; tests raise it so nothing depends on timing).
    max_fill_wait: Duration,
}

pub(crate) struct WriteGroup {
    queue: Mutex<Queue>,
    filled: Condvar,
}

impl Default for WriteGroup {
    fn default() -> WriteGroup {
        let queue = Queue {
            waiting: Vec::new(),
            leading: false,
            filling: false,
            active: 1,
            last_commit: Duration::ZERO,
            started: Instant::now(),
            max_fill_wait: MAX_FILL_WAIT,
        };
        WriteGroup { queue: Mutex::new(queue), filled: Condvar::new() }
    }
}

impl WriteGroup {
    /// Queues `w`; returns once `w` either has its result (`false`) or must lead (`true`).
    pub fn join(&self, w: &Arc<Writer>) -> bool {
        {
            let mut q = self.queue.lock();
            q.waiting.push(w.clone());
            if !q.leading {
                q.leading = true;
                return true;
            }
            if q.filling && q.waiting.len() >= q.active {
                self.filled.notify_one();
            }
        }
        loop {
            match w.state.load(Ordering::Acquire) {
                DONE => return false,
                LEAD => return true,
                _ => thread::park(),
            }
        }
    }

    /// The leader takes every queued writer (itself included) as its group, after letting
    /// the group fill (see the module doc).
    pub fn take(&self) -> Vec<Arc<Writer>> {
        let mut q = self.queue.lock();
        if q.waiting.len() < q.active && q.last_commit >= MIN_SHARED_COMMIT {
            let deadline = Instant::now() + (q.last_commit / 2).min(q.max_fill_wait);
            q.filling = true;
            while q.waiting.len() < q.active && !self.filled.wait_until(&mut q, deadline).timed_out() {}
            q.filling = false;
        }
        q.started = Instant::now();
        std::mem::take(&mut q.waiting)
    }

    /// The leader's group of `size` writers is committed: records the cycle (its length and
    /// the writers active in it) before they are woken, so that those who queue again at
    /// once are not counted twice.
    pub fn ended(&self, size: usize) {
        let mut q = self.queue.lock();
        q.last_commit = q.started.elapsed();
        q.active = size + q.waiting.len();
    }

    /// After `ended`: the oldest waiting writer, if any, leads next.
    pub fn hand_off(&self) {
        let mut q = self.queue.lock();
        match q.waiting.first() {
            Some(next) => {
                next.state.store(LEAD, Ordering::Release);
                next.thread.unpark();
            }
            None => q.leading = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> Arc<Writer> {
        Writer::new(&[Op::Put(b"k", b"v")])
    }

    /// A group whose last cycle had `active` writers and took a long commit (an hour, so a
    /// test that waited for the bound would hang instead of passing by luck).
    fn group_after(active: usize, last_commit: Duration) -> WriteGroup {
        let g = WriteGroup::default();
        {
            let mut q = g.queue.lock();
            q.active = active;
            q.last_commit = last_commit;
            q.max_fill_wait = last_commit;
        }
        g
    }

    #[test]
    fn a_lone_writer_leads_at_once_and_never_waits() {
        let g = group_after(1, Duration::from_secs(3600));
        let me = writer();
        assert!(g.join(&me));
        assert_eq!(g.take().len(), 1);
        g.ended(1);
        g.hand_off();
        assert_eq!(g.queue.lock().active, 1);
        assert!(!g.queue.lock().leading);
    }

    #[test]
    fn the_leader_waits_for_the_writers_of_the_last_cycle() {
        let g = Arc::new(group_after(3, Duration::from_secs(3600)));
        let me = writer();
        assert!(g.join(&me));
        let others: Vec<_> = (0..2)
            .map(|_| {
                let g = g.clone();
                thread::spawn(move || {
                    let w = writer();
                    assert!(!g.join(&w), "a writer of a running group does not lead");
                    w.take_result().unwrap()
                })
            })
            .collect();
        // Returns when both have queued (woken by the last), not at the hour's bound.
        let group = g.take();
        assert_eq!(group.len(), 3);
        g.ended(group.len());
        g.hand_off();
        for (i, w) in group.iter().enumerate() {
            w.finish(Ok(i as u64 + 1));
        }
        let mut got: Vec<u64> = others.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, [2, 3]);
        assert_eq!(g.queue.lock().active, 3);
    }

    #[test]
    fn a_bounded_wait_that_nobody_fills_teaches_the_smaller_number() {
        // Five writers were active, but only this one comes back: it waits at most half of
        // the last commit (1 ms here), then commits alone; the next cycle does not wait.
        let g = group_after(5, Duration::from_millis(2));
        let me = writer();
        assert!(g.join(&me));
        assert_eq!(g.take().len(), 1);
        g.ended(1);
        g.hand_off();
        let mut q = g.queue.lock();
        assert_eq!(q.active, 1);
        q.last_commit = Duration::from_secs(3600);
        drop(q);
        let again = writer();
        assert!(g.join(&again));
        assert_eq!(g.take().len(), 1);
    }

    #[test]
    fn commits_without_a_real_sync_never_wait() {
        let g = group_after(8, MIN_SHARED_COMMIT - Duration::from_micros(1));
        let me = writer();
        assert!(g.join(&me));
        assert_eq!(g.take().len(), 1);
    }
}
