"""Atomic batches: commit on exit, discard on exception, all or nothing."""

from __future__ import annotations

import pytest

import tidemark
from tidemark import Store


def test_batch_commits_on_exit(store: Store) -> None:
    store.put("gone", "x")
    with store.batch() as b:
        b.put("a", "1").put(b"b", b"2")
        b.delete("gone")
        assert len(b) == 3
        assert store.revision == 1  # nothing applied yet
    assert b.revision == 2
    assert store.revision == 4
    assert store.get("a").value == b"1"  # type: ignore[union-attr]
    assert store.get("gone") is None
    revs = [(e.revision, e.kind, e.key) for e in store.changes(2)]
    assert revs == [(2, tidemark.PUT, b"a"), (3, tidemark.PUT, b"b"), (4, tidemark.DELETE, b"gone")]


def test_batch_discards_on_exception(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.batch() as b:
            b.put("a", "1")
            raise RuntimeError("abort")
    assert store.revision == 0 and store.get("a") is None
    with pytest.raises(tidemark.ClosedError):
        b.put("x", "y")  # a batch is over after its with block


def test_failed_requirement_applies_nothing(store: Store) -> None:
    store.put("k", "v")
    with pytest.raises(tidemark.ConflictError) as ei:
        with store.batch() as b:
            b.put("a", "1")
            b.require("k", 99)
    assert ei.value.current_revision == 1
    assert store.revision == 1 and store.get("a") is None


def test_delete_of_missing_key_applies_nothing(store: Store) -> None:
    with pytest.raises(tidemark.NotFoundError):
        with store.batch() as b:
            b.put("a", "1").delete("nope")
    assert store.revision == 0


def test_delete_counts_earlier_ops(store: Store) -> None:
    with store.batch() as b:
        b.put("a", "1").delete("a")
    assert store.get("a") is None and store.revision == 2


def test_require_passes(store: Store) -> None:
    store.put("k", "v")
    with store.batch() as b:
        b.require("k", 1).require("absent", 0).put("k", "w")
    assert b.revision == 2
    # only requirements: commits nothing, first revision 0
    b2 = store.batch()
    b2.require("k", 2)
    assert b2.commit() == 0
    assert store.revision == 2
    b2.discard()


def test_manual_commit_reuse_and_clear(store: Store) -> None:
    b = store.batch()
    b.put("a", "1")
    assert b.commit() == 1
    assert b.commit() == 2  # a batch can be committed again
    b.clear()
    assert len(b) == 0
    b.put("b", "2")
    assert b.commit() == 3
    b.discard()
    b.discard()
    assert len(b) == 0
    assert "Batch" in repr(b)


def test_batch_is_one_watch_delivery(store: Store) -> None:
    deliveries: list = []
    h = store.watch(callback=deliveries.append, batched=True)
    with store.batch() as b:
        for i in range(50):
            b.put(f"k{i}", str(i))
    store.put("after", "x")
    from conftest import wait_until

    wait_until(lambda: sum(len(d) for d in deliveries) >= 51, "deliveries")
    h.cancel()
    first = deliveries[0]
    assert [e.key for e in first[:50]] == [f"k{i}".encode() for i in range(50)]
    # the commit was not split across deliveries
    assert all(len(d) >= 50 or d[0].revision > 50 for d in deliveries)
