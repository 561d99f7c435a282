//! Files written atomically (manifest, checkpoints) and checkpoints of the derived state.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::segment::parse_numbered;
use super::{io_err, FileLog};
use crate::error::Result;
use crate::storage::codec;
use crate::storage::StateVisitor;

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("cannot sync directory", dir, e))
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, fsync, rename, fsync of the
/// directory.
pub(super) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let write = || -> io::Result<()> {
        let f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all_at(bytes, 0)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("cannot write", &tmp, e));
    }
    fs::rename(&tmp, &path).map_err(|e| io_err("cannot rename into place", &path, e))?;
    sync_dir(dir)
}

impl FileLog {
    pub(super) fn write_checkpoint(&mut self, earliest: u64, state: StateVisitor<'_>) -> Result<()> {
        self.writable()?;
        self.sync_active()?;
        let rev = self.last;
        let bytes = codec::encode_checkpoint(rev, earliest, state);
        let name = format!("ckpt-{rev:020}.ckpt");
        write_atomic(&self.dir, &name, &bytes)?;
        for entry in fs::read_dir(&self.dir).map_err(|e| io_err("cannot list", &self.dir, e))?.flatten() {
            let n = entry.file_name().to_string_lossy().into_owned();
            if parse_numbered(&n, "ckpt-", ".ckpt").is_some_and(|r| r != rev) {
                let _ = fs::remove_file(entry.path());
            }
        }
        self.last_checkpoint = rev;
        self.checkpoint_size = bytes.len() as u64;
        self.bytes_since_checkpoint = 0;
        Ok(())
    }
}
