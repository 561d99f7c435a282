//! Trackers: every built-in feature notifies its lifecycle, users notify their own features,
//! replay from a past revision, many members, terminal notices, and bad input.

use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tidemark::{Action, Error, ExpectedVersion, NewEvent, Notification, Store, WatchOptions};

/// Hang guard only: nothing asserts on time.
const WAIT: Duration = Duration::from_secs(120);

fn from(start_revision: u64) -> WatchOptions {
    WatchOptions { start_revision, ..Default::default() }
}

fn track(s: &Store, feature: &str, start: u64) -> (u64, Receiver<Notification>) {
    let (tx, rx) = channel();
    let id = s.track(feature, &from(start), Box::new(move |n| tx.send(n.clone()).unwrap())).unwrap();
    (id, rx)
}

/// The next `n` notifications as (action, id, data).
fn next(rx: &Receiver<Notification>, n: usize) -> Vec<(Action, String, Value)> {
    (0..n)
        .map(|_| {
            let n = rx.recv_timeout(WAIT).expect("a notification");
            (n.action, String::from_utf8(n.id).unwrap(), serde_json::from_str(&n.data).unwrap())
        })
        .collect()
}

fn ev(data: &[u8]) -> NewEvent<'_> {
    NewEvent { id: None, event_type: b"t", data, metadata: b"" }
}

use Action::{Created, Deleted, Updated};

