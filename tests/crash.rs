//! Crash safety: a child process (this test binary, re-executed) writes with
//! `"sync": "always"` and prints every acknowledged write; the parent SIGKILLs it at a
//! random moment (deterministic seed), reopens the store and checks that every acknowledged
//! write is there, revisions are gap-free and batches are all or nothing. Also: a full disk.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tidemark::{Error, Op, Selector, Store};

const ROUNDS: u64 = 80;
const CHILD_OPTS: &str = r#"{"sync":"always","segment_size":16384,"checkpoint_bytes":32768}"#;

fn open(dir: &Path, opts: &str) -> tidemark::Result<Store> {
    Store::open(Some(dir.to_str().unwrap()), Some(opts))
}

/// splitmix64: the deterministic source of kill delays.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn spawn_child(test: &str, env: &[(&str, String)]) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// The child: writers that print each acknowledged write, and a compactor, until killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("TIDEMARK_CRASH_CHILD") else { return };
    let round: u64 = std::env::var("TIDEMARK_CRASH_ROUND").unwrap().parse().unwrap();
    let s = Arc::new(open(Path::new(&dir), CHILD_OPTS).unwrap());
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    println!("OPEN {}", s.current_revision());
    let mut threads = Vec::new();
    for t in 0..4u64 {
        let (s, out) = (s.clone(), out.clone());
        threads.push(std::thread::spawn(move || {
            for i in 0u64.. {
                let line = if i % 4 == 3 {
                    let id = format!("r{round}/b{t}/{i}");
                    let parts: Vec<String> = (0..3).map(|p| format!("{id}/{p}")).collect();
                    let ops: Vec<Op> = parts.iter().map(|k| Op::Put(k.as_bytes(), id.as_bytes())).collect();
                    let rev = s.commit(&ops).unwrap();
                    format!("B {rev} {id}")
                } else {
                    let key = format!("r{round}/p{t}/{i}");
                    let value = format!("value {key} {}", "x".repeat((i % 200) as usize));
                    let rev = s.put(key.as_bytes(), value.as_bytes()).unwrap();
                    format!("P {rev} {key}")
                };
                let mut o = out.lock().unwrap();
                writeln!(o, "{line}").unwrap();
                o.flush().unwrap();
            }
        }));
    }
    // Compaction (checkpoint + segment deletion) races with the writers and the kill.
    loop {
        std::thread::sleep(Duration::from_millis(7));
        let cur = s.current_revision();
        if cur > 100 {
            s.compact(cur - 100).unwrap();
        }
    }
}

