//! The store: one revision log, the key state derived from it, and the watch registry,
//! behind one lock. Writers hold the write lock only to plan, append and hand the commit to
//! matching watchers; readers (`get`, `changes`, watch catch-up) share the read lock.
//!
//! This file opens, closes and registers watches; `write.rs` is the write path with the one
//! publish hook into the watch registry, `read.rs` the reads, `compact.rs` compaction. The
//! watch layer sees the store only through `watch::Feed`.

mod compact;
mod metrics;
mod read;
mod tail;
mod write;

pub use read::{Changes, DEFAULT_LIMIT};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::kv::Kv;
use crate::metrics::Metrics;
use crate::ns;
use crate::options::Options;
use crate::selector::Selector;
use crate::storage::fs::{Fs, RealFs};
use crate::storage::group::WriteGroup;
use crate::storage::{is_redis_url, FileLog, MemoryLog, RedisLog, Storage, TailRepair};
use crate::watch::{self, Callback, Dispatcher, Feed, Filter, PullWatch, Registry, WatchOptions, Watcher};

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

struct State {
    kv: Kv,
    log: Box<dyn Storage>,
    watches: Registry,
    next_watch_id: u64,
    /// Reused for every commit so a single put allocates nothing but its value.
    scratch: Vec<Event>,
}

pub(crate) struct Inner {
    id: u64,
    opts: Options,
    state: RwLock<State>,
    /// The revision of the last commit whose events every watcher has been offered.
    revision: AtomicU64,
    closed: AtomicBool,
    dispatcher: Dispatcher,
    /// Directory stores: writers share syncs through this write group (group commit).
    group: Option<WriteGroup>,
    /// The store's one clock (ms since the epoch) for every timestamp its features write.
    clock: RwLock<Clock>,
    /// Contexts' state beside the log: the cleanup thread (stopped by close), the document
    /// cache, the exporter and the provider.
    contexts: ns::contexts::Shared,
    /// Which watches are trackers, and of which feature.
    trackers: ns::trackers::Members,
    /// A log shared with other processes: the thread that catches up on their commits.
    follower: parking_lot::Mutex<Option<tail::Follower>>,
    /// The open persistent subscription groups, ended by close.
    persistent: ns::persistent::Groups,
    /// What the write path counts (see `metrics`).
    metrics: Metrics,
}

