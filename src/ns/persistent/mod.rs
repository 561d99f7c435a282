//! Persistent subscriptions: named, durable consumers of a stream selector, with acks.
//!
//! # Schema (under `\0u/`, see `ns`)
//!
//! | key | value |
//! |---|---|
//! | `\0u/d<name>` (definition) | the selector and options (`Definition::encode`) |
//! | `\0u/c<name>` (checkpoint) | `u64`: every matching event at or below this revision is done |
//! | `\0u/p<name as part><revision u64>` (parked) | `deliveries u32`, `version u64`, then the stream name |
//!
//! Every operation is one commit through `ns::transact`, with a `Require` on the definition
//! key's `mod_revision`, so an operation on a deleted (or deleted and re-created)
//! subscription fails instead of writing into the new one. The checkpoint only moves
//! forward: it is the highest revision below which every delivered event was acked,
//! skipped or parked. A parked event's key is written in the same commit that lets the
//! checkpoint pass it, so nothing is lost across a restart; replaying it deletes the key
//! only when it is finally acked.
//!
//! Delivery state (in flight, retries, the consumers) lives in memory in one `Group` per
//! subscription and store (`group.rs`); a restart loses it and resumes at the checkpoint,
//! which is at-least-once: what was in flight is delivered again.

mod codec;
mod group;

use std::sync::Arc;

use parking_lot::Mutex;

pub use codec::Definition;
pub use group::{Consumer, Delivery, Nack};

use super::streams::check_name;
use super::subscriptions::StreamSelector;
use super::{transact, Feature, FeatureEvent, Fields, Key, Plan, Txn};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::selector::Selector;
use crate::store::Store;
use group::Group;

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Every matching event in the log (revision 1 on).
    Beginning,
    /// Only events appended after the creation.
    End,
    /// Events at or after this revision (≥ 1).
    Revision(u64),
}

/// How a subscription delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Events a consumer may hold unacked at once (≥ 1).
    pub max_in_flight: u32,
    /// An event not acked this long after its delivery (store clock) is delivered again.
    pub message_timeout_ms: u64,
    /// After this many deliveries that failed (nack retry or timeout) the event is parked (≥ 1).
    pub max_retry: u32,
    /// Events of one stream always go to the same consumer (chosen by a hash of the stream
    /// name over the connected consumers), one at a time across consumers, in order.
    pub pinned: bool,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions { max_in_flight: 100, message_timeout_ms: 30_000, max_retry: 10, pinned: false }
    }
}

/// A subscription as `subscription_list` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub name: Vec<u8>,
    pub definition: Definition,
    pub checkpoint: u64,
    /// Matching events after the checkpoint (counted over the current stream events).
    pub lag: u64,
    pub in_flight: u64,
    pub parked: u64,
    pub consumers: u64,
}

/// An event parked by a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub event: super::streams::StreamEvent,
    /// How often it had been delivered when it was parked.
    pub deliveries: u32,
}

/// The subscription groups of one store that have been opened, by name.
#[derive(Default)]
pub(crate) struct Groups(Mutex<std::collections::HashMap<Vec<u8>, Arc<Group>>>);

impl Groups {
    /// Ends every group (their consumers get `Closed`); called when the store closes.
    pub(crate) fn close(&self) {
        for (_, g) in self.0.lock().drain() {
            g.end(Error::Closed);
        }
    }
}

fn definition_key(name: &[u8]) -> Vec<u8> {
    Key::new(Feature::Subscriptions).raw(b"d").raw(name).into_vec()
}

fn checkpoint_key(name: &[u8]) -> Vec<u8> {
    Key::new(Feature::Subscriptions).raw(b"c").raw(name).into_vec()
}

fn parked_prefix(name: &[u8]) -> Vec<u8> {
    Key::new(Feature::Subscriptions).raw(b"p").part(name).into_vec()
}

fn parked_key(name: &[u8], revision: u64) -> Vec<u8> {
    Key::new(Feature::Subscriptions).raw(b"p").part(name).u64(revision).into_vec()
}

fn unknown(name: &[u8]) -> Error {
    Error::NotFound(format!("no subscription named {}", String::from_utf8_lossy(name)))
}

fn u64_of(value: &[u8]) -> u64 {
    value.try_into().map_or(0, u64::from_be_bytes)
}

