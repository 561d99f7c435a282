//! Kill -9 during multi-event appends on a durable store: a child process (this test binary,
//! re-executed) appends batches of 1 to 5 events with `"sync": "always"` and prints every
//! acknowledged append; the parent kills it, reopens the store and checks that every append is
//! whole, every acknowledged one is there, and no stream has a gap.
//!
//! Its own test binary on purpose: while a forked child has not exec'd yet it shares the
//! parent's open files, and with them the `flock` on a store's LOCK file, so a test in the same
//! process that closes and reopens a store directory could see `Locked` in that window.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use tidemark::{Direction, ExpectedVersion, NewEvent, Store};

fn ev<'a>(event_type: &'a str, data: &'a [u8]) -> NewEvent<'a> {
    NewEvent { id: None, event_type: event_type.as_bytes(), data, metadata: b"" }
}

const CHILD_OPTS: &str = r#"{"sync":"always","segment_size":16384,"checkpoint_bytes":32768}"#;

/// The child: appenders that print each acknowledged append, until killed.
#[test]
fn streams_crash_child() {
    let Ok(dir) = std::env::var("TIDEMARK_STREAMS_CRASH_CHILD") else { return };
    let s = Arc::new(Store::open(Some(&dir), Some(CHILD_OPTS)).unwrap());
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    println!("OPEN");
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (s, out) = (s.clone(), out.clone());
            std::thread::spawn(move || {
                let stream = format!("s{t}");
                for i in 0u64.. {
                    let n = 1 + (i % 5) as usize;
                    let datas: Vec<String> = (0..n).map(|k| format!("{i}/{k}/{n}")).collect();
                    let evs: Vec<NewEvent> = datas.iter().map(|d| ev("t", d.as_bytes())).collect();
                    let a = s.append(stream.as_bytes(), &evs, ExpectedVersion::Any).unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "A {stream} {}", a.version).unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn kill_during_appends_keeps_each_append_whole() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..6u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["streams_crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("TIDEMARK_STREAMS_CRASH_CHILD", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked: BTreeMap<String, i64> = BTreeMap::new();
        let want = 20 + round * 37 % 60;
        let mut n = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("A ") {
                let (stream, v) = rest.split_once(' ').unwrap();
                acked.insert(stream.to_string(), v.parse().unwrap());
                n += 1;
                if n >= want {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        check_after_crash(dir.path(), &acked);
    }
}

fn check_after_crash(dir: &Path, acked: &BTreeMap<String, i64>) {
    let s = Store::open(Some(dir.to_str().unwrap()), None).unwrap();
    let (streams, _) = s.list_streams(b"", None, 0).unwrap();
    for (name, version) in streams {
        let name_s = String::from_utf8(name.clone()).unwrap();
        assert!(version >= acked.get(&name_s).copied().unwrap_or(-1), "acknowledged appends survive");
        let evs = s.read_stream(&name, Some(0), 0, Direction::Forward).unwrap();
        assert_eq!(evs.len() as i64, version + 1, "no gap");
        // Every append is whole: its events say "i/k/n" for k in 0..n, consecutively.
        let mut k_expected = 0;
        for e in &evs {
            let d = String::from_utf8(e.data().to_vec()).unwrap();
            let parts: Vec<u64> = d.split('/').map(|p| p.parse().unwrap()).collect();
            assert_eq!(parts[1], k_expected, "{name_s}: {d}");
            k_expected = if parts[1] + 1 == parts[2] { 0 } else { parts[1] + 1 };
        }
        assert_eq!(k_expected, 0, "{name_s}: the last append is whole");
    }
}
