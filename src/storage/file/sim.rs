//! A simulated disk for the power-loss tests (the idea of SQLite's crash-test VFS): it keeps,
//! per file, what was written and what was synced, and per directory which entries were
//! synced. At a chosen cut (the N-th mutating call) the machine "stops": that call and every
//! later one fail, and the disk image a reboot sees is either everything written (a process
//! crash) or only what was synced plus, per file, a random prefix of the unsynced writes, the
//! last of them possibly torn at a 512-byte sector (a power loss).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::fs::{Fs, FsFile, Lock, Mode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Crash {
    /// The process dies: everything written stays (the OS has it).
    Process,
    /// The machine loses power: only what was synced stays, plus a random prefix of the rest.
    Power,
    /// As `Power`, and the last write kept of a file may be torn.
    PowerTorn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(usize),
}

enum Pending {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

fn apply(data: &mut Vec<u8>, p: &Pending, torn_at: Option<usize>) {
    match p {
        Pending::Write(off, bytes) => {
            let bytes = &bytes[..torn_at.unwrap_or(bytes.len()).min(bytes.len())];
            let end = *off as usize + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[*off as usize..end].copy_from_slice(bytes);
        }
        Pending::SetLen(len) => data.resize(*len as usize, 0),
    }
}

#[derive(Default)]
struct State {
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, Entry>,
    durable_names: BTreeMap<PathBuf, Entry>,
    ops: u64,
    cut: Option<u64>,
    dead: bool,
    /// What the cut call was (for the test's tally).
    cut_call: String,
    locks: HashMap<PathBuf, (usize, bool)>,
}

impl State {
    /// Counts a mutating call; an error once the cut is reached.
    fn tick(&mut self, what: &str, path: &Path) -> io::Result<()> {
        if self.dead {
            return Err(io::Error::other("simulated crash"));
        }
        self.ops += 1;
        if self.cut == Some(self.ops) {
            self.dead = true;
            self.cut_call =
                format!("{what} {}", path.file_name().map_or(String::new(), |n| n.to_string_lossy().into()));
            return Err(io::Error::other("simulated crash"));
        }
        Ok(())
    }

    fn alive(&self) -> io::Result<()> {
        if self.dead {
            return Err(io::Error::other("simulated crash"));
        }
        Ok(())
    }

    fn entry(&self, path: &Path) -> io::Result<Entry> {
        self.names.get(path).copied().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn parent_is_dir(&self, path: &Path) -> io::Result<()> {
        match path.parent().and_then(|p| self.names.get(p)) {
            Some(Entry::Dir) => Ok(()),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such directory")),
        }
    }
}

/// The simulated disk; clones share it.
#[derive(Clone)]
pub(crate) struct SimFs(Arc<Mutex<State>>);

impl SimFs {
    pub fn new() -> SimFs {
        let mut st = State::default();
        st.names.insert(PathBuf::from("/"), Entry::Dir);
        st.durable_names.insert(PathBuf::from("/"), Entry::Dir);
        SimFs(Arc::new(Mutex::new(st)))
    }

    /// Mutating calls made so far.
    pub fn ops(&self) -> u64 {
        self.0.lock().ops
    }

    /// The machine stops at the `n`-th mutating call from now on (None: never).
    pub fn cut_after(&self, n: Option<u64>) {
        let mut st = self.0.lock();
        st.cut = n.map(|n| st.ops + n);
    }

    /// The call the machine stopped at, if it did.
    pub fn stopped_at(&self) -> Option<String> {
        let st = self.0.lock();
        st.dead.then(|| st.cut_call.clone())
    }

