//! The delivery state of one persistent subscription in one store: the events read from
//! its feed and not yet done, what is in flight to which consumer, retries, and the
//! commits that move the checkpoint and park events.
//!
//! Events come from one decoded subscription feed (`Store::subscribe_pull`) opened at the
//! checkpoint + 1, so catch-up, the bounded queue and terminal notices are the watch
//! registry's. The group buffers at most `BUFFER` events read ahead of the consumers (plus
//! one feed delivery); when that is full the feed's own bounded queue and catch-up take the
//! rest, so a slow consumer never holds back a writer. Timeouts are judged by the store
//! clock whenever a consumer calls `next`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::super::streams::StreamEvent;
use super::super::subscriptions::{SubscriptionEvent, SubscriptionFeed};
use super::super::{transact, Plan, Txn};
use super::{checkpoint_key, codec, definition_key, parked_key, unknown, Definition, Parked};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::watch::WatchOptions;

/// Events read ahead of the consumers before the group stops draining its feed.
const BUFFER: usize = 1024;

/// How long a waiting consumer sleeps before it looks at timeouts and the feed again.
const POLL: Duration = Duration::from_millis(50);

/// What a consumer does with an event it cannot process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nack {
    /// Deliver it again (parked instead once it has had `max_retry` deliveries).
    Retry,
    /// Park it now.
    Park,
    /// Treat it as done (as an ack does).
    Skip,
}

/// An event delivered to a consumer, with how often it has been delivered (1 = first time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub event: StreamEvent,
    pub delivery_count: u32,
}

struct Held {
    event: StreamEvent,
    deliveries: u32,
}

struct Flight {
    held: Held,
    consumer: u64,
    deadline_ms: u64,
}

#[derive(Default)]
struct State {
    /// The durable checkpoint (the last one committed).
    checkpoint: u64,
    /// The feed has delivered every matching event up to this revision.
    read_to: u64,
    pending: VecDeque<Held>,
    retry: BTreeMap<u64, Held>,
    in_flight: BTreeMap<u64, Flight>,
    /// Parked events being delivered again (their parked keys stay until they are done).
    replaying: BTreeSet<u64>,
    parked: u64,
    /// Connected consumers and how many events each holds.
    consumers: BTreeMap<u64, u32>,
    next_consumer: u64,
    /// Why the group ended (deleted, store closed, feed compacted).
    ended: Option<Error>,
}

impl State {
    /// The highest revision below which nothing is outstanding; never below the checkpoint.
    fn candidate(&self) -> u64 {
        let open = |r: &&u64| !self.replaying.contains(*r);
        let first = [
            self.pending.front().map(|h| h.event.revision),
            self.retry.keys().find(open).copied(),
            self.in_flight.keys().find(open).copied(),
        ]
        .into_iter()
        .flatten()
        .min();
        first.map_or(self.read_to, |r| r - 1).max(self.checkpoint)
    }
}

pub(crate) struct Group {
    name: Vec<u8>,
    store: Store,
    def: Definition,
    def_rev: u64,
    /// Taken by one consumer at a time, without blocking while the state lock is held.
    feed: Mutex<SubscriptionFeed>,
    state: Mutex<State>,
    cond: Condvar,
}

impl Group {
    pub(crate) fn open(
        store: Store,
        name: Vec<u8>,
        def: Definition,
        def_rev: u64,
        checkpoint: u64,
        parked: u64,
    ) -> Result<Group> {
        let opts = WatchOptions { start_revision: checkpoint + 1, ..Default::default() };
        let feed = Mutex::new(store.subscribe_pull(&def.selector, &opts)?);
        let state = State { checkpoint, read_to: checkpoint, parked, next_consumer: 1, ..Default::default() };
        Ok(Group { name, store, def, def_rev, feed, state: Mutex::new(state), cond: Condvar::new() })
    }

    pub(crate) fn end(&self, why: Error) {
        self.state.lock().ended.get_or_insert(why);
        self.cond.notify_all();
    }

