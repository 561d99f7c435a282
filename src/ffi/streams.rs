//! Streams and snapshots: append, read, versions, listing, deletion; snapshot record/read/
//! delete/list. Results are owned lists (`tidemark_stream_events`, `tidemark_stream_list`,
//! `tidemark_snapshots`) whose elements borrow from the list.

use crate::error::Error;
use crate::ns::snapshots::Snapshot;
use crate::ns::streams::{Direction, ExpectedVersion, NewEvent, StreamEvent};

use super::{
    bytes_in, free_box, get_ref, guard, guard_value, need, put_out, tidemark_bytes, tidemark_status,
    tidemark_store, to_boxed_ptr, try_ref, Castable,
};

/// `expected_version` of `tidemark_store_append`: whatever the stream's state.
pub const TIDEMARK_EXPECT_ANY: i64 = -2;
/// `expected_version`: the stream must not exist (its version is −1).
pub const TIDEMARK_EXPECT_NO_STREAM: i64 = -1;
/// `expected_version`: the stream must exist (version ≥ 0).
pub const TIDEMARK_EXPECT_EXISTS: i64 = -4;
/// The longest stream name or snapshot source, in bytes.
pub const TIDEMARK_MAX_NAME: usize = 1024;
const _: () = assert!(TIDEMARK_MAX_NAME == crate::ns::streams::MAX_NAME);
/// `from_version` of a backward `tidemark_store_read_stream`: start at the last version.
pub const TIDEMARK_READ_FROM_END: i64 = -1;

/// The values of `direction` in `tidemark_store_read_stream`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tidemark_direction {
    TIDEMARK_FORWARD = 0,
    TIDEMARK_BACKWARD = 1,
}

/// An event of a stream. As input to `tidemark_store_append`: `id` is 16 bytes, or empty to
/// have one generated; `event_type`, `data` and `metadata` are copied; `stream`, `version`,
/// `revision` and `timestamp_ms` are ignored. As output (in a `tidemark_stream_events`
/// list) every field is set and the bytes are borrowed from the list.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_stream_event {
    pub stream: tidemark_bytes,
    pub id: tidemark_bytes,
    pub event_type: tidemark_bytes,
    pub data: tidemark_bytes,
    pub metadata: tidemark_bytes,
    /// The event's version in its stream (0-based).
    pub version: u64,
    /// The event's position in the store's log.
    pub revision: u64,
    /// When it was appended, ms since the epoch, by the store's clock.
    pub timestamp_ms: u64,
}

/// What `tidemark_store_append` wrote (or, for an idempotent retry, had written).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_append_result {
    /// The version of the append's first event.
    pub first_version: u64,
    /// The stream's version after the append (the version of its last event).
    pub version: u64,
    /// The revision of the append's first event; the others follow consecutively.
    pub first_revision: u64,
}

/// One entry of `tidemark_store_list_streams`: a stream's name and its version.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_stream_info {
    pub name: tidemark_bytes,
    pub version: i64,
}

/// A snapshot; its bytes are borrowed from the `tidemark_snapshots` list that holds it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_snapshot {
    pub source: tidemark_bytes,
    pub stream: tidemark_bytes,
    pub version: u64,
    /// The revision of the commit that recorded it.
    pub revision: u64,
    pub timestamp_ms: u64,
    pub data: tidemark_bytes,
}

/// An owned list of C views and the Rust values they borrow from (the values' bytes are
/// shared buffers that never move, so the views stay valid while the list lives).
pub struct List<V, T> {
    views: Vec<V>,
    _owner: Vec<T>,
    has_more: bool,
}

impl<V, T> List<V, T> {
    pub(crate) fn new(owner: Vec<T>, view: impl Fn(&T) -> V, has_more: bool) -> List<V, T> {
        List { views: owner.iter().map(view).collect(), _owner: owner, has_more }
    }

    pub(crate) fn views(&self) -> &[V] {
        &self.views
    }
}

