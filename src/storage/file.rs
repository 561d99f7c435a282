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

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::codec::{self, Frame, FRAME, SEGMENT_HEADER};
use super::{MemoryLog, StateVisitor, Storage, StorageStats};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::options::{Options, SyncPolicy};
use crate::selector::Selector;

const MANIFEST: &str = "TIDEMARK";
const MANIFEST_TEXT: &str = "tidemark store\nformat 1\n";
const FORMAT: u32 = 1;
const LOCK: &str = "LOCK";
/// One sparse-index entry per this many bytes of segment.
const INDEX_STRIDE: u64 = 4096;
/// Bytes of cache accounted per event besides its key and value.
const EVENT_OVERHEAD: u64 = 64;
const READ_CHUNK: usize = 256 * 1024;

struct Segment {
    base: u64,
    path: PathBuf,
    /// Bytes of whole records (with the header); the file holds exactly this much.
    len: u64,
    /// Sparse index `(first revision of a record, its offset)`; built on first use for
    /// segments not read at open.
    index: Mutex<Option<Vec<(u64, u64)>>>,
}

impl Segment {
    fn name(base: u64) -> String {
        format!("seg-{base:020}.log")
    }
}

struct FlushShared {
    file: Mutex<Option<Arc<File>>>,
    dirty: AtomicBool,
    stop: Mutex<bool>,
    cond: Condvar,
    error: Mutex<Option<String>>,
}

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
    Error::Io(format!("{what} {}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("cannot sync directory", dir, e))
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, fsync, rename, fsync of the
/// directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
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

/// Reads the records of a segment from some offset on, with a bounded buffer.
struct SegmentReader {
    file: File,
    end: u64,
    buf: Vec<u8>,
    buf_off: u64,
    pos: usize,
    filled: usize,
}

impl SegmentReader {
    fn open(path: &Path, start: u64, end: u64) -> Result<SegmentReader> {
        let file = File::open(path).map_err(|e| io_err("cannot open", path, e))?;
        Ok(SegmentReader { file, end, buf: Vec::new(), buf_off: start, pos: 0, filled: 0 })
    }

    fn offset(&self) -> u64 {
        self.buf_off + self.pos as u64
    }

    /// Makes at least `n` bytes (or all up to `end`) available at `pos`.
    fn ensure(&mut self, n: usize) -> io::Result<()> {
        let want = (n as u64).min(self.end.saturating_sub(self.offset())) as usize;
        if self.filled - self.pos >= want {
            return Ok(());
        }
        self.buf.copy_within(self.pos..self.filled, 0);
        self.buf_off += self.pos as u64;
        self.filled -= self.pos;
        self.pos = 0;
        let cap = want.max(READ_CHUNK).min((self.end - self.buf_off) as usize);
        if self.buf.len() < cap {
            self.buf.resize(cap, 0);
        }
        while self.filled < want {
            let room = (self.buf.len() as u64).min(self.end - self.buf_off) as usize;
            let n = self.file.read_at(&mut self.buf[self.filled..room], self.buf_off + self.filled as u64)?;
            if n == 0 {
                break;
            }
            self.filled += n;
        }
        Ok(())
    }

    /// The frame at the current offset (advancing past it if it is a whole record), or None
    /// at the end.
    fn next(&mut self) -> io::Result<Option<(u64, Frame<'_>)>> {
        let off = self.offset();
        if off >= self.end {
            return Ok(None);
        }
        self.ensure(FRAME)?;
        if self.filled - self.pos >= FRAME {
            let len =
                u32::from_le_bytes(self.buf[self.pos..self.pos + 4].try_into().expect("4 bytes")) as usize;
            if len <= codec::MAX_RECORD {
                self.ensure(FRAME + len)?;
            }
        }
        let start = self.pos;
        let frame = match codec::read_frame(&self.buf[start..self.filled]) {
            Frame::Record(_, n) => {
                self.pos += n;
                Frame::Record(&self.buf[start + FRAME..start + n], n)
            }
            Frame::Incomplete => Frame::Incomplete,
            Frame::Bad(why) => Frame::Bad(why),
        };
        Ok(Some((off, frame)))
    }
}

/// True when a whole, valid record of a revision at or after `expected` starts anywhere in
/// `path` after `from`: then damage at `from` is not a torn tail but corruption.
fn valid_record_after(path: &Path, from: u64, end: u64, expected: u64) -> Result<bool> {
    let file = File::open(path).map_err(|e| io_err("cannot open", path, e))?;
    let start = from + 1;
    if start >= end {
        return Ok(false);
    }
    let mut rest = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut rest, start).map_err(|e| io_err("cannot read", path, e))?;
    for p in 0..rest.len() {
        let b = &rest[p..];
        if b.len() < FRAME + 3 {
            break;
        }
        let len = u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
        if len < 3 || FRAME + len > b.len() {
            continue;
        }
        if let Frame::Record(payload, _) = codec::read_frame(b) {
            if codec::record_span(payload).is_some_and(|(first, _)| first >= expected) {
                return Ok(true);
            }
        }
    }
    Ok(false)
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

fn parse_numbered(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
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
        let lock = Self::lock(dir, opts.read_only)?;
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

    fn lock(dir: &Path, read_only: bool) -> Result<Option<File>> {
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

    /// Loads the newest checkpoint and replays the log after it; cuts a torn tail.
    fn recover(&mut self, apply: &mut dyn FnMut(&Event)) -> Result<()> {
        let mut seg_bases = Vec::new();
        let mut checkpoints = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_err("cannot list", &self.dir, e))? {
            let entry = entry.map_err(|e| io_err("cannot list", &self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(base) = parse_numbered(&name, "seg-", ".log") {
                seg_bases.push(base);
            } else if let Some(rev) = parse_numbered(&name, "ckpt-", ".ckpt") {
                checkpoints.push(rev);
            } else if name.ends_with(".tmp") && !self.read_only {
                let _ = fs::remove_file(entry.path());
            }
        }
        seg_bases.sort_unstable();
        checkpoints.sort_unstable();

        // The newest checkpoint is the state to start from; older ones are no longer needed.
        let mut ckpt_rev = 0;
        if let Some(&rev) = checkpoints.last() {
            let path = self.dir.join(format!("ckpt-{rev:020}.ckpt"));
            let bytes = fs::read(&path).map_err(|e| io_err("cannot read", &path, e))?;
            let header = codec::decode_checkpoint(&bytes, &mut |e| apply(&e))
                .map_err(|why| Error::Corrupt(format!("checkpoint {}: {why}", path.display())))?;
            if header.revision != rev {
                return Err(Error::Corrupt(format!(
                    "checkpoint {} holds revision {}",
                    path.display(),
                    header.revision
                )));
            }
            ckpt_rev = rev;
            self.earliest = header.earliest.max(1);
            self.last_checkpoint = rev;
            self.checkpoint_size = bytes.len() as u64;
            if !self.read_only {
                for &old in &checkpoints[..checkpoints.len() - 1] {
                    let _ = fs::remove_file(self.dir.join(format!("ckpt-{old:020}.ckpt")));
                }
            }
        }

        // Segments wholly below the earliest retained revision are leftovers of a compaction
        // interrupted after its checkpoint.
        while seg_bases.len() >= 2 && seg_bases[1] <= self.earliest && seg_bases[1] <= ckpt_rev + 1 {
            let path = self.dir.join(Segment::name(seg_bases[0]));
            if !self.read_only {
                fs::remove_file(&path).map_err(|e| io_err("cannot remove", &path, e))?;
            }
            seg_bases.remove(0);
        }

        if seg_bases.is_empty() {
            if ckpt_rev == 0 && !checkpoints.is_empty() {
                return Err(Error::Corrupt(format!("{}: no log segment", self.dir.display())));
            }
            self.last = ckpt_rev;
            self.earliest = self.earliest.max(1).min(ckpt_rev + 1);
            if !self.read_only {
                self.create_segment(ckpt_rev + 1)?;
            }
            self.finish_recovery();
            return Ok(());
        }
        let first_base = seg_bases[0];
        if ckpt_rev == 0 && first_base != 1 {
            return Err(Error::Corrupt(format!(
                "{}: the log starts at revision {first_base} and no checkpoint covers the revisions before it",
                self.dir.display()
            )));
        }
        if first_base > ckpt_rev + 1 {
            return Err(Error::Corrupt(format!(
                "{}: the checkpoint ends at revision {ckpt_rev} but the log starts at revision {first_base}",
                self.dir.display()
            )));
        }
        self.earliest = self.earliest.max(first_base);

        // Replay from the segment holding ckpt_rev + 1. A helper thread reads, checks and
        // decodes the segments while this one applies the events (and keeps the newest of
        // them in the cache).
        let start = seg_bases.iter().rposition(|&b| b <= ckpt_rev + 1).expect("first_base <= ckpt_rev + 1");
        // Batches are raw record payloads (each prefixed by its u32 length): decoding happens
        // on this thread so the keys and values are allocated where they are later freed.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, bool)>(8);
        let (mut cache, mut used, limit) = (MemoryLog::new(), 0u64, self.cache_limit);
        let this = &*self;
        let scanned = std::thread::scope(|scope| {
            let producer = std::thread::Builder::new()
                .name("tidemark-replay".into())
                .spawn_scoped(scope, move || this.read_segments(&seg_bases, start, ckpt_rev, &tx));
            let producer = match producer {
                Ok(p) => p,
                Err(e) => return Err(Error::Io(format!("cannot start a replay thread: {e}"))),
            };
            let mut caching = false;
            let mut events = Vec::new();
            let mut malformed = None;
            for (batch, cached) in rx {
                let mut r = codec::Reader::new(&batch);
                while let Some(len) = r.bytes(4) {
                    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                    let payload = r.bytes(len).expect("whole payloads");
                    if codec::decode_commit(payload, &mut events).is_none() {
                        malformed.get_or_insert(codec::record_span(payload).map_or(0, |(first, _)| first));
                        continue;
                    }
                    events.retain(|e| e.revision > ckpt_rev);
                    for e in &events {
                        apply(e);
                    }
                    if cached && !events.is_empty() {
                        if !caching {
                            cache = MemoryLog::starting_at(events[0].revision);
                            caching = true;
                        }
                        push_cache(&mut cache, &mut used, limit, &events);
                    }
                }
            }
            let scanned = producer.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            match malformed {
                Some(first) => Err(Error::Corrupt(format!(
                    "{}: malformed record (revision {first}) with a valid checksum",
                    this.dir.display()
                ))),
                None => Ok(scanned),
            }
        });
        let (segments, expected, last_always) = scanned?;
        self.active_always = last_always;
        self.segments = segments;
        self.cache = cache;
        self.cache_used = used;
        self.last = expected - 1;
        if self.last < ckpt_rev {
            return Err(Error::Corrupt(format!(
                "{}: the checkpoint is at revision {ckpt_rev} but the log ends at revision {}",
                self.dir.display(),
                self.last
            )));
        }
        self.finish_recovery();
        Ok(())
    }

    /// Reads the segments from `start` on (`seg_bases[start]` holds `ckpt_rev + 1`): checks
    /// every record, sends the events after `ckpt_rev` in batches of whole commits (flagged
    /// when they belong in the cache), cuts a torn tail of the last segment and returns the
    /// segments with the next revision.
    fn read_segments(
        &self,
        seg_bases: &[u64],
        start: usize,
        ckpt_rev: u64,
        tx: &std::sync::mpsc::SyncSender<(Vec<u8>, bool)>,
    ) -> Result<(Vec<Segment>, u64, bool)> {
        const BATCH: usize = 512 * 1024;
        let mut last_always = self.sync == SyncPolicy::Always;
        let mut segments = Vec::new();
        let mut expected = seg_bases[start];
        let mut batch: Vec<u8> = Vec::with_capacity(BATCH);
        let mut batch_cached = false;
        // Only about the newest `cache_limit` bytes of log are kept in memory.
        let mut remaining: u64 = seg_bases[start..]
            .iter()
            .map(|&b| fs::metadata(self.dir.join(Segment::name(b))).map_or(0, |m| m.len()))
            .sum();
        let n = seg_bases.len();
        for (i, &base) in seg_bases.iter().enumerate() {
            let path = self.dir.join(Segment::name(base));
            let file_len = fs::metadata(&path).map_err(|e| io_err("cannot read", &path, e))?.len();
            if i < start {
                segments.push(Segment { base, path, len: file_len, index: Mutex::new(None) });
                continue;
            }
            let is_last = i == n - 1;
            if base != expected {
                return Err(Error::Corrupt(format!(
                    "{}: starts at revision {base} but the previous segment ends at revision {}",
                    path.display(),
                    expected - 1
                )));
            }
            // The header.
            let mut header = [0u8; SEGMENT_HEADER];
            let file = File::open(&path).map_err(|e| io_err("cannot open", &path, e))?;
            let got = file.read_at(&mut header, 0).map_err(|e| io_err("cannot read", &path, e))?;
            drop(file);
            if got < SEGMENT_HEADER && is_last {
                // Torn while being created: it holds nothing yet.
                if !self.read_only {
                    self.write_segment_header(&path, base)?;
                }
                segments.push(Segment {
                    base,
                    path,
                    len: SEGMENT_HEADER as u64,
                    index: Mutex::new(Some(Vec::new())),
                });
                continue;
            }
            let flags = match codec::parse_segment_header(&header[..got]) {
                Some((b, flags)) if b == base => flags,
                _ => return Err(Error::Corrupt(format!("{}: bad segment header", path.display()))),
            };
            // Written with "always", everything before the end was synced: damage followed by
            // whole records is corruption. Otherwise a power loss may leave a hole before data
            // that had reached the disk: the log is cut at the first damage.
            let synced = flags & codec::SEGMENT_SYNC_ALWAYS != 0;
            if is_last {
                last_always = synced;
            }
            // The records.
            let mut reader = SegmentReader::open(&path, SEGMENT_HEADER as u64, file_len)?;
            let mut index = Vec::new();
            let mut last_indexed = 0u64;
            let mut valid_len = file_len;
            while let Some((off, frame)) = reader.next().map_err(|e| io_err("cannot read", &path, e))? {
                let damage = match frame {
                    Frame::Record(payload, len) => match codec::record_span(payload) {
                        Some((first, count)) if first == expected => {
                            if index.is_empty() || off - last_indexed >= INDEX_STRIDE {
                                index.push((first, off));
                                last_indexed = off;
                            }
                            if first + count - 1 > ckpt_rev {
                                let cached = self.cache_limit > 0 && remaining <= self.cache_limit;
                                if cached != batch_cached || batch.len() >= BATCH {
                                    if !batch.is_empty() {
                                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                                        let _ = tx.send((full, batch_cached));
                                    }
                                    batch_cached = cached;
                                }
                                batch.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                                batch.extend_from_slice(payload);
                            }
                            expected = first + count;
                            remaining = remaining.saturating_sub(len as u64);
                            continue;
                        }
                        Some((first, _)) => {
                            format!("holds revision {first} where revision {expected} was expected")
                        }
                        None => "malformed record".to_string(),
                    },
                    Frame::Incomplete => "incomplete record".to_string(),
                    Frame::Bad(why) => why.to_string(),
                };
                if !is_last || (synced && valid_record_after(&path, off, file_len, expected)?) {
                    return Err(Error::Corrupt(format!(
                        "{}: damaged record at byte {off} of {file_len} ({damage}); the log after it cannot be read",
                        path.display()
                    )));
                }
                // A torn tail: the commit being written when the process or machine stopped.
                valid_len = off;
                break;
            }
            if valid_len < file_len && !self.read_only {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_err("cannot open", &path, e))?;
                f.set_len(valid_len)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| io_err("cannot cut the torn tail of", &path, e))?;
            }
            segments.push(Segment { base, path, len: valid_len, index: Mutex::new(Some(index)) });
        }
        if !batch.is_empty() {
            let _ = tx.send((batch, batch_cached));
        }
        Ok((segments, expected, last_always))
    }

    fn finish_recovery(&mut self) {
        self.staged_last = self.last;
        if self.cache.is_empty() {
            self.cache = MemoryLog::starting_at(self.last + 1);
        }
        self.bytes_since_checkpoint =
            self.segments.iter().filter(|s| self.segment_last(s) > self.last_checkpoint).map(|s| s.len).sum();
    }

    /// The last revision a segment holds.
    fn segment_last(&self, s: &Segment) -> u64 {
        match self.segments.iter().position(|x| x.base == s.base) {
            Some(i) if i + 1 < self.segments.len() => self.segments[i + 1].base - 1,
            _ => self.last,
        }
    }

    fn write_segment_header(&self, path: &Path, base: u64) -> Result<File> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io_err("cannot create", path, e))?;
        let flags = if self.sync == SyncPolicy::Always { codec::SEGMENT_SYNC_ALWAYS } else { 0 };
        f.write_all_at(&codec::segment_header(base, flags), 0)
            .and_then(|()| f.sync_all())
            .map_err(|e| io_err("cannot write", path, e))?;
        sync_dir(&self.dir)?;
        Ok(f)
    }

    fn create_segment(&mut self, base: u64) -> Result<()> {
        let path = self.dir.join(Segment::name(base));
        let file = self.write_segment_header(&path, base)?;
        self.active_always = self.sync == SyncPolicy::Always;
        self.segments.push(Segment {
            base,
            path,
            len: SEGMENT_HEADER as u64,
            index: Mutex::new(Some(Vec::new())),
        });
        let file = Arc::new(file);
        if let Some((shared, _)) = &self.flusher {
            *shared.file.lock() = Some(file.clone());
        }
        self.active = Some(file);
        Ok(())
    }

    /// At open, before the active segment is opened: closes it (synced) and starts a new one.
    fn roll_unopened(&mut self) -> Result<()> {
        let last = self.segments.last().expect("a segment");
        File::open(&last.path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err("cannot sync", &last.path, e))?;
        self.create_segment(self.last + 1)
    }

    /// Closes the active segment (synced) and starts a new one at `last + 1`.
    fn roll(&mut self) -> Result<()> {
        if let Some(f) = &self.active {
            let path = &self.segments.last().expect("active segment").path;
            f.sync_data().map_err(|e| io_err("cannot sync", path, e))?;
        }
        self.create_segment(self.last + 1)
    }

    fn start_flusher(&mut self, every: Duration) {
        let shared = Arc::new(FlushShared {
            file: Mutex::new(self.active.clone()),
            dirty: AtomicBool::new(false),
            stop: Mutex::new(false),
            cond: Condvar::new(),
            error: Mutex::new(None),
        });
        let s = shared.clone();
        let spawned = std::thread::Builder::new().name("tidemark-sync".into()).spawn(move || loop {
            {
                let mut stop = s.stop.lock();
                if !*stop {
                    s.cond.wait_for(&mut stop, every);
                }
                if *stop {
                    return;
                }
            }
            if s.dirty.swap(false, Ordering::AcqRel) {
                let file = s.file.lock().clone();
                if let Some(f) = file {
                    if let Err(e) = f.sync_data() {
                        *s.error.lock() = Some(format!("background sync failed: {e}"));
                    }
                }
            }
        });
        match spawned {
            Ok(handle) => self.flusher = Some((shared, handle)),
            // Without the thread, "interval" degrades to syncing on every write.
            Err(_) => self.sync = SyncPolicy::Always,
        }
    }

    fn stop_flusher(&mut self) {
        if let Some((shared, handle)) = self.flusher.take() {
            *shared.stop.lock() = true;
            shared.cond.notify_all();
            let _ = handle.join();
        }
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
            return Err(Error::Io(format!(
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

    fn write_checkpoint(&mut self, earliest: u64, state: StateVisitor<'_>) -> Result<()> {
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

    /// Where to start reading segment `i` for revision `from`, from its sparse index
    /// (built by reading the segment on first use).
    fn start_offset(&self, i: usize, from: u64) -> Result<u64> {
        let seg = &self.segments[i];
        let mut slot = seg.index.lock();
        if slot.is_none() {
            let mut reader = SegmentReader::open(&seg.path, SEGMENT_HEADER as u64, seg.len)?;
            let mut index = Vec::new();
            let mut last_indexed = 0u64;
            while let Some((off, frame)) = reader.next().map_err(|e| io_err("cannot read", &seg.path, e))? {
                let Frame::Record(payload, _) = frame else {
                    return Err(self.damaged(seg, off));
                };
                let (first, _) = codec::record_span(payload).ok_or_else(|| self.damaged(seg, off))?;
                if index.is_empty() || off - last_indexed >= INDEX_STRIDE {
                    index.push((first, off));
                    last_indexed = off;
                }
            }
            *slot = Some(index);
        }
        let index = slot.as_ref().expect("built");
        let at = index.partition_point(|&(rev, _)| rev <= from);
        Ok(if at == 0 { SEGMENT_HEADER as u64 } else { index[at - 1].1 })
    }

    fn damaged(&self, seg: &Segment, off: u64) -> Error {
        Error::Corrupt(format!("{}: damaged record at byte {off}", seg.path.display()))
    }

    /// Scans `[from, to]` on disk. Returns `Some(next)` when stopped by the limit.
    fn scan_disk(
        &self,
        selector: &Selector,
        from: u64,
        to: u64,
        limit: usize,
        matched: &mut usize,
        visit: &mut dyn FnMut(&Event),
    ) -> Result<Option<u64>> {
        let mut i = self.segments.partition_point(|s| s.base <= from).saturating_sub(1);
        let mut events = Vec::new();
        while i < self.segments.len() && self.segments[i].base <= to {
            let seg = &self.segments[i];
            let start = self.start_offset(i, from)?;
            let mut reader = SegmentReader::open(&seg.path, start, seg.len)?;
            while let Some((off, frame)) = reader.next().map_err(|e| io_err("cannot read", &seg.path, e))? {
                let Frame::Record(payload, _) = frame else {
                    return Err(self.damaged(seg, off));
                };
                let (first, count) = codec::record_span(payload).ok_or_else(|| self.damaged(seg, off))?;
                if first + count <= from {
                    continue;
                }
                if first > to {
                    return Ok(None);
                }
                codec::decode_commit(payload, &mut events).ok_or_else(|| self.damaged(seg, off))?;
                for e in &events {
                    if e.revision < from {
                        continue;
                    }
                    if e.revision > to {
                        return Ok(None);
                    }
                    if selector.matches(&e.key) {
                        visit(e);
                        *matched += 1;
                    }
                    if *matched >= limit && e.commit_end {
                        return Ok(Some(e.revision + 1));
                    }
                }
            }
            i += 1;
        }
        Ok(None)
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

    fn wants_checkpoint(&self) -> bool {
        self.checkpoint_bytes > 0
            && !self.read_only
            && self.bytes_since_checkpoint >= self.checkpoint_bytes.max(self.checkpoint_size)
    }

    fn checkpoint(&mut self, state: StateVisitor<'_>) -> Result<()> {
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