/// A store clock: returns the time in ms since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_clock() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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

    /// Opens a store: `None` or an empty path is in memory; a `redis://` URL is a store in
    /// Redis shared by every process that opens it; otherwise a directory.
    pub fn open(path: Option<&str>, options_json: Option<&str>) -> Result<Store> {
        match path.filter(|p| !p.is_empty()) {
            None => Store::memory(options_json),
            Some(p) if is_redis_url(p) => Store::open_redis(p, options_json),
            Some(p) => Store::open_dir(Arc::new(RealFs), p, options_json),
        }
    }

    /// Opens the store at `redis://host:port/db?store=NAME` and starts following its log.
    fn open_redis(url: &str, options_json: Option<&str>) -> Result<Store> {
        let opts = Options::from_json(options_json)?;
        let mut kv = Kv::default();
        let log = RedisLog::open(url, &opts, &mut |e| kv.apply(e))?;
        let tail = log.tail()?;
        let store = Store::with_storage(opts, Box::new(log), kv, None);
        let follower = tail::Follower::start(&store.inner, Box::new(tail))
            .map_err(|e| Error::io("cannot start the Redis tail thread", e))?;
        *store.inner.follower.lock() = Some(follower);
        Ok(store)
    }

    /// Opens the directory store at `path` on the file system `fs` (tests pass a simulated one).
    pub(crate) fn open_dir(fs: Arc<dyn Fs>, path: &str, options_json: Option<&str>) -> Result<Store> {
        let opts = Options::from_json(options_json)?;
        let mut kv = Kv::default();
        let log = FileLog::open_on(fs, std::path::Path::new(path), &opts, &mut |e| kv.apply(e))?;
        Ok(Store::with_storage(opts, Box::new(log), kv, Some(WriteGroup::default())))
    }

    fn with_storage(opts: Options, log: Box<dyn Storage>, kv: Kv, group: Option<WriteGroup>) -> Store {
        let current = log.last_revision();
        let inner = Inner {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            dispatcher: Dispatcher::new(opts.dispatch_threads),
            metrics: Metrics::new(opts.metrics, opts.metrics_sample_every),
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
            contexts: Default::default(),
            trackers: Default::default(),
            follower: Default::default(),
            persistent: Default::default(),
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

    /// Replaces the store's clock (tests inject one so that timestamps are known).
    pub fn set_clock(&self, clock: Clock) {
        *self.inner.clock.write() = clock;
    }

    pub(crate) fn contexts(&self) -> &ns::contexts::Shared {
        &self.inner.contexts
    }

    pub(crate) fn trackers(&self) -> &ns::trackers::Members {
        &self.inner.trackers
    }

    pub(crate) fn groups(&self) -> &ns::persistent::Groups {
        &self.inner.persistent
    }

    /// Goes back to the system clock (undoes `set_clock`).
    pub fn use_system_clock(&self) {
        self.set_clock(Arc::new(system_clock));
    }

    /// The store clock's time, in ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        (self.inner.clock.read())()
    }

    pub fn earliest_revision(&self) -> u64 {
        self.inner.state.read().log.earliest_revision()
    }

    /// Registers a push watch; `callback` runs on the store's dispatcher threads.
    pub fn watch(&self, selector: Selector, opts: &WatchOptions, callback: Callback) -> Result<u64> {
        self.watch_with(ns::user_selector(&selector)?, None, opts, callback)
    }

    /// `watch` for the store's own feature feeds: any selector, the reserved namespace
    /// included, narrowed by `filter`.
    pub(crate) fn watch_with(
        &self,
        selector: Selector,
        filter: Option<Filter>,
        opts: &WatchOptions,
        callback: Callback,
    ) -> Result<u64> {
        let w = self.inner.register(selector, filter, opts, Some(callback))?;
        let feed: Arc<dyn Feed> = self.inner.clone();
        if let Err(e) = self.inner.dispatcher.start(&feed) {
            self.inner.forget(w.id);
            return Err(Error::io("cannot start a dispatcher thread", e));
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
        self.watch_pull_with(ns::user_selector(&selector)?, None, opts)
    }

    /// `watch_pull` for the store's own feature feeds (see `watch_with`).
    pub(crate) fn watch_pull_with(
        &self,
        selector: Selector,
        filter: Option<Filter>,
        opts: &WatchOptions,
    ) -> Result<PullWatch> {
        let opts = WatchOptions { credit: None, ..*opts };
        let watcher = self.inner.register(selector, filter, &opts, None)?;
        Ok(PullWatch::new(self.inner.clone(), watcher))
    }

    /// Push and pull watches that have not ended.
    pub fn watcher_count(&self) -> usize {
        self.inner.state.read().watches.len()
    }

    /// Whether the watch `id` has not ended.
    pub(crate) fn is_watching(&self, id: u64) -> bool {
        self.inner.state.read().watches.get(id).is_some()
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
            "contexts": ns::contexts::count(&st.kv),
            "context_cleaner": self.inner.contexts.cleaner.status(),
            "watchers": st.watches.len(),
            "durable": disk.durable,
            "path": disk.path,
            "bytes_on_disk": disk.bytes_on_disk,
            "segments": disk.segments,
            "sync": disk.sync,
            "read_only": disk.read_only,
            "last_checkpoint_revision": disk.last_checkpoint_revision,
            "cached_events": disk.cached_events,
            "tail_repair": disk.tail_repair.as_ref().map(|r| serde_json::json!({
                "segment": r.segment,
                "offset": r.offset,
                "bytes": r.bytes,
                "commits": r.commits,
                "revisions": r.revisions,
                "first_revision": r.first_revision,
                "cut": r.cut,
            })),
            "dispatch_threads": self.inner.opts.dispatch_threads,
            "max_key_size": self.inner.opts.max_key_size,
            "max_value_size": self.inner.opts.max_value_size,
        }))
    }

    /// What opening the store cut off the end of its log (a torn tail), if anything.
    pub fn tail_repair(&self) -> Result<Option<TailRepair>> {
        Ok(self.inner.read()?.log.stats().tail_repair)
    }

    /// Ends every watch with a `Closed` notice (push callbacks get it as their last call and
    /// are then dropped) and refuses further operations. Idempotent. Every watch first
    /// gets every matching event up to the revision current at close, also one that was
    /// still catching up (its backlog is read into memory before the log closes); a push
    /// watch out of credit gets only the `Closed` notice.
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
    fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    fn read(&self) -> Result<parking_lot::RwLockReadGuard<'_, State>> {
        let st = self.state.read();
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(st)
    }

    fn register(
        &self,
        selector: Selector,
        filter: Option<Filter>,
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
        let w = Arc::new(Watcher::new(id, selector, filter, opts, callback, start, synced));
        st.watches.insert(w.clone());
        Ok(w)
    }

    /// Removes a finished watcher from the registry.
    fn forget(&self, id: u64) {
        self.state.write().watches.remove(id);
    }

    fn close(&self) {
        // The cleanup thread holds a handle: it ends (after a pass under way) before the log closes.
        self.contexts.cleaner.stop();
        // The tail thread takes the store's lock to catch up: it ends first.
        if let Some(f) = &*self.follower.lock() {
            f.stop();
        }
        self.persistent.close();
        let watchers = {
            let mut st = self.state.write();
            if self.closed.swap(true, Ordering::AcqRel) {
                return;
            }
            let watchers = st.watches.drain();
            for w in &watchers {
                watch::drain(&*st.log, w);
            }
            st.log.close();
            watchers
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

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("keys must not be empty".into()));
    }
    Ok(())
}

impl Feed for Inner {
    fn store_id(&self) -> u64 {
        self.id
    }

    fn revision(&self) -> u64 {
        Inner::revision(self)
    }

    fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    fn read_log(&self, read: &mut dyn FnMut(&dyn Storage)) {
        self.metrics.add(&self.metrics.catch_up_reads, 1);
        read(&*self.state.read().log);
    }

    fn forget(&self, id: u64) {
        Inner::forget(self, id);
    }
}