/// Events read by `tidemark_store_read_stream` (opaque); free with `tidemark_stream_events_free`.
pub struct tidemark_stream_events {
    _private: [u8; 0],
}
impl Castable for tidemark_stream_events {
    type RustType = List<tidemark_stream_event, StreamEvent>;
}
/// Streams listed by `tidemark_store_list_streams` (opaque); free with `tidemark_stream_list_free`.
pub struct tidemark_stream_list {
    _private: [u8; 0],
}
impl Castable for tidemark_stream_list {
    type RustType = List<tidemark_stream_info, (Vec<u8>, i64)>;
}
/// Snapshots from `tidemark_store_snapshot_read`/`_list` (opaque); free with `tidemark_snapshots_free`.
pub struct tidemark_snapshots {
    _private: [u8; 0],
}
impl Castable for tidemark_snapshots {
    type RustType = List<tidemark_snapshot, Snapshot>;
}

pub(crate) fn event_view(e: &StreamEvent) -> tidemark_stream_event {
    tidemark_stream_event {
        stream: tidemark_bytes::of(&e.stream),
        id: tidemark_bytes::of(e.id()),
        event_type: tidemark_bytes::of(e.event_type()),
        data: tidemark_bytes::of(e.data()),
        metadata: tidemark_bytes::of(e.metadata()),
        version: e.version,
        revision: e.revision,
        timestamp_ms: e.timestamp_ms(),
    }
}

fn snapshot_view(s: &Snapshot) -> tidemark_snapshot {
    tidemark_snapshot {
        source: tidemark_bytes::of(&s.source),
        stream: tidemark_bytes::of(&s.stream),
        version: s.version,
        revision: s.revision,
        timestamp_ms: s.timestamp_ms,
        data: tidemark_bytes::of(&s.data),
    }
}

unsafe fn new_event<'a>(e: &tidemark_stream_event) -> Result<NewEvent<'a>, super::Failure> {
    let id = match bytes_in(e.id.ptr, e.id.len, "event id")? {
        [] => None,
        id => Some(<[u8; 16]>::try_from(id).map_err(|_| {
            Error::InvalidArgument(format!(
                "an event id is 16 bytes (or empty to generate one), not {}",
                id.len()
            ))
        })?),
    };
    Ok(NewEvent {
        id,
        event_type: bytes_in(e.event_type.ptr, e.event_type.len, "event type")?,
        data: bytes_in(e.data.ptr, e.data.len, "event data")?,
        metadata: bytes_in(e.metadata.ptr, e.metadata.len, "event metadata")?,
    })
}

/// Appends `count` events to `stream` atomically (all or none, consecutive versions and
/// revisions) if the stream's version matches `expected_version`: `TIDEMARK_EXPECT_ANY`,
/// `TIDEMARK_EXPECT_NO_STREAM`, `TIDEMARK_EXPECT_EXISTS` or an exact version ≥ 0 (anything
/// else is `TIDEMARK_ERR_INVALID_ARGUMENT`). Otherwise nothing is written and the status is
/// `TIDEMARK_ERR_CONFLICT`, with the stream's current version (−1 = no stream) in
/// `tidemark_last_error_current_version()`. The events' bytes are copied; `result_out` may
/// be NULL. An append whose event ids all equal those of the stream's last append is a retry
/// of it: it returns that append's result and writes nothing. A stream name is 1 to
/// `TIDEMARK_MAX_NAME` bytes (empty: `INVALID_ARGUMENT`, longer: `TOO_LARGE`); `count` 0 is
/// `INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_append(
    store: *mut tidemark_store,
    stream: *const u8,
    stream_len: usize,
    events: *const tidemark_stream_event,
    count: usize,
    expected_version: i64,
    result_out: *mut tidemark_append_result,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        let stream = bytes_in(stream, stream_len, "stream")?;
        if count > 0 {
            need(events, "events")?;
        }
        let expected = ExpectedVersion::from_i64(expected_version)?;
        let input: &[tidemark_stream_event] = if count == 0 {
            &[]
        } else {
            // SAFETY: the header's rule for arrays: a non-NULL `events` points to `count`
            // readable elements that stay valid and unchanged for the call.
            unsafe { std::slice::from_raw_parts(events, count) }
        };
        // One event (the common append) is converted on the stack.
        let a = match input {
            [one] => s.append(stream, &[new_event(one)?], expected)?,
            _ => {
                let new = input.iter().map(|e| new_event(e)).collect::<Result<Vec<_>, _>>()?;
                s.append(stream, &new, expected)?
            }
        };
        put_out(
            result_out,
            tidemark_append_result {
                first_version: a.first_version,
                version: a.version,
                first_revision: a.first_revision,
            },
        );
        Ok(())
    })
}

