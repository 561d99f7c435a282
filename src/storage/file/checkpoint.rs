//! Files written atomically (manifest, checkpoints) and checkpoints of the derived state.

use std::io;
use std::path::Path;

use super::fs::{Fs, Mode};
use super::segment::parse_numbered;
use super::{io_err, FileLog};
use crate::error::Result;
use crate::storage::codec;
use crate::storage::StateVisitor;

pub(super) fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(|e| io_err("cannot sync directory", dir, e))
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, fsync, rename, fsync of the
/// directory. An interrupted write leaves at most `name.tmp`, which the next open removes.
pub(super) fn write_atomic(fs: &dyn Fs, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let write = || -> io::Result<()> {
        let f = fs.open(&tmp, Mode::Create)?;
        f.write_all_at(bytes, 0)?;
        f.sync()
    };
    if let Err(e) = write() {
        let _ = fs.remove(&tmp);
        return Err(io_err("cannot write", &tmp, e));
    }
    fs.rename(&tmp, &path).map_err(|e| io_err("cannot rename into place", &path, e))?;
    sync_dir(fs, dir)
}

impl FileLog {
    pub(super) fn sync_dir(&self) -> Result<()> {
        sync_dir(&*self.fs, &self.dir)
    }

    pub(super) fn write_checkpoint(&mut self, earliest: u64, state: StateVisitor<'_>) -> Result<()> {
        self.writable()?;
        self.sync_active()?;
        let rev = self.last;
        let bytes = codec::encode_checkpoint(rev, earliest, state);
        let name = format!("ckpt-{rev:020}.ckpt");
        write_atomic(&*self.fs, &self.dir, &name, &bytes)?;
        for n in self.fs.list(&self.dir).map_err(|e| io_err("cannot list", &self.dir, e))? {
            if parse_numbered(&n, "ckpt-", ".ckpt").is_some_and(|r| r != rev) {
                let _ = self.fs.remove(&self.dir.join(n));
            }
        }
        self.last_checkpoint = rev;
        self.checkpoint_size = bytes.len() as u64;
        self.bytes_since_checkpoint = 0;
        Ok(())
    }
}
