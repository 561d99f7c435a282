//! The store's lock: `flock` on the directory itself, exclusive for a writable open and
//! shared for read-only ones, so that taking it creates no file (a refused or read-only
//! directory is left exactly as it was).

use std::path::Path;
use std::time::{Duration, Instant};

use super::fs::{Fs, Lock};
use super::io_err;
use crate::error::{Error, Result};

/// The held lock (released when dropped).
pub(super) type Held = Box<dyn Send + Sync>;

/// How long an open waits for a busy lock before it is `Locked`. A process that starts a
/// child (fork, then exec) shares its open files with the child until the exec, so a store
/// closed and reopened by one thread while another thread spawns a process can find its own
/// lock briefly held by the child; a real second owner holds it for longer than this.
const BUSY_WAIT: Duration = Duration::from_millis(250);

pub(super) fn lock(fs: &dyn Fs, dir: &Path, read_only: bool) -> Result<Held> {
    let deadline = Instant::now() + BUSY_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        match fs.lock(dir, read_only).map_err(|e| io_err("cannot lock", dir, e))? {
            Lock::Held(held) => return Ok(held),
            Lock::Busy if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(25));
            }
            Lock::Busy => {
                return Err(Error::Locked(format!(
                    "the store in {} is already open (by this or another process)",
                    dir.display()
                )))
            }
        }
    }
}
