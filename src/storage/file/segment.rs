//! Segment files: naming, reading records with a bounded buffer, creating and rolling.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::checkpoint::sync_dir;
use super::{io_err, FileLog, INDEX_STRIDE, READ_CHUNK};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::options::SyncPolicy;
use crate::selector::Selector;
use crate::storage::codec::{self, Frame, FRAME, SEGMENT_HEADER};

pub(super) struct Segment {
    pub(super) base: u64,
    pub(super) path: PathBuf,
    /// Bytes of whole records (with the header); the file holds exactly this much.
    pub(super) len: u64,
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
    file: File,
    end: u64,
    buf: Vec<u8>,
    buf_off: u64,
    pos: usize,
    filled: usize,
}

impl SegmentReader {
    pub(super) fn open(path: &Path, start: u64, end: u64) -> Result<SegmentReader> {
        let file = File::open(path).map_err(|e| io_err("cannot open", path, e))?;
        Ok(SegmentReader { file, end, buf: Vec::new(), buf_off: start, pos: 0, filled: 0 })
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

/// True when a whole, valid record of a revision at or after `expected` starts anywhere in
/// `path` after `from`: then damage at `from` is not a torn tail but corruption.
pub(super) fn valid_record_after(path: &Path, from: u64, end: u64, expected: u64) -> Result<bool> {
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

    pub(super) fn write_segment_header(&self, path: &Path, base: u64) -> Result<File> {
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

    pub(super) fn create_segment(&mut self, base: u64) -> Result<()> {
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
    pub(super) fn roll_unopened(&mut self) -> Result<()> {
        let last = self.segments.last().expect("a segment");
        File::open(&last.path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err("cannot sync", &last.path, e))?;
        self.create_segment(self.last + 1)
    }

    /// Closes the active segment (synced) and starts a new one at `last + 1`.
    pub(super) fn roll(&mut self) -> Result<()> {
        if let Some(f) = &self.active {
            let path = &self.segments.last().expect("active segment").path;
            f.sync_data().map_err(|e| io_err("cannot sync", path, e))?;
        }
        self.create_segment(self.last + 1)
    }

    /// Where to start reading segment `i` for revision `from`, from its sparse index
    /// (built by reading the segment on first use).
    pub(super) fn start_offset(&self, i: usize, from: u64) -> Result<u64> {
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
