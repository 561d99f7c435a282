//! Atomic write batches: built by the caller, committed all or nothing.

use crate::error::Error;
use crate::op::Op;

use super::{
    bytes_in, free_box, get_mut, get_ref, guard, guard_value, tidemark_status, to_boxed_ptr, try_mut,
    Castable, Failure,
};

enum Owned {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Require(Vec<u8>, u64),
}

/// An atomic write batch (opaque). Not thread-safe: build it from one thread at a time.
pub struct tidemark_batch {
    _private: [u8; 0],
}

impl Castable for tidemark_batch {
    type RustType = Batch;
}

/// The operations of a batch, owned until it is freed.
#[derive(Default)]
pub(crate) struct Batch {
    ops: Vec<Owned>,
}

impl Batch {
    pub(crate) fn ops(&self) -> Vec<Op<'_>> {
        self.ops
            .iter()
            .map(|o| match o {
                Owned::Put(k, v) => Op::Put(k, v),
                Owned::Delete(k) => Op::Delete(k),
                Owned::Require(k, r) => Op::Require(k, *r),
            })
            .collect()
    }
}

fn add(
    batch: *mut tidemark_batch,
    key: *const u8,
    key_len: usize,
    op: impl FnOnce(Vec<u8>) -> Result<Owned, Failure>,
) -> tidemark_status {
    guard(|| {
        // SAFETY: every caller is an export handing on its caller's batch (see `handle`).
        let batch = unsafe { try_mut(batch, "batch") }?;
        // SAFETY: the key follows the header's bytes rule.
        let key = unsafe { bytes_in(key, key_len, "key")? };
        if key.is_empty() {
            return Err(Error::InvalidArgument("keys must not be empty".into()).into());
        }
        let op = op(key.to_vec())?;
        batch.ops.push(op);
        Ok(())
    })
}

/// Creates an empty batch. Free it with `tidemark_batch_free`; it can be committed any number
/// of times, to any store.
#[no_mangle]
pub extern "C" fn tidemark_batch_new() -> *mut tidemark_batch {
    guard_value(std::ptr::null_mut(), || to_boxed_ptr::<tidemark_batch>(Batch::default()))
}

/// Adds a put of `value` at `key` (both copied).
#[no_mangle]
pub unsafe extern "C" fn tidemark_batch_put(
    batch: *mut tidemark_batch,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> tidemark_status {
    add(batch, key, key_len, |k| {
        // SAFETY: the value follows the header's bytes rule.
        Ok(Owned::Put(k, unsafe { bytes_in(value, value_len, "value")? }.to_vec()))
    })
}

/// Adds a delete of `key`; at commit, a key that does not exist (counting the batch's earlier
/// operations) fails the whole batch with `TIDEMARK_ERR_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_batch_delete(
    batch: *mut tidemark_batch,
    key: *const u8,
    key_len: usize,
) -> tidemark_status {
    add(batch, key, key_len, |k| Ok(Owned::Delete(k)))
}

/// Adds a condition: at commit, `key`'s mod_revision must be `expected_mod_revision` (0 = the
/// key must not exist), checked against the state before the batch; otherwise nothing is
/// applied and the commit returns `TIDEMARK_ERR_CONFLICT`.
#[no_mangle]
pub unsafe extern "C" fn tidemark_batch_require(
    batch: *mut tidemark_batch,
    key: *const u8,
    key_len: usize,
    expected_mod_revision: u64,
) -> tidemark_status {
    add(batch, key, key_len, |k| Ok(Owned::Require(k, expected_mod_revision)))
}

/// The number of operations in the batch (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn tidemark_batch_len(batch: *const tidemark_batch) -> usize {
    guard_value(0, || get_ref(batch).map_or(0, |b| b.ops.len()))
}

/// Removes every operation so the batch can be reused. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_batch_clear(batch: *mut tidemark_batch) {
    guard_value((), || {
        if let Some(b) = get_mut(batch) {
            b.ops.clear()
        }
    })
}

/// Frees a batch. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_batch_free(batch: *mut tidemark_batch) {
    free_box(batch)
}
