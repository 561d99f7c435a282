//! The in-memory log's index, so that a selective `scan` (`changes` on a prefix, a watch
//! catching up on a prefix or on a feature's namespace) costs in proportion to the entries it
//! matches, not to the length of the log. `MemoryLog` keeps it; the directory log's cache is
//! a `MemoryLog`, so both backends use it. Two parts:
//!
//! - per reserved namespace (`\0<tag>/`, see `ns`), the revisions of its entries, appended as
//!   they are written: one push per reserved write, nothing for a user write;
//! - per chunk of `CHUNK` consecutive revisions, the chunk's entries ordered by key, built by
//!   the first selective scan that reads the chunk once it is full (so a put pays nothing);
//!   the entries of a key interval are then two binary searches away.
//!
//! `Cursor` walks the candidates this gives and is the one place that visits entries, counts
//! what it read, marks commit ends and stops at the limit, whatever the plan.

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;

use crate::event::Event;
use crate::ns::RESERVED;
use crate::selector::Selector;

const SHIFT: u32 = 10;
/// Revisions per chunk (chunk `c` holds revisions `c * CHUNK .. (c + 1) * CHUNK`).
const CHUNK: u64 = 1 << SHIFT;
/// Above this many matches in a chunk, reading the chunk in order is cheaper.
const DENSE: usize = CHUNK as usize / 4;

#[derive(Default)]
pub(super) struct LogIndex {
    /// Revisions of each reserved namespace's entries (by tag byte), ascending.
    namespaces: HashMap<u8, VecDeque<u64>>,
    /// Per chunk from `first_chunk` on: offsets within the chunk ordered by key, once built.
    chunks: VecDeque<OnceLock<Box<[u16]>>>,
    first_chunk: u64,
}

/// How a scan finds its candidates.
enum Plan {
    /// Every entry in order (a selector that matches most of them).
    Linear,
    /// The entries of one reserved namespace.
    Namespace(u8),
    /// The key interval `[lo, hi)` in each chunk's key order.
    Chunks(Vec<u8>, Option<Vec<u8>>),
}

impl LogIndex {
    /// Records the entries of a commit appended to the log.
    pub fn append(&mut self, commit: &[Event]) {
        for e in commit {
            if let [RESERVED, tag, ..] = e.key[..] {
                self.namespaces.entry(tag).or_default().push_back(e.revision);
            }
        }
        let last = commit[commit.len() - 1].revision >> SHIFT;
        if self.chunks.is_empty() {
            self.first_chunk = commit[0].revision >> SHIFT;
        }
        while self.first_chunk + (self.chunks.len() as u64) <= last {
            self.chunks.push_back(OnceLock::new());
        }
    }

    /// Forgets the entries below `base` (the log's new earliest revision).
    pub fn trim_front(&mut self, base: u64) {
        for revs in self.namespaces.values_mut() {
            while revs.front().is_some_and(|&r| r < base) {
                revs.pop_front();
            }
        }
        while self.first_chunk < base >> SHIFT && self.chunks.pop_front().is_some() {
            self.first_chunk += 1;
        }
        // A chunk built over entries now dropped is built again over the rest.
        if let Some(front) = self.chunks.front_mut().filter(|_| !base.is_multiple_of(CHUNK)) {
            front.take();
        }
    }

    /// Forgets the entries above `last` (the log's new last revision).
    pub fn truncate_after(&mut self, last: u64) {
        for revs in self.namespaces.values_mut() {
            while revs.back().is_some_and(|&r| r > last) {
                revs.pop_back();
            }
        }
        let keep = ((last >> SHIFT) + 1).saturating_sub(self.first_chunk) as usize;
        self.chunks.truncate(keep);
        if let Some(partial) = self.chunks.back_mut().filter(|_| !(last + 1).is_multiple_of(CHUNK)) {
            partial.take();
        }
    }

    fn plan(&self, selector: &Selector) -> Plan {
        match selector {
            Selector::All => Plan::Linear,
            Selector::Prefix(p) if p.is_empty() => Plan::Linear,
            _ => {
                let (lo, hi) = selector.bounds();
                match (&lo[..], &hi) {
                    (&[RESERVED, tag, ..], Some(hi)) if tag < 0xff && hi[..] <= [RESERVED, tag + 1][..] => {
                        Plan::Namespace(tag)
                    }
                    _ => Plan::Chunks(lo, hi),
                }
            }
        }
    }
}

/// One scan of `entries` (the log, `entries[0]` at revision `base`) over `[from, to]`, both
/// within the log: visits the matching entries in order, each commit's last visited entry
/// marked as its end, and stops at the end of the commit in which the `limit`-th match was
/// visited. Returns the revision to continue from and the number of entries it read.
pub(super) fn scan(
    index: &LogIndex,
    entries: &VecDeque<Event>,
    base: u64,
    (selector, from, to, limit): (&Selector, u64, u64, usize),
    visit: &mut dyn FnMut(&Event),
) -> (u64, u64) {
    let mut c = Cursor { entries, base, to, selector, limit: limit.max(1), matched: 0, read: 0, visit };
    let next = match index.plan(selector) {
        Plan::Linear => c.linear(from, to),
        Plan::Namespace(tag) => c.namespace(index.namespaces.get(&tag), from),
        Plan::Chunks(lo, hi) => c.chunks(index, from, (&lo, hi.as_deref())),
    };
    (next.unwrap_or(to + 1), c.read)
}

