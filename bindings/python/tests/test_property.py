"""A hypothesis model test: put/delete/batch/compact/changes/range against a dict."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import tidemark
from tidemark import DELETE, PUT, Store

keys = st.sampled_from([b"a", b"ab", b"b", b"ba", b"c", "é", "z/1", "z/2"]).map(
    lambda k: k if isinstance(k, bytes) else k.encode()
)
values = st.binary(max_size=40)


class Model(RuleBasedStateMachine):
    """The store must behave like a dict plus a list of (revision, kind, key, value)."""

    def __init__(self) -> None:
        super().__init__()
        self.store = Store()
        self.kv: Dict[bytes, Tuple[bytes, int, int, int]] = {}  # key -> value, create, mod, version
        self.log: List[Tuple[int, int, bytes, bytes, int, int]] = []
        self.rev = 0
        self.earliest = 1
        self.watch = self.store.watch(timeout=5)
        self.watched: List[tidemark.Event] = []

    def _put(self, k: bytes, v: bytes) -> None:
        self.rev += 1
        old = self.kv.get(k)
        create = old[1] if old else self.rev
        version = old[3] + 1 if old else 1
        self.kv[k] = (v, create, self.rev, version)
        self.log.append((self.rev, PUT, k, v, create, version))

    def _delete(self, k: bytes) -> None:
        self.rev += 1
        del self.kv[k]
        self.log.append((self.rev, DELETE, k, b"", 0, 0))

    @rule(k=keys, v=values, as_str=st.booleans())
    def put(self, k: bytes, v: bytes, as_str: bool) -> None:
        key = k.decode() if as_str else k
        assert self.store.put(key, v) == self.rev + 1
        self._put(k, v)

    @rule(k=keys)
    def delete(self, k: bytes) -> None:
        if k in self.kv:
            assert self.store.delete(k) == self.rev + 1
            self._delete(k)
        else:
            with pytest.raises(tidemark.NotFoundError):
                self.store.delete(k)

    @rule(k=keys, v=values, expected=st.integers(0, 30))
    def put_if(self, k: bytes, v: bytes, expected: int) -> None:
        current = self.kv[k][2] if k in self.kv else 0
        if expected == current:
            assert self.store.put_if(k, v, expected) == self.rev + 1
            self._put(k, v)
        else:
            with pytest.raises(tidemark.ConflictError) as ei:
                self.store.put_if(k, v, expected)
            assert ei.value.current_revision == current

    @rule(ops=st.lists(st.tuples(st.booleans(), keys, values), min_size=1, max_size=6), fail=st.booleans())
    def batch(self, ops: List[Tuple[bool, bytes, bytes]], fail: bool) -> None:
        # simulate to know whether the batch is valid (a delete of a missing key fails it)
        shadow = set(self.kv)
        ok = True
        for is_put, k, _ in ops:
            if is_put:
                shadow.add(k)
            elif k in shadow:
                shadow.discard(k)
            else:
                ok = False
        try:
            with self.store.batch() as b:
                for is_put, k, v in ops:
                    b.put(k, v) if is_put else b.delete(k)
                if fail:
                    raise RuntimeError("rollback")
        except RuntimeError:
            return
        except tidemark.NotFoundError:
            assert not ok
            return
        assert ok and b.revision == self.rev + 1
        for is_put, k, v in ops:
            self._put(k, v) if is_put else self._delete(k)

    @precondition(lambda self: self.rev > 0)
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        keep = data.draw(st.integers(self.earliest, self.rev + 1))
        removed = self.store.compact(keep)
        assert removed == len([e for e in self.log if self.earliest <= e[0] < keep])
        self.earliest = max(self.earliest, keep)

    @rule(data=st.data(), limit=st.integers(0, 7))
    def changes(self, data: st.DataObject, limit: int) -> None:
        frm = data.draw(st.integers(0, self.rev + 2))
        if frm and frm < self.earliest or (not frm and self.earliest > 1):
            with pytest.raises(tidemark.CompactedError) as ei:
                self.store.changes(frm, limit=limit)
            assert ei.value.earliest_revision == self.earliest
            return
        if frm > self.rev + 1:
            with pytest.raises(tidemark.FutureRevisionError) as ei2:
                self.store.changes(frm)
            assert ei2.value.current_revision == self.rev
            return
        expected = [e for e in self.log if e[0] >= max(frm, 1)]
        got = list(self.store.iter_changes(max(frm, 1), page_size=limit or 1000))
        assert [tuple(e) for e in got] == expected
        page = self.store.changes(frm, limit=limit)
        assert [tuple(e) for e in page] == expected[: len(page)]

    @rule(prefix=st.sampled_from([b"", b"a", b"b", b"z/", b"\xc3"]))
    def range_prefix(self, prefix: bytes) -> None:
        got = self.store.range(prefix=prefix)
        expected = sorted(k for k in self.kv if k.startswith(prefix))
        assert [e.key for e in got] == expected
        for e in got:
            v, create, mod, version = self.kv[e.key]
            assert (e.value, e.create_revision, e.revision, e.version) == (v, create, mod, version)

    @rule(k=keys)
    def get(self, k: bytes) -> None:
        e = self.store.get(k)
        if k in self.kv:
            v, create, mod, version = self.kv[k]
            assert e is not None and (e.value, e.create_revision, e.mod_revision, e.version) == (v, create, mod, version)
        else:
            assert e is None

    @invariant()
    def revisions(self) -> None:
        assert self.store.revision == self.rev
        assert self.store.earliest_revision == self.earliest

    def teardown(self) -> None:
        # The watch opened at the start saw every change, in order, unless a compaction
        # overtook it (then it ended with CompactedError, gap-free before that).
        seen: List[tidemark.Event] = []
        self.store.close()
        try:
            seen.extend(self.watch)
        except tidemark.CompactedError:
            pass
        assert [tuple(e) for e in seen] == self.log[: len(seen)]
        if self.watch.terminal is not None and self.watch.terminal.kind == tidemark.CLOSED:
            assert len(seen) == len(self.log)


Model.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestModel = Model.TestCase


@given(st.lists(st.tuples(keys, st.one_of(st.none(), values)), max_size=60))
@settings(max_examples=80, deadline=None)
def test_put_delete_changes_against_dict(ops: List[Tuple[bytes, Optional[bytes]]]) -> None:
    with Store() as s:
        model: Dict[bytes, bytes] = {}
        log = []
        for k, v in ops:
            if v is None:
                if k in model:
                    s.delete(k)
                    del model[k]
                    log.append((DELETE, k, b""))
                else:
                    with pytest.raises(KeyError):
                        s.delete(k)
            else:
                s.put(k, v)
                model[k] = v
                log.append((PUT, k, v))
        assert [(e.kind, e.key, e.value) for e in s.iter_changes(1, page_size=7)] == log
        assert {e.key: e.value for e in s.range()} == model
        assert s.revision == len(log)
