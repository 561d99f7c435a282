//! Recovery on open: the newest checkpoint, then the log after it, checked record by record.
//! What must exist is known from the file names (each segment's first revision), the seals
//! (a closed segment names its successor) and the checkpoint (its revision): a missing,
//! emptied or shortened segment is `Corrupt`, naming the file and the revisions. Only the end
//! of the last segment may be torn (the commit being written when the process or machine
//! stopped): it is cut, and reported (`TailRepair`).

use std::sync::mpsc::SyncSender;

use parking_lot::Mutex;

use super::fs::{FsFile, Mode};
use super::segment::{after_damage, create_segment_file, parse_numbered, Segment, SegmentReader};
use super::{cut_after, io_err, is_leftover_tmp, push_cache, FileLog, INDEX_STRIDE};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::options::SyncPolicy;
use crate::storage::codec::{self, Frame, SEGMENT_HEADER};
use crate::storage::{MemoryLog, TailRepair};

/// What reading the segments found.
struct Scanned {
    segments: Vec<Segment>,
    /// The revision after the last whole commit.
    next: u64,
    last_always: bool,
    repair: Option<TailRepair>,
    /// A closed format-2 segment left without its seal by a roll that was interrupted (its
    /// successor, the last segment, holds nothing yet).
    unsealed: Option<usize>,
}

