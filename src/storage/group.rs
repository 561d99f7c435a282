//! Group commit: writers queue their operations; the first one to arrive when no group is
//! running becomes the leader, takes everything queued, commits it with one sync and hands
//! every writer its own result. A writer that arrives while a group is running waits, and
//! the leader that finishes hands leadership to the oldest waiting writer, which takes all
//! writers queued by then. A lone writer leads at once, so there is no added latency.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::{self, Thread};

use parking_lot::Mutex;

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

#[derive(Default)]
struct Queue {
    waiting: Vec<Arc<Writer>>,
    leading: bool,
}

#[derive(Default)]
pub(crate) struct WriteGroup {
    queue: Mutex<Queue>,
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
        }
        loop {
            match w.state.load(Ordering::Acquire) {
                DONE => return false,
                LEAD => return true,
                _ => thread::park(),
            }
        }
    }

    /// The leader takes every queued writer (itself included) as its group.
    pub fn take(&self) -> Vec<Arc<Writer>> {
        std::mem::take(&mut self.queue.lock().waiting)
    }

    /// The leader is done with its group: the oldest waiting writer, if any, leads next.
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
