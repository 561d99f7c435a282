//! The background sync thread of `"sync": "interval"`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::fs::FsFile;
use super::FileLog;
use crate::options::SyncPolicy;

pub(super) struct FlushShared {
    pub(super) file: Mutex<Option<Arc<dyn FsFile>>>,
    pub(super) dirty: AtomicBool,
    pub(super) stop: Mutex<bool>,
    pub(super) cond: Condvar,
    pub(super) error: Mutex<Option<String>>,
}

impl FileLog {
    pub(super) fn start_flusher(&mut self, every: Duration) {
        let shared = Arc::new(FlushShared {
            file: Mutex::new(self.active.clone()),
            dirty: AtomicBool::new(false),
            stop: Mutex::new(false),
            cond: Condvar::new(),
            error: Mutex::new(None),
        });
        let s = shared.clone();
        let spawned = std::thread::Builder::new().name("tidemark-sync".into()).spawn(move || loop {
            {
                let mut stop = s.stop.lock();
                if !*stop {
                    s.cond.wait_for(&mut stop, every);
                }
                if *stop {
                    return;
                }
            }
            if s.dirty.swap(false, Ordering::AcqRel) {
                let file = s.file.lock().clone();
                if let Some(f) = file {
                    if let Err(e) = f.sync() {
                        *s.error.lock() = Some(format!("background sync failed: {e}"));
                    }
                }
            }
        });
        match spawned {
            Ok(handle) => self.flusher = Some((shared, handle)),
            // Without the thread, "interval" degrades to syncing on every write.
            Err(_) => self.sync = SyncPolicy::Always,
        }
    }

    pub(super) fn stop_flusher(&mut self) {
        if let Some((shared, handle)) = self.flusher.take() {
            *shared.stop.lock() = true;
            shared.cond.notify_all();
            let _ = handle.join();
        }
    }
}