    /// The disk as a reboot after `crash` finds it (`seed` picks what unsynced data stays).
    /// Every lock is released; everything on the new disk counts as synced.
    pub fn reboot(&self, crash: Crash, seed: u64) {
        let mut st = self.0.lock();
        let mut rng = seed;
        let mut next = move |n: u64| {
            rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = rng;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (x ^ (x >> 31)) % n.max(1)
        };
        if crash != Crash::Process {
            // A synced entry whose directory's own entry was not synced is lost with it.
            let durable = st.durable_names.clone();
            st.names = durable
                .iter()
                .filter(|(p, _)| p.ancestors().skip(1).all(|a| durable.get(a) == Some(&Entry::Dir)))
                .map(|(p, e)| (p.clone(), *e))
                .collect();
            for inode in &mut st.inodes {
                let mut data = inode.durable.clone();
                let keep = next(inode.pending.len() as u64 + 1) as usize;
                for (i, p) in inode.pending.iter().take(keep).enumerate() {
                    let torn = match p {
                        Pending::Write(_, b)
                            if crash == Crash::PowerTorn && i + 1 == keep && b.len() > 512 =>
                        {
                            Some(next(b.len() as u64 / 512 + 1) as usize * 512)
                        }
                        _ => None,
                    };
                    apply(&mut data, p, torn);
                }
                inode.data = data;
            }
        }
        for inode in &mut st.inodes {
            inode.durable = inode.data.clone();
            inode.pending.clear();
        }
        st.durable_names = st.names.clone();
        st.locks.clear();
        st.dead = false;
        st.cut = None;
    }
}

struct SimFile {
    fs: SimFs,
    inode: usize,
    path: PathBuf,
}

impl FsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let st = self.fs.0.lock();
        st.alive()?;
        let data = &st.inodes[self.inode].data;
        let off = (off as usize).min(data.len());
        let n = buf.len().min(data.len() - off);
        buf[..n].copy_from_slice(&data[off..off + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut st = self.fs.0.lock();
        st.tick("write", &self.path)?;
        let p = Pending::Write(off, buf.to_vec());
        let inode = &mut st.inodes[self.inode];
        apply(&mut inode.data, &p, None);
        inode.pending.push(p);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.fs.0.lock();
        st.tick("sync", &self.path)?;
        let inode = &mut st.inodes[self.inode];
        inode.durable = inode.data.clone();
        inode.pending.clear();
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.fs.0.lock();
        st.tick("set_len", &self.path)?;
        let p = Pending::SetLen(len);
        let inode = &mut st.inodes[self.inode];
        apply(&mut inode.data, &p, None);
        inode.pending.push(p);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let st = self.fs.0.lock();
        st.alive()?;
        Ok(st.inodes[self.inode].data.len() as u64)
    }
}

struct SimLock {
    fs: SimFs,
    dir: PathBuf,
    shared: bool,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.fs.0.lock();
        if let Some(l) = st.locks.get_mut(&self.dir) {
            if self.shared {
                l.0 -= 1;
            } else {
                l.1 = false;
            }
        }
    }
}

impl Fs for SimFs {
    fn kind(&self, path: &Path) -> io::Result<Option<bool>> {
        let st = self.0.lock();
        st.alive()?;
        Ok(st.names.get(path).map(|e| *e == Entry::Dir))
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.0.lock();
        st.tick("create_dir", path)?;
        st.parent_is_dir(path)?;
        if st.names.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"));
        }
        st.names.insert(path.to_path_buf(), Entry::Dir);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.0.lock();
        st.alive()?;
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .map(|p| p.file_name().expect("a name").to_string_lossy().into_owned())
            .collect())
    }

    fn open(&self, path: &Path, mode: Mode) -> io::Result<Arc<dyn FsFile>> {
        let mut st = self.0.lock();
        let inode = match (mode, st.names.get(path).copied()) {
            (_, Some(Entry::Dir)) => return Err(io::Error::other("is a directory")),
            (Mode::Create, existing) => {
                st.tick("create", path)?;
                st.parent_is_dir(path)?;
                match existing {
                    Some(Entry::File(i)) => {
                        let p = Pending::SetLen(0);
                        apply(&mut st.inodes[i].data, &p, None);
                        st.inodes[i].pending.push(p);
                        i
                    }
                    _ => {
                        st.inodes.push(Inode::default());
                        let i = st.inodes.len() - 1;
                        st.names.insert(path.to_path_buf(), Entry::File(i));
                        i
                    }
                }
            }
            (_, Some(Entry::File(i))) => {
                st.alive()?;
                i
            }
            (_, None) => {
                st.alive()?;
                return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
            }
        };
        Ok(Arc::new(SimFile { fs: self.clone(), inode, path: path.to_path_buf() }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.0.lock();
        st.tick("rename", to)?;
        let e = st.entry(from)?;
        st.names.remove(from);
        st.names.insert(to.to_path_buf(), e);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.0.lock();
        st.tick("remove", path)?;
        st.entry(path)?;
        st.names.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.0.lock();
        st.tick("sync_dir", dir)?;
        let current: Vec<(PathBuf, Entry)> =
            st.names.iter().filter(|(p, _)| p.parent() == Some(dir)).map(|(p, e)| (p.clone(), *e)).collect();
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        st.durable_names.extend(current);
        Ok(())
    }

    fn lock(&self, dir: &Path, shared: bool) -> io::Result<Lock> {
        let mut st = self.0.lock();
        st.alive()?;
        let l = st.locks.entry(dir.to_path_buf()).or_insert((0, false));
        if l.1 || (!shared && l.0 > 0) {
            return Ok(Lock::Busy);
        }
        if shared {
            l.0 += 1;
        } else {
            l.1 = true;
        }
        Ok(Lock::Held(Box::new(SimLock { fs: self.clone(), dir: dir.to_path_buf(), shared })))
    }
}
