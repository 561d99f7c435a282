//! lockstep over HTTP: the feed server and the follower (see docs/lockstep.md).

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use crate::lockstep::{FollowEvent, FollowOptions, Follower, Server, ServerOptions};

use super::{
    free_box, get_ref, guard, guard_value, need, put_out, str_in, tidemark_bytes, tidemark_drop_callback,
    tidemark_status, tidemark_store, to_boxed_ptr, try_ref, Castable, Closure, Failure,
};

/// A running lockstep server (opaque). Stop and free it with `tidemark_lockstep_server_stop`.
pub struct tidemark_lockstep_server {
    _private: [u8; 0],
}

impl Castable for tidemark_lockstep_server {
    type RustType = ServerHandle;
}

/// A running server and its address as C reads it.
pub(crate) struct ServerHandle {
    server: Server,
    addr: CString,
}

/// Serves the keys of `store` over HTTP as lockstep feeds and writes the server to `*out`.
///
/// `addr` is `"host:port"` (NULL = `"127.0.0.1:0"`; port 0 picks a free port, read it back
/// with `tidemark_lockstep_server_addr`). A non-loopback address needs `"allow_remote": true`.
/// `options_json` (NULL = defaults) may hold `writable` (bool: accept `PUT`/`DELETE
/// /<path>/<id>`), `token` (string: require `Authorization: Bearer <token>`), `heartbeat_ms`
/// (10000), `max_connections` (64 finite requests at once), `max_follows` (10000 follow
/// streams at once), `max_sockets` (16384 open connections), `threads` (2),
/// `tls_cert`/`tls_key` (PEM files: serve HTTPS), `max_header_bytes` (16384, at least 8192),
/// `max_body_bytes` (1 MiB), `allow_remote` (false), `max_queue` (1000), `idle_timeout_ms`
/// (30000), `request_timeout_ms` (10000), `write_timeout_ms` (30000).
///
/// `GET /<path>/<since>` or `GET /<path>/?since=N` answers the records of the keys under
/// `/<path>/` as NDJSON sorted by `updated_at` (the revision); `&follow=true` keeps the
/// response open with live changes (chunked) and heartbeats. Serving runs on threads the
/// server owns. The server holds its own reference to the store: closing the store first is
/// safe (requests then fail with 503 and follow responses end); stop the server to free it.
#[no_mangle]
pub unsafe extern "C" fn tidemark_lockstep_serve(
    store: *mut tidemark_store,
    addr: *const c_char,
    options_json: *const c_char,
    out: *mut *mut tidemark_lockstep_server,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let addr = str_in(addr, "addr")?.unwrap_or("127.0.0.1:0");
        let opts = ServerOptions::from_json(str_in(options_json, "options_json")?)?;
        let server = Server::start_shared(Arc::new(Box::new(s.handle())), addr, opts)?;
        let addr = CString::new(server.addr().to_string()).unwrap_or_default();
        put_out(out, to_boxed_ptr::<tidemark_lockstep_server>(ServerHandle { server, addr }));
        Ok(())
    })
}

/// The address the server listens on, e.g. `"127.0.0.1:41234"` (NULL for NULL). Owned by
/// the server; valid until it is stopped.
#[no_mangle]
pub unsafe extern "C" fn tidemark_lockstep_server_addr(
    server: *const tidemark_lockstep_server,
) -> *const c_char {
    guard_value(std::ptr::null(), || get_ref(server).map_or(std::ptr::null(), |s| s.addr.as_ptr()))
}

/// The port the server listens on (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_lockstep_server_port(server: *const tidemark_lockstep_server) -> u16 {
    guard_value(0, || get_ref(server).map_or(0, |s| s.server.addr().port()))
}

/// The server's counters as a JSON object (`addr`, `connections`, `accepted_connections`, `following`, `requests`,
/// `records_served`, `refused_connections`, `writable`, `auth`, `heartbeat_ms`), written to
/// `*out`; free it with `tidemark_string_free`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_lockstep_server_status_json(
    server: *const tidemark_lockstep_server,
    out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let server = try_ref(server, "server")?;
        need(out, "out")?;
        let json = server.server.status().to_string();
        put_out(out, CString::new(json).unwrap_or_default().into_raw());
        Ok(())
    })
}

/// Stops the server and frees it: no new connections, every follow response ends with its
/// final chunk, and every serving thread has ended when this returns (clients that read
/// nothing are cut after about one second). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_lockstep_server_stop(server: *mut tidemark_lockstep_server) {
    free_box(server)
}

