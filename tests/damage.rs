//! Damaged stores are reported, never opened as a silently shorter or empty log (issue 20):
//! emptied, shortened and missing segments are CORRUPT naming the file and the revisions;
//! a torn tail is cut and reported (status JSON, CLI stderr) and `strict_recovery` refuses
//! more than one commit cut; read commands and read-only opens change nothing. The parent
//! directory's fsync at creation is checked by the power-loss simulation
//! (src/storage/file/power_loss.rs), which needs a disk that forgets.

use std::fs;
use std::path::Path;

use common::{cli, segments, snapshot};
use tidemark::{Error, Store};

mod common;

fn open(dir: &Path, opts: &str) -> tidemark::Result<Store> {
    Store::open(Some(dir.to_str().unwrap()), Some(opts))
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// A store of `n` puts (`k1`..), closed.
fn store_with(dir: &Path, opts: &str, n: u64) {
    let s = open(dir, opts).unwrap();
    for i in 1..=n {
        assert_eq!(
            s.put(format!("k{i}").as_bytes(), format!("value {i} {}", "v".repeat(20)).as_bytes()).unwrap(),
            i
        );
    }
}

fn corrupt(dir: &Path, opts: &str) -> String {
    match open(dir, opts) {
        Err(Error::Corrupt(m)) => m,
        Err(e) => panic!("not CORRUPT: {e}"),
        Ok(s) => panic!("opened, at revision {}", s.current_revision()),
    }
}

#[test]
fn emptied_cut_or_deleted_segments_are_corrupt() {
    // The issue's case: three puts, then the only segment emptied.
    for keep in [Some(0usize), Some(7), None] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        store_with(&dir, "{}", 1000);
        let seg = segments(&dir).pop().unwrap();
        match keep {
            Some(k) => {
                let b = fs::read(&seg).unwrap();
                fs::write(&seg, &b[..k]).unwrap();
            }
            None => fs::remove_file(&seg).unwrap(),
        }
        let files = snapshot(&dir);
        let m = corrupt(&dir, "{}");
        assert!(m.contains(&name(&seg)) || m.contains("no log segment"), "{m}");
        assert!(m.contains("revision"), "{m}");
        assert_eq!(snapshot(&dir), files, "a refused store is left as it was");
        let (code, out, err) = cli(&["status", "--store", dir.to_str().unwrap()]);
        assert_ne!(code, 0, "{out}");
        assert!(err.contains("corrupt"), "{err}");
        assert_eq!(snapshot(&dir), files);
    }
}

#[test]
fn a_missing_segment_is_corrupt_wherever_it_was() {
    let opts = r#"{"segment_size":4096,"checkpoint_bytes":0}"#;
    for which in ["first", "middle", "last"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        store_with(&dir, opts, 400);
        let segs = segments(&dir);
        assert!(segs.len() >= 4, "{}", segs.len());
        let gone = match which {
            "first" => &segs[0],
            "middle" => &segs[segs.len() / 2],
            _ => &segs[segs.len() - 1],
        };
        fs::remove_file(gone).unwrap();
        let m = corrupt(&dir, opts);
        assert!(m.contains("revision"), "{which}: {m}");
        assert!(m.contains("missing") || m.contains("starts at"), "{which}: {m}");
    }
}

#[test]
fn a_shortened_last_segment_is_not_a_torn_tail() {
    // Under "always", cutting 5000 bytes off the last segment loses ~150 acknowledged writes:
    // damage, not the torn last commit of a crash.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    store_with(&dir, r#"{"sync":"always"}"#, 1000);
    let seg = segments(&dir).pop().unwrap();
    let b = fs::read(&seg).unwrap();
    fs::write(&seg, &b[..b.len() - 5000]).unwrap();
    let m = corrupt(&dir, "{}");
    assert!(m.contains(&name(&seg)) && m.contains("cut after revision"), "{m}");
}

