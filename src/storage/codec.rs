//! The byte formats of a directory store (described in docs/durability.md): log records,
//! segment headers and checkpoints. Integers are little-endian; `varint` is LEB128.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::event::{empty, Event, EventKind};

/// Bytes before a record's payload: `len: u32`, `crc: u32`.
pub(crate) const FRAME: usize = 8;
/// The largest payload a record may have (one commit).
pub(crate) const MAX_RECORD: usize = (1 << 31) - 1;

pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"TMSEG\0v1";
pub(crate) const SEGMENT_HEADER: usize = 24;
pub(crate) const CHECKPOINT_MAGIC: &[u8; 8] = b"TMCKPT01";
/// Checkpoint section tags; later features add theirs (readers refuse tags they do not know).
pub(crate) const SECTION_END: u8 = 0;
pub(crate) const SECTION_KEYS: u8 = 1;

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over bytes whose every read fails cleanly at the end.
pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    pub fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    pub fn u64(&mut self) -> Option<u64> {
        let b = self.bytes(8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    pub fn len_bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.bytes(n)
    }

    pub fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// Appends one framed record holding `commit` to `out`. Returns its length with the frame.
pub fn encode_commit(commit: &[Event], out: &mut Vec<u8>) -> Result<usize> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME]);
    put_varint(out, commit[0].revision);
    put_varint(out, commit.len() as u64);
    for e in commit {
        match e.kind {
            EventKind::Put => {
                out.push(1);
                put_varint(out, e.key.len() as u64);
                out.extend_from_slice(&e.key);
                put_varint(out, e.create_revision);
                put_varint(out, e.version);
                put_varint(out, e.value.len() as u64);
                out.extend_from_slice(&e.value);
            }
            EventKind::Delete => {
                out.push(2);
                put_varint(out, e.key.len() as u64);
                out.extend_from_slice(&e.key);
            }
            other => {
                out.truncate(start);
                return Err(Error::InvalidArgument(format!("{other:?} events are not stored in the log")));
            }
        }
    }
    let len = out.len() - start - FRAME;
    if len > MAX_RECORD {
        out.truncate(start);
        return Err(Error::TooLarge(format!(
            "a commit of {len} bytes exceeds the largest record ({MAX_RECORD})"
        )));
    }
    let len_le = (len as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len_le);
    h.update(&out[start + FRAME..]);
    out[start..start + 4].copy_from_slice(&len_le);
    out[start + 4..start + 8].copy_from_slice(&h.finalize().to_le_bytes());
    Ok(out.len() - start)
}

/// What is at some offset of a segment.
pub enum Frame<'a> {
    /// A whole record whose checksum matches: its payload and its length with the frame.
    Record(&'a [u8], usize),
    /// Not enough bytes for the frame or for the length it announces.
    Incomplete,
    /// A length that cannot be, or a checksum that does not match.
    Bad(&'static str),
}

/// Reads the record starting at `buf[0]`.
pub fn read_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < FRAME {
        return Frame::Incomplete;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if !(3..=MAX_RECORD).contains(&len) {
        return Frame::Bad("impossible record length");
    }
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let Some(payload) = buf.get(FRAME..FRAME + len) else {
        return Frame::Incomplete;
    };
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[0..4]);
    h.update(payload);
    if h.finalize() != crc {
        return Frame::Bad("checksum mismatch");
    }
    Frame::Record(payload, FRAME + len)
}

/// The first revision and the number of events of a record's payload.
pub fn record_span(payload: &[u8]) -> Option<(u64, u64)> {
    let mut r = Reader::new(payload);
    let first = r.varint()?;
    let count = r.varint()?;
    (first >= 1 && count >= 1).then_some((first, count))
}