/// Reads up to `count` events (0 = all) of `stream` into `*out`: with `TIDEMARK_FORWARD`
/// from version `from_version` (≥ 0) upwards; with `TIDEMARK_BACKWARD` from `from_version`
/// (or `TIDEMARK_READ_FROM_END`) down to version 0. A start past the last version reads
/// nothing; an absent stream is `TIDEMARK_ERR_NOT_FOUND`; an unknown direction or a bad
/// `from_version` is `TIDEMARK_ERR_INVALID_ARGUMENT`. Free the list with
/// `tidemark_stream_events_free`; it does not depend on the store.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_read_stream(
    store: *const tidemark_store,
    stream: *const u8,
    stream_len: usize,
    from_version: i64,
    count: usize,
    direction: u32,
    out: *mut *mut tidemark_stream_events,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let stream = bytes_in(stream, stream_len, "stream")?;
        let direction = match direction {
            0 => Direction::Forward,
            1 => Direction::Backward,
            d => return Err(Error::InvalidArgument(format!("unknown direction {d}")).into()),
        };
        let from = match from_version {
            TIDEMARK_READ_FROM_END => None,
            v if v >= 0 => Some(v as u64),
            v => return Err(Error::InvalidArgument(format!("from_version {v}")).into()),
        };
        let events = s.read_stream(stream, from, count, direction)?;
        put_out(out, to_boxed_ptr::<tidemark_stream_events>(List::new(events, event_view, false)));
        Ok(())
    })
}

/// The number of events in the list (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_stream_events_len(list: *const tidemark_stream_events) -> usize {
    guard_value(0, || get_ref(list).map_or(0, |l| l.views.len()))
}

/// The events as a contiguous array of `tidemark_stream_events_len` elements, owned by the
/// list (NULL for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_stream_events_data(
    list: *const tidemark_stream_events,
) -> *const tidemark_stream_event {
    guard_value(std::ptr::null(), || get_ref(list).map_or(std::ptr::null(), |l| l.views.as_ptr()))
}

/// Frees a list of stream events. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_stream_events_free(list: *mut tidemark_stream_events) {
    free_box(list)
}

/// Writes the stream's last version to `*version_out` (−1 when the stream does not exist).
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_stream_version(
    store: *const tidemark_store,
    stream: *const u8,
    stream_len: usize,
    version_out: *mut i64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(version_out, "version_out")?;
        let stream = bytes_in(stream, stream_len, "stream")?;
        put_out(version_out, s.stream_version(stream)?);
        Ok(())
    })
}

/// Lists streams in byte order of their names, with their versions, into `*out`: those whose
/// names start with `prefix` (empty = all), after the name `after` (exclusive; empty = from
/// the first), at most `limit` (0 = 1000). `tidemark_stream_list_has_more` tells whether to
/// ask again with `after` = the last name. Free with `tidemark_stream_list_free`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_list_streams(
    store: *const tidemark_store,
    prefix: *const u8,
    prefix_len: usize,
    after: *const u8,
    after_len: usize,
    limit: usize,
    out: *mut *mut tidemark_stream_list,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let prefix = bytes_in(prefix, prefix_len, "prefix")?;
        let after = bytes_in(after, after_len, "after")?;
        let (names, more) = s.list_streams(prefix, (!after.is_empty()).then_some(after), limit)?;
        let view =
            |(n, v): &(Vec<u8>, i64)| tidemark_stream_info { name: tidemark_bytes::of(n), version: *v };
        put_out(out, to_boxed_ptr::<tidemark_stream_list>(List::new(names, view, more)));
        Ok(())
    })
}

/// The number of streams in the list (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_stream_list_len(list: *const tidemark_stream_list) -> usize {
    guard_value(0, || get_ref(list).map_or(0, |l| l.views.len()))
}

/// The streams as a contiguous array of `tidemark_stream_list_len` elements, owned by the
/// list (NULL for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_stream_list_data(
    list: *const tidemark_stream_list,
) -> *const tidemark_stream_info {
    guard_value(std::ptr::null(), || get_ref(list).map_or(std::ptr::null(), |l| l.views.as_ptr()))
}

/// True when the limit left names out (false for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_stream_list_has_more(list: *const tidemark_stream_list) -> bool {
    guard_value(false, || get_ref(list).is_some_and(|l| l.has_more))
}