    /// Runs `commit` under the group's lock and, if it succeeds, ends the group with
    /// `why(revision)`: no checkpoint of the group's own can land after it.
    pub(crate) fn end_with(
        &self,
        commit: impl FnOnce() -> Result<u64>,
        why: impl FnOnce(u64) -> Error,
    ) -> Result<u64> {
        let mut s = self.state.lock();
        let r = commit();
        if let Ok(rev) = r {
            s.ended.get_or_insert(why(rev));
        }
        drop(s);
        self.cond.notify_all();
        r
    }

    /// In flight, consumers, parked.
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        let s = self.state.lock();
        (s.in_flight.len() as u64, s.consumers.len() as u64, s.parked)
    }

    pub(crate) fn replay(&self, parked: Vec<Parked>) -> usize {
        let mut s = self.state.lock();
        let mut n = 0;
        for p in parked {
            let r = p.event.revision;
            if s.replaying.insert(r) {
                s.retry.insert(r, Held { event: p.event, deliveries: 0 });
                n += 1;
            }
        }
        drop(s);
        self.cond.notify_all();
        n
    }

    fn live(&self, s: &State, consumer: u64) -> Result<()> {
        match &s.ended {
            Some(e) => Err(e.clone()),
            None if !s.consumers.contains_key(&consumer) => Err(Error::Closed),
            None => Ok(()),
        }
    }

    /// Hands back every event whose delivery timed out by the store clock.
    fn expire(&self, s: &mut State) -> Result<()> {
        let now = self.store.now_ms();
        let due: Vec<u64> =
            s.in_flight.iter().filter(|(_, f)| f.deadline_ms <= now).map(|(r, _)| *r).collect();
        let mut park = Vec::new();
        for r in due {
            let f = s.in_flight.remove(&r).expect("listed");
            *s.consumers.get_mut(&f.consumer).expect("holders are connected") -= 1;
            self.fail(s, f.held, &mut park);
        }
        self.persist(s, park, Vec::new())
    }

    /// A failed delivery: retried, or parked once it had `max_retry` deliveries.
    fn fail(&self, s: &mut State, held: Held, park: &mut Vec<Held>) {
        if held.deliveries >= self.def.options.max_retry {
            park.push(held);
        } else {
            s.retry.insert(held.event.revision, held);
        }
    }

    /// Drains the feed without waiting, unless enough is read ahead or another consumer has it.
    fn fill(&self, s: &mut State) {
        if s.pending.len() >= BUFFER || s.ended.is_some() {
            return;
        }
        if let Some(feed) = self.feed.try_lock() {
            let got = feed.next(Duration::ZERO);
            self.take_feed(s, got);
        }
    }

    fn take_feed(&self, s: &mut State, got: Result<Vec<SubscriptionEvent>>) {
        let events = match got {
            Ok(events) => events,
            Err(Error::Timeout) => return,
            Err(e) => {
                s.ended.get_or_insert(e);
                return;
            }
        };
        for e in events {
            match e {
                SubscriptionEvent::Event(event) if event.revision > s.read_to => {
                    s.read_to = event.revision;
                    s.pending.push_back(Held { event, deliveries: 0 });
                }
                SubscriptionEvent::Event(_) => {}
                SubscriptionEvent::Progress(r) => s.read_to = s.read_to.max(r),
                SubscriptionEvent::Compacted(earliest) => {
                    s.ended.get_or_insert(Error::Compacted { requested: s.read_to + 1, earliest });
                }
                SubscriptionEvent::Closed => {
                    s.ended.get_or_insert(Error::Closed);
                }
            }
        }
    }

    /// Whether `consumer` may take `event` now: always, unless pinned, where the stream's
    /// owner takes it and only once no earlier event of the stream is with another consumer.
    fn eligible(&self, s: &State, consumer: u64, event: &StreamEvent) -> bool {
        if !self.def.options.pinned {
            return true;
        }
        let n = s.consumers.len() as u64;
        let owner = s.consumers.keys().nth((fnv1a(&event.stream) % n) as usize);
        owner == Some(&consumer)
            && !s
                .in_flight
                .range(..event.revision)
                .any(|(_, f)| f.consumer != consumer && f.held.event.stream == event.stream)
    }

    /// Moves up to the consumer's free room of events in flight: retries first, in
    /// revision order, then new events.
    fn take(&self, s: &mut State, consumer: u64) -> Vec<Delivery> {
        let room = self.def.options.max_in_flight.saturating_sub(s.consumers[&consumer]) as usize;
        let mut chosen: Vec<Held> = Vec::new();
        let retry: Vec<u64> = s
            .retry
            .iter()
            .filter(|(_, h)| self.eligible(s, consumer, &h.event))
            .map(|(r, _)| *r)
            .take(room)
            .collect();
        chosen.extend(retry.iter().map(|r| s.retry.remove(r).expect("listed")));
        let mut i = 0;
        while chosen.len() < room && i < s.pending.len() {
            if self.eligible(s, consumer, &s.pending[i].event) {
                chosen.push(s.pending.remove(i).expect("in bounds"));
            } else {
                i += 1;
            }
        }
        let deadline_ms = self.store.now_ms().saturating_add(self.def.options.message_timeout_ms);
        *s.consumers.get_mut(&consumer).expect("connected") += chosen.len() as u32;
        chosen
            .into_iter()
            .map(|mut held| {
                held.deliveries += 1;
                let d = Delivery { event: held.event.clone(), delivery_count: held.deliveries };
                s.in_flight.insert(held.event.revision, Flight { held, consumer, deadline_ms });
                d
            })
            .collect()
    }

    /// One commit: park `park`, drop the parked keys of `done` replays, and move the
    /// checkpoint to the state's candidate. Nothing to write, no commit.
    fn persist(&self, s: &mut State, park: Vec<Held>, done: Vec<u64>) -> Result<()> {
        for h in &park {
            if !s.replaying.remove(&h.event.revision) {
                s.parked += 1;
            }
        }
        s.parked -= done.len() as u64;
        let checkpoint = s.candidate();
        if park.is_empty() && done.is_empty() && checkpoint == s.checkpoint {
            return Ok(());
        }
        let dkey = definition_key(&self.name);
        transact(&self.store, || {
            let now = self.store.read_kv(|kv| kv.get(&dkey).map(|e| e.mod_revision))?;
            if now != Some(self.def_rev) {
                return Err(unknown(&self.name));
            }
            let mut txn = Txn::default();
            txn.require(&dkey, self.def_rev);
            if checkpoint > s.checkpoint {
                txn.put(checkpoint_key(&self.name), checkpoint.to_be_bytes());
            }
            for h in &park {
                let e = &h.event;
                txn.put_with(parked_key(&self.name, e.revision), |buf| {
                    codec::parked_value(buf, h.deliveries, e.version, &e.stream)
                });
            }
            for r in &done {
                txn.delete(parked_key(&self.name, *r));
            }
            Ok(Plan::Commit(txn, Box::new(|_| ())))
        })?;
        s.checkpoint = checkpoint;
        Ok(())
    }

    /// Takes the acked (or skipped) events out of flight; refused, changing nothing, when
    /// one of them is not in flight to `consumer`.
    fn finish(&self, s: &mut State, consumer: u64, revisions: &[u64]) -> Result<Vec<Held>> {
        if let Some(r) = revisions.iter().find(|r| s.in_flight.get(r).is_none_or(|f| f.consumer != consumer))
        {
            return Err(Error::InvalidArgument(format!(
                "the event at revision {r} is not in flight to this consumer (never delivered to it, already acked, or timed out)"
            )));
        }
        let held: Vec<Held> =
            revisions.iter().filter_map(|r| s.in_flight.remove(r)).map(|f| f.held).collect();
        *s.consumers.get_mut(&consumer).expect("connected") -= held.len() as u32;
        Ok(held)
    }
}

