//! Behaviour of the core API: keys, revisions, batches, changes, range, compaction, errors.

mod common;

use common::*;
use tidemark::{Error, EventKind, Op, Selector, Store};

#[test]
fn revisions_start_at_one_and_have_no_gaps() {
    let s = store();
    assert_eq!(s.current_revision(), 0);
    assert_eq!(s.earliest_revision(), 1);
    assert_eq!(s.put(b"a", b"1").unwrap(), 1);
    assert_eq!(s.put(b"b", b"2").unwrap(), 2);
    assert_eq!(s.delete(b"a").unwrap(), 3);
    assert_eq!(s.current_revision(), 3);
}

#[test]
fn get_reports_versions_and_revisions() {
    let s = store();
    s.put(b"k", b"v1").unwrap();
    s.put(b"other", b"x").unwrap();
    s.put(b"k", b"v2").unwrap();
    let e = s.get(b"k").unwrap();
    assert_eq!((&e.value[..], e.create_revision, e.mod_revision, e.version), (&b"v2"[..], 1, 3, 2));
    s.delete(b"k").unwrap();
    assert!(matches!(s.get(b"k"), Err(Error::NotFound(_))));
    s.put(b"k", b"v3").unwrap();
    let e = s.get(b"k").unwrap();
    assert_eq!((e.create_revision, e.mod_revision, e.version), (5, 5, 1), "recreated keys start over");
}

#[test]
fn delete_of_a_missing_key_takes_no_revision() {
    let s = store();
    s.put(b"a", b"1").unwrap();
    assert!(matches!(s.delete(b"zz"), Err(Error::NotFound(_))));
    assert_eq!(s.current_revision(), 1);
    assert_eq!(s.put(b"b", b"1").unwrap(), 2);
}

#[test]
fn empty_keys_are_refused_and_empty_values_allowed() {
    let s = store();
    assert!(matches!(s.put(b"", b"v"), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.get(b""), Err(Error::InvalidArgument(_))));
    assert_eq!(s.put(b"k", b"").unwrap(), 1);
    assert!(s.get(b"k").unwrap().value.is_empty());
}

