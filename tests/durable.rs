//! Directory stores: reopen, group commit, torn tails, corruption, checkpoints and
//! compaction, locking, read-only opens, bad paths and limits.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{segments, snapshot};
use tidemark::{Error, Event, Op, Selector, Store, WatchOptions};

mod common;

fn open(dir: &Path, opts: &str) -> tidemark::Result<Store> {
    Store::open(Some(dir.to_str().unwrap()), Some(opts))
}

fn all_changes(s: &Store, sel: &Selector, from: u64) -> Vec<Event> {
    let mut out = Vec::new();
    let mut from = from;
    loop {
        let c = s.changes(sel, from, 0, 7).unwrap();
        out.extend(c.events);
        if !c.has_more {
            return out;
        }
        from = c.next_revision;
    }
}

fn keys(s: &Store) -> Vec<Event> {
    s.range(&Selector::All, 0).unwrap().0
}

/// Where a segment's records end: its last non-zero byte (the rest is zero padding to whole
/// 4 KiB blocks). The workloads here never end a segment with an empty value.
fn data_end(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

/// Tears a segment as a crash does: keeps its first `keep` bytes, zeroes the rest (the file
/// keeps its length).
fn tear(seg: &Path, full: &[u8], keep: usize) {
    let mut b = full[..keep].to_vec();
    b.resize(full.len(), 0);
    fs::write(seg, &b).unwrap();
}

/// A mixed workload: puts, overwrites, deletes, batches.
fn workload(s: &Store, n: usize) {
    for i in 0..n {
        let k = format!("k{:03}", i % 37);
        match i % 7 {
            3 => {
                let _ = s.delete(k.as_bytes());
            }
            5 => {
                let (a, b) = (format!("b{i}/x"), format!("b{i}/y"));
                s.commit(&[
                    Op::Put(a.as_bytes(), b"1"),
                    Op::Put(b.as_bytes(), b"2"),
                    Op::Put(k.as_bytes(), b"batch"),
                ])
                .unwrap();
            }
            _ => {
                s.put(k.as_bytes(), format!("value {i} {}", "x".repeat(i % 50)).as_bytes()).unwrap();
            }
        }
    }
}

#[test]
fn reopen_keeps_state_and_log() {
    for sync in ["always", "interval", "none"] {
        let dir = tempfile::tempdir().unwrap();
        let opts = if sync == "interval" {
            r#"{"sync":"interval","sync_interval_ms":5}"#.to_string()
        } else {
            format!(r#"{{"sync":"{sync}"}}"#)
        };
        let s = open(dir.path(), &opts).unwrap();
        workload(&s, 300);
        let (rev, state, log) = (s.current_revision(), keys(&s), all_changes(&s, &Selector::All, 1));
        assert_eq!(log.len() as u64, rev);
        drop(s);
        let s = open(dir.path(), &opts).unwrap();
        assert_eq!(s.current_revision(), rev, "{sync}");
        assert_eq!(keys(&s), state, "{sync}");
        assert_eq!(all_changes(&s, &Selector::All, 1), log, "{sync}");
        assert_eq!(s.earliest_revision(), 1);
        assert_eq!(s.put(b"after", b"reopen").unwrap(), rev + 1);
        let st = s.status().unwrap();
        assert_eq!(st["durable"], true);
        assert_eq!(st["sync"], sync);
        assert_eq!(st["segments"], 1);
        assert!(st["bytes_on_disk"].as_u64().unwrap() > 1000);
    }
}

#[test]
fn same_answers_as_memory_when_read_from_disk() {
    // No cache and tiny segments: every `changes` and catch-up reads segment files.
    let dir = tempfile::tempdir().unwrap();
    let opts = r#"{"sync":"none","segment_size":4096,"cache_bytes":0,"checkpoint_bytes":0}"#;
    let d = open(dir.path(), opts).unwrap();
    let m = Store::memory(None).unwrap();
    workload(&d, 400);
    workload(&m, 400);
    assert!(d.status().unwrap()["segments"].as_u64().unwrap() > 3);
    let sels = [
        Selector::All,
        Selector::Prefix(b"b".to_vec()),
        Selector::Key(b"k005".to_vec()),
        Selector::Range(b"k010".to_vec(), b"k020".to_vec()),
    ];
    let check = |d: &Store| {
        for sel in &sels {
            for from in [1, 2, 57, 200, d.current_revision(), d.current_revision() + 1] {
                for limit in [1, 3, 1000] {
                    assert_eq!(
                        d.changes(sel, from, 0, limit).unwrap(),
                        m.changes(sel, from, 0, limit).unwrap(),
                        "{sel:?} from {from} limit {limit}"
                    );
                }
                assert_eq!(
                    d.changes(sel, from, from + 10, 5).unwrap(),
                    m.changes(sel, from, from + 10, 5).unwrap()
                );
            }
        }
        assert_eq!(keys(d), keys(&m));
    };
    check(&d);
    // A pull watch replaying from revision 1 reads the log from disk in bounded steps.
    let w = d
        .watch_pull(Selector::All, &WatchOptions { start_revision: 1, max_queue: 10, ..Default::default() })
        .unwrap();
    let mut got = Vec::new();
    while got.len() < d.current_revision() as usize {
        got.extend(w.next(Duration::from_secs(10)).unwrap());
    }
    assert_eq!(got, all_changes(&m, &Selector::All, 1));
    drop(w);
    drop(d);
    let d = open(dir.path(), opts).unwrap();
    check(&d);
}

#[test]
fn group_commit_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path(), r#"{"sync":"always"}"#).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut revs = Vec::new();
                for i in 0..60 {
                    let key = format!("t{t}/{i}");
                    revs.push((s.put(key.as_bytes(), key.as_bytes()).unwrap(), key));
                    // A shared counter with compare-and-set: conflicts are evaluated in order.
                    loop {
                        let cur = s.get(b"counter").ok();
                        let (n, expect) = cur.map_or((0, 0), |e| {
                            (String::from_utf8_lossy(&e.value).parse::<u64>().unwrap(), e.mod_revision)
                        });
                        match s.put_if(b"counter", (n + 1).to_string().as_bytes(), expect) {
                            Ok(_) => break,
                            Err(Error::Conflict { .. }) => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                revs
            })
        })
        .collect();
    let mut revs: Vec<(u64, String)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    revs.sort();
    assert_eq!(revs.len(), 480);
    assert_eq!(s.get(b"counter").unwrap().value.as_ref(), b"480");
    assert_eq!(s.current_revision(), 960);
    let log = all_changes(&s, &Selector::All, 1);
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.revision, i as u64 + 1);
    }
    for (rev, key) in &revs {
        assert_eq!(log[*rev as usize - 1].key.as_ref(), key.as_bytes());
    }
    let state = keys(&s);
    drop(s);
    let s = open(dir.path(), "").unwrap();
    assert_eq!(keys(&s), state);
    assert_eq!(all_changes(&s, &Selector::All, 1), log);
}