impl Store {
    /// Creates the subscription `name`: one commit of its definition and its first
    /// checkpoint. A name already in use is `Conflict`; a start revision beyond the current
    /// revision + 1 is `FutureRevision`.
    pub fn subscription_create(
        &self,
        name: &[u8],
        selector: &StreamSelector,
        start: Start,
        options: &SubscriptionOptions,
    ) -> Result<u64> {
        check_name(name, "subscription")?;
        let def = Definition { selector: selector.clone(), options: *options };
        def.validate()?;
        let (dkey, ckey) = (definition_key(name), checkpoint_key(name));
        transact(self, || {
            let current = self.current_revision();
            let checkpoint = match start {
                Start::Beginning => 0,
                Start::End => current,
                Start::Revision(0) => {
                    return Err(Error::InvalidArgument("a start revision is 1 or more".into()))
                }
                Start::Revision(r) if r > current + 1 => {
                    return Err(Error::FutureRevision { requested: r, current })
                }
                Start::Revision(r) => r - 1,
            };
            if let Some(e) = self.read_kv(|kv| kv.get(&dkey).map(|e| e.mod_revision))? {
                return Err(Error::Conflict { key: name.to_vec(), expected: 0, current: e });
            }
            let mut txn = Txn::default();
            txn.require(&dkey, 0);
            txn.put_with(&dkey, |buf| def.encode(buf));
            txn.put(&ckey, checkpoint.to_be_bytes());
            Ok(Plan::Commit(txn, Box::new(|first| first)))
        })
    }

    /// Deletes the subscription, its checkpoint and its parked events in one commit; its
    /// connected consumers get `NotFound` from then on.
    pub fn subscription_delete(&self, name: &[u8]) -> Result<u64> {
        check_name(name, "subscription")?;
        let (dkey, ckey) = (definition_key(name), checkpoint_key(name));
        let first = transact(self, || {
            let Some(rev) = self.read_kv(|kv| kv.get(&dkey).map(|e| e.mod_revision))? else {
                return Err(unknown(name));
            };
            let mut txn = Txn::default();
            txn.require(&dkey, rev);
            txn.delete(&dkey);
            txn.delete(&ckey);
            self.range_reserved(&Selector::Prefix(parked_prefix(name)), 0, &mut |e| txn.delete(&e.key))?;
            Ok(Plan::Commit(txn, Box::new(|first| first)))
        })?;
        if let Some(g) = self.groups().0.lock().remove(name) {
            g.end(unknown(name));
        }
        Ok(first)
    }

    /// Every subscription, in name order, with its checkpoint, lag, in-flight and parked
    /// counts. The lag is counted over the stream events the selector matches, so a list
    /// costs a scan of them.
    pub fn subscription_list(&self) -> Result<Vec<SubscriptionInfo>> {
        let mut defs = Vec::new();
        let prefix = Key::new(Feature::Subscriptions).raw(b"d").into_vec();
        self.range_reserved(&Selector::Prefix(prefix.clone()), 0, &mut |e| {
            if let Some(def) = Definition::decode(&e.value) {
                defs.push((e.key[prefix.len()..].to_vec(), def));
            }
        })?;
        defs.into_iter()
            .map(|(name, definition)| {
                let checkpoint =
                    self.read_kv(|kv| kv.get(&checkpoint_key(&name)).map_or(0, |e| u64_of(&e.value)))?;
                let mut lag = 0;
                self.range_reserved(&definition.selector.key_selector(), 0, &mut |e| {
                    if e.revision > checkpoint
                        && matches!(super::streams::decode(e), Some(FeatureEvent::StreamEvent(se)) if definition.selector.matches(&se))
                    {
                        lag += 1;
                    }
                })?;
                let open = self.groups().0.lock().get(&name).cloned();
                let (in_flight, consumers, parked) = match open {
                    Some(g) => g.counts(),
                    None => (0, 0, self.parked_count(&name)?),
                };
                Ok(SubscriptionInfo { name, definition, checkpoint, lag, in_flight, parked, consumers })
            })
            .collect()
    }

    /// Connects a consumer to the subscription `name`. Consumers of one subscription share
    /// its events (each takes up to `max_in_flight`); dropping one hands its unacked
    /// events to the others.
    pub fn subscription_connect(&self, name: &[u8]) -> Result<Consumer> {
        Ok(Consumer::join(self.group(name)?))
    }

    /// Up to `limit` (0 = all) parked events of the subscription, in revision order.
    pub fn subscription_parked(&self, name: &[u8], limit: usize) -> Result<Vec<Parked>> {
        check_name(name, "subscription")?;
        if self.read_kv(|kv| kv.get(&definition_key(name)).is_none())? {
            return Err(unknown(name));
        }
        let mut found = Vec::new();
        self.range_reserved(&Selector::Prefix(parked_prefix(name)), limit, &mut |e| {
            if let Some(p) = codec::parked_of(e) {
                found.push(p);
            }
        })?;
        let mut out = Vec::with_capacity(found.len());
        for (stream, version, deliveries) in found {
            let dir = super::streams::Direction::Forward;
            if let Some(event) =
                self.read_stream(&stream, Some(version), 1, dir).ok().and_then(|mut v| v.pop())
            {
                out.push(Parked { event, deliveries });
            }
        }
        Ok(out)
    }

    /// Delivers every parked event of the subscription again (each counts deliveries from 0);
    /// a replayed event leaves the parked list when it is acked or skipped. Returns how
    /// many were queued.
    pub fn subscription_replay_parked(&self, name: &[u8]) -> Result<usize> {
        let parked = self.subscription_parked(name, 0)?;
        Ok(self.group(name)?.replay(parked))
    }

