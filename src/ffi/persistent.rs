//! Persistent subscriptions: create / delete / list on the store, and a consumer handle
//! (`tidemark_subscription`) that takes deliveries, acks and nacks them.

use std::ffi::c_char;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::Error;
use crate::ns::persistent::{Consumer, Delivery, Nack, Parked, Start, SubscriptionInfo, SubscriptionOptions};
use crate::ns::subscriptions::Streams;

use super::contexts::string_out;
use super::streams::{event_view, List};
use super::subscriptions::{stream_selector_in, tidemark_stream_selector};
use super::{
    bytes_in, free_box, get_ref, guard, guard_value, need, put_out, tidemark_status, tidemark_store,
    tidemark_stream_event, to_boxed_ptr, try_ref, Castable, Failure,
};

/// The values of `start` in `tidemark_store_subscription_create`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tidemark_subscription_start {
    /// Every matching event in the log.
    TIDEMARK_START_BEGINNING = 0,
    /// Only events appended after the creation.
    TIDEMARK_START_END = 1,
    /// Events at or after `start_revision` (≥ 1).
    TIDEMARK_START_REVISION = 2,
}

/// The values of `action` in `tidemark_subscription_nack`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tidemark_nack_action {
    /// Deliver it again (parked instead after `max_retry` deliveries).
    TIDEMARK_NACK_RETRY = 0,
    /// Park it now.
    TIDEMARK_NACK_PARK = 1,
    /// Treat it as done, as an ack does.
    TIDEMARK_NACK_SKIP = 2,
}

/// How a persistent subscription delivers (`tidemark_subscription_options_default` gives
/// 100, 30000, 10, false). `max_in_flight`, `message_timeout_ms` and `max_retry` must be ≥ 1.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_subscription_options {
    /// Events one consumer may hold unacked.
    pub max_in_flight: u32,
    /// An event not acked this long after its delivery (store clock) is delivered again.
    pub message_timeout_ms: u64,
    /// After this many failed deliveries (nack retry or timeout) the event is parked.
    pub max_retry: u32,
    /// Each stream's events go to one consumer, in order (see docs/subscriptions.md).
    pub pinned: bool,
}

/// An event delivered by a persistent subscription (or, from
/// `tidemark_store_subscription_parked`, a parked one): the stream event, and its delivery
/// count (1 = first delivery; for a parked event, the deliveries it had when parked).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_delivery {
    pub event: tidemark_stream_event,
    pub delivery_count: u32,
}

/// A consumer of a persistent subscription (opaque). `tidemark_subscription_next` runs on one
/// thread at a time; `_ack` and `_nack` may run on other threads meanwhile (the Erlang binding
/// acks from the consumer process while its thread waits in `next`). Close with
/// `tidemark_subscription_close`, after every other call on it has returned.
pub struct tidemark_subscription {
    _private: [u8; 0],
}

/// What the doc above promises: a consumer may be used from several threads at once.
const _: fn() = || {
    fn shared<T: Sync + Send>() {}
    shared::<Consumer>();
};
impl Castable for tidemark_subscription {
    type RustType = Consumer;
}

/// Deliveries (opaque), owned by the caller; free with `tidemark_deliveries_free`.
pub struct tidemark_deliveries {
    _private: [u8; 0],
}
impl Castable for tidemark_deliveries {
    type RustType = List<tidemark_delivery, Delivery>;
}

fn delivery_view(d: &Delivery) -> tidemark_delivery {
    tidemark_delivery { event: event_view(&d.event), delivery_count: d.delivery_count }
}

/// The default options.
#[no_mangle]
pub extern "C" fn tidemark_subscription_options_default() -> tidemark_subscription_options {
    let o = SubscriptionOptions::default();
    tidemark_subscription_options {
        max_in_flight: o.max_in_flight,
        message_timeout_ms: o.message_timeout_ms,
        max_retry: o.max_retry,
        pinned: o.pinned,
    }
}

unsafe fn name_in<'a>(name: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    // SAFETY: the caller passes bytes by the header's rule.
    unsafe { bytes_in(name, len, "name") }
}

