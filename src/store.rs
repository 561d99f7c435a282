//! The store: one revision log, the key state derived from it, and the watch registry,
//! behind one lock. Writers hold the write lock only to plan, append and hand the commit to
//! matching watchers; readers (`get`, `changes`, watch catch-up) share the read lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::kv::{Entry, Kv, Op};
use crate::ns;
use crate::options::Options;
use crate::selector::Selector;
use crate::storage::group::{WriteGroup, Writer};
use crate::storage::{FileLog, MemoryLog, Storage};
use crate::watch::{self, Callback, Dispatcher, Registry, WatchOptions, Watcher};

/// Default and maximum `limit` of a `changes` call.
pub const DEFAULT_LIMIT: usize = 1000;

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct State {
    kv: Kv,
    log: Box<dyn Storage>,
    watches: Registry,
    next_watch_id: u64,
    /// Reused for every commit so a single put allocates nothing but its value.
    scratch: Vec<Event>,
}

pub(crate) struct Inner {
    pub id: u64,
    opts: Options,
    state: RwLock<State>,
    /// The revision of the last commit whose events every watcher has been offered.
    revision: AtomicU64,
    closed: AtomicBool,
    pub dispatcher: Dispatcher,
    /// Directory stores: writers share syncs through this write group (group commit).
    group: Option<WriteGroup>,
    /// The store's one clock (ms since the epoch) for every timestamp its features write.
    clock: RwLock<Clock>,
}

/// A store clock: returns the time in ms since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_clock() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A batch of changes returned by `changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub events: Vec<Event>,
    /// True when `to` was not reached because of the limit; continue from `next_revision`.
    pub has_more: bool,
    pub next_revision: u64,
}

/// The owner's handle on a store. Dropping it closes the store.
pub struct Store {
    inner: Arc<Inner>,
    /// Whether dropping this handle closes the store (see `handle`).
    owner: bool,
}

impl Store {
    /// Opens an in-memory store.
    pub fn memory(options_json: Option<&str>) -> Result<Store> {
        let opts = Options::from_json(options_json)?;
        if opts.read_only {
            return Err(Error::InvalidArgument(
                "option \"read_only\" needs a directory store (an in-memory store starts empty)".into(),
            ));
        }
        Ok(Store::with_storage(opts, Box::new(MemoryLog::new()), Kv::default(), None))
    }

    /// Opens a store: `None` or an empty path is in memory; otherwise a directory.
    pub fn open(path: Option<&str>, options_json: Option<&str>) -> Result<Store> {
        match path.filter(|p| !p.is_empty()) {
            None => Store::memory(options_json),
            Some(p) => {
                let opts = Options::from_json(options_json)?;
                let mut kv = Kv::default();
                let log = FileLog::open(std::path::Path::new(p), &opts, &mut |e| kv.apply(e))?;
                Ok(Store::with_storage(opts, Box::new(log), kv, Some(WriteGroup::default())))
            }
        }
    }

    fn with_storage(opts: Options, log: Box<dyn Storage>, kv: Kv, group: Option<WriteGroup>) -> Store {
        let current = log.last_revision();
        let inner = Inner {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            dispatcher: Dispatcher::new(opts.dispatch_threads),
            opts,
            state: RwLock::new(State {
                kv,
                log,
                watches: Registry::default(),
                next_watch_id: 1,
                scratch: Vec::new(),
            }),
            revision: AtomicU64::new(current),
            closed: AtomicBool::new(false),
            group,
            clock: RwLock::new(Arc::new(system_clock)),
        };
        Store { inner: Arc::new(inner), owner: true }
    }

    /// Another handle on the same store that does not close it when dropped. Threads that
    /// serve or follow a store (lockstep) hold one, so they stay memory-safe whatever the
    /// owner does: once the owner closes the store, every call through the handle is `Closed`.
    pub fn handle(&self) -> Store {
        Store { inner: self.inner.clone(), owner: false }
    }

    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    pub fn current_revision(&self) -> u64 {
        self.inner.revision()
    }

