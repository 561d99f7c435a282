//! Finds the watchers whose selector matches a key, in time that follows the number of
//! matching watchers rather than the number registered (etcd's watcher groups + interval
//! tree). Exact keys sit in a hash map; prefixes and ranges, as half-open intervals, in a
//! centered interval tree that is rebuilt lazily: additions since the last build are scanned
//! linearly and removals are skipped until they are numerous enough to pay for a rebuild.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::Watcher;
use crate::selector::Selector;

type Bound = Option<Vec<u8>>; // None = no upper bound

struct Interval {
    start: Vec<u8>,
    end: Bound,
    watcher: Arc<Watcher>,
}

impl Interval {
    fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_ref().is_none_or(|e| key < e.as_slice())
    }
}

struct Node {
    center: Vec<u8>,
    /// Intervals containing `center`, by start ascending and by end descending (indices into `all`).
    by_start: Vec<usize>,
    by_end: Vec<usize>,
    left: Option<Box<Node>>,
    right: Option<Box<Node>>,
}

#[derive(Default)]
pub struct Index {
    exact: HashMap<Vec<u8>, Vec<Arc<Watcher>>>,
    /// Non-empty prefixes by value; a key is looked up once per distinct prefix length.
    prefixes: HashMap<Vec<u8>, Vec<Arc<Watcher>>>,
    /// (prefix length, number of registered prefixes of that length), by length.
    lengths: Vec<(usize, usize)>,
    /// ALL watchers: every user key (the reserved namespace is not theirs).
    all: Vec<Arc<Watcher>>,
    /// Every registered interval; `tree` covers `all[..built]`, the rest are scanned linearly.
    intervals: Vec<Interval>,
    tree: Option<Box<Node>>,
    built: usize,
    /// Ids removed from `intervals[..built]` but still referenced by the tree.
    removed: HashSet<u64>,
}

impl Index {
    pub fn insert(&mut self, w: &Arc<Watcher>) {
        match &w.selector {
            Selector::All => self.all.push(w.clone()),
            Selector::Key(k) => self.exact.entry(k.clone()).or_default().push(w.clone()),
            Selector::Prefix(p) => {
                self.prefixes.entry(p.clone()).or_default().push(w.clone());
                match self.lengths.binary_search_by_key(&p.len(), |&(l, _)| l) {
                    Ok(i) => self.lengths[i].1 += 1,
                    Err(i) => self.lengths.insert(i, (p.len(), 1)),
                }
            }
            sel => {
                let (start, end) = sel.bounds();
                self.intervals.push(Interval { start, end, watcher: w.clone() });
            }
        }
    }

    pub fn remove(&mut self, w: &Watcher) {
        let id = w.id;
        match &w.selector {
            Selector::All => self.all.retain(|x| x.id != id),
            Selector::Key(k) => {
                if let Some(v) = self.exact.get_mut(k) {
                    v.retain(|x| x.id != id);
                    if v.is_empty() {
                        self.exact.remove(k);
                    }
                }
            }
            Selector::Prefix(p) => {
                if let Some(v) = self.prefixes.get_mut(p) {
                    let before = v.len();
                    v.retain(|x| x.id != id);
                    if v.len() < before {
                        if let Ok(i) = self.lengths.binary_search_by_key(&p.len(), |&(l, _)| l) {
                            self.lengths[i].1 -= 1;
                            if self.lengths[i].1 == 0 {
                                self.lengths.remove(i);
                            }
                        }
                    }
                    if v.is_empty() {
                        self.prefixes.remove(p);
                    }
                }
            }
            _ => {
                if let Some(pos) = self.intervals[self.built..].iter().position(|i| i.watcher.id == id) {
                    self.intervals.remove(self.built + pos);
                } else {
                    self.removed.insert(id);
                }
            }
        }
    }

    /// Calls `f` once for every watcher whose selector matches `key`.
    pub fn matching(&mut self, key: &[u8], f: &mut dyn FnMut(&Arc<Watcher>)) {
        if key.first() != Some(&crate::ns::RESERVED) {
            self.all.iter().for_each(&mut *f);
        }
        if let Some(ws) = self.exact.get(key) {
            ws.iter().for_each(&mut *f);
        }
        for &(len, _) in &self.lengths {
            if len > key.len() {
                break;
            }
            if let Some(ws) = self.prefixes.get(&key[..len]) {
                ws.iter().for_each(&mut *f);
            }
        }
        if self.intervals.is_empty() {
            return;
        }
        self.maybe_rebuild();
        let removed = &self.removed;
        let mut hit = |i: &Interval| {
            if removed.is_empty() || !removed.contains(&i.watcher.id) {
                f(&i.watcher)
            }
        };
        let mut node = self.tree.as_deref();
        while let Some(n) = node {
            if key < n.center.as_slice() {
                for &i in &n.by_start {
                    if self.intervals[i].start.as_slice() > key {
                        break;
                    }
                    hit(&self.intervals[i]);
                }
                node = n.left.as_deref();
            } else {
                for &i in &n.by_end {
                    if self.intervals[i].end.as_ref().is_some_and(|e| e.as_slice() <= key) {
                        break;
                    }
                    hit(&self.intervals[i]);
                }
                node = n.right.as_deref();
            }
        }
        for i in &self.intervals[self.built..] {
            if i.contains(key) {
                f(&i.watcher);
            }
        }
    }

