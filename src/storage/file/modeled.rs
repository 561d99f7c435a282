//! Group commit on a modeled disk: the real file system (put it on tmpfs) with every sync
//! taking a fixed time, so the group-commit ratios can be measured without the noise of a
//! disk other jobs share. A benchmark, not a test (it asserts nothing about time):
//! `TIDEMARK_MODELED_DIR=/dev/shm cargo test --release --lib modeled -- --ignored --nocapture`
//! (`TIDEMARK_MODELED_SYNC_US`, default 190: this machine's quiet-disk `fdatasync`).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fs::{Fs, FsFile, Lock, Mode, RealFs};
use crate::store::Store;

struct SlowSync {
    latency: Duration,
}

struct SlowFile {
    file: Arc<dyn FsFile>,
    latency: Duration,
}

impl FsFile for SlowFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        self.file.read_at(buf, off)
    }
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.file.write_all_at(buf, off)
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync()?;
        std::thread::sleep(self.latency);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
}

impl Fs for SlowSync {
    fn kind(&self, path: &Path) -> io::Result<Option<bool>> {
        RealFs.kind(path)
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        RealFs.create_dir(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        RealFs.list(dir)
    }
    fn open(&self, path: &Path, mode: Mode) -> io::Result<Arc<dyn FsFile>> {
        Ok(Arc::new(SlowFile { file: RealFs.open(path, mode)?, latency: self.latency }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }
    fn lock(&self, dir: &Path, shared: bool) -> io::Result<Lock> {
        RealFs.lock(dir, shared)
    }
}

/// Durable puts per second from `threads` writers for `dur` (16-byte keys, 100-byte values).
fn rate(fs: &Arc<SlowSync>, threads: usize, dur: Duration) -> f64 {
    let base = std::env::var("TIDEMARK_MODELED_DIR").unwrap_or_else(|_| "/dev/shm".into());
    let dir = tempfile::tempdir_in(base).unwrap();
    let s = Store::open_dir(fs.clone(), dir.path().to_str().unwrap(), Some(r#"{"sync":"always"}"#)).unwrap();
    let (stop, total) = (AtomicBool::new(false), AtomicU64::new(0));
    let start = Instant::now();
    std::thread::scope(|sc| {
        for t in 0..threads {
            let (s, stop, total) = (&s, &stop, &total);
            sc.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = format!("key-{:012}", (t as u64 * 7919 + i * 2654435761) % 100_000);
                    s.put(k.as_bytes(), &[b'v'; 100]).unwrap();
                    i += 1;
                }
                total.fetch_add(i, Ordering::Relaxed);
            });
        }
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
    });
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn modeled_disk_group_commit() {
    let us = std::env::var("TIDEMARK_MODELED_SYNC_US").ok().and_then(|v| v.parse().ok()).unwrap_or(190);
    let fs = Arc::new(SlowSync { latency: Duration::from_micros(us) });
    let reps = 5;
    let dur = Duration::from_millis(1500);
    let mut ratios: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut ones = Vec::new();
    for rep in 0..reps {
        let one = rate(&fs, 1, dur);
        let w8 = rate(&fs, 8, dur);
        let w64 = rate(&fs, 64, dur);
        println!("run {rep}: 1 writer {one:.0}/s, 8 writers {w8:.0}/s, 64 writers {w64:.0}/s");
        ones.push(one);
        ratios[0].push(w8 / (8.0 * one));
        ratios[1].push(w64 / (64.0 * one));
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (o, olo, ohi) = med(&mut ones);
    println!("modeled sync {us} µs: 1 writer {o:.0}/s ({olo:.0}–{ohi:.0}), median of {reps}");
    for (w, r) in [8, 64].iter().zip(ratios.iter_mut()) {
        let (m, lo, hi) = med(r);
        println!("W = {w}: {m:.2} × W × one writer ({lo:.2}–{hi:.2})");
    }
}