#[test]
fn torn_tail_is_cut_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "").unwrap();
    workload(&s, 40);
    let before = (s.current_revision(), keys(&s), all_changes(&s, &Selector::All, 1));
    drop(s);
    let seg = segments(dir.path()).pop().unwrap();
    let l0 = data_end(&fs::read(&seg).unwrap());
    let s = open(dir.path(), "").unwrap();
    // The final record: one atomic batch of three writes.
    s.commit(&[Op::Put(b"last/a", b"1"), Op::Put(b"last/b", b"2"), Op::Delete(b"k002")]).unwrap();
    drop(s);
    let full = fs::read(&seg).unwrap();
    assert!(data_end(&full) > l0);
    for cut in l0..data_end(&full) {
        tear(&seg, &full, cut);
        let s = open(dir.path(), "").unwrap();
        assert_eq!(s.current_revision(), before.0, "cut at {cut}");
        assert_eq!(keys(&s), before.1, "cut at {cut}");
        assert_eq!(all_changes(&s, &Selector::All, 1), before.2, "cut at {cut}");
        // The cut is reported: one commit, from the revision after the kept log.
        let repair = s.tail_repair().unwrap();
        if cut > l0 {
            let r = repair.unwrap_or_else(|| panic!("cut at {cut} not reported"));
            assert_eq!((r.offset, r.commits, r.first_revision, r.cut), (l0 as u64, 1, before.0 + 1, true));
            assert!(r.bytes >= 1 && r.bytes <= (cut - l0) as u64, "cut at {cut}: {r:?}");
            assert!(r.revisions == 0 || r.revisions == 3, "cut at {cut}: {r:?}");
            assert_eq!(s.status().unwrap()["tail_repair"]["commits"], 1);
        } else {
            assert_eq!(repair, None);
        }
        drop(s);
        let after = fs::read(&seg).unwrap();
        assert_eq!(after.len(), full.len(), "the file keeps whole blocks");
        assert_eq!(data_end(&after), l0, "the tail was cut (zeroed)");
    }
    // The cut store takes new writes where it left off, and they survive a reopen.
    let s = open(dir.path(), "").unwrap();
    assert_eq!(s.tail_repair().unwrap(), None, "nothing more to cut");
    assert_eq!(s.put(b"new", b"v").unwrap(), before.0 + 1);
    drop(s);
    let s = open(dir.path(), "").unwrap();
    assert_eq!(s.get(b"new").unwrap().mod_revision, before.0 + 1);
    // Zeros past the last record (a block the OS had already grown) are the clean end.
    drop(s);
    let mut bytes = fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    fs::write(&seg, &bytes).unwrap();
    let s = open(dir.path(), "").unwrap();
    assert_eq!(s.current_revision(), before.0 + 1);
    assert_eq!(s.tail_repair().unwrap(), None);
}

