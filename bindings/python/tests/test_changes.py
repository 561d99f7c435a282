"""changes / iter_changes / range / compact, selectors, and the bulk event decoding."""

from __future__ import annotations

import random

import pytest

import tidemark
from tidemark import DELETE, PUT, Event, Store
from tidemark import _events


def fill(store: Store) -> None:
    store.put("a/1", "x")
    store.put("a/2", "y")
    store.put("b/1", "z")
    store.delete("a/1")
    store.put("c", "w")


def test_changes_all_and_fields(store: Store) -> None:
    fill(store)
    page = store.changes()
    assert not page.has_more and page.next_revision == 6
    assert len(page) == 5 and bool(page)
    assert [e.revision for e in page] == [1, 2, 3, 4, 5]
    assert page[3] == Event(4, DELETE, b"a/1", b"", 0, 0)
    assert page[0] == Event(1, PUT, b"a/1", b"x", 1, 1)
    assert page[0].kind is tidemark.EventKind.PUT and page[0].kind == 1
    assert "has_more=False" in repr(page)
    assert "DELETE" in repr(page[3])


def test_changes_selectors(store: Store) -> None:
    fill(store)
    assert [e.revision for e in store.changes(prefix="a/")] == [1, 2, 4]
    assert [e.revision for e in store.changes(key="a/1")] == [1, 4]
    assert [e.revision for e in store.changes(start="a/2", end="c")] == [2, 3]
    assert [e.revision for e in store.changes(start="b")] == [3, 5]
    assert [e.revision for e in store.changes(end="b")] == [1, 2, 4]
    assert [e.revision for e in store.changes(3, 4)] == [3, 4]
    assert [e.revision for e in store.changes(2, prefix="a/")] == [2, 4]


def test_changes_paging(store: Store) -> None:
    for i in range(25):
        store.put(f"k{i:02}", str(i))
    page = store.changes(1, limit=10)
    assert [e.revision for e in page] == list(range(1, 11))
    assert page.has_more and page.next_revision == 11
    page = store.changes(page.next_revision, limit=10)
    page = store.changes(page.next_revision, limit=10)
    assert [e.revision for e in page] == list(range(21, 26)) and not page.has_more
    assert [e.revision for e in store.iter_changes(1, page_size=3)] == list(range(1, 26))
    assert [e.revision for e in store.iter_changes(20, 22, page_size=1)] == [20, 21, 22]
    assert list(store.iter_changes(26)) == []


def test_iter_changes_stops_at_start_revision_even_with_writers(store: Store) -> None:
    for i in range(10):
        store.put("k", str(i))
    seen = []
    for ev in store.iter_changes(1, page_size=2):
        seen.append(ev.revision)
        store.put("more", "x")  # concurrent growth does not make it run forever
    assert seen == list(range(1, 11))


def test_batch_never_split_by_limit(store: Store) -> None:
    with store.batch() as b:
        for i in range(7):
            b.put(f"k{i}", "v")
    page = store.changes(1, limit=3)
    assert len(page) == 7  # a commit is never split


def test_range(store: Store) -> None:
    fill(store)
    page = store.range()
    assert [(e.key, e.value, e.revision) for e in page] == [(b"a/2", b"y", 2), (b"b/1", b"z", 3), (b"c", b"w", 5)]
    assert page.next_revision == 0 and not page.has_more
    limited = store.range(limit=2)
    assert len(limited) == 2 and limited.has_more
    assert [e.key for e in store.range(prefix="a/")] == [b"a/2"]
    assert [e.key for e in store.range(key="c")] == [b"c"]
    assert [e.key for e in store.range(start="b", end="c")] == [b"b/1"]
    assert all(e.kind == PUT for e in page)


def test_compact(store: Store) -> None:
    for i in range(10):
        store.put(f"k{i % 3}", str(i))
    assert store.compact(1) == 0
    assert store.compact(5) == 4
    assert store.earliest_revision == 5
    assert [e.revision for e in store.changes(5)] == list(range(5, 11))
    assert store.compact(11) == 6  # everything: earliest = current + 1
    assert store.earliest_revision == 11
    assert store.changes(11).events == []
    assert {e.key: e.value for e in store.range()} == {b"k0": b"9", b"k1": b"7", b"k2": b"8"}
    with pytest.raises(tidemark.CompactedError) as ei:
        list(store.iter_changes(1))
    assert ei.value.earliest_revision == 11