/// reckon_db's defect as a test: every feature's lifecycle reaches its trackers.
#[test]
fn every_feature_notifies_its_lifecycle() {
    let s = Store::memory(None).unwrap();
    let (_, streams) = track(&s, "streams", 0);
    let (_, snapshots) = track(&s, "snapshots", 0);
    let (_, contexts) = track(&s, "contexts", 0);
    let (_, keys) = track(&s, "keys/user/", 0);
    let (_, jobs) = track(&s, "jobs", 0);

    s.append(b"orders", &[ev(b"1"), ev(b"2")], ExpectedVersion::NoStream).unwrap();
    s.append(b"orders", &[ev(b"3")], ExpectedVersion::Exact(1)).unwrap();
    s.snapshot_record(b"agg", b"orders", 2, b"state").unwrap();
    s.snapshot_record(b"agg", b"orders", 2, b"again").unwrap();
    s.snapshot_delete(b"agg", b"orders", 2).unwrap();
    s.context_set(b"cart", &json!({"items": 1})).unwrap();
    s.context_update(b"cart", &json!({"items": 2})).unwrap();
    s.context_delete(b"cart").unwrap();
    s.context_set(b"cart", &json!({"items": 3})).unwrap(); // created again; its versions go on
    s.put(b"user/a", b"1").unwrap();
    s.put(b"other", b"not tracked").unwrap();
    s.put(b"user/a", b"2").unwrap();
    s.delete(b"user/a").unwrap();
    s.delete_stream(b"orders").unwrap();
    s.notify("jobs", Created, b"j1", r#"{"step":1}"#).unwrap();
    s.notify("jobs", Deleted, b"j1", "null").unwrap();

    assert_eq!(
        next(&streams, 3),
        [
            (Created, "orders".into(), json!({"version": 1})),
            (Updated, "orders".into(), json!({"version": 2})),
            (Deleted, "orders".into(), json!({})),
        ]
    );
    let snap = json!({"source": "agg", "stream": "orders", "version": 2});
    assert_eq!(
        next(&snapshots, 3),
        [
            (Created, "orders".into(), snap.clone()),
            (Updated, "orders".into(), snap),
            (Deleted, "orders".into(), json!({}))
        ]
    );
    assert_eq!(
        next(&contexts, 4),
        [
            (Created, "cart".into(), json!({"version": 1})),
            (Updated, "cart".into(), json!({"version": 2})),
            (Deleted, "cart".into(), json!({})),
            (Created, "cart".into(), json!({"version": 3})),
        ]
    );
    assert_eq!(
        next(&keys, 3),
        [
            (Created, "user/a".into(), json!({"version": 1})),
            (Updated, "user/a".into(), json!({"version": 2})),
            (Deleted, "user/a".into(), json!({})),
        ]
    );
    assert_eq!(
        next(&jobs, 2),
        [(Created, "j1".into(), json!({"step": 1})), (Deleted, "j1".into(), Value::Null)]
    );
    s.close();
    for rx in [&streams, &snapshots, &contexts, &keys, &jobs] {
        let last = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(
            (last.action, last.revision),
            (Action::Closed, s.current_revision()),
            "nothing else came first"
        );
        assert!(rx.recv_timeout(WAIT).is_err(), "the handler was dropped after the terminal notice");
    }
}

#[test]
fn a_tracker_from_revision_1_replays_the_lifecycle_history() {
    let s = Store::memory(None).unwrap();
    s.append(b"a", &[ev(b"1")], ExpectedVersion::Any).unwrap();
    s.notify("jobs", Created, b"x", "1").unwrap();
    s.append(b"a", &[ev(b"2")], ExpectedVersion::Any).unwrap();
    s.delete_stream(b"a").unwrap();
    s.append(b"a", &[ev(b"3")], ExpectedVersion::Any).unwrap();
    s.notify("jobs", Updated, b"x", "2").unwrap();
    let (_, streams) = track(&s, "streams", 1);
    let (_, jobs) = track(&s, "jobs", 1);
    let got: Vec<_> = next(&streams, 4).into_iter().map(|(a, _, d)| (a, d)).collect();
    assert_eq!(
        got,
        [
            (Created, json!({"version": 0})),
            (Updated, json!({"version": 1})),
            (Deleted, json!({})),
            (Created, json!({"version": 0})),
        ]
    );
    assert_eq!(next(&jobs, 2), [(Created, "x".into(), json!(1)), (Updated, "x".into(), json!(2))]);
    // Live after the replay, in the same sequence.
    s.notify("jobs", Deleted, b"x", "3").unwrap();
    assert_eq!(next(&jobs, 1), [(Deleted, "x".into(), json!(3))]);
    // Starting in the middle replays from there.
    let (_, late) = track(&s, "jobs", s.current_revision());
    assert_eq!(next(&late, 1)[0].0, Deleted);
}

#[test]
fn a_thousand_members_each_get_every_notification_once_in_order() {
    const MEMBERS: usize = 1000;
    const CHANGES: u64 = 10_000;
    let s = Store::memory(None).unwrap();
    let (done_tx, done) = channel();
    for _ in 0..MEMBERS {
        let done_tx = done_tx.clone();
        let mut seen = 0u64;
        let handler = move |n: &Notification| {
            assert_eq!(n.id, seen.to_string().into_bytes(), "in order, none twice, none missing");
            seen += 1;
            if seen == CHANGES {
                done_tx.send(()).unwrap();
            }
        };
        s.track("jobs", &WatchOptions::default(), Box::new(handler)).unwrap();
    }
    assert_eq!(s.tracker_members("jobs").unwrap().len(), MEMBERS);
    for i in 0..CHANGES {
        s.notify("jobs", Updated, i.to_string().as_bytes(), "{}").unwrap();
    }
    for _ in 0..MEMBERS {
        done.recv_timeout(WAIT).expect("every member reaches the last notification");
    }
    // A member that panicked would have stopped short; all of them are still members.
    assert_eq!(s.tracker_members("jobs").unwrap().len(), MEMBERS);
}

#[test]
fn a_tracker_that_falls_behind_compaction_ends_with_compacted() {
    let s = Store::memory(None).unwrap();
    let (gate_tx, gate) = channel::<()>();
    let (tx, rx) = channel();
    let gate = Mutex::new(gate);
    let opts = WatchOptions { max_queue: 2, ..Default::default() };
    let id = s
        .track(
            "jobs",
            &opts,
            Box::new(move |n| {
                if n.action == Created {
                    gate.lock().unwrap().recv().unwrap(); // a slow consumer
                }
                tx.send(n.clone()).unwrap();
            }),
        )
        .unwrap();
    s.notify("jobs", Created, b"first", "{}").unwrap();
    for i in 0..10 {
        s.notify("jobs", Updated, format!("{i}").as_bytes(), "{}").unwrap();
    }
    s.compact(s.current_revision()).unwrap();
    gate_tx.send(()).unwrap();
    let got: Vec<_> = std::iter::from_fn(|| rx.recv_timeout(WAIT).ok()).collect();
    let last = got.last().unwrap();
    assert_eq!((last.action, last.revision), (Action::Compacted, s.current_revision()));
    assert!(got[..got.len() - 1].iter().all(|n| !n.action.is_terminal()));
    assert_eq!(s.tracker_members("jobs").unwrap(), Vec::<u64>::new(), "an ended tracker is no member");
    assert!(matches!(s.untrack(id), Err(Error::NotFound(_))));
    // Starting below the earliest retained revision is refused, as for a watch.
    let refused = s.track("jobs", &from(1), Box::new(|_| {}));
    assert!(matches!(refused, Err(Error::Compacted { .. })));
    // The latest notification is current state and survives compaction.
    let (_, now) = track(&s, "jobs", s.current_revision());
    assert_eq!(next(&now, 1), [(Updated, "9".into(), json!({}))]);
}

#[test]
fn members_track_and_untrack() {
    let s = Store::memory(None).unwrap();
    let dropped = Arc::new(Mutex::new(0));
    let guard = |d: &Arc<Mutex<i32>>| {
        struct OnDrop(Arc<Mutex<i32>>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                *self.0.lock().unwrap() += 1;
            }
        }
        let g = OnDrop(d.clone());
        Box::new(move |_: &Notification| {
            let _ = &g;
        })
    };
    let a = s.track("streams", &from(0), guard(&dropped)).unwrap();
    let b = s.track("streams", &from(0), guard(&dropped)).unwrap();
    let c = s.track("jobs", &from(0), guard(&dropped)).unwrap();
    assert_eq!(s.tracker_members("streams").unwrap(), [a, b]);
    assert_eq!(s.tracker_members("jobs").unwrap(), [c]);
    assert_eq!(s.tracker_members("contexts").unwrap(), Vec::<u64>::new());
    s.untrack(a).unwrap();
    assert_eq!(*dropped.lock().unwrap(), 1, "untrack drops the handler before it returns");
    assert_eq!(s.tracker_members("streams").unwrap(), [b]);
    assert!(matches!(s.untrack(a), Err(Error::NotFound(_))));
    // A plain watch is no tracker.
    let w = s.watch(tidemark::Selector::All, &from(0), Box::new(|_| {})).unwrap();
    assert!(matches!(s.untrack(w), Err(Error::NotFound(_))));
    s.close();
    assert_eq!(*dropped.lock().unwrap(), 3);
    assert_eq!(s.tracker_members("streams").unwrap(), Vec::<u64>::new());
}