    pub fn earliest_revision(&self) -> u64 {
        self.inner.state.read().log.earliest_revision()
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<u64> {
        ns::check_user_key(key)?;
        self.inner.write(&[Op::Put(key, value)])
    }

    /// Puts only if the key's `mod_revision` is `expected` (0 = the key must not exist).
    pub fn put_if(&self, key: &[u8], value: &[u8], expected: u64) -> Result<u64> {
        ns::check_user_key(key)?;
        self.inner.write(&[Op::Require(key, expected), Op::Put(key, value)])
    }

    /// Deletes a key; a missing key is `NotFound` and takes no revision.
    pub fn delete(&self, key: &[u8]) -> Result<u64> {
        ns::check_user_key(key)?;
        self.inner.write(&[Op::Delete(key)])
    }

    /// Commits all operations atomically at consecutive revisions. Returns the revision of
    /// the first write, or 0 when the operations wrote nothing (only requirements).
    pub fn commit(&self, ops: &[Op<'_>]) -> Result<u64> {
        ns::check_user_ops(ops)?;
        self.inner.write(ops)
    }

    /// `commit` for the store's own features: the keys may be in the reserved namespace.
    pub(crate) fn commit_reserved(&self, ops: &[Op<'_>]) -> Result<u64> {
        self.inner.write(ops)
    }

    pub fn get(&self, key: &[u8]) -> Result<Entry> {
        ns::check_user_key(key)?;
        self.get_reserved(key)
    }

    /// `get` for the store's own features: the key may be in the reserved namespace.
    pub(crate) fn get_reserved(&self, key: &[u8]) -> Result<Entry> {
        check_key(key)?;
        let st = self.inner.read()?;
        st.kv.get(key).cloned().ok_or_else(|| not_found(key))
    }

    /// Replaces the store's clock (tests inject one so that timestamps are known).
    pub fn set_clock(&self, clock: Clock) {
        *self.inner.clock.write() = clock;
    }

    /// The store clock's time, in ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        (self.inner.clock.read())()
    }

    /// Runs `f` on the key state under one read lock: a feature's consistent view.
    pub(crate) fn read_kv<R>(&self, f: impl FnOnce(&Kv) -> R) -> Result<R> {
        Ok(f(&self.inner.read()?.kv))
    }

    /// `range_visit` for the store's own features: any selector, the reserved namespace included.
    pub(crate) fn range_reserved(
        &self,
        selector: &Selector,
        limit: usize,
        visit: &mut dyn FnMut(&Event),
    ) -> Result<bool> {
        selector.validate()?;
        Ok(self.inner.read()?.kv.range(selector, limit, visit))
    }

    /// Visits current keys matching `selector` in key order (as PUT events), at most `limit`
    /// (0 = all). Returns true when the limit left keys out.
    pub fn range_visit(
        &self,
        selector: &Selector,
        limit: usize,
        visit: &mut dyn FnMut(&Event),
    ) -> Result<bool> {
        self.range_reserved(&ns::user_selector(selector)?, limit, visit)
    }

    pub fn range(&self, selector: &Selector, limit: usize) -> Result<(Vec<Event>, bool)> {
        let mut out = Vec::new();
        let more = self.range_visit(selector, limit, &mut |e| out.push(e.clone()))?;
        Ok((out, more))
    }

    /// Visits the events matching `selector` with revision in `[from, to]` (`to` 0 = current),
    /// at most about `limit` of them (0 = 1000; a commit is never split). Returns
    /// `(has_more, next_revision)`.
    pub fn changes_visit(
        &self,
        selector: &Selector,
        from: u64,
        to: u64,
        limit: usize,
        visit: &mut dyn FnMut(&Event),
    ) -> Result<(bool, u64)> {
        let selector = &ns::user_selector(selector)?;
        let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
        let st = self.inner.read()?;
        let current = st.log.last_revision();
        let from = from.max(1);
        if from > current + 1 {
            return Err(Error::FutureRevision { requested: from, current });
        }
        if to != 0 && to < from {
            return Err(Error::InvalidArgument(format!("to ({to}) is below from ({from})")));
        }
        let to = if to == 0 { current } else { to.min(current) };
        let next = st.log.scan(selector, from, to, limit, visit)?;
        Ok((next <= to, next))
    }

    pub fn changes(&self, selector: &Selector, from: u64, to: u64, limit: usize) -> Result<Changes> {
        let mut events = Vec::new();
        let (has_more, next_revision) =
            self.changes_visit(selector, from, to, limit, &mut |e| events.push(e.clone()))?;
        Ok(Changes { events, has_more, next_revision })
    }

    /// Drops log entries below `keep` (the keys' current state is kept). Watchers that still
    /// needed a dropped matching event end with a `Compacted` notice. Returns entries dropped.
    pub fn compact(&self, keep: u64) -> Result<u64> {
        self.inner.compact(keep)
    }

    /// Registers a push watch; `callback` runs on the store's dispatcher threads.
    pub fn watch(&self, selector: Selector, opts: &WatchOptions, callback: Callback) -> Result<u64> {
        let selector = ns::user_selector(&selector)?;
        let w = self.inner.register(selector, opts, Some(callback))?;
        if let Err(e) = self.inner.dispatcher.start(&self.inner) {
            self.inner.forget(w.id);
            return Err(Error::Io(format!("cannot start a dispatcher thread: {e}")));
        }
        let mut s = w.state.lock();
        w.wake(&mut s, &self.inner.dispatcher);
        Ok(w.id)
    }

    /// Ends a push watch. When it returns, the callback is not running and will not run again
    /// and its owner has been dropped, except when called from inside a watch callback (of
    /// any store): then a callback already running (its own included) finishes first and the
    /// drop follows it, so that callbacks unwatching each other cannot deadlock.
    pub fn unwatch(&self, id: u64) -> Result<()> {
        let w = {
            let mut st = self.inner.state.write();
            match st.watches.get(id) {
                Some(w) if w.push => {}
                _ => return Err(Error::NotFound(format!("no push watch with id {id}"))),
            }
            st.watches.remove(id).expect("present")
        };
        let mut s = w.state.lock();
        s.cancelled = true;
        // Waiting from inside a callback could wait on ourselves or on a callback that is
        // waiting on us (two watches unwatching each other, in one store or two).
        if s.running.is_some() && watch::in_callback() {
            return Ok(());
        }
        while s.running.is_some() {
            w.cond.wait(&mut s);
        }
        s.done = true;
        let callback = s.callback.take();
        drop(s);
        drop(callback);
        Ok(())
    }

    /// Grants a push watch `n` more events (see `WatchOptions::credit`).
    pub fn add_credit(&self, id: u64, n: u64) -> Result<()> {
        let st = self.inner.state.read();
        let w = st
            .watches
            .get(id)
            .filter(|w| w.push)
            .ok_or_else(|| Error::NotFound(format!("no push watch with id {id}")))?;
        let mut s = w.state.lock();
        if let Some(c) = s.credit.as_mut() {
            *c = c.saturating_add(n);
        }
        if !s.queue.is_empty() || !s.synced || s.terminal.is_some() || w.progress.is_some() {
            w.wake(&mut s, &self.inner.dispatcher);
        }
        Ok(())
    }

    /// Opens a pull watch, consumed with `PullWatch::next`.
    pub fn watch_pull(&self, selector: Selector, opts: &WatchOptions) -> Result<PullWatch> {
        let opts = WatchOptions { credit: None, ..*opts };
        let selector = ns::user_selector(&selector)?;
        let watcher = self.inner.register(selector, &opts, None)?;
        Ok(PullWatch { inner: self.inner.clone(), watcher })
    }

    /// Push and pull watches that have not ended.
    pub fn watcher_count(&self) -> usize {
        self.inner.state.read().watches.len()
    }

    /// The store's state for operators and tools: revisions, sizes, watchers, options.
    pub fn status(&self) -> Result<serde_json::Value> {
        let st = self.inner.read()?;
        let disk = st.log.stats();
        Ok(serde_json::json!({
            "revision": self.inner.revision(),
            "earliest_revision": st.log.earliest_revision(),
            "keys": st.kv.len(),
            "streams": ns::streams::count(&st.kv),
            "snapshots": ns::snapshots::count(&st.kv),
            "watchers": st.watches.len(),
            "durable": disk.durable,
            "path": disk.path,
            "bytes_on_disk": disk.bytes_on_disk,
            "segments": disk.segments,
            "sync": disk.sync,
            "read_only": disk.read_only,
            "last_checkpoint_revision": disk.last_checkpoint_revision,
            "cached_events": disk.cached_events,
            "dispatch_threads": self.inner.opts.dispatch_threads,
            "max_key_size": self.inner.opts.max_key_size,
            "max_value_size": self.inner.opts.max_value_size,
        }))
    }

    /// The number of current keys.
    pub fn key_count(&self) -> usize {
        self.inner.state.read().kv.len()
    }

    /// Ends every watch with a `Closed` notice (push callbacks get it as their last call and
    /// are then dropped) and refuses further operations. Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.owner {
            self.inner.close();
        }
    }
}