    /// Moves the subscription's checkpoint so that delivery starts again at `revision`
    /// (1 ..= current + 1; earlier to deliver events again, later to skip them), in one
    /// commit; parked events stay parked. An open delivery group ends under its lock (no
    /// checkpoint of its own lands after the reset): its consumers get `Conflict` and
    /// connect again, at the new checkpoint. Returns the commit's revision.
    pub fn subscription_reset(&self, name: &[u8], revision: u64) -> Result<u64> {
        check_name(name, "subscription")?;
        let (dkey, ckey) = (definition_key(name), checkpoint_key(name));
        let mut groups = self.groups().0.lock();
        let commit = || {
            transact(self, || {
                let current = self.current_revision();
                if revision == 0 || revision > current + 1 {
                    return Err(Error::InvalidArgument(format!(
                        "a reset revision is between 1 and the current revision + 1 ({})",
                        current + 1
                    )));
                }
                let Some(rev) = self.read_kv(|kv| kv.get(&dkey).map(|e| e.mod_revision))? else {
                    return Err(unknown(name));
                };
                let mut txn = Txn::default();
                txn.require(&dkey, rev);
                txn.put(&ckey, (revision - 1).to_be_bytes());
                Ok(Plan::Commit(txn, Box::new(|first| first)))
            })
        };
        let Some(g) = groups.get(name).cloned() else { return commit() };
        let reset = |at| Error::Conflict { key: name.to_vec(), expected: 0, current: at };
        let r = g.end_with(commit, reset);
        if r.is_ok() {
            groups.remove(name);
        }
        r
    }

    fn parked_count(&self, name: &[u8]) -> Result<u64> {
        let mut n = 0;
        self.range_reserved(&Selector::Prefix(parked_prefix(name)), 0, &mut |_| n += 1)?;
        Ok(n)
    }

    /// The open group of `name`, opened (at its checkpoint) on first use.
    fn group(&self, name: &[u8]) -> Result<Arc<Group>> {
        check_name(name, "subscription")?;
        let mut groups = self.groups().0.lock();
        if let Some(g) = groups.get(name) {
            return Ok(g.clone());
        }
        let (def, def_rev, checkpoint) = self
            .read_kv(|kv| {
                let d = kv.get(&definition_key(name))?;
                let c = kv.get(&checkpoint_key(name)).map_or(0, |e| u64_of(&e.value));
                Some((Definition::decode(&d.value)?, d.mod_revision, c))
            })?
            .ok_or_else(|| unknown(name))?;
        let parked = self.parked_count(name)?;
        let g = Arc::new(Group::open(self.handle(), name.to_vec(), def, def_rev, checkpoint, parked)?);
        groups.insert(name.to_vec(), g.clone());
        Ok(g)
    }
}

/// A subscription lifecycle change, for trackers: decoded from the `\0u/` keys.
pub(crate) fn decode(e: &Event) -> Option<FeatureEvent> {
    let mut f = Fields::of(&e.key, Feature::Subscriptions)?;
    if f.tag(b"d").is_some() {
        let name = f.rest().to_vec();
        return match (e.kind, e.version) {
            (EventKind::Put, 1) => {
                Some(FeatureEvent::SubscriptionCreated { name, definition: Definition::decode(&e.value)? })
            }
            (EventKind::Delete, _) => Some(FeatureEvent::SubscriptionDeleted { name }),
            _ => None,
        };
    }
    f.tag(b"c")?;
    let name = f.rest().to_vec();
    (e.kind == EventKind::Put)
        .then(|| FeatureEvent::SubscriptionCheckpoint { name, checkpoint: u64_of(&e.value) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_keys_decode_as_feature_events() {
        let store = Store::memory(None).unwrap();
        let sel = StreamSelector::prefix("o").with_type("t");
        let options = SubscriptionOptions { pinned: true, ..Default::default() };
        store.subscription_create(b"life", &sel, Start::End, &options).unwrap();
        let mut events = Vec::new();
        let prefix = Selector::Prefix(Feature::Subscriptions.prefix().to_vec());
        store.range_reserved(&prefix, 0, &mut |e| events.push(e.clone())).unwrap();
        let [checkpoint, def] = &events[..] else { panic!("{events:?}") };
        let definition = Definition { selector: sel, options };
        let name = b"life".to_vec();
        let created = FeatureEvent::SubscriptionCreated { name: name.clone(), definition };
        assert_eq!(crate::ns::decode(def), Some(created));
        let moved = FeatureEvent::SubscriptionCheckpoint { name: name.clone(), checkpoint: 0 };
        assert_eq!(crate::ns::decode(checkpoint), Some(moved));
        assert_eq!(crate::ns::decode(&Event { version: 2, ..def.clone() }), None, "definitions never change");
        let deleted = Event { kind: EventKind::Delete, ..def.clone() };
        assert_eq!(crate::ns::decode(&deleted), Some(FeatureEvent::SubscriptionDeleted { name }));
        assert_eq!(crate::ns::decode(&Event { kind: EventKind::Delete, ..checkpoint.clone() }), None);
    }
}