/// Creates the persistent subscription `name` (1 to `TIDEMARK_MAX_NAME` bytes) over the
/// stream events `selector` matches (NULL = all), from `start` (a
/// `tidemark_subscription_start`; `start_revision` is read for `TIDEMARK_START_REVISION`
/// only) with `options` (NULL = defaults), in one commit whose first revision goes to
/// `*revision_out`. A name in use is `TIDEMARK_ERR_CONFLICT`; a start revision beyond the
/// current revision + 1 is `TIDEMARK_ERR_FUTURE_REVISION`; bad options, start or selector are
/// `TIDEMARK_ERR_INVALID_ARGUMENT` (too long names `TIDEMARK_ERR_TOO_LARGE`).
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_subscription_create(
    store: *const tidemark_store,
    name: *const u8,
    name_len: usize,
    selector: *const tidemark_stream_selector,
    start: u32,
    start_revision: u64,
    options: *const tidemark_subscription_options,
    revision_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(revision_out, "revision_out")?;
        let name = name_in(name, name_len)?;
        let selector = stream_selector_in(selector)?;
        let start = match start {
            0 => Start::Beginning,
            1 => Start::End,
            2 => Start::Revision(start_revision),
            k => return Err(Error::InvalidArgument(format!("unknown start {k}")).into()),
        };
        // SAFETY: a non-NULL options pointer points to options valid for the call.
        let o =
            unsafe { options.as_ref() }.copied().unwrap_or_else(|| tidemark_subscription_options_default());
        let o = SubscriptionOptions {
            max_in_flight: o.max_in_flight,
            message_timeout_ms: o.message_timeout_ms,
            max_retry: o.max_retry,
            pinned: o.pinned,
        };
        put_out(revision_out, s.subscription_create(name, &selector, start, &o)?);
        Ok(())
    })
}

/// Deletes the subscription (definition, checkpoint, parked events) in one commit whose
/// revision goes to `*revision_out`; its consumers get `TIDEMARK_ERR_NOT_FOUND` from then
/// on. An unknown name is `TIDEMARK_ERR_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_subscription_delete(
    store: *const tidemark_store,
    name: *const u8,
    name_len: usize,
    revision_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(revision_out, "revision_out")?;
        put_out(revision_out, s.subscription_delete(name_in(name, name_len)?)?);
        Ok(())
    })
}

fn info_json(i: &SubscriptionInfo) -> Value {
    let sel = &i.definition.selector;
    let (kind, stream) = match &sel.streams {
        Streams::All => ("all", None),
        Streams::One(n) => ("one", Some(n)),
        Streams::Prefix(p) => ("prefix", Some(p)),
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let o = &i.definition.options;
    json!({
        "name": text(&i.name),
        "streams": kind,
        "stream": stream.map(|s| text(s)),
        "event_type": sel.event_type.as_deref().map(text),
        "max_in_flight": o.max_in_flight,
        "message_timeout_ms": o.message_timeout_ms,
        "max_retry": o.max_retry,
        "pinned": o.pinned,
        "checkpoint": i.checkpoint,
        "lag": i.lag,
        "in_flight": i.in_flight,
        "parked": i.parked,
        "consumers": i.consumers,
    })
}

/// Writes every subscription as a JSON array to `*json_out` (free with
/// `tidemark_string_free`), in name order: `name`, `streams` ("all", "one", "prefix"),
/// `stream`, `event_type` (null = any), the options, `checkpoint`, `lag` (matching events
/// after the checkpoint), `in_flight`, `parked`, `consumers`. Names are shown as UTF-8
/// (invalid bytes replaced).
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_subscription_list(
    store: *const tidemark_store,
    json_out: *mut *mut c_char,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(json_out, "json_out")?;
        let list = s.subscription_list()?;
        string_out(json_out, &Value::Array(list.iter().map(info_json).collect()));
        Ok(())
    })
}

/// Connects a consumer to the subscription `name` and writes it to `*out` (close with
/// `tidemark_subscription_close`). Consumers of one subscription share its events; one that
/// is closed hands its unacked events to the others. Unknown name: `TIDEMARK_ERR_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_subscription_connect(
    store: *const tidemark_store,
    name: *const u8,
    name_len: usize,
    out: *mut *mut tidemark_subscription,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let c = s.subscription_connect(name_in(name, name_len)?)?;
        put_out(out, to_boxed_ptr::<tidemark_subscription>(c));
        Ok(())
    })
}

/// Waits up to `timeout_ms` for deliveries (redeliveries first, at most the room
/// `max_in_flight` leaves) and writes them to `*out` (free with `tidemark_deliveries_free`;
/// independent of the consumer). `TIDEMARK_ERR_TIMEOUT` when none came,
/// `TIDEMARK_ERR_NOT_FOUND` once the subscription was deleted, `TIDEMARK_ERR_CLOSED` once
/// the store closed. One thread at a time per consumer (acks and nacks may run meanwhile).
#[no_mangle]
pub unsafe extern "C" fn tidemark_subscription_next(
    sub: *const tidemark_subscription,
    timeout_ms: u32,
    out: *mut *mut tidemark_deliveries,
) -> tidemark_status {
    guard(|| {
        let c = try_ref(sub, "subscription")?;
        need(out, "out")?;
        let got = c.next(Duration::from_millis(timeout_ms.into()))?;
        put_out(out, to_boxed_ptr::<tidemark_deliveries>(List::new(got, delivery_view, false)));
        Ok(())
    })
}

