//! Several writers and many watchers at once: every watcher gets exactly its matching events,
//! in revision order, once; compaction overtaking a paused watcher ends it with COMPACTED.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use tidemark::{Error, Event, EventKind, Op, Selector, Store};

const WRITERS: usize = 4;
const PUTS: usize = 1500;

fn write_load(s: &Store, t: usize) {
    for i in 0..PUTS {
        let key = format!("w{t}/k{}", i % 37);
        if i % 50 == 49 {
            let k2 = format!("w{t}/batch{}", i % 3);
            s.commit(&[Op::Put(key.as_bytes(), b"b"), Op::Put(k2.as_bytes(), b"b")]).unwrap();
        } else {
            s.put(key.as_bytes(), i.to_string().as_bytes()).unwrap();
        }
    }
}

fn expected(s: &Store, sel: &Selector, from: u64) -> Vec<u64> {
    s.changes(sel, from, 0, usize::MAX).unwrap().events.iter().map(|e| e.revision).collect()
}

#[test]
fn many_writers_many_watchers_exact_delivery() {
    let s = Arc::new(Store::memory(Some(r#"{"dispatch_threads": 3}"#)).unwrap());
    let selectors = [
        Selector::All,
        prefix("w0/"),
        prefix("w1/k1"),
        Selector::Key(b"w2/k5".to_vec()),
        Selector::Range(b"w1/".to_vec(), b"w3/".to_vec()),
        Selector::Range(b"w3/".to_vec(), vec![]),
    ];
    // Push watchers: half slow, small queues so they overflow and catch up from the log.
    let mut push = Vec::new();
    for (i, sel) in selectors.iter().enumerate() {
        let got = Arc::new(Mutex::new(Vec::<u64>::new()));
        let g = got.clone();
        let slow = i % 2 == 1;
        s.watch(
            sel.clone(),
            &opts(0, if slow { 16 } else { 1000 }),
            Box::new(move |evs: &[Event]| {
                if slow {
                    thread::sleep(Duration::from_micros(300));
                }
                g.lock().unwrap().extend(evs.iter().filter(|e| e.kind == EventKind::Put).map(|e| e.revision));
            }),
        )
        .unwrap();
        push.push((sel.clone(), 1u64, got));
    }
    // Pull watchers, each on its own consumer thread.
    let stop = Arc::new(AtomicBool::new(false));
    let mut pulls = Vec::new();
    let spawn_pull = |s: &Arc<Store>, sel: Selector, start: u64, max_queue: usize, slow: bool| {
        let w = s.watch_pull(sel.clone(), &opts(start, max_queue)).unwrap();
        let stop = stop.clone();
        let h = thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match w.next(Duration::from_millis(50)) {
                    Ok(evs) => {
                        got.extend(evs.iter().filter(|e| e.kind == EventKind::Put).map(|e| e.revision))
                    }
                    Err(Error::Timeout) if stop.load(Ordering::SeqCst) => return got,
                    Err(Error::Timeout) => {}
                    Err(e) => panic!("{e}"),
                }
                if slow {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        });
        (sel, if start == 0 { 1 } else { start }, h)
    };
    for (i, sel) in selectors.iter().enumerate() {
        pulls.push(spawn_pull(&s, sel.clone(), 0, if i % 2 == 0 { 8 } else { 1000 }, i % 3 == 0));
    }
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let s = s.clone();
            thread::spawn(move || write_load(&s, t))
        })
        .collect();
    // Watchers joining mid-stream, replaying from the start and from a later revision.
    thread::sleep(Duration::from_millis(5));
    pulls.push(spawn_pull(&s, Selector::All, 1, 32, false));
    pulls.push(spawn_pull(&s, prefix("w1/"), 1, 1000, true));
    let mid = s.current_revision().max(1);
    pulls.push(spawn_pull(&s, Selector::All, mid, 64, false));
    let late_push = Arc::new(Mutex::new(Vec::<u64>::new()));
    let lp = late_push.clone();
    s.watch(
        prefix("w2/"),
        &opts(1, 8),
        Box::new(move |evs: &[Event]| lp.lock().unwrap().extend(evs.iter().map(|e| e.revision))),
    )
    .unwrap();
    push.push((prefix("w2/"), 1, late_push));

    for w in writers {
        w.join().unwrap();
    }
    let total = s.current_revision();
    assert_eq!(total as usize, WRITERS * (PUTS + PUTS / 50));
    for (sel, from, got) in &push {
        let want = expected(&s, sel, *from);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while got.lock().unwrap().len() < want.len() && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*got.lock().unwrap(), want, "push {sel:?}");
    }
    // Let pull consumers drain, then stop them.
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    for (sel, from, h) in pulls {
        let got = h.join().unwrap();
        assert_eq!(got, expected(&s, &sel, from), "pull {sel:?} from {from}");
    }
}

#[test]
fn compaction_overtaking_paused_watchers_under_concurrent_writes() {
    let s = Arc::new(store());
    let paused = s.watch_pull(Selector::All, &opts(0, 5)).unwrap();
    let keeping_up = s.watch_pull(Selector::All, &opts(0, 5)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match keeping_up.next(Duration::from_millis(50)) {
                    Ok(evs) => got.extend(evs),
                    Err(Error::Closed) => return got, // overtaken: COMPACTED came first
                    Err(Error::Timeout) if stop.load(Ordering::SeqCst) => return got,
                    Err(Error::Timeout) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        })
    };
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let s = s.clone();
            thread::spawn(move || {
                for i in 0..500 {
                    s.put(format!("t{t}/{}", i % 10).as_bytes(), b"v").unwrap();
                }
            })
        })
        .collect();
    // Compact repeatedly behind the writers.
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(1));
        let cur = s.current_revision();
        if cur > 50 {
            s.compact(cur - 50).unwrap();
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    let keep = s.current_revision() - 10;
    s.compact(keep).unwrap();

    let got = pull_until(&paused, usize::MAX);
    let last = got.last().unwrap();
    assert_eq!(last.kind, EventKind::Compacted, "the paused watcher is overtaken");
    assert!(last.revision <= keep && last.revision > 5);
    assert_eq!(revisions(&got), (1..=revisions(&got).len() as u64).collect::<Vec<_>>(), "an unbroken prefix");
    assert!(matches!(paused.next(Duration::ZERO), Err(Error::Closed)), "nothing after COMPACTED");

    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let got = consumer.join().unwrap();
    // The consumer may or may not have been overtaken; either way its sequence is gap-free.
    let revs = revisions(&got);
    let terminal = got.iter().any(|e| e.kind == EventKind::Compacted);
    if terminal {
        assert_eq!(got.last().unwrap().kind, EventKind::Compacted);
    } else {
        assert_eq!(revs, (1..=1000).collect::<Vec<u64>>());
    }
    assert_eq!(revs, (1..=revs.len() as u64).collect::<Vec<_>>());
}