struct Cursor<'a, 'v> {
    entries: &'a VecDeque<Event>,
    base: u64,
    to: u64,
    selector: &'a Selector,
    limit: usize,
    matched: usize,
    read: u64,
    visit: &'v mut dyn FnMut(&Event),
}

impl<'a> Cursor<'a, '_> {
    fn entry(&mut self, revision: u64) -> &'a Event {
        self.read += 1;
        let entries = self.entries;
        &entries[(revision - self.base) as usize]
    }

    /// Visits the matching entry at `revision`, marked as its commit's end when no later
    /// entry of the commit (up to `to`) matches. Returns where to continue when the limit
    /// is reached and this was its commit's last match.
    fn offer(&mut self, revision: u64) -> Option<u64> {
        self.matched += 1;
        let entries = self.entries;
        let e = &entries[(revision - self.base) as usize];
        if e.commit_end {
            (self.visit)(e);
            return (self.matched >= self.limit).then_some(revision + 1);
        }
        let (base, mut read) = (self.base, 0);
        let rest = (revision + 1..=self.to).map(|r| {
            read += 1;
            &entries[(r - base) as usize]
        });
        let end = super::last_match(self.selector, rest);
        self.read += read;
        match end {
            Some(end) => {
                (self.visit)(&Event { commit_end: true, ..e.clone() });
                (self.matched >= self.limit).then_some(end + 1)
            }
            None => {
                (self.visit)(e);
                None
            }
        }
    }

    fn linear(&mut self, from: u64, to: u64) -> Option<u64> {
        let entries = self.entries;
        let (start, end) = ((from - self.base) as usize, (to - self.base) as usize + 1);
        for (i, e) in entries.range(start..end).enumerate() {
            if !self.selector.matches(&e.key) {
                continue;
            }
            // The common case inline: a match that ends its commit.
            let next = if e.commit_end {
                self.matched += 1;
                (self.visit)(e);
                (self.matched >= self.limit).then_some(e.revision + 1)
            } else {
                self.offer(e.revision)
            };
            if next.is_some() {
                self.read += i as u64 + 1;
                return next;
            }
        }
        self.read += (end - start) as u64;
        None
    }

    fn namespace(&mut self, revs: Option<&VecDeque<u64>>, from: u64) -> Option<u64> {
        let revs = revs?;
        let start = revs.partition_point(|&r| r < from);
        let to = self.to;
        for &r in revs.range(start..).take_while(|&&r| r <= to) {
            self.read += 1;
            if self.selector.matches(&self.entries[(r - self.base) as usize].key) {
                if let Some(next) = self.offer(r) {
                    return Some(next);
                }
            }
        }
        None
    }

    fn chunks(&mut self, index: &LogIndex, from: u64, (lo, hi): (&[u8], Option<&[u8]>)) -> Option<u64> {
        let last = self.base + self.entries.len() as u64 - 1;
        for c in from >> SHIFT..=self.to >> SHIFT {
            let start = from.max(c << SHIFT);
            let end = self.to.min(((c + 1) << SHIFT) - 1);
            let full = ((c + 1) << SHIFT) - 1 <= last;
            let slot = c.checked_sub(index.first_chunk).and_then(|i| index.chunks.get(i as usize));
            let Some(order) = slot.filter(|_| full).map(|s| s.get_or_init(|| self.build(c))) else {
                if let Some(next) = self.linear(start, end) {
                    return Some(next);
                }
                continue;
            };
            let key_below = |this: &mut Self, i: usize, bound: &[u8]| {
                this.entry((c << SHIFT) + u64::from(order[i])).key[..] < *bound
            };
            let a = self.partition(order.len(), |this, i| key_below(this, i, lo));
            let b = match hi {
                Some(hi) => a + self.partition(order.len() - a, |this, i| key_below(this, a + i, hi)),
                None => order.len(),
            };
            if b - a > DENSE {
                if let Some(next) = self.linear(start, end) {
                    return Some(next);
                }
                continue;
            }
            let mut bits = [0u64; (CHUNK / 64) as usize];
            for &off in &order[a..b] {
                bits[off as usize / 64] |= 1 << (off % 64);
            }
            for (w, mut word) in bits.into_iter().enumerate() {
                while word != 0 {
                    let r = (c << SHIFT) + (w as u64) * 64 + u64::from(word.trailing_zeros());
                    word &= word - 1;
                    if (start..=end).contains(&r) {
                        if let Some(next) = self.offer(r) {
                            return Some(next);
                        }
                    }
                }
            }
        }
        None
    }

    /// The first `i` in `0..n` for which `below(i)` is false (`below` is true, then false).
    fn partition(&mut self, n: usize, mut below: impl FnMut(&mut Self, usize) -> bool) -> usize {
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if below(self, mid) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The retained entries of the full chunk `c`, as offsets ordered by key.
    fn build(&mut self, c: u64) -> Box<[u16]> {
        let first = self.base.max(c << SHIFT);
        let entries = self.entries;
        let base = self.base;
        let key = |off: u16| &entries[((c << SHIFT) + u64::from(off) - base) as usize].key[..];
        // Sorted by the keys' first 16 bytes (one integer compare), whole keys only on a tie.
        let head = |k: &[u8]| {
            let mut b = [0u8; 16];
            let n = k.len().min(16);
            b[..n].copy_from_slice(&k[..n]);
            u128::from_be_bytes(b)
        };
        let mut order: Vec<(u128, u16)> =
            (((first - (c << SHIFT)) as u16)..CHUNK as u16).map(|off| (head(key(off)), off)).collect();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| key(a.1).cmp(key(b.1))));
        self.read += order.len() as u64;
        order.into_iter().map(|(_, off)| off).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use crate::event::{Event, EventKind};
    use crate::selector::Selector;
    use crate::storage::{MemoryLog, Storage};

    /// What `Storage::scan` promises, read off every entry in order.
    fn reference(log: &[Event], sel: &Selector, from: u64, to: u64, limit: usize) -> (Vec<Event>, u64) {
        let (mut out, mut matched, mut commit_start) = (Vec::new(), 0, 0);
        for e in log.iter().filter(|e| (from..=to).contains(&e.revision)) {
            if sel.matches(&e.key) {
                out.push(e.clone());
                matched += 1;
            }
            if e.commit_end {
                if out.len() > commit_start {
                    out.last_mut().unwrap().commit_end = true;
                }
                commit_start = out.len();
                if matched >= limit.max(1) {
                    return (out, e.revision + 1);
                }
            }
        }
        (out, to + 1)
    }

    fn key(n: u8) -> Vec<u8> {
        match n % 8 {
            0 => vec![0, b'a' + n / 8 % 3, b'/', n],
            k => vec![b'a' + k % 3, b'a' + n / 8 % 4, n],
        }
    }

    fn selector(kind: u8, a: u8, b: u8) -> Selector {
        match kind % 6 {
            0 => Selector::All,
            1 => Selector::Prefix(key(a)[..1 + (b % 2) as usize].to_vec()),
            2 => Selector::Key(key(a)),
            3 => Selector::Range(key(a.min(b)), key(a.max(b).saturating_add(1))),
            4 => Selector::Prefix(vec![0, b'a' + a % 3, b'/']),
            _ => Selector::Prefix(Vec::new()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Random commits (single and multi-event, user and reserved keys), a trimmed front
        /// and a cut tail: every selective scan gives what reading every entry would.
        #[test]
        fn indexed_scans_agree_with_reading_everything(
            commits in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..4), 500..1800),
            trim in 0u64..1500,
            cut in 0u64..300,
            queries in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<u16>(), any::<u16>(), 1usize..300), 1..12),
        ) {
            let mut log = MemoryLog::new();
            let mut all = Vec::new();
            let append = |log: &mut MemoryLog, all: &mut Vec<Event>, keys: &[u8]| {
                let first = log.last_revision() + 1;
                let commit: Vec<Event> = keys.iter().enumerate().map(|(i, &k)| Event {
                    revision: first + i as u64,
                    kind: EventKind::Put,
                    key: Arc::from(key(k)),
                    value: Arc::from(&[k][..]),
                    create_revision: 1,
                    version: 1,
                    commit_end: i + 1 == keys.len(),
                }).collect();
                log.append(&commit).unwrap();
                all.extend(commit);
            };
            for keys in &commits {
                append(&mut log, &mut all, keys);
            }
            // Scans build chunk indexes, then the log changes at both ends.
            let mut got = Vec::new();
            log.scan(&Selector::Prefix(b"a".to_vec()), 1, log.last_revision(), usize::MAX, &mut |e| got.push(e.clone())).unwrap();
            all.truncate(log.last_revision().saturating_sub(cut) as usize);
            while all.last().is_some_and(|e| !e.commit_end) {
                all.pop();
            }
            log.truncate_after(all.len() as u64);
            for keys in commits.iter().take(40) {
                append(&mut log, &mut all, keys);
            }
            let keep = trim.min(log.last_revision() / 2);
            log.trim_front(|e| e.revision < keep);
            let base = log.earliest_revision();
            let kept: Vec<Event> = all.into_iter().filter(|e| e.revision >= base).collect();
            for (kind, a, b, f, t, limit) in queries {
                let sel = selector(kind, a, b);
                let last = log.last_revision();
                let from = base + u64::from(f) % (last - base + 1);
                let to = from + u64::from(t) % (last - from + 1);
                let mut got = Vec::new();
                let next = log.scan(&sel, from, to, limit, &mut |e| got.push(e.clone())).unwrap();
                let (want, want_next) = reference(&kept, &sel, from, to, limit);
                prop_assert_eq!(next, want_next, "{:?} [{}, {}] limit {}", sel, from, to, limit);
                prop_assert_eq!(got, want, "{:?} [{}, {}] limit {}", sel, from, to, limit);
            }
        }
    }
}
