//! Contexts: versioned JSON documents with exact deltas. JSON goes in as NUL-terminated
//! UTF-8 strings and comes out as strings the caller frees with `tidemark_string_free`.

use std::ffi::{c_char, CString};

use serde_json::{json, Value};

use crate::error::Error;
use crate::ns::contexts::{Context, Order, Sync, Written};

use super::{bytes_in, guard, need, put_out, str_in, tidemark_status, tidemark_store, try_ref, Failure};

/// The values of `order` in `tidemark_store_context_list` and `_deltas`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tidemark_order {
    /// Contexts by id, deltas by version, ascending.
    TIDEMARK_ORDER_ASC = 0,
    TIDEMARK_ORDER_DESC = 1,
}

/// What `tidemark_store_context_sync` answered (`*kind_out`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tidemark_sync_kind {
    /// The client is at the current version; no JSON.
    TIDEMARK_SYNC_NO_CHANGE = 0,
    /// The JSON is one RFC 6902 patch that turns the client's version into the current one.
    TIDEMARK_SYNC_DELTA = 1,
    /// The JSON is the whole current document.
    TIDEMARK_SYNC_FULL = 2,
}

/// `client_version` of `tidemark_store_context_sync` for a client that has nothing.
pub const TIDEMARK_SYNC_NONE: i64 = -1;

/// A JSON argument: a NUL-terminated UTF-8 string (NULL is an error).
unsafe fn json_in(s: *const c_char, what: &str) -> Result<Value, Failure> {
    // SAFETY: the header's string rule: a non-NULL string is NUL-terminated and valid for the call.
    let text = unsafe { str_in(s, what) }?.ok_or_else(|| Failure::null(what))?;
    serde_json::from_str(text)
        .map_err(|e| Error::InvalidArgument(format!("{what} is not valid JSON: {e}")).into())
}

/// Writes `v` as a new JSON string to `out` (skipped when NULL).
pub(crate) unsafe fn string_out(out: *mut *mut c_char, v: &Value) {
    if !out.is_null() {
        // SAFETY: a non-NULL `out` points to writable memory for a pointer.
        unsafe { put_out(out, CString::new(v.to_string()).unwrap_or_default().into_raw()) };
    }
}

fn id_json(id: &[u8]) -> (Value, String) {
    let hex = id.iter().map(|b| format!("{b:02x}")).collect();
    (std::str::from_utf8(id).map_or(Value::Null, Value::from), hex)
}

fn context_json(c: &Context) -> Value {
    let (id, id_hex) = id_json(&c.id);
    json!({
        "id": id, "id_hex": id_hex, "document": c.document, "version": c.version,
        "created_ms": c.created_ms, "updated_ms": c.updated_ms, "revision": c.revision,
    })
}

fn written_json(w: Written) -> Value {
    json!({"document": w.document, "version": w.version, "delta": w.delta, "revision": w.revision})
}

fn order_in(order: u32) -> Result<Order, Failure> {
    match order {
        0 => Ok(Order::Asc),
        1 => Ok(Order::Desc),
        o => Err(Error::InvalidArgument(format!("unknown order {o}")).into()),
    }
}

/// Replaces the context `id` (1 to `TIDEMARK_MAX_NAME` bytes) with `document_json`, a JSON
/// object. Writes to `*result_out` (may be NULL) the JSON
/// `{"document": …, "version": N, "delta": [RFC 6902 ops], "revision": R}`; free it with
/// `tidemark_string_free`. The first write of an id is version 1 (its delta is from `{}`);
/// a document equal to the current one writes nothing (same version, delta `[]`, revision 0).
/// Invalid JSON or a non-object is `TIDEMARK_ERR_INVALID_ARGUMENT`, a stored record over
/// `max_value_size` is `TIDEMARK_ERR_TOO_LARGE`; then nothing changed. Thread-safe:
/// concurrent writers of one id each get their own version.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_set(
    store: *mut tidemark_store,
    id: *const u8,
    id_len: usize,
    document_json: *const c_char,
    result_out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        let id = bytes_in(id, id_len, "id")?;
        let doc = json_in(document_json, "document_json")?;
        string_out(result_out, &written_json(s.context_set(id, &doc)?));
        Ok(())
    })
}

/// Applies `patch_json`, an RFC 7386 JSON Merge Patch (a JSON object: `null` removes a
/// field), to the context `id`; an absent context starts as `{}`. Result, errors and thread
/// rules as for `tidemark_store_context_set`: N concurrent updates of distinct fields give
/// version N with every field present.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_update(
    store: *mut tidemark_store,
    id: *const u8,
    id_len: usize,
    patch_json: *const c_char,
    result_out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        let id = bytes_in(id, id_len, "id")?;
        let patch = json_in(patch_json, "patch_json")?;
        string_out(result_out, &written_json(s.context_update(id, &patch)?));
        Ok(())
    })
}

/// Writes the context `id` to `*out` as the JSON `{"id": "<id>" (null when not UTF-8),
/// "id_hex": "<hex>", "document": {…}, "version": N, "created_ms": …, "updated_ms": …,
/// "revision": R}`; free it with `tidemark_string_free`. An absent context is
/// `TIDEMARK_ERR_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_get(
    store: *const tidemark_store,
    id: *const u8,
    id_len: usize,
    out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let id = bytes_in(id, id_len, "id")?;
        string_out(out, &context_json(&s.context_get(id)?));
        Ok(())
    })
}

/// Deletes the context `id` and all its deltas in one commit; writes the commit's first
/// revision to `*revision_out` (may be NULL). An absent context is `TIDEMARK_ERR_NOT_FOUND`.
/// A later write of the id is a new context whose version goes on from the deleted one's (so
/// a client of the deleted context gets FULL, never a delta of the new one).
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_delete(
    store: *mut tidemark_store,
    id: *const u8,
    id_len: usize,
    revision_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        let id = bytes_in(id, id_len, "id")?;
        put_out(revision_out, s.context_delete(id)?);
        Ok(())
    })
}