/// Acks the `count` events at `revisions` (NULL with 0 = none), delivered to this consumer:
/// one commit moves the checkpoint if it can move. If one of them is not in flight to this
/// consumer (never delivered to it, already acked, timed out) the call is
/// `TIDEMARK_ERR_INVALID_ARGUMENT` and acks nothing.
#[no_mangle]
pub unsafe extern "C" fn tidemark_subscription_ack(
    sub: *const tidemark_subscription,
    revisions: *const u64,
    count: usize,
) -> tidemark_status {
    guard(|| {
        let c = try_ref(sub, "subscription")?;
        let revisions: &[u64] = match (revisions.is_null(), count) {
            (true, 0) => &[],
            (true, _) => return Err(Failure::null("revisions")),
            // SAFETY: a non-NULL `revisions` points to `count` readable u64s (header rule).
            (false, n) => unsafe { std::slice::from_raw_parts(revisions, n) },
        };
        c.ack(revisions)?;
        Ok(())
    })
}

/// Gives the event at `revision` back: `action` is a `tidemark_nack_action`. Not in flight
/// to this consumer, or an unknown action: `TIDEMARK_ERR_INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_subscription_nack(
    sub: *const tidemark_subscription,
    revision: u64,
    action: u32,
) -> tidemark_status {
    guard(|| {
        let c = try_ref(sub, "subscription")?;
        let action = match action {
            0 => Nack::Retry,
            1 => Nack::Park,
            2 => Nack::Skip,
            a => return Err(Error::InvalidArgument(format!("unknown nack action {a}")).into()),
        };
        c.nack(revision, action)?;
        Ok(())
    })
}

/// Disconnects the consumer: its unacked events go to the other consumers. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_subscription_close(sub: *mut tidemark_subscription) {
    free_box(sub)
}

/// Writes up to `limit` (0 = all) parked events of the subscription, in revision order,
/// to `*out` (free with `tidemark_deliveries_free`). Unknown name: `TIDEMARK_ERR_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_subscription_parked(
    store: *const tidemark_store,
    name: *const u8,
    name_len: usize,
    limit: usize,
    out: *mut *mut tidemark_deliveries,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(out, "out")?;
        let parked = s.subscription_parked(name_in(name, name_len)?, limit)?;
        let as_delivery = |p: Parked| Delivery { event: p.event, delivery_count: p.deliveries };
        let list = List::new(parked.into_iter().map(as_delivery).collect(), delivery_view, false);
        put_out(out, to_boxed_ptr::<tidemark_deliveries>(list));
        Ok(())
    })
}

/// Delivers every parked event of the subscription again (delivery counts start over); each
/// leaves the parked list when acked or skipped. Writes how many were queued to `*count_out`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_subscription_replay_parked(
    store: *const tidemark_store,
    name: *const u8,
    name_len: usize,
    count_out: *mut usize,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(count_out, "count_out")?;
        put_out(count_out, s.subscription_replay_parked(name_in(name, name_len)?)?);
        Ok(())
    })
}

/// Moves the subscription's checkpoint to `revision - 1` in one commit whose revision goes to
/// `*revision_out`: delivery starts again at `revision` (1 to the current revision + 1, else
/// `TIDEMARK_ERR_INVALID_ARGUMENT`); earlier delivers events again, later skips them. Parked
/// events stay parked. Connected consumers get `TIDEMARK_ERR_CONFLICT` from their next call and
/// connect again at the new checkpoint. An unknown name is `TIDEMARK_ERR_NOT_FOUND`. Any thread.
#[no_mangle]
pub unsafe extern "C" fn tidemark_store_subscription_reset(
    store: *const tidemark_store,
    name: *const u8,
    name_len: usize,
    revision: u64,
    revision_out: *mut u64,
) -> tidemark_status {
    guard(|| {
        let s = try_ref(store, "store")?;
        need(revision_out, "revision_out")?;
        put_out(revision_out, s.subscription_reset(name_in(name, name_len)?, revision)?);
        Ok(())
    })
}

/// The number of deliveries (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_deliveries_len(list: *const tidemark_deliveries) -> usize {
    guard_value(0, || get_ref(list).map_or(0, |l| l.views().len()))
}

/// The deliveries as a contiguous array of `tidemark_deliveries_len` elements, owned by the
/// list (NULL for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_deliveries_data(
    list: *const tidemark_deliveries,
) -> *const tidemark_delivery {
    guard_value(std::ptr::null(), || get_ref(list).map_or(std::ptr::null(), |l| l.views().as_ptr()))
}

/// Frees a list of deliveries. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_deliveries_free(list: *mut tidemark_deliveries) {
    free_box(list)
}
