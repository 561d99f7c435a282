//! Transient subscriptions: selectors, starts, catch-up, credit, terminal notices, bad input,
//! and a property test that a subscription's feed is the filtered merge of `read_stream`.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use proptest::prelude::*;
use tidemark::{
    Direction, Error, ExpectedVersion, NewEvent, Selector, Store, StreamEvent, StreamSelector,
    SubscriptionEvent, SubscriptionFeed, WatchOptions, MAX_NAME,
};

const WAIT: Duration = Duration::from_secs(30);

fn ev<'a>(event_type: &'a str, data: &'a [u8]) -> NewEvent<'a> {
    NewEvent { id: None, event_type: event_type.as_bytes(), data, metadata: b"m" }
}

fn from(start_revision: u64) -> WatchOptions {
    WatchOptions { start_revision, ..Default::default() }
}

/// Everything the feed has up to now: `next(0)` is `Timeout` only once the subscription has
/// caught up with the log and its queue is empty, so this needs no timing.
fn drain(feed: &SubscriptionFeed) -> Vec<SubscriptionEvent> {
    let mut out = Vec::new();
    loop {
        match feed.next(Duration::ZERO) {
            Ok(batch) => {
                assert!(!batch.is_empty());
                out.extend(batch);
            }
            Err(Error::Timeout) => return out,
            Err(e) => panic!("{e:?}"),
        }
    }
}

