//! The current state of every key, derived from the log: `apply` is the only way it changes,
//! whether from a new commit or from replaying a stored log.

use std::collections::{BTreeSet, HashMap};

use hashbrown::HashMap as KeyMap;
use std::ops::Bound;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::event::{empty, Bytes, Event, EventKind};
use crate::op::Op;
use crate::selector::Selector;

/// Commits of at most this many operations look up their own earlier writes by a scan.
const SMALL_COMMIT: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

/// Point reads and writes go through a hash map; the ordered set of keys, needed only by
/// range reads, changes only when a key is created or deleted, so overwriting a key (the
/// common write) costs two hash lookups instead of two ordered searches. The map hashes
/// with foldhash (randomly seeded per map, several times faster than SipHash on short keys).
/// It is hashbrown's map (std's, with `get_key_value_mut`) so that a put finds its key once.
#[derive(Default)]
pub struct Kv {
    map: KeyMap<Bytes, Entry, foldhash::fast::RandomState>,
    order: BTreeSet<Bytes>,
}

impl Kv {
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Computes the events `ops` produce from revision `first` on, without changing anything.
    /// Every `Require` is checked against the state before the commit; puts and deletes see
    /// the effect of earlier operations of the same commit.
    pub fn plan(&self, ops: &[Op<'_>], first: u64, out: &mut Vec<Event>) -> Result<()> {
        for op in ops {
            if let Op::Require(key, expected) = *op {
                let current = self.get(key).map_or(0, |e| e.mod_revision);
                if current != expected {
                    return Err(Error::Conflict { key: key.to_vec(), expected, current });
                }
            }
        }
        // (create_revision, version) of keys written earlier in this commit; None = deleted.
        // A small commit finds them among its own events instead (no map, no hashing).
        let small = ops.len() <= SMALL_COMMIT;
        let mut overlay: HashMap<&[u8], Option<(u64, u64)>, foldhash::fast::RandomState> = HashMap::default();
        let own = out.len();
        let mut revision = first;
        for op in ops {
            let (key, put) = match *op {
                Op::Require(..) => continue,
                Op::Put(key, value) => (key, Some(value)),
                Op::Delete(key) => (key, None),
            };
            // One lookup gives both the prior state and the stored key to share.
            let stored = self.map.get_key_value(key);
            let earlier = if small {
                out[own..]
                    .iter()
                    .rev()
                    .find(|e| e.key[..] == *key)
                    .map(|e| (e.kind == EventKind::Put).then_some((e.create_revision, e.version)))
            } else {
                overlay.get(key).copied()
            };
            let prior = match earlier {
                Some(state) => state,
                None => stored.map(|(_, e)| (e.create_revision, e.version)),
            };
            let key_bytes = stored.map_or_else(|| Arc::from(key), |(k, _)| k.clone());
            let event = match put {
                Some(value) => {
                    let (create_revision, version) = match prior {
                        Some((created, version)) => (created, version + 1),
                        None => (revision, 1),
                    };
                    Event {
                        revision,
                        kind: EventKind::Put,
                        key: key_bytes,
                        value: Arc::from(value),
                        create_revision,
                        version,
                        commit_end: false,
                    }
                }
                None => {
                    if prior.is_none() {
                        return Err(Error::NotFound(format!(
                            "key {} does not exist",
                            String::from_utf8_lossy(key)
                        )));
                    }
                    Event {
                        revision,
                        kind: EventKind::Delete,
                        key: key_bytes,
                        value: empty(),
                        create_revision: 0,
                        version: 0,
                        commit_end: false,
                    }
                }
            };
            if !small {
                let state = (event.kind == EventKind::Put).then_some((event.create_revision, event.version));
                overlay.insert(op.key(), state);
            }
            out.push(event);
            revision += 1;
        }
        if let Some(last) = out.last_mut() {
            last.commit_end = true;
        }
        Ok(())
    }

    /// One put, planned and applied with one lookup of its key: its event (at `revision`) is
    /// pushed to `out` and handed to `store`, and only if that succeeds and answers true does
    /// the state change (false: the log placed it elsewhere, and the state gets it from
    /// there). The same result as `plan` of `[Op::Put]` followed by `apply`.
    pub fn put(
        &mut self,
        (key, value): (&[u8], &[u8]),
        revision: u64,
        out: &mut Vec<Event>,
        store: impl FnOnce(&[Event]) -> Result<bool>,
    ) -> Result<()> {
        let value: Bytes = Arc::from(value);
        let event = |key: &Bytes, create_revision, version| Event {
            revision,
            kind: EventKind::Put,
            key: key.clone(),
            value: value.clone(),
            create_revision,
            version,
            commit_end: true,
        };
        match self.map.get_key_value_mut(key) {
            Some((stored, entry)) => {
                out.push(event(stored, entry.create_revision, entry.version + 1));
                if !store(out)? {
                    return Ok(());
                }
                entry.version += 1;
                entry.mod_revision = revision;
                entry.value = value;
            }
            None => {
                let key: Bytes = Arc::from(key);
                out.push(event(&key, revision, 1));
                if !store(out)? {
                    return Ok(());
                }
                self.order.insert(key.clone());
                self.map.insert(
                    key,
                    Entry { value, create_revision: revision, mod_revision: revision, version: 1 },
                );
            }
        }
        Ok(())
    }

    /// Applies one logged event to the key state.
    pub fn apply(&mut self, e: &Event) {
        match e.kind {
            EventKind::Put => {
                let entry = Entry {
                    value: e.value.clone(),
                    create_revision: e.create_revision,
                    mod_revision: e.revision,
                    version: e.version,
                };
                match self.map.get_mut(&e.key[..]) {
                    Some(slot) => *slot = entry,
                    None => {
                        self.map.insert(e.key.clone(), entry);
                        self.order.insert(e.key.clone());
                    }
                }
            }
            EventKind::Delete if self.map.remove(&e.key[..]).is_some() => {
                self.order.remove(&e.key[..]);
            }
            _ => {}
        }
    }

    /// The current key with the greatest key matching `selector`, as a PUT event.
    pub fn last(&self, selector: &Selector) -> Option<Event> {
        let (start, end) = selector.bounds();
        let upper = match &end {
            Some(e) => Bound::Excluded(&e[..]),
            None => Bound::Unbounded,
        };
        let key = self.order.range::<[u8], _>((Bound::Included(&start[..]), upper)).next_back()?;
        let entry = &self.map[&key[..]];
        Some(Event {
            revision: entry.mod_revision,
            kind: EventKind::Put,
            key: key.clone(),
            value: entry.value.clone(),
            create_revision: entry.create_revision,
            version: entry.version,
            commit_end: true,
        })
    }

    /// Visits current keys matching `selector` in key order as PUT events, at most `limit`
    /// (0 = no limit). Returns true when keys were left out because of the limit.
    pub fn range(&self, selector: &Selector, limit: usize, visit: &mut dyn FnMut(&Event)) -> bool {
        let (start, end) = selector.bounds();
        let upper = match &end {
            Some(e) => Bound::Excluded(&e[..]),
            None => Bound::Unbounded,
        };
        for (n, key) in self.order.range::<[u8], _>((Bound::Included(&start[..]), upper)).enumerate() {
            if limit != 0 && n == limit {
                return true;
            }
            let entry = &self.map[&key[..]];
            visit(&Event {
                revision: entry.mod_revision,
                kind: EventKind::Put,
                key: key.clone(),
                value: entry.value.clone(),
                create_revision: entry.create_revision,
                version: entry.version,
                commit_end: true,
            });
        }
        false
    }
}
