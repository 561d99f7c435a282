//! Contexts over the reserved namespace: versions, exact deltas, Chord's defects as tests,
//! concurrent updates, TTLs and cleanup with an injected clock, bad input, a model-based
//! property test, and kill -9 during updates of a durable store.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use serde_json::{json, Value};
use tidemark::{Cleaned, Context, ContextSync, Error, Order, Restored, Selector, Store};

fn store(opts: &str) -> Store {
    common::redis::open(Some(opts))
}

/// A store whose clock reads the returned counter.
fn clocked(opts: &str) -> (Store, Arc<AtomicU64>) {
    let s = store(opts);
    let now = Arc::new(AtomicU64::new(1_000));
    let n = now.clone();
    s.set_clock(Arc::new(move || n.load(Ordering::SeqCst)));
    (s, now)
}

fn apply(doc: &Value, patch: &Value) -> Value {
    let mut d = doc.clone();
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    json_patch::patch(&mut d, &p).unwrap();
    d
}

#[test]
fn set_update_get_delete_and_versions() {
    let (s, now) = clocked("");
    let w = s.context_set(b"call:1", &json!({"status": "ringing", "n": 1})).unwrap();
    assert_eq!((w.version, &w.document), (1, &json!({"status": "ringing", "n": 1})));
    assert_eq!(apply(&json!({}), &w.delta), w.document, "the first delta is from {{}}");
    now.store(2_000, Ordering::SeqCst);
    let w = s.context_update(b"call:1", &json!({"status": "active", "n": null, "who": {"a": 1}})).unwrap();
    assert_eq!((w.version, &w.document), (2, &json!({"status": "active", "who": {"a": 1}})));
    let ops: Vec<&str> = w.delta.as_array().unwrap().iter().map(|o| o["op"].as_str().unwrap()).collect();
    assert!(ops.len() <= 3 && !ops.is_empty(), "changed fields only: {}", w.delta);
    let c = s.context_get(b"call:1").unwrap();
    assert_eq!((c.version, c.created_ms, c.updated_ms, c.revision), (2, 1_000, 2_000, w.revision));
    // A write that changes nothing is no new version.
    let same = s.context_update(b"call:1", &json!({"status": "active"})).unwrap();
    assert_eq!((same.version, &same.delta, same.revision), (2, &json!([]), 0));
    assert_eq!(s.context_set(b"call:1", &c.document).unwrap().version, 2);
    // update on an absent context starts from {}.
    assert_eq!(s.context_update(b"new", &json!({"a": 1, "b": null})).unwrap().document, json!({"a": 1}));
    assert_eq!(s.status().unwrap()["contexts"], 2);
    let list = s.context_list(0, 0, Order::Asc).unwrap();
    assert_eq!(list.iter().map(|c| &c.id[..]).collect::<Vec<_>>(), [&b"call:1"[..], b"new"]);
    let desc = s.context_list(1, 1, Order::Desc).unwrap();
    assert_eq!(desc.iter().map(|c| &c.id[..]).collect::<Vec<_>>(), [&b"call:1"[..]]);
    let deltas = s.context_deltas(b"call:1", 0, 0, Order::Asc).unwrap();
    assert_eq!(deltas.len(), 1);
    assert_eq!((deltas[0].version, deltas[0].timestamp_ms), (2, 2_000));
    s.context_delete(b"call:1").unwrap();
    assert!(matches!(s.context_get(b"call:1"), Err(Error::NotFound(_))));
    assert!(matches!(s.context_delete(b"call:1"), Err(Error::NotFound(_))));
    assert!(matches!(s.context_sync(b"call:1", Some(1)), Err(Error::NotFound(_))));
    assert!(matches!(s.context_deltas(b"call:1", 0, 0, Order::Asc), Err(Error::NotFound(_))));
    let again = s.context_set(b"call:1", &json!({})).unwrap();
    assert_eq!(again.version, 3, "a re-created id goes on from the deleted one's version");
    assert_eq!(s.context_get(b"call:1").unwrap().created_ms, 2_000, "but it is a new context");
    let mut keys = 0;
    s.range_visit(&Selector::All, 0, &mut |_| keys += 1).unwrap();
    assert_eq!(keys, 0, "contexts are not user keys");
}