#[test]
fn sigkill_never_loses_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut total_acked = 0usize;
    for round in 0..ROUNDS {
        let mut child = spawn_child(
            "crash_child",
            &[
                ("TIDEMARK_CRASH_CHILD", dir.path().display().to_string()),
                ("TIDEMARK_CRASH_ROUND", round.to_string()),
            ],
        );
        let stdout = child.stdout.take().unwrap();
        let (opened_tx, opened) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("OPEN ") {
                    let _ = opened_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        // Most rounds wait until the child has opened the store (it prints OPEN), however
        // slow the machine is, then kill it at a random moment of its writes; every fifth
        // round kills it at a random moment from its start, often while it creates or opens
        // the store. (The deterministic kill points of creation and recovery are in the
        // power-loss simulation, src/storage/file/power_loss.rs.)
        let delay = 2 + mix(0x5eed ^ round) % 150;
        if round % 5 != 0 {
            let _ = opened.recv_timeout(Duration::from_secs(120));
        }
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        if std::env::var("TIDEMARK_CRASH_VERBOSE").is_ok() {
            eprintln!("round {round}: killed after {delay} ms, {} lines", lines.len());
        }

        let s = open(dir.path(), r#"{"sync":"always"}"#).unwrap();
        let current = s.current_revision();
        let mut acked = 0;
        for line in &lines {
            let mut f = line.split(' ');
            let (kind, rev, key) = (f.next(), f.next(), f.next());
            let (Some(kind), Some(rev), Some(key)) = (kind, rev, key) else { continue };
            let Ok(rev) = rev.parse::<u64>() else { continue };
            match kind {
                "P" => {
                    let e = s
                        .get(key.as_bytes())
                        .unwrap_or_else(|e| panic!("round {round}: acknowledged {key} lost: {e}"));
                    assert_eq!(e.mod_revision, rev, "round {round}: {key}");
                    assert!(e.value.starts_with(format!("value {key} ").as_bytes()));
                }
                "B" => {
                    for p in 0..3 {
                        let e = s.get(format!("{key}/{p}").as_bytes()).unwrap_or_else(|e| {
                            panic!("round {round}: acknowledged batch {key} part {p} lost: {e}")
                        });
                        assert_eq!(e.mod_revision, rev + p, "round {round}: {key}/{p}");
                    }
                }
                _ => continue,
            }
            assert!(rev <= current, "round {round}: acknowledged revision {rev} beyond {current}");
            acked += 1;
        }
        total_acked += acked;

        // Every batch in the store (acknowledged or not) is whole, at consecutive revisions.
        let mut batches: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let (all, _) = s.range(&Selector::All, 0).unwrap();
        for e in &all {
            let key = String::from_utf8_lossy(&e.key).into_owned();
            if key.contains("/b") {
                let id = key.rsplit_once('/').unwrap().0.to_string();
                assert_eq!(e.value.as_ref(), id.as_bytes());
                batches.entry(id).or_default().push(e.revision);
            }
        }
        for (id, mut revs) in batches {
            revs.sort();
            assert_eq!(revs.len(), 3, "round {round}: batch {id} is partial: {revs:?}");
            assert!(
                revs[1] == revs[0] + 1 && revs[2] == revs[0] + 2,
                "round {round}: batch {id} split: {revs:?}"
            );
        }
        // The retained log is gap-free up to the current revision.
        let mut expect = s.earliest_revision();
        let mut from = expect;
        loop {
            let c = s.changes(&Selector::All, from, 0, 10_000).unwrap();
            for e in &c.events {
                assert_eq!(e.revision, expect, "round {round}: gap in the log");
                expect += 1;
            }
            if !c.has_more {
                break;
            }
            from = c.next_revision;
        }
        assert_eq!(expect, current + 1, "round {round}");
        drop(s);
    }
    eprintln!("crash harness: {ROUNDS} rounds, {total_acked} acknowledged writes checked");
    assert!(
        total_acked > ROUNDS as usize,
        "the children acknowledged too little to test anything: {total_acked}"
    );
}

/// The child: a store in a process whose files may not grow past a limit, like a full disk.
#[test]
fn disk_full_child() {
    let Ok(dir) = std::env::var("TIDEMARK_FULL_CHILD") else { return };
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit { rlim_cur: 64 * 1024, rlim_max: libc::RLIM_INFINITY };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let s = open(Path::new(&dir), r#"{"sync":"always","checkpoint_bytes":0}"#).unwrap();
    let value = vec![b'v'; 1000];
    let mut acked = 0u64;
    let err = loop {
        match s.put(format!("k{acked}").as_bytes(), &value) {
            Ok(rev) => {
                assert_eq!(rev, acked + 1);
                acked += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Io(_)), "{err}");
    // Still readable, still refusing cleanly, and a small write may still fit.
    assert_eq!(s.get(b"k0").unwrap().value.as_ref(), &value[..]);
    assert!(matches!(s.put(b"big", &value), Err(Error::Io(_))));
    assert_eq!(s.current_revision(), acked);
    println!("RESULT {acked} {err}");
}

#[test]
fn full_disk_is_an_io_error_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_child("disk_full_child", &[("TIDEMARK_FULL_CHILD", dir.path().display().to_string())]);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line =
        text.lines().find_map(|l| l.find("RESULT ").map(|i| &l[i + 7..])).unwrap_or_else(|| panic!("{text}"));
    let (n, msg) = line.split_once(' ').unwrap();
    let acked: u64 = n.parse().unwrap();
    assert!(acked > 10, "{line}");
    assert!(msg.contains("I/O error"), "{msg}");
    assert!(msg.contains("large") || msg.contains("space"), "the OS message is kept: {msg}");
    let s = open(dir.path(), "").unwrap();
    assert_eq!(s.current_revision(), acked);
    for i in 0..acked {
        assert!(s.get(format!("k{i}").as_bytes()).is_ok());
    }
    assert_eq!(s.put(b"after", b"x").unwrap(), acked + 1);
}
