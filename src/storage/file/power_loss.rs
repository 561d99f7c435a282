//! Process crashes and power losses at every cut point of a workload, on the simulated disk
//! (`sim`): the workload of the kill -9 harness (tests/crash.rs: puts and 3-key batches from
//! several writers, compaction racing them, checkpoints and segment rolls from small limits),
//! run once to count its file-system calls, then again once per call with the machine
//! stopped at that call. After each stop the disk is rebooted (everything written kept, or
//! only what was synced plus a random, possibly torn, part of the rest), recovery itself is
//! cut at a few calls and rebooted again, and the store must open cleanly with nothing
//! acknowledged lost, no partial batch and a gap-free log. `make test` prints the tally.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::sim::{Crash, SimFs};
use crate::op::Op;
use crate::selector::Selector;
use crate::store::Store;

const DIR: &str = "/data/store";
const ALWAYS: &str = r#"{"sync":"always","segment_size":4096,"checkpoint_bytes":6000,"cache_bytes":3000}"#;
/// Segments larger than a write group, so that `"always"` grows them ahead in written zeros.
const AHEAD: &str = r#"{"sync":"always","segment_size":65536,"checkpoint_bytes":6000,"cache_bytes":3000}"#;
const NONE: &str = r#"{"sync":"none","segment_size":4096,"checkpoint_bytes":6000,"cache_bytes":3000}"#;

#[derive(Default)]
struct Run {
    puts: Vec<(String, u64)>,
    batches: Vec<(String, u64)>,
    /// What the workload was doing (for the tally of where the cuts fell).
    phase: &'static str,
}

fn open(fs: &SimFs, opts: &str) -> crate::error::Result<Store> {
    Store::open_dir(Arc::new(fs.clone()), DIR, Some(opts))
}

