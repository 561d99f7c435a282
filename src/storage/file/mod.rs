//! The durable log: a directory of append-only segment files plus checkpoints of the
//! derived state (the format and its promises are in docs/durability.md).
//!
//! ```text
//! <dir>/TIDEMARK                      manifest: "tidemark store\nformat 2\n"
//! <dir>/seg-<first revision>.log      24-byte header, then records: len u32 | crc32 u32 | commit;
//!                                     zero-padded to whole 4 KiB blocks; a seal when closed
//! <dir>/ckpt-<revision>.ckpt          the derived state after <revision>, written atomically
//! ```
//!
//! The directory itself is `flock`ed while the store is open.
//!
//! The newest commits are also kept in memory (`cache`, bounded by `cache_bytes`); older
//! ones are read back from the segments through a sparse per-segment index.
//!
//! Submodules: `segment` (segment files, reading them, rolling), `recovery` (open-time replay
//! and torn-tail repair), `checkpoint` (atomic files, checkpoints), `lock` (the directory
//! lock), `flusher` (the background sync of `"interval"`), `fs` (every file-system call, so
//! tests can simulate power loss: `sim`).

mod checkpoint;
mod flusher;
pub(crate) mod fs;
mod lock;
#[cfg(test)]
mod modeled;
#[cfg(test)]
mod power_loss;
mod recovery;
mod segment;
#[cfg(test)]
mod sim;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::codec::{self, FRAME, SEGMENT_HEADER};
use super::{MemoryLog, StateVisitor, Storage, StorageStats, TailRepair};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::options::{Options, SyncPolicy};
use crate::selector::Selector;
use checkpoint::write_atomic;
use flusher::FlushShared;
use fs::{Fs, FsFile, Mode};
use segment::{parse_numbered, Segment};

const MANIFEST: &str = "TIDEMARK";
const MANIFEST_TEXT: &str = "tidemark store\nformat 2\n";
/// Format 2: segments are created atomically, block-padded and sealed (docs/durability.md).
/// Format 1 stores are read, and upgraded by the first writable open.
const FORMAT: u32 = 2;
/// The lock file of format 1, which locked a file rather than the directory.
const OLD_LOCK: &str = "LOCK";
/// One sparse-index entry per this many bytes of segment.
const INDEX_STRIDE: u64 = 4096;
/// Bytes of cache accounted per event besides its key and value.
const EVENT_OVERHEAD: u64 = 64;
const READ_CHUNK: usize = 256 * 1024;
/// How far ahead of its records a segment written with `sync: "always"` grows, with zeros
/// written rather than a hole: an `fdatasync` that must also record a larger file and newly
/// allocated extents costs about twice one into space already written (335 against 154 µs
/// for a 9.6 KB group on the benchmark machine), so that cost is paid once a MiB, not once
/// a group. Zeros read as the end of the log, as a hole does.
const GROW_AHEAD: u64 = 1 << 20;
/// The zeros it writes, a chunk at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

pub struct FileLog {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    sync: SyncPolicy,
    read_only: bool,
    segment_size: u64,
    checkpoint_bytes: u64,
    cache_limit: u64,
    strict_recovery: bool,
    lock: Option<lock::Held>,
    segments: Vec<Segment>,
    /// The last segment, open for appending (None when read-only or closed).
    active: Option<Arc<dyn FsFile>>,
    /// The active segment file's length (format 2: whole blocks, beyond the last record).
    active_file_len: u64,
    /// What recovery cut off the end of the log.
    tail_repair: Option<TailRepair>,
    earliest: u64,
    /// The last revision written (and synced as the policy says).
    last: u64,
    staged_last: u64,
    staged: Vec<u8>,
    /// `(first revision, offset in staged)` of each staged record.
    staged_records: Vec<(u64, usize)>,
    staged_events: Vec<Event>,
    cache: MemoryLog,
    cache_used: u64,
    last_checkpoint: u64,
    checkpoint_size: u64,
    bytes_since_checkpoint: u64,
    /// Set when a sync failed: what reached the disk is unknown, so writing stops.
    failed: Option<String>,
    /// The active segment's header says it is written with "always".
    active_always: bool,
    flusher: Option<(Arc<FlushShared>, JoinHandle<()>)>,
    closed: bool,
}

fn io_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

/// Grows a file from `from` to `to` (both whole blocks): its length first, in one step, so
/// that it is whole blocks at every moment, then zeros over the new hole, so that the disk
/// space is allocated and written now rather than by the syncs of the commits put there.
fn grow_with_zeros(file: &dyn FsFile, from: u64, to: u64) -> io::Result<()> {
    file.set_len(to)?;
    for off in (from..to).step_by(ZEROS.len()) {
        let n = (to - off).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], off)?;
    }
    Ok(())
}

