//! Transient subscriptions: a watch over stream events, decoded.
//!
//! A subscription owns no keys. It is a watch of the registry whose key selector is the
//! stream-event prefix its `StreamSelector` maps to (one stream: that stream's events; a
//! name prefix, all streams or a type: every stream's events), narrowed by a `watch::Filter`
//! that keeps appended events whose stream and type the selector admits. So it gets the
//! watch machinery whole: a start from now, from revision 1 or from any revision, one ordered,
//! gap-free and duplicate-free sequence, the bounded queue with catch-up from the log, credit,
//! progress and the terminal notices. Deletions of a stream's events (`delete_stream`) are
//! not subscription events. Persistent subscriptions (`ns::persistent`) consume the same feed.

use std::sync::Arc;
use std::time::Duration;

use super::streams::{self, check_name, StreamEvent};
use super::FeatureEvent;
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::selector::Selector;
use crate::store::Store;
use crate::watch::{Filter, PullWatch, WatchOptions};

/// Which streams a subscription covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Streams {
    /// The stream with this name.
    One(Vec<u8>),
    /// Every stream whose name starts with these bytes (not empty: that is `All`).
    Prefix(Vec<u8>),
    All,
}

/// What a subscription delivers: the events of some streams, optionally of one type only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamSelector {
    pub streams: Streams,
    /// Only events of exactly this type (None = any type).
    pub event_type: Option<Vec<u8>>,
}

impl StreamSelector {
    pub fn stream(name: impl Into<Vec<u8>>) -> StreamSelector {
        StreamSelector { streams: Streams::One(name.into()), event_type: None }
    }

    pub fn prefix(prefix: impl Into<Vec<u8>>) -> StreamSelector {
        StreamSelector { streams: Streams::Prefix(prefix.into()), event_type: None }
    }

    pub fn all() -> StreamSelector {
        StreamSelector { streams: Streams::All, event_type: None }
    }

    /// Every stream's events of this type.
    pub fn event_type(event_type: impl Into<Vec<u8>>) -> StreamSelector {
        StreamSelector::all().with_type(event_type)
    }

    /// The same streams, events of this type only.
    pub fn with_type(self, event_type: impl Into<Vec<u8>>) -> StreamSelector {
        StreamSelector { event_type: Some(event_type.into()), ..self }
    }

    /// Refuses what can match nothing by mistake: a stream name or prefix that is empty or
    /// longer than `MAX_NAME` (as stream names are checked), an empty type.
    pub fn validate(&self) -> Result<()> {
        match &self.streams {
            Streams::One(name) => check_name(name, "stream")?,
            Streams::Prefix(prefix) => check_name(prefix, "stream prefix")?,
            Streams::All => {}
        }
        if self.event_type.as_ref().is_some_and(|t| t.is_empty()) {
            return Err(Error::InvalidArgument("an event type selector needs a non-empty type".into()));
        }
        Ok(())
    }

    /// Whether the selector admits an event of `stream` with type `event_type`.
    pub fn admits(&self, stream: &[u8], event_type: &[u8]) -> bool {
        let stream_ok = match &self.streams {
            Streams::One(name) => name.as_slice() == stream,
            Streams::Prefix(prefix) => stream.starts_with(prefix),
            Streams::All => true,
        };
        stream_ok && self.event_type.as_ref().is_none_or(|t| t.as_slice() == event_type)
    }

    pub fn matches(&self, e: &StreamEvent) -> bool {
        self.admits(&e.stream, e.event_type())
    }

    /// The key selector of the reserved namespace the watch registry indexes the
    /// subscription by: one stream's event prefix, or every stream's (a name prefix is not a
    /// key prefix, since a name is stored after its length).
    pub fn key_selector(&self) -> Selector {
        match &self.streams {
            Streams::One(name) => Selector::Prefix(streams::event_prefix(Some(name))),
            Streams::Prefix(_) | Streams::All => Selector::Prefix(streams::event_prefix(None)),
        }
    }

    /// The watch filter that keeps the appended events `matches` admits (for one stream or
    /// all of any type the key selector already decides, and only deletions must go).
    fn filter(&self) -> Filter {
        let sel = self.clone();
        let exact = matches!(sel.streams, Streams::One(_) | Streams::All) && sel.event_type.is_none();
        Arc::new(move |e: &Event| {
            e.kind == EventKind::Put && (exact || matches!(stream_event(e), Some(se) if sel.matches(&se)))
        })
    }
}

/// What a subscription delivers: stream events in global order, then notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    Event(StreamEvent),
    /// The subscription has seen everything up to this revision (with a progress interval).
    Progress(u64),
    /// Terminal: revisions it had not seen were compacted; the earliest retained revision.
    Compacted(u64),
    /// Terminal: the store was closed.
    Closed,
}

impl SubscriptionEvent {
    pub fn is_terminal(&self) -> bool {
        matches!(self, SubscriptionEvent::Compacted(_) | SubscriptionEvent::Closed)
    }
}

/// A push subscription's consumer: called like a watch callback (whole commits in order, or
/// one progress notice, or, last, one terminal notice), dropped exactly once after its last call.
pub type SubscriptionCallback = Box<dyn FnMut(&[SubscriptionEvent]) + Send>;

fn stream_event(e: &Event) -> Option<StreamEvent> {
    match streams::decode(e)? {
        FeatureEvent::StreamEvent(se) => Some(se),
        _ => None,
    }
}

/// Decodes a delivery of the subscription's watch. Every key event in it passed the filter,
/// so it decodes.
fn decode(events: &[Event]) -> Vec<SubscriptionEvent> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Progress => Some(SubscriptionEvent::Progress(e.revision)),
            EventKind::Compacted => Some(SubscriptionEvent::Compacted(e.revision)),
            EventKind::Closed => Some(SubscriptionEvent::Closed),
            EventKind::Put | EventKind::Delete => stream_event(e).map(SubscriptionEvent::Event),
        })
        .collect()
}

/// A pull subscription: the consumer calls `next` from one thread at a time.
pub struct SubscriptionFeed {
    watch: PullWatch,
}

impl SubscriptionFeed {
    /// The id of its watch.
    pub fn id(&self) -> u64 {
        self.watch.id()
    }

    /// Waits up to `timeout` for the next delivery, as `PullWatch::next` does: `Timeout` when
    /// nothing came, `Closed` once the terminal notice was returned.
    pub fn next(&self, timeout: Duration) -> Result<Vec<SubscriptionEvent>> {
        Ok(decode(&self.watch.next(timeout)?))
    }
}

impl Store {
    /// Registers a push subscription: `callback` runs on the store's dispatcher threads with
    /// the events `selector` matches, from `opts.start_revision` (0 = what is appended from
    /// now on, 1 = from the beginning, N = from revision N) as watches do. Returns its watch
    /// id: `unwatch` ends it and `add_credit` paces it.
    pub fn subscribe(
        &self,
        selector: &StreamSelector,
        opts: &WatchOptions,
        mut callback: SubscriptionCallback,
    ) -> Result<u64> {
        selector.validate()?;
        let deliver = Box::new(move |events: &[Event]| callback(&decode(events)));
        self.watch_with(selector.key_selector(), Some(selector.filter()), opts, deliver)
    }

    /// Opens a pull subscription (see `subscribe`; `opts.credit` is ignored).
    pub fn subscribe_pull(&self, selector: &StreamSelector, opts: &WatchOptions) -> Result<SubscriptionFeed> {
        selector.validate()?;
        let watch = self.watch_pull_with(selector.key_selector(), Some(selector.filter()), opts)?;
        Ok(SubscriptionFeed { watch })
    }
}
