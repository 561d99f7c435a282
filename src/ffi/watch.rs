//! Watches: push (a callback on the store's threads) and pull (`tidemark_watch_next`).

use std::ffi::c_void;
use std::time::Duration;

use crate::event::Event;
use crate::watch::PullWatch;
use crate::watch::{WatchOptions, DEFAULT_MAX_QUEUE};

use super::{
    free_box, get_ref, guard, guard_value, need, put_out, selector_in, tidemark_event, tidemark_events,
    tidemark_selector, tidemark_status, tidemark_store, to_boxed_ptr, try_ref, Castable, Closure, EventList,
    Failure,
};

/// How a watch starts and is paced. Get the defaults from `tidemark_watch_options_default()`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_watch_options {
    /// 0 = only what is committed after the call; N = replay from revision N (inclusive), then
    /// live, as one ordered sequence. Below the earliest retained revision:
    /// `TIDEMARK_ERR_COMPACTED`; beyond current + 1: `TIDEMARK_ERR_FUTURE_REVISION`.
    pub start_revision: u64,
    /// Events buffered for a slow consumer before the watch stops buffering and later catches
    /// up by reading the log (0 = 1000). Writers never wait and no event is lost either way.
    pub max_queue: usize,
    /// After this long without an event, deliver a `TIDEMARK_EVENT_PROGRESS` (0 = never).
    pub progress_interval_ms: u32,
    /// Push watches only: events the callback may receive before `tidemark_store_watch_credit`
    /// grants more (0 = unlimited). Undelivered events wait in the log, not in memory. A commit
    /// is never split, so a delivery can exceed the credit by the rest of one commit.
    pub credit: u64,
}

/// Called with a batch of events: whole commits, in revision order; or a single PROGRESS
/// event; or, as the very last call, a single terminal event (COMPACTED or CLOSED). The
/// events and their bytes are valid only during the call. Runs on a thread the store owns,
/// never on two threads at once for the same watch. It may call any store function, including
/// `tidemark_store_put` and `tidemark_store_unwatch` of its own watch, but not
/// `tidemark_store_close` of its store while other threads still use it.
pub type tidemark_watch_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, events: *const tidemark_event, count: usize)>;

/// Called exactly once with the watch's `userdata`, after its last callback, when the watch
/// ends for any reason (unwatch, terminal event, store close, or a failed registration).
pub type tidemark_drop_callback = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// The defaults: start_revision 0, max_queue 1000, no progress events, unlimited credit.
#[no_mangle]
pub extern "C" fn tidemark_watch_options_default() -> tidemark_watch_options {
    tidemark_watch_options {
        start_revision: 0,
        max_queue: DEFAULT_MAX_QUEUE,
        progress_interval_ms: 0,
        credit: 0,
    }
}

pub(crate) fn options_in(o: *const tidemark_watch_options) -> WatchOptions {
    // SAFETY: a non-NULL options pointer points to a `tidemark_watch_options` valid for the call.
    let o = unsafe { o.as_ref() }.copied().unwrap_or_else(|| tidemark_watch_options_default());
    WatchOptions {
        start_revision: o.start_revision,
        max_queue: o.max_queue,
        progress_interval: (o.progress_interval_ms > 0)
            .then(|| Duration::from_millis(o.progress_interval_ms.into())),
        credit: (o.credit > 0).then_some(o.credit),
    }
}

type WatchCallback = unsafe extern "C" fn(*mut c_void, *const tidemark_event, usize);

/// Hands a delivery to the C callback as an array of event views borrowing `events`.
fn deliver(closure: &Closure<WatchCallback>, events: &[Event]) {
    let Some((callback, userdata)) = closure.target() else { return };
    let views: Vec<tidemark_event> = events.iter().map(tidemark_event::view).collect();
    // SAFETY: the callback and userdata are the caller's pair, called as the header's
    // `tidemark_watch_callback` says; the views stay valid for the call.
    unsafe { callback(userdata, views.as_ptr(), views.len()) }
}