/// Zeroes `[off, end)` of a segment file in place, with one write: its length stays whole
/// blocks at every moment. (Shortening it and growing it back left, when the machine stopped
/// between the two, a file of part of a block, which recovery must refuse as cut by someone.)
/// A write torn by a power loss leaves damage after `off` again, which the next recovery cuts.
fn cut_after(file: &dyn FsFile, off: u64, end: u64) -> io::Result<()> {
    if end <= off {
        return Ok(());
    }
    file.write_all_at(&vec![0; (end - off) as usize], off)
}

/// Creates `dir` and its missing ancestors, syncing each new directory's parent so that the
/// new entries survive a power loss.
fn create_dirs(fs: &dyn Fs, dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut p = dir;
    loop {
        match fs.kind(p).map_err(|e| io_err("cannot access", p, e))? {
            Some(true) => break,
            Some(false) => {
                return Err(Error::InvalidArgument(format!("{} exists and is not a directory", p.display())))
            }
            None => missing.push(p),
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => break,
        }
    }
    for d in missing.iter().rev() {
        match fs.create_dir(d) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io_err("cannot create directory", d, e))
            }
            _ => {}
        }
        let parent = d.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        checkpoint::sync_dir(fs, parent)?;
    }
    Ok(())
}

/// A temporary file tidemark writes and renames into place (manifest, segment, checkpoint):
/// one left behind was interrupted and is garbage.
fn is_leftover_tmp(name: &str) -> bool {
    name.strip_suffix(".tmp").is_some_and(|n| {
        n == MANIFEST
            || parse_numbered(n, "seg-", ".log").is_some()
            || parse_numbered(n, "ckpt-", ".ckpt").is_some()
    })
}

/// Creates a store in `dir`, which has no manifest. A directory holding anything but the
/// leftovers of an interrupted creation is refused before anything is changed; the
/// leftovers are removed (under the lock). The first segment is written before the
/// manifest, so a store with a manifest always has its log.
fn create_store(fs: &dyn Fs, dir: &Path, names: &[String], opts: &Options) -> Result<()> {
    let shown = dir.display();
    let first = Segment::name(1);
    let (mut leftovers, mut log_files, mut others) = (Vec::new(), Vec::new(), Vec::new());
    for n in names {
        let leftover = n == OLD_LOCK
            || is_leftover_tmp(n)
            || (*n == first && segment::holds_no_record(fs, &dir.join(n)));
        if leftover {
            leftovers.push(n.as_str());
        } else if n.starts_with("seg-") || n.starts_with("ckpt-") {
            log_files.push(n.as_str());
        } else {
            others.push(n.as_str());
        }
    }
    if !log_files.is_empty() {
        return Err(Error::Corrupt(format!(
            "{shown}: the {MANIFEST} file is missing but log files are there ({})",
            log_files.join(", ")
        )));
    }
    if !others.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{shown} is not empty and holds no tidemark store (found {})",
            others.join(", ")
        )));
    }
    if opts.read_only {
        return Err(Error::NotFound(format!("{shown} holds no tidemark store (no {MANIFEST} file)")));
    }
    for n in leftovers {
        let path = dir.join(n);
        fs.remove(&path).map_err(|e| io_err("cannot remove the leftover", &path, e))?;
    }
    segment::create_segment_file(fs, dir, 1, opts.sync == SyncPolicy::Always)?;
    write_atomic(fs, dir, MANIFEST, MANIFEST_TEXT.as_bytes())
}

/// Appends a commit to the in-memory tail of the log, dropping its oldest commits while it
/// holds more than `limit` bytes.
fn push_cache(cache: &mut MemoryLog, used: &mut u64, limit: u64, commit: &[Event]) {
    if limit == 0 {
        *cache = MemoryLog::starting_at(commit[commit.len() - 1].revision + 1);
        return;
    }
    cache.append(commit).expect("the cache follows the log");
    *used += commit.iter().map(|e| (e.key.len() + e.value.len()) as u64 + EVENT_OVERHEAD).sum::<u64>();
    if *used > limit {
        cache.trim_front(|e| {
            let over = *used > limit;
            if over {
                *used -= (e.key.len() + e.value.len()) as u64 + EVENT_OVERHEAD;
            }
            over
        });
    }
}

