//! Persistent subscriptions: ExESDB's defects as tests (a past start replays history; acks
//! survive a reopen and delivery resumes at the first unacked event), competing consumers,
//! retry and parking, timeouts by the injected store clock, flow control, pinning, bad
//! input, and a property test of the checkpoint. (kill -9 is `tests/ns_persistent_crash.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use tidemark::{
    Delivery, Error, ExpectedVersion, Nack, NewEvent, Start, Store, StreamSelector, SubscriptionOptions,
};

const WAIT: Duration = Duration::from_secs(10);

fn append(s: &Store, stream: &str, n: usize) -> Vec<u64> {
    let data: Vec<String> = (0..n).map(|i| format!("{stream}-{i}")).collect();
    let evs: Vec<NewEvent> = data
        .iter()
        .map(|d| NewEvent { id: None, event_type: b"t", data: d.as_bytes(), metadata: b"" })
        .collect();
    let a = s.append(stream.as_bytes(), &evs, ExpectedVersion::Any).unwrap();
    (a.first_revision..a.first_revision + n as u64).collect()
}

fn opts() -> SubscriptionOptions {
    SubscriptionOptions { max_in_flight: 1000, ..Default::default() }
}

/// Takes exactly `n` deliveries (in as many `next` calls as it takes).
fn take(c: &tidemark::Consumer, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(c.next(WAIT).unwrap());
    }
    assert_eq!(out.len(), n, "no more than asked for");
    out
}

fn revs(d: &[Delivery]) -> Vec<u64> {
    d.iter().map(|d| d.event.revision).collect()
}

fn checkpoint(s: &Store, name: &str) -> u64 {
    s.subscription_list().unwrap().into_iter().find(|i| i.name == name.as_bytes()).unwrap().checkpoint
}

#[test]
fn a_past_start_replays_history_and_acks_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let all = {
        let s = Store::open(Some(path), None).unwrap();
        let all = append(&s, "orders", 10);
        // Created after the events, from the beginning: ExESDB would deliver nothing.
        let o = SubscriptionOptions { max_in_flight: 10, ..Default::default() };
        s.subscription_create(b"sub", &StreamSelector::all(), Start::Beginning, &o).unwrap();
        let c = s.subscription_connect(b"sub").unwrap();
        let got = take(&c, 10);
        assert_eq!(revs(&got), all);
        assert!(got.iter().all(|d| d.delivery_count == 1));
        assert_eq!(got[5].event.data(), b"orders-5");
        c.ack(&all[..5]).unwrap();
        assert_eq!(checkpoint(&s, "sub"), all[4]);
        all
    };
    let s = Store::open(Some(path), None).unwrap();
    let c = s.subscription_connect(b"sub").unwrap();
    let got = take(&c, 5);
    assert_eq!(revs(&got), all[5..], "resumes at event 6; 6 to 10 arrive again");
    assert!(matches!(c.next(Duration::ZERO), Err(Error::Timeout)));
}

#[test]
fn starts_at_the_end_or_at_a_revision() {
    let s = Store::memory(None).unwrap();
    let first = append(&s, "a", 3);
    s.subscription_create(b"end", &StreamSelector::all(), Start::End, &opts()).unwrap();
    s.subscription_create(b"rev", &StreamSelector::all(), Start::Revision(first[1]), &opts()).unwrap();
    let later = append(&s, "a", 1);
    let end = s.subscription_connect(b"end").unwrap();
    assert_eq!(revs(&take(&end, 1)), later);
    let rev = s.subscription_connect(b"rev").unwrap();
    assert_eq!(revs(&take(&rev, 3)), [first[1], first[2], later[0]]);
}

#[test]
fn selectors_narrow_what_is_delivered() {
    let s = Store::memory(None).unwrap();
    append(&s, "user-1", 2);
    let wanted = append(&s, "order-1", 2);
    append(&s, "user-2", 1);
    let sel = StreamSelector::prefix("order-");
    s.subscription_create(b"orders", &sel, Start::Beginning, &opts()).unwrap();
    let c = s.subscription_connect(b"orders").unwrap();
    assert_eq!(revs(&take(&c, 2)), wanted);
    assert!(matches!(c.next(Duration::ZERO), Err(Error::Timeout)));
    let info = &s.subscription_list().unwrap()[0];
    assert_eq!((info.lag, info.in_flight, info.consumers), (2, 2, 1));
    assert_eq!(info.definition.selector, sel);
}

