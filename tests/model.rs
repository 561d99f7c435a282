//! Model-based property test: random sequences of put / delete / conditional put / batch /
//! compact / changes / range / get, plus a slow pull watch, checked against a plain model.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use tidemark::{Error, EventKind, Op, Selector, Store, WatchOptions};

#[derive(Debug, Clone)]
enum Step {
    Put(u8, u8),
    Delete(u8),
    PutIf(u8, u8, Option<u64>), // None = use the key's real mod_revision
    Batch(Vec<(bool, u8, u8)>, Option<(u8, Option<u64>)>),
    Compact(u8),
    Changes(u8, u8, u8, u8),
    Range(u8, u8),
    Get(u8),
    Drain,
}

const KEYS: [&str; 6] = ["a", "ab", "abc", "b", "ba", "c"];

fn key(i: u8) -> &'static [u8] {
    KEYS[i as usize % KEYS.len()].as_bytes()
}

fn selector(i: u8) -> Selector {
    match i % 5 {
        0 => Selector::All,
        1 => Selector::Key(key(i / 5).to_vec()),
        2 => Selector::Prefix(key(i / 5)[..1].to_vec()),
        3 => Selector::Range(b"ab".to_vec(), b"b".to_vec()),
        _ => Selector::Range(b"b".to_vec(), Vec::new()),
    }
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
        2 => any::<u8>().prop_map(Step::Delete),
        2 => (any::<u8>(), any::<u8>(), proptest::option::of(0u64..8)).prop_map(|(k, v, e)| Step::PutIf(k, v, e)),
        2 => (proptest::collection::vec((any::<bool>(), any::<u8>(), any::<u8>()), 1..5),
              proptest::option::of((any::<u8>(), proptest::option::of(0u64..8)))).prop_map(|(ops, req)| Step::Batch(ops, req)),
        1 => any::<u8>().prop_map(Step::Compact),
        2 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(s, f, t, l)| Step::Changes(s, f, t, l)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(s, l)| Step::Range(s, l)),
        1 => any::<u8>().prop_map(Step::Get),
        1 => Just(Step::Drain),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Ev {
    revision: u64,
    put: bool,
    key: Vec<u8>,
    value: Vec<u8>,
    create: u64,
    version: u64,
}

#[derive(Default)]
struct Model {
    log: Vec<Ev>, // log[i].revision == i + 1
    earliest: u64,
    kv: BTreeMap<Vec<u8>, (Vec<u8>, u64, u64, u64)>, // value, create, mod, version
}

impl Model {
    fn mod_rev(&self, k: &[u8]) -> u64 {
        self.kv.get(k).map_or(0, |e| e.2)
    }

    /// Applies ops all or nothing; returns the first revision, or the error kind.
    fn commit(
        &mut self,
        ops: &[(bool, Vec<u8>, Vec<u8>)],
        req: Option<(Vec<u8>, u64)>,
    ) -> Result<u64, &'static str> {
        if let Some((k, r)) = &req {
            if self.mod_rev(k) != *r {
                return Err("conflict");
            }
        }
        let mut kv = self.kv.clone();
        let mut evs = Vec::new();
        let first = self.log.len() as u64 + 1;
        for (put, k, v) in ops {
            let rev = first + evs.len() as u64;
            if *put {
                let (create, version) = kv.get(k).map_or((rev, 1), |e| (e.1, e.3 + 1));
                kv.insert(k.clone(), (v.clone(), create, rev, version));
                evs.push(Ev { revision: rev, put: true, key: k.clone(), value: v.clone(), create, version });
            } else {
                if kv.remove(k).is_none() {
                    return Err("not found");
                }
                evs.push(Ev {
                    revision: rev,
                    put: false,
                    key: k.clone(),
                    value: vec![],
                    create: 0,
                    version: 0,
                });
            }
        }
        self.kv = kv;
        self.log.extend(evs);
        Ok(if ops.is_empty() { 0 } else { first })
    }
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::Conflict { .. } => "conflict",
        Error::NotFound(_) => "not found",
        Error::Compacted { .. } => "compacted",
        Error::FutureRevision { .. } => "future",
        Error::InvalidArgument(_) => "invalid",
        _ => "other",
    }
}

