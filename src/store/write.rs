//! The write path: limits, planning against the key state, appending to the log (alone or in
//! a write group), and `publish`, the one place a stored commit becomes visible to readers
//! and watchers.

use crate::error::{Error, Result};
use crate::event::{Bytes, Event, EventKind};
use crate::kv::Entry;
use crate::metrics::Metrics;
use crate::ns;
use crate::op::Op;
use crate::selector::Selector;
use crate::storage::group::{WriteGroup, Writer};
use crate::storage::Placed;

use super::{check_key, Inner, State, Store};
use std::sync::atomic::Ordering;

impl Store {
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<u64> {
        ns::check_user_key(key)?;
        self.inner.write(&[Op::Put(key, value)])
    }

    /// Puts only if the key's `mod_revision` is `expected` (0 = the key must not exist).
    pub fn put_if(&self, key: &[u8], value: &[u8], expected: u64) -> Result<u64> {
        ns::check_user_key(key)?;
        self.inner.write(&[Op::Require(key, expected), Op::Put(key, value)])
    }

    /// Deletes a key; a missing key is `NotFound` and takes no revision.
    pub fn delete(&self, key: &[u8]) -> Result<u64> {
        ns::check_user_key(key)?;
        self.inner.write(&[Op::Delete(key)])
    }

