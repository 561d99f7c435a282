//! Recovery on open: the newest checkpoint, then the log after it, checked record by record;
//! a torn tail of the last segment is cut.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;

use parking_lot::Mutex;

use super::segment::{parse_numbered, valid_record_after, Segment, SegmentReader};
use super::{io_err, push_cache, FileLog, INDEX_STRIDE};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::options::SyncPolicy;
use crate::storage::codec::{self, Frame, SEGMENT_HEADER};
use crate::storage::MemoryLog;

impl FileLog {
    /// Loads the newest checkpoint and replays the log after it; cuts a torn tail.
    pub(super) fn recover(&mut self, apply: &mut dyn FnMut(&Event)) -> Result<()> {
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
    pub(super) fn read_segments(
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

    pub(super) fn finish_recovery(&mut self) {
        self.staged_last = self.last;
        if self.cache.is_empty() {
            self.cache = MemoryLog::starting_at(self.last + 1);
        }
        self.bytes_since_checkpoint =
            self.segments.iter().filter(|s| self.segment_last(s) > self.last_checkpoint).map(|s| s.len).sum();
    }
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
        let log = FileLog::open(dir, &opts(json), &mut |e| seen.push(e.revision))?;
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
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 2).unwrap();
        let (log, seen) = open(dir.path(), "{}").unwrap();
        assert_eq!(seen, vec![1, 2]);
        assert_eq!(log.last_revision(), 2);
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
    fn segments_without_a_manifest_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1);
        std::fs::remove_file(dir.path().join("TIDEMARK")).unwrap();
        assert!(matches!(open(dir.path(), "{}"), Err(Error::Corrupt(_))));
    }
}
