//! The store: open/close, key reads and writes, `changes`, `range` and compaction.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use crate::kv::Entry;
use crate::store::Store;

use super::{
    bytes_in, free_box, get_ref, guard, guard_value, need, put_out, selector_in, str_in, tidemark_batch,
    tidemark_bytes, tidemark_drop_callback, tidemark_events, tidemark_selector, tidemark_status,
    to_boxed_ptr, try_ref, Castable, Closure, EventList,
};

/// A store (opaque). Every function taking a store is thread-safe, except
/// `tidemark_store_close`, which must be the last call on it.
pub struct tidemark_store {
    _private: [u8; 0],
}

impl Castable for tidemark_store {
    type RustType = Store;
}

/// The result of `tidemark_store_get` (opaque): a copy of one key's state, owned by the
/// caller and freed with `tidemark_entry_free`. Independent of the store once returned.
pub struct tidemark_entry {
    _private: [u8; 0],
}

impl Castable for tidemark_entry {
    type RustType = Entry;
}

/// Opens a store and writes it to `*out`.
/// `path` NULL or "" opens an in-memory store; `redis://host:port/db?store=NAME` opens the
/// store NAME in Redis, shared by every process that opens the same URL (a bad URL or a
/// missing `store=` is `TIDEMARK_ERR_INVALID_ARGUMENT`, an unreachable server
/// `TIDEMARK_ERR_IO`; see docs/redis.md); otherwise it names a directory holding a
/// durable store. `options_json` is NULL or a JSON object such as
/// `{"dispatch_threads": 2, "max_key_size": 1024, "max_value_size": 1048576}`; unknown keys
/// and bad values are `TIDEMARK_ERR_INVALID_ARGUMENT`. Close the store with
/// `tidemark_store_close`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_open(
    path: *const c_char,
    options_json: *const c_char,
    out: *mut *mut tidemark_store,
) -> tidemark_status {
    guard(|| {
        need(out, "out")?;
        let path = str_in(path, "path")?;
        let options = str_in(options_json, "options_json")?;
        let store = Store::open(path, options)?;
        put_out(out, to_boxed_ptr::<tidemark_store>(store));
        Ok(())
    })
}

/// Closes and frees the store. Every watch ends first, and first gets every event that
/// matches it up to the revision current at close, including those it had not yet read from
/// the log (a watch still replaying, or one that fell behind its `max_queue`: that backlog is
/// read into memory before the store closes), then the CLOSED event, whose revision is that
/// revision. So a consumer that persists the revision of each event it handled can resume
/// from the next one after reopening, without a gap. A pull watch then returns
/// `TIDEMARK_ERR_CLOSED` and must still be freed with `tidemark_watch_close`. A push watch
/// gets those events and the final CLOSED callback before this returns, then its
/// `drop_userdata`; one out of credit (`tidemark_store_watch_credit`) gets only the CLOSED
/// callback. Waits for the callbacks to return, so it must not be called while another
/// thread still uses the store. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_close(store: *mut tidemark_store) {
    free_box(store)
}

/// The revision of the last commit (0 for a new store, and for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_current_revision(store: *const tidemark_store) -> u64 {
    guard_value(0, || get_ref(store).map_or(0, |s| s.current_revision()))
}

/// The first revision still in the log (1 for a new store; current + 1 when everything was
/// compacted; 0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_earliest_revision(store: *const tidemark_store) -> u64 {
    guard_value(0, || get_ref(store).map_or(0, |s| s.earliest_revision()))
}

/// Sets `key` to `value` (both copied). Writes the new revision to `*revision_out` (may be
/// NULL). An empty key is `TIDEMARK_ERR_INVALID_ARGUMENT`; sizes over the store's limits are
/// `TIDEMARK_ERR_TOO_LARGE`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_put(
    store: *mut tidemark_store,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    revision_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        let key = bytes_in(key, key_len, "key")?;
        let value = bytes_in(value, value_len, "value")?;
        put_out(revision_out, s.put(key, value)?);
        Ok(())
    })
}

/// Like `tidemark_store_put`, but only if the key's mod_revision is `expected_mod_revision`
/// (0 = the key must not exist); otherwise nothing changes and the status is
/// `TIDEMARK_ERR_CONFLICT`, with the current mod_revision in `tidemark_last_error_revision()`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_put_if(
    store: *mut tidemark_store,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    expected_mod_revision: u64,
    revision_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        let key = bytes_in(key, key_len, "key")?;
        let value = bytes_in(value, value_len, "value")?;
        put_out(revision_out, s.put_if(key, value, expected_mod_revision)?);
        Ok(())
    })
}