    fn maybe_rebuild(&mut self) {
        let pending = self.intervals.len() - self.built;
        if pending <= 16 + self.built / 8 && self.removed.len() <= 16 + self.built / 2 {
            return;
        }
        if !self.removed.is_empty() {
            let removed = std::mem::take(&mut self.removed);
            let built = self.built;
            let mut idx = 0;
            self.intervals.retain(|i| {
                idx += 1;
                idx > built || !removed.contains(&i.watcher.id)
            });
        }
        let mut order: Vec<usize> = (0..self.intervals.len()).collect();
        order.sort_by(|&a, &b| self.intervals[a].start.cmp(&self.intervals[b].start));
        self.tree = build(&self.intervals, order);
        self.built = self.intervals.len();
    }
}

/// Builds a centered interval tree over `items` (indices sorted by start).
fn build(all: &[Interval], items: Vec<usize>) -> Option<Box<Node>> {
    if items.is_empty() {
        return None;
    }
    // The median start: the interval it comes from contains it, so every node holds at least one.
    let center = all[items[items.len() / 2]].start.clone();
    let (mut left, mut right, mut here) = (Vec::new(), Vec::new(), Vec::new());
    for i in items {
        let iv = &all[i];
        if iv.start.as_slice() > center.as_slice() {
            right.push(i);
        } else if iv.end.as_ref().is_some_and(|e| e.as_slice() <= center.as_slice()) {
            left.push(i);
        } else {
            here.push(i);
        }
    }
    let by_start = here.clone(); // already sorted by start
    let mut by_end = here;
    by_end.sort_by(|&a, &b| match (&all[a].end, &all[b].end) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(x),
    });
    Some(Box::new(Node { center, by_start, by_end, left: build(all, left), right: build(all, right) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::WatchOptions;
    use proptest::prelude::*;

    fn selector(kind: u8, a: u8, b: u8) -> Selector {
        let key = |n: u8| vec![b'a' + n % 4, b'a' + (n / 4) % 4];
        match kind % 5 {
            0 => Selector::All,
            1 => Selector::Key(key(a)),
            2 => Selector::Prefix(key(a)[..1 + (b % 2) as usize].to_vec()),
            3 => {
                let (s, e) = (key(a), key(b));
                if s < e {
                    Selector::Range(s, e)
                } else {
                    Selector::Range(e, Vec::new())
                }
            }
            _ => Selector::Prefix(vec![0xff]),
        }
    }

    proptest! {
        /// Random registrations and removals, queried in between: the index always finds
        /// exactly the watchers whose selector matches, each once.
        #[test]
        fn index_agrees_with_brute_force(steps in proptest::collection::vec((any::<bool>(), any::<u8>(), any::<u8>(), any::<u8>()), 1..300)) {
            let mut index = Index::default();
            let mut live: Vec<Arc<Watcher>> = Vec::new();
            let mut next_id = 1;
            for (add, k, a, b) in steps {
                if add || live.is_empty() {
                    let w = Arc::new(Watcher::new(next_id, selector(k, a, b), None, &WatchOptions::default(), None, 0, true));
                    next_id += 1;
                    index.insert(&w);
                    live.push(w);
                } else {
                    let w = live.remove(a as usize % live.len());
                    index.remove(&w);
                }
                for probe in [vec![b'a' + a % 4, b'a' + b % 4], vec![b'a' + b % 4], vec![0xff, 1]] {
                    let mut found = Vec::new();
                    index.matching(&probe, &mut |w| found.push(w.id));
                    found.sort_unstable();
                    let mut want: Vec<u64> = live.iter().filter(|w| w.selector.matches(&probe)).map(|w| w.id).collect();
                    want.sort_unstable();
                    prop_assert_eq!(found, want, "probe {:?}", probe);
                }
            }
        }
    }
}
