//! Events as C sees them, and the owned batches `changes`, `range` and `watch_next` return.

use std::cell::RefCell;

use crate::event::Event;

use super::{free_box, get_ref, guard_value, tidemark_bytes, Castable};

/// The values of `tidemark_event.kind`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tidemark_event_kind {
    TIDEMARK_EVENT_PUT = 1,
    TIDEMARK_EVENT_DELETE = 2,
    /// No key; `revision` is the store revision the watch has caught up to.
    TIDEMARK_EVENT_PROGRESS = 3,
    /// Terminal: revisions the watch had not seen were compacted; `revision` is the earliest
    /// retained one, to resync from.
    TIDEMARK_EVENT_COMPACTED = 4,
    /// Terminal: the store was closed.
    TIDEMARK_EVENT_CLOSED = 5,
}

/// One change. Its pointers are borrowed: from the `tidemark_events` batch that holds it
/// (valid until `tidemark_events_free`) or, inside a watch callback, valid during the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_event {
    /// This event's revision (for a key event, the key's mod_revision after it).
    pub revision: u64,
    /// A `tidemark_event_kind`.
    pub kind: u32,
    pub key: tidemark_bytes,
    /// Empty for DELETE and non-key events.
    pub value: tidemark_bytes,
    /// 0 for DELETE and non-key events.
    pub create_revision: u64,
    /// The key's version after the event (1 on creation); 0 for DELETE and non-key events.
    pub version: u64,
}

impl tidemark_event {
    /// A view of a core event, borrowing its bytes.
    pub(crate) fn view(e: &Event) -> tidemark_event {
        tidemark_event {
            revision: e.revision,
            kind: e.kind as u32,
            key: tidemark_bytes::of(&e.key),
            value: tidemark_bytes::of(&e.value),
            create_revision: e.create_revision,
            version: e.version,
        }
    }
}

/// An owned batch of events. Keys and values are copied into one arena, so a batch is two
/// allocations however many events it holds, and a binding can read it in bulk.
pub struct tidemark_events {
    _private: [u8; 0],
}

impl Castable for tidemark_events {
    type RustType = EventList;
}

/// What a `tidemark_events` holds: the event views and the arena their bytes point into.
pub(crate) struct EventList {
    events: Vec<tidemark_event>,
    arena: Vec<u8>,
    has_more: bool,
    next_revision: u64,
}

/// Buffers of freed batches, reused by the next batch built on the same thread: a reader
/// paging through `changes` then works in warm memory instead of faulting in fresh pages and
/// regrowing its buffers on every call.
struct Spare {
    events: Vec<tidemark_event>,
    arena: Vec<u8>,
}

/// Buffers larger than this go back to the allocator instead of the spare slot.
const SPARE_MAX_BYTES: usize = 64 << 20;

thread_local! {
    static SPARE: RefCell<Option<Spare>> = const { RefCell::new(None) };
}

impl Drop for EventList {
    fn drop(&mut self) {
        let (mut events, mut arena) = (std::mem::take(&mut self.events), std::mem::take(&mut self.arena));
        if events.capacity() * std::mem::size_of::<tidemark_event>() + arena.capacity() <= SPARE_MAX_BYTES {
            events.clear();
            arena.clear();
            let _ = SPARE.try_with(|s| *s.borrow_mut() = Some(Spare { events, arena }));
        }
    }
}

impl EventList {
    /// Collects events from a visitor-style reader, then points them into the arena.
    pub(crate) fn collect<E>(
        read: impl FnOnce(&mut dyn FnMut(&Event)) -> Result<(bool, u64), E>,
    ) -> Result<EventList, E> {
        let Spare { mut events, mut arena } = SPARE
            .try_with(|s| s.borrow_mut().take())
            .ok()
            .flatten()
            .unwrap_or(Spare { events: Vec::new(), arena: Vec::new() });
        let (has_more, next_revision) = read(&mut |e: &Event| {
            let mut ev = tidemark_event::view(e);
            // Offsets for now; made pointers once the arena stops moving.
            ev.key.ptr = arena.len() as *const u8;
            arena.extend_from_slice(&e.key);
            ev.value.ptr = arena.len() as *const u8;
            arena.extend_from_slice(&e.value);
            events.push(ev);
        })?;
        let base = arena.as_ptr();
        for ev in &mut events {
            ev.key.ptr = base.wrapping_add(ev.key.ptr as usize);
            ev.value.ptr = base.wrapping_add(ev.value.ptr as usize);
        }
        Ok(EventList { events, arena, has_more, next_revision })
    }

    pub(crate) fn from_vec(list: &[Event]) -> EventList {
        let next = list.last().map_or(0, |e| e.revision + 1);
        let r: Result<_, ()> = EventList::collect(|visit| {
            list.iter().for_each(visit);
            Ok((false, next))
        });
        r.unwrap_or_else(|()| unreachable!())
    }
}

/// The number of events in the batch (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_events_len(events: *const tidemark_events) -> usize {
    guard_value(0, || get_ref(events).map_or(0, |e| e.events.len()))
}

/// The events as a contiguous array of `tidemark_events_len` elements, owned by the batch and
/// valid until `tidemark_events_free` (NULL for a NULL batch).
#[no_mangle]
pub unsafe extern "C" fn tidemark_events_data(events: *const tidemark_events) -> *const tidemark_event {
    guard_value(std::ptr::null(), || get_ref(events).map_or(std::ptr::null(), |e| e.events.as_ptr()))
}

/// The one buffer every key and value of the batch points into, for bindings that copy a
/// whole batch at once instead of field by field. Owned by the batch.
#[no_mangle]
pub unsafe extern "C" fn tidemark_events_arena(events: *const tidemark_events) -> tidemark_bytes {
    let empty = tidemark_bytes { ptr: std::ptr::null(), len: 0 };
    guard_value(empty, || get_ref(events).map_or(empty, |e| tidemark_bytes::of(&e.arena)))
}

/// For `tidemark_store_changes`: true when the limit stopped the read before `to`; call
/// again from `tidemark_events_next_revision`. For `tidemark_store_range`: true when keys
/// were left out. False for NULL.
#[no_mangle]
pub unsafe extern "C" fn tidemark_events_has_more(events: *const tidemark_events) -> bool {
    guard_value(false, || get_ref(events).is_some_and(|e| e.has_more))
}

/// The revision to continue from: after `changes`, the `from` of the next call; after a
/// watch delivery, the revision after its last event. 0 for `range` and for NULL.
#[no_mangle]
pub unsafe extern "C" fn tidemark_events_next_revision(events: *const tidemark_events) -> u64 {
    guard_value(0, || get_ref(events).map_or(0, |e| e.next_revision))
}

/// Frees a batch and everything it points to. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_events_free(events: *mut tidemark_events) {
    free_box(events)
}