/// Deletes `key`, writing the delete's revision to `*revision_out` (may be NULL). A missing
/// key is `TIDEMARK_ERR_NOT_FOUND` and takes no revision.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_delete(
    store: *mut tidemark_store,
    key: *const u8,
    key_len: usize,
    revision_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        put_out(revision_out, s.delete(bytes_in(key, key_len, "key")?)?);
        Ok(())
    })
}

/// Reads `key` into a new entry at `*out` (free it with `tidemark_entry_free`). A missing
/// key is `TIDEMARK_ERR_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_get(
    store: *const tidemark_store,
    key: *const u8,
    key_len: usize,
    out: *mut *mut tidemark_entry,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let entry = s.get(bytes_in(key, key_len, "key")?)?;
        put_out(out, to_boxed_ptr::<tidemark_entry>(entry));
        Ok(())
    })
}

fn entry_field<T: Copy>(entry: *const tidemark_entry, fallback: T, f: impl FnOnce(&Entry) -> T) -> T {
    // SAFETY: the caller passes an entry from `tidemark_store_get` that is not freed yet.
    guard_value(fallback, || unsafe { get_ref(entry) }.map_or(fallback, f))
}

/// The entry's value, owned by the entry (valid until `tidemark_entry_free`).
#[no_mangle]
pub unsafe extern "C" fn tidemark_entry_value(entry: *const tidemark_entry) -> tidemark_bytes {
    entry_field(entry, tidemark_bytes { ptr: std::ptr::null(), len: 0 }, |e| tidemark_bytes::of(&e.value))
}

/// The revision that created the key (since its last delete).
#[no_mangle]
pub unsafe extern "C" fn tidemark_entry_create_revision(entry: *const tidemark_entry) -> u64 {
    entry_field(entry, 0, |e| e.create_revision)
}

/// The revision of the key's last change.
#[no_mangle]
pub unsafe extern "C" fn tidemark_entry_mod_revision(entry: *const tidemark_entry) -> u64 {
    entry_field(entry, 0, |e| e.mod_revision)
}

/// The key's version: 1 on creation, +1 per put.
#[no_mangle]
pub unsafe extern "C" fn tidemark_entry_version(entry: *const tidemark_entry) -> u64 {
    entry_field(entry, 0, |e| e.version)
}

/// Frees an entry. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_entry_free(entry: *mut tidemark_entry) {
    free_box(entry)
}

/// Applies a batch atomically: its writes get consecutive revisions, all or nothing, and a
/// watch receives them in one delivery. Writes the first write's revision to
/// `*first_revision_out` (may be NULL; 0 when the batch held only requirements). A failed
/// requirement is `TIDEMARK_ERR_CONFLICT`, a delete of a missing key
/// `TIDEMARK_ERR_NOT_FOUND`; either way nothing is applied. The batch stays the caller's.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_commit(
    store: *mut tidemark_store,
    batch: *const tidemark_batch,
    first_revision_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        let batch = try_ref(batch, "batch")?;
        put_out(first_revision_out, s.commit(&batch.ops())?);
        Ok(())
    })
}

/// The current keys matching `selector` (NULL = all), in byte order, as PUT events (revision
/// = mod_revision), at most `limit` of them (0 = no limit); `tidemark_events_has_more` tells
/// whether keys were left out. Free `*out` with `tidemark_events_free`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_range(
    store: *const tidemark_store,
    selector: *const tidemark_selector,
    limit: usize,
    out: *mut *mut tidemark_events,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let sel = selector_in(selector)?;
        let events = EventList::collect(|visit| s.range_visit(&sel, limit, visit).map(|more| (more, 0)))?;
        put_out(out, to_boxed_ptr::<tidemark_events>(events));
        Ok(())
    })
}

/// The changes matching `selector` (NULL = all) with revision in `[from_revision,
/// to_revision]` (`to_revision` 0 = current; from 0 is read as 1), ascending, at most about
/// `limit` events (0 = 1000; a commit is never split, so a batch may end past the limit).
/// `tidemark_events_has_more` / `_next_revision` tell where to continue. `from` below the
/// earliest retained revision is `TIDEMARK_ERR_COMPACTED` (the earliest is in the message and
/// in `tidemark_last_error_revision()`); beyond current + 1, `TIDEMARK_ERR_FUTURE_REVISION`.
/// Free `*out` with `tidemark_events_free`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_changes(
    store: *const tidemark_store,
    selector: *const tidemark_selector,
    from_revision: u64,
    to_revision: u64,
    limit: usize,
    out: *mut *mut tidemark_events,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let sel = selector_in(selector)?;
        let events =
            EventList::collect(|visit| s.changes_visit(&sel, from_revision, to_revision, limit, visit))?;
        put_out(out, to_boxed_ptr::<tidemark_events>(events));
        Ok(())
    })
}

