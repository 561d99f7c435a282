"""Streams, snapshots and named stores through the Python binding."""

from __future__ import annotations

import threading

import pytest

import tidemark
from tidemark import ExpectedVersion, Store, StreamEvent


def test_append_and_read(store: Store) -> None:
    assert store.stream_version("orders") == -1
    a = store.append("orders", [("created", b"1"), ("paid", "2", b"meta")], ExpectedVersion.NO_STREAM)
    assert (a.first_version, a.version, a.first_revision) == (0, 1, 1)
    store.append("orders", [{"type": "shipped", "data": b"3"}], 1)
    assert store.stream_version(b"orders") == 2
    evs = store.read_stream("orders")
    assert [e.version for e in evs] == [0, 1, 2]
    e = evs[1]
    assert isinstance(e, StreamEvent)
    assert (e.stream, e.type, e.data, e.metadata, e.revision) == (b"orders", b"paid", b"2", b"meta", 2)
    assert len(e.id) == 16 and e.id != evs[0].id and e.timestamp_ms > 1_600_000_000_000
    assert [x.version for x in store.read_stream("orders", -1, 2, backward=True)] == [2, 1]
    assert [x.version for x in store.read_stream("orders", 1, 1)] == [1]
    assert store.read_stream("orders", 5) == []
    # user key reads never show stream events
    assert store.changes(1).events == [] and store.range().events == []


def test_conflict_reports_the_current_version(store: Store) -> None:
    with pytest.raises(tidemark.ConflictError) as ei:
        store.append("s", [("t", b"")], ExpectedVersion.EXISTS)
    assert ei.value.current_version == -1
    store.append("s", [("t", b""), ("t", b"")])
    with pytest.raises(tidemark.ConflictError, match="expected version 0") as ei:
        store.append("s", [("t", b"")], 0)
    assert ei.value.current_version == 1
    with pytest.raises(tidemark.ConflictError) as ei:
        store.append("s", [("t", b"")], ExpectedVersion.NO_STREAM)
    assert ei.value.current_version == 1
    # other conflicts keep current_version at -1
    store.put("k", "v")
    with pytest.raises(tidemark.ConflictError) as ei:
        store.put_if("k", "w", 99)
    assert ei.value.current_version == -1 and ei.value.current_revision == 3 + 1


def test_idempotent_retry(store: Store) -> None:
    evs = [{"type": "t", "data": b"a", "id": b"\x01" * 16}, {"type": "t", "data": b"b", "id": b"\x02" * 16}]
    first = store.append("s", evs, ExpectedVersion.NO_STREAM)
    rev = store.revision
    assert store.append("s", evs, ExpectedVersion.NO_STREAM) == first
    assert store.revision == rev
    assert [e.id for e in store.read_stream("s")] == [b"\x01" * 16, b"\x02" * 16]


def test_list_and_delete(store: Store) -> None:
    for n in ("a", "b/1", "b/2"):
        store.append(n, [("t", b"")])
    assert store.list_streams() == ([(b"a", 0), (b"b/1", 0), (b"b/2", 0)], False)
    assert store.list_streams("b/", limit=1) == ([(b"b/1", 0)], True)
    assert store.list_streams("b/", after="b/1") == ([(b"b/2", 0)], False)
    assert store.status()["streams"] == 3
    store.delete_stream("a")
    assert store.stream_version("a") == -1
    with pytest.raises(tidemark.NotFoundError):
        store.read_stream("a")
    with pytest.raises(tidemark.NotFoundError):
        store.delete_stream("a")
    with pytest.raises(tidemark.ConflictError):
        store.append("a", [("t", b"")], ExpectedVersion.EXISTS)
    assert store.append("a", [("t", b"")], ExpectedVersion.NO_STREAM).first_version == 0


def test_snapshots(store: Store) -> None:
    r = store.record_snapshot("src", "s", 3, b"three")
    store.record_snapshot("src", "s", 7, "seven")
    snap = store.read_snapshot("src", "s", 6)
    assert (snap.version, snap.data, snap.revision, snap.source, snap.stream) == (3, b"three", r, b"src", b"s")
    assert store.read_snapshot("src", "s").version == 7
    with pytest.raises(tidemark.NotFoundError):
        store.read_snapshot("src", "s", 2)
    assert [x.version for x in store.list_snapshots("src", "s")] == [3, 7]
    store.delete_snapshot("src", "s", 7)
    with pytest.raises(tidemark.NotFoundError):
        store.delete_snapshot("src", "s", 7)
    assert store.status()["snapshots"] == 1


def test_bad_inputs(store: Store) -> None:
    with pytest.raises(tidemark.InvalidArgumentError):
        store.append("", [("t", b"")])
    with pytest.raises(tidemark.TooLargeError):
        store.append("x" * 1025, [("t", b"")])
    with pytest.raises(tidemark.InvalidArgumentError):
        store.append("s", [])
    for bad in (-3, -5):
        with pytest.raises(tidemark.InvalidArgumentError):
            store.append("s", [("t", b"")], bad)
    with pytest.raises(TypeError):
        store.append("s", [("t", b"")], True)
    with pytest.raises(TypeError):
        store.append("s", ["not an event"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        store.append("s", [{"type": "t", "bogus": 1}])
    with pytest.raises(tidemark.InvalidArgumentError, match="16 bytes"):
        store.append("s", [{"type": "t", "data": b"", "id": b"short"}])
    with pytest.raises(TypeError):
        store.append(42, [("t", b"")])  # type: ignore[arg-type]
    with pytest.raises(tidemark.InvalidArgumentError):
        store.read_stream("s", -1)  # forward from the end
    with pytest.raises(tidemark.InvalidArgumentError):
        store.read_stream("s", -7, backward=True)
    with pytest.raises(ValueError):
        store.read_stream("s", 0, -1)
    with pytest.raises(tidemark.InvalidArgumentError):
        store.stream_version("")
    with pytest.raises(tidemark.InvalidArgumentError):
        store.record_snapshot("", "s", 1, b"")
    with pytest.raises(ValueError):
        store.record_snapshot("src", "s", -1, b"")
    assert store.revision == 0
    store.close()
    with pytest.raises(tidemark.ClosedError):
        store.append("s", [("t", b"")])


def test_concurrent_exact_appends(store: Store) -> None:
    won: list = []

    def writer(t: int) -> None:
        mine = 0
        while mine < 20:
            v = store.stream_version("hot")
            try:
                a = store.append("hot", [("t", bytes([t]))], v if v >= 0 else ExpectedVersion.NO_STREAM)
            except tidemark.ConflictError as e:
                assert e.current_version > v
                continue
            won.append(a.version)
            mine += 1

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(won) == list(range(160))
    assert len(store.read_stream("hot")) == 160


def test_named_stores() -> None:
    s = tidemark.open_store("orders-db")
    try:
        assert tidemark.stores()["orders-db"] is s
        with pytest.raises(ValueError):
            tidemark.open_store("orders-db")
        with pytest.raises(TypeError):
            tidemark.open_store("")
    finally:
        tidemark.close_store("orders-db")
    assert s.closed and "orders-db" not in tidemark.stores()
    with pytest.raises(KeyError):
        tidemark.close_store("orders-db")
    t = tidemark.open_store("again")
    t.close()
    assert "again" not in tidemark.stores()