/// The values of `tidemark_lockstep_event.kind`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tidemark_lockstep_event_kind {
    /// A response with status 200 started; `message` is the request target.
    TIDEMARK_LOCKSTEP_CONNECTED = 1,
    /// Records were applied in one local commit: `records` read, `writes` local puts and
    /// deletes (repeats write nothing), `revision` the local revision of the commit's first
    /// write (0 = nothing written), `cursor` the cursor after it.
    TIDEMARK_LOCKSTEP_APPLIED = 2,
    /// A line that is not a record was skipped: `message` says why, `line` holds it (at most
    /// 1024 bytes).
    TIDEMARK_LOCKSTEP_MALFORMED = 3,
    /// A connection or HTTP failure: `message`; retried after `retry_ms`.
    TIDEMARK_LOCKSTEP_ERROR = 4,
    /// A full resync from 0 begins (410 Gone, or the first sync): `message` says why.
    TIDEMARK_LOCKSTEP_RESYNC_STARTED = 5,
    /// The resync is complete: `records` local records the server no longer has were deleted.
    TIDEMARK_LOCKSTEP_RESYNC_DONE = 6,
}

/// What a follower reports. Every pointer is borrowed for the duration of the callback.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_lockstep_event {
    /// `tidemark_lockstep_event_kind`.
    pub kind: u32,
    pub records: u64,
    pub writes: u64,
    pub revision: u64,
    pub retry_ms: u64,
    /// The cursor as JSON text (a number, a string, or `null` before the first record).
    pub cursor: tidemark_bytes,
    pub message: tidemark_bytes,
    pub line: tidemark_bytes,
}

/// Called on the follower's own thread, one call at a time, never after
/// `tidemark_lockstep_follower_stop` returned. It may read and write the store and call
/// `tidemark_lockstep_follower_status_json`; it may call `tidemark_lockstep_follower_stop`
/// of its own follower (the follower then ends after the callback returns).
pub type tidemark_lockstep_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, event: *const tidemark_lockstep_event)>;

/// A running follower (opaque). Stop and free it with `tidemark_lockstep_follower_stop`.
pub struct tidemark_lockstep_follower {
    _private: [u8; 0],
}

impl Castable for tidemark_lockstep_follower {
    type RustType = Follower;
}

type LockstepCallback = unsafe extern "C" fn(*mut c_void, *const tidemark_lockstep_event);

/// Hands a follower event to the C callback (if one was given) as a `tidemark_lockstep_event`
/// borrowing `ev`.
fn report(closure: &Closure<LockstepCallback>, ev: &FollowEvent<'_>) {
    let Some((cb, userdata)) = closure.target() else { return };
    let empty = tidemark_bytes::of(&[]);
    let mut e = tidemark_lockstep_event {
        kind: 0,
        records: 0,
        writes: 0,
        revision: 0,
        retry_ms: 0,
        cursor: empty,
        message: empty,
        line: empty,
    };
    let cursor_text;
    match ev {
        FollowEvent::Connected { url } => {
            e.kind = tidemark_lockstep_event_kind::TIDEMARK_LOCKSTEP_CONNECTED as u32;
            e.message = tidemark_bytes::of(url.as_bytes());
        }
        FollowEvent::Applied { records, writes, revision, cursor } => {
            e.kind = tidemark_lockstep_event_kind::TIDEMARK_LOCKSTEP_APPLIED as u32;
            e.records = *records;
            e.writes = *writes;
            e.revision = *revision;
            cursor_text = cursor.to_string();
            e.cursor = tidemark_bytes::of(cursor_text.as_bytes());
        }
        FollowEvent::Malformed { line, reason } => {
            e.kind = tidemark_lockstep_event_kind::TIDEMARK_LOCKSTEP_MALFORMED as u32;
            e.message = tidemark_bytes::of(reason.as_bytes());
            e.line = tidemark_bytes::of(line);
        }
        FollowEvent::Error { message, retry_ms } => {
            e.kind = tidemark_lockstep_event_kind::TIDEMARK_LOCKSTEP_ERROR as u32;
            e.message = tidemark_bytes::of(message.as_bytes());
            e.retry_ms = *retry_ms;
        }
        FollowEvent::ResyncStarted { reason } => {
            e.kind = tidemark_lockstep_event_kind::TIDEMARK_LOCKSTEP_RESYNC_STARTED as u32;
            e.message = tidemark_bytes::of(reason.as_bytes());
        }
        FollowEvent::ResyncDone { deleted, cursor } => {
            e.kind = tidemark_lockstep_event_kind::TIDEMARK_LOCKSTEP_RESYNC_DONE as u32;
            e.records = *deleted;
            cursor_text = cursor.to_string();
            e.cursor = tidemark_bytes::of(cursor_text.as_bytes());
        }
    }
    // SAFETY: the callback and userdata are the caller's pair, called as the header's
    // `tidemark_lockstep_callback` says; the event's bytes stay valid for the call.
    unsafe { cb(userdata, &e) }
}

