//! Trackers: lifecycle notifications (created / updated / deleted) of every feature, and of
//! features the user names.
//!
//! A tracker is a push watch on one feature's namespace whose events are decoded (`ns::decode`
//! where the feature has a decoder) and translated: a PUT of a feature's lifecycle key at key
//! version 1 is *created*, a later PUT *updated*, a DELETE *deleted*. So a tracker has every guarantee of a watch (ordered, gap-free, a bounded queue
//! that catches up from the log, `start_revision` replay) and ends with the watch's terminal
//! notice (COMPACTED or CLOSED), delivered as a notification with that action.
//!
//! | feature | lifecycle key | id | data |
//! |---|---|---|---|
//! | `streams` | the stream head `\0s/h<name>` | the stream name | `{"version": last version}` |
//! | `snapshots` | `\0n/…` | the stream name | `{"source", "stream", "version"}` |
//! | `contexts` | the document `\0c/d<id>` (created: as `ns::decode` says, the first write or the first after a delete) | the context id | `{"version": context version}` |
//! | `keys`, `keys/<prefix>` | user keys (under the prefix) | the key | `{"version": key version}` |
//! | any other name | `\0t/<name as part>` | as notified | as notified |
//!
//! Deletes carry `{}` as data. A user feature has no state of its own, so `notify` writes the
//! notification itself, in one commit, as the value of the feature's one key:
//!
//! # Schema (under `\0t/`, see `ns`)
//!
//! | key | value |
//! |---|---|
//! | `\0t/<feature as part>` | `action u8` (1 created, 2 updated, 3 deleted), `id as part`, then the data as JSON text |
//!
//! Each notification supersedes the previous one of its feature: the latest stays a current
//! key, the earlier ones are history, replayable from the log until `compact` removes them.
//! A tracker that starts (or falls behind) below the earliest retained revision gets
//! COMPACTED, as a watch does.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::streams::{check_name, decode_head};
use super::{Feature, FeatureEvent, Fields, Key};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::op::Op;
use crate::selector::Selector;
use crate::store::Store;
use crate::watch::WatchOptions;

/// What a notification says happened. The numbers are the C ABI's `tidemark_action`; the
/// last two are the terminal notices of the tracker's watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Action {
    Created = 1,
    Updated = 2,
    Deleted = 3,
    /// Terminal: history the tracker had not seen was compacted; `revision` is the earliest retained.
    Compacted = 4,
    /// Terminal: the store was closed.
    Closed = 5,
}

impl Action {
    /// The action a user may notify, by its number (1 to 3).
    pub fn from_u32(n: u32) -> Result<Action> {
        match n {
            1 => Ok(Action::Created),
            2 => Ok(Action::Updated),
            3 => Ok(Action::Deleted),
            n => Err(Error::InvalidArgument(format!(
                "unknown action {n}: use 1 (created), 2 (updated) or 3 (deleted)"
            ))),
        }
    }

    /// The action a user may notify, by its name.
    pub fn parse(name: &str) -> Result<Action> {
        match name {
            "created" => Ok(Action::Created),
            "updated" => Ok(Action::Updated),
            "deleted" => Ok(Action::Deleted),
            n => {
                Err(Error::InvalidArgument(format!("unknown action {n:?}: use created, updated or deleted")))
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
            Action::Compacted => "compacted",
            Action::Closed => "closed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Action::Compacted | Action::Closed)
    }

    /// The lifecycle action of a key event: created at key version 1.
    fn of(e: &Event) -> Option<Action> {
        match e.kind {
            EventKind::Put if e.version == 1 => Some(Action::Created),
            EventKind::Put => Some(Action::Updated),
            EventKind::Delete => Some(Action::Deleted),
            _ => None,
        }
    }
}

/// One notification of a tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The feature as tracked.
    pub feature: Arc<str>,
    pub action: Action,
    /// The instance: stream name, context id, key, or the id a user notified (empty for
    /// terminal notices).
    pub id: Vec<u8>,
    /// The revision of the commit (for COMPACTED: the earliest retained revision).
    pub revision: u64,
    /// JSON text (`null` for terminal notices).
    pub data: String,
}

/// A tracker's consumer: runs on the store's dispatcher threads, like a watch callback, and is
/// dropped exactly once after its last call.
pub type Handler = Box<dyn FnMut(&Notification) + Send>;

/// What a feature name tracks.
enum Tracked {
    Streams,
    Snapshots,
    Contexts,
    Subscriptions,
    Keys(Vec<u8>),
    User(Vec<u8>),
}

impl Tracked {
    fn parse(feature: &str) -> Result<Tracked> {
        check_name(feature.as_bytes(), "feature")?;
        Ok(match feature {
            "streams" => Tracked::Streams,
            "snapshots" => Tracked::Snapshots,
            "contexts" => Tracked::Contexts,
            "subscriptions" => Tracked::Subscriptions,
            "keys" => Tracked::Keys(Vec::new()),
            f => match f.strip_prefix("keys/") {
                Some(prefix) => Tracked::Keys(prefix.as_bytes().to_vec()),
                None => Tracked::User(user_key(f)),
            },
        })
    }

