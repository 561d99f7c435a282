//! Trackers: lifecycle notifications of a feature, delivered to a C callback one at a time.

use std::ffi::{c_char, c_void};

use crate::ns::trackers::{Action, Notification};

use super::watch::options_in;
use super::{
    bytes_in, guard, need, put_out, str_in, tidemark_bytes, tidemark_drop_callback, tidemark_status,
    tidemark_store, tidemark_watch_options, try_ref, Closure, Failure,
};

/// The values of `tidemark_notification.action` and of `action` in `tidemark_store_notify`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tidemark_action {
    /// The instance's lifecycle key was written for the first time (key version 1).
    TIDEMARK_ACTION_CREATED = 1,
    TIDEMARK_ACTION_UPDATED = 2,
    TIDEMARK_ACTION_DELETED = 3,
    /// Terminal: history the tracker had not seen was compacted; `revision` is the earliest
    /// retained one, to track again from. Never passed to `tidemark_store_notify`.
    TIDEMARK_ACTION_COMPACTED = 4,
    /// Terminal: the store was closed. Never passed to `tidemark_store_notify`.
    TIDEMARK_ACTION_CLOSED = 5,
}

/// One notification. Every pointer is borrowed and valid only during the callback.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_notification {
    /// The feature name as given to `tidemark_store_track` (UTF-8, not NUL-terminated).
    pub feature: tidemark_bytes,
    /// A `tidemark_action`.
    pub action: u32,
    /// The instance: stream name, context id, key, or the id given to `tidemark_store_notify`
    /// (empty for terminal notices).
    pub id: tidemark_bytes,
    /// The revision of the commit that changed the instance (COMPACTED: the earliest retained
    /// revision; CLOSED: the last revision).
    pub revision: u64,
    /// JSON text, not NUL-terminated: `{"version": N}` for streams, contexts and keys, the
    /// snapshot's `{"source", "stream", "version"}`, `{}` for a built-in delete, the notified
    /// data for a user feature, `null` for terminal notices.
    pub data: tidemark_bytes,
}

/// Called with each notification in revision order, then, as the very last call, one terminal
/// notification (COMPACTED or CLOSED). Runs on a thread the store owns, never on two threads at
/// once for the same tracker; it may call any store function, including
/// `tidemark_store_untrack` of its own tracker and `tidemark_store_notify`.
pub type tidemark_tracker_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, notification: *const tidemark_notification)>;

type TrackerCallback = unsafe extern "C" fn(*mut c_void, *const tidemark_notification);

fn deliver(closure: &Closure<TrackerCallback>, n: &Notification) {
    let Some((callback, userdata)) = closure.target() else { return };
    let view = tidemark_notification {
        feature: tidemark_bytes::of(n.feature.as_bytes()),
        action: n.action as u32,
        id: tidemark_bytes::of(&n.id),
        revision: n.revision,
        data: tidemark_bytes::of(n.data.as_bytes()),
    };
    // SAFETY: the caller's callback and userdata, called as `tidemark_tracker_callback` says;
    // the view borrows `n`, which outlives the call.
    unsafe { callback(userdata, &view) }
}

/// A feature name argument: NUL-terminated UTF-8, not NULL.
unsafe fn feature_in<'a>(feature: *const c_char) -> Result<&'a str, Failure> {
    // SAFETY: the header's string rule.
    unsafe { str_in(feature, "feature") }?.ok_or_else(|| Failure::null("feature"))
}

