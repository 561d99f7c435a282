//! The store's lock: `flock` on the directory itself, exclusive for a writable open and
//! shared for read-only ones, so that taking it creates no file (a refused or read-only
//! directory is left exactly as it was).

use std::path::Path;

use super::fs::{Fs, Lock};
use super::io_err;
use crate::error::{Error, Result};

/// The held lock (released when dropped).
pub(super) type Held = Box<dyn Send + Sync>;

pub(super) fn lock(fs: &dyn Fs, dir: &Path, read_only: bool) -> Result<Held> {
    match fs.lock(dir, read_only).map_err(|e| io_err("cannot lock", dir, e))? {
        Lock::Held(held) => Ok(held),
        Lock::Busy => Err(Error::Locked(format!(
            "the store in {} is already open (by this or another process)",
            dir.display()
        ))),
    }
}
