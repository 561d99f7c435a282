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