impl FileLog {
    /// Opens (or creates) the store in `dir` on the file system `fs`, calling `apply` for
    /// every event of the derived state: first the checkpoint's keys (as PUT events), then the
    /// log after it.
    pub(crate) fn open_on(
        fs: Arc<dyn Fs>,
        dir: &Path,
        opts: &Options,
        apply: &mut dyn FnMut(&Event),
    ) -> Result<FileLog> {
        let shown = dir.display();
        match fs.kind(dir).map_err(|e| io_err("cannot access", dir, e))? {
            Some(true) => {}
            Some(false) => {
                return Err(Error::InvalidArgument(format!("{shown} exists and is not a directory")))
            }
            None if opts.read_only => {
                return Err(Error::NotFound(format!(
                    "no store at {shown} (opened read-only, so none is created)"
                )))
            }
            None => create_dirs(&*fs, dir)?,
        }
        let lock = lock::lock(&*fs, dir, opts.read_only)?;
        let names = fs.list(dir).map_err(|e| io_err("cannot list", dir, e))?;
        let format = if names.iter().any(|n| n == MANIFEST) {
            let manifest = dir.join(MANIFEST);
            let text = fs.read(&manifest).map_err(|e| io_err("cannot read", &manifest, e))?;
            let format = std::str::from_utf8(&text)
                .ok()
                .and_then(|t| t.strip_prefix("tidemark store\nformat "))
                .and_then(|rest| rest.trim_end().parse::<u32>().ok())
                .ok_or_else(|| Error::Corrupt(format!("{}: not a tidemark manifest", manifest.display())))?;
            if format > FORMAT {
                return Err(Error::InvalidArgument(format!(
                    "{shown} holds a store of format {format}; this release reads format {FORMAT} and older"
                )));
            }
            format
        } else {
            create_store(&*fs, dir, &names, opts)?;
            FORMAT
        };

        let mut log = FileLog {
            fs,
            dir: dir.to_path_buf(),
            sync: opts.sync,
            read_only: opts.read_only,
            segment_size: opts.segment_size,
            checkpoint_bytes: opts.checkpoint_bytes,
            cache_limit: opts.cache_bytes,
            strict_recovery: opts.strict_recovery,
            lock: Some(lock),
            segments: Vec::new(),
            active: None,
            active_file_len: 0,
            tail_repair: None,
            earliest: 1,
            last: 0,
            staged_last: 0,
            staged: Vec::new(),
            staged_records: Vec::new(),
            staged_events: Vec::new(),
            cache: MemoryLog::new(),
            cache_used: 0,
            last_checkpoint: 0,
            checkpoint_size: 0,
            bytes_since_checkpoint: 0,
            failed: None,
            active_always: true,
            flusher: None,
            closed: false,
        };
        log.recover(apply, format)?;
        if log.read_only {
            return Ok(log);
        }
        let last = log.segments.last().expect("a writable store has a segment");
        if !last.blocks || log.active_always != (log.sync == SyncPolicy::Always) {
            // The active segment's header must tell recovery how it was written, and new
            // records go to format-2 segments only.
            if last.len > SEGMENT_HEADER as u64 || !last.blocks {
                log.roll()?;
            } else {
                let (path, file) = segment::create_segment_file(
                    &*log.fs,
                    &log.dir,
                    last.base,
                    log.sync == SyncPolicy::Always,
                )?;
                log.active_always = log.sync == SyncPolicy::Always;
                log.active_file_len = codec::BLOCK;
                let seg = log.segments.last_mut().expect("a segment");
                seg.path = path;
                log.active = Some(file);
            }
        }
        if format < FORMAT {
            write_atomic(&*log.fs, &log.dir, MANIFEST, MANIFEST_TEXT.as_bytes())?;
        }
        if log.active.is_none() {
            let last = log.segments.last().expect("a writable store has a segment");
            let file =
                log.fs.open(&last.path, Mode::Write).map_err(|e| io_err("cannot open", &last.path, e))?;
            log.active_file_len = file.len().map_err(|e| io_err("cannot read", &last.path, e))?;
            log.active = Some(file);
        }
        if log.sync == SyncPolicy::Interval {
            log.start_flusher(Duration::from_millis(opts.sync_interval_ms));
        }
        Ok(log)
    }

    fn cache_push(&mut self, commit: &[Event]) {
        push_cache(&mut self.cache, &mut self.cache_used, self.cache_limit, commit);
    }

    fn discard_staged(&mut self) {
        self.staged.clear();
        self.staged_records.clear();
        self.staged_events.clear();
        self.staged_last = self.last;
    }