#[test]
fn competing_consumers_ack_every_event_once_when_one_dies() {
    const N: usize = 30_000;
    let s = Arc::new(Store::memory(None).unwrap());
    let o = SubscriptionOptions { max_in_flight: 64, ..Default::default() };
    s.subscription_create(b"work", &StreamSelector::all(), Start::Beginning, &o).unwrap();
    let acked = Arc::new(Mutex::new(BTreeMap::<u64, u32>::new()));
    let total = Arc::new(AtomicU64::new(0));
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for i in 0..N / 100 {
                append(&s, &format!("s{}", i % 7), 100);
            }
        })
    };
    let consumers: Vec<_> = (0..3)
        .map(|k| {
            let (s, acked, total) = (s.clone(), acked.clone(), total.clone());
            std::thread::spawn(move || {
                let c = s.subscription_connect(b"work").unwrap();
                let mut mine = 0;
                while total.load(Ordering::SeqCst) < N as u64 {
                    let Ok(got) = c.next(Duration::from_millis(100)) else { continue };
                    if k == 0 && mine > 2000 {
                        // Killed mid-way: it holds events it never acks; they go to the others.
                        return;
                    }
                    let r = revs(&got);
                    c.ack(&r).unwrap();
                    let mut a = acked.lock().unwrap();
                    for x in r {
                        *a.entry(x).or_default() += 1;
                    }
                    total.store(a.len() as u64, Ordering::SeqCst);
                    mine += got.len();
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for c in consumers {
        c.join().unwrap();
    }
    let a = acked.lock().unwrap();
    assert_eq!(a.len(), N, "none lost");
    assert!(a.values().all(|&n| n == 1), "each acked exactly once");
    assert_eq!(checkpoint(&s, "work"), *a.keys().last().unwrap(), "the checkpoint is the last event");
}

#[test]
fn an_event_nacked_every_time_is_parked_and_can_be_replayed() {
    let s = Store::memory(None).unwrap();
    let all = append(&s, "a", 5);
    let o = SubscriptionOptions { max_retry: 3, max_in_flight: 10, ..Default::default() };
    s.subscription_create(b"p", &StreamSelector::stream("a"), Start::Beginning, &o).unwrap();
    let c = s.subscription_connect(b"p").unwrap();
    let bad = all[2];
    let mut deliveries_of_bad = Vec::new();
    let mut acked = BTreeSet::new();
    let mut batch = take(&c, 5);
    while !batch.is_empty() {
        for d in batch {
            if d.event.revision == bad {
                deliveries_of_bad.push(d.delivery_count);
                c.nack(bad, Nack::Retry).unwrap();
            } else {
                c.ack(&[d.event.revision]).unwrap();
                acked.insert(d.event.revision);
            }
        }
        // Redeliveries are due at once; Timeout means there is nothing left.
        batch = c.next(Duration::ZERO).unwrap_or_default();
    }
    assert_eq!(acked.len(), 4, "the rest flowed on");
    assert_eq!(deliveries_of_bad, [1, 2, 3], "parked after max_retry deliveries");
    assert!(matches!(c.next(Duration::ZERO), Err(Error::Timeout)));
    assert_eq!(checkpoint(&s, "p"), all[4], "the checkpoint passes a parked event");
    let parked = s.subscription_parked(b"p", 0).unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!((parked[0].event.revision, parked[0].deliveries), (bad, 3));
    assert_eq!(s.subscription_list().unwrap()[0].parked, 1);
    // Replay: delivered again (counting from 1); it stays parked until acked.
    assert_eq!(s.subscription_replay_parked(b"p").unwrap(), 1);
    let again = take(&c, 1);
    assert_eq!((again[0].event.revision, again[0].delivery_count), (bad, 1));
    assert_eq!(s.subscription_parked(b"p", 0).unwrap().len(), 1);
    c.ack(&[bad]).unwrap();
    assert!(s.subscription_parked(b"p", 0).unwrap().is_empty());
    assert_eq!(s.subscription_list().unwrap()[0].parked, 0);
    // Park and skip directly.
    let more = append(&s, "a", 2);
    let got = take(&c, 2);
    c.nack(got[0].event.revision, Nack::Park).unwrap();
    c.nack(got[1].event.revision, Nack::Skip).unwrap();
    assert_eq!(checkpoint(&s, "p"), more[1]);
    let parked: Vec<u64> = s.subscription_parked(b"p", 0).unwrap().iter().map(|p| p.event.revision).collect();
    assert_eq!(parked, [more[0]]);
}

#[test]
fn unacked_events_are_redelivered_after_the_timeout_by_the_store_clock() {
    let s = Store::memory(None).unwrap();
    let now = Arc::new(AtomicU64::new(1_000));
    let clock = now.clone();
    s.set_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
    let all = append(&s, "a", 2);
    let o =
        SubscriptionOptions { message_timeout_ms: 60_000, max_retry: 2, max_in_flight: 10, pinned: false };
    s.subscription_create(b"t", &StreamSelector::all(), Start::Beginning, &o).unwrap();
    let c1 = s.subscription_connect(b"t").unwrap();
    let c2 = s.subscription_connect(b"t").unwrap();
    assert_eq!(revs(&take(&c1, 2)), all);
    c1.ack(&[all[0]]).unwrap();
    now.fetch_add(59_999, Ordering::SeqCst);
    assert!(matches!(c2.next(Duration::ZERO), Err(Error::Timeout)), "not yet due");
    now.fetch_add(1, Ordering::SeqCst);
    let again = take(&c2, 1);
    assert_eq!((again[0].event.revision, again[0].delivery_count), (all[1], 2));
    assert!(c1.ack(&[all[1]]).is_err(), "a timed-out delivery is no longer the first consumer's");
    now.fetch_add(60_000, Ordering::SeqCst);
    assert!(matches!(c2.next(Duration::ZERO), Err(Error::Timeout)), "parked after the second timeout");
    assert_eq!(s.subscription_parked(b"t", 0).unwrap()[0].deliveries, 2);
    assert_eq!(checkpoint(&s, "t"), all[1]);
}

#[test]
fn max_in_flight_bounds_each_consumer_not_the_others_or_writers() {
    let s = Store::memory(None).unwrap();
    let o = SubscriptionOptions { max_in_flight: 3, ..Default::default() };
    s.subscription_create(b"f", &StreamSelector::all(), Start::Beginning, &o).unwrap();
    let slow = s.subscription_connect(b"f").unwrap();
    let fast = s.subscription_connect(b"f").unwrap();
    append(&s, "a", 3000);
    assert_eq!(take(&slow, 3).len(), 3);
    assert!(matches!(slow.next(Duration::ZERO), Err(Error::Timeout)), "full: nothing more until it acks");
    let mut n = 0;
    while n < 2997 {
        let got = fast.next(WAIT).unwrap();
        assert!(got.len() <= 3);
        fast.ack(&revs(&got)).unwrap();
        n += got.len();
    }
    append(&s, "a", 10); // writers were never held up
    let info = &s.subscription_list().unwrap()[0];
    assert_eq!((info.in_flight, info.consumers), (3, 2));
}

#[test]
fn pinned_keeps_each_stream_with_one_consumer_in_order() {
    let s = Store::memory(None).unwrap();
    let o = SubscriptionOptions { max_in_flight: 50, pinned: true, ..Default::default() };
    s.subscription_create(b"pin", &StreamSelector::all(), Start::Beginning, &o).unwrap();
    let cs = [s.subscription_connect(b"pin").unwrap(), s.subscription_connect(b"pin").unwrap()];
    for i in 0..40 {
        append(&s, &format!("s{}", i % 8), 5);
    }
    let mut owner: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let mut last: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut n = 0;
    while n < 200 {
        for (k, c) in cs.iter().enumerate() {
            let Ok(got) = c.next(Duration::from_millis(10)) else { continue };
            for d in &got {
                let stream = d.event.stream.to_vec();
                assert_eq!(*owner.entry(stream.clone()).or_insert(k), k, "one consumer per stream");
                let prev = last.insert(stream, d.event.version);
                assert!(prev.is_none_or(|p| p + 1 == d.event.version), "in stream order");
            }
            c.ack(&revs(&got)).unwrap();
            n += got.len();
        }
    }
    assert!(owner.values().any(|&k| k == 0) && owner.values().any(|&k| k == 1), "both got streams");
}

#[test]
fn bad_input_is_refused() {
    let s = Store::memory(None).unwrap();
    let all = StreamSelector::all();
    assert!(matches!(s.subscription_connect(b"nope"), Err(Error::NotFound(_))));
    assert!(matches!(s.subscription_delete(b"nope"), Err(Error::NotFound(_))));
    assert!(matches!(s.subscription_parked(b"nope", 0), Err(Error::NotFound(_))));
    assert!(matches!(s.subscription_replay_parked(b"nope"), Err(Error::NotFound(_))));
    assert!(matches!(s.subscription_create(b"", &all, Start::End, &opts()), Err(Error::InvalidArgument(_))));
    let long = vec![b'x'; tidemark::MAX_NAME + 1];
    assert!(matches!(s.subscription_create(&long, &all, Start::End, &opts()), Err(Error::TooLarge(_))));
    for bad in [
        SubscriptionOptions { max_in_flight: 0, ..opts() },
        SubscriptionOptions { max_retry: 0, ..opts() },
        SubscriptionOptions { message_timeout_ms: 0, ..opts() },
    ] {
        assert!(matches!(
            s.subscription_create(b"x", &all, Start::End, &bad),
            Err(Error::InvalidArgument(_))
        ));
    }
    let bad_sel = StreamSelector::stream("");
    assert!(s.subscription_create(b"x", &bad_sel, Start::End, &opts()).is_err());
    assert!(matches!(
        s.subscription_create(b"x", &all, Start::Revision(0), &opts()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        s.subscription_create(b"x", &all, Start::Revision(5), &opts()),
        Err(Error::FutureRevision { requested: 5, current: 0 })
    ));
    s.subscription_create(b"x", &all, Start::Beginning, &opts()).unwrap();
    assert!(matches!(s.subscription_create(b"x", &all, Start::End, &opts()), Err(Error::Conflict { .. })));
    let r = append(&s, "a", 2);
    let c1 = s.subscription_connect(b"x").unwrap();
    let c2 = s.subscription_connect(b"x").unwrap();
    take(&c1, 2);
    assert!(matches!(c2.ack(&[r[0]]), Err(Error::InvalidArgument(_))), "not delivered to c2");
    assert!(matches!(c1.ack(&[r[0], 999]), Err(Error::InvalidArgument(_))), "never delivered");
    assert!(matches!(c2.nack(r[0], Nack::Retry), Err(Error::InvalidArgument(_))));
    c1.ack(&[r[0]]).unwrap();
    assert!(matches!(c1.ack(&[r[0]]), Err(Error::InvalidArgument(_))), "already acked");
    // Deleted: its consumers learn it, its keys are gone, the name is free again.
    s.subscription_delete(b"x").unwrap();
    assert!(matches!(c1.next(Duration::ZERO), Err(Error::NotFound(_))));
    assert!(matches!(c1.ack(&[r[1]]), Err(Error::NotFound(_))));
    assert!(s.subscription_list().unwrap().is_empty());
    s.subscription_create(b"x", &all, Start::Beginning, &opts()).unwrap();
    let c3 = s.subscription_connect(b"x").unwrap();
    assert_eq!(revs(&take(&c3, 2)), r);
    s.close();
    assert!(matches!(c3.next(Duration::ZERO), Err(Error::Closed)));
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Step {
    Append(u8),
    Ack(usize),
    Nack(usize, u8),
    Next,
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u8..4).prop_map(Step::Append),
        (0usize..8).prop_map(Step::Ack),
        (0usize..8, 0u8..3).prop_map(|(i, a)| Step::Nack(i, a)),
        Just(Step::Next),
        Just(Step::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Random appends, acks, nacks and restarts: the checkpoint never passes an event that
    /// was not acked, skipped or parked, and never moves backwards.
    #[test]
    fn the_checkpoint_never_passes_an_unacked_event(steps in proptest::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_string();
        let mut s = Store::open(Some(&path), None).unwrap();
        let o = SubscriptionOptions { max_in_flight: 4, max_retry: 2, ..Default::default() };
        s.subscription_create(b"p", &StreamSelector::all(), Start::Beginning, &o).unwrap();
        let mut c = s.subscription_connect(b"p").unwrap();
        let mut events = BTreeSet::new();
        let mut done = BTreeSet::new();
        let mut held: Vec<u64> = Vec::new();
        let mut last = 0;
        for st in steps {
            match st {
                Step::Append(n) => events.extend(append(&s, "s", n as usize)),
                Step::Next => {
                    if let Ok(got) = c.next(Duration::ZERO) {
                        held.extend(revs(&got));
                    }
                }
                Step::Ack(i) if !held.is_empty() => {
                    let r = held.remove(i % held.len());
                    c.ack(&[r]).unwrap();
                    done.insert(r);
                }
                Step::Nack(i, a) if !held.is_empty() => {
                    let r = held.remove(i % held.len());
                    let action = [Nack::Retry, Nack::Park, Nack::Skip][a as usize];
                    c.nack(r, action).unwrap();
                    if action != Nack::Retry {
                        done.insert(r);
                    }
                }
                Step::Restart => {
                    drop(c);
                    drop(s);
                    s = Store::open(Some(&path), None).unwrap();
                    c = s.subscription_connect(b"p").unwrap();
                    held.clear();
                }
                _ => {}
            }
            let parked: BTreeSet<u64> = s.subscription_parked(b"p", 0).unwrap().iter().map(|p| p.event.revision).collect();
            let cp = checkpoint(&s, "p");
            prop_assert!(cp >= last, "backwards: {} -> {}", last, cp);
            last = cp;
            for e in events.range(..=cp) {
                prop_assert!(done.contains(e) || parked.contains(e), "checkpoint {} passed unacked {}", cp, e);
            }
        }
    }
}

#[test]
fn a_reset_redelivers_backwards_skips_forwards_and_ends_open_consumers() {
    let s = Store::open(None, None).unwrap();
    let all = append(&s, "orders", 6);
    s.subscription_create(b"r", &StreamSelector::all(), Start::Beginning, &opts()).unwrap();
    let c = s.subscription_connect(b"r").unwrap();
    c.ack(&revs(&take(&c, 6))).unwrap();
    assert_eq!(checkpoint(&s, "r"), all[5]);
    // Bad input changes nothing.
    let current = s.current_revision();
    for bad in [0, current + 2] {
        assert!(matches!(s.subscription_reset(b"r", bad), Err(Error::InvalidArgument(_))));
    }
    assert!(matches!(s.subscription_reset(b"nope", 1), Err(Error::NotFound(_))));
    assert_eq!(s.current_revision(), current);
    // Backwards: one commit; the open consumer is told; the next one gets the events again.
    assert_eq!(s.subscription_reset(b"r", all[1]).unwrap(), current + 1);
    assert_eq!(checkpoint(&s, "r"), all[0]);
    assert!(matches!(c.next(Duration::ZERO), Err(Error::Conflict { .. })));
    drop(c);
    let c = s.subscription_connect(b"r").unwrap();
    let again = take(&c, 5);
    assert_eq!(revs(&again), all[1..]);
    c.ack(&revs(&again)).unwrap();
    drop(c);
    // Forwards, past the last event: nothing until a new one.
    s.subscription_reset(b"r", s.current_revision() + 1).unwrap();
    let c = s.subscription_connect(b"r").unwrap();
    assert!(matches!(c.next(Duration::ZERO), Err(Error::Timeout)));
    let new = append(&s, "orders", 1);
    assert_eq!(revs(&take(&c, 1)), new);
}