#[test]
fn tail_repairs_are_reported_and_strict_recovery_refuses_more_than_one_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    store_with(&dir, r#"{"sync":"none"}"#, 50);
    let seg = segments(&dir).pop().unwrap();
    let mut b = fs::read(&seg).unwrap();
    let end = b.iter().rposition(|&x| x != 0).unwrap() + 1;
    // A hole of zeros (an unsynced page lost) in the middle: every commit after it is cut.
    b[end / 2..end / 2 + 100].fill(0);
    fs::write(&seg, &b).unwrap();
    let files = snapshot(&dir);
    let m = corrupt(&dir, r#"{"sync":"none","strict_recovery":true}"#);
    assert!(m.contains("strict_recovery") && m.contains(&name(&seg)), "{m}");
    assert_eq!(snapshot(&dir), files, "a refused store is left as it was");
    // The CLI's read commands open read-only: they report the tail on stderr, cut nothing.
    let (code, out, err) = cli(&["status", "--store", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("torn tail") && err.contains("ignored"), "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["read_only"], true);
    let commits = status["tail_repair"]["commits"].as_u64().unwrap();
    assert!(commits > 1, "{status}");
    assert_eq!(status["tail_repair"]["cut"], false);
    assert_eq!(snapshot(&dir), files, "status changed the store");
    let (code, _, _) = cli(&["get", "--store", dir.to_str().unwrap(), "k1"]);
    assert_eq!(code, 0);
    assert_eq!(snapshot(&dir), files, "get changed the store");
    // A writable open cuts it and says so, once.
    let s = open(&dir, r#"{"sync":"none"}"#).unwrap();
    let r = s.tail_repair().unwrap().unwrap();
    assert!(r.cut && r.commits == commits && r.first_revision == s.current_revision() + 1, "{r:?}");
    assert!(r.revisions >= commits - 1, "{r:?}");
    assert_eq!(s.status().unwrap()["tail_repair"]["commits"], commits);
    drop(s);
    assert_eq!(open(&dir, "{}").unwrap().tail_repair().unwrap(), None);
}

#[test]
fn read_commands_and_refusals_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // A read command on a missing directory creates nothing.
    let missing = tmp.path().join("missing");
    let (code, _, err) = cli(&["get", "--store", missing.to_str().unwrap(), "k"]);
    assert_ne!(code, 0);
    assert!(err.contains("no store"), "{err}");
    assert!(!missing.exists(), "get created the directory");
    let (code, _, _) = cli(&["status", "--store", missing.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(!missing.exists());
    // Refusing a directory of unrelated files leaves no file behind (no LOCK).
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("notes.txt"), b"mine").unwrap();
    for opts in ["{}", r#"{"read_only":true}"#] {
        match open(&other, opts) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("notes.txt"), "{m}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert_eq!(snapshot(&other).into_keys().collect::<Vec<_>>(), ["notes.txt"]);
    }
    // A read-only open of a healthy store writes nothing either (no LOCK file).
    let dir = tmp.path().join("d");
    store_with(&dir, "{}", 3);
    let files = snapshot(&dir);
    let (code, out, _) = cli(&["get", "--store", dir.to_str().unwrap(), "k2"]);
    assert_eq!((code, out.trim_end()), (0, format!("value 2 {}", "v".repeat(20)).as_str()));
    assert_eq!(snapshot(&dir), files);
    assert!(!dir.join("LOCK").exists());
}

#[test]
fn leftovers_of_an_interrupted_creation_are_garbage() {
    // What a process killed at each step of creating a store leaves behind (issue 9): every
    // such directory opens as a new store; unrelated files are still refused.
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    drop(open(&full, "{}").unwrap());
    let seg1 = fs::read(full.join("seg-00000000000000000001.log")).unwrap();
    let leftovers: &[&[(&str, &[u8])]] = &[
        &[("TIDEMARK.tmp", b"tidemark st")],
        &[("seg-00000000000000000001.log.tmp", &seg1[..10])],
        &[("seg-00000000000000000001.log", &seg1)],
        &[("seg-00000000000000000001.log", &seg1), ("TIDEMARK.tmp", b"")],
        &[("LOCK", b"")],
    ];
    for (i, files) in leftovers.iter().enumerate() {
        let dir = tmp.path().join(format!("d{i}"));
        fs::create_dir(&dir).unwrap();
        for (n, b) in files.iter() {
            fs::write(dir.join(n), b).unwrap();
        }
        let s = open(&dir, "{}").unwrap_or_else(|e| panic!("{files:?}: {e}"));
        assert_eq!(s.put(b"k", b"v").unwrap(), 1);
        drop(s);
        assert!(
            !snapshot(&dir).keys().any(|n| n.ends_with(".tmp") || n == "LOCK"),
            "{:?}",
            snapshot(&dir).keys()
        );
    }
    // A first segment holding records without a manifest is not a leftover: CORRUPT.
    store_with(&tmp.path().join("rec"), "{}", 2);
    let rec = tmp.path().join("rec");
    fs::remove_file(rec.join("TIDEMARK")).unwrap();
    assert!(corrupt(&rec, "{}").contains("TIDEMARK file is missing"));
}

#[test]
fn an_old_segment_cut_at_a_record_boundary_is_corrupt_when_read() {
    // Segments wholly before the checkpoint are not replayed at open; reading them finds it.
    let opts = r#"{"segment_size":4096,"checkpoint_bytes":0}"#;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    store_with(&dir, opts, 400);
    open(&dir, opts).unwrap().compact(2).unwrap(); // a checkpoint at 400; the log stays
    let seg = segments(&dir)[1].clone();
    // Cut it after its first record: header (24) + one record.
    let b = fs::read(&seg).unwrap();
    let len = u32::from_le_bytes(b[24..28].try_into().unwrap()) as usize;
    fs::write(&seg, &b[..24 + 8 + len]).unwrap();
    let s = open(&dir, opts).unwrap();
    match s.changes(&tidemark::Selector::All, 2, 0, 10_000) {
        Err(Error::Corrupt(m)) => assert!(m.contains(&name(&seg)) && m.contains("lost"), "{m}"),
        other => panic!("{:?}", other.map(|c| c.events.len())),
    }
}