/// Mirrors the lockstep endpoint `url` (e.g. `"http://127.0.0.1:4567/servers/"`) into `store`
/// (or an `https://` one) and writes the follower to `*out`.
///
/// A record with a non-null `deleted_at` deletes `prefix + id` (a missing key is fine); any
/// other record is put there as the JSON line received. The cursor (greatest order value
/// seen) is committed in the same atomic batch as the records, under the reserved key
/// `"\0l/" + prefix` (or `cursor_key`, a user key), so a restarted follower resumes exactly
/// where its data is. `options_json` (NULL = defaults) may hold `prefix` (default: the URL's path),
/// `id_field` ("id"), `order_by` ("updated_at"), `token`, `follow` (true), `cursor_param`,
/// `cursor_key`, `poll_ms` (1000), `connect_timeout_ms` (2000), `idle_timeout_ms` (60000,
/// 0 = never), `backoff_initial_ms` (100), `backoff_max_ms` (30000), `batch_records` (1000),
/// `max_line_bytes` (16 MiB), `adopt` (false: a first sync into a prefix that already holds
/// keys is refused with TIDEMARK_ERR_INVALID_ARGUMENT), `allow_root_prefix` (false: the prefix
/// "/" is refused), `tls_ca_file` (PEM roots trusted for https://; default the Mozilla roots).
///
/// `callback` (may be NULL) receives `tidemark_lockstep_event`s (see
/// `tidemark_lockstep_callback`); `drop_userdata` (may be NULL) runs exactly once after the
/// last callback, when the follower stops, or before this returns if it fails (except for a
/// NULL `store`, `url` or `out`, where nothing was taken over). The follower holds its own
/// reference to the store: closing the store first is safe (the follower then reports one
/// ERROR event, with `retry_ms` 0, and ends: its status says "stopped"); stop it to free it.
#[no_mangle]
pub unsafe extern "C" fn tidemark_lockstep_follow(
    store: *mut tidemark_store,
    url: *const c_char,
    options_json: *const c_char,
    callback: tidemark_lockstep_callback,
    userdata: *mut c_void,
    drop_userdata: tidemark_drop_callback,
    out: *mut *mut tidemark_lockstep_follower,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(url, "url")?;
        need(out, "out")?;
        let closure = Closure::new(callback, userdata, drop_userdata);
        let url = str_in(url, "url")?.unwrap_or_default();
        let opts = FollowOptions::from_json(str_in(options_json, "options_json")?)?;
        let cb: crate::lockstep::follower::FollowCallback = Box::new(move |ev| report(&closure, ev));
        let follower = Follower::start_shared(Arc::new(Box::new(s.handle())), url, opts, Some(cb))
            .map_err(Failure::from)?;
        put_out(out, to_boxed_ptr::<tidemark_lockstep_follower>(follower));
        Ok(())
    })
}

/// The follower's state as a JSON object (`state`, `cursor`, `resyncing`, `connected`,
/// `records`, `writes`, `batches`, `malformed_lines`, `errors`, `connections`, `resyncs`,
/// `heartbeats`, `local_revision`, `last_error`, `last_malformed`, `url`, `prefix`), written
/// to `*out`; free it with `tidemark_string_free`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_lockstep_follower_status_json(
    follower: *const tidemark_lockstep_follower,
    out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let follower = try_ref(follower, "follower")?;
        need(out, "out")?;
        let json = follower.status().to_string();
        put_out(out, CString::new(json).unwrap_or_default().into_raw());
        Ok(())
    })
}

/// Stops the follower and frees it. When it returns, its thread has ended, the callback will
/// not be called again and `drop_userdata` has run; called from inside the follower's own
/// callback, it returns at once and the follower ends (and drops) right after that callback.
/// Takes at most about `connect_timeout_ms` (a connection attempt in flight). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_lockstep_follower_stop(follower: *mut tidemark_lockstep_follower) {
    free_box(follower)
}