/// Registers a push watch over `selector` (NULL = all) with `options` (NULL = defaults) and
/// writes its id to `*watch_id_out`. `callback` receives the events (see
/// `tidemark_watch_callback`); `drop_userdata` (may be NULL) is called once after the last
/// callback. If registration fails, `drop_userdata` is called before this returns, except
/// for a NULL `store`, `callback` or `watch_id_out`, where nothing was taken over.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_watch(
    store: *mut tidemark_store,
    selector: *const tidemark_selector,
    options: *const tidemark_watch_options,
    callback: tidemark_watch_callback,
    userdata: *mut c_void,
    drop_userdata: tidemark_drop_callback,
    watch_id_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        callback.ok_or_else(|| Failure::null("callback"))?;
        need(watch_id_out, "watch_id_out")?;
        let closure = Closure::new(callback, userdata, drop_userdata);
        let sel = selector_in(selector)?; // on error the closure drops: drop_userdata runs
        let id = s.watch(sel, &options_in(options), Box::new(move |events| deliver(&closure, events)))?;
        put_out(watch_id_out, id);
        Ok(())
    })
}

/// Ends a push watch. When it returns, the callback is not running and will not be called
/// again, and `drop_userdata` has run. Called from inside any watch callback (of this store or
/// another), it does not wait: a callback of the watch that is running at that moment (this
/// one, or one on another thread) finishes first, then `drop_userdata` runs; no new call
/// starts. This is what lets callbacks unwatch each other without deadlock. Unknown or ended ids:
/// `TIDEMARK_ERR_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_unwatch(
    store: *mut tidemark_store,
    watch_id: u64,
) -> tidemark_status {
    guard(|| Ok(try_ref(store, "store")?.unwatch(watch_id)?))
}

/// Grants a push watch opened with a non-zero `credit` `n` more events (flow control like
/// Erlang's `{active, N}`). Unknown or ended ids: `TIDEMARK_ERR_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_watch_credit(
    store: *mut tidemark_store,
    watch_id: u64,
    n: u64,
) -> tidemark_status {
    guard(|| Ok(try_ref(store, "store")?.add_credit(watch_id, n)?))
}

/// The number of push and pull watches that have not ended (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_watcher_count(store: *const tidemark_store) -> usize {
    guard_value(0, || get_ref(store).map_or(0, |s| s.watcher_count()))
}

/// A pull watch (opaque). Use it from one thread at a time; it stays valid after its store is
/// closed (then it reports CLOSED) and must be freed with `tidemark_watch_close`.
pub struct tidemark_watch {
    _private: [u8; 0],
}

impl Castable for tidemark_watch {
    type RustType = PullWatch;
}

/// Opens a pull watch over `selector` (NULL = all) with `options` (NULL = defaults; `credit`
/// is ignored) and writes it to `*out`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_watch_open(
    store: *mut tidemark_store,
    selector: *const tidemark_selector,
    options: *const tidemark_watch_options,
    out: *mut *mut tidemark_watch,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let watch = s.watch_pull(selector_in(selector)?, &options_in(options))?;
        put_out(out, to_boxed_ptr::<tidemark_watch>(watch));
        Ok(())
    })
}

/// Waits up to `timeout_ms` (0 = just check) for the next events and writes them to `*out`
/// (free with `tidemark_events_free`): whole commits in order, or one PROGRESS event, or one
/// terminal event. `TIDEMARK_ERR_TIMEOUT` when nothing came; `TIDEMARK_ERR_CLOSED` once the
/// terminal event has been returned. After the store was closed it returns every matching
/// event up to the revision current at close, then CLOSED (see `tidemark_store_close`). Blocks the calling thread; call from one thread at a time.
#[no_mangle]
pub unsafe extern "C" fn tidemark_watch_next(
    watch: *mut tidemark_watch,
    timeout_ms: u32,
    out: *mut *mut tidemark_events,
) -> tidemark_status {
    guard(|| {
        let watch = try_ref(watch, "watch")?;
        need(out, "out")?;
        let events = watch.next(Duration::from_millis(timeout_ms.into()))?;
        put_out(out, to_boxed_ptr::<tidemark_events>(EventList::from_vec(&events)));
        Ok(())
    })
}

/// The watch's id (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_watch_id(watch: *const tidemark_watch) -> u64 {
    guard_value(0, || get_ref(watch).map_or(0, |w| w.id()))
}

/// Ends and frees a pull watch. Must not race with `tidemark_watch_next` on the same watch.
/// NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_watch_close(watch: *mut tidemark_watch) {
    free_box(watch)
}