/// A stable hash of a stream name (the same in every process), for pinning.
fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3))
}

/// One consumer of a persistent subscription. `next` runs on one thread at a time; `ack` and
/// `nack` may run on others meanwhile (it is `Sync`). Dropping it (or `close`) hands the
/// events it holds to the other consumers.
pub struct Consumer {
    group: Arc<Group>,
    id: u64,
}

impl Consumer {
    pub(crate) fn join(group: Arc<Group>) -> Consumer {
        let mut s = group.state.lock();
        let id = s.next_consumer;
        s.next_consumer += 1;
        s.consumers.insert(id, 0);
        drop(s);
        Consumer { group, id }
    }

    /// Waits up to `timeout` for events: redeliveries first, then new events, at most the
    /// room `max_in_flight` leaves. `Timeout` when none came; `NotFound` once the
    /// subscription was deleted, `Closed` once the store closed (or this consumer did).
    pub fn next(&self, timeout: Duration) -> Result<Vec<Delivery>> {
        let g = &*self.group;
        let deadline = Instant::now().checked_add(timeout);
        let mut s = g.state.lock();
        loop {
            g.live(&s, self.id)?;
            g.expire(&mut s)?;
            g.fill(&mut s);
            let got = g.take(&mut s, self.id);
            if !got.is_empty() {
                return Ok(got);
            }
            g.live(&s, self.id)?;
            let now = Instant::now();
            let slice = match deadline {
                Some(d) if d <= now => return Err(Error::Timeout),
                Some(d) => (d - now).min(POLL),
                None => POLL,
            };
            let room = s.consumers[&self.id] < g.def.options.max_in_flight;
            match g.feed.try_lock().filter(|_| room && s.pending.len() < BUFFER) {
                Some(feed) => {
                    drop(s);
                    let got = feed.next(slice);
                    s = g.state.lock();
                    g.take_feed(&mut s, got);
                    drop(feed);
                    g.cond.notify_all();
                }
                None => {
                    g.cond.wait_for(&mut s, slice);
                }
            }
        }
    }