#[test]
fn a_client_of_a_deleted_context_is_not_fooled_by_its_successor() {
    let s = store("");
    s.context_set(b"x", &json!({"a": 1})).unwrap();
    s.context_update(b"x", &json!({"b": 2})).unwrap();
    let old = s.context_update(b"x", &json!({"c": 3})).unwrap();
    assert_eq!(old.version, 3);
    s.context_delete(b"x").unwrap();
    // The new context reaches the old client's versions and beyond: it is never taken for them.
    for n in 0..5 {
        s.context_update(b"x", &json!({ format!("n{n}"): n })).unwrap();
    }
    assert_eq!(s.context_get(b"x").unwrap().version, 8);
    let current = s.context_get(b"x").unwrap().document;
    for client in 1..=3 {
        let got = s.context_sync(b"x", Some(client)).unwrap();
        assert_eq!(got, ContextSync::Full { document: current.clone(), version: 8 }, "client {client}");
    }
    let ContextSync::Delta { patch, version: 8 } = s.context_sync(b"x", Some(4)).unwrap() else { panic!() };
    assert_eq!(apply(&json!({"n0": 0}), &patch), current, "the new context's own clients get deltas");
    // The tombstone survives compaction and does not count as a context.
    s.compact(s.current_revision()).unwrap();
    s.context_delete(b"x").unwrap();
    assert_eq!(s.status().unwrap()["contexts"], 0);
    assert!(s.context_list(0, 0, Order::Asc).unwrap().is_empty());
    assert_eq!(s.context_update(b"x", &json!({})).unwrap().version, 9);
}

#[test]
fn sync_no_change_delta_full() {
    let s = store("");
    let mut docs = vec![Value::Null];
    for i in 1..=5 {
        docs.push(s.context_update(b"c", &json!({ format!("k{i}"): i })).unwrap().document);
    }
    assert_eq!(s.context_sync(b"c", Some(5)).unwrap(), ContextSync::NoChange { version: 5 });
    for client in 1..5 {
        let ContextSync::Delta { patch, version } = s.context_sync(b"c", Some(client)).unwrap() else {
            panic!("client {client} gets a delta")
        };
        assert_eq!((apply(&docs[client as usize], &patch), version), (docs[5].clone(), 5));
    }
    for client in [None, Some(0), Some(-1), Some(6), Some(i64::MAX)] {
        let full = ContextSync::Full { document: docs[5].clone(), version: 5 };
        assert_eq!(s.context_sync(b"c", client).unwrap(), full, "{client:?}");
    }
}

/// Chord keeps the oldest deltas and merges non-contiguous ones; here a client inside the
/// retained window gets an exact delta and one below it gets FULL, never a partial delta.
#[test]
fn chord_threshold_defect() {
    let s = store("");
    let mut docs = vec![Value::Null];
    for i in 1..=150 {
        let w = s.context_update(b"c", &json!({ format!("f{}", i % 7): i, "last": i })).unwrap();
        assert_eq!(w.version, i);
        docs.push(w.document);
    }
    let deltas = s.context_deltas(b"c", 0, 0, Order::Asc).unwrap();
    assert_eq!(deltas.len(), 100);
    assert_eq!((deltas[0].version, deltas[99].version), (51, 150), "the newest are retained");
    let ContextSync::Delta { patch, version: 150 } = s.context_sync(b"c", Some(120)).unwrap() else {
        panic!("client 120 is inside the window")
    };
    assert_eq!(apply(&docs[120], &patch), docs[150]);
    let ContextSync::Delta { patch, .. } = s.context_sync(b"c", Some(50)).unwrap() else { panic!() };
    assert_eq!(apply(&docs[50], &patch), docs[150], "the oldest retained delta is 51");
    assert_eq!(
        s.context_sync(b"c", Some(49)).unwrap(),
        ContextSync::Full { document: docs[150].clone(), version: 150 }
    );
    assert!(matches!(s.context_sync(b"c", Some(10)).unwrap(), ContextSync::Full { version: 150, .. }));
}

