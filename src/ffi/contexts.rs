//! Contexts: versioned JSON documents with exact deltas. JSON goes in as NUL-terminated
//! UTF-8 strings and comes out as strings the caller frees with `tidemark_string_free`.

use std::ffi::{c_char, c_void, CString};
use std::io::Write as _;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::error::Error;
use crate::ns::contexts::{Change, Context, Order, Outcome, Restored, Sync};
use crate::store::Store;

use super::closure::Closure;
use super::{
    bytes_in, guard, need, put_out, str_in, tidemark_drop_callback, tidemark_status, tidemark_store, try_ref,
    Failure,
};

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

/// Writes `{"delta":…,"document":…,"revision":R,"version":N}` to `out` (skipped when NULL),
/// the document straight from its stored JSON text.
unsafe fn written_out(out: *mut *mut c_char, w: &Outcome<'_>) {
    if out.is_null() {
        return;
    }
    let mut json = Vec::with_capacity(w.text.len() + 96);
    json.extend_from_slice(b"{\"delta\":");
    json.extend_from_slice(w.delta);
    json.extend_from_slice(b",\"document\":");
    json.extend_from_slice(w.text);
    write!(json, ",\"revision\":{},\"version\":{}}}", w.revision, w.version).expect("a Vec takes writes");
    // SAFETY: JSON text written by serde_json holds no NUL byte (it escapes U+0000), and the
    // stored text is such text; `out` is not NULL and writable for a pointer (header rule).
    unsafe { put_out(out, CString::from_vec_unchecked(json).into_raw()) };
}

/// `tidemark_store_context_set` and `_update`.
unsafe fn write(
    store: *mut tidemark_store,
    id: *const u8,
    id_len: usize,
    json: *const c_char,
    what: &str,
    merge: bool,
    result_out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        let id = bytes_in(id, id_len, "id")?;
        let value = json_in(json, what)?;
        let change = if merge { Change::Merge(&value) } else { Change::Replace(&value) };
        s.context_write(id, change, |w| {
            // SAFETY: `result_out` is NULL or writable for a pointer (header rule).
            unsafe { written_out(result_out, w) }
        })?;
        Ok(())
    })
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
    // SAFETY: the caller's arguments, as the header describes them.
    unsafe { write(store, id, id_len, document_json, "document_json", false, result_out) }
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
    // SAFETY: the caller's arguments, as the header describes them.
    unsafe { write(store, id, id_len, patch_json, "patch_json", true, result_out) }
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
    // SAFETY: the caller's arguments, as the header describes them.
    unsafe { context_out(store, id, id_len, out, true, Store::context_get) }
}

/// `tidemark_store_context_get` and `_export`: the context `read` gives, as JSON to `out`
/// (`required`: `out` must not be NULL).
unsafe fn context_out(
    store: *const tidemark_store,
    id: *const u8,
    id_len: usize,
    out: *mut *mut c_char,
    required: bool,
    read: fn(&Store, &[u8]) -> Result<Context, Error>,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        if required {
            need(out, "out")?;
        }
        let id = bytes_in(id, id_len, "id")?;
        string_out(out, &context_json(&read(s, id)?));
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

/// An exporter (`tidemark_store_context_set_exporter`): called with its userdata, the id, the
/// context as the JSON of `tidemark_store_context_get` (valid during the call only) and its
/// version. It returns (as a `uint32_t`) `TIDEMARK_OK` when it took the context; any other
/// value is a failure.
pub type tidemark_context_exporter = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        id: *const u8,
        id_len: usize,
        context_json: *const c_char,
        version: u64,
    ) -> u32,
>;

/// A provider (`tidemark_store_context_set_provider`): called with its userdata, the id of a
/// missing context and a reply that lives for the call. It answers the document with
/// `tidemark_context_reply_set` and returns (as a `uint32_t`) `TIDEMARK_OK`, or returns
/// `TIDEMARK_ERR_NOT_FOUND` when it has none; any other value (or `TIDEMARK_OK` without a
/// reply) is a failure.
pub type tidemark_context_provider = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        id: *const u8,
        id_len: usize,
        reply: *mut tidemark_context_reply,
    ) -> u32,
