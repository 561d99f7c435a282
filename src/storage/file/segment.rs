//! Segment files: naming, reading records with a bounded buffer, creating and rolling.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::checkpoint::sync_dir;
use super::fs::{Fs, FsFile, Mode};
use super::{io_err, FileLog, INDEX_STRIDE, READ_CHUNK};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::options::SyncPolicy;
use crate::selector::Selector;
use crate::storage::codec::{self, Frame, FRAME, SEGMENT_HEADER};

pub(super) struct Segment {
    pub(super) base: u64,
    pub(super) path: PathBuf,
    /// Bytes of whole records (with the header). A closed segment's file also holds its seal
    /// (format 2); the active segment's file is zero-padded to whole blocks (format 2).
    pub(super) len: u64,
    /// Format 2: block-padded while active, sealed when closed (`codec::SEGMENT_BLOCKS`).
    pub(super) blocks: bool,
    /// Sparse index `(first revision of a record, its offset)`; built on first use for
    /// segments not read at open.
    pub(super) index: Mutex<Option<Vec<(u64, u64)>>>,
}

impl Segment {
    pub(super) fn name(base: u64) -> String {
        format!("seg-{base:020}.log")
    }
}

/// Reads the records of a segment from some offset on, with a bounded buffer.
pub(super) struct SegmentReader {
    file: Arc<dyn FsFile>,
    end: u64,
    buf: Vec<u8>,
    buf_off: u64,
    pos: usize,
    filled: usize,
}

impl SegmentReader {
    pub(super) fn new(file: Arc<dyn FsFile>, start: u64, end: u64) -> SegmentReader {
        SegmentReader { file, end, buf: Vec::new(), buf_off: start, pos: 0, filled: 0 }
    }

    pub(super) fn offset(&self) -> u64 {
        self.buf_off + self.pos as u64
    }