/// Frees a stream list. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_stream_list_free(list: *mut tidemark_stream_list) {
    free_box(list)
}

/// Deletes every event of `stream` and the stream itself in one commit; writes the commit's
/// first revision to `*revision_out` (may be NULL). An absent stream is
/// `TIDEMARK_ERR_NOT_FOUND`. The name can be appended to again afterwards, starting at
/// version 0, with `TIDEMARK_EXPECT_NO_STREAM` or `TIDEMARK_EXPECT_ANY`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_delete_stream(
    store: *mut tidemark_store,
    stream: *const u8,
    stream_len: usize,
    revision_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        let stream = bytes_in(stream, stream_len, "stream")?;
        put_out(revision_out, s.delete_stream(stream)?);
        Ok(())
    })
}

/// Records `data` (copied) as `source`'s snapshot of `stream` at `version`, replacing one
/// recorded at the same version; writes the commit's revision to `*revision_out` (may be
/// NULL). Names are 1 to `TIDEMARK_MAX_NAME` bytes.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_snapshot_record(
    store: *mut tidemark_store,
    source: *const u8,
    source_len: usize,
    stream: *const u8,
    stream_len: usize,
    version: u64,
    data: *const u8,
    data_len: usize,
    revision_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        let source = bytes_in(source, source_len, "source")?;
        let stream = bytes_in(stream, stream_len, "stream")?;
        let data = bytes_in(data, data_len, "data")?;
        put_out(revision_out, s.snapshot_record(source, stream, version, data)?);
        Ok(())
    })
}

/// Writes to `*out` a list holding the one snapshot of `stream` by `source` with the
/// greatest version at or below `max_version`; `TIDEMARK_ERR_NOT_FOUND` when there is none.
/// Free with `tidemark_snapshots_free`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_snapshot_read(
    store: *const tidemark_store,
    source: *const u8,
    source_len: usize,
    stream: *const u8,
    stream_len: usize,
    max_version: u64,
    out: *mut *mut tidemark_snapshots,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let source = bytes_in(source, source_len, "source")?;
        let stream = bytes_in(stream, stream_len, "stream")?;
        let snap = s.snapshot_read(source, stream, max_version)?;
        put_out(out, to_boxed_ptr::<tidemark_snapshots>(List::new(vec![snap], snapshot_view, false)));
        Ok(())
    })
}

/// Deletes the snapshot at exactly `version`; writes the delete's revision to
/// `*revision_out` (may be NULL). A missing snapshot is `TIDEMARK_ERR_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_snapshot_delete(
    store: *mut tidemark_store,
    source: *const u8,
    source_len: usize,
    stream: *const u8,
    stream_len: usize,
    version: u64,
    revision_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        let source = bytes_in(source, source_len, "source")?;
        let stream = bytes_in(stream, stream_len, "stream")?;
        put_out(revision_out, s.snapshot_delete(source, stream, version)?);
        Ok(())
    })
}

/// Writes to `*out` every snapshot of `stream` by `source`, by version ascending (possibly
/// none). Free with `tidemark_snapshots_free`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_snapshot_list(
    store: *const tidemark_store,
    source: *const u8,
    source_len: usize,
    stream: *const u8,
    stream_len: usize,
    out: *mut *mut tidemark_snapshots,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let source = bytes_in(source, source_len, "source")?;
        let stream = bytes_in(stream, stream_len, "stream")?;
        let list = s.snapshot_list(source, stream)?;
        put_out(out, to_boxed_ptr::<tidemark_snapshots>(List::new(list, snapshot_view, false)));
        Ok(())
    })
}

/// The number of snapshots in the list (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_snapshots_len(list: *const tidemark_snapshots) -> usize {
    guard_value(0, || get_ref(list).map_or(0, |l| l.views.len()))
}

/// The snapshots as a contiguous array of `tidemark_snapshots_len` elements, owned by the
/// list (NULL for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_snapshots_data(
    list: *const tidemark_snapshots,
) -> *const tidemark_snapshot {
    guard_value(std::ptr::null(), || get_ref(list).map_or(std::ptr::null(), |l| l.views.as_ptr()))
}

/// Frees a snapshot list. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_snapshots_free(list: *mut tidemark_snapshots) {
    free_box(list)
}