    fn selector(&self) -> Result<Selector> {
        let prefix = |f: Feature, tag: &[u8]| Selector::Prefix(Key::new(f).raw(tag).into_vec());
        Ok(match self {
            Tracked::Streams => prefix(Feature::Streams, b"h"),
            Tracked::Snapshots => prefix(Feature::Snapshots, b""),
            Tracked::Contexts => prefix(Feature::Contexts, b"d"),
            Tracked::Subscriptions => prefix(Feature::Subscriptions, b""),
            Tracked::Keys(p) => super::user_selector(&Selector::Prefix(p.clone()))?,
            Tracked::User(key) => Selector::Key(key.clone()),
        })
    }

    /// The action, id and data of a log event, if it is a lifecycle event of this feature.
    fn translate(&self, e: &Event) -> Option<(Action, Vec<u8>, String)> {
        if let Tracked::User(_) = self {
            let (action, id, data) = decode_user(&e.value)?;
            return Some((action, id.to_vec(), data.to_owned()));
        }
        let mut action = Action::of(e)?;
        let (id, data) = match (self, super::decode(e)) {
            (Tracked::Streams, _) => {
                let (name, version) = decode_head(&e.key, &e.value)?;
                (name.to_vec(), version.map(|v| json!({ "version": v })))
            }
            (Tracked::Contexts, Some(FeatureEvent::ContextWritten { context, created })) => {
                // Versions go on across a delete and re-create: created is the decoder's word.
                action = if created { Action::Created } else { Action::Updated };
                (context.id, Some(json!({ "version": context.version })))
            }
            (Tracked::Contexts, Some(FeatureEvent::ContextDeleted { id })) => (id, None),
            (Tracked::Snapshots, Some(FeatureEvent::Snapshot(s))) => {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                let data =
                    json!({ "source": text(&s.source), "stream": text(&s.stream), "version": s.version });
                (s.stream, Some(data))
            }
            (Tracked::Snapshots, Some(FeatureEvent::SnapshotDeleted { stream, .. })) => (stream, None),
            // The checkpoint key is written with the definition (key version 1: created) and
            // again as it moves; the definition's delete is the subscription's.
            (Tracked::Subscriptions, Some(FeatureEvent::SubscriptionCheckpoint { name, checkpoint })) => {
                (name, Some(json!({ "checkpoint": checkpoint })))
            }
            (Tracked::Subscriptions, Some(FeatureEvent::SubscriptionDeleted { name })) => (name, None),
            (Tracked::Keys(_), _) => (e.key.to_vec(), Some(json!({ "version": e.version }))),
            _ => return None,
        };
        let data = if action == Action::Deleted { json!({}) } else { data? };
        Some((action, id, data.to_string()))
    }
}

fn user_key(feature: &str) -> Vec<u8> {
    Key::new(Feature::Trackers).part(feature.as_bytes()).into_vec()
}

fn decode_user(value: &[u8]) -> Option<(Action, &[u8], &str)> {
    let (&action, rest) = value.split_first()?;
    let mut f = Fields(rest);
    let id = f.part()?;
    Some((Action::from_u32(action.into()).ok()?, id, std::str::from_utf8(f.rest()).ok()?))
}

/// The store's trackers: watch id → feature. An entry whose watch has ended (a terminal
/// notice) is not a member any more and is pruned by `tracker_members`.
#[derive(Default)]
pub(crate) struct Members(Mutex<BTreeMap<u64, Arc<str>>>);

impl Store {
    /// Tracks `feature` (see the module doc for the names): `handler` gets its notifications
    /// from `opts.start_revision` on (0 = from now), then the terminal notice. `opts` are the
    /// watch's (queue bound, start, credit: one event is at most one notification); progress
    /// does not apply. The tracker id is its watch's id (`add_credit` grants it credit).
    pub fn track(&self, feature: &str, opts: &WatchOptions, mut handler: Handler) -> Result<u64> {
        let tracked = Tracked::parse(feature)?;
        let name: Arc<str> = feature.into();
        let selector = tracked.selector()?;
        let opts = WatchOptions { progress_interval: None, ..*opts };
        let feature = name.clone();
        let id = self.watch_with(
            selector,
            None,
            &opts,
            Box::new(move |events| {
                for e in events {
                    let n = if e.is_terminal() {
                        let action =
                            if e.kind == EventKind::Closed { Action::Closed } else { Action::Compacted };
                        let data = "null".to_owned();
                        Notification {
                            feature: feature.clone(),
                            action,
                            id: Vec::new(),
                            revision: e.revision,
                            data,
                        }
                    } else if let Some((action, id, data)) = tracked.translate(e) {
                        Notification { feature: feature.clone(), action, id, revision: e.revision, data }
                    } else {
                        continue;
                    };
                    handler(&n);
                }
            }),
        )?;
        self.trackers().0.lock().insert(id, name);
        Ok(id)
    }

