//! The pull watch: the consumer asks for events with `next` instead of being called.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::event::Event;

use super::{catch_up, progress_event, Feed, Watcher};

/// A pull watch: the consumer calls `next` from one thread at a time.
pub struct PullWatch {
    feed: Arc<dyn Feed>,
    watcher: Arc<Watcher>,
}

impl PullWatch {
    pub(crate) fn new(feed: Arc<dyn Feed>, watcher: Arc<Watcher>) -> PullWatch {
        PullWatch { feed, watcher }
    }

    pub fn id(&self) -> u64 {
        self.watcher.id
    }

    /// Waits up to `timeout` for events: the queued commits, or a progress or terminal notice.
    /// `Timeout` when nothing came; `Closed` after the terminal notice was returned. After the
    /// store closed, every matching event up to the revision current at close is returned
    /// first, then the `Closed` notice.
    pub fn next(&self, timeout: Duration) -> Result<Vec<Event>> {
        let deadline = Instant::now().checked_add(timeout);
        let w = &self.watcher;
        loop {
            catch_up(&*self.feed, w)?;
            let mut s = w.state.lock();
            if s.done {
                return Err(Error::Closed);
            }
            let now = Instant::now();
            if !s.queue.is_empty() {
                s.last_activity = now;
                return Ok(s.queue.drain(..).collect());
            }
            if !s.synced && s.terminal.is_none() {
                continue;
            }
            if let Some(t) = s.terminal.take() {
                s.done = true;
                drop(s);
                self.feed.forget(w.id);
                return Ok(vec![t]);
            }
            let due = w.progress_due(&s);
            if due.is_some_and(|at| at <= now) {
                s.last_activity = now;
                return Ok(vec![progress_event(self.feed.revision())]);
            }
            if deadline.is_some_and(|d| d <= now) {
                return Err(Error::Timeout);
            }
            let wake_at = match (deadline, due) {
                (Some(d), Some(p)) => Some(d.min(p)),
                (d, p) => d.or(p),
            };
            match wake_at {
                Some(at) => {
                    w.cond.wait_until(&mut s, at);
                }
                None => w.cond.wait(&mut s),
            }
        }
    }
}

impl Drop for PullWatch {
    fn drop(&mut self) {
        self.watcher.state.lock().done = true;
        self.feed.forget(self.watcher.id);
    }
}
