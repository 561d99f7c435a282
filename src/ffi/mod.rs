//! The C ABI: conversion, NULL checks and a panic boundary over the safe core, nothing else.
//! Conventions (as in rustls-ffi): every symbol is `tidemark_<object>_<verb>`, fallible
//! functions return a `tidemark_status`, out-parameters are written only on success, and
//! everything the library allocates for the caller has exactly one `_free`, a no-op on NULL.
//!
//! Every handle goes through `handle` (one `impl Castable` per handle type), every callback
//! through `closure`, and every status through the `status_codes!` table in `status`. Each
//! `unsafe` block states why it is sound in a `// SAFETY:` comment (enforced by clippy).
#![allow(unsafe_code, non_camel_case_types, clippy::missing_safety_doc)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod batch;
mod closure;
mod contexts;
mod events;
mod handle;
#[cfg(feature = "http")]
mod lockstep;
mod persistent;
mod status;
mod store;
mod streams;
mod subscriptions;
mod trackers;
mod watch;

pub use batch::*;
pub use contexts::*;
pub use events::*;
#[cfg(feature = "http")]
pub use lockstep::*;
pub use persistent::*;
pub use status::*;
pub use store::*;
pub use streams::*;
pub use subscriptions::*;
pub use trackers::*;
pub use watch::*;

pub(crate) use closure::Closure;
pub(crate) use handle::{free_box, get_mut, get_ref, to_boxed_ptr, try_mut, try_ref, Castable};

use std::ffi::{c_char, CStr};

use crate::error::Error;
use crate::selector::Selector;

/// Borrowed bytes: `len` bytes at `ptr`. Who owns them, and for how long they stay valid, is
/// said by the function that hands them out.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_bytes {
    pub ptr: *const u8,
    pub len: usize,
}

impl tidemark_bytes {
    fn of(b: &[u8]) -> tidemark_bytes {
        tidemark_bytes { ptr: b.as_ptr(), len: b.len() }
    }
}

/// Which keys a read or a watch covers (`tidemark_selector_kind` in `kind`).
/// KEY and PREFIX use `start`; RANGE is `[start, end)` and an empty `end` means unbounded;
/// ALL ignores both. Pass NULL wherever a selector is taken to mean ALL.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tidemark_selector {
    pub kind: u32,
    pub start: tidemark_bytes,
    pub end: tidemark_bytes,
}

/// The values of `tidemark_selector.kind`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tidemark_selector_kind {
    TIDEMARK_SELECT_ALL = 0,
    TIDEMARK_SELECT_KEY = 1,
    TIDEMARK_SELECT_PREFIX = 2,
    TIDEMARK_SELECT_RANGE = 3,
}

/// Input bytes `(ptr, len)`: NULL with length 0 is the empty string; NULL with a length is an error.
pub(crate) unsafe fn bytes_in<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Failure::null(what));
    }
    if len > isize::MAX as usize {
        return Err(Error::TooLarge(format!("{what} length {len}")).into());
    }
    // SAFETY: the header's bytes rule: a non-NULL `ptr` points to `len` readable bytes that
    // stay valid and unchanged for the call.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A NULL selector is ALL.
pub(crate) unsafe fn selector_in(sel: *const tidemark_selector) -> Result<Selector, Failure> {
    // SAFETY: a non-NULL selector points to a `tidemark_selector` valid for the call.
    let Some(sel) = (unsafe { sel.as_ref() }) else {
        return Ok(Selector::All);
    };
    // SAFETY: the selector's bytes follow the header's bytes rule.
    let start = unsafe { bytes_in(sel.start.ptr, sel.start.len, "selector start") }?.to_vec();
    let selector = match sel.kind {
        0 => Selector::All,
        1 => Selector::Key(start),
        2 => Selector::Prefix(start),
        // SAFETY: as for `start`.
        3 => Selector::Range(start, unsafe { bytes_in(sel.end.ptr, sel.end.len, "selector end") }?.to_vec()),
        k => return Err(Error::InvalidArgument(format!("unknown selector kind {k}")).into()),
    };
    selector.validate()?;
    Ok(selector)
}

/// An optional C string (NULL = None); not UTF-8 is an error.
pub(crate) unsafe fn str_in<'a>(s: *const c_char, what: &str) -> Result<Option<&'a str>, Failure> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: a non-NULL string argument is NUL-terminated and valid for the call.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map(Some)
        .map_err(|_| Error::InvalidArgument(format!("{what} is not valid UTF-8")).into())
}

/// Writes an out-parameter; `out` was checked for NULL before any work was done.
pub(crate) unsafe fn put_out<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: a non-NULL out-parameter points to writable memory for a `T`.
        unsafe { out.write(value) };
    }
}

/// Refuses a NULL pointer argument.
pub(crate) fn need<T>(p: *const T, what: &str) -> Result<(), Failure> {
    if p.is_null() {
        Err(Failure::null(what))
    } else {
        Ok(())
    }
}