#[test]
fn corruption_before_the_tail_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = r#"{"sync":"none","segment_size":4096,"checkpoint_bytes":0}"#;
    let s = open(dir.path(), opts).unwrap();
    workload(&s, 400);
    drop(s);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    // A byte flipped in the middle of an old segment.
    let mut bytes = fs::read(&segs[1]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&segs[1], &bytes).unwrap();
    let files = snapshot(dir.path());
    for _ in 0..2 {
        match open(dir.path(), opts) {
            Err(Error::Corrupt(m)) => {
                assert!(m.contains(&segs[1].file_name().unwrap().to_string_lossy().into_owned()), "{m}");
                assert!(m.contains("byte"), "{m}");
            }
            Ok(_) => panic!("opened a corrupt store"),
            Err(e) => panic!("{e}"),
        }
        assert_eq!(snapshot(dir.path()), files, "nothing overwritten");
    }
    // Also read-only.
    assert!(matches!(open(dir.path(), r#"{"read_only":true}"#), Err(Error::Corrupt(_))));
    bytes[mid] ^= 0x40;
    fs::write(&segs[1], &bytes).unwrap();
    open(dir.path(), opts).unwrap();
}

#[test]
fn damage_in_the_last_segment_depends_on_how_it_was_synced() {
    for sync in ["always", "none"] {
        let dir = tempfile::tempdir().unwrap();
        let opts = format!(r#"{{"sync":"{sync}","checkpoint_bytes":0}}"#);
        let s = open(dir.path(), &opts).unwrap();
        for i in 0..50u32 {
            s.put(format!("k{i}").as_bytes(), b"some value").unwrap();
        }
        drop(s);
        let last = segments(dir.path()).pop().unwrap();
        let mut bytes = fs::read(&last).unwrap();
        let at = data_end(&bytes) / 2;
        bytes[at] ^= 0x01;
        fs::write(&last, &bytes).unwrap();
        let files = snapshot(dir.path());
        let reopened = open(dir.path(), &opts);
        if sync == "always" {
            // Everything in it was synced before later records were written: corruption.
            assert!(matches!(reopened, Err(Error::Corrupt(_))), "{sync}");
            assert_eq!(snapshot(dir.path()), files, "nothing overwritten");
        } else {
            // Unsynced writes may reach the disk out of order before a power loss: the log
            // is cut at the first damage, to a gap-free prefix.
            let s = reopened.unwrap();
            let rev = s.current_revision();
            assert!(rev > 0 && rev < 50, "{rev}");
            assert_eq!(all_changes(&s, &Selector::All, 1).len() as u64, rev);
            assert_eq!(s.put(b"next", b"v").unwrap(), rev + 1);
        }
    }
}

/// With `sync: "always"` a segment grows a MiB ahead of its records, in zeros actually
/// written (allocated, not a hole), bounded by the segment size; other policies grow it a
/// block at a time. Either way the file is whole blocks and reopens to the same log.
#[test]
fn a_synced_segment_grows_ahead_in_written_zeros() {
    use std::os::unix::fs::MetadataExt;
    const MIB: u64 = 1 << 20;
    for (opts, grown) in [
        (r#"{"sync":"always"}"#, Some(MIB)),
        (r#"{"sync":"always","segment_size":65536}"#, Some(65536)),
        (r#"{"sync":"none"}"#, None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), opts).unwrap();
        let value = [b'v'; 100];
        for i in 0..60u32 {
            s.put(format!("k{i}").as_bytes(), &value).unwrap();
        }
        let seg = segments(dir.path()).pop().unwrap();
        let meta = fs::metadata(&seg).unwrap();
        let data = data_end(&fs::read(&seg).unwrap()) as u64;
        assert!(data > 4096, "{opts}: the records cross a block ({data} bytes)");
        assert_eq!(meta.len() % 4096, 0, "{opts}: whole blocks");
        match grown {
            Some(ahead) => {
                assert!(
                    meta.len() >= ahead.min(data + MIB) && meta.len() <= data + MIB + 8192,
                    "{opts}: {}",
                    meta.len()
                );
                assert!(meta.blocks() * 512 >= meta.len(), "{opts}: the zeros are written, not a hole");
            }
            None => assert!(meta.len() <= data.div_ceil(4096) * 4096 + 4096, "{opts}: {}", meta.len()),
        }
        drop(s);
        let s = open(dir.path(), opts).unwrap();
        assert_eq!((s.current_revision(), s.tail_repair().unwrap()), (60, None), "{opts}");
        assert_eq!(s.put(b"after", b"reopen").unwrap(), 61);
    }
}

#[test]
fn changing_the_sync_policy_starts_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), r#"{"sync":"none"}"#).unwrap();
    s.put(b"a", b"1").unwrap();
    drop(s);
    let s = open(dir.path(), r#"{"sync":"always"}"#).unwrap();
    assert_eq!(s.status().unwrap()["segments"], 2);
    s.put(b"b", b"2").unwrap();
    drop(s);
    let s = open(dir.path(), r#"{"sync":"none"}"#).unwrap();
    assert_eq!(s.status().unwrap()["segments"], 3);
    assert_eq!(s.current_revision(), 2);
}

#[test]
fn compaction_checkpoint_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = r#"{"sync":"none","segment_size":4096,"checkpoint_bytes":0}"#;
    let s = open(dir.path(), opts).unwrap();
    for i in 0..3000u32 {
        s.put(format!("key{}", i % 20).as_bytes(), format!("value-{i}-{}", "v".repeat(40)).as_bytes())
            .unwrap();
    }
    s.delete(b"key7").unwrap();
    let big = s.status().unwrap();
    let keep = s.current_revision() - 100;
    assert_eq!(s.compact(keep).unwrap(), keep - 1);
    let small = s.status().unwrap();
    assert!(
        small["bytes_on_disk"].as_u64().unwrap() * 5 < big["bytes_on_disk"].as_u64().unwrap(),
        "{big} -> {small}"
    );
    assert!(small["segments"].as_u64().unwrap() < big["segments"].as_u64().unwrap());
    assert_eq!(small["last_checkpoint_revision"], s.current_revision());
    let state = (s.current_revision(), keys(&s), all_changes(&s, &Selector::All, keep));
    assert!(
        matches!(s.changes(&Selector::All, keep - 1, 0, 10), Err(Error::Compacted { earliest, .. }) if earliest == keep)
    );
    drop(s);
    let s = open(dir.path(), opts).unwrap();
    assert_eq!(s.earliest_revision(), keep);
    assert_eq!((s.current_revision(), keys(&s), all_changes(&s, &Selector::All, keep)), state);
    assert!(matches!(s.changes(&Selector::All, 1, 0, 10), Err(Error::Compacted { .. })));
    assert_eq!(s.put(b"more", b"x").unwrap(), state.0 + 1);
    // Everything compacted: the log restarts from the checkpoint alone.
    let cur = s.current_revision();
    s.compact(cur + 1).unwrap();
    assert_eq!(s.status().unwrap()["segments"], 1);
    let state = keys(&s);
    drop(s);
    let s = open(dir.path(), opts).unwrap();
    assert_eq!(s.earliest_revision(), cur + 1);
    assert_eq!(s.current_revision(), cur);
    assert_eq!(keys(&s), state);
    assert_eq!(s.put(b"after", b"all").unwrap(), cur + 1);
    assert_eq!(s.changes(&Selector::All, cur + 1, 0, 10).unwrap().events.len(), 1);
}

#[test]
fn automatic_checkpoints_bound_replay() {
    let dir = tempfile::tempdir().unwrap();
    let opts = r#"{"sync":"none","segment_size":4096,"checkpoint_bytes":8192}"#;
    let s = open(dir.path(), opts).unwrap();
    workload(&s, 1000);
    let st = s.status().unwrap();
    let ck = st["last_checkpoint_revision"].as_u64().unwrap();
    assert!(ck > 0, "{st}");
    let state = (s.current_revision(), keys(&s), all_changes(&s, &Selector::All, 1));
    drop(s);
    let s = open(dir.path(), opts).unwrap();
    assert_eq!((s.current_revision(), keys(&s), all_changes(&s, &Selector::All, 1)), state);
    assert_eq!(s.status().unwrap()["last_checkpoint_revision"], ck);
    // Only the log after the checkpoint is held in memory after reopening.
    assert!(s.status().unwrap()["cached_events"].as_u64().unwrap() <= state.0 - ck);
}

#[test]
fn locked_directory_in_this_process() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "").unwrap();
    match open(dir.path(), "") {
        Err(Error::Locked(m)) => assert!(m.contains(&dir.path().display().to_string()), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(matches!(open(dir.path(), r#"{"read_only":true}"#), Err(Error::Locked(_))));
    s.put(b"a", b"1").unwrap();
    s.close();
    let s2 = open(dir.path(), "").unwrap();
    assert_eq!(s2.get(b"a").unwrap().value.as_ref(), b"1");
    drop(s);
}

/// The child half of `locked_directory_from_another_process`.
#[test]
fn lock_child() {
    let Ok(dir) = std::env::var("TIDEMARK_LOCK_CHILD") else { return };
    match open(Path::new(&dir), "") {
        Err(Error::Locked(m)) => println!("RESULT LOCKED {m}"),
        Err(e) => println!("RESULT ERROR {e}"),
        Ok(_) => println!("RESULT OPENED"),
    }
}

#[test]
fn locked_directory_from_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let child = |dir: &Path| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["lock_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("TIDEMARK_LOCK_CHILD", dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find_map(|l| l.find("RESULT ").map(|i| l[i + 7..].to_string())).unwrap_or(text)
    };
    let s = open(dir.path(), "").unwrap();
    let r = child(dir.path());
    assert!(r.starts_with("LOCKED") && r.contains(&dir.path().display().to_string()), "{r}");
    drop(s);
    assert_eq!(child(dir.path()), "OPENED");
}

#[test]
fn read_only_open() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert!(matches!(open(&missing, r#"{"read_only":true}"#), Err(Error::NotFound(_))));
    assert!(!missing.exists(), "a read-only open creates nothing");
    let s = open(dir.path(), "").unwrap();
    workload(&s, 50);
    let state = (s.current_revision(), keys(&s), all_changes(&s, &Selector::All, 1));
    drop(s);
    let files = snapshot(dir.path());
    let r1 = open(dir.path(), r#"{"read_only":true}"#).unwrap();
    let r2 = open(dir.path(), r#"{"read_only":true}"#).unwrap();
    assert!(matches!(open(dir.path(), ""), Err(Error::Locked(_))));
    for r in [&r1, &r2] {
        assert_eq!((r.current_revision(), keys(r), all_changes(r, &Selector::All, 1)), state);
        assert!(matches!(r.put(b"x", b"y"), Err(Error::InvalidArgument(_))));
        assert!(matches!(r.compact(3), Err(Error::InvalidArgument(_))));
        assert_eq!(r.status().unwrap()["read_only"], true);
    }
    assert_eq!(r1.current_revision(), state.0);
    drop((r1, r2));
    assert_eq!(snapshot(dir.path()), files);
    // A torn tail is ignored by a read-only open, not cut.
    let seg = segments(dir.path()).pop().unwrap();
    let bytes = fs::read(&seg).unwrap();
    tear(&seg, &bytes, data_end(&bytes) - 3);
    let files = snapshot(dir.path());
    let r = open(dir.path(), r#"{"read_only":true}"#).unwrap();
    assert!(r.current_revision() < state.0);
    let repair = r.tail_repair().unwrap().expect("reported");
    assert!(!repair.cut, "a read-only open only ignores it");
    drop(r);
    assert_eq!(snapshot(dir.path()), files);
    assert!(matches!(Store::open(None, Some(r#"{"read_only":true}"#)), Err(Error::InvalidArgument(_))));
}

#[test]
fn bad_paths_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    fs::write(&file, b"hello").unwrap();
    match open(&file, "") {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("not a directory"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(fs::read(&file).unwrap(), b"hello");
    assert!(matches!(open(&file.join("sub"), ""), Err(Error::Io(_) | Error::InvalidArgument(_))));
    // A directory holding something else is not taken over.
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("data.txt"), b"mine").unwrap();
    match open(&other, "") {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("not empty"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(fs::read(other.join("data.txt")).unwrap(), b"mine");
    // A store written by a newer release.
    let newer = dir.path().join("newer");
    drop(open(&newer, "").unwrap());
    fs::write(newer.join("TIDEMARK"), "tidemark store\nformat 99\n").unwrap();
    match open(&newer, "") {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("format 99"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Options with bad values.
    for bad in [r#"{"sync":"sometimes"}"#, r#"{"segment_size":1}"#, r#"{"sync_interval_ms":10}"#] {
        assert!(matches!(open(&dir.path().join("x"), bad), Err(Error::InvalidArgument(_))), "{bad}");
    }
    // Created when missing, parents included.
    let deep = dir.path().join("a/b/c");
    open(&deep, "").unwrap().put(b"k", b"v").unwrap();
    assert!(deep.join("TIDEMARK").exists());
}

#[test]
fn too_large_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = r#"{"max_key_size":16,"max_value_size":100}"#;
    let s = open(dir.path(), opts).unwrap();
    s.put(b"ok", b"fine").unwrap();
    let bytes = s.status().unwrap()["bytes_on_disk"].clone();
    assert!(matches!(s.put(&[b'k'; 17], b"v"), Err(Error::TooLarge(_))));
    assert!(matches!(s.put(b"k", &[0u8; 101]), Err(Error::TooLarge(_))));
    assert!(matches!(s.commit(&[Op::Put(b"a", b"1"), Op::Put(b"b", &[0u8; 101])]), Err(Error::TooLarge(_))));
    assert_eq!(s.status().unwrap()["bytes_on_disk"], bytes);
    assert_eq!(s.current_revision(), 1);
    assert_eq!(s.put(b"k", &[0u8; 100]).unwrap(), 2);
    drop(s);
    let s = open(dir.path(), opts).unwrap();
    assert_eq!(s.current_revision(), 2);
    assert!(s.get(b"a").is_err());
}

#[test]
fn watches_see_only_durable_commits_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path(), r#"{"sync":"always"}"#).unwrap());
    let w = s.watch_pull(Selector::Prefix(b"w".to_vec()), &WatchOptions::default()).unwrap();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let k = format!("w{t}/{i}");
                    s.commit(&[Op::Put(k.as_bytes(), b"1"), Op::Put(format!("{k}/2").as_bytes(), b"2")])
                        .unwrap();
                }
            })
        })
        .collect();
    for t in writers {
        t.join().unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 200 {
        got.extend(w.next(Duration::from_secs(10)).unwrap());
    }
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.revision, i as u64 + 1);
        assert_eq!(e.commit_end, i % 2 == 1 || e.commit_end);
    }
}

#[test]
fn c_api_opens_a_directory() {
    use std::ffi::{CStr, CString};
    use tidemark::ffi::*;
    let dir = tempfile::tempdir().unwrap();
    let path = CString::new(dir.path().to_str().unwrap()).unwrap();
    let opts = CString::new(r#"{"sync":"always"}"#).unwrap();
    unsafe {
        let mut store = std::ptr::null_mut();
        assert_eq!(tidemark_store_open(path.as_ptr(), opts.as_ptr(), &mut store) as u32, 0);
        let mut rev = 0u64;
        assert_eq!(tidemark_store_put(store, b"k".as_ptr(), 1, b"v".as_ptr(), 1, &mut rev) as u32, 0);
        let mut second = std::ptr::null_mut();
        assert_eq!(tidemark_store_open(path.as_ptr(), opts.as_ptr(), &mut second) as u32, 11, "LOCKED");
        let mut json = std::ptr::null_mut();
        assert_eq!(tidemark_store_status_json(store, &mut json) as u32, 0);
        let status: serde_json::Value = serde_json::from_str(CStr::from_ptr(json).to_str().unwrap()).unwrap();
        tidemark_string_free(json);
        assert_eq!(status["durable"], true);
        assert_eq!(status["sync"], "always");
        assert_eq!(status["revision"], 1);
        tidemark_store_close(store);
        assert_eq!(tidemark_store_open(path.as_ptr(), std::ptr::null(), &mut store) as u32, 0);
        assert_eq!(tidemark_store_current_revision(store), 1);
        tidemark_store_close(store);
    }
}