#[test]
fn size_limits_give_too_large_and_change_nothing() {
    let s = Store::memory(Some(r#"{"max_key_size": 4, "max_value_size": 8}"#)).unwrap();
    assert!(matches!(s.put(b"12345", b"v"), Err(Error::TooLarge(_))));
    assert!(matches!(s.put(b"k", b"123456789"), Err(Error::TooLarge(_))));
    assert!(matches!(
        s.commit(&[Op::Put(b"k", b"1"), Op::Put(b"k2", b"123456789")]),
        Err(Error::TooLarge(_))
    ));
    assert_eq!(s.current_revision(), 0);
    assert_eq!(s.put(b"1234", b"12345678").unwrap(), 1);
}

#[test]
fn conditional_writes_report_the_current_revision() {
    let s = store();
    assert_eq!(s.put_if(b"k", b"a", 0).unwrap(), 1, "0 = must not exist");
    match s.put_if(b"k", b"b", 0) {
        Err(Error::Conflict { current, expected, .. }) => assert_eq!((current, expected), (1, 0)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.put_if(b"k", b"b", 7), Err(Error::Conflict { current: 1, .. })));
    assert_eq!(s.put_if(b"k", b"b", 1).unwrap(), 2);
    assert_eq!(&s.get(b"k").unwrap().value[..], b"b");
    assert!(matches!(s.put_if(b"missing", b"x", 3), Err(Error::Conflict { current: 0, .. })));
    assert_eq!(s.current_revision(), 2, "failed conditions take no revision");
}

#[test]
fn batches_are_atomic_and_consecutive() {
    let s = store();
    s.put(b"x", b"0").unwrap();
    let first =
        s.commit(&[Op::Put(b"a", b"1"), Op::Put(b"b", b"2"), Op::Delete(b"x"), Op::Put(b"a", b"3")]).unwrap();
    assert_eq!(first, 2);
    assert_eq!(s.current_revision(), 5);
    let a = s.get(b"a").unwrap();
    assert_eq!((&a.value[..], a.create_revision, a.version), (&b"3"[..], 2, 2));
    let ch = s.changes(&Selector::All, 2, 0, 0).unwrap();
    assert_eq!(ch.events.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    assert!(ch.events.last().unwrap().commit_end);
    assert!(!ch.events[0].commit_end);

    // A failing requirement or delete applies nothing.
    let before = s.current_revision();
    assert!(matches!(
        s.commit(&[Op::Put(b"c", b"1"), Op::Require(b"a", 1)]),
        Err(Error::Conflict { current: 5, .. })
    ));
    assert!(matches!(s.commit(&[Op::Put(b"c", b"1"), Op::Delete(b"nope")]), Err(Error::NotFound(_))));
    assert!(matches!(s.get(b"c"), Err(Error::NotFound(_))));
    assert_eq!(s.current_revision(), before);

    // Deletes see earlier puts of the same batch; requirements see the state before it.
    assert_eq!(s.commit(&[Op::Require(b"n", 0), Op::Put(b"n", b"1"), Op::Delete(b"n")]).unwrap(), 6);
    assert_eq!(s.commit(&[Op::Require(b"a", 5)]).unwrap(), 0, "requirements alone write nothing");
    assert_eq!(s.current_revision(), 7);
}

#[test]
fn changes_pages_with_has_more_and_never_splits_a_commit() {
    let s = store();
    for i in 0..10u32 {
        s.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    s.commit(&[Op::Put(b"b1", b"v"), Op::Put(b"b2", b"v"), Op::Put(b"b3", b"v")]).unwrap(); // 11..=13
    let page = s.changes(&Selector::All, 1, 0, 4).unwrap();
    assert_eq!((page.events.len(), page.has_more, page.next_revision), (4, true, 5));
    let page = s.changes(&Selector::All, 10, 0, 2).unwrap();
    assert_eq!(revisions(&page.events), vec![10, 11, 12, 13], "the batch is not split");
    assert!(!page.has_more);
    assert_eq!(page.next_revision, 14);
    // Paging through everything yields each revision once.
    let (mut from, mut seen) = (1, Vec::new());
    loop {
        let p = s.changes(&Selector::All, from, 0, 3).unwrap();
        seen.extend(p.events.iter().map(|e| e.revision));
        from = p.next_revision;
        if !p.has_more {
            break;
        }
    }
    assert_eq!(seen, (1..=13).collect::<Vec<_>>());
    // Selectors and bounds.
    let p = s.changes(&prefix("b"), 1, 12, 0).unwrap();
    assert_eq!(revisions(&p.events), vec![11, 12]);
    assert_eq!(p.next_revision, 13);
    assert!(s.changes(&Selector::All, 14, 0, 0).unwrap().events.is_empty());
    assert!(matches!(s.changes(&Selector::All, 15, 0, 0), Err(Error::FutureRevision { current: 13, .. })));
    assert!(matches!(s.changes(&Selector::All, 5, 4, 0), Err(Error::InvalidArgument(_))));
    assert!(matches!(s.changes(&Selector::Key(vec![]), 1, 0, 0), Err(Error::InvalidArgument(_))));
}

#[test]
fn compaction_reports_the_earliest_revision_and_keeps_keys() {
    let s = store();
    for i in 0..10u32 {
        s.put(b"k", i.to_string().as_bytes()).unwrap();
    }
    s.put(b"gone", b"x").unwrap();
    s.delete(b"gone").unwrap(); // 12
    assert_eq!(s.compact(8).unwrap(), 7);
    assert_eq!(s.earliest_revision(), 8);
    assert_eq!(s.compact(5).unwrap(), 0, "compacting below earliest drops nothing");
    match s.changes(&Selector::All, 3, 0, 0) {
        Err(Error::Compacted { earliest, requested }) => assert_eq!((earliest, requested), (8, 3)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.changes(&Selector::All, 0, 0, 0), Err(Error::Compacted { earliest: 8, .. })));
    assert_eq!(revisions(&s.changes(&Selector::All, 8, 0, 0).unwrap().events), vec![8, 9, 10, 11, 12]);
    let e = s.get(b"k").unwrap();
    assert_eq!((&e.value[..], e.version, e.create_revision), (&b"9"[..], 10, 1));
    assert!(matches!(s.compact(14), Err(Error::FutureRevision { current: 12, .. })));
    assert_eq!(s.compact(13).unwrap(), 5);
    assert_eq!(s.earliest_revision(), 13);
    assert!(s.changes(&Selector::All, 13, 0, 0).unwrap().events.is_empty());
    assert_eq!(s.put(b"k", b"new").unwrap(), 13);
}

#[test]
fn range_lists_current_keys_in_order() {
    let s = store();
    for k in ["b", "a", "ab", "c", "\u{ff}"] {
        s.put(k.as_bytes(), k.as_bytes()).unwrap();
    }
    s.delete(b"c").unwrap();
    let (all, more) = s.range(&Selector::All, 0).unwrap();
    let names: Vec<_> = all.iter().map(|e| String::from_utf8_lossy(&e.key).into_owned()).collect();
    assert_eq!(names, vec!["a", "ab", "b", "\u{ff}"]);
    assert!(!more);
    assert!(all.iter().all(|e| e.kind == EventKind::Put));
    let (two, more) = s.range(&Selector::All, 2).unwrap();
    assert_eq!((two.len(), more), (2, true));
    assert_eq!(s.range(&prefix("a"), 0).unwrap().0.len(), 2);
    assert_eq!(s.range(&Selector::Key(b"b".to_vec()), 0).unwrap().0.len(), 1);
    assert_eq!(s.range(&Selector::Range(b"ab".to_vec(), b"b".to_vec()), 0).unwrap().0.len(), 1);
    assert_eq!(s.range(&Selector::Range(b"ab".to_vec(), vec![]), 0).unwrap().0.len(), 3);
    assert!(s.range(&Selector::Range(b"b".to_vec(), b"a".to_vec()), 0).is_err());
}

#[test]
fn options_are_validated() {
    assert!(
        matches!(Store::memory(Some(r#"{"bogus": 1}"#)), Err(Error::InvalidArgument(m)) if m.contains("bogus"))
    );
    assert!(matches!(Store::memory(Some("not json")), Err(Error::InvalidArgument(_))));
    assert!(Store::memory(Some("")).is_ok());
}

#[test]
fn a_closed_store_refuses_everything() {
    let s = store();
    s.put(b"a", b"1").unwrap();
    s.close();
    s.close(); // idempotent
    assert!(matches!(s.put(b"a", b"2"), Err(Error::Closed)));
    assert!(matches!(s.get(b"a"), Err(Error::Closed)));
    assert!(matches!(s.changes(&Selector::All, 1, 0, 0), Err(Error::Closed)));
    assert!(matches!(s.compact(1), Err(Error::Closed)));
    assert!(matches!(s.watch_pull(Selector::All, &Default::default()), Err(Error::Closed)));
    assert_eq!(s.watcher_count(), 0);
}

#[test]
fn status_reports_the_store() {
    let s = store();
    s.put(b"a", b"1").unwrap();
    let st = s.status().unwrap();
    assert_eq!(st["revision"], 1);
    assert_eq!(st["earliest_revision"], 1);
    assert_eq!(st["keys"], 1);
    assert_eq!(st["watchers"], 0);
}

#[test]
fn a_handle_shares_the_store_without_owning_it() {
    let s = store();
    let h = s.handle();
    h.put(b"a", b"1").unwrap();
    assert_eq!(s.current_revision(), 1);
    drop(h); // dropping a handle does not close the store
    assert_eq!(s.put(b"b", b"2").unwrap(), 2);
    let h = s.handle();
    drop(s); // the owner closes it for every handle
    assert!(matches!(h.put(b"c", b"3"), Err(Error::Closed)));
    assert!(matches!(h.get(b"a"), Err(Error::Closed)));
}
