//! Watch semantics: replay then live, bounded queues, compaction, progress, credit,
//! unwatch and drop rules, reentrant callbacks, closing with live watches.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tidemark::{Error, Event, EventKind, Op, Selector, Store, WatchOptions};

#[test]
fn pull_watch_replays_from_a_revision_then_goes_live() {
    let s = store();
    for i in 0..5u32 {
        s.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    let w = s.watch_pull(Selector::All, &opts(3, 0)).unwrap();
    for i in 5..8u32 {
        s.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    assert_eq!(revisions(&pull_until(&w, 6)), (3..=8).collect::<Vec<_>>());
    assert!(matches!(w.next(Duration::from_millis(10)), Err(Error::Timeout)));
}

#[test]
fn start_zero_sees_only_the_future_and_bad_starts_are_refused() {
    let s = store();
    s.put(b"a", b"1").unwrap();
    let w = s.watch_pull(Selector::All, &opts(0, 0)).unwrap();
    assert!(matches!(w.next(Duration::ZERO), Err(Error::Timeout)));
    s.put(b"b", b"1").unwrap();
    assert_eq!(revisions(&pull_until(&w, 1)), vec![2]);
    assert!(matches!(
        s.watch_pull(Selector::All, &opts(4, 0)),
        Err(Error::FutureRevision { current: 2, .. })
    ));
    assert!(s.watch_pull(Selector::All, &opts(3, 0)).is_ok(), "current + 1 is the future, allowed");
    s.compact(2).unwrap();
    assert!(matches!(s.watch_pull(Selector::All, &opts(1, 0)), Err(Error::Compacted { earliest: 2, .. })));
    assert!(matches!(
        s.watch(Selector::All, &opts(1, 0), Sink::default().callback()),
        Err(Error::Compacted { earliest: 2, .. })
    ));
    assert!(matches!(
        s.watch_pull(Selector::Range(b"b".to_vec(), b"a".to_vec()), &opts(0, 0)),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn selectors_filter_what_a_watch_sees() {
    let s = store();
    let by_key = s.watch_pull(Selector::Key(b"a/1".to_vec()), &opts(0, 0)).unwrap();
    let by_prefix = s.watch_pull(prefix("a/"), &opts(0, 0)).unwrap();
    let by_range = s.watch_pull(Selector::Range(b"a/2".to_vec(), b"b".to_vec()), &opts(0, 0)).unwrap();
    let unbounded = s.watch_pull(Selector::Range(b"b".to_vec(), vec![]), &opts(0, 0)).unwrap();
    let everything = s.watch_pull(Selector::All, &opts(0, 0)).unwrap();
    for k in ["a/1", "a/2", "a/3", "b", "c", "a/1"] {
        s.put(k.as_bytes(), b"v").unwrap();
    }
    assert_eq!(revisions(&pull_until(&by_key, 2)), vec![1, 6]);
    assert_eq!(revisions(&pull_until(&by_prefix, 4)), vec![1, 2, 3, 6]);
    assert_eq!(revisions(&pull_until(&by_range, 2)), vec![2, 3]);
    assert_eq!(revisions(&pull_until(&unbounded, 2)), vec![4, 5]);
    assert_eq!(revisions(&pull_until(&everything, 6)), (1..=6).collect::<Vec<_>>());
}

#[test]
fn a_batch_arrives_in_one_delivery() {
    let s = store();
    let w = s.watch_pull(prefix("t/"), &opts(0, 0)).unwrap();
    s.commit(&[Op::Put(b"t/1", b"a"), Op::Put(b"x", b"b"), Op::Put(b"t/2", b"c")]).unwrap();
    let batch = w.next(Duration::from_secs(10)).unwrap();
    assert_eq!(revisions(&batch), vec![1, 3]);
    assert!(batch.last().unwrap().commit_end);
}

#[test]
fn a_slow_pull_consumer_overflows_its_queue_without_losing_anything() {
    let s = store();
    let w = s.watch_pull(Selector::All, &opts(0, 4)).unwrap();
    for i in 0..100u32 {
        s.put(format!("k{}", i % 7).as_bytes(), i.to_string().as_bytes()).unwrap();
    }
    s.commit(&[
        Op::Put(b"b1", b"x"),
        Op::Put(b"b2", b"x"),
        Op::Put(b"b3", b"x"),
        Op::Put(b"b4", b"x"),
        Op::Put(b"b5", b"x"),
    ])
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 105 {
        let batch = w.next(Duration::from_secs(10)).unwrap();
        assert!(batch.len() <= 5, "a delivery holds at most max_queue events or one commit: {}", batch.len());
        got.extend(batch);
    }
    assert_eq!(revisions(&got), (1..=105).collect::<Vec<_>>());
    let e = &got[50];
    assert_eq!((&e.value[..], e.version), (b"50".as_slice(), 50 / 7 + 1));
}

#[test]
fn compaction_ends_a_watch_only_when_it_drops_something_the_watch_needed() {
    let s = store();
    let lagging = s.watch_pull(prefix("a"), &opts(0, 2)).unwrap();
    let quiet = s.watch_pull(prefix("q"), &opts(0, 2)).unwrap();
    s.put(b"q1", b"x").unwrap(); // 1: quiet sees it and keeps up
    assert_eq!(revisions(&pull_until(&quiet, 1)), vec![1]);
    for i in 0..10u32 {
        s.put(format!("a{i}").as_bytes(), b"v").unwrap(); // 2..=11, lagging overflows
    }
    s.compact(8).unwrap();
    let got = pull_until(&lagging, 100);
    assert_eq!(revisions(&got), vec![2, 3], "what was queued is still delivered");
    let last = got.last().unwrap();
    assert_eq!((last.kind, last.revision), (EventKind::Compacted, 8));
    assert!(matches!(lagging.next(Duration::ZERO), Err(Error::Closed)));
    assert!(matches!(quiet.next(Duration::ZERO), Err(Error::Timeout)), "nothing it matched was dropped");
    assert_eq!(s.watcher_count(), 1);
}

#[test]
fn compaction_spares_a_lagging_watch_whose_missing_range_has_no_match() {
    let s = store();
    let w = s.watch_pull(prefix("a"), &opts(0, 1)).unwrap();
    s.put(b"a1", b"v").unwrap();
    s.put(b"a2", b"v").unwrap(); // overflow: next_rev = 2
    s.put(b"z", b"v").unwrap();
    // Dropping revision 1 only (already queued) loses nothing the watch needs.
    s.compact(2).unwrap();
    assert_eq!(revisions(&pull_until(&w, 2)), vec![1, 2]);
}

#[test]
fn progress_events_report_the_revision_an_idle_watch_has_seen() {
    let s = store();
    s.put(b"other", b"1").unwrap();
    let w = s
        .watch_pull(
            prefix("p"),
            &WatchOptions { progress_interval: Some(Duration::from_millis(20)), ..Default::default() },
        )
        .unwrap();
    s.put(b"other", b"2").unwrap();
    let got = w.next(Duration::from_secs(10)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].kind, got[0].revision), (EventKind::Progress, 2));
    assert!(got[0].key.is_empty());

    let sink = Sink::default();
    s.watch(
        prefix("p"),
        &WatchOptions { progress_interval: Some(Duration::from_millis(20)), ..Default::default() },
        sink.callback(),
    )
    .unwrap();
    let evs = sink.wait_for(|e| e.iter().filter(|e| e.kind == EventKind::Progress).count() >= 2);
    assert!(evs.iter().filter(|e| e.kind == EventKind::Progress).count() >= 2);
    assert!(evs.iter().all(|e| e.revision == 2));
}

#[test]
fn push_watch_delivers_in_order_and_replays() {
    let s = store();
    for i in 0..50u32 {
        s.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    let sink = Sink::default();
    s.watch(Selector::All, &opts(10, 3), sink.callback()).unwrap();
    for i in 50..100u32 {
        s.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    let got = sink.wait_for(|e| e.len() >= 91);
    assert_eq!(revisions(&got), (10..=100).collect::<Vec<_>>());
}

#[test]
fn a_slow_callback_never_blocks_writers_and_loses_nothing() {
    let s = store();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    s.watch(
        Selector::All,
        &opts(0, 8),
        Box::new(move |evs: &[Event]| {
            std::thread::sleep(Duration::from_millis(1));
            seen2.lock().unwrap().extend(evs.iter().map(|e| e.revision));
        }),
    )
    .unwrap();
    for i in 0..2000u32 {
        s.put(format!("k{}", i % 100).as_bytes(), b"v").unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < 2000 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(*seen.lock().unwrap(), (1..=2000).collect::<Vec<_>>());
}

#[test]
fn credit_limits_deliveries_until_more_is_granted() {
    let s = store();
    let sink = Sink::default();
    let id = s
        .watch(
            Selector::All,
            &WatchOptions { credit: Some(3), max_queue: 4, ..Default::default() },
            sink.callback(),
        )
        .unwrap();
    for i in 0..20u32 {
        s.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    let got = sink.wait_for(|e| e.len() >= 3);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(sink.events().len(), 3, "{got:?}");
    s.add_credit(id, 10).unwrap();
    sink.wait_for(|e| e.len() >= 13);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(sink.events().len(), 13);
    s.add_credit(id, 100).unwrap();
    let got = sink.wait_for(|e| e.len() >= 20);
    assert_eq!(revisions(&got), (1..=20).collect::<Vec<_>>());
    assert!(matches!(s.add_credit(999, 1), Err(Error::NotFound(_))));
}

/// Counts drops of a callback's captured state.
struct DropCounter(Arc<AtomicUsize>);
impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn unwatch_stops_calls_and_drops_once() {
    let s = store();
    let drops = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (c, guard) = (calls.clone(), DropCounter(drops.clone()));
    let id = s
        .watch(
            Selector::All,
            &Default::default(),
            Box::new(move |_: &[Event]| {
                let _keep = &guard;
                c.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }),
        )
        .unwrap();
    assert_eq!(s.watcher_count(), 1);
    for i in 0..50u32 {
        s.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    s.unwatch(id).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped before unwatch returned");
    let after = calls.load(Ordering::SeqCst);
    s.put(b"more", b"v").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(calls.load(Ordering::SeqCst), after, "no call after unwatch returned");
    assert!(matches!(s.unwatch(id), Err(Error::NotFound(_))));
    assert_eq!(s.watcher_count(), 0);
    drop(s);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn a_callback_can_put_read_and_unwatch_itself() {
    let s = Arc::new(store());
    let drops = Arc::new(AtomicUsize::new(0));
    let my_id = Arc::new(Mutex::new(0u64));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s2, id2, seen2, guard) =
        (Arc::downgrade(&s), my_id.clone(), seen.clone(), DropCounter(drops.clone()));
    let id = s
        .watch(
            prefix("ping"),
            &Default::default(),
            Box::new(move |evs: &[Event]| {
                let _keep = &guard;
                let Some(s) = s2.upgrade() else { return };
                for e in evs {
                    seen2.lock().unwrap().push(e.revision);
                    let n: u32 = std::str::from_utf8(&e.value).unwrap().parse().unwrap();
                    assert!(s.get(&e.key).unwrap().mod_revision >= e.revision);
                    if n < 5 {
                        s.put(b"ping", (n + 1).to_string().as_bytes()).unwrap();
                    } else {
                        s.unwatch(*id2.lock().unwrap()).unwrap();
                    }
                }
            }),
        )
        .unwrap();
    *my_id.lock().unwrap() = id;
    s.put(b"ping", b"0").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while drops.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(s.current_revision(), 6);
    assert_eq!(s.watcher_count(), 0);
}

#[test]
fn closing_a_store_ends_every_watch() {
    let s = store();
    let drops = Arc::new(AtomicUsize::new(0));
    let sinks: Vec<Sink> = (0..5).map(|_| Sink::default()).collect();
    for sink in &sinks {
        let (cb, guard) = (sink.callback(), DropCounter(drops.clone()));
        let mut cb = cb;
        s.watch(
            Selector::All,
            &Default::default(),
            Box::new(move |e: &[Event]| {
                let _keep = &guard;
                cb(e)
            }),
        )
        .unwrap();
    }
    let pull = s.watch_pull(Selector::All, &Default::default()).unwrap();
    s.put(b"a", b"1").unwrap();
    assert_eq!(s.watcher_count(), 6);
    s.close();
    assert_eq!(drops.load(Ordering::SeqCst), 5, "every push watch dropped by close");
    for sink in &sinks {
        let evs = sink.events();
        let last = evs.last().unwrap();
        assert_eq!((last.kind, last.revision), (EventKind::Closed, 1));
        assert!(evs.iter().filter(|e| e.is_terminal()).count() == 1);
    }
    let got = pull_until(&pull, 10);
    assert_eq!(got.last().unwrap().kind, EventKind::Closed);
    assert!(matches!(pull.next(Duration::ZERO), Err(Error::Closed)));
    assert_eq!(s.watcher_count(), 0);
}

/// Every event a pull consumer gets until its terminal notice, then the notice.
fn pull_to_end(w: &tidemark::PullWatch) -> Vec<Event> {
    let mut got = Vec::new();
    while got.last().is_none_or(|e: &Event| !e.is_terminal()) {
        got.extend(w.next(Duration::ZERO).expect("a closed store's watch never times out"));
    }
    got
}

#[test]
fn a_closed_store_s_pull_watches_deliver_everything_committed_before_close_then_closed() {
    for dir in [None, Some(tempfile::tempdir().unwrap())] {
        let path = dir.as_ref().map(|d| d.path().to_str().unwrap().to_owned());
        let s = Store::open(path.as_deref(), None).unwrap();
        s.put(b"x/0", b"before").unwrap();
        // Replaying (never read, so still catching up), live-only with an overflowed queue,
        // and live-only within its queue.
        let replaying = s.watch_pull(prefix("x/"), &opts(1, 0)).unwrap();
        let overflowed = s.watch_pull(prefix("x/"), &opts(0, 2)).unwrap();
        let live = s.watch_pull(prefix("x/"), &opts(0, 0)).unwrap();
        s.commit(&[Op::Put(b"x/1", b"1"), Op::Put(b"y/1", b"1"), Op::Put(b"x/2", b"2")]).unwrap();
        s.put(b"x/3", b"3").unwrap();
        s.put(b"y/2", b"2").unwrap();
        s.close();
        let replayed = pull_to_end(&replaying);
        assert_eq!(revisions(&replayed), vec![1, 2, 4, 5]);
        assert_eq!(replayed.last().unwrap().kind, EventKind::Closed);
        assert_eq!(replayed.last().unwrap().revision, 6, "CLOSED carries the revision at close");
        for w in [&overflowed, &live] {
            let got = pull_to_end(w);
            assert_eq!(revisions(&got), vec![2, 4, 5]);
            assert_eq!(got.last().unwrap().kind, EventKind::Closed);
        }
        for w in [&replaying, &overflowed, &live] {
            assert!(matches!(w.next(Duration::ZERO), Err(Error::Closed)));
        }
        assert!(matches!(s.watch_pull(Selector::All, &opts(1, 0)), Err(Error::Closed)));
    }
}

#[test]
fn a_closed_store_s_push_watches_deliver_everything_committed_before_close_then_closed() {
    let s = store();
    for i in 0..6u32 {
        s.put(format!("x/{i}").as_bytes(), b"v").unwrap();
    }
    let (replaying, lagging) = (Sink::default(), Sink::default());
    s.watch(prefix("x/"), &opts(1, 0), replaying.callback()).unwrap();
    s.watch(prefix("x/"), &opts(3, 2), lagging.callback()).unwrap();
    s.put(b"x/6", b"v").unwrap();
    s.close();
    // close() returns after the last callback: nothing is left to wait for.
    for (sink, first) in [(&replaying, 1), (&lagging, 3)] {
        let got = sink.events();
        assert_eq!(revisions(&got), (first..=7).collect::<Vec<_>>());
        let last = got.last().unwrap();
        assert_eq!((last.kind, last.revision), (EventKind::Closed, 7));
        assert_eq!(got.iter().filter(|e| e.is_terminal()).count(), 1);
    }
}

#[test]
fn dropping_the_store_from_another_handle_keeps_pull_watches_safe() {
    let pull = {
        let s = Store::memory(None).unwrap();
        let w = s.watch_pull(Selector::All, &Default::default()).unwrap();
        s.put(b"a", b"1").unwrap();
        w
    };
    let got = pull_until(&pull, 10);
    assert_eq!(revisions(&got), vec![1]);
    assert_eq!(got.last().unwrap().kind, EventKind::Closed);
}

#[test]
fn fan_out_reaches_exactly_the_matching_watchers_among_many() {
    let s = store();
    let mut sinks = Vec::new();
    for i in 0..2000u32 {
        let sink = Sink::default();
        let sel = match i % 4 {
            0 => prefix(&format!("p{i}/")),
            1 => Selector::Key(format!("p{i}/x").into_bytes()),
            2 => Selector::Range(format!("p{i}/").into_bytes(), format!("p{i}/z").into_bytes()),
            _ => prefix(&format!("p{i}")), // also matches p{i}0.., p{i}1..
        };
        s.watch(sel.clone(), &Default::default(), sink.callback()).unwrap();
        sinks.push((sel, sink));
    }
    let mut keys = Vec::new();
    for i in (0..2000u32).step_by(7) {
        keys.push(format!("p{i}/x"));
    }
    for k in &keys {
        s.put(k.as_bytes(), b"v").unwrap();
    }
    for (sel, sink) in &sinks {
        let expected: Vec<&String> = keys.iter().filter(|k| sel.matches(k.as_bytes())).collect();
        let got = sink.wait_for(|e| e.len() >= expected.len());
        let got: Vec<String> = got.iter().map(|e| String::from_utf8_lossy(&e.key).into_owned()).collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), expected, "{sel:?}");
    }
}

#[test]
fn unwatch_returns_only_after_the_drop_of_a_running_callback() {
    let s = Arc::new(store());
    let dropped = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    struct SlowDrop(Arc<AtomicUsize>);
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            std::thread::sleep(Duration::from_millis(100));
            self.0.store(1, Ordering::SeqCst);
        }
    }
    let (st, guard) = (started.clone(), SlowDrop(dropped.clone()));
    let id = s
        .watch(
            Selector::All,
            &Default::default(),
            Box::new(move |_: &[Event]| {
                let _keep = &guard;
                st.store(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }),
        )
        .unwrap();
    s.put(b"k", b"v").unwrap();
    while started.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    s.unwatch(id).unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 1, "drop_userdata ran before unwatch returned");
}

#[test]
fn compaction_succeeds_while_a_terminal_notice_is_being_delivered() {
    let s = Arc::new(store());
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let release = Arc::new(Mutex::new(rx));
    let in_terminal = Arc::new(AtomicUsize::new(0));
    let (r, t) = (release.clone(), in_terminal.clone());
    s.watch(
        Selector::All,
        &WatchOptions { credit: Some(1), max_queue: 1, ..Default::default() },
        Box::new(move |evs: &[Event]| {
            if evs.iter().any(|e| e.kind == EventKind::Compacted) {
                t.store(1, Ordering::SeqCst);
                let _ = r.lock().unwrap().recv_timeout(Duration::from_secs(30));
            }
        }),
    )
    .unwrap();
    for _ in 0..6 {
        s.put(b"a", b"v").unwrap();
    }
    s.compact(7).unwrap();
    while in_terminal.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    s.put(b"b", b"v").unwrap();
    assert_eq!(s.compact(8).unwrap(), 1, "the ending watch does not block compaction");
    assert_eq!(s.earliest_revision(), 8);
    tx.send(()).unwrap();
}

#[test]
fn credit_stops_at_the_end_of_the_watchers_part_of_a_commit() {
    // Each commit's matching event is not its last event; credit 1 must still mean one
    // commit's worth, both for live deliveries and for a replay from the log.
    let s = store();
    let batches = |s: &Store| {
        for _ in 0..5 {
            s.commit(&[Op::Put(b"a", b"1"), Op::Put(b"b", b"2")]).unwrap();
        }
    };
    batches(&s);
    let replay = Sink::default();
    let replay_id = s
        .watch(
            prefix("a"),
            &WatchOptions { start_revision: 1, credit: Some(1), ..Default::default() },
            replay.callback(),
        )
        .unwrap();
    let live = Sink::default();
    let live_id = s
        .watch(prefix("a"), &WatchOptions { credit: Some(1), ..Default::default() }, live.callback())
        .unwrap();
    batches(&s);
    for (sink, id, first) in [(&replay, replay_id, 1u64), (&live, live_id, 11)] {
        for n in 1..=5u64 {
            let got = sink.wait_for(|e| e.len() as u64 >= n);
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(sink.events().len() as u64, n, "one event per credit: {got:?}");
            assert_eq!(sink.events().last().unwrap().revision, first + 2 * (n - 1));
            s.add_credit(id, 1).unwrap();
        }
    }
}

#[test]
fn an_ended_watch_is_no_longer_counted_when_it_is_dropped() {
    let s = Arc::new(store());
    let seen = Arc::new(Mutex::new(None));
    struct CountOnDrop(std::sync::Weak<Store>, Arc<Mutex<Option<usize>>>);
    impl Drop for CountOnDrop {
        fn drop(&mut self) {
            *self.1.lock().unwrap() = self.0.upgrade().map(|s| s.watcher_count());
        }
    }
    let guard = CountOnDrop(Arc::downgrade(&s), seen.clone());
    s.watch(
        Selector::All,
        &opts(0, 1),
        Box::new(move |_: &[Event]| {
            let _keep = &guard;
            std::thread::sleep(Duration::from_millis(5));
        }),
    )
    .unwrap();
    for _ in 0..20 {
        s.put(b"k", b"v").unwrap();
    }
    s.compact(s.current_revision() + 1).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(*seen.lock().unwrap(), Some(0));
}

#[test]
fn closing_right_after_a_push_watch_starts_never_hangs() {
    // Dispatcher threads go idle (polling, then sleeping) exactly when close() stops them;
    // a missed wake-up there would hang close() forever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for i in 0..3000u32 {
            let s = Store::memory(Some(r#"{"dispatch_threads": 2}"#)).unwrap();
            s.watch(Selector::All, &Default::default(), Box::new(|_: &[Event]| {})).unwrap();
            if i % 2 == 0 {
                s.put(b"k", b"v").unwrap();
            }
            // Land anywhere in the threads' idle phase.
            let until = std::time::Instant::now() + Duration::from_micros(u64::from(i % 31));
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
            s.close();
        }
        tx.send(()).unwrap();
    });
    assert!(rx.recv_timeout(Duration::from_secs(60)).is_ok(), "close() hung");
}
