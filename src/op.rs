//! The operations of an atomic commit. Shared by the key state (which plans them), the write
//! group (which queues them) and the C layer and lockstep follower (which build them), so it
//! sits beside `event.rs`, below all of them.

/// One operation of an atomic commit, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
    /// The key's `mod_revision` must equal this (0 = the key must not exist).
    Require(&'a [u8], u64),
}

impl Op<'_> {
    pub fn key(&self) -> &[u8] {
        match *self {
            Op::Put(k, _) | Op::Delete(k) | Op::Require(k, _) => k,
        }
    }
}