def _check_decoding(store: Store, items: list) -> None:
    for k, v in items:
        if v is None:
            store.delete(k)
        else:
            store.put(k, v)
    events = list(store.iter_changes(1, page_size=len(items) + 5))
    assert [(e.key, e.value) for e in events] == [(k, v if v is not None else b"") for k, v in items]
    # The same through the slow, one-event-per-page path.
    one_by_one = [store.changes(r, r).events[0] for r in range(1, store.revision + 1)]
    assert one_by_one == events


def test_decoding_uniform_lengths(store: Store) -> None:
    _check_decoding(store, [(b"key-%04d" % i, b"v" * 100) for i in range(3000)])


def test_decoding_mixed_lengths_binary_and_deletes(store: Store) -> None:
    rnd = random.Random(7)
    items: list = []
    live: set = set()
    for i in range(2500):
        k = bytes([rnd.randrange(1, 256)]) + bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 19)))  # not reserved
        if k in live and rnd.random() < 0.3:
            items.append((k, None))
            live.discard(k)
        else:
            v = bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 1, 5, 300, 5000])))
            items.append((k, v))
            live.add(k)
    _check_decoding(store, items)


def test_decoding_large_values(store: Store) -> None:
    _check_decoding(store, [(b"k%d" % i, bytes([i]) * (4096 + i)) for i in range(20)])


def test_decode_any_layout() -> None:
    """The decoder follows the pointers: an arena in another order (which today's library
    does not produce) decodes the same."""
    import struct

    base = 1 << 40
    keys = [b"a", b"bb", b"ccc"]
    values = [b"1", b"22", b""]
    arena = b"ccc" + b"" + b"bb22" + b"a1"  # reversed order
    offs = {b"ccc": (0, 3), b"bb": (3, 5), b"a": (7, 8)}
    rows = b""
    for i, (k, v) in enumerate(zip(keys, values)):
        ko, vo = offs[k]
        rows += struct.pack("=QI4xQQQQQQ", i + 1, 1, base + ko, len(k), base + vo, len(v), i + 1, 1)
    got = _events.decode_array(rows, 3, arena, base)
    assert [(e.key, e.value) for e in got] == list(zip(keys, values))


def test_unknown_event_kind_stays_an_int() -> None:
    import struct

    rows = struct.pack("=QI4xQQQQQQ", 9, 77, 0, 0, 0, 0, 0, 0) + struct.pack("=QI4xQQQQQQ", 10, 300, 0, 0, 0, 0, 0, 0)
    got = _events.decode_array(rows, 2, b"", 0)
    assert [e.kind for e in got] == [77, 300]
    assert "77" in repr(got[0])


def test_decode_uniform_lengths_in_another_order() -> None:
    """Equal lengths but not in event order: the exact pointer check must send it to the
    general path, never assign a key to the wrong event."""
    import struct

    base = 1 << 40
    n = 50
    keys = [b"k%02d" % i for i in range(n)]
    values = [b"v%02d" % i for i in range(n)]
    order = list(reversed(range(n)))  # event i's key/value live at slot order[i]
    arena = b"".join(keys[order.index(slot)] + values[order.index(slot)] for slot in range(n))
    rows = b"".join(
        struct.pack("=QI4xQQQQQQ", i + 1, 1, base + 6 * order[i], 3, base + 6 * order[i] + 3, 3, i + 1, 1)
        for i in range(n)
    )
    got = _events.decode_array(rows, n, arena, base)
    assert [(e.key, e.value) for e in got] == list(zip(keys, values))
    # and the in-order layout takes the fast path with the same result
    arena2 = b"".join(k + v for k, v in zip(keys, values))
    rows2 = b"".join(
        struct.pack("=QI4xQQQQQQ", i + 1, 1, base + 6 * i, 3, base + 6 * i + 3, 3, i + 1, 1) for i in range(n)
    )
    assert _events.decode_array(rows2, n, arena2, base) == got