fn names(events: &[SubscriptionEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            SubscriptionEvent::Event(se) => format!(
                "{}:{}:{}",
                String::from_utf8_lossy(&se.stream),
                se.version,
                String::from_utf8_lossy(se.event_type())
            ),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Two streams with two types, plus writes of every other kind between them.
fn populate(s: &Store) {
    s.append(b"order-1", &[ev("created", b"a"), ev("paid", b"b")], ExpectedVersion::NoStream).unwrap();
    s.put(b"user-key", b"v").unwrap();
    s.append(b"cart-1", &[ev("created", b"c")], ExpectedVersion::Any).unwrap();
    s.snapshot_record(b"src", b"order-1", 1, b"snap").unwrap();
    s.append(b"order-2", &[ev("created", b"d")], ExpectedVersion::Any).unwrap();
    s.append(b"order-1", &[ev("shipped", b"e")], ExpectedVersion::Exact(1)).unwrap();
}

#[test]
fn selectors_choose_streams_and_types() {
    let s = Store::memory(None).unwrap();
    populate(&s);
    let cases: [(StreamSelector, &[&str]); 6] = [
        (StreamSelector::stream("order-1"), &["order-1:0:created", "order-1:1:paid", "order-1:2:shipped"]),
        (
            StreamSelector::prefix("order-"),
            &["order-1:0:created", "order-1:1:paid", "order-2:0:created", "order-1:2:shipped"],
        ),
        (
            StreamSelector::all(),
            &[
                "order-1:0:created",
                "order-1:1:paid",
                "cart-1:0:created",
                "order-2:0:created",
                "order-1:2:shipped",
            ],
        ),
        (
            StreamSelector::event_type("created"),
            &["order-1:0:created", "cart-1:0:created", "order-2:0:created"],
        ),
        (StreamSelector::prefix("order").with_type("created"), &["order-1:0:created", "order-2:0:created"]),
        (StreamSelector::stream("order").with_type("created"), &[]),
    ];
    for (sel, want) in cases {
        let feed = s.subscribe_pull(&sel, &from(1)).unwrap();
        assert_eq!(names(&drain(&feed)), want, "{sel:?}");
        let all = drain(&feed);
        assert!(all.is_empty());
    }
    // Decoded fields and global order.
    let feed = s.subscribe_pull(&StreamSelector::all(), &from(1)).unwrap();
    let got: Vec<StreamEvent> = drain(&feed)
        .into_iter()
        .map(|e| match e {
            SubscriptionEvent::Event(se) => se,
            e => panic!("{e:?}"),
        })
        .collect();
    assert!(got.windows(2).all(|w| w[0].revision < w[1].revision));
    let read = s.read_stream(b"order-1", Some(0), 0, Direction::Forward).unwrap();
    assert_eq!(got[0], read[0]);
    assert_eq!((got[1].data(), got[1].metadata()), (&b"b"[..], &b"m"[..]));
}

#[test]
fn starts_now_from_the_beginning_or_any_revision() {
    let s = Store::memory(None).unwrap();
    populate(&s);
    let now = s.subscribe_pull(&StreamSelector::all(), &from(0)).unwrap();
    assert!(drain(&now).is_empty(), "start 0 is what comes next");
    // Revision 8 is order-2's event (2 events + head, put, cart event + head, snapshot).
    let mid = s.subscribe_pull(&StreamSelector::all(), &from(8)).unwrap();
    assert_eq!(names(&drain(&mid)), ["order-2:0:created", "order-1:2:shipped"]);
    s.append(b"cart-1", &[ev("paid", b"f")], ExpectedVersion::Exact(0)).unwrap();
    assert_eq!(names(&drain(&now)), ["cart-1:1:paid"]);
    assert_eq!(names(&drain(&mid)), ["cart-1:1:paid"]);
    let next = s.current_revision() + 1;
    assert!(s.subscribe_pull(&StreamSelector::all(), &from(next)).is_ok());
    assert!(matches!(
        s.subscribe_pull(&StreamSelector::all(), &from(next + 1)),
        Err(Error::FutureRevision { .. })
    ));
    s.compact(5).unwrap();
    assert!(matches!(
        s.subscribe_pull(&StreamSelector::all(), &from(1)),
        Err(Error::Compacted { earliest: 5, .. })
    ));
}

#[test]
fn bad_selectors_are_refused() {
    let s = Store::memory(None).unwrap();
    let long = vec![b'x'; MAX_NAME + 1];
    let bad = [
        (StreamSelector::stream(""), "invalid"),
        (StreamSelector::prefix(""), "invalid"),
        (StreamSelector::event_type(""), "invalid"),
        (StreamSelector::prefix("o").with_type(""), "invalid"),
        (StreamSelector::stream(long.clone()), "large"),
        (StreamSelector::prefix(long), "large"),
    ];
    for (sel, kind) in bad {
        let e = s.subscribe_pull(&sel, &from(0)).err().unwrap();
        let pushed = s.subscribe(&sel, &from(0), Box::new(|_| {})).unwrap_err();
        for e in [e, pushed] {
            match (kind, &e) {
                ("invalid", Error::InvalidArgument(_)) | ("large", Error::TooLarge(_)) => {}
                _ => panic!("{sel:?}: {e:?}"),
            }
        }
    }
    assert!(StreamSelector::stream(vec![b'x'; MAX_NAME]).validate().is_ok());
    assert_eq!(s.watcher_count(), 0);
}

#[test]
fn deleted_streams_and_other_features_are_not_events() {
    let s = Store::memory(None).unwrap();
    let feed = s.subscribe_pull(&StreamSelector::all(), &from(0)).unwrap();
    s.append(b"a", &[ev("t", b"1")], ExpectedVersion::Any).unwrap();
    s.delete_stream(b"a").unwrap();
    s.context_set(b"ctx", &serde_json::json!({"x": 1})).unwrap();
    s.append(b"a", &[ev("t", b"2")], ExpectedVersion::NoStream).unwrap();
    let got = drain(&feed);
    assert_eq!(names(&got), ["a:0:t", "a:0:t"], "the re-created stream starts again at 0");
    // The user key API cannot see what a subscription sees.
    assert!(s.changes(&Selector::All, 1, 0, 0).unwrap().events.is_empty());
}

#[test]
fn a_slow_pull_consumer_catches_up_gap_free() {
    let s = Store::memory(None).unwrap();
    let opts = WatchOptions { max_queue: 3, ..Default::default() };
    let feed = s.subscribe_pull(&StreamSelector::prefix("p").with_type("even"), &opts).unwrap();
    for i in 0..200u32 {
        let t = if i % 2 == 0 { "even" } else { "odd" };
        let stream = if i % 3 == 0 { "q" } else { "p" };
        s.append(stream.as_bytes(), &[ev(t, &i.to_be_bytes())], ExpectedVersion::Any).unwrap();
    }
    let got: Vec<u32> = drain(&feed)
        .into_iter()
        .map(|e| match e {
            SubscriptionEvent::Event(se) => u32::from_be_bytes(se.data().try_into().unwrap()),
            e => panic!("{e:?}"),
        })
        .collect();
    let want: Vec<u32> = (0..200).filter(|i| i % 2 == 0 && i % 3 != 0).collect();
    assert_eq!(got, want);
}

type Log = Arc<Mutex<Vec<SubscriptionEvent>>>;

fn push(s: &Store, sel: &StreamSelector, opts: &WatchOptions) -> (u64, Log, mpsc::Receiver<()>) {
    let log: Log = Arc::default();
    let (tx, rx) = mpsc::channel();
    let l = log.clone();
    let id = s
        .subscribe(
            sel,
            opts,
            Box::new(move |events| {
                l.lock().extend(events.iter().cloned());
                let _ = tx.send(());
            }),
        )
        .unwrap();
    (id, log, rx)
}

/// Waits for deliveries until `log` holds `n` events (no timing: the bound is a hang guard).
fn wait_for(log: &Log, rx: &mpsc::Receiver<()>, n: usize) {
    while log.lock().len() < n {
        rx.recv_timeout(WAIT).expect("a delivery");
    }
}

#[test]
fn push_credit_counts_subscription_events_only() {
    let s = Store::memory(None).unwrap();
    let opts = WatchOptions { credit: Some(2), start_revision: 1, ..Default::default() };
    for i in 0..10u8 {
        let t = if i % 2 == 0 { "hit" } else { "miss" };
        s.append(b"s", &[ev(t, &[i])], ExpectedVersion::Any).unwrap();
    }
    let (id, log, rx) = push(&s, &StreamSelector::event_type("hit"), &opts);
    wait_for(&log, &rx, 2);
    // Nothing more arrives without credit: a marker subscription sees the next append, and
    // by then the dispatcher has had every chance to overdeliver.
    let (marker, mlog, mrx) = push(&s, &StreamSelector::stream("marker"), &from(0));
    s.append(b"marker", &[ev("x", b"")], ExpectedVersion::Any).unwrap();
    wait_for(&mlog, &mrx, 1);
    assert_eq!(log.lock().len(), 2, "two events of credit, the filtered ones not counted");
    s.add_credit(id, 3).unwrap();
    wait_for(&log, &rx, 5);
    let got: Vec<u8> = log
        .lock()
        .iter()
        .map(|e| match e {
            SubscriptionEvent::Event(se) => se.data()[0],
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(got, [0, 2, 4, 6, 8]);
    s.unwatch(id).unwrap();
    s.unwatch(marker).unwrap();
    assert_eq!(s.watcher_count(), 0);
}

#[test]
fn terminal_notices_end_subscriptions() {
    let s = Store::memory(None).unwrap();
    let lagging = WatchOptions { max_queue: 1, ..Default::default() };
    let compacted = s.subscribe_pull(&StreamSelector::stream("a"), &lagging).unwrap();
    let filtered = s.subscribe_pull(&StreamSelector::prefix("b").with_type("want"), &lagging).unwrap();
    let (_, log, rx) = push(&s, &StreamSelector::all(), &from(0));
    for i in 0..5u8 {
        s.append(b"a", &[ev("t", &[i])], ExpectedVersion::Any).unwrap();
    }
    for t in ["want", "want", "other", "other"] {
        s.append(b"b", &[ev(t, b"")], ExpectedVersion::Any).unwrap();
    }
    // `filtered` now lags: it has read both "want" events and stands before the "other" ones.
    assert_eq!(names(&filtered.next(WAIT).unwrap()), ["b:0:want"]);
    assert_eq!(names(&filtered.next(WAIT).unwrap()), ["b:1:want"]);
    s.compact(s.current_revision()).unwrap();
    let got = drain_to_end(&compacted);
    assert_eq!(got.len(), 2, "the one queued event, then the notice");
    assert_eq!(got.last(), Some(&SubscriptionEvent::Compacted(s.current_revision())));
    assert!(matches!(compacted.next(Duration::ZERO), Err(Error::Closed)));
    // The compacted range held only events `filtered` does not want: it goes on.
    s.append(b"b", &[ev("want", b"")], ExpectedVersion::Any).unwrap();
    wait_for(&log, &rx, 10);
    s.close();
    assert_eq!(names(&drain_to_end(&filtered)), ["b:4:want", "Closed"]);
    wait_for(&log, &rx, 11);
    let log = log.lock();
    assert_eq!(log.len(), 11, "10 events then Closed");
    assert_eq!(log.last(), Some(&SubscriptionEvent::Closed));
}

/// Every delivery up to and including the terminal notice.
fn drain_to_end(feed: &SubscriptionFeed) -> Vec<SubscriptionEvent> {
    let mut out = Vec::new();
    while out.last().is_none_or(|e: &SubscriptionEvent| !e.is_terminal()) {
        out.extend(feed.next(WAIT).unwrap());
    }
    out
}

#[test]
fn concurrent_writers_reach_a_push_subscription_in_order() {
    let s = Store::memory(None).unwrap();
    let opts = WatchOptions { max_queue: 8, ..Default::default() };
    let (id, log, rx) = push(&s, &StreamSelector::prefix("w"), &opts);
    let writers: Vec<_> = (0..4u8)
        .map(|w| {
            let s = s.handle();
            std::thread::spawn(move || {
                for i in 0..500u32 {
                    s.append(&[b'w', w], &[ev("t", &i.to_be_bytes())], ExpectedVersion::Any).unwrap();
                    s.put(b"noise", b"x").unwrap();
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    wait_for(&log, &rx, 2000);
    let log = log.lock();
    assert_eq!(log.len(), 2000);
    let mut next = [0u64; 4];
    let mut last_rev = 0;
    for e in log.iter() {
        let SubscriptionEvent::Event(se) = e else { panic!("{e:?}") };
        assert!(se.revision > last_rev);
        last_rev = se.revision;
        let w = se.stream[1] as usize;
        assert_eq!(se.version, next[w], "gap-free and duplicate-free per stream");
        next[w] += 1;
    }
    drop(log);
    s.unwatch(id).unwrap();
}

fn selector(kind: u8, name: u8, t: u8) -> StreamSelector {
    let name = format!("s{}", name % 3);
    let t = format!("t{}", t % 2);
    match kind % 5 {
        0 => StreamSelector::stream(name),
        1 => StreamSelector::prefix("s"),
        2 => StreamSelector::all(),
        3 => StreamSelector::event_type(t),
        _ => StreamSelector::prefix(name).with_type(t),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// A subscription (pull and push, tiny queues so catch-up runs) from any start revision
    /// delivers exactly the events `read_stream` holds that its selector matches, with
    /// revision >= start, in revision order.
    #[test]
    fn feed_equals_filtered_reads(
        ops in proptest::collection::vec((0u8..4, 0u8..3, 0u8..2, 1usize..3), 1..60),
        sel in (any::<u8>(), any::<u8>(), any::<u8>()),
        start_at in 0usize..60,
        max_queue in 1usize..5,
    ) {
        let s = Store::memory(None).unwrap();
        let sel = selector(sel.0, sel.1, sel.2);
        let mut start = None;
        let mut subs = Vec::new();
        for (i, &(op, name, t, n)) in ops.iter().enumerate() {
            if i == start_at.min(ops.len() - 1) {
                let rev = s.current_revision() + 1;
                let opts = WatchOptions { max_queue, start_revision: rev, ..Default::default() };
                subs.push(s.subscribe_pull(&sel, &opts).unwrap());
                let (id, log, rx) = push(&s, &sel, &opts);
                start = Some((rev, id, log, rx));
            }
            let ty = format!("t{t}");
            let events: Vec<_> = (0..n).map(|_| ev(&ty, b"d")).collect();
            if op == 3 {
                s.put(b"k", b"v").unwrap();
            } else {
                s.append(format!("s{name}").as_bytes(), &events, ExpectedVersion::Any).unwrap();
            }
        }
        let (rev, id, log, rx) = start.unwrap();
        // A late subscription from the same revision reads the whole range from the log.
        let opts = WatchOptions { max_queue, start_revision: rev, ..Default::default() };
        subs.push(s.subscribe_pull(&sel, &opts).unwrap());
        let mut want: Vec<StreamEvent> = Vec::new();
        for name in ["s0", "s1", "s2"] {
            if let Ok(evs) = s.read_stream(name.as_bytes(), Some(0), 0, Direction::Forward) {
                want.extend(evs.into_iter().filter(|e| e.revision >= rev && sel.matches(e)));
            }
        }
        want.sort_by_key(|e| e.revision);
        let want: Vec<_> = want.into_iter().map(SubscriptionEvent::Event).collect();
        for feed in &subs {
            prop_assert_eq!(&drain(feed), &want);
        }
        wait_for(&log, &rx, want.len());
        prop_assert_eq!(&*log.lock(), &want);
        s.unwatch(id).unwrap();
    }
}