fn to_ev(e: &tidemark::Event) -> Ev {
    Ev {
        revision: e.revision,
        put: e.kind == EventKind::Put,
        key: e.key.to_vec(),
        value: e.value.to_vec(),
        create: e.create_revision,
        version: e.version,
    }
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let s = Store::memory(None).unwrap();
    let mut m = Model { earliest: 1, ..Default::default() };
    let watched = Selector::Prefix(b"a".to_vec());
    let w = s
        .watch_pull(watched.clone(), &WatchOptions { start_revision: 0, max_queue: 3, ..Default::default() })
        .unwrap();
    let mut received: Vec<Ev> = Vec::new();
    let mut terminal: Option<u64> = None;
    let drain = |received: &mut Vec<Ev>, terminal: &mut Option<u64>| {
        while terminal.is_none() {
            match w.next(Duration::ZERO) {
                Ok(evs) => {
                    for e in &evs {
                        if e.kind == EventKind::Compacted {
                            *terminal = Some(e.revision);
                        } else {
                            received.push(to_ev(e));
                        }
                    }
                }
                Err(Error::Timeout) => break,
                Err(e) => panic!("{e}"),
            }
        }
    };

    for st in steps {
        match st {
            Step::Put(k, v) => {
                let r = s.put(key(k), &[v]).map_err(|e| kind(&e));
                prop_assert_eq!(r, m.commit(&[(true, key(k).to_vec(), vec![v])], None));
            }
            Step::Delete(k) => {
                let r = s.delete(key(k)).map_err(|e| kind(&e));
                prop_assert_eq!(r, m.commit(&[(false, key(k).to_vec(), vec![])], None));
            }
            Step::PutIf(k, v, e) => {
                let expected = e.unwrap_or_else(|| m.mod_rev(key(k)));
                let r = s.put_if(key(k), &[v], expected).map_err(|e| kind(&e));
                prop_assert_eq!(
                    r,
                    m.commit(&[(true, key(k).to_vec(), vec![v])], Some((key(k).to_vec(), expected)))
                );
            }
            Step::Batch(ops, req) => {
                let owned: Vec<(bool, Vec<u8>, Vec<u8>)> =
                    ops.iter().map(|(p, k, v)| (*p, key(*k).to_vec(), vec![*v])).collect();
                let req = req.map(|(k, e)| (key(k).to_vec(), e.unwrap_or_else(|| m.mod_rev(key(k)))));
                let mut list: Vec<Op> = Vec::new();
                if let Some((k, r)) = &req {
                    list.push(Op::Require(k, *r));
                }
                for (p, k, v) in &owned {
                    list.push(if *p { Op::Put(k, v) } else { Op::Delete(k) });
                }
                let r = s.commit(&list).map_err(|e| kind(&e));
                prop_assert_eq!(r, m.commit(&owned, req));
            }
            Step::Compact(x) => {
                let current = m.log.len() as u64;
                let keep = u64::from(x) % (current + 3);
                let r = s.compact(keep).map_err(|e| kind(&e));
                if keep > current + 1 {
                    prop_assert_eq!(r, Err("future"));
                } else if keep <= m.earliest {
                    prop_assert_eq!(r, Ok(0));
                } else {
                    prop_assert_eq!(r, Ok(keep - m.earliest));
                    m.earliest = keep;
                }
                prop_assert_eq!(s.earliest_revision(), m.earliest);
            }
            Step::Changes(sel, f, t, l) => {
                let current = m.log.len() as u64;
                let from = u64::from(f) % (current + 3);
                let to = if t % 4 == 0 { 0 } else { u64::from(t) % (current + 2) };
                let limit = usize::from(l % 6);
                let sel = selector(sel);
                let r = s.changes(&sel, from, to, limit);
                let from1 = from.max(1);
                if from1 > current + 1 {
                    prop_assert_eq!(r.map_err(|e| kind(&e)).err(), Some("future"));
                } else if to != 0 && to < from1 {
                    prop_assert_eq!(r.map_err(|e| kind(&e)).err(), Some("invalid"));
                } else if from1 < m.earliest {
                    let ok = matches!(r, Err(Error::Compacted { earliest, .. }) if earliest == m.earliest);
                    prop_assert!(ok, "expected COMPACTED");
                } else {
                    let r = r.unwrap();
                    let end = if to == 0 { current } else { to.min(current) };
                    let all: Vec<Ev> = m.log[(from1 - 1) as usize..end as usize]
                        .iter()
                        .filter(|e| sel.matches(&e.key))
                        .cloned()
                        .collect();
                    let got: Vec<Ev> = r.events.iter().map(to_ev).collect();
                    let want = all.len().min(if limit == 0 { 1000 } else { limit });
                    prop_assert!(got.len() >= want, "short page");
                    prop_assert_eq!(&got[..], &all[..got.len()]);
                    prop_assert_eq!(r.has_more, r.next_revision <= end);
                    let rest: Vec<&Ev> = m.log[(r.next_revision - 1) as usize..end as usize]
                        .iter()
                        .filter(|e| sel.matches(&e.key))
                        .collect();
                    prop_assert_eq!(
                        rest.len(),
                        all.len() - got.len(),
                        "paging continues exactly after this batch"
                    );
                }
            }
            Step::Range(sel, l) => {
                let sel = selector(sel);
                let limit = usize::from(l % 4);
                let (evs, more) = s.range(&sel, limit).unwrap();
                let all: Vec<(Vec<u8>, Vec<u8>, u64)> =
                    m.kv.iter()
                        .filter(|(k, _)| sel.matches(k))
                        .map(|(k, v)| (k.clone(), v.0.clone(), v.2))
                        .collect();
                let n = if limit == 0 { all.len() } else { all.len().min(limit) };
                let got: Vec<(Vec<u8>, Vec<u8>, u64)> =
                    evs.iter().map(|e| (e.key.to_vec(), e.value.to_vec(), e.revision)).collect();
                prop_assert_eq!(&got[..], &all[..n]);
                prop_assert_eq!(more, n < all.len());
            }
            Step::Get(k) => match (s.get(key(k)), m.kv.get(key(k))) {
                (Ok(e), Some(v)) => prop_assert_eq!(
                    (e.value.to_vec(), e.create_revision, e.mod_revision, e.version),
                    v.clone()
                ),
                (Err(Error::NotFound(_)), None) => {}
                (a, b) => prop_assert!(false, "get mismatch {:?} vs {:?}", a, b),
            },
            Step::Drain => drain(&mut received, &mut terminal),
        }
        prop_assert_eq!(s.current_revision(), m.log.len() as u64);
    }
    drain(&mut received, &mut terminal);
    let expected: Vec<Ev> = m.log.iter().filter(|e| watched.matches(&e.key)).cloned().collect();
    match terminal {
        None => prop_assert_eq!(received, expected),
        Some(earliest) => {
            prop_assert_eq!(&received[..], &expected[..received.len()], "a prefix, then COMPACTED");
            prop_assert!(earliest <= m.earliest);
            let next_needed = expected.get(received.len()).map(|e| e.revision);
            prop_assert!(next_needed.is_some_and(|r| r < earliest), "ended only when it missed a match");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_the_model(steps in proptest::collection::vec(step(), 1..80)) {
        run(steps)?;
    }
}
