//! Applying what a session reads: staging records, committing them with their cursor, and
//! the full resync (since 0) that deletes the local records the server no longer has.

use serde_json::{json, Value};

use super::{FollowEvent, Outcome, Runner};
use crate::error::Error;
use crate::lockstep::record::{compare_order, parse_line, Line, Parsed};
use crate::op::Op;
use crate::selector::Selector;

impl Runner {
    fn malformed(&mut self, line: &[u8], reason: &str) {
        {
            let mut s = self.shared.stats.lock();
            s.malformed += 1;
            s.last_malformed = Some(reason.to_string());
        }
        let excerpt = &line[..line.len().min(1024)];
        self.emit(&FollowEvent::Malformed { line: excerpt, reason });
    }

    pub(super) fn on_line(&mut self, line: Line<'_>) -> std::result::Result<(), Outcome> {
        match line {
            Line::TooLong(excerpt, n) => {
                self.malformed(
                    excerpt,
                    &format!("line of {n} bytes exceeds max_line_bytes ({})", self.opts.max_line_bytes),
                );
                Ok(())
            }
            Line::Text(t) => match parse_line(t, &self.opts.id_field, &self.opts.order_by) {
                Err(reason) => {
                    self.malformed(t, &reason);
                    Ok(())
                }
                Ok(Parsed::Heartbeat) => {
                    self.shared.stats.lock().heartbeats += 1;
                    Ok(())
                }
                Ok(Parsed::Record { id, order, deleted }) => self.stage(t, &id, order, deleted),
            },
        }
    }