/// Drops log entries below `keep_revision`; the current state of every key is kept. Writes
/// the number of entries dropped to `*removed_out` (may be NULL). `keep_revision` beyond
/// current + 1 is `TIDEMARK_ERR_FUTURE_REVISION`. A watch that had not yet read a dropped
/// event it matches ends with a `TIDEMARK_EVENT_COMPACTED` event.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_compact(
    store: *mut tidemark_store,
    keep_revision: u64,
    removed_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        put_out(removed_out, s.compact(keep_revision)?);
        Ok(())
    })
}

/// What opening a directory store cut off the end of its log (a torn tail: the commit being
/// written when the process or machine stopped; see docs/durability.md, "Tail repairs").
/// Writes the bytes cut, the commits cut, the revisions cut (as far as the damaged bytes tell)
/// and the first revision cut to the out-params that are not NULL; all 0 when nothing was cut
/// (and for in-memory stores). A read-only open reports what it ignored. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_tail_repair(
    store: *const tidemark_store,
    bytes_out: *mut u64,
    commits_out: *mut u64,
    revisions_out: *mut u64,
    first_revision_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let r = try_ref(store, "store")?.tail_repair()?.unwrap_or_default();
        put_out(bytes_out, r.bytes);
        put_out(commits_out, r.commits);
        put_out(revisions_out, r.revisions);
        put_out(first_revision_out, r.first_revision);
        Ok(())
    })
}

/// The store's state as a JSON object (`revision`, `earliest_revision`, `keys`, `watchers`,
/// `durable`, ...), written to `*out`; free it with `tidemark_string_free`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_status_json(
    store: *const tidemark_store,
    out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let json = s.status()?.to_string();
        put_out(out, CString::new(json).unwrap_or_default().into_raw());
        Ok(())
    })
}

/// The store's metrics in the Prometheus text exposition format (version 0.0.4; see
/// docs/operations.md for the families), written to `*out`; free it with
/// `tidemark_string_free`. Any thread; it takes the store's read lock briefly and scans the
/// persistent subscriptions' matching events for their lag.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_metrics_text(
    store: *const tidemark_store,
    out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let text = s.metrics_text()?;
        put_out(out, CString::new(text).unwrap_or_default().into_raw());
        Ok(())
    })
}

/// The same metrics as `tidemark_store_metrics_text`, as one JSON object by family name: an
/// unlabeled number is a number, a histogram `{"count", "sum", "buckets": {"<le>": n}}`, a
/// labeled family a list of `{"labels": {...}, "value": v}`. Free it with
/// `tidemark_string_free`. Any thread.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_metrics_json(
    store: *const tidemark_store,
    out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let json = s.metrics_json()?.to_string();
        put_out(out, CString::new(json).unwrap_or_default().into_raw());
        Ok(())
    })
}

/// A store clock: returns the time in ms since the Unix epoch. It may be called from any
/// thread, also from several at once, while `tidemark_store_set_clock` has it installed.
pub type tidemark_clock_callback = Option<unsafe extern "C" fn(userdata: *mut c_void) -> u64>;

/// The clock callback of a store: a `Closure` the store calls from any thread.
struct ClockClosure(Closure<unsafe extern "C" fn(*mut c_void) -> u64>);

// SAFETY: the header makes the caller promise that the clock callback may be called from any
// thread, concurrently, and `drop_userdata` from any thread.
unsafe impl Sync for ClockClosure {}

impl ClockClosure {
    fn now(&self) -> u64 {
        let (f, data) = self.0.target().expect("a clock closure has a callback");
        // SAFETY: the caller's callback, called with its userdata as the header says.
        unsafe { f(data) }
    }
}

/// Replaces the store's clock, from which every timestamp and TTL of the store's features
/// (stream events, snapshots, contexts) is taken, with `callback(userdata)` (ms since the
/// epoch); NULL `callback` goes back to the system clock. The store owns `userdata` from here
/// on: `drop_userdata` (may be NULL) is called once, when the clock is replaced again, when the
/// store is freed, or before this call returns if it fails; never while the callback runs. The callback may be called
/// from any thread, also from several at once, and must not call into the store.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_set_clock(
    store: *mut tidemark_store,
    callback: tidemark_clock_callback,
    userdata: *mut c_void,
    drop_userdata: tidemark_drop_callback,
) -> tidemark_status {
    let closure = ClockClosure(Closure::new(callback, userdata, drop_userdata));
    guard(|| {
        let s = try_ref(store, "store")?;
        if closure.0.target().is_none() {
            s.use_system_clock();
            return Ok(());
        }
        s.set_clock(Arc::new(move || closure.now()));
        Ok(())
    })
}