/// Decodes a record's events into `out` (cleared first).
pub fn decode_commit(payload: &[u8], out: &mut Vec<Event>) -> Option<()> {
    out.clear();
    let mut r = Reader::new(payload);
    let first = r.varint()?;
    let count = r.varint()?;
    for i in 0..count {
        let kind = r.u8()?;
        let key = r.len_bytes()?;
        let e = match kind {
            1 => {
                let create_revision = r.varint()?;
                let version = r.varint()?;
                let value = r.len_bytes()?;
                Event {
                    revision: first + i,
                    kind: EventKind::Put,
                    key: Arc::from(key),
                    value: if value.is_empty() { empty() } else { Arc::from(value) },
                    create_revision,
                    version,
                    commit_end: false,
                }
            }
            2 => Event {
                revision: first + i,
                kind: EventKind::Delete,
                key: Arc::from(key),
                value: empty(),
                create_revision: 0,
                version: 0,
                commit_end: false,
            },
            _ => return None,
        };
        out.push(e);
    }
    if !r.done() || out.is_empty() {
        return None;
    }
    out.last_mut()?.commit_end = true;
    Some(())
}

/// Segment header flag: the segment was written with `"sync": "always"`, so damage followed
/// by whole records in it is corruption, never a torn tail.
pub(crate) const SEGMENT_SYNC_ALWAYS: u32 = 1;
/// Segment header flag (format 2): the file is kept a whole number of `BLOCK`s long with at
/// least one zero frame after the last record, and ends with a seal once closed.
pub(crate) const SEGMENT_BLOCKS: u32 = 2;
/// The unit a format-2 segment grows by.
pub(crate) const BLOCK: u64 = 4096;
/// Bytes of a seal record (frame and payload).
pub(crate) const SEAL: usize = FRAME + 9;

/// The seal that closes a format-2 segment: a record whose payload is `0 | next revision u64`
/// (a commit's payload starts with its first revision, never 0).
pub fn seal(next: u64) -> [u8; SEAL] {
    let mut out = [0u8; SEAL];
    out[0..4].copy_from_slice(&9u32.to_le_bytes());
    out[FRAME + 1..].copy_from_slice(&next.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[0..4]);
    h.update(&out[FRAME..]);
    out[4..8].copy_from_slice(&h.finalize().to_le_bytes());
    out
}

/// The next revision a seal's payload names, if the payload is a seal.
pub fn seal_next(payload: &[u8]) -> Option<u64> {
    (payload.len() == 9 && payload[0] == 0)
        .then(|| u64::from_le_bytes(payload[1..].try_into().expect("8 bytes")))
}

/// `magic | base revision u64 | flags u32 | crc32 of the 20 bytes before`.
pub fn segment_header(base: u64, flags: u32) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..16].copy_from_slice(&base.to_le_bytes());
    h[16..20].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32fast::hash(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The base revision and flags a segment header names, if it is a valid header.
pub fn parse_segment_header(h: &[u8]) -> Option<(u64, u32)> {
    if h.len() < SEGMENT_HEADER || &h[0..8] != SEGMENT_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(h[20..24].try_into().ok()?);
    if crc32fast::hash(&h[0..20]) != crc {
        return None;
    }
    let base = u64::from_le_bytes(h[8..16].try_into().ok()?);
    Some((base, u32::from_le_bytes(h[16..20].try_into().ok()?)))
}

/// A checkpoint: the derived state after `revision`, and the earliest retained revision.
pub struct CheckpointHeader {
    pub revision: u64,
    pub earliest: u64,
}

/// Encodes a checkpoint; `state` visits every key as a PUT event.
pub fn encode_checkpoint(revision: u64, earliest: u64, state: super::StateVisitor<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 << 16);
    out.extend_from_slice(CHECKPOINT_MAGIC);
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&earliest.to_le_bytes());
    out.push(SECTION_KEYS);
    let len_at = out.len();
    out.extend_from_slice(&[0u8; 8]);
    let mut count = 0u64;
    let mut body = Vec::with_capacity(1 << 16);
    state(&mut |e: &Event| {
        count += 1;
        put_varint(&mut body, e.key.len() as u64);
        body.extend_from_slice(&e.key);
        put_varint(&mut body, e.value.len() as u64);
        body.extend_from_slice(&e.value);
        put_varint(&mut body, e.create_revision);
        put_varint(&mut body, e.revision);
        put_varint(&mut body, e.version);
    });
    put_varint(&mut out, count);
    out.extend_from_slice(&body);
    let section_len = (out.len() - len_at - 8) as u64;
    out[len_at..len_at + 8].copy_from_slice(&section_len.to_le_bytes());
    out.push(SECTION_END);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a checkpoint, visiting every key as a PUT event. `Err` says what is wrong.
