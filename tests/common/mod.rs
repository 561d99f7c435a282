//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod redis;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidemark::{Event, EventKind, PullWatch, Selector, Store, WatchOptions};

/// The store a conformance test runs on (in memory, or in Redis: see `redis::open`).
pub fn store() -> Store {
    redis::open(None)
}

pub fn prefix(p: &str) -> Selector {
    Selector::Prefix(p.as_bytes().to_vec())
}

pub fn opts(start: u64, max_queue: usize) -> WatchOptions {
    WatchOptions { start_revision: start, max_queue, ..WatchOptions::default() }
}

/// Events a push watch received, shared with its callback.
#[derive(Clone, Default)]
pub struct Sink(pub Arc<Mutex<Vec<Event>>>);

impl Sink {
    pub fn callback(&self) -> tidemark::Callback {
        let sink = self.0.clone();
        Box::new(move |events: &[Event]| sink.lock().unwrap().extend_from_slice(events))
    }

    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (generously) until `pred` holds on what was received.
    pub fn wait_for(&self, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let evs = self.events();
            if pred(&evs) || Instant::now() > deadline {
                return evs;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Drains a pull watch until `n` key events arrived, a terminal notice came, or 30 s passed.
pub fn pull_until(w: &PullWatch, n: usize) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while keys(&out).len() < n && Instant::now() < deadline {
        match w.next(Duration::from_millis(200)) {
            Ok(evs) => {
                let terminal = evs.iter().any(|e| e.is_terminal());
                out.extend(evs);
                if terminal {
                    break;
                }
            }
            Err(tidemark::Error::Timeout) => {}
            Err(e) => panic!("watch failed: {e}"),
        }
    }
    out
}

/// Only the key events (PUT/DELETE) of a delivery sequence.
pub fn keys(events: &[Event]) -> Vec<&Event> {
    events.iter().filter(|e| matches!(e.kind, EventKind::Put | EventKind::Delete)).collect()
}

pub fn revisions(events: &[Event]) -> Vec<u64> {
    keys(events).iter().map(|e| e.revision).collect()
}

/// The segment files of a directory store, in order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    v.sort();
    v
}

/// Every file of a directory with its bytes, to check that nothing changed.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Runs the `tidemark` command: exit code, stdout, stderr.
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tidemark")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