impl Inner {
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    fn read(&self) -> Result<parking_lot::RwLockReadGuard<'_, State>> {
        let st = self.state.read();
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(st)
    }

    fn write(&self, ops: &[Op<'_>]) -> Result<u64> {
        for op in ops {
            check_key(op.key())?;
            if op.key().len() > self.opts.max_key_size {
                return Err(Error::TooLarge(format!(
                    "key of {} bytes exceeds max_key_size ({})",
                    op.key().len(),
                    self.opts.max_key_size
                )));
            }
            if let Op::Put(_, v) = op {
                if v.len() > self.opts.max_value_size {
                    return Err(Error::TooLarge(format!(
                        "value of {} bytes exceeds max_value_size ({})",
                        v.len(),
                        self.opts.max_value_size
                    )));
                }
            }
        }
        if let Some(group) = &self.group {
            let me = Writer::new(ops);
            if group.join(&me) {
                self.commit_group(group);
            }
            return me.take_result();
        }
        let mut guard = self.state.write();
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let st = &mut *guard;
        let first = st.log.last_revision() + 1;
        let mut commit = std::mem::take(&mut st.scratch);
        commit.clear();
        let result = st.kv.plan(ops, first, &mut commit).and_then(|()| {
            if commit.is_empty() {
                return Ok(0);
            }
            st.log.append(&commit)?;
            self.publish(st, &commit, true);
            Ok(first)
        });
        commit.clear();
        st.scratch = commit;
        result
    }

    /// Makes a stored commit visible: to the key state (unless the caller applied it
    /// already), to the watchers it matches, and to readers of the current revision.
    fn publish(&self, st: &mut State, commit: &[Event], apply: bool) {
        if apply {
            for e in commit {
                st.kv.apply(e);
            }
        }
        st.watches.dispatch(commit, &self.dispatcher);
        self.revision.store(commit[commit.len() - 1].revision, Ordering::Release);
    }

    /// Commits a write group (see `storage::group`): plans the writers' commits in order
    /// (each sees the ones before it), writes them with one flush (one sync), and only then
    /// makes them visible and hands them to watchers; every writer gets its own result.
    fn commit_group(&self, group: &WriteGroup) {
        let writers = &group.take()[..];
        let mut guard = self.state.write();
        let st = &mut *guard;
        let refused =
            if self.closed.load(Ordering::Acquire) { Err(Error::Closed) } else { st.log.check_writable() };
        if let Err(e) = refused {
            drop(guard);
            group.hand_off();
            for w in writers {
                w.finish(Err(e.clone()));
            }
            return;
        }
        let multi = writers.len() > 1;
        let mut results = Vec::with_capacity(writers.len());
        let mut commits: Vec<Vec<Event>> = Vec::new();
        // Later commits of the group are planned against the state the earlier ones make;
        // the state is applied as the group goes (no reader can see it: the write lock is
        // held) and restored from here if the flush fails.
        let mut undo: Vec<(crate::event::Bytes, Option<Entry>)> = Vec::new();
        for w in writers {
            let ops = w.ops();
            let first = st.log.last_revision() + 1;
            let mut commit = Vec::new();
            let result = st.kv.plan(&ops, first, &mut commit).and_then(|()| {
                if commit.is_empty() {
                    return Ok(0);
                }
                st.log.append(&commit)?;
                if multi {
                    for e in &commit {
                        undo.push((e.key.clone(), st.kv.get(&e.key).cloned()));
                        st.kv.apply(e);
                    }
                }
                commits.push(std::mem::take(&mut commit));
                Ok(first)
            });
            results.push(result);
        }
        if !commits.is_empty() {
            match st.log.flush() {
                Err(e) => {
                    for (key, prior) in undo.into_iter().rev() {
                        st.kv.apply(&match prior {
                            Some(p) => Event {
                                revision: p.mod_revision,
                                kind: EventKind::Put,
                                key,
                                value: p.value,
                                create_revision: p.create_revision,
                                version: p.version,
                                commit_end: true,
                            },
                            None => {
                                Event { key, kind: EventKind::Delete, ..Event::notice(EventKind::Delete, 0) }
                            }
                        });
                    }
                    for r in results.iter_mut().filter(|r| r.is_ok()) {
                        *r = Err(e.clone());
                    }
                }
                Ok(()) => {
                    for commit in &commits {
                        self.publish(st, commit, !multi);
                    }
                    if st.log.wants_checkpoint() {
                        let kv = &st.kv;
                        // Best effort: the commits are durable in the log either way.
                        let _ = st.log.checkpoint(&mut |visit| {
                            kv.range(&Selector::every_key(), 0, visit);
                        });
                    }
                }
            }
        }
        drop(guard);
        // The next group may start its sync while this one's writers are being woken.
        group.hand_off();
        for (w, r) in writers.iter().zip(results) {
            w.finish(r);
        }
    }

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
        // Watchers behind `keep` lose nothing unless a dropped entry matches them.
        for w in st.watches.iter() {
            let mut s = w.state.lock();
            if s.synced || s.done || s.terminal.is_some() || s.next_rev >= keep {
                continue;
            }
            let mut missed = false;
            // A watcher whose position is already gone (a read error) missed something too.
            if st.log.scan(&w.selector, s.next_rev, keep - 1, 1, &mut |_| missed = true).is_err() {
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

    fn register(
        &self,
        selector: Selector,
        opts: &WatchOptions,
        callback: Option<Callback>,
    ) -> Result<Arc<Watcher>> {
        selector.validate()?;
        let mut st = self.state.write();
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let current = st.log.last_revision();
        let start = opts.start_revision;
        if start > current + 1 {
            return Err(Error::FutureRevision { requested: start, current });
        }
        let earliest = st.log.earliest_revision();
        if start != 0 && start < earliest {
            return Err(Error::Compacted { requested: start, earliest });
        }
        let synced = start == 0 || start == current + 1;
        let id = st.next_watch_id;
        st.next_watch_id += 1;
        let w = Arc::new(Watcher::new(id, selector, opts, callback, start, synced));
        st.watches.insert(w.clone());
        Ok(w)
    }

    /// Removes a finished watcher from the registry.
    pub fn forget(&self, id: u64) {
        self.state.write().watches.remove(id);
    }

    /// Reads what a lagging watcher missed from the log, up to its queue's room; when it
    /// reaches the head it becomes synced again, atomically with respect to writers. The
    /// last matching event of each commit is marked as its end, so consumers that pace
    /// deliveries (credit) can stop between commits. A read error other than compaction is
    /// returned; the watcher keeps its position and can try again.
    pub fn catch_up(&self, w: &Watcher) -> Result<()> {
        loop {
            let (from, room) = {
                let s = w.state.lock();
                if s.synced || s.done || s.terminal.is_some() || s.queue.len() >= w.max_queue {
                    return Ok(());
                }
                (s.next_rev, w.max_queue - s.queue.len())
            };
            let st = self.state.read();
            let head = st.log.last_revision();
            let mut got = Vec::new();
            let mut pending: Option<Event> = None;
            // Every event is visited (at most `room` of them) to see where commits end.
            let scanned = st.log.scan(&Selector::every_key(), from, head, room, &mut |e| {
                if w.selector.matches(&e.key) {
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
                    return Ok(());
                }
                Err(e) => return Err(e),
                Ok(next) => {
                    s.queue.extend(got);
                    s.next_rev = next;
                    s.synced = next > head;
                }
            }
        }
    }

    fn close(&self) {
        let watchers = {
            let mut st = self.state.write();
            if self.closed.swap(true, Ordering::AcqRel) {
                return;
            }
            st.log.close();
            st.watches.drain()
        };
        let notice = Event::notice(EventKind::Closed, self.revision());
        for w in &watchers {
            w.terminate(notice.clone(), &self.dispatcher);
        }
        self.dispatcher.stop();
        if !watch::on_dispatcher_of(self.id) {
            // Threads are joined: drop any callback that never got its turn.
            for w in watchers.iter().filter(|w| w.push) {
                let mut s = w.state.lock();
                s.done = true;
                let callback = s.callback.take();
                drop(s);
                drop(callback);
            }
        }
    }
}

/// A pull watch: the consumer calls `next` from one thread at a time.
pub struct PullWatch {
    inner: Arc<Inner>,
    watcher: Arc<Watcher>,
}

impl PullWatch {
    pub fn id(&self) -> u64 {
        self.watcher.id
    }

    /// Waits up to `timeout` for events: the queued commits, or a progress or terminal notice.
    /// `Timeout` when nothing came; `Closed` after the terminal notice was returned.
    pub fn next(&self, timeout: Duration) -> Result<Vec<Event>> {
        let deadline = Instant::now().checked_add(timeout);
        let w = &self.watcher;
        loop {
            self.inner.catch_up(w)?;
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
                self.inner.forget(w.id);
                return Ok(vec![t]);
            }
            let due = w.progress_due(&s);
            if due.is_some_and(|at| at <= now) {
                s.last_activity = now;
                return Ok(vec![watch::progress_event(self.inner.revision())]);
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
        self.inner.forget(self.watcher.id);
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("keys must not be empty".into()));
    }
    Ok(())
}

fn not_found(key: &[u8]) -> Error {
    Error::NotFound(format!("key {} does not exist", String::from_utf8_lossy(key)))
}