>;

/// A provider's answer, filled by `tidemark_context_reply_set` during the provider call.
pub struct tidemark_context_reply {
    answer: Option<Restored>,
}

/// The callbacks of `tidemark_context_exporter` and `tidemark_context_provider`.
type ExporterFn = unsafe extern "C" fn(*mut c_void, *const u8, usize, *const c_char, u64) -> u32;
type ProviderFn = unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut tidemark_context_reply) -> u32;

const OK: u32 = tidemark_status::TIDEMARK_OK as u32;
const NOT_FOUND: u32 = tidemark_status::TIDEMARK_ERR_NOT_FOUND as u32;

/// An exporter's or provider's closure, called from any thread, also from several at once.
struct Hook<F: Copy>(Closure<F>);

// SAFETY: the header makes the caller promise that the exporter and the provider may be
// called from any thread, concurrently, and their `drop_userdata` from any thread.
unsafe impl<F: Copy> std::marker::Sync for Hook<F> {}

impl<F: Copy> Hook<F> {
    /// The callback and its userdata (a hook is only installed with a callback).
    fn target(&self) -> (F, *mut c_void) {
        self.0.target().expect("a hook has a callback")
    }
}

/// Sets the store's exporter: `tidemark_store_context_export` hands it a context on demand, and
/// a cleanup pass (`tidemark_store_context_cleanup`, the cleanup thread) hands it every expired
/// context before deleting it (an expired context whose export failed is kept for a later
/// pass). NULL `callback` removes it. The store owns `userdata` from here on:
/// `drop_userdata` (may be NULL) is called once, when the exporter is replaced, the store is
/// freed, or before this call returns if it fails; never while the callback runs. The
/// callback runs on the thread that exports (the caller's or the cleanup thread), also on
/// several at once, outside every lock of the store: it may call into the store.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_set_exporter(
    store: *mut tidemark_store,
    callback: tidemark_context_exporter,
    userdata: *mut c_void,
    drop_userdata: tidemark_drop_callback,
) -> tidemark_status {
    let hook = Hook(Closure::new(callback, userdata, drop_userdata));
    // SAFETY: `store` is the caller's, as the header describes it.
    unsafe { set_hook(store, hook, Store::context_set_exporter, exporter) }
}

/// The exporter of the store, calling the C `hook`.
fn exporter(hook: Hook<ExporterFn>) -> crate::ns::contexts::Exporter {
    Arc::new(move |c: &Context| {
        let (f, data) = hook.target();
        let json = CString::new(context_json(c).to_string()).unwrap_or_default();
        // SAFETY: the caller's callback, called with its userdata and arguments valid for the call.
        match unsafe { f(data, c.id.as_ptr(), c.id.len(), json.as_ptr(), c.version) } {
            OK => Ok(()),
            st => Err(format!("the exporter returned status {st}")),
        }
    })
}

/// Installs what `make` builds from `hook` with `install`, or removes the hook when its
/// callback is NULL (`hook` is dropped then, and so is its userdata).
unsafe fn set_hook<F: Copy, H>(
    store: *mut tidemark_store,
    hook: Hook<F>,
    install: fn(&Store, Option<H>),
    make: impl FnOnce(Hook<F>) -> H,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        install(s, hook.0.target().is_some().then(|| make(hook)));
        Ok(())
    })
}

