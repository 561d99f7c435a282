"""Transient subscriptions through the Python binding: iterator, callback, ``async for``,
replay from the past, selectors, credit, terminal events and bad input."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, List

import pytest

import tidemark
from tidemark import CLOSED, PUT, ExpectedVersion, Store, StreamEvent
from conftest import PATIENCE, wait_until


def _populate(store: Store) -> None:
    store.append("order-1", [("created", b"a"), ("paid", b"b")], ExpectedVersion.NO_STREAM)
    store.put("user", "v")
    store.append("cart-1", [("created", b"c")])
    store.append("order-2", [("created", b"d")])


def _names(items: List[Any]) -> List[str]:
    return [f"{e.stream.decode()}:{e.version}:{e.type.decode()}" if e.kind == PUT else e.kind.name for e in items]


def _drain(sub: tidemark.Subscription) -> List[Any]:
    out: List[Any] = []
    while True:
        try:
            out.extend(sub.next_batch(timeout=0))
        except tidemark.WatchTimeout:
            return out


def test_replay_from_the_beginning_and_selectors(store: Store) -> None:
    _populate(store)
    cases = [
        ({}, ["order-1:0:created", "order-1:1:paid", "cart-1:0:created", "order-2:0:created"]),
        ({"stream": "order-1"}, ["order-1:0:created", "order-1:1:paid"]),
        ({"prefix": "order-"}, ["order-1:0:created", "order-1:1:paid", "order-2:0:created"]),
        ({"event_type": "created"}, ["order-1:0:created", "cart-1:0:created", "order-2:0:created"]),
        ({"prefix": b"order", "event_type": b"created"}, ["order-1:0:created", "order-2:0:created"]),
    ]
    for kw, want in cases:
        with store.subscribe(start_revision=1, **kw) as sub:
            got = _drain(sub)
            assert _names(got) == want, kw
            assert all(isinstance(e, StreamEvent) for e in got)
    with store.subscribe(start_revision=1, stream="order-1") as sub:
        first = sub.next_batch(timeout=PATIENCE)
        assert (first[0].data, first[1].data) == (b"a", b"b")
        assert first[0] == store.read_stream("order-1")[0]


def test_iterator_is_live_and_ends_on_close() -> None:
    store = Store()
    sub = store.subscribe(prefix="s", timeout=PATIENCE)
    assert sub.id > 0
    store.append("s1", [("t", b"1")])
    store.append("x", [("t", b"ignored")])
    store.append("s2", [("t", b"2")])
    it = iter(sub)
    assert [next(it).data, next(it).data] == [b"1", b"2"]
    store.append("s1", [("t", b"3")])
    store.close()
    assert [e.data for e in it] == [b"3"]
    assert sub.terminal is not None and sub.terminal.kind == CLOSED


def test_compaction_ends_a_lagging_subscription(store: Store) -> None:
    sub = store.subscribe(stream="s", max_queue=1)
    for i in range(3):
        store.append("s", [("t", str(i))])
    store.compact(store.revision)
    assert [e.data for e in sub.next_batch(timeout=PATIENCE)] == [b"0"]
    with pytest.raises(tidemark.CompactedError) as ei:
        sub.next_batch(timeout=PATIENCE)
    assert ei.value.revision == store.revision
    with pytest.raises(tidemark.CompactedError):
        store.subscribe(start_revision=1)
    with pytest.raises(tidemark.FutureRevisionError):
        store.subscribe(start_revision=store.revision + 2)


def test_callback_with_credit_and_cancel(store: Store) -> None:
    _populate(store)
    got: List[Any] = []
    done = threading.Event()

    def on(ev: Any) -> None:
        got.append(ev)
        if len(got) == 3:
            done.set()

    h = store.subscribe(event_type="created", start_revision=1, callback=on, credit=2)
    wait_until(lambda: len(got) == 2)
    store.append("order-3", [("paid", b"x"), ("created", b"y")])
    h.grant(5)
    assert done.wait(PATIENCE)
    wait_until(lambda: len(got) == 4)
    assert _names(got) == ["order-1:0:created", "cart-1:0:created", "order-2:0:created", "order-3:1:created"]
    h.cancel()
    assert h.wait(PATIENCE) and not h.active
    store.append("order-4", [("created", b"z")])
    assert store.watcher_count == 0


def test_async_for(store: Store) -> None:
    _populate(store)

    async def main() -> List[str]:
        out: List[str] = []
        async for ev in store.subscribe(prefix="order-", start_revision=1):
            out.append(f"{ev.stream.decode()}:{ev.version}")
            if len(out) == 3:
                store.append("order-1", [("shipped", b"")])
            if len(out) == 4:
                break
        return out

    got = asyncio.run(asyncio.wait_for(main(), PATIENCE))
    assert got == ["order-1:0", "order-1:1", "order-2:0", "order-1:2"]

    async def via_asubscribe() -> int:
        n = 0
        async with store.asubscribe(stream="cart-1", start_revision=1) as aw:
            async for _ev in aw:
                n += 1
                break
        return n

    assert asyncio.run(asyncio.wait_for(via_asubscribe(), PATIENCE)) == 1


def test_bad_input(store: Store) -> None:
    for kw in ({"stream": ""}, {"prefix": ""}, {"event_type": ""}, {"prefix": "o", "event_type": b""}):
        with pytest.raises(tidemark.InvalidArgumentError):
            store.subscribe(**kw)
        with pytest.raises(tidemark.InvalidArgumentError):
            store.subscribe(callback=print, **kw)
    for kw in ({"stream": "x" * 1025}, {"prefix": b"x" * 1025}):
        with pytest.raises(tidemark.TooLargeError):
            store.subscribe(**kw)
    with pytest.raises(TypeError):
        store.subscribe(stream="a", prefix="b")
    with pytest.raises(TypeError):
        store.subscribe(stream=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.subscribe(credit=1)
    with pytest.raises(ValueError):
        store.subscribe(start_revision=-1)
    assert store.watcher_count == 0