    /// Commits all operations atomically at consecutive revisions. Returns the revision of
    /// the first write, or 0 when the operations wrote nothing (only requirements).
    pub fn commit(&self, ops: &[Op<'_>]) -> Result<u64> {
        ns::check_user_ops(ops)?;
        self.inner.write(ops)
    }

    /// `commit` for the store's own features: the keys may be in the reserved namespace.
    pub(crate) fn commit_reserved(&self, ops: &[Op<'_>]) -> Result<u64> {
        self.inner.write(ops)
    }
}

impl Inner {
    fn write(&self, ops: &[Op<'_>]) -> Result<u64> {
        let started = self.metrics.start();
        let result = self.write_timed(ops);
        Metrics::elapsed(&self.metrics.commit_seconds, started);
        if let Err(e) = &result {
            self.metrics.error(e);
        }
        result
    }

    fn write_timed(&self, ops: &[Op<'_>]) -> Result<u64> {
        for op in ops {
            self.check_limits(op)?;
        }
        if let Some(group) = &self.group {
            let me = Writer::new(ops);
            if group.join(&me) {
                self.commit_group(group);
            }
            return me.take_result();
        }
        let mut guard = self.state.write();
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let st = &mut *guard;
        let mut commit = std::mem::take(&mut st.scratch);
        let result = self.plan_and_append(st, ops, &mut commit);
        commit.clear();
        st.scratch = commit;
        result
    }

    /// Plans `ops` against the key state and appends the commit. On a log shared with other
    /// processes the state may be behind: the log may put the commit after their newer
    /// commits when none of them touched its keys (the store then catches up, which brings
    /// theirs and then this one); when the append is refused because they changed one of its
    /// keys first, or the plan fails or writes nothing (a verdict on this state only), the
    /// store catches up on their commits and, if there were any, plans again. So conditions
    /// are checked against the whole log.
    fn plan_and_append(&self, st: &mut State, ops: &[Op<'_>], commit: &mut Vec<Event>) -> Result<u64> {
        loop {
            let first = st.log.last_revision() + 1;
            commit.clear();
            let mut placed = Placed::AsPlanned;
            let appended = match *ops {
                // The common write: one lookup of the key plans and applies it.
                [Op::Put(key, value)] => st.kv.put((key, value), first, commit, |c| {
                    placed = st.log.append_after(c, &[])?;
                    Ok(placed == Placed::AsPlanned)
                }),
                _ => {
                    let planned = st.kv.plan(ops, first, commit);
                    if planned.is_err() || commit.is_empty() {
                        if self.catch_up(st)? == 0 {
                            return planned.map(|()| 0);
                        }
                        continue;
                    }
                    let required: Vec<&[u8]> = ops
                        .iter()
                        .filter_map(|op| match *op {
                            Op::Require(key, _) => Some(key),
                            _ => None,
                        })
                        .collect();
                    st.log.append_after(commit, &required).map(|p| placed = p)
                }
            };
            match (appended, placed) {
                (Ok(()), Placed::AsPlanned) => {
                    self.publish(st, commit, !matches!(*ops, [Op::Put(..)]));
                    self.checkpoint_if_due(st);
                    return Ok(first);
                }
                (Ok(()), Placed::Later { first }) => {
                    // Read your writes: the state gets this commit before the call returns.
                    let end = first + commit.len() as u64 - 1;
                    while st.log.last_revision() < end && self.catch_up(st)? > 0 {}
                    self.checkpoint_if_due(st);
                    return Ok(first);
                }
                // A shared log refused the append (another process wrote first): catch up, plan again.
                // Not after an I/O error: the commit may be in the log, and the tail finds it there.
                (Err(e), _) if matches!(e, Error::Io(_)) || self.catch_up(st)? == 0 => return Err(e),
                (Err(_), _) => {}
            }
        }
    }

    /// Best effort: the commit is in the log either way.
    fn checkpoint_if_due(&self, st: &mut State) {
        let kv = &st.kv;
        let _ = st.log.checkpoint_if_due(&mut |visit| {
            kv.range(&Selector::every_key(), 0, visit);
        });
    }

    fn check_limits(&self, op: &Op<'_>) -> Result<()> {
        check_key(op.key())?;
        if op.key().len() > self.opts.max_key_size {
            return Err(Error::TooLarge(format!(
                "key of {} bytes exceeds max_key_size ({})",
                op.key().len(),
                self.opts.max_key_size
            )));
        }
        if let Op::Put(_, v) = op {
            if v.len() > self.opts.max_value_size {
                return Err(Error::TooLarge(format!(
                    "value of {} bytes exceeds max_value_size ({})",
                    v.len(),
                    self.opts.max_value_size
                )));
            }
        }
        Ok(())
    }

    /// Makes a stored commit visible: to the key state (unless the caller applied it
    /// already), to the watchers it matches, and to readers of the current revision.
    /// This is the only hook from the store into the watch registry.
    pub(super) fn publish(&self, st: &mut State, commit: &[Event], apply: bool) {
        if apply {
            for e in commit {
                st.kv.apply(e);
            }
        }
        st.watches.dispatch(commit, &self.dispatcher);
        self.metrics.add_locked(&self.metrics.commits, 1);
        self.metrics.add_locked(&self.metrics.events, commit.len() as u64);
        self.revision.store(commit[commit.len() - 1].revision, Ordering::Release);
    }

    /// Commits a write group (see `storage::group`): plans the writers' commits in order
    /// (each sees the ones before it), writes them with one flush (one sync), and only then
    /// makes them visible and hands them to watchers; every writer gets its own result.
    fn commit_group(&self, group: &WriteGroup) {
        let writers = &group.take()[..];
        let mut guard = self.state.write();
        let st = &mut *guard;
        let refused =
            if self.closed.load(Ordering::Acquire) { Err(Error::Closed) } else { st.log.check_writable() };
        if let Err(e) = refused {
            drop(guard);
            group.ended(writers.len());
            group.hand_off();
            for w in writers {
                w.finish(Err(e.clone()));
            }
            return;
        }
        let multi = writers.len() > 1;
        let mut results = Vec::with_capacity(writers.len());
        let mut commits: Vec<Vec<Event>> = Vec::new();
        // Later commits of the group are planned against the state the earlier ones make;
        // the state is applied as the group goes (no reader can see it: the write lock is
        // held) and restored from here if the flush fails.
        let mut undo: Vec<(Bytes, Option<Entry>)> = Vec::new();
        for w in writers {
            let ops = w.ops();
            let first = st.log.last_revision() + 1;
            let mut commit = Vec::new();
            let result = st.kv.plan(&ops, first, &mut commit).and_then(|()| {
                if commit.is_empty() {
                    return Ok(0);
                }
                st.log.append(&commit)?;
                if multi {
                    for e in &commit {
                        undo.push((e.key.clone(), st.kv.get(&e.key).cloned()));
                        st.kv.apply(e);
                    }
                }
                commits.push(std::mem::take(&mut commit));
                Ok(first)
            });
            results.push(result);
        }
        if !commits.is_empty() {
            let started = self.metrics.start_group();
            if started.is_some() {
                self.metrics.group_size.observe(commits.len() as u64);
            }
            let flushed = st.log.flush();
            Metrics::elapsed(&self.metrics.sync_seconds, started);
            match flushed {
                Err(e) => {
                    undo_group(st, undo);
                    for r in results.iter_mut().filter(|r| r.is_ok()) {
                        *r = Err(e.clone());
                    }
                }
                Ok(()) => {
                    for commit in &commits {
                        self.publish(st, commit, !multi);
                    }
                    let kv = &st.kv;
                    // Best effort: the commits are durable in the log either way.
                    let _ = st.log.checkpoint_if_due(&mut |visit| {
                        kv.range(&Selector::every_key(), 0, visit);
                    });
                }
            }
        }
        // The writers are woken while the lock is still held (what they return is published,
        // and a read they make waits for the lock), so that they queue again while it is
        // released and the next group forms.
        group.ended(writers.len());
        for (w, r) in writers.iter().zip(results) {
            w.finish(r);
        }
        drop(guard);
        group.hand_off();
    }
}

/// Restores the key state a failed group flush had already applied, newest change first.
fn undo_group(st: &mut State, undo: Vec<(Bytes, Option<Entry>)>) {
    for (key, prior) in undo.into_iter().rev() {
        st.kv.apply(&match prior {
            Some(p) => Event {
                revision: p.mod_revision,
                kind: EventKind::Put,
                key,
                value: p.value,
                create_revision: p.create_revision,
                version: p.version,
                commit_end: true,
            },
            None => Event { key, kind: EventKind::Delete, ..Event::notice(EventKind::Delete, 0) },
        });
    }
}