/// Sets the store's provider: when `tidemark_store_context_get`, `_update` or `_sync` finds the
/// context missing, it asks the provider; a document it answers is stored in one commit (see
/// `tidemark_store_context_restore` for its version) and the call goes on with it. A provider
/// without the document (`TIDEMARK_ERR_NOT_FOUND`) leaves get and sync `TIDEMARK_ERR_NOT_FOUND`
/// (update then starts from `{}`); a failing provider makes the call `TIDEMARK_ERR_IO`, with
/// the status it returned in the message, and nothing is written. NULL `callback` removes
/// it. Ownership of `userdata` as for `tidemark_store_context_set_exporter`. The callback runs
/// on the caller's thread, also on several at once, outside every lock of the store.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_set_provider(
    store: *mut tidemark_store,
    callback: tidemark_context_provider,
    userdata: *mut c_void,
    drop_userdata: tidemark_drop_callback,
) -> tidemark_status {
    let hook = Hook(Closure::new(callback, userdata, drop_userdata));
    // SAFETY: `store` is the caller's, as the header describes it.
    unsafe { set_hook(store, hook, Store::context_set_provider, provider) }
}

/// The provider of the store, calling the C `hook`.
fn provider(hook: Hook<ProviderFn>) -> crate::ns::contexts::Provider {
    Arc::new(move |id: &[u8]| {
        let (f, data) = hook.target();
        let mut reply = tidemark_context_reply { answer: None };
        // SAFETY: the caller's callback, called with its userdata; `reply` lives for the call.
        match (unsafe { f(data, id.as_ptr(), id.len(), &mut reply) }, reply.answer) {
            (OK, Some(answer)) => Ok(Some(answer)),
            (NOT_FOUND, _) => Ok(None),
            (OK, None) => Err("the provider returned TIDEMARK_OK without a reply".into()),
            (st, _) => Err(format!("the provider returned status {st}")),
        }
    })
}

/// The provider's answer: `document_json` (a JSON object) and the version it had where it
/// was kept (0 = unknown). Call it only from inside the provider call that got `reply`; a
/// second call replaces the first. Invalid JSON or a non-object is
/// `TIDEMARK_ERR_INVALID_ARGUMENT` and leaves the reply as it was.
#[no_mangle]
pub unsafe extern "C" fn tidemark_context_reply_set(
    reply: *mut tidemark_context_reply,
    document_json: *const c_char,
    version: u64,
) -> tidemark_status {
    guard(|| {
        if reply.is_null() {
            return Err(Failure::null("reply"));
        }
        let document = json_in(document_json, "document_json")?;
        if !document.is_object() {
            return Err(Error::InvalidArgument("a restored document must be a JSON object".into()).into());
        }
        // SAFETY: a non-NULL `reply` is the one the provider was called with, alive for the call.
        unsafe { (*reply).answer = Some(Restored { document, version }) };
        Ok(())
    })
}

/// Hands the context `id` to the exporter and writes it to `*out` (may be NULL) as in
/// `tidemark_store_context_get`; free it with `tidemark_string_free`. An absent context is
/// `TIDEMARK_ERR_NOT_FOUND` (the provider is not asked), no exporter
/// `TIDEMARK_ERR_INVALID_ARGUMENT`, a failing exporter `TIDEMARK_ERR_IO`. Called on the
/// calling thread; thread-safe.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_export(
    store: *const tidemark_store,
    id: *const u8,
    id_len: usize,
    out: *mut *mut c_char,
) -> tidemark_status {
    // SAFETY: the caller's arguments, as the header describes them.
    unsafe { context_out(store, id, id_len, out, false, Store::context_export) }
}

/// Stores `document_json` (a JSON object) as the context `id` if it does not exist, in one
/// commit with no delta, at the larger of `version` (0 = unknown) and the version a new write
/// of the id gets (1, or the one after a deleted context's). Writes the context as it is then
/// (the one stored, or the one another writer created first) to `*out` (may be NULL) as in
/// `tidemark_store_context_get`. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_context_restore(
    store: *mut tidemark_store,
    id: *const u8,
    id_len: usize,
    document_json: *const c_char,
    version: u64,
    out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        let id = bytes_in(id, id_len, "id")?;
        let doc = json_in(document_json, "document_json")?;
        string_out(out, &context_json(&s.context_restore(id, &doc, version)?));
        Ok(())
    })
}
