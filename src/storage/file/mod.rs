//! The durable log: a directory of append-only segment files plus checkpoints of the
//! derived state (the format and its promises are in docs/durability.md).
//!
//! ```text
//! <dir>/TIDEMARK                      manifest: "tidemark store\nformat 1\n"
//! <dir>/LOCK                          flock'ed while the store is open
//! <dir>/seg-<first revision>.log      24-byte header, then records: len u32 | crc32 u32 | commit
//! <dir>/ckpt-<revision>.ckpt          the derived state after <revision>, written atomically
//! ```
//!
//! The newest commits are also kept in memory (`cache`, bounded by `cache_bytes`); older
//! ones are read back from the segments through a sparse per-segment index.
//!
//! Submodules: `segment` (segment files, reading them, rolling), `recovery` (open-time replay
//! and torn-tail repair), `checkpoint` (atomic files, checkpoints), `lock` (the `LOCK` file),
//! `flusher` (the background sync of `"interval"`).

mod checkpoint;
mod flusher;
mod lock;
mod recovery;
mod segment;

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::codec::{self, SEGMENT_HEADER};
use super::{MemoryLog, StateVisitor, Storage, StorageStats};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::options::{Options, SyncPolicy};
use crate::selector::Selector;
use checkpoint::{sync_dir, write_atomic};
use flusher::FlushShared;
use segment::Segment;

const MANIFEST: &str = "TIDEMARK";
const MANIFEST_TEXT: &str = "tidemark store\nformat 1\n";
const FORMAT: u32 = 1;
const LOCK: &str = "LOCK";
/// One sparse-index entry per this many bytes of segment.
const INDEX_STRIDE: u64 = 4096;
/// Bytes of cache accounted per event besides its key and value.
const EVENT_OVERHEAD: u64 = 64;
const READ_CHUNK: usize = 256 * 1024;

pub struct FileLog {
    dir: PathBuf,
    sync: SyncPolicy,
    read_only: bool,
    segment_size: u64,
    checkpoint_bytes: u64,
    cache_limit: u64,
    lock: Option<File>,
    segments: Vec<Segment>,
    /// The last segment, open for appending (None when read-only or closed).
    active: Option<Arc<File>>,
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
    /// Opens (or creates) the store in `dir`, calling `apply` for every event of the derived
    /// state: first the checkpoint's keys (as PUT events), then the log after it.
    pub fn open(dir: &Path, opts: &Options, apply: &mut dyn FnMut(&Event)) -> Result<FileLog> {
        let shown = dir.display();
        match fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::InvalidArgument(format!("{shown} exists and is not a directory")))
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if opts.read_only {
                    return Err(Error::NotFound(format!(
                        "no store at {shown} (opened read-only, so none is created)"
                    )));
                }
                fs::create_dir_all(dir).map_err(|e| io_err("cannot create directory", dir, e))?;
            }
            Err(e) => return Err(io_err("cannot access", dir, e)),
        }
        let manifest = dir.join(MANIFEST);
        let has_manifest = manifest.exists();
        if opts.read_only && !has_manifest {
            return Err(Error::NotFound(format!("{shown} holds no tidemark store (no {MANIFEST} file)")));
        }
        let lock = lock::lock(dir, opts.read_only)?;
        if has_manifest {
            let text = fs::read_to_string(&manifest).map_err(|e| io_err("cannot read", &manifest, e))?;
            let format = text
                .strip_prefix("tidemark store\nformat ")
                .and_then(|rest| rest.trim_end().parse::<u32>().ok())
                .ok_or_else(|| Error::Corrupt(format!("{}: not a tidemark manifest", manifest.display())))?;
            if format > FORMAT {
                return Err(Error::InvalidArgument(format!(
                    "{shown} holds a store of format {format}; this release reads format {FORMAT} and older"
                )));
            }
        } else {
            let others: Vec<String> = fs::read_dir(dir)
                .map_err(|e| io_err("cannot list", dir, e))?
                .filter_map(|d| d.ok())
                .map(|d| d.file_name().to_string_lossy().into_owned())
                .filter(|n| n != LOCK)
                .collect();
            if others.iter().any(|n| n.starts_with("seg-") || n.starts_with("ckpt-")) {
                return Err(Error::Corrupt(format!(
                    "{shown}: the {MANIFEST} file is missing but log files are there"
                )));
            }
            if !others.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "{shown} is not empty and holds no tidemark store (found {})",
                    others.join(", ")
                )));
            }
            write_atomic(dir, MANIFEST, MANIFEST_TEXT.as_bytes())?;
        }

        let mut log = FileLog {
            dir: dir.to_path_buf(),
            sync: opts.sync,
            read_only: opts.read_only,
            segment_size: opts.segment_size,
            checkpoint_bytes: opts.checkpoint_bytes,
            cache_limit: opts.cache_bytes,
            lock,
            segments: Vec::new(),
            active: None,
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
        log.recover(apply)?;
        if !log.read_only && log.active_always != (log.sync == SyncPolicy::Always) {
            // The active segment's header must tell recovery how it was written.
            let last = log.segments.last().expect("a writable store has a segment");
            if last.len > SEGMENT_HEADER as u64 {
                log.roll_unopened()?;
            } else {
                let (path, base) = (last.path.clone(), last.base);
                log.write_segment_header(&path, base)?;
                log.active_always = log.sync == SyncPolicy::Always;
            }
        }
        if !log.read_only {
            let last = log.segments.last().expect("a writable store has a segment");
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&last.path)
                .map_err(|e| io_err("cannot open", &last.path, e))?;
            log.active = Some(Arc::new(file));
            if log.sync == SyncPolicy::Interval {
                log.start_flusher(Duration::from_millis(opts.sync_interval_ms));
            }
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
            if let Err(e) = f.sync_data() {
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
        if let Err(e) = file.write_all_at(&self.staged, base_off) {
            // Nothing of a failed write may stay behind, or the next write would follow garbage.
            if let Err(e2) = file.set_len(base_off) {
                self.failed = Some(format!("cannot cut a failed write of {}: {e2}", seg.path.display()));
            }
            let err = io_err("cannot write", &seg.path, e);
            self.discard_staged();
            return Err(err);
        }
        match self.sync {
            SyncPolicy::Always => {
                if let Err(e) = file.sync_data() {
                    // What reached the disk is unknown: refuse further writes (reads go on).
                    let _ = file.set_len(base_off);
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
            fs::remove_file(&seg.path).map_err(|e| io_err("cannot remove", &seg.path, e))?;
            removed_any = true;
        }
        if removed_any {
            sync_dir(&self.dir)?;
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
                let _ = f.sync_data();
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
        }
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        self.close();
    }
}
