//! Transient subscriptions: push (`tidemark_store_subscribe`, a callback on the store's
//! threads) and pull (`tidemark_store_subscribe_pull`, then `tidemark_sub_feed_next`), shaped
//! like key watches and sharing their options, unwatch and credit.

use std::ffi::c_void;
use std::time::Duration;

use crate::error::Error;
use crate::ns::subscriptions::{StreamSelector, Streams, SubscriptionEvent, SubscriptionFeed};

use super::streams::{event_view, List};
use super::watch::options_in;
use super::{
    bytes_in, free_box, get_ref, guard, guard_value, need, put_out, tidemark_bytes, tidemark_drop_callback,
    tidemark_event_kind, tidemark_status, tidemark_store, tidemark_stream_event, tidemark_watch_options,
    to_boxed_ptr, try_ref, Castable, Closure, Failure,
};

/// The values of `tidemark_stream_selector.kind`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tidemark_streams_kind {
    /// Every stream (`stream` is ignored).
    TIDEMARK_STREAMS_ALL = 0,
    /// The stream named `stream`.
    TIDEMARK_STREAMS_ONE = 1,
    /// Every stream whose name starts with `stream`.
    TIDEMARK_STREAMS_PREFIX = 2,
}

/// Which stream events a subscription delivers: the streams `kind` says (a
/// `tidemark_streams_kind`; a name or prefix in `stream`, 1 to `TIDEMARK_MAX_NAME` bytes),
/// of the type `event_type` only, or of any type when `event_type` is empty. Pass NULL for
/// every event of every stream.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_stream_selector {
    pub kind: u32,
    pub stream: tidemark_bytes,
    pub event_type: tidemark_bytes,
}

/// One delivery item of a subscription. `kind` is a `tidemark_event_kind`: PUT for a stream
/// event (in `event`), or PROGRESS, COMPACTED or CLOSED as for watches (then `event` is all
/// zero). `revision` is the event's revision, or the notice's (PROGRESS: seen up to;
/// COMPACTED: the earliest retained revision). Its bytes are borrowed like a watch event's.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_sub_event {
    pub kind: u32,
    pub revision: u64,
    pub event: tidemark_stream_event,
}

fn sub_event_view(e: &SubscriptionEvent) -> tidemark_sub_event {
    let none = tidemark_bytes { ptr: std::ptr::null(), len: 0 };
    let notice = |kind: tidemark_event_kind, revision| tidemark_sub_event {
        kind: kind as u32,
        revision,
        event: tidemark_stream_event {
            stream: none,
            id: none,
            event_type: none,
            data: none,
            metadata: none,
            version: 0,
            revision: 0,
            timestamp_ms: 0,
        },
    };
    match e {
        SubscriptionEvent::Event(se) => tidemark_sub_event {
            kind: tidemark_event_kind::TIDEMARK_EVENT_PUT as u32,
            revision: se.revision,
            event: event_view(se),
        },
        SubscriptionEvent::Progress(r) => notice(tidemark_event_kind::TIDEMARK_EVENT_PROGRESS, *r),
        SubscriptionEvent::Compacted(r) => notice(tidemark_event_kind::TIDEMARK_EVENT_COMPACTED, *r),
        SubscriptionEvent::Closed => notice(tidemark_event_kind::TIDEMARK_EVENT_CLOSED, 0),
    }
}

/// A NULL selector is every event of every stream.
pub(crate) unsafe fn stream_selector_in(
    sel: *const tidemark_stream_selector,
) -> Result<StreamSelector, Failure> {
    // SAFETY: a non-NULL selector points to a `tidemark_stream_selector` valid for the call.
    let Some(sel) = (unsafe { sel.as_ref() }) else {
        return Ok(StreamSelector::all());
    };
    // SAFETY: the selector's bytes follow the header's bytes rule.
    let name = unsafe { bytes_in(sel.stream.ptr, sel.stream.len, "selector stream") }?.to_vec();
    // SAFETY: as for `stream`.
    let event_type = unsafe { bytes_in(sel.event_type.ptr, sel.event_type.len, "selector event type") }?;
    let streams = match sel.kind {
        0 => Streams::All,
        1 => Streams::One(name),
        2 => Streams::Prefix(name),
        k => return Err(Error::InvalidArgument(format!("unknown stream selector kind {k}")).into()),
    };
    let sel = StreamSelector { streams, event_type: (!event_type.is_empty()).then(|| event_type.to_vec()) };
    sel.validate()?;
    Ok(sel)
}

/// Called like a `tidemark_watch_callback`, with subscription items: the stream events of
/// whole appends in revision order; or one PROGRESS item; or, as the very last call, one
/// terminal item (COMPACTED or CLOSED). Items and their bytes are valid only during the call.
/// Runs on a thread the store owns, never on two threads at once for one subscription, and
/// may call back into the store (also `tidemark_store_unwatch` of its own subscription).
pub type tidemark_sub_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, events: *const tidemark_sub_event, count: usize)>;

type SubCallback = unsafe extern "C" fn(*mut c_void, *const tidemark_sub_event, usize);