/// A key removed in one version and re-added in the next: a client syncing across both ends
/// with the key present and the right value.
#[test]
fn chord_remove_then_re_add_defect() {
    let s = store("");
    s.context_set(b"c", &json!({"k": "old", "x": 1})).unwrap();
    s.context_update(b"c", &json!({"k": null})).unwrap();
    s.context_update(b"c", &json!({"k": "new"})).unwrap();
    let ContextSync::Delta { patch, version: 3 } = s.context_sync(b"c", Some(1)).unwrap() else { panic!() };
    assert_eq!(apply(&json!({"k": "old", "x": 1}), &patch), json!({"k": "new", "x": 1}));
}

#[test]
fn concurrent_updates_of_distinct_fields_all_land() {
    let s = Arc::new(store(""));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    s.context_update(b"shared", &json!({ format!("f{t}_{i}"): i })).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let c = s.context_get(b"shared").unwrap();
    assert_eq!(c.version, 200);
    assert_eq!(c.document.as_object().unwrap().len(), 200);
    assert_eq!(s.context_deltas(b"shared", 0, 0, Order::Asc).unwrap().len(), 100);
}

#[test]
fn thresholds_and_ttls_with_an_injected_clock() {
    let (s, now) = clocked(
        r#"{"delta_threshold":3,"delta_ttl_ms":100,"context_ttl_ms":1000,"context_auto_delete":true}"#,
    );
    for i in 1..=5 {
        now.store(1_000 + i * 10, Ordering::SeqCst);
        s.context_update(b"a", &json!({ "v": i })).unwrap();
    }
    let versions = |s: &Store| -> Vec<u64> {
        s.context_deltas(b"a", 0, 0, Order::Asc).unwrap().iter().map(|d| d.version).collect()
    };
    assert_eq!(versions(&s), [3, 4, 5]);
    assert_eq!(s.context_deltas(b"a", 1, 1, Order::Desc).unwrap()[0].version, 4);
    assert!(matches!(s.context_sync(b"a", Some(2)).unwrap(), ContextSync::Delta { .. }));
    // Deltas 3 and 4 (written at 1030 and 1040) expire at 1130 and 1140.
    now.store(1_140, Ordering::SeqCst);
    assert!(matches!(s.context_sync(b"a", Some(3)).unwrap(), ContextSync::Full { .. }), "delta 4 expired");
    assert!(matches!(s.context_sync(b"a", Some(4)).unwrap(), ContextSync::Delta { .. }));
    assert_eq!(s.context_cleanup(0).unwrap(), Cleaned { contexts: 0, deltas: 2 });
    assert_eq!(versions(&s), [5]);
    assert_eq!(s.context_cleanup(0).unwrap(), Cleaned::default());
    s.context_set(b"b", &json!({})).unwrap();
    // Context a was updated at 1050: it expires at 2050; b at 2140.
    now.store(2_050, Ordering::SeqCst);
    assert_eq!(s.context_cleanup(0).unwrap(), Cleaned { contexts: 1, deltas: 1 });
    assert!(s.context_get(b"a").is_err() && s.context_get(b"b").is_ok());
    now.store(9_000, Ordering::SeqCst);
    s.context_set(b"c", &json!({"x": 1})).unwrap();
    s.context_set(b"d", &json!({"x": 1})).unwrap();
    now.store(20_000, Ordering::SeqCst);
    assert_eq!(s.context_cleanup(1).unwrap().contexts, 1, "limit: contexts changed per pass");
    assert_eq!(s.context_cleanup(0).unwrap().contexts, 2);
    assert_eq!(s.status().unwrap()["contexts"], 0);
}

