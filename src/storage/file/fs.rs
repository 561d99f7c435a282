//! The file-system calls the directory log makes, behind one trait: `RealFs` is the
//! operating system's; the tests add a simulated disk (`sim`) that drops what was not
//! synced at a chosen cut, to test power loss without root or FUSE.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// How `Fs::open` opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Reading an existing file.
    Read,
    /// Reading and writing an existing file.
    Write,
    /// Creating the file (emptied if it exists) for reading and writing.
    Create,
}

/// An open file. Several threads may use one at once (positioned reads and writes).
pub(crate) trait FsFile: Send + Sync {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Forces the file's data and size to stable storage (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;

    fn read_exact_at(&self, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, off)? {
                0 => return Err(io::Error::new(ErrorKind::UnexpectedEof, "file ends early")),
                n => {
                    buf = &mut buf[n..];
                    off += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// What `Fs::lock` found.
pub(crate) enum Lock {
    /// The lock, held until dropped.
    Held(Box<dyn Send + Sync>),
    /// Another open store holds it.
    Busy,
}

pub(crate) trait Fs: Send + Sync {
    /// `Some(true)` for a directory, `Some(false)` for anything else, `None` when absent.
    fn kind(&self, path: &Path) -> io::Result<Option<bool>>;
    /// Creates one directory (its parent must exist).
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// The names in a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn open(&self, path: &Path, mode: Mode) -> io::Result<Arc<dyn FsFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes a directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Locks the directory itself (`flock` on it: exclusive, or shared for read-only opens),
    /// so that locking creates no file.
    fn lock(&self, dir: &Path, shared: bool) -> io::Result<Lock>;

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open(path, Mode::Read)?;
        let mut buf = vec![0u8; f.len()? as usize];
        f.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// The operating system's file system.
pub(crate) struct RealFs;

impl FsFile for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, off)
    }

    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, off)
    }

    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl Fs for RealFs {
    fn kind(&self, path: &Path) -> io::Result<Option<bool>> {
        match fs::metadata(path) {
            Ok(m) => Ok(Some(m.is_dir())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect()
    }

    fn open(&self, path: &Path, mode: Mode) -> io::Result<Arc<dyn FsFile>> {
        let f = match mode {
            Mode::Read => File::open(path)?,
            Mode::Write => OpenOptions::new().read(true).write(true).open(path)?,
            Mode::Create => {
                OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?
            }
        };
        Ok(Arc::new(f))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, dir: &Path, shared: bool) -> io::Result<Lock> {
        let f = File::open(dir)?;
        match if shared { f.try_lock_shared() } else { f.try_lock() } {
            Ok(()) => Ok(Lock::Held(Box::new(f))),
            Err(TryLockError::WouldBlock) => Ok(Lock::Busy),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}