#[test]
fn bad_input_is_refused() {
    let s = Store::memory(None).unwrap();
    let invalid = |r: Result<u64, Error>| assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    invalid(s.track("", &from(0), Box::new(|_| {})));
    invalid(s.notify("", Created, b"x", "{}"));
    assert!(matches!(s.tracker_members(""), Err(Error::InvalidArgument(_))));
    assert!(matches!(Action::parse("renamed"), Err(Error::InvalidArgument(_))));
    assert!(matches!(Action::from_u32(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(Action::from_u32(4), Err(Error::InvalidArgument(_))));
    invalid(s.notify("jobs", Action::Compacted, b"x", "{}"));
    invalid(s.notify("jobs", Created, b"x", "{not json"));
    invalid(s.notify("jobs", Created, b"", "{}"));
    for builtin in ["streams", "snapshots", "contexts", "keys", "keys/a"] {
        invalid(s.notify(builtin, Created, b"x", "{}"));
    }
    invalid(s.track("keys/\0", &from(0), Box::new(|_| {})));
    assert!(matches!(s.track(&"f".repeat(2000), &from(0), Box::new(|_| {})), Err(Error::TooLarge(_))));
    assert!(matches!(s.track("jobs", &from(99), Box::new(|_| {})), Err(Error::FutureRevision { .. })));
    assert_eq!(s.current_revision(), 0, "nothing was written");
}

/// Persistent subscriptions notify their lifecycle too: created (checkpoint 0 from the
/// beginning), the checkpoint as acks move it, deleted.
#[test]
fn persistent_subscriptions_notify_create_checkpoint_and_delete() {
    use tidemark::{Start, StreamSelector, Streams, SubscriptionOptions};
    let s = Store::memory(None).unwrap();
    let (_, subs) = track(&s, "subscriptions", 0);
    let all = StreamSelector { streams: Streams::All, event_type: None };
    s.subscription_create(b"billing", &all, Start::Beginning, &SubscriptionOptions::default()).unwrap();
    s.append(b"orders", &[ev(b"1"), ev(b"2")], ExpectedVersion::NoStream).unwrap();
    let consumer = s.subscription_connect(b"billing").unwrap();
    let mut acked = Vec::new();
    while acked.len() < 2 {
        for d in consumer.next(WAIT).unwrap() {
            acked.push(d.event.revision);
        }
    }
    consumer.ack(&acked).unwrap();
    let last = *acked.iter().max().unwrap();
    assert_eq!(next(&subs, 1), [(Created, "billing".into(), json!({"checkpoint": 0}))]);
    // Checkpoint writes may be coalesced: they only move forward and end at the last ack.
    let mut checkpoint = 0;
    while checkpoint < last {
        let (action, id, data) = next(&subs, 1).remove(0);
        assert_eq!((action, id.as_str()), (Updated, "billing"));
        let moved = data["checkpoint"].as_u64().unwrap();
        assert!(moved > checkpoint, "the checkpoint never goes back");
        checkpoint = moved;
    }
    assert_eq!(checkpoint, last);
    drop(consumer);
    s.subscription_delete(b"billing").unwrap();
    assert_eq!(next(&subs, 1), [(Deleted, "billing".into(), json!({}))]);
}