    /// Makes at least `n` bytes (or all up to `end`) available at `pos`.
    pub(super) fn ensure(&mut self, n: usize) -> io::Result<()> {
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
    pub(super) fn next(&mut self) -> io::Result<Option<(u64, Frame<'_>)>> {
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

/// What follows a damaged record at `from` of a segment (up to `end`): the spans
/// `(first, count)` of the whole, valid commit records of revision `expected` or later found
/// at any byte after it, and the end of the last non-zero byte. A valid record after the damage
/// means the damage is not (only) a torn write.
pub(super) fn after_damage(
    file: &dyn FsFile,
    from: u64,
    end: u64,
    expected: u64,
) -> io::Result<(Vec<(u64, u64)>, u64)> {
    if from >= end {
        return Ok((Vec::new(), from));
    }
    let mut rest = vec![0u8; (end - from) as usize];
    file.read_exact_at(&mut rest, from)?;
    let nonzero_end = from + rest.iter().rposition(|&b| b != 0).map_or(0, |p| p as u64 + 1);
    let mut found = Vec::new();
    let mut p = 1;
    while p + FRAME + 3 <= rest.len() {
        let b = &rest[p..];
        let len = u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
        if len < 3 || FRAME + len > b.len() {
            p += 1;
            continue;
        }
        match codec::read_frame(b) {
            Frame::Record(payload, n) => match codec::record_span(payload) {
                Some((first, count)) if first >= expected => {
                    found.push((first, count));
                    p += n;
                }
                _ => p += 1,
            },
            _ => p += 1,
        }
    }
    Ok((found, nonzero_end))
}

/// Creates `seg-<base>.log` atomically (format 2): a temporary file holding the header and
/// zeros to one block, synced, renamed into place, the directory synced. A segment file
/// therefore always has a whole header: one without is damage, never a crash.
pub(super) fn create_segment_file(
    fs: &dyn Fs,
    dir: &Path,
    base: u64,
    always: bool,
) -> Result<(PathBuf, Arc<dyn FsFile>)> {
    let name = Segment::name(base);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut flags = codec::SEGMENT_BLOCKS;
    if always {
        flags |= codec::SEGMENT_SYNC_ALWAYS;
    }
    let write = || -> io::Result<Arc<dyn FsFile>> {
        let f = fs.open(&tmp, Mode::Create)?;
        f.write_all_at(&codec::segment_header(base, flags), 0)?;
        f.set_len(codec::BLOCK)?;
        f.sync()?;
        Ok(f)
    };
    let file = write().map_err(|e| {
        let _ = fs.remove(&tmp);
        io_err("cannot create", &tmp, e)
    })?;
    fs.rename(&tmp, &path).map_err(|e| io_err("cannot rename into place", &path, e))?;
    sync_dir(fs, dir)?;
    Ok((path, file))
}

/// True when the segment file at `path` holds no record: at most one block, zero after its
/// header (the first segment of a creation interrupted before the manifest was written).
pub(super) fn holds_no_record(fs: &dyn Fs, path: &Path) -> bool {
    fs.read(path)
        .is_ok_and(|b| b.len() as u64 <= codec::BLOCK && b.iter().skip(SEGMENT_HEADER).all(|&x| x == 0))
}

pub(super) fn parse_numbered(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

impl FileLog {
    /// The last revision a segment holds.
    pub(super) fn segment_last(&self, s: &Segment) -> u64 {
        match self.segments.iter().position(|x| x.base == s.base) {
            Some(i) if i + 1 < self.segments.len() => self.segments[i + 1].base - 1,
            _ => self.last,
        }
    }

    /// Makes a new empty segment at `base` the active one.
    pub(super) fn create_segment(&mut self, base: u64) -> Result<()> {
        let (path, file) = create_segment_file(&*self.fs, &self.dir, base, self.sync == SyncPolicy::Always)?;
        self.active_always = self.sync == SyncPolicy::Always;
        self.active_file_len = codec::BLOCK;
        self.segments.push(Segment {
            base,
            path,
            len: SEGMENT_HEADER as u64,
            blocks: true,
            index: Mutex::new(Some(Vec::new())),
        });
        if let Some((shared, _)) = &self.flusher {
            *shared.file.lock() = Some(file.clone());
        }
        self.active = Some(file);
        Ok(())
    }

    /// Writes the seal after the last record of the (synced) segment `i`, then syncs it.
    pub(super) fn seal(&self, i: usize, next: u64) -> Result<()> {
        let seg = &self.segments[i];
        let f = self.fs.open(&seg.path, Mode::Write).map_err(|e| io_err("cannot open", &seg.path, e))?;
        f.write_all_at(&codec::seal(next), seg.len)
            .and_then(|()| f.sync())
            .map_err(|e| io_err("cannot seal", &seg.path, e))
    }

    /// Closes the active segment (synced) and starts a new one at `last + 1`: the new one is
    /// created first, then the old one sealed, so that a segment followed by a seal always has
    /// its successor on disk (a sealed last segment means the next one was lost).
    pub(super) fn roll(&mut self) -> Result<()> {
        let old = self.segments.len() - 1;
        let old_path = self.segments[old].path.clone();
        match &self.active {
            Some(f) => f.sync(),
            None => self.fs.open(&old_path, Mode::Read).and_then(|f| f.sync()),
        }
        .map_err(|e| io_err("cannot sync", &old_path, e))?;
        let next = self.last + 1;
        self.create_segment(next)?;
        if self.segments[old].blocks {
            self.seal(old, next)?;
        }
        Ok(())
    }

    /// Where to start reading segment `i` for revision `from`, from its sparse index
    /// (built by reading the segment on first use).
    pub(super) fn start_offset(&self, i: usize, from: u64) -> Result<u64> {
        let seg = &self.segments[i];
        let mut slot = seg.index.lock();
        if slot.is_none() {
            let mut reader = self.reader(seg, SEGMENT_HEADER as u64)?;
            let mut index = Vec::new();
            let mut last_indexed = 0u64;
            while let Some((off, frame)) = reader.next().map_err(|e| io_err("cannot read", &seg.path, e))? {
                let Frame::Record(payload, _) = frame else {
                    return Err(self.damaged(seg, off));
                };
                if codec::seal_next(payload).is_some() {
                    break;
                }
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

    /// A reader of segment `seg`'s records from `start` on.
    fn reader(&self, seg: &Segment, start: u64) -> Result<SegmentReader> {
        let file = self.fs.open(&seg.path, Mode::Read).map_err(|e| io_err("cannot open", &seg.path, e))?;
        Ok(SegmentReader::new(file, start, seg.len))
    }

    pub(super) fn damaged(&self, seg: &Segment, off: u64) -> Error {
        Error::Corrupt(format!("{}: damaged record at byte {off}", seg.path.display()))
    }

    /// Scans `[from, to]` on disk. Returns `Some(next)` when stopped by the limit.
    pub(super) fn scan_disk(
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
            let mut reader = self.reader(seg, start)?;
            // Where the records read end: a closed segment must end where the next one starts
            // (one not read at open may have lost records at its end).
            let mut end = None;
            while let Some((off, frame)) = reader.next().map_err(|e| io_err("cannot read", &seg.path, e))? {
                let Frame::Record(payload, _) = frame else {
                    return Err(self.damaged(seg, off));
                };
                if codec::seal_next(payload).is_some() {
                    break;
                }
                let (first, count) = codec::record_span(payload).ok_or_else(|| self.damaged(seg, off))?;
                end = Some(first + count);
                if first + count <= from {
                    continue;
                }
                if first > to {
                    return Ok(None);
                }
                codec::decode_commit(payload, &mut events).ok_or_else(|| self.damaged(seg, off))?;
                for (i, e) in events.iter().enumerate() {
                    if e.revision < from {
                        continue;
                    }
                    if e.revision > to {
                        return Ok(None);
                    }
                    if selector.matches(&e.key) {
                        // The commit's last match is its end for the reader (see `Storage::scan`).
                        let rest = events[i + 1..].iter().take_while(|n| n.revision <= to);
                        if !e.commit_end && super::super::last_match(selector, rest).is_some() {
                            visit(&Event { commit_end: true, ..e.clone() });
                        } else {
                            visit(e);
                        }
                        *matched += 1;
                    }
                    if *matched >= limit && e.commit_end {
                        return Ok(Some(e.revision + 1));
                    }
                }
            }
            if let (Some(end), Some(next)) = (end, self.segments.get(i + 1)) {
                if end != next.base {
                    return Err(Error::Corrupt(format!(
                        "{}: ends at revision {} but the next segment starts at {}: revisions {end} to {} are lost",
                        seg.path.display(),
                        end - 1,
                        next.base,
                        next.base - 1
                    )));
                }
            }
            i += 1;
        }
        Ok(None)
    }
}