    fn writable(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        if self.read_only {
            return Err(Error::InvalidArgument(format!(
                "the store in {} was opened read-only",
                self.dir.display()
            )));
        }
        if let Some(why) = &self.failed {
            return Err(Error::io_other(format!(
                "the log in {} refuses writes since an earlier failure ({why}); reopen the store",
                self.dir.display()
            )));
        }
        Ok(())
    }

    fn check_flusher(&mut self) {
        if let Some((shared, _)) = &self.flusher {
            if let Some(e) = shared.error.lock().take() {
                self.failed = Some(e);
            }
        }
    }

    /// Syncs the active segment (before a checkpoint, so a checkpoint never gets ahead of
    /// the log on disk).
    fn sync_active(&mut self) -> Result<()> {
        if self.sync == SyncPolicy::Always {
            return Ok(());
        }
        if let Some(f) = &self.active {
            if let Err(e) = f.sync() {
                let path = &self.segments.last().expect("active").path;
                self.failed = Some(format!("cannot sync {}: {e}", path.display()));
                return Err(io_err("cannot sync", path, e));
            }
        }
        Ok(())
    }
}

impl Storage for FileLog {
    fn append(&mut self, commit: &[Event]) -> Result<()> {
        self.writable()?;
        let expected = self.staged_last + 1;
        if commit.first().map(|e| e.revision) != Some(expected) {
            return Err(Error::InvalidArgument(format!("commit must start at revision {expected}")));
        }
        let at = self.staged.len();
        codec::encode_commit(commit, &mut self.staged)?;
        self.staged_records.push((expected, at));
        self.staged_events.extend(commit.iter().cloned());
        self.staged_last = commit[commit.len() - 1].revision;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        self.check_flusher();
        if let Err(e) = self.writable() {
            self.discard_staged();
            return Err(e);
        }
        let active_len = self.segments.last().expect("active segment").len;
        if active_len >= self.segment_size && active_len > SEGMENT_HEADER as u64 {
            if let Err(e) = self.roll() {
                self.discard_staged();
                return Err(e);
            }
        }
        let seg = self.segments.last().expect("active segment");
        let file = self.active.clone().expect("a writable store has an active segment");
        let base_off = seg.len;
        // Format 2: the file is first grown (whole blocks, at least one zero frame after the
        // new records), so a file whose length is not whole blocks was shortened by someone.
        let need = (base_off + self.staged.len() as u64 + FRAME as u64).div_ceil(codec::BLOCK) * codec::BLOCK;
        if need > self.active_file_len {
            let grown = match self.sync {
                SyncPolicy::Always => {
                    let limit = self.segment_size.div_ceil(codec::BLOCK) * codec::BLOCK;
                    let ahead = (need + GROW_AHEAD).min(limit).max(need);
                    // A disk (or a file size limit) without room for the MiB still takes
                    // what fits: then the file grows only as far as these records need.
                    grow_with_zeros(&*file, self.active_file_len, ahead)
                        .map(|()| ahead)
                        .or_else(|_| file.set_len(need).map(|()| need))
                }
                _ => file.set_len(need).map(|()| need),
            };
            match grown {
                Ok(len) => self.active_file_len = len,
                Err(e) => {
                    let err = io_err("cannot extend", &seg.path, e);
                    self.discard_staged();
                    return Err(err);
                }
            }
        }
        if let Err(e) = file.write_all_at(&self.staged, base_off) {
            // Nothing of a failed write may stay behind, or the next write would follow garbage.
            if let Err(e2) = cut_after(&*file, base_off, base_off + self.staged.len() as u64) {
                self.failed = Some(format!("cannot cut a failed write of {}: {e2}", seg.path.display()));
            }
            let err = io_err("cannot write", &seg.path, e);
            self.discard_staged();
            return Err(err);
        }
        match self.sync {
            SyncPolicy::Always => {
                if let Err(e) = file.sync() {
                    // What reached the disk is unknown: refuse further writes (reads go on).
                    let _ = cut_after(&*file, base_off, base_off + self.staged.len() as u64);
                    self.failed = Some(format!("cannot sync {}: {e}", seg.path.display()));
                    let err = io_err("cannot sync", &seg.path, e);
                    self.discard_staged();
                    return Err(err);
                }
            }
            SyncPolicy::Interval => {
                if let Some((shared, _)) = &self.flusher {
                    shared.dirty.store(true, Ordering::Release);
                }
            }
            SyncPolicy::None => {}
        }
        // Durable (as promised): make it readable.
        let seg = self.segments.last_mut().expect("active segment");
        {
            let mut slot = seg.index.lock();
            let index = slot.get_or_insert_with(Vec::new);
            let mut last_indexed = index.last().map_or(0, |&(_, off)| off);
            for &(first, at) in &self.staged_records {
                let off = base_off + at as u64;
                if index.is_empty() || off - last_indexed >= INDEX_STRIDE {
                    index.push((first, off));
                    last_indexed = off;
                }
            }
        }
        let written = self.staged.len() as u64;
        seg.len += written;
        self.bytes_since_checkpoint += written;
        self.last = self.staged_last;
        let events = std::mem::take(&mut self.staged_events);
        let mut start = 0;
        for (n, e) in events.iter().enumerate() {
            if e.commit_end {
                self.cache_push(&events[start..=n]);
                start = n + 1;
            }
        }
        self.staged_events = events;
        self.discard_staged();
        Ok(())
    }