/// Two sessions (creation, then a clean close and recovery) of writers; stops at the first
/// failure (the machine stopped).
fn workload(fs: &SimFs, opts: &str, writers: usize, run: &Arc<Mutex<Run>>) {
    for session in 0..2 {
        run.lock().unwrap().phase = if session == 0 { "creation" } else { "recovery" };
        let s = match open(fs, opts) {
            Ok(s) => s,
            Err(e) => {
                assert!(fs.stopped_at().is_some(), "session {session} does not open: {e}");
                return;
            }
        };
        run.lock().unwrap().phase = "writes";
        let s = Arc::new(s);
        let threads: Vec<_> = (0..writers)
            .map(|t| {
                let (s, run, fs) = (s.clone(), run.clone(), fs.clone());
                std::thread::spawn(move || {
                    for i in 0..30u64 {
                        let id = format!("s{session}/t{t}/{i}");
                        if i % 4 == 3 {
                            let parts: Vec<String> = (0..3).map(|p| format!("{id}/{p}")).collect();
                            let ops: Vec<Op> =
                                parts.iter().map(|k| Op::Put(k.as_bytes(), id.as_bytes())).collect();
                            match s.commit(&ops) {
                                Ok(rev) => run.lock().unwrap().batches.push((id, rev)),
                                Err(e) => return assert!(fs.stopped_at().is_some(), "{e}"),
                            }
                        } else {
                            let value = format!("{id} {}", "x".repeat((i * 37 % 300) as usize));
                            match s.put(id.as_bytes(), value.as_bytes()) {
                                Ok(rev) => run.lock().unwrap().puts.push((id, rev)),
                                Err(e) => return assert!(fs.stopped_at().is_some(), "{e}"),
                            }
                        }
                        if t == 0 && i % 12 == 11 {
                            let cur = s.current_revision();
                            run.lock().unwrap().phase = "compaction";
                            if let Err(e) = s.compact(cur.saturating_sub(40)) {
                                return assert!(fs.stopped_at().is_some(), "{e}");
                            }
                            run.lock().unwrap().phase = "writes";
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        if fs.stopped_at().is_some() {
            return;
        }
        run.lock().unwrap().phase = "close";
        drop(s);
    }
}

/// Opens the rebooted store and checks it against what was acknowledged (`check_acked`:
/// only under "always" is every acknowledged write promised after a power loss).
fn verify(fs: &SimFs, opts: &str, run: &Run, check_acked: bool) -> Result<(), String> {
    let s = open(fs, opts).map_err(|e| format!("does not open: {e}"))?;
    let current = s.current_revision();
    if check_acked {
        for (key, rev) in &run.puts {
            let e = s.get(key.as_bytes()).map_err(|e| format!("acknowledged {key} lost: {e}"))?;
            if e.mod_revision != *rev || !e.value.starts_with(key.as_bytes()) {
                return Err(format!("{key}: revision {} (acknowledged {rev})", e.mod_revision));
            }
        }
        for (id, rev) in &run.batches {
            for p in 0..3 {
                let e = s
                    .get(format!("{id}/{p}").as_bytes())
                    .map_err(|e| format!("acknowledged batch {id} lost: {e}"))?;
                if e.mod_revision != rev + p {
                    return Err(format!("batch {id}/{p}: revision {}", e.mod_revision));
                }
            }
        }
        let max = run.puts.iter().chain(&run.batches).map(|a| a.1).max().unwrap_or(0);
        if max > current {
            return Err(format!("acknowledged revision {max} beyond the current {current}"));
        }
    }
    // Every batch in the store is whole, at consecutive revisions.
    let (all, _) = s.range(&Selector::All, 0).map_err(|e| e.to_string())?;
    let mut batches: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &all {
        let key = String::from_utf8_lossy(&e.key).into_owned();
        if key.matches('/').count() == 3 {
            batches.entry(key.rsplit_once('/').unwrap().0.to_string()).or_default().push(e.revision);
        }
    }
    for (id, mut revs) in batches {
        revs.sort();
        if revs.len() != 3 || revs[2] != revs[0] + 2 {
            return Err(format!("batch {id} is partial or split: {revs:?}"));
        }
    }
    // The retained log is gap-free up to the current revision.
    let mut expect = s.earliest_revision();
    let mut from = expect;
    loop {
        let c = s.changes(&Selector::All, from, 0, 1000).map_err(|e| format!("changes: {e}"))?;
        for e in &c.events {
            if e.revision != expect {
                return Err(format!("gap in the log at {expect}"));
            }
            expect += 1;
        }
        if !c.has_more {
            break;
        }
        from = c.next_revision;
    }
    if expect != current + 1 {
        return Err(format!("the log ends at {} but the store is at {current}", expect - 1));
    }
    // And it takes new writes.
    let rev = s.put(b"after", b"x").map_err(|e| format!("write after reopen: {e}"))?;
    if rev != current + 1 {
        return Err(format!("write after reopen got revision {rev}, not {}", current + 1));
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    cuts: u64,
    recovery_cuts: u64,
    acked: u64,
    failures: Vec<String>,
    by_phase: BTreeMap<String, u64>,
    by_crash: BTreeMap<String, u64>,
}

/// One round: the workload stopped at call `cut`, a reboot after `crash`, recovery stopped
/// at its `recovery_cut`-th call and rebooted, then the checks.
fn round(tally: &mut Tally, opts: &str, writers: usize, cut: u64, crash: Crash, recovery_cut: u64) {
    let fs = SimFs::new();
    fs.cut_after(Some(cut));
    let run = Arc::new(Mutex::new(Run::default()));
    workload(&fs, opts, writers, &run);
    let Some(call) = fs.stopped_at() else { return };
    let run = Arc::try_unwrap(run).ok().unwrap().into_inner().unwrap();
    let phase = if call.contains("ckpt") && run.phase == "writes" {
        "checkpoint".to_string()
    } else if (call.contains("seg-") && call.contains(".tmp")) && run.phase == "writes" {
        "segment roll".to_string()
    } else {
        run.phase.to_string()
    };
    tally.cuts += 1;
    tally.acked += (run.puts.len() + run.batches.len()) as u64;
    *tally.by_phase.entry(phase.clone()).or_default() += 1;
    *tally.by_crash.entry(format!("{crash:?}")).or_default() += 1;
    fs.reboot(crash, cut);
    fs.cut_after(Some(recovery_cut));
    drop(open(&fs, opts));
    if fs.stopped_at().is_some() {
        tally.recovery_cuts += 1;
    }
    fs.reboot(crash, cut ^ 0x5555);
    if let Err(why) = verify(&fs, opts, &run, opts == ALWAYS) {
        tally.failures.push(format!(
            "{crash:?} at call {cut} ({call}, {phase}; recovery cut at {recovery_cut}): {why}"
        ));
    }
}

#[test]
fn power_loss_at_every_cut_point() {
    let mut tally = Tally::default();
    for (opts, writers, crashes, stride) in [
        (ALWAYS, 1, &[Crash::Process, Crash::Power, Crash::PowerTorn][..], 1),
        (ALWAYS, 3, &[Crash::PowerTorn][..], 2),
        (AHEAD, 1, &[Crash::Power, Crash::PowerTorn][..], 2),
        (NONE, 1, &[Crash::PowerTorn][..], 3),
    ] {
        // The calls the whole workload makes when nothing stops it.
        let fs = SimFs::new();
        workload(&fs, opts, writers, &Arc::new(Mutex::new(Run::default())));
        let calls = fs.ops();
        assert!(calls > 100, "the workload makes too few calls to test anything: {calls}");
        for cut in (1..=calls).step_by(stride) {
            for &crash in crashes {
                round(&mut tally, opts, writers, cut, crash, 1 + cut % 7);
            }
        }
    }
    println!(
        "power loss: {} cut points ({} during recovery too), {} acknowledged writes checked; by phase {:?}; by crash {:?}; {} failures",
        tally.cuts,
        tally.recovery_cuts,
        tally.acked,
        tally.by_phase,
        tally.by_crash,
        tally.failures.len()
    );
    assert!(tally.cuts >= 300, "too few cut points: {}", tally.cuts);
    assert!(
        tally.failures.is_empty(),
        "{} failures, first ones:\n{}",
        tally.failures.len(),
        tally.failures[..tally.failures.len().min(15)].join("\n")
    );
}

/// A torn last commit is cut by recovery, and a machine that stops at any call of that repair
/// must leave a store that the next recovery opens, with everything before the torn commit.
/// (The cut once shortened the segment and grew it back: stopped between the two, it left a
/// segment of part of a block, which recovery refuses as cut by someone.)
#[test]
fn recovery_stopped_during_a_tail_repair() {
    use super::fs::{Fs, Mode};
    for crash in [Crash::Process, Crash::Power] {
        for recovery_cut in 1..=8 {
            let fs = SimFs::new();
            let s = open(&fs, ALWAYS).unwrap();
            for i in 0..5u64 {
                s.put(format!("k{i}").as_bytes(), b"value").unwrap();
            }
            drop(s);
            // Tear the last record: its last two bytes zeroed, so its checksum fails.
            let dir = std::path::Path::new(DIR);
            let mut segs: Vec<String> =
                fs.list(dir).unwrap().into_iter().filter(|n| n.starts_with("seg-")).collect();
            segs.sort();
            let seg = dir.join(segs.last().unwrap());
            let bytes = fs.read(&seg).unwrap();
            let end = bytes.iter().rposition(|&b| b != 0).unwrap();
            let f = fs.open(&seg, Mode::Write).unwrap();
            f.write_all_at(&[0, 0], end as u64 - 1).unwrap();
            f.sync().unwrap();
            drop(f);
            fs.cut_after(Some(recovery_cut));
            drop(open(&fs, ALWAYS));
            fs.reboot(crash, recovery_cut);
            let s = open(&fs, ALWAYS)
                .unwrap_or_else(|e| panic!("{crash:?}, recovery stopped at its call {recovery_cut}: {e}"));
            assert_eq!(s.current_revision(), 4, "{crash:?}, recovery stopped at its call {recovery_cut}");
            for i in 0..4u64 {
                assert_eq!(&*s.get(format!("k{i}").as_bytes()).unwrap().value, b"value");
            }
            assert_eq!(s.put(b"after", b"x").unwrap(), 5);
        }
    }
}
