//! Streams and snapshots over the reserved namespace: semantics, a model-based property
//! test, concurrent exact-version appends, and the separation from the user key API.
//! (kill -9 during appends is `tests/ns_streams_crash.rs`: a test that forks must not share a
//! process with tests that close and reopen a store directory, because a forked child holds
//! the parent's `flock` on the store's LOCK file until it execs.)

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tidemark::{Direction, Error, ExpectedVersion, NewEvent, Selector, Store, WatchOptions, MAX_NAME};

use ExpectedVersion::{Any, Exact, Exists, NoStream};

fn store() -> Store {
    common::redis::open(None)
}

fn ev<'a>(event_type: &'a str, data: &'a [u8]) -> NewEvent<'a> {
    NewEvent { id: None, event_type: event_type.as_bytes(), data, metadata: b"" }
}

fn with_id(id: u8, data: &[u8]) -> NewEvent<'_> {
    NewEvent { id: Some([id; 16]), event_type: b"t", data, metadata: b"m" }
}

fn wrong(e: Error) -> i64 {
    match e {
        Error::WrongExpectedVersion { current, .. } => current,
        e => panic!("expected WrongExpectedVersion, got {e:?}"),
    }
}

#[test]
fn append_read_and_expected_versions() {
    let s = store();
    s.set_clock(Arc::new(|| 1_700_000_000_123));
    assert_eq!(s.stream_version(b"orders").unwrap(), -1);
    assert_eq!(wrong(s.append(b"orders", &[ev("a", b"1")], Exists).unwrap_err()), -1);
    assert_eq!(wrong(s.append(b"orders", &[ev("a", b"1")], Exact(0)).unwrap_err()), -1);
    let a = s.append(b"orders", &[ev("created", b"1"), ev("paid", b"2")], NoStream).unwrap();
    assert_eq!((a.first_version, a.version, a.first_revision), (0, 1, 1));
    assert_eq!(wrong(s.append(b"orders", &[ev("a", b"1")], NoStream).unwrap_err()), 1);
    assert_eq!(wrong(s.append(b"orders", &[ev("a", b"1")], Exact(0)).unwrap_err()), 1);
    let b = s.append(b"orders", &[ev("shipped", b"3")], Exact(1)).unwrap();
    assert_eq!((b.first_version, b.version, b.first_revision), (2, 2, 4), "2 events + 1 head before");
    s.append(b"orders", &[ev("noted", b"4")], Exists).unwrap();
    s.append(b"orders", &[ev("noted", b"5")], Any).unwrap();
    assert_eq!(s.stream_version(b"orders").unwrap(), 4);

    let fwd = s.read_stream(b"orders", Some(0), 0, Direction::Forward).unwrap();
    assert_eq!(fwd.iter().map(|e| e.version).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(fwd[1].event_type(), b"paid");
    assert_eq!(fwd[1].data(), b"2");
    assert_eq!(fwd[1].metadata(), b"");
    assert_eq!(fwd[1].timestamp_ms(), 1_700_000_000_123);
    assert_eq!(&fwd[0].stream[..], b"orders");
    assert_eq!(fwd[0].revision, 1);
    assert_ne!(fwd[0].id(), fwd[1].id(), "generated ids differ");
    let revs: Vec<u64> = fwd.iter().map(|e| e.revision).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]));
    let page = s.read_stream(b"orders", Some(1), 2, Direction::Forward).unwrap();
    assert_eq!(page.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2]);
    let back = s.read_stream(b"orders", None, 3, Direction::Backward).unwrap();
    assert_eq!(back.iter().map(|e| e.version).collect::<Vec<_>>(), [4, 3, 2]);
    let back = s.read_stream(b"orders", Some(1), 0, Direction::Backward).unwrap();
    assert_eq!(back.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 0]);
    let back = s.read_stream(b"orders", Some(99), 1, Direction::Backward).unwrap();
    assert_eq!(back[0].version, 4, "a backward start past the end starts at the end");
    assert!(s.read_stream(b"orders", Some(5), 0, Direction::Forward).unwrap().is_empty());
    assert!(matches!(s.read_stream(b"nope", Some(0), 0, Direction::Forward), Err(Error::NotFound(_))));
    assert!(matches!(s.read_stream(b"orders", None, 0, Direction::Forward), Err(Error::InvalidArgument(_))));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let s = store();
    assert!(matches!(s.append(b"", &[ev("a", b"")], Any), Err(Error::InvalidArgument(_))));
    let long = vec![b'x'; MAX_NAME + 1];
    assert!(matches!(s.append(&long, &[ev("a", b"")], Any), Err(Error::TooLarge(_))));
    assert!(s.append(&long[..MAX_NAME], &[ev("a", b"")], Any).is_ok());
    assert!(matches!(s.append(b"s", &[], Any), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.stream_version(b""), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.read_stream(b"", Some(0), 0, Direction::Forward), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.delete_stream(b"none"), Err(Error::NotFound(_))));
    for bad in [-3, -5, i64::MIN] {
        assert!(matches!(ExpectedVersion::from_i64(bad), Err(Error::InvalidArgument(_))), "{bad}");
    }
    for (n, v) in [(-2, Any), (-1, NoStream), (-4, Exists), (7, Exact(7))] {
        assert_eq!(ExpectedVersion::from_i64(n).unwrap(), v);
        assert_eq!(v.as_i64(), n);
    }
    // Any bytes make a name, the reserved byte and separators included.
    for name in [&b"\0"[..], b"a/b", b"\xff\x00\x01", b"h"] {
        s.append(name, &[ev("t", name)], NoStream).unwrap();
        assert_eq!(s.read_stream(name, Some(0), 0, Direction::Forward).unwrap()[0].data(), name);
    }
    let value_limited = Store::memory(Some(r#"{"max_value_size": 64}"#)).unwrap();
    let big = [0u8; 65];
    assert!(matches!(value_limited.append(b"s", &[ev("t", &big)], Any), Err(Error::TooLarge(_))));
    assert_eq!(value_limited.current_revision(), 0);
}

#[test]
fn idempotent_retry_of_the_last_append() {
    let s = store();
    let first = s.append(b"s", &[with_id(1, b"a"), with_id(2, b"b")], NoStream).unwrap();
    let rev = s.current_revision();
    // The reply was lost: the same append again returns its result and writes nothing,
    // although its expected version no longer holds.
    assert_eq!(s.append(b"s", &[with_id(1, b"a"), with_id(2, b"b")], NoStream).unwrap(), first);
    assert_eq!(s.current_revision(), rev);
    // Only a retry of the whole last append is one: a subset or other ids are new appends.
    assert_eq!(wrong(s.append(b"s", &[with_id(2, b"b")], NoStream).unwrap_err()), 1);
    let next = s.append(b"s", &[with_id(3, b"c")], Exact(1)).unwrap();
    assert_eq!(s.append(b"s", &[with_id(3, b"c")], Exact(1)).unwrap(), next);
    // The older append is not the last one any more.
    assert_eq!(wrong(s.append(b"s", &[with_id(1, b"a"), with_id(2, b"b")], NoStream).unwrap_err()), 2);
    let ids: Vec<[u8; 16]> =
        s.read_stream(b"s", Some(0), 0, Direction::Forward).unwrap().iter().map(|e| *e.id()).collect();
    assert_eq!(ids, [[1; 16], [2; 16], [3; 16]]);
}

#[test]
fn delete_stream_frees_the_name() {
    let s = store();
    s.append(b"s", &[ev("a", b"1"), ev("b", b"2")], Any).unwrap();
    s.append(b"other", &[ev("a", b"1")], Any).unwrap();
    let rev = s.delete_stream(b"s").unwrap();
    assert_eq!(rev, s.current_revision() - 2, "two events and the head, in one commit");
    assert_eq!(s.stream_version(b"s").unwrap(), -1);
    assert!(matches!(s.read_stream(b"s", Some(0), 0, Direction::Forward), Err(Error::NotFound(_))));
    assert_eq!(wrong(s.append(b"s", &[ev("a", b"1")], Exists).unwrap_err()), -1);
    assert_eq!(wrong(s.append(b"s", &[ev("a", b"1")], Exact(1)).unwrap_err()), -1);
    assert_eq!(s.append(b"s", &[ev("again", b"1")], NoStream).unwrap().first_version, 0);
    assert_eq!(s.read_stream(b"s", Some(0), 0, Direction::Forward).unwrap().len(), 1);
    assert_eq!(s.stream_version(b"other").unwrap(), 0);
}

#[test]
fn list_streams_pages_by_prefix() {
    let s = store();
    for name in ["a", "b/1", "b/2", "b/3", "c"] {
        s.append(name.as_bytes(), &[ev("t", b"")], Any).unwrap();
    }
    s.append(b"b/2", &[ev("t", b"")], Any).unwrap();
    let names = |v: &[(Vec<u8>, i64)]| {
        v.iter().map(|(n, _)| String::from_utf8(n.clone()).unwrap()).collect::<Vec<_>>()
    };
    let (all, more) = s.list_streams(b"", None, 0).unwrap();
    assert_eq!(names(&all), ["a", "b/1", "b/2", "b/3", "c"]);
    assert!(!more);
    assert_eq!(all[2].1, 1);
    let (page, more) = s.list_streams(b"b/", None, 2).unwrap();
    assert_eq!((names(&page), more), (vec!["b/1".to_string(), "b/2".to_string()], true));
    let (page, more) = s.list_streams(b"b/", Some(b"b/2"), 2).unwrap();
    assert_eq!((names(&page), more), (vec!["b/3".to_string()], false));
    assert!(s.list_streams(b"b/", Some(b"z"), 0).unwrap().0.is_empty());
    assert_eq!(names(&s.list_streams(b"b/", Some(b"a"), 0).unwrap().0).len(), 3);
    assert!(s.list_streams(b"zz", None, 0).unwrap().0.is_empty());
    let st = s.status().unwrap();
    // "keys" counts every current key: 6 events and 5 stream heads.
    assert_eq!((st["streams"].as_u64(), st["keys"].as_u64()), (Some(5), Some(11)));
}

#[test]
fn snapshots_record_read_delete_list() {
    let s = store();
    s.set_clock(Arc::new(|| 42));
    assert!(matches!(s.snapshot_read(b"src", b"s", 10), Err(Error::NotFound(_))));
    let r = s.snapshot_record(b"src", b"s", 3, b"three").unwrap();
    s.snapshot_record(b"src", b"s", 7, b"seven").unwrap();
    s.snapshot_record(b"src", b"s2", 5, b"other stream").unwrap();
    s.snapshot_record(b"src2", b"s", 5, b"other source").unwrap();
    let got = s.snapshot_read(b"src", b"s", 6).unwrap();
    assert_eq!((got.version, &got.data[..], got.revision, got.timestamp_ms), (3, &b"three"[..], r, 42));
    assert_eq!(s.snapshot_read(b"src", b"s", u64::MAX).unwrap().version, 7);
    assert_eq!(s.snapshot_read(b"src", b"s", 7).unwrap().version, 7);
    assert!(matches!(s.snapshot_read(b"src", b"s", 2), Err(Error::NotFound(_))));
    s.snapshot_record(b"src", b"s", 3, b"three again").unwrap();
    assert_eq!(&s.snapshot_read(b"src", b"s", 3).unwrap().data[..], b"three again");
    let list = s.snapshot_list(b"src", b"s").unwrap();
    assert_eq!(list.iter().map(|x| x.version).collect::<Vec<_>>(), [3, 7]);
    assert_eq!((&list[0].source[..], &list[0].stream[..]), (&b"src"[..], &b"s"[..]));
    s.snapshot_delete(b"src", b"s", 7).unwrap();
    assert!(matches!(s.snapshot_delete(b"src", b"s", 7), Err(Error::NotFound(_))));
    assert_eq!(s.snapshot_read(b"src", b"s", 100).unwrap().version, 3);
    assert_eq!(s.status().unwrap()["snapshots"], 3);
    assert!(matches!(s.snapshot_record(b"", b"s", 1, b""), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.snapshot_list(b"src", b""), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.snapshot_read(&[b'x'; MAX_NAME + 1], b"s", 1), Err(Error::TooLarge(_))));
}

#[test]
fn user_all_never_shows_feature_keys_and_feeds_decode_them() {
    let s = store();
    let w = s.watch_pull(Selector::All, &WatchOptions::default()).unwrap();
    s.put(b"user", b"1").unwrap();
    s.append(b"s", &[ev("t", b"x")], Any).unwrap();
    s.snapshot_record(b"src", b"s", 0, b"snap").unwrap();
    s.put(b"user", b"2").unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(w.next(Duration::from_secs(10)).unwrap());
    }
    assert!(seen.iter().all(|e| &e.key[..] == b"user"), "{seen:?}");
    let changes = s.changes(&Selector::All, 1, 0, 0).unwrap().events;
    assert_eq!(changes.len(), 2);
    assert_eq!(s.range(&Selector::All, 0).unwrap().0.len(), 1);
    assert_eq!(s.key_count(), 4, "user key + event + head + snapshot");
    assert!(matches!(
        s.changes(&Selector::Prefix(b"\0s/".to_vec()), 1, 0, 0),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn events_survive_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    {
        let s = Store::open(Some(path), Some(r#"{"sync":"none"}"#)).unwrap();
        s.append(b"s", &[ev("a", b"1"), ev("b", b"2")], NoStream).unwrap();
        for i in 0..50 {
            s.put(format!("k{}", i % 3).as_bytes(), b"v").unwrap();
        }
        s.append(b"s", &[ev("c", b"3")], Exact(1)).unwrap();
        s.snapshot_record(b"src", b"s", 2, b"snap").unwrap();
        s.compact(s.current_revision() + 1).unwrap();
        assert_eq!(s.read_stream(b"s", Some(0), 0, Direction::Forward).unwrap().len(), 3);
    }
    let s = Store::open(Some(path), None).unwrap();
    let evs = s.read_stream(b"s", Some(0), 0, Direction::Forward).unwrap();
    assert_eq!(evs.iter().map(|e| e.data().to_vec()).collect::<Vec<_>>(), [b"1", b"2", b"3"]);
    assert_eq!(s.stream_version(b"s").unwrap(), 2);
    assert_eq!(&s.snapshot_read(b"src", b"s", 9).unwrap().data[..], b"snap");
    assert_eq!(s.append(b"s", &[ev("d", b"4")], Exact(2)).unwrap().version, 3);
}

#[test]
fn concurrent_exact_version_appends_never_share_a_version() {
    for opts in [None, Some(r#"{"sync":"none"}"#)] {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(match opts {
            None => store(),
            Some(o) => Store::open(Some(dir.path().to_str().unwrap()), Some(o)).unwrap(),
        });
        let wins = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let (s, wins) = (s.clone(), wins.clone());
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    while mine.len() < 25 {
                        let v = s.stream_version(b"hot").unwrap();
                        let expected = if v < 0 { NoStream } else { Exact(v as u64) };
                        let data = [t, mine.len() as u8];
                        match s.append(b"hot", &[ev("t", &data), ev("u", &data)], expected) {
                            Ok(a) => {
                                assert_eq!(a.first_version as i64, v + 1);
                                mine.push(a.first_version);
                                wins.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(Error::WrongExpectedVersion { current, .. }) => assert!(current > v),
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    mine
                })
            })
            .collect();
        let mut firsts: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        firsts.sort();
        assert_eq!(firsts, (0..200).map(|i| i * 2).collect::<Vec<_>>(), "no version twice, no gap");
        let evs = s.read_stream(b"hot", Some(0), 0, Direction::Forward).unwrap();
        assert_eq!(evs.len(), 400);
        for pair in evs.chunks(2) {
            // Both events of an append are adjacent and from the same writer.
            assert_eq!(pair[0].data(), pair[1].data());
            assert_eq!(pair[0].revision + 1, pair[1].revision);
        }
        assert_eq!(wins.load(Ordering::Relaxed), 200);
    }
}

// ---- a model-based property test ----

#[derive(Debug, Clone)]
enum Step {
    Append(u8, Vec<u8>, i64),
    Read(u8, u8, u8, bool),
    Delete(u8),
    Compact,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0u8..3, proptest::collection::vec(any::<u8>(), 1..4), -4i64..6).prop_map(|(s, d, e)| Step::Append(s, d, e)),
        3 => (0u8..3, any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(s, f, c, b)| Step::Read(s, f, c, b)),
        1 => (0u8..3).prop_map(Step::Delete),
        1 => Just(Step::Compact),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn streams_behave_like_a_map_of_vectors(steps in proptest::collection::vec(step(), 1..60)) {
        let s = store();
        let mut model: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        for st in steps {
            match st {
                Step::Append(n, data, e) => {
                    let name = [b's', n];
                    let cur = model.get(&n).map_or(-1, |v| v.len() as i64 - 1);
                    let evs: Vec<NewEvent> = data.iter().map(|d| ev("t", std::slice::from_ref(d))).collect();
                    let r = ExpectedVersion::from_i64(e).and_then(|x| s.append(&name, &evs, x));
                    let ok = match e {
                        -2 => true,
                        -1 => cur == -1,
                        -4 => cur >= 0,
                        -3 => { prop_assert!(matches!(r, Err(Error::InvalidArgument(_)))); continue; }
                        n => cur == n,
                    };
                    if ok {
                        let a = r.unwrap();
                        prop_assert_eq!(a.first_version as i64, cur + 1);
                        prop_assert_eq!(a.version as i64, cur + data.len() as i64);
                        model.entry(n).or_default().extend(&data);
                    } else {
                        prop_assert_eq!(wrong(r.unwrap_err()), cur);
                    }
                }
                Step::Read(n, from, count, backward) => {
                    let name = [b's', n];
                    let r = s.read_stream(&name, Some(from as u64 % 8), count as usize % 5,
                        if backward { Direction::Backward } else { Direction::Forward });
                    match model.get(&n) {
                        None => prop_assert!(matches!(r, Err(Error::NotFound(_)))),
                        Some(v) => {
                            let from = (from % 8) as usize;
                            let count = match count as usize % 5 { 0 => usize::MAX, c => c };
                            let want: Vec<(u64, u8)> = if backward {
                                (0..=from.min(v.len() - 1)).rev().take(count).map(|i| (i as u64, v[i])).collect()
                            } else {
                                (from..v.len()).take(count).map(|i| (i as u64, v[i])).collect()
                            };
                            let got: Vec<(u64, u8)> = r.unwrap().iter().map(|e| (e.version, e.data()[0])).collect();
                            prop_assert_eq!(got, want);
                        }
                    }
                    prop_assert_eq!(s.stream_version(&name).unwrap(), model.get(&n).map_or(-1, |v| v.len() as i64 - 1));
                }
                Step::Delete(n) => {
                    let r = s.delete_stream(&[b's', n]);
                    prop_assert_eq!(r.is_ok(), model.remove(&n).is_some());
                }
                Step::Compact => {
                    s.compact(s.current_revision() + 1).unwrap();
                }
            }
        }
        let (listed, _) = s.list_streams(b"", None, 0).unwrap();
        let want: Vec<(Vec<u8>, i64)> = model.iter().map(|(n, v)| (vec![b's', *n], v.len() as i64 - 1)).collect();
        prop_assert_eq!(listed, want);
    }
}