/// Registers a push subscription to the stream events `selector` matches (NULL = all), from
/// `options->start_revision` (0 = appended after the call, 1 = from the beginning, N = from
/// revision N; below the earliest retained: `TIDEMARK_ERR_COMPACTED`, beyond current + 1:
/// `TIDEMARK_ERR_FUTURE_REVISION`), with the other options as for watches (`max_queue` and
/// `credit` count subscription events), and writes its id to `*id_out`. The id is a watch
/// id: end the subscription with `tidemark_store_unwatch` and grant credit with
/// `tidemark_store_watch_credit`. `drop_userdata` (may be NULL) runs once after the last
/// callback; if registration fails it runs before this returns, except for a NULL `store`,
/// `callback` or `id_out`. A bad selector (unknown kind, empty or too long name or prefix) is
/// `TIDEMARK_ERR_INVALID_ARGUMENT` or `TIDEMARK_ERR_TOO_LARGE`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_subscribe(
    store: *mut tidemark_store,
    selector: *const tidemark_stream_selector,
    options: *const tidemark_watch_options,
    callback: tidemark_sub_callback,
    userdata: *mut c_void,
    drop_userdata: tidemark_drop_callback,
    id_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        callback.ok_or_else(|| Failure::null("callback"))?;
        need(id_out, "id_out")?;
        let closure: Closure<SubCallback> = Closure::new(callback, userdata, drop_userdata);
        let sel = stream_selector_in(selector)?; // on error the closure drops: drop_userdata runs
        let deliver = move |events: &[SubscriptionEvent]| {
            let Some((callback, userdata)) = closure.target() else { return };
            let views: Vec<tidemark_sub_event> = events.iter().map(sub_event_view).collect();
            // SAFETY: the caller's pair, called as `tidemark_sub_callback` says; the views
            // borrow `events`, which outlive the call.
            unsafe { callback(userdata, views.as_ptr(), views.len()) }
        };
        let id = s.subscribe(&sel, &options_in(options), Box::new(deliver))?;
        put_out(id_out, id);
        Ok(())
    })
}

/// A pull subscription (opaque). Use it from one thread at a time; it stays valid after its
/// store is closed (then it reports CLOSED) and must be freed with `tidemark_sub_feed_close`.
pub struct tidemark_sub_feed {
    _private: [u8; 0],
}

impl Castable for tidemark_sub_feed {
    type RustType = SubscriptionFeed;
}

/// A delivery of `tidemark_sub_feed_next` (opaque); free with `tidemark_sub_events_free`.
pub struct tidemark_sub_events {
    _private: [u8; 0],
}

impl Castable for tidemark_sub_events {
    type RustType = List<tidemark_sub_event, SubscriptionEvent>;
}

/// Opens a pull subscription over `selector` (NULL = all streams) with `options` (NULL =
/// defaults; `credit` is ignored; see `tidemark_store_subscribe`) and writes it to `*out`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_subscribe_pull(
    store: *mut tidemark_store,
    selector: *const tidemark_stream_selector,
    options: *const tidemark_watch_options,
    out: *mut *mut tidemark_sub_feed,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let feed = s.subscribe_pull(&stream_selector_in(selector)?, &options_in(options))?;
        put_out(out, to_boxed_ptr::<tidemark_sub_feed>(feed));
        Ok(())
    })
}

/// Waits up to `timeout_ms` (0 = just check) for the next delivery and writes it to `*out`
/// (free with `tidemark_sub_events_free`): the events of whole appends in order, or one
/// PROGRESS item, or one terminal item. `TIDEMARK_ERR_TIMEOUT` when nothing came;
/// `TIDEMARK_ERR_CLOSED` once the terminal item has been returned. Blocks the calling thread.
#[no_mangle]
pub unsafe extern "C" fn tidemark_sub_feed_next(
    feed: *mut tidemark_sub_feed,
    timeout_ms: u32,
    out: *mut *mut tidemark_sub_events,
) -> tidemark_status {
    guard(|| {
        let feed = try_ref(feed, "feed")?;
        need(out, "out")?;
        let events = feed.next(Duration::from_millis(timeout_ms.into()))?;
        put_out(out, to_boxed_ptr::<tidemark_sub_events>(List::new(events, sub_event_view, false)));
        Ok(())
    })
}

/// The pull subscription's watch id (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_sub_feed_id(feed: *const tidemark_sub_feed) -> u64 {
    guard_value(0, || get_ref(feed).map_or(0, |f| f.id()))
}

/// Ends and frees a pull subscription. Must not race with `tidemark_sub_feed_next` on it.
/// NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_sub_feed_close(feed: *mut tidemark_sub_feed) {
    free_box(feed)
}

/// The number of items in the delivery (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_sub_events_len(events: *const tidemark_sub_events) -> usize {
    guard_value(0, || get_ref(events).map_or(0, |l| l.views().len()))
}

/// The items as a contiguous array of `tidemark_sub_events_len` elements, owned by the
/// delivery and valid until `tidemark_sub_events_free` (NULL for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_sub_events_data(
    events: *const tidemark_sub_events,
) -> *const tidemark_sub_event {
    guard_value(std::ptr::null(), || get_ref(events).map_or(std::ptr::null(), |l| l.views().as_ptr()))
}

/// Frees a delivery and everything it points to. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_sub_events_free(events: *mut tidemark_sub_events) {
    free_box(events)
}
