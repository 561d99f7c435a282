//! The read path: point reads, ranges of the current keys, and `changes` from the log. All of
//! it shares the store's read lock with watch catch-up.

use crate::error::{Error, Result};
use crate::event::Event;
use crate::kv::{Entry, Kv};
use crate::ns;
use crate::selector::Selector;

use super::{check_key, Store};

/// Default and maximum `limit` of a `changes` call.
pub const DEFAULT_LIMIT: usize = 1000;

/// A batch of changes returned by `changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub events: Vec<Event>,
    /// True when `to` was not reached because of the limit; continue from `next_revision`.
    pub has_more: bool,
    pub next_revision: u64,
}

impl Store {
    pub fn get(&self, key: &[u8]) -> Result<Entry> {
        ns::check_user_key(key)?;
        self.get_reserved(key)
    }

    /// `get` for the store's own features: the key may be in the reserved namespace.
    pub(crate) fn get_reserved(&self, key: &[u8]) -> Result<Entry> {
        check_key(key)?;
        let st = self.inner.read()?;
        st.kv.get(key).cloned().ok_or_else(|| not_found(key))
    }

    /// Runs `f` on the key state under one read lock: a feature's consistent view.
    pub(crate) fn read_kv<R>(&self, f: impl FnOnce(&Kv) -> R) -> Result<R> {
        Ok(f(&self.inner.read()?.kv))
    }

    /// `range_visit` for the store's own features: any selector, the reserved namespace included.
    pub(crate) fn range_reserved(
        &self,
        selector: &Selector,
        limit: usize,
        visit: &mut dyn FnMut(&Event),
    ) -> Result<bool> {
        selector.validate()?;
        Ok(self.inner.read()?.kv.range(selector, limit, visit))
    }

    /// Visits current keys matching `selector` in key order (as PUT events), at most `limit`
    /// (0 = all). Returns true when the limit left keys out.
    pub fn range_visit(
        &self,
        selector: &Selector,
        limit: usize,
        visit: &mut dyn FnMut(&Event),
    ) -> Result<bool> {
        self.range_reserved(&ns::user_selector(selector)?, limit, visit)
    }

    pub fn range(&self, selector: &Selector, limit: usize) -> Result<(Vec<Event>, bool)> {
        let mut out = Vec::new();
        let more = self.range_visit(selector, limit, &mut |e| out.push(e.clone()))?;
        Ok((out, more))
    }

    /// Visits the events matching `selector` with revision in `[from, to]` (`to` 0 = current),
    /// at most about `limit` of them (0 = 1000; a commit is never split). Returns
    /// `(has_more, next_revision)`.
    pub fn changes_visit(
        &self,
        selector: &Selector,
        from: u64,
        to: u64,
        limit: usize,
        visit: &mut dyn FnMut(&Event),
    ) -> Result<(bool, u64)> {
        let selector = &ns::user_selector(selector)?;
        let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
        let st = self.inner.read()?;
        let current = st.log.last_revision();
        let from = from.max(1);
        if from > current + 1 {
            return Err(Error::FutureRevision { requested: from, current });
        }
        if to != 0 && to < from {
            return Err(Error::InvalidArgument(format!("to ({to}) is below from ({from})")));
        }
        let to = if to == 0 { current } else { to.min(current) };
        let next = st.log.scan(selector, from, to, limit, visit)?;
        Ok((next <= to, next))
    }

    pub fn changes(&self, selector: &Selector, from: u64, to: u64, limit: usize) -> Result<Changes> {
        let mut events = Vec::new();
        let (has_more, next_revision) =
            self.changes_visit(selector, from, to, limit, &mut |e| events.push(e.clone()))?;
        Ok(Changes { events, has_more, next_revision })
    }

    /// The number of current keys.
    pub fn key_count(&self) -> usize {
        self.inner.state.read().kv.len()
    }
}

fn not_found(key: &[u8]) -> Error {
    Error::NotFound(format!("key {} does not exist", String::from_utf8_lossy(key)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::op::Op;
    use crate::selector::Selector;
    use crate::watch::{Feed, PullWatch, WatchOptions};
    use crate::Store;

    fn entries_read(s: &Store) -> u64 {
        s.inner.state.read().log.stats().entries_read
    }

    /// A log of `n` entries where one in 100 is in the streams namespace.
    fn one_percent_reserved(n: u64) -> Store {
        let s = Store::memory(None).unwrap();
        for i in 0..n {
            if i % 100 == 7 {
                let key = crate::ns::Key::new(crate::ns::Feature::Streams).raw(&i.to_be_bytes()).into_vec();
                s.commit_reserved(&[Op::Put(&key, b"e")]).unwrap();
            } else {
                s.put(format!("k{:05}", i % 5000).as_bytes(), b"v").unwrap();
            }
        }
        s
    }

    /// A subscriber of one namespace catching up over a log where it matches 1 % reads about
    /// 1 % of the entries (the namespace's revision list), not the whole log.
    #[test]
    fn namespace_catch_up_reads_only_its_entries() {
        let n = 20_000;
        let s = one_percent_reserved(n);
        let before = entries_read(&s);
        let sel = Selector::Prefix(b"\0s/".to_vec());
        let opts = WatchOptions { start_revision: 1, max_queue: 64, ..Default::default() };
        let w = s.inner.register(sel.clone(), None, &opts, None).unwrap();
        let feed: Arc<dyn Feed> = s.inner.clone();
        let pull = PullWatch::new(feed, w);
        let mut got = Vec::new();
        while got.len() < (n / 100) as usize {
            let batch = pull.next(Duration::from_secs(60)).unwrap();
            assert!(!batch.is_empty(), "the whole backlog is in the log");
            got.extend(batch);
        }
        let read = entries_read(&s) - before;
        assert!(got.iter().all(|e| sel.matches(&e.key) && e.commit_end));
        assert!(got.windows(2).all(|w| w[0].revision < w[1].revision));
        assert!(read <= n / 20, "read {read} of {n} entries for {} matches", got.len());
        assert!(read >= got.len() as u64);
    }

    /// `changes` on a user prefix: the first scan orders each full chunk by key once; later
    /// scans read about what they match (plus two binary searches per chunk).
    #[test]
    fn prefix_changes_read_in_proportion_to_matches() {
        let n = 20_000;
        let s = one_percent_reserved(n);
        let sel = Selector::Prefix(b"k000".to_vec()); // 100 of the 5000 keys: 2 %
        let scan = |s: &Store| {
            let before = entries_read(s);
            let (mut from, mut events) = (1, 0);
            loop {
                let ch = s.changes(&sel, from, 0, 100).unwrap();
                events += ch.events.len() as u64;
                from = ch.next_revision;
                if !ch.has_more {
                    return (events, entries_read(s) - before);
                }
            }
        };
        let (events, first) = scan(&s);
        let (again, read) = scan(&s);
        assert_eq!(events, again);
        assert!(events > 0 && first >= n - n / 100, "the first scan builds the chunk index: {first}");
        assert!(read <= 3 * events + 30 * (n / 1024 + 1), "read {read} entries for {events} matches");
    }
}