    fn scan(
        &self,
        selector: &Selector,
        from: u64,
        to: u64,
        limit: usize,
        visit: &mut dyn FnMut(&Event),
    ) -> Result<u64> {
        let limit = limit.max(1);
        let (from, to) = super::scan_range(from, to, self.earliest, self.last)?;
        if from > to {
            return Ok(to + 1);
        }
        let cache_base = self.cache.earliest_revision();
        let mut matched = 0usize;
        if from < cache_base {
            let disk_to = to.min(cache_base - 1);
            if let Some(next) = self.scan_disk(selector, from, disk_to, limit, &mut matched, visit)? {
                return Ok(next);
            }
            if to < cache_base {
                return Ok(to + 1);
            }
        }
        self.cache.scan(selector, from.max(cache_base), to, limit - matched.min(limit - 1), visit)
    }

    fn earliest_revision(&self) -> u64 {
        self.earliest
    }

    fn last_revision(&self) -> u64 {
        self.staged_last
    }

    fn compact(&mut self, keep: u64, state: StateVisitor<'_>) -> Result<u64> {
        self.writable()?;
        let keep = keep.min(self.last + 1);
        if keep <= self.earliest {
            return Ok(0);
        }
        let dropped = keep - self.earliest;
        // The checkpoint (at `last`, >= keep - 1) holds everything the dropped entries held.
        self.write_checkpoint(keep, state)?;
        self.earliest = keep;
        if self.cache.earliest_revision() < keep {
            let _ = self.cache.compact(keep, &mut |_| {});
            self.cache_used = 0;
            let mut used = 0;
            let _ = self.cache.scan(&Selector::every_key(), keep, self.last, usize::MAX, &mut |e| {
                used += (e.key.len() + e.value.len()) as u64 + EVENT_OVERHEAD
            });
            self.cache_used = used;
        }
        // A wholly compacted active segment is closed so it can be deleted too.
        let active = self.segments.last().expect("active segment");
        if self.last < keep && active.len > SEGMENT_HEADER as u64 {
            self.roll()?;
        }
        let mut removed_any = false;
        while self.segments.len() >= 2
            && self.segments[1].base <= keep
            && self.segments[1].base - 1 <= self.last_checkpoint
        {
            let seg = self.segments.remove(0);
            self.fs.remove(&seg.path).map_err(|e| io_err("cannot remove", &seg.path, e))?;
            removed_any = true;
        }
        if removed_any {
            self.sync_dir()?;
        }
        Ok(dropped)
    }

    fn checkpoint_if_due(&mut self, state: StateVisitor<'_>) -> Result<()> {
        let due = self.checkpoint_bytes > 0
            && !self.read_only
            && self.bytes_since_checkpoint >= self.checkpoint_bytes.max(self.checkpoint_size);
        if !due {
            return Ok(());
        }
        let earliest = self.earliest;
        self.write_checkpoint(earliest, state)
    }

    fn check_writable(&self) -> Result<()> {
        self.writable()
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.stop_flusher();
        if let Some(f) = self.active.take() {
            if self.sync != SyncPolicy::Always {
                let _ = f.sync();
            }
        }
        self.lock = None;
        self.closed = true;
    }

    fn stats(&self) -> StorageStats {
        StorageStats {
            durable: true,
            path: Some(self.dir.display().to_string()),
            bytes_on_disk: self.segments.iter().map(|s| s.len).sum::<u64>()
                + self.checkpoint_size
                + MANIFEST_TEXT.len() as u64,
            segments: self.segments.len() as u64,
            sync: Some(self.sync.name()),
            read_only: self.read_only,
            last_checkpoint_revision: self.last_checkpoint,
            cached_events: self.cache.len() as u64,
            tail_repair: self.tail_repair.clone(),
            entries_read: self.cache.stats().entries_read,
        }
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        self.close();
    }
}