/// Tracks `feature` and writes the tracker's id to `*tracker_id_out`. `feature` (NUL-terminated
/// UTF-8, 1 to `TIDEMARK_MAX_NAME` bytes) is `streams`, `snapshots`, `contexts`, `subscriptions`, `keys` (every
/// user key), `keys/<prefix>` (the user keys under a prefix), or any other name: a user
/// feature, notified with `tidemark_store_notify`. `options` (NULL = defaults) are a watch's:
/// `start_revision` replays the feature's history from that revision (below the earliest
/// retained: `TIDEMARK_ERR_COMPACTED`), `max_queue` bounds what is buffered for a slow
/// callback, `credit` (0 = unlimited) is flow control as for a watch: the tracker id is a
/// watch id, so `tidemark_store_watch_credit` grants more (one event is at most one
/// notification); `progress_interval_ms` is ignored. `callback` receives the
/// notifications (see `tidemark_tracker_callback`); `drop_userdata` (may be NULL) is called
/// once after the last callback. If this fails, `drop_userdata` is called before it returns,
/// except for a NULL `store`, `callback` or `tracker_id_out`, where nothing was taken over.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_track(
    store: *mut tidemark_store,
    feature: *const c_char,
    options: *const tidemark_watch_options,
    callback: tidemark_tracker_callback,
    userdata: *mut c_void,
    drop_userdata: tidemark_drop_callback,
    tracker_id_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        callback.ok_or_else(|| Failure::null("callback"))?;
        need(tracker_id_out, "tracker_id_out")?;
        let closure = Closure::new(callback, userdata, drop_userdata);
        // SAFETY: the header's string rule; on error the closure drops and `drop_userdata` runs.
        let feature = unsafe { feature_in(feature) }?;
        let id = s.track(feature, &options_in(options), Box::new(move |n| deliver(&closure, n)))?;
        put_out(tracker_id_out, id);
        Ok(())
    })
}

/// Ends a tracker, with `tidemark_store_unwatch`'s guarantees: when it returns the callback is
/// not running and will not be called again, and `drop_userdata` has run (from inside a
/// callback it does not wait, as for unwatch). Unknown or ended ids (after the terminal
/// notification): `TIDEMARK_ERR_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_untrack(
    store: *mut tidemark_store,
    tracker_id: u64,
) -> tidemark_status {
    guard(|| Ok(try_ref(store, "store")?.untrack(tracker_id)?))
}

/// Writes the ids of the trackers of `feature` that have not ended, ascending, to `ids` (up to
/// `capacity` of them; `ids` may be NULL when `capacity` is 0) and their total number to
/// `*count_out`; call again with a larger array when the count exceeds `capacity`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_tracker_members(
    store: *mut tidemark_store,
    feature: *const c_char,
    ids: *mut u64,
    capacity: usize,
    count_out: *mut usize,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(count_out, "count_out")?;
        if capacity > 0 {
            need(ids, "ids")?;
        }
        // SAFETY: the header's string rule.
        let members = s.tracker_members(unsafe { feature_in(feature) }?)?;
        for (i, id) in members.iter().take(capacity).enumerate() {
            // SAFETY: `ids` points to `capacity` writable u64s and `i < capacity`.
            unsafe { ids.add(i).write(*id) };
        }
        put_out(count_out, members.len());
        Ok(())
    })
}

/// Notifies the trackers of the user feature `feature` (NUL-terminated UTF-8; built-in names
/// are `TIDEMARK_ERR_INVALID_ARGUMENT`) that the instance `id` (1 to `TIDEMARK_MAX_NAME` bytes)
/// was created, updated or deleted (`action`: a `tidemark_action` from 1 to 3), with
/// `data_json` (NUL-terminated JSON text; NULL = `null`). One commit: durable under the store's
/// sync policy, ordered with every other commit, and replayed to trackers that start at or
/// before it until compaction removes it (the latest notification of each feature is current
/// state and always kept). Writes the commit's revision to `*revision_out` (may be NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_notify(
    store: *mut tidemark_store,
    feature: *const c_char,
    action: u32,
    id: *const u8,
    id_len: usize,
    data_json: *const c_char,
    revision_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        // SAFETY: the header's string and bytes rules.
        let (feature, id) = unsafe { (feature_in(feature)?, bytes_in(id, id_len, "id")?) };
        // SAFETY: the header's string rule.
        let data = unsafe { str_in(data_json, "data_json") }?.unwrap_or("null");
        let action = Action::from_u32(action)?;
        put_out(revision_out, s.notify(feature, action, id, data)?);
        Ok(())
    })
}