impl FileLog {
    /// Loads the newest checkpoint and replays the log after it; cuts a torn tail.
    /// `format` is the manifest's.
    pub(super) fn recover(&mut self, apply: &mut dyn FnMut(&Event), format: u32) -> Result<()> {
        let mut seg_bases = Vec::new();
        let mut checkpoints = Vec::new();
        for name in self.fs.list(&self.dir).map_err(|e| io_err("cannot list", &self.dir, e))? {
            if let Some(base) = parse_numbered(&name, "seg-", ".log") {
                seg_bases.push(base);
            } else if let Some(rev) = parse_numbered(&name, "ckpt-", ".ckpt") {
                checkpoints.push(rev);
            } else if is_leftover_tmp(&name) && !self.read_only {
                let path = self.dir.join(&name);
                self.fs.remove(&path).map_err(|e| io_err("cannot remove the leftover", &path, e))?;
            }
        }
        seg_bases.sort_unstable();
        checkpoints.sort_unstable();

        // The newest checkpoint is the state to start from; older ones are no longer needed.
        let mut ckpt_rev = 0;
        if let Some(&rev) = checkpoints.last() {
            let path = self.dir.join(format!("ckpt-{rev:020}.ckpt"));
            let bytes = self.fs.read(&path).map_err(|e| io_err("cannot read", &path, e))?;
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
                    let _ = self.fs.remove(&self.dir.join(format!("ckpt-{old:020}.ckpt")));
                }
            }
        }

        // Segments wholly below the earliest retained revision are leftovers of a compaction
        // interrupted after its checkpoint.
        while seg_bases.len() >= 2 && seg_bases[1] <= self.earliest && seg_bases[1] <= ckpt_rev + 1 {
            let path = self.dir.join(Segment::name(seg_bases[0]));
            if !self.read_only {
                self.fs.remove(&path).map_err(|e| io_err("cannot remove", &path, e))?;
            }
            seg_bases.remove(0);
        }

        if seg_bases.is_empty() {
            // Format 2 creates the first segment before the manifest and never deletes the
            // last one, so a store without a segment lost its log.
            if format >= 2 || (ckpt_rev == 0 && !checkpoints.is_empty()) {
                return Err(Error::Corrupt(format!(
                    "{}: no log segment (seg-{:020}.log is missing): the revisions after {ckpt_rev} are lost",
                    self.dir.display(),
                    ckpt_rev + 1
                )));
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
                "{}: the checkpoint ends at revision {ckpt_rev} but the log starts at revision {first_base}: revisions {} to {} are missing",
                self.dir.display(),
                ckpt_rev + 1,
                first_base - 1
            )));
        }
        self.earliest = self.earliest.max(first_base);

        // Replay from the segment holding ckpt_rev + 1. A helper thread reads, checks and
        // decodes the segments while this one applies the events (and keeps the newest of
        // them in the cache).
        // The segment before the last is read too: a roll interrupted between creating the
        // last segment and sealing it leaves it without its seal, which is repaired here.
        let start = seg_bases
            .iter()
            .rposition(|&b| b <= ckpt_rev + 1)
            .expect("first_base <= ckpt_rev + 1")
            .min(seg_bases.len().saturating_sub(2));
        // Batches are raw record payloads (each prefixed by its u32 length): decoding happens
        // on this thread so the keys and values are allocated where they are later freed.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, bool)>(8);
        let (mut cache, mut used, limit) = (MemoryLog::new(), 0u64, self.cache_limit);
        let this = &*self;
        let scanned = std::thread::scope(|scope| {
            let producer = std::thread::Builder::new()
                .name("tidemark-replay".into())
                .spawn_scoped(scope, move || this.read_segments(&seg_bases, start, ckpt_rev, format, &tx));
            let producer = match producer {
                Ok(p) => p,
                Err(e) => return Err(Error::io("cannot start a replay thread", e)),
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
        let scanned = scanned?;
        self.active_always = scanned.last_always;
        self.segments = scanned.segments;
        self.tail_repair = scanned.repair;
        self.cache = cache;
        self.cache_used = used;
        self.last = scanned.next - 1;
        if self.last < ckpt_rev {
            return Err(Error::Corrupt(format!(
                "{}: the checkpoint is at revision {ckpt_rev} but the log ends at revision {}: revisions {} to {ckpt_rev} are lost",
                self.dir.display(),
                self.last,
                self.last + 1
            )));
        }
        if let Some(i) = scanned.unsealed {
            if !self.read_only {
                let next = self.segments[i + 1].base;
                self.seal(i, next)?;
            }
        }
        self.finish_recovery();
        Ok(())
    }

    /// Reads the segments from `start` on (`seg_bases[start]` holds `ckpt_rev + 1`): checks
    /// every record, sends the events after `ckpt_rev` in batches of whole commits (flagged
    /// when they belong in the cache), cuts a torn tail of the last segment and returns the
    /// segments with the next revision. Segments before `start` only have their header
    /// checked here (their records are checked when read).
    fn read_segments(
        &self,
        seg_bases: &[u64],
        start: usize,
        ckpt_rev: u64,
        format: u32,
        tx: &SyncSender<(Vec<u8>, bool)>,
    ) -> Result<Scanned> {
        const BATCH: usize = 512 * 1024;
        let mut out = Scanned {
            segments: Vec::new(),
            next: seg_bases[start],
            last_always: self.sync == SyncPolicy::Always,
            repair: None,
            unsealed: None,
        };
        let mut batch: Vec<u8> = Vec::with_capacity(BATCH);
        let mut batch_cached = false;
        let n = seg_bases.len();
        let files: Vec<(std::path::PathBuf, std::sync::Arc<dyn FsFile>, u64)> = seg_bases
            .iter()
            .map(|&b| {
                let path = self.dir.join(Segment::name(b));
                let file = self.fs.open(&path, Mode::Read).map_err(|e| io_err("cannot open", &path, e))?;
                let len = file.len().map_err(|e| io_err("cannot read", &path, e))?;
                Ok((path, file, len))
            })
            .collect::<Result<_>>()?;
        // Only about the newest `cache_limit` bytes of log are kept in memory.
        let mut remaining: u64 = files[start..].iter().map(|f| f.2).sum();
        let mut expected = seg_bases[start];
        for (i, &base) in seg_bases.iter().enumerate() {
            let (path, file, file_len) = (files[i].0.clone(), &files[i].1, files[i].2);
            let is_last = i == n - 1;
            let shown = path.display();
            // The header.
            let mut header = [0u8; SEGMENT_HEADER];
            let got = if file_len >= SEGMENT_HEADER as u64 {
                file.read_exact_at(&mut header, 0).map_err(|e| io_err("cannot read", &path, e))?;
                SEGMENT_HEADER
            } else {
                0
            };
            let lost = |from: u64| match seg_bases.get(i + 1) {
                Some(&next) => format!("revisions {from} to {} cannot be read", next - 1),
                None => format!("the revisions from {from} on are lost (how many is unknown)"),
            };
            if got < SEGMENT_HEADER {
                if format >= 2 || !is_last || i < start {
                    // Segments are created whole (format 2): a short one was emptied or cut.
                    return Err(Error::Corrupt(format!(
                        "{shown} is {file_len} bytes, shorter than its header (emptied or cut): {}",
                        lost(base)
                    )));
                }
                // Format 1: torn while being created, it holds nothing yet.
                if base != expected {
                    return Err(self.gap(expected, base, &shown));
                }
                let blocks = if self.read_only {
                    false
                } else {
                    create_segment_file(&*self.fs, &self.dir, base, self.sync == SyncPolicy::Always)?;
                    true
                };
                out.segments.push(Segment {
                    base,
                    path,
                    len: SEGMENT_HEADER as u64,
                    blocks,
                    index: Mutex::new(Some(Vec::new())),
                });
                continue;
            }
            let flags = match codec::parse_segment_header(&header) {
                Some((b, flags)) if b == base => flags,
                _ => return Err(Error::Corrupt(format!("{shown}: bad segment header: {}", lost(base)))),
            };
            let blocks = flags & codec::SEGMENT_BLOCKS != 0;
            if i < start {
                out.segments.push(Segment { base, path, len: file_len, blocks, index: Mutex::new(None) });
                continue;
            }
            if base != expected {
                return Err(self.gap(expected, base, &shown));
            }
            // Written with "always", everything before the end was synced: damage followed by
            // whole records is corruption. Otherwise a power loss may leave a hole before data
            // that had reached the disk: the log is cut at the first damage.
            let synced = flags & codec::SEGMENT_SYNC_ALWAYS != 0;
            if is_last {
                out.last_always = synced;
            }
            if let Some(prev) = out.unsealed {
                // The roll that created this segment was interrupted before sealing the
                // previous one: this segment was never written to.
                let empty = is_last
                    && file_len <= codec::BLOCK
                    && all_zero(&**file, SEGMENT_HEADER as u64, file_len)
                        .map_err(|e| io_err("cannot read", &path, e))?;
                if !empty {
                    return Err(Error::Corrupt(format!(
                        "{}: closed without its seal, yet the log goes on in {shown}",
                        out.segments[prev].path.display()
                    )));
                }
            }
            // The records.
            let mut reader = SegmentReader::new(file.clone(), SEGMENT_HEADER as u64, file_len);
            let mut index = Vec::new();
            let mut last_indexed = 0u64;
            let mut valid_len = file_len;
            let mut sealed = None;
            let mut damage = None;
            while let Some((off, frame)) = reader.next().map_err(|e| io_err("cannot read", &path, e))? {
                let why = match frame {
                    Frame::Record(payload, len) => {
                        if let Some(next) = codec::seal_next(payload).filter(|_| blocks) {
                            if next != expected {
                                return Err(Error::Corrupt(format!(
                                    "{shown}: its seal names revision {next} as the next, but it ends at revision {}",
                                    expected - 1
                                )));
                            }
                            sealed = Some(next);
                            valid_len = off;
                            break;
                        }
                        match codec::record_span(payload) {
                            Some((first, count)) if first == expected => {
                                if index.is_empty() || off - last_indexed >= INDEX_STRIDE {
                                    index.push((first, off));
                                    last_indexed = off;
                                }
                                if first + count - 1 > ckpt_rev {
                                    let cached = self.cache_limit > 0 && remaining <= self.cache_limit;
                                    if cached != batch_cached || batch.len() >= BATCH {
                                        if !batch.is_empty() {
                                            let full =
                                                std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
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
                        }
                    }
                    Frame::Incomplete => "incomplete record".to_string(),
                    Frame::Bad(why) => why.to_string(),
                };
                valid_len = off;
                damage = Some(why);
                break;
            }
            if let Some(why) = damage {
                let (found, nonzero_end) = after_damage(&**file, valid_len, file_len, expected)
                    .map_err(|e| io_err("cannot read", &path, e))?;
                let zero_end = blocks && nonzero_end == valid_len;
                if zero_end && is_last {
                    // The zero padding after the last record: the clean end of the log.
                } else if zero_end && i == n - 2 {
                    out.unsealed = Some(out.segments.len());
                } else if !is_last || (synced && !found.is_empty()) {
                    return Err(Error::Corrupt(format!(
                        "{shown}: damaged record at byte {valid_len} of {file_len} ({why}): {}",
                        lost(expected)
                    )));
                } else {
                    // A torn tail: the commit being written when the process or machine stopped.
                    let partial = partial_count(&**file, valid_len, file_len, expected)
                        .map_err(|e| io_err("cannot read", &path, e))?;
                    let repair = TailRepair {
                        segment: shown.to_string(),
                        offset: valid_len,
                        bytes: if blocks { nonzero_end - valid_len } else { file_len - valid_len },
                        commits: 1 + found.len() as u64,
                        revisions: partial + found.iter().map(|&(_, c)| c).sum::<u64>(),
                        first_revision: expected,
                        cut: !self.read_only,
                    };
                    if self.strict_recovery && repair.commits > 1 {
                        return Err(Error::Corrupt(format!(
                            "{shown}: recovery would cut {} commits ({} bytes from byte {valid_len}, revisions from {expected} on), and strict_recovery allows one",
                            repair.commits, repair.bytes
                        )));
                    }
                    if !self.read_only {
                        let f =
                            self.fs.open(&path, Mode::Write).map_err(|e| io_err("cannot open", &path, e))?;
                        let cut = if blocks {
                            cut_after(&*f, valid_len, nonzero_end)
                        } else {
                            f.set_len(valid_len)
                        };
                        cut.and_then(|()| f.sync())
                            .map_err(|e| io_err("cannot cut the torn tail of", &path, e))?;
                    }
                    out.repair = Some(repair);
                }
            }
            if is_last {
                if let Some(next) = sealed {
                    return Err(Error::Corrupt(format!(
                        "{shown} is sealed, but the next segment seg-{next:020}.log is missing: the revisions from {next} on are lost"
                    )));
                }
                if blocks && file_len % codec::BLOCK != 0 {
                    return Err(Error::Corrupt(format!(
                        "{shown} is {file_len} bytes, not a whole number of {}-byte blocks: it was cut after revision {}; the revisions after it are lost (how many is unknown)",
                        codec::BLOCK,
                        expected - 1
                    )));
                }
            } else if blocks && sealed.is_none() && out.unsealed.is_none() {
                return Err(Error::Corrupt(format!(
                    "{shown}: the closed segment ends without its seal (cut after revision {}): {}",
                    expected - 1,
                    lost(expected)
                )));
            }
            out.segments.push(Segment { base, path, len: valid_len, blocks, index: Mutex::new(Some(index)) });
        }
        if !batch.is_empty() {
            let _ = tx.send((batch, batch_cached));
        }
        out.next = expected;
        Ok(out)
    }

    /// No segment holds revisions `[expected, base)`.
    fn gap(&self, expected: u64, base: u64, shown: &std::path::Display<'_>) -> Error {
        Error::Corrupt(format!(
            "{}: revisions {expected} to {} are missing (no segment holds them; {shown} starts at {base})",
            self.dir.display(),
            base - 1
        ))
    }

    pub(super) fn finish_recovery(&mut self) {
        self.staged_last = self.last;
        if self.cache.is_empty() {
            self.cache = MemoryLog::starting_at(self.last + 1);
        }
        self.bytes_since_checkpoint =
            self.segments.iter().filter(|s| self.segment_last(s) > self.last_checkpoint).map(|s| s.len).sum();
    }
}

/// True when `[from, end)` of `file` holds only zeros.
fn all_zero(file: &dyn FsFile, from: u64, end: u64) -> std::io::Result<bool> {
    Ok(after_damage(file, from, end, u64::MAX)?.1 == from)
}

/// The number of events the damaged record at `off` announces, when its start is intact
/// enough to tell and it is the commit that was `expected` (else 0).
fn partial_count(file: &dyn FsFile, off: u64, end: u64, expected: u64) -> std::io::Result<u64> {
    let start = off + codec::FRAME as u64;
    if start >= end {
        return Ok(0);
    }
    let mut b = vec![0u8; (end - start).min(20) as usize];
    file.read_exact_at(&mut b, start)?;
    let mut r = codec::Reader::new(&b);
    Ok(match (r.varint(), r.varint()) {
        (Some(first), Some(count)) if first == expected && count < 1 << 32 => count,
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::error::Error;
    use crate::event::Event;
    use crate::options::Options;
    use crate::storage::file::FileLog;
    use crate::storage::Storage;

    fn opts(json: &str) -> Options {
        Options::from_json(Some(json)).unwrap()
    }

    fn put(rev: u64) -> Vec<Event> {
        vec![Event {
            key: format!("k{rev}").into_bytes().into(),
            value: format!("v{rev}").into_bytes().into(),
            create_revision: rev,
            version: 1,
            ..Event::notice(crate::event::EventKind::Put, rev)
        }]
    }

    /// Opens `dir`, returning the log and the revisions of the events replayed.
    fn open(dir: &Path, json: &str) -> crate::error::Result<(FileLog, Vec<u64>)> {
        let mut seen = Vec::new();
        let fs = std::sync::Arc::new(crate::storage::fs::RealFs);
        let log = FileLog::open_on(fs, dir, &opts(json), &mut |e| seen.push(e.revision))?;
        Ok((log, seen))
    }

    fn write(dir: &Path, n: u64) {
        let (mut log, _) = open(dir, "{}").unwrap();
        for r in log.last_revision() + 1..=log.last_revision() + n {
            log.append(&put(r)).unwrap();
            log.flush().unwrap();
        }
    }

    fn segment(dir: &Path) -> std::path::PathBuf {
        let mut segs: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
            .collect();
        segs.sort();
        segs.pop().unwrap()
    }

    #[test]
    fn replays_every_record_in_order() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 5);
        let (log, seen) = open(dir.path(), "{}").unwrap();
        assert_eq!(seen, vec![1, 2, 3, 4, 5]);
        assert_eq!((log.earliest_revision(), log.last_revision()), (1, 5));
    }

    #[test]
    fn a_torn_last_record_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 3);
        let seg = segment(dir.path());
        let mut bytes = std::fs::read(&seg).unwrap();
        let end = bytes.iter().rposition(|&b| b != 0).unwrap();
        bytes[end - 1..=end].fill(0);
        std::fs::write(&seg, &bytes).unwrap();
        let (log, seen) = open(dir.path(), "{}").unwrap();
        assert_eq!(seen, vec![1, 2]);
        assert_eq!(log.last_revision(), 2);
        let repair = log.stats().tail_repair.unwrap();
        assert_eq!((repair.commits, repair.first_revision, repair.cut), (1, 3, true));
    }

    #[test]
    fn leftover_temporary_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1);
        std::fs::write(dir.path().join("ckpt-00000000000000000001.ckpt.tmp"), b"half").unwrap();
        let (_log, seen) = open(dir.path(), "{}").unwrap();
        assert_eq!(seen, vec![1]);
        assert!(!dir.path().join("ckpt-00000000000000000001.ckpt.tmp").exists());
    }

    #[test]
    fn a_shortened_or_emptied_segment_is_corrupt() {
        for keep in [0usize, 5, 100] {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), 3);
            let seg = segment(dir.path());
            let bytes = std::fs::read(&seg).unwrap();
            std::fs::write(&seg, &bytes[..keep]).unwrap();
            match open(dir.path(), "{}") {
                Err(Error::Corrupt(m)) => {
                    assert!(m.contains("seg-00000000000000000001.log"), "{m}");
                    assert!(m.contains("revision"), "{m}");
                }
                other => panic!("kept {keep}: {:?}", other.map(|(_, seen)| seen)),
            }
        }
    }

    #[test]
    fn segments_without_a_manifest_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1);
        std::fs::remove_file(dir.path().join("TIDEMARK")).unwrap();
        assert!(matches!(open(dir.path(), "{}"), Err(Error::Corrupt(_))));
    }
}