    /// Acks delivered events: one commit moves the checkpoint to the highest revision
    /// below which every event is done (if that moved). Acking several at once costs
    /// one commit. An event not in flight to this consumer is `InvalidArgument`, and
    /// nothing is acked.
    pub fn ack(&self, revisions: &[u64]) -> Result<()> {
        let g = &*self.group;
        let mut s = g.state.lock();
        g.live(&s, self.id)?;
        let held = g.finish(&mut s, self.id, revisions)?;
        let done = held.iter().map(|h| h.event.revision).filter(|r| s.replaying.remove(r)).collect();
        let r = g.persist(&mut s, Vec::new(), done);
        drop(s);
        g.cond.notify_all();
        r
    }

    /// Gives a delivered event back (see `Nack`).
    pub fn nack(&self, revision: u64, action: Nack) -> Result<()> {
        if action == Nack::Skip {
            return self.ack(&[revision]);
        }
        let g = &*self.group;
        let mut s = g.state.lock();
        g.live(&s, self.id)?;
        let held = g.finish(&mut s, self.id, &[revision])?.pop().expect("one");
        let mut park = Vec::new();
        match action {
            Nack::Park => park.push(held),
            _ => g.fail(&mut s, held, &mut park),
        }
        let r = g.persist(&mut s, park, Vec::new());
        drop(s);
        g.cond.notify_all();
        r
    }

    /// Leaves the subscription (as dropping does).
    pub fn close(self) {}
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let g = &*self.group;
        let mut s = g.state.lock();
        s.consumers.remove(&self.id);
        let mine: Vec<u64> =
            s.in_flight.iter().filter(|(_, f)| f.consumer == self.id).map(|(r, _)| *r).collect();
        for r in mine {
            let f = s.in_flight.remove(&r).expect("listed");
            s.retry.insert(r, f.held);
        }
        drop(s);
        g.cond.notify_all();
    }
}
