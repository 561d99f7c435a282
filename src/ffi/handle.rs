//! The one way a Rust object becomes a C handle and back (rustls-ffi's `Castable` is the
//! model). Each handle type is an opaque struct that C only ever sees behind a pointer, and
//! one `impl Castable` saying which Rust value that pointer really points to:
//!
//! ```text
//! pub struct tidemark_thing { _private: [u8; 0] }
//! impl Castable for tidemark_thing { type RustType = Thing; }
//! ```
//!
//! `to_boxed_ptr` hands a value out (owned by the caller until its `_free`), `try_ref` /
//! `try_mut` borrow it back (NULL is `TIDEMARK_ERR_NULL_ARGUMENT`), `get_ref` is for functions
//! without a status (NULL yields their fallback), and `free_box` is the body of every `_free`.
//!
//! ## Unsafety
//! Every function taking a handle relies on the caller's promise, stated in the header, that
//! a non-NULL handle came from the library as that type and has not been freed, and that it
//! is not used from two threads at once where its doc says it is not thread-safe. Given that,
//! the pointer is a live `Box<RustType>` and borrowing it is sound.

use super::{guard_value, Failure};

/// A C handle type and the Rust value behind it. Every handle is boxed.
pub(crate) trait Castable {
    type RustType;
}

/// Boxes `value` and returns it as a handle of type `C`, owned by the caller.
pub(crate) fn to_boxed_ptr<C: Castable>(value: C::RustType) -> *mut C {
    Box::into_raw(Box::new(value)).cast()
}

/// The value behind a handle, or None for NULL.
pub(crate) unsafe fn get_ref<'a, C: Castable>(handle: *const C) -> Option<&'a C::RustType> {
    // SAFETY: a non-NULL handle is a live box of `C::RustType` (see "Unsafety" above).
    unsafe { handle.cast::<C::RustType>().as_ref() }
}

/// The value behind a handle, mutably, or None for NULL.
pub(crate) unsafe fn get_mut<'a, C: Castable>(handle: *mut C) -> Option<&'a mut C::RustType> {
    // SAFETY: as for `get_ref`, and the header forbids using such a handle from two threads
    // at once, so this borrow is the only one.
    unsafe { handle.cast::<C::RustType>().as_mut() }
}

/// The value behind a handle; NULL is `TIDEMARK_ERR_NULL_ARGUMENT` naming the argument.
pub(crate) unsafe fn try_ref<'a, C: Castable>(
    handle: *const C,
    what: &str,
) -> Result<&'a C::RustType, Failure> {
    // SAFETY: the caller passes a handle as promised in the header (see "Unsafety" above).
    unsafe { get_ref(handle) }.ok_or_else(|| Failure::null(what))
}

/// The value behind a handle, mutably; NULL is `TIDEMARK_ERR_NULL_ARGUMENT`.
pub(crate) unsafe fn try_mut<'a, C: Castable>(
    handle: *mut C,
    what: &str,
) -> Result<&'a mut C::RustType, Failure> {
    // SAFETY: the caller passes a handle as promised in the header (see "Unsafety" above).
    unsafe { get_mut(handle) }.ok_or_else(|| Failure::null(what))
}

/// Frees a handle: the body of every `_free`, `_close` and `_stop` that ends with freeing.
/// NULL is a no-op; a panic in a destructor stops here.
pub(crate) unsafe fn free_box<C: Castable>(handle: *mut C) {
    guard_value((), || {
        if !handle.is_null() {
            // SAFETY: a non-NULL handle is a live box made by `to_boxed_ptr`, and its `_free`
            // is the last call on it (the header's rule), so it is dropped exactly once.
            drop(unsafe { Box::from_raw(handle.cast::<C::RustType>()) });
        }
    })
}