    /// Ends a tracker, with `unwatch`'s guarantees (the handler is not running and has been
    /// dropped when it returns, except from inside a callback). Unknown or ended: `NotFound`.
    pub fn untrack(&self, id: u64) -> Result<()> {
        match self.trackers().0.lock().remove(&id) {
            Some(_) => self.unwatch(id),
            None => Err(Error::NotFound(format!("no tracker with id {id}"))),
        }
    }

    /// The ids of the trackers of `feature` that have not ended, ascending.
    pub fn tracker_members(&self, feature: &str) -> Result<Vec<u64>> {
        Tracked::parse(feature)?;
        let mut members = self.trackers().0.lock();
        members.retain(|&id, _| self.is_watching(id));
        Ok(members.iter().filter(|(_, f)| &***f == feature).map(|(&id, _)| id).collect())
    }

    /// Notifies the trackers of the user feature `feature` that `id` was created, updated or
    /// deleted, with `data` (JSON text): one commit, durable and ordered with every other,
    /// replayable by trackers that start at or before its revision. Returns the revision.
    /// Built-in feature names (`streams`, `snapshots`, `contexts`, `keys…`) are refused: their
    /// features notify by themselves.
    pub fn notify(&self, feature: &str, action: Action, id: &[u8], data: &str) -> Result<u64> {
        let Tracked::User(key) = Tracked::parse(feature)? else {
            return Err(Error::InvalidArgument(format!(
                "{feature:?} is a built-in feature: it notifies by itself"
            )));
        };
        if action.is_terminal() {
            return Err(Error::InvalidArgument(format!("{} is not an action to notify", action.name())));
        }
        check_name(id, "notification id")?;
        serde_json::from_str::<Value>(data)
            .map_err(|e| Error::InvalidArgument(format!("notification data is not JSON: {e}")))?;
        let mut value = Vec::with_capacity(3 + id.len() + data.len());
        value.push(action as u8);
        value.extend_from_slice(&Key(Vec::new()).part(id).into_vec());
        value.extend_from_slice(data.as_bytes());
        self.commit_reserved(&[Op::Put(&key, &value)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_values_round_trip() {
        let store = Store::memory(None).unwrap();
        store.notify("jobs", Action::Updated, b"j\0b", r#"{"n":1}"#).unwrap();
        let e = store.get_reserved(&user_key("jobs")).unwrap();
        assert_eq!(decode_user(&e.value), Some((Action::Updated, &b"j\0b"[..], r#"{"n":1}"#)));
        assert_eq!(decode_user(&[9, 0, 0]), None, "unknown action");
        assert_eq!(decode_user(&[1, 0, 5, b'a']), None, "truncated id");
    }
}
