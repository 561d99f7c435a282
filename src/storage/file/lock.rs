//! The `LOCK` file: `flock`ed exclusively by a writable open, shared by read-only ones.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use super::{io_err, LOCK};
use crate::error::{Error, Result};

pub(super) fn lock(dir: &Path, read_only: bool) -> Result<Option<File>> {
    let path = dir.join(LOCK);
    let file = match OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path) {
        Ok(f) => f,
        Err(_) if read_only => match File::open(&path) {
            Ok(f) => f,
            // A read-only directory without a lock file: nobody can be writing to it.
            Err(_) => return Ok(None),
        },
        Err(e) => return Err(io_err("cannot create the lock file", &path, e)),
    };
    let locked = if read_only { file.try_lock_shared() } else { file.try_lock() };
    match locked {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Err(Error::Locked(format!(
            "the store in {} is already open (by this or another process)",
            dir.display()
        ))),
        Err(TryLockError::Error(e)) => Err(io_err("cannot lock", &path, e)),
    }
}