    fn stage(
        &mut self,
        line: &[u8],
        id: &str,
        order: Value,
        deleted: bool,
    ) -> std::result::Result<(), Outcome> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(id.as_bytes());
        let limits = self.store.options();
        if key.len() > limits.max_key_size || (!deleted && line.len() > limits.max_value_size) {
            self.malformed(line, "record too large for the local store (max_key_size / max_value_size)");
            return Ok(());
        }
        if self.resync {
            self.seen.insert(key.clone());
        }
        let want: Option<&[u8]> = (!deleted).then_some(line);
        let same = match self.pending_idx.get(&key) {
            Some(&i) => self.pending[i].1.as_deref() == want,
            None => match self.store.get(&key) {
                Ok(e) => Some(&e.value[..]) == want,
                Err(Error::NotFound(_)) => want.is_none(),
                Err(Error::Closed) => return Err(Outcome::StoreClosed),
                Err(_) => false,
            },
        };
        if !same {
            let value = want.map(<[u8]>::to_vec);
            match self.pending_idx.get(&key) {
                Some(&i) => self.pending[i].1 = value,
                None => {
                    self.pending_idx.insert(key.clone(), self.pending.len());
                    self.pending.push((key, value));
                }
            }
        }
        if compare_order(&order, &self.pending_cursor).is_gt() {
            self.pending_cursor = order;
        }
        self.pending_records += 1;
        if self.pending_records >= self.opts.batch_records as u64 {
            self.flush()?;
        }
        Ok(())
    }

    pub(super) fn discard_pending(&mut self) {
        self.pending.clear();
        self.pending_idx.clear();
        self.pending_cursor = self.cursor.clone();
        self.pending_records = 0;
    }

    fn cursor_doc(&self, cursor: &Value, resync: bool) -> Vec<u8> {
        serde_json::to_vec(&json!({"cursor": cursor, "resync": resync, "url": self.base_text})).expect("JSON")
    }

    /// Commits the staged records with the cursor that covers them.
    pub(super) fn flush(&mut self) -> std::result::Result<(), Outcome> {
        let cursor_moved = compare_order(&self.pending_cursor, &self.cursor).is_gt();
        if self.pending_records == 0 && self.pending.is_empty() && !cursor_moved {
            return Ok(());
        }
        let doc = cursor_moved.then(|| self.cursor_doc(&self.pending_cursor, self.resync));
        let mut revision = 0;
        let mut writes = 0;
        for attempt in 0.. {
            let mut ops: Vec<Op<'_>> = Vec::with_capacity(self.pending.len() + 1);
            for (k, v) in &self.pending {
                match v {
                    Some(v) => ops.push(Op::Put(k, v)),
                    // A delete of a key that is already gone is a no-op.
                    None => match self.store.get(k) {
                        Ok(_) => ops.push(Op::Delete(k)),
                        Err(Error::Closed) => return Err(Outcome::StoreClosed),
                        Err(_) => {}
                    },
                }
            }
            writes = ops.len() as u64;
            if let Some(d) = &doc {
                ops.push(Op::Put(&self.cursor_key, d));
            }
            if ops.is_empty() {
                break;
            }
            match self.store.commit_reserved(&ops) {
                Ok(rev) => {
                    revision = rev;
                    break;
                }
                // Someone else deleted one of the keys meanwhile: plan again.
                Err(Error::NotFound(_)) if attempt < 5 => continue,
                Err(Error::Closed) => return Err(Outcome::StoreClosed),
                Err(e) => return Err(Outcome::Failed(format!("local commit failed: {e}"))),
            }
        }
        let records = self.pending_records;
        self.cursor = self.pending_cursor.clone();
        self.pending.clear();
        self.pending_idx.clear();
        self.pending_records = 0;
        {
            let mut s = self.shared.stats.lock();
            s.records += records;
            s.writes += writes;
            s.batches += 1;
            if revision > 0 {
                s.local_revision = revision;
            }
            s.cursor = self.cursor.clone();
        }
        if records > 0 {
            let cursor = self.cursor.clone();
            self.emit(&FollowEvent::Applied { records, writes, revision, cursor: &cursor });
        }
        Ok(())
    }

    pub(super) fn start_resync(&mut self, reason: &str) -> std::result::Result<(), Outcome> {
        let doc = self.cursor_doc(&Value::Null, true);
        match self.store.commit_reserved(&[Op::Put(&self.cursor_key, &doc)]) {
            Ok(_) => {}
            Err(Error::Closed) => return Err(Outcome::StoreClosed),
            Err(e) => return Err(Outcome::Failed(e.to_string())),
        }
        self.cursor = Value::Null;
        self.pending_cursor = Value::Null;
        self.resync = true;
        {
            let mut s = self.shared.stats.lock();
            s.resyncs += 1;
            s.resyncing = true;
            s.cursor = Value::Null;
        }
        self.emit(&FollowEvent::ResyncStarted { reason });
        Ok(())
    }

    /// After a complete, framed since-0 response: deletes the local records it did not
    /// contain and clears the resync flag, in one atomic commit with the cursor.
    pub(super) fn finish_resync(&mut self) -> std::result::Result<(), Outcome> {
        let doc = self.cursor_doc(&self.cursor, false);
        let mut deleted = 0u64;
        for attempt in 0.. {
            let mut stale: Vec<Vec<u8>> = Vec::new();
            let seen = &self.seen;
            let cursor_key = &self.cursor_key;
            match self.store.range_visit(&Selector::Prefix(self.prefix.clone()), 0, &mut |e| {
                if !seen.contains(&e.key[..]) && e.key[..] != cursor_key[..] {
                    stale.push(e.key.to_vec());
                }
            }) {
                Ok(_) => {}
                Err(Error::Closed) => return Err(Outcome::StoreClosed),
                Err(e) => return Err(Outcome::Failed(e.to_string())),
            }
            let mut ops: Vec<Op<'_>> = stale.iter().map(|k| Op::Delete(k)).collect();
            ops.push(Op::Put(&self.cursor_key, &doc));
            match self.store.commit_reserved(&ops) {
                Ok(_) => {
                    deleted = stale.len() as u64;
                    break;
                }
                // Someone else deleted one of the keys meanwhile: plan again.
                Err(Error::NotFound(_)) if attempt < 5 => continue,
                Err(Error::Closed) => return Err(Outcome::StoreClosed),
                Err(e) => return Err(Outcome::Failed(e.to_string())),
            }
        }
        self.resync = false;
        self.seen.clear();
        {
            let mut s = self.shared.stats.lock();
            s.resyncing = false;
            s.writes += deleted;
        }
        let cursor = self.cursor.clone();
        self.emit(&FollowEvent::ResyncDone { deleted, cursor: &cursor });
        Ok(())
    }
}