/// What a client at `client_version` (≤ 0, e.g. `TIDEMARK_SYNC_NONE`, = it has nothing)
/// needs to reach the current version of `id`. Writes the kind to `*kind_out`, the current
/// version to `*version_out`, and to `*json_out` (may be NULL): NULL for
/// `TIDEMARK_SYNC_NO_CHANGE`, the RFC 6902 patch for `TIDEMARK_SYNC_DELTA`, the document for
/// `TIDEMARK_SYNC_FULL`; free it with `tidemark_string_free`. `DELTA` is exact: applied to
/// the client's version it gives the current document. `FULL` whenever the retained deltas
/// cannot do that (client too old, deltas pruned or expired, unknown or future version).
/// An absent context is `TIDEMARK_ERR_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_sync(
    store: *const tidemark_store,
    id: *const u8,
    id_len: usize,
    client_version: i64,
    kind_out: *mut tidemark_sync_kind,
    version_out: *mut u64,
    json_out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(kind_out, "kind_out")?;
        need(version_out, "version_out")?;
        let id = bytes_in(id, id_len, "id")?;
        let (kind, version, json) = match s.context_sync(id, Some(client_version))? {
            Sync::NoChange { version } => (tidemark_sync_kind::TIDEMARK_SYNC_NO_CHANGE, version, None),
            Sync::Delta { patch, version } => (tidemark_sync_kind::TIDEMARK_SYNC_DELTA, version, Some(patch)),
            Sync::Full { document, version } => {
                (tidemark_sync_kind::TIDEMARK_SYNC_FULL, version, Some(document))
            }
        };
        put_out(kind_out, kind);
        put_out(version_out, version);
        match json {
            Some(v) => string_out(json_out, &v),
            None => put_out(json_out, std::ptr::null_mut()),
        }
        Ok(())
    })
}

/// Writes to `*out` a JSON array of contexts (each as in `tidemark_store_context_get`) in
/// id order (`TIDEMARK_ORDER_ASC`) or reverse (`TIDEMARK_ORDER_DESC`), skipping `offset`,
/// at most `limit` (0 = 1000). Free it with `tidemark_string_free`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_list(
    store: *const tidemark_store,
    limit: usize,
    offset: usize,
    order: u32,
    out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let list = s.context_list(limit, offset, order_in(order)?)?;
        string_out(out, &Value::Array(list.iter().map(context_json).collect()));
        Ok(())
    })
}

/// Writes to `*out` a JSON array of the retained deltas of `id`, each
/// `{"version": N, "timestamp_ms": …, "patch": [RFC 6902 ops from N − 1 to N]}`, by version
/// (`TIDEMARK_ORDER_ASC`) or reverse, skipping `offset`, at most `limit` (0 = all). Free it
/// with `tidemark_string_free`. An absent context is `TIDEMARK_ERR_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_deltas(
    store: *const tidemark_store,
    id: *const u8,
    id_len: usize,
    limit: usize,
    offset: usize,
    order: u32,
    out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let id = bytes_in(id, id_len, "id")?;
        let deltas = s.context_deltas(id, limit, offset, order_in(order)?)?;
        let view = |d: &crate::ns::contexts::Delta| json!({"version": d.version, "timestamp_ms": d.timestamp_ms, "patch": d.patch});
        string_out(out, &Value::Array(deltas.iter().map(view).collect()));
        Ok(())
    })
}

/// One cleanup pass by the store's clock: deletes contexts not updated for `context_ttl_ms`
/// (only with `context_auto_delete`) and deltas older than `delta_ttl_ms`, changing at most
/// `limit` contexts (0 = no limit). Writes how many contexts and deltas it deleted to
/// `*contexts_out` and `*deltas_out` (each may be NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_cleanup(
    store: *mut tidemark_store,
    limit: usize,
    contexts_out: *mut u64,
    deltas_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        let c = s.context_cleanup(limit)?;
        put_out(contexts_out, c.contexts);
        put_out(deltas_out, c.deltas);
        Ok(())
    })
}

/// Starts the store's cleanup thread: one `tidemark_store_context_cleanup(store, limit)` pass
/// every `interval_ms` (> 0, else `TIDEMARK_ERR_INVALID_ARGUMENT`) until
/// `tidemark_store_context_cleaner_stop` or `tidemark_store_close`. When it runs already, this
/// sets its interval and limit. Its state is `"context_cleaner"` in the status JSON.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_cleaner_start(
    store: *mut tidemark_store,
    interval_ms: u64,
    limit: usize,
) -> tidemark_status {
    guard(|| {
        try_ref(store, "store")?.context_cleaner_start(interval_ms, limit)?;
        Ok(())
    })
}

/// Changes the running cleanup thread's interval (the next pass is `interval_ms` from now);
/// `TIDEMARK_ERR_NOT_FOUND` when none runs.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_cleaner_set_interval(
    store: *mut tidemark_store,
    interval_ms: u64,
) -> tidemark_status {
    guard(|| {
        try_ref(store, "store")?.context_cleaner_set_interval(interval_ms)?;
        Ok(())
    })
}

/// Stops the cleanup thread and waits for it (a pass under way completes first); writes
/// whether one was running to `*was_running_out` (may be NULL). Stopping none is no error.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_cleaner_stop(
    store: *mut tidemark_store,
    was_running_out: *mut bool,
) -> tidemark_status {
    guard(|| {
        let was = try_ref(store, "store")?.context_cleaner_stop();
        put_out(was_running_out, was);
        Ok(())
    })
}