pub fn decode_checkpoint(
    buf: &[u8],
    visit: &mut dyn FnMut(Event),
) -> std::result::Result<CheckpointHeader, String> {
    if buf.len() < 8 + 16 + 1 + 4 || &buf[0..8] != CHECKPOINT_MAGIC {
        return Err("not a checkpoint (bad magic or too short)".into());
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader::new(&body[8..]);
    let bad = || "malformed contents".to_string();
    let revision = r.u64().ok_or_else(bad)?;
    let earliest = r.u64().ok_or_else(bad)?;
    loop {
        match r.u8().ok_or_else(bad)? {
            SECTION_END => break,
            SECTION_KEYS => {
                let len = usize::try_from(r.u64().ok_or_else(bad)?).map_err(|_| bad())?;
                let mut s = Reader::new(r.bytes(len).ok_or_else(bad)?);
                let count = s.varint().ok_or_else(bad)?;
                for _ in 0..count {
                    let key = s.len_bytes().ok_or_else(bad)?;
                    let value = s.len_bytes().ok_or_else(bad)?;
                    let create_revision = s.varint().ok_or_else(bad)?;
                    let mod_revision = s.varint().ok_or_else(bad)?;
                    let version = s.varint().ok_or_else(bad)?;
                    visit(Event {
                        revision: mod_revision,
                        kind: EventKind::Put,
                        key: Arc::from(key),
                        value: if value.is_empty() { empty() } else { Arc::from(value) },
                        create_revision,
                        version,
                        commit_end: true,
                    });
                }
                if !s.done() {
                    return Err(bad());
                }
            }
            tag => return Err(format!("unknown section {tag} (written by a newer release?)")),
        }
    }
    if !r.done() {
        return Err(bad());
    }
    Ok(CheckpointHeader { revision, earliest })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: u64, key: &str, value: &str, end: bool) -> Event {
        Event {
            revision: rev,
            kind: EventKind::Put,
            key: Arc::from(key.as_bytes()),
            value: Arc::from(value.as_bytes()),
            create_revision: rev,
            version: 1,
            commit_end: end,
        }
    }

    #[test]
    fn record_round_trip_and_damage() {
        let commit = vec![
            put(7, "a", "1", false),
            Event {
                revision: 8,
                kind: EventKind::Delete,
                key: Arc::from(&b"b"[..]),
                value: empty(),
                create_revision: 0,
                version: 0,
                commit_end: false,
            },
            put(9, "c", "", true),
        ];
        let mut buf = Vec::new();
        let n = encode_commit(&commit, &mut buf).unwrap();
        assert_eq!(n, buf.len());
        let Frame::Record(payload, len) = read_frame(&buf) else { panic!("not a record") };
        assert_eq!(len, n);
        assert_eq!(record_span(payload), Some((7, 3)));
        let mut out = Vec::new();
        decode_commit(payload, &mut out).unwrap();
        let mut expect = commit.clone();
        expect[1].commit_end = false;
        assert_eq!(out, expect);
        for cut in 0..n {
            assert!(matches!(read_frame(&buf[..cut]), Frame::Incomplete | Frame::Bad(_)), "cut {cut}");
        }
        for i in 0..n {
            let mut b = buf.clone();
            b[i] ^= 0x10;
            assert!(!matches!(read_frame(&b), Frame::Record(..)), "flip {i}");
        }
    }

    #[test]
    fn checkpoint_round_trip() {
        let entries = vec![put(3, "k1", "v1", true), put(5, "k2", "v2", true)];
        let buf = encode_checkpoint(9, 4, &mut |v| entries.iter().for_each(&mut *v));
        let mut got = Vec::new();
        let h = decode_checkpoint(&buf, &mut |e| got.push(e)).unwrap();
        assert_eq!((h.revision, h.earliest), (9, 4));
        assert_eq!(got, entries);
        let mut b = buf.clone();
        b[30] ^= 1;
        assert!(decode_checkpoint(&b, &mut |_| {}).is_err());
    }
}