#[test]
fn without_auto_delete_cleanup_keeps_expired_contexts() {
    let (s, now) = clocked(r#"{"context_ttl_ms":10}"#);
    s.context_set(b"a", &json!({"x": 1})).unwrap();
    now.store(1_000_000, Ordering::SeqCst);
    assert_eq!(s.context_cleanup(0).unwrap(), Cleaned::default());
    assert_eq!(s.context_get(b"a").unwrap().version, 1);
    let s = store(r#"{"delta_threshold":0}"#);
    s.context_set(b"a", &json!({"x": 1})).unwrap();
    s.context_set(b"a", &json!({"x": 2})).unwrap();
    assert!(s.context_deltas(b"a", 0, 0, Order::Asc).unwrap().is_empty());
    assert!(matches!(s.context_sync(b"a", Some(1)).unwrap(), ContextSync::Full { version: 2, .. }));
}

#[test]
fn bad_input_is_a_clear_error_and_changes_nothing() {
    let s = store(r#"{"max_value_size":1024}"#);
    s.context_set(b"a", &json!({"x": 1})).unwrap();
    let rev = s.current_revision();
    for bad in [json!([1]), json!("s"), json!(null), json!(3)] {
        assert!(matches!(s.context_set(b"a", &bad), Err(Error::InvalidArgument(_))), "{bad}");
        assert!(matches!(s.context_update(b"a", &bad), Err(Error::InvalidArgument(_))), "{bad}");
    }
    assert!(matches!(s.context_set(b"", &json!({})), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.context_get(&[b'x'; 2000]), Err(Error::TooLarge(_))));
    let big = json!({ "x": "y".repeat(2000) });
    assert!(matches!(s.context_set(b"a", &big), Err(Error::TooLarge(_))));
    assert!(matches!(s.context_update(b"a", &big), Err(Error::TooLarge(_))));
    assert_eq!(s.current_revision(), rev);
    assert_eq!(s.context_get(b"a").unwrap().document, json!({"x": 1}));
}

#[test]
fn contexts_survive_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    {
        let s = Store::open(Some(path), None).unwrap();
        for i in 1..=4 {
            s.context_update(b"a", &json!({ "v": i })).unwrap();
        }
        s.compact(s.current_revision()).unwrap();
    }
    let s = Store::open(Some(path), None).unwrap();
    assert_eq!(s.context_get(b"a").unwrap().version, 4);
    let ContextSync::Delta { patch, .. } = s.context_sync(b"a", Some(1)).unwrap() else { panic!() };
    assert_eq!(apply(&json!({"v": 1}), &patch), json!({"v": 4}));
}

/// A threshold lowered across a reopen: the next write drops every delta the new threshold
/// no longer keeps (oldest first), and sync answers exactly from what is left.
#[test]
fn a_threshold_lowered_across_reopen_prunes_the_older_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let mut docs = vec![Value::Null];
    {
        let s = Store::open(Some(path), Some(r#"{"delta_threshold":10}"#)).unwrap();
        for i in 1..=15 {
            docs.push(s.context_update(b"a", &json!({ format!("f{}", i % 4): i })).unwrap().document);
        }
        let kept: Vec<u64> =
            s.context_deltas(b"a", 0, 0, Order::Asc).unwrap().iter().map(|d| d.version).collect();
        assert_eq!(kept, (6..=15).collect::<Vec<_>>());
    }
    let s = Store::open(Some(path), Some(r#"{"delta_threshold":3}"#)).unwrap();
    docs.push(s.context_update(b"a", &json!({"f0": "last"})).unwrap().document);
    let kept: Vec<u64> =
        s.context_deltas(b"a", 0, 0, Order::Asc).unwrap().iter().map(|d| d.version).collect();
    assert_eq!(kept, [14, 15, 16]);
    for client in 1..=16i64 {
        match s.context_sync(b"a", Some(client)).unwrap() {
            ContextSync::Delta { patch, version: 16 } if client >= 13 => {
                assert_eq!(apply(&docs[client as usize], &patch), docs[16], "client {client}")
            }
            ContextSync::Full { document, version: 16 } if client < 13 => assert_eq!(document, docs[16]),
            ContextSync::NoChange { version: 16 } if client == 16 => {}
            other => panic!("client {client}: {other:?}"),
        }
    }
}

// ---- kill -9 during updates of a durable store ----

/// The child: updaters that print each acknowledged version, until killed.
#[test]
fn contexts_crash_child() {
    let Ok(dir) = std::env::var("TIDEMARK_CONTEXTS_CRASH_CHILD") else { return };
    let s = Arc::new(Store::open(Some(&dir), Some(r#"{"sync":"always","delta_threshold":10}"#)).unwrap());
    println!("OPEN");
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || loop {
                let w = s.context_update(b"c", &json!({ format!("t{t}"): s.current_revision() })).unwrap();
                let mut o = std::io::stdout().lock();
                writeln!(o, "V {}", w.version).unwrap();
                o.flush().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn kill_during_updates_keeps_contexts_and_deltas_exact() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["contexts_crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("TIDEMARK_CONTEXTS_CRASH_CHILD", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked = 0;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            if let Some(v) = line.unwrap().strip_prefix("V ") {
                acked = acked.max(v.parse::<u64>().unwrap());
                if acked >= 30 * (round + 1) {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let s = Store::open(Some(dir.path().to_str().unwrap()), None).unwrap();
        let c = s.context_get(b"c").unwrap();
        assert!(c.version >= acked, "acknowledged versions survive: {} < {acked}", c.version);
        let deltas = s.context_deltas(b"c", 0, 0, Order::Asc).unwrap();
        let versions: Vec<u64> = deltas.iter().map(|d| d.version).collect();
        let want: Vec<u64> = (c.version - 9..=c.version).collect();
        assert_eq!(versions, want, "the newest deltas, contiguous");
        // A client with nothing gets the whole current document.
        let ContextSync::Full { document, .. } = s.context_sync(b"c", None).unwrap() else { panic!() };
        assert_eq!(document, c.document);
    }
}

// ---- a model-based property test ----

#[derive(Debug, Clone)]
enum Step {
    Set(Value),
    Update(Value),
    Delete,
    Cleanup,
    Advance(u64),
}

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..4).prop_map(Value::from),
        "[ab]{0,2}".prop_map(Value::from),
        Just(json!([1, 2])),
        prop::collection::btree_map("[xy]", (0i64..3).prop_map(Value::from), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
    ]
}

fn doc() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[abcd]", field_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn merge_patch() -> impl Strategy<Value = Value> {
    let v = prop_oneof![3 => field_value(), 1 => Just(Value::Null), 1 => Just(json!({"x": null, "y": 9}))];
    prop::collection::btree_map("[abcd]", v, 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => doc().prop_map(Step::Set),
        5 => merge_patch().prop_map(Step::Update),
        1 => Just(Step::Delete),
        1 => Just(Step::Cleanup),
        1 => (1u64..40).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn every_delta_turns_the_clients_document_into_the_current_one(
        steps in proptest::collection::vec(step(), 1..50),
        clients in proptest::collection::vec(-1i64..60, 4),
    ) {
        let (s, now) = clocked(r#"{"delta_threshold":5,"delta_ttl_ms":100}"#);
        // The documents of the current incarnation by version, and when each was written.
        let mut history: BTreeMap<u64, (Value, u64)> = BTreeMap::new();
        for st in steps {
            match st {
                Step::Set(d) => {
                    let w = s.context_set(b"m", &d).unwrap();
                    prop_assert_eq!(&w.document, &d);
                    history.entry(w.version).or_insert((d, now.load(Ordering::SeqCst)));
                }
                Step::Update(p) => {
                    let mut want = history.values().last().map_or(json!({}), |(d, _)| d.clone());
                    json_patch::merge(&mut want, &p);
                    let w = s.context_update(b"m", &p).unwrap();
                    prop_assert_eq!(&w.document, &want);
                    history.entry(w.version).or_insert((want, now.load(Ordering::SeqCst)));
                }
                Step::Delete => {
                    prop_assert_eq!(s.context_delete(b"m").is_ok(), !history.is_empty());
                    history.clear();
                }
                Step::Cleanup => {
                    s.context_cleanup(0).unwrap();
                }
                Step::Advance(ms) => {
                    now.fetch_add(ms, Ordering::SeqCst);
                }
            }
            let Some((&version, (current, _))) = history.iter().next_back() else {
                prop_assert!(matches!(s.context_sync(b"m", Some(1)), Err(Error::NotFound(_))));
                continue;
            };
            let now_ms = now.load(Ordering::SeqCst);
            for &client in &clients {
                match s.context_sync(b"m", Some(client)).unwrap() {
                    ContextSync::NoChange { version: v } => {
                        prop_assert_eq!((v, client), (version, version as i64));
                    }
                    ContextSync::Delta { patch, version: v } => {
                        prop_assert_eq!(v, version);
                        let base = &history[&(client as u64)].0;
                        prop_assert_eq!(&apply(base, &patch), current);
                    }
                    ContextSync::Full { document, version: v } => {
                        prop_assert_eq!((&document, v), (current, version));
                        // FULL only when the retained, unexpired deltas cannot do it.
                        // (A client of a deleted incarnation is not in `history`: versions go on.)
                        let retained = history.contains_key(&(client.max(0) as u64))
                            && (client as u64) < version
                            && version - (client as u64) <= 5;
                        let fresh = (client.max(0) as u64 + 1..=version)
                            .all(|v| history.get(&v).is_some_and(|(_, at)| now_ms < at + 100));
                        prop_assert!(!(retained && fresh), "client {} could get a delta", client);
                    }
                }
            }
        }
    }
}

#[test]
fn the_cleanup_thread_runs_until_stopped_or_closed() {
    let (s, now) = clocked(r#"{"context_ttl_ms":10,"context_auto_delete":true}"#);
    let passes = |s: &Store| s.status().unwrap()["context_cleaner"]["passes"].as_u64().unwrap();
    assert!(matches!(s.context_cleaner_start(0, 0), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.context_cleaner_set_interval(5), Err(Error::NotFound(_))));
    assert!(!s.context_cleaner_stop());
    s.context_set(b"a", &json!({})).unwrap();
    s.context_cleaner_start(1, 0).unwrap();
    assert_eq!(s.status().unwrap()["context_cleaner"]["running"], true);
    // Passes run, but nothing expired yet by the injected clock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while passes(&s) < 3 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(s.context_get(b"a").is_ok());
    now.store(1_000_000, Ordering::SeqCst);
    while s.context_get(b"a").is_ok() && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(s.context_get(b"a").is_err(), "the thread deleted the expired context");
    s.context_cleaner_set_interval(3_600_000).unwrap();
    s.context_cleaner_start(2, 1).unwrap();
    assert_eq!(s.status().unwrap()["context_cleaner"]["interval_ms"], 2);
    assert!(s.context_cleaner_stop());
    assert_eq!(s.status().unwrap()["context_cleaner"]["running"], false);
    let after = passes(&s);
    s.context_set(b"b", &json!({})).unwrap();
    assert_eq!(passes(&s), after, "stopped means stopped");
    // Close stops a running thread (and the store's handle it holds is released).
    s.context_cleaner_start(1, 0).unwrap();
    s.close();
    assert!(matches!(s.context_cleaner_start(1, 0), Err(Error::Closed)));
    assert!(!s.context_cleaner_stop());
}

#[test]
fn export_on_demand_and_before_a_ttl_delete() {
    let (s, now) = clocked(r#"{"context_ttl_ms":100,"context_auto_delete":true}"#);
    assert!(matches!(s.context_export(b"a"), Err(Error::InvalidArgument(_))), "no exporter");
    let got = Arc::new(Mutex::new(Vec::new()));
    let fail = Arc::new(AtomicBool::new(false));
    let (g, f, h) = (got.clone(), fail.clone(), s.handle());
    s.context_set_exporter(Some(Arc::new(move |c: &Context| {
        if f.load(Ordering::SeqCst) {
            return Err("the archive is down".into());
        }
        // An exporter may call into the store.
        assert_eq!(h.context_get(&c.id).unwrap().version, c.version);
        g.lock().unwrap().push((c.id.clone(), c.document.clone(), c.version));
        Ok(())
    })));
    assert!(matches!(s.context_export(b"a"), Err(Error::NotFound(_))));
    s.context_set(b"a", &json!({"x": 1})).unwrap();
    s.context_update(b"a", &json!({"y": 2})).unwrap();
    let c = s.context_export(b"a").unwrap();
    assert_eq!((c.version, &c.document), (2, &json!({"x": 1, "y": 2})));
    assert_eq!(got.lock().unwrap()[..], [(b"a".to_vec(), json!({"x": 1, "y": 2}), 2)]);
    // Cleanup exports an expired context before it deletes it; a failed export keeps it.
    s.context_set(b"b", &json!({"z": 1})).unwrap();
    now.fetch_add(100, Ordering::SeqCst);
    fail.store(true, Ordering::SeqCst);
    let export_failures = |s: &Store| s.status().unwrap()["context_cleaner"]["export_failures"].as_u64();
    assert_eq!(export_failures(&s), Some(0));
    assert_eq!(s.context_cleanup(0).unwrap(), Cleaned::default());
    assert!(s.context_get(b"a").is_ok() && s.context_get(b"b").is_ok(), "nothing lost");
    assert_eq!(export_failures(&s), Some(2), "each failed export is counted");
    let e = s.context_export(b"a").unwrap_err();
    assert!(matches!(e, Error::Io(_)) && e.to_string().contains("the archive is down"), "{e}");
    fail.store(false, Ordering::SeqCst);
    assert_eq!(s.context_cleanup(0).unwrap(), Cleaned { contexts: 2, deltas: 1 });
    let exported: Vec<_> = got.lock().unwrap().iter().map(|(id, _, v)| (id.clone(), *v)).collect();
    assert_eq!(exported, [(b"a".to_vec(), 2), (b"a".to_vec(), 2), (b"b".to_vec(), 1)]);
    s.context_set_exporter(None);
    assert!(matches!(s.context_export(b"a"), Err(Error::InvalidArgument(_))));
}

#[test]
fn a_provider_restores_missing_contexts() {
    let s = store("");
    let asked = Arc::new(Mutex::new(Vec::new()));
    let (a, h) = (asked.clone(), s.handle());
    s.context_set_provider(Some(Arc::new(move |id: &[u8]| {
        a.lock().unwrap().push(id.to_vec());
        match id {
            b"kept" => Ok(Some(Restored { document: json!({"r": 1}), version: 7 })),
            b"plain" | b"upd" | b"d" => Ok(Some(Restored { document: json!({"a": 1}), version: 0 })),
            b"broken" => Err("the archive is down".into()),
            b"bad" => Ok(Some(Restored { document: json!([1]), version: 0 })),
            // A provider may call into the store.
            b"nested" => {
                Ok(h.context_get(b"kept").ok().map(|c| Restored { document: c.document, version: 0 }))
            }
            _ => Ok(None),
        }
    })));
    let c = s.context_get(b"kept").unwrap();
    assert_eq!((c.version, &c.document), (7, &json!({"r": 1})), "stored at the provider's version");
    assert_eq!(s.context_get(b"kept").unwrap().revision, c.revision, "stored once");
    assert_eq!(s.context_sync(b"kept", Some(7)).unwrap(), ContextSync::NoChange { version: 7 });
    assert!(matches!(s.context_sync(b"kept", Some(6)).unwrap(), ContextSync::Full { version: 7, .. }));
    assert_eq!(s.context_get(b"plain").unwrap().version, 1);
    let w = s.context_update(b"upd", &json!({"b": 2})).unwrap();
    assert_eq!(
        (w.version, &w.document),
        (2, &json!({"a": 1, "b": 2})),
        "update goes on from the restored one"
    );
    assert_eq!(apply(&json!({"a": 1}), &w.delta), w.document);
    assert!(matches!(s.context_sync(b"none", Some(1)), Err(Error::NotFound(_))));
    assert!(matches!(s.context_get(b"none"), Err(Error::NotFound(_))));
    assert_eq!(s.context_update(b"none", &json!({"n": 1})).unwrap().version, 1, "no document: from {{}}");
    let e = s.context_get(b"broken").unwrap_err();
    assert!(matches!(e, Error::Io(_)) && e.to_string().contains("the archive is down"), "{e}");
    assert!(s.context_update(b"broken", &json!({"n": 1})).is_err(), "nothing is written then");
    assert!(matches!(s.context_get(b"bad"), Err(Error::InvalidArgument(_))));
    assert_eq!(s.context_get(b"nested").unwrap().document, json!({"r": 1}));
    let ids: Vec<_> = s.context_list(0, 0, Order::Asc).unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, [&b"kept"[..], b"nested", b"none", b"plain", b"upd"]);
    // A deleted context comes back after the deleted one's version.
    s.context_set(b"d", &json!({"old": 1})).unwrap();
    s.context_delete(b"d").unwrap();
    assert_eq!(s.context_get(b"d").unwrap().version, 2);
    // Explicit restore never overwrites: the context as it is.
    assert_eq!(s.context_restore(b"kept", &json!({"other": 1}), 99).unwrap().document, json!({"r": 1}));
    assert!(matches!(s.context_restore(b"x", &json!(3), 0), Err(Error::InvalidArgument(_))));
    s.context_set_provider(None);
    asked.lock().unwrap().clear();
    assert!(matches!(s.context_get(b"gone"), Err(Error::NotFound(_))));
    assert!(asked.lock().unwrap().is_empty());
}
