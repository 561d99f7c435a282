"""Persistent subscriptions through the Python binding: iterator, async for and callback
consumers, ack / nack on the event, parking and replay, a timeout redelivery by an injected
clock, a reopen that resumes at the first unacked event, and bad input."""

from __future__ import annotations

import asyncio
import threading

import pytest

import tidemark
from tidemark import Store
from tidemark.persistent import PARK, RETRY, SKIP


def _fill(store: Store, n: int, stream: str = "orders") -> None:
    for i in range(n):
        store.append(stream, [("t", f"{stream}-{i}".encode())])


def _take(consumer: tidemark.Consumer, n: int) -> list:
    out: list = []
    while len(out) < n:
        got = consumer.next(10)
        assert got, "deliveries came"
        out.extend(got)
    return out


def test_history_replays_and_acks_move_the_checkpoint(store: Store) -> None:
    _fill(store, 5)
    store.subscription_create("sub", stream="orders", start="beginning", max_in_flight=10)
    with store.subscription_connect("sub") as c:
        got = _take(c, 5)
        assert [d.data for d in got] == [f"orders-{i}".encode() for i in range(5)]
        assert all(d.delivery_count == 1 and d.stream == b"orders" for d in got)
        got[0].ack()
        c.ack(got[1:3])
        info = store.subscription_list()[0]
        assert (info["name"], info["checkpoint"], info["in_flight"], info["lag"]) == ("sub", got[3].revision - 1, 2, 2)
        got[3].nack(SKIP)
        got[4].nack(PARK)
        assert store.subscription_list()[0]["checkpoint"] == got[4].revision
        parked = store.subscription_parked("sub")
        assert [p.revision for p in parked] == [got[4].revision]
        assert store.subscription_replay_parked("sub") == 1
        again = _take(c, 1)[0]
        assert (again.revision, again.delivery_count) == (got[4].revision, 1)
        again.ack()
        assert store.subscription_parked("sub") == []


def test_retry_parks_after_max_retry(store: Store) -> None:
    _fill(store, 3)
    store.subscription_create("p", max_retry=2, max_in_flight=10)
    c = store.subscription_connect("p")
    counts = []
    batch = _take(c, 3)
    while batch:
        for d in batch:
            if d.data == b"orders-1":
                counts.append(d.delivery_count)
                d.nack(RETRY)
            else:
                d.ack()
        batch = c.next(0)
    assert counts == [1, 2]
    assert store.subscription_parked("p")[0].delivery_count == 2
    with pytest.raises(TypeError):
        store.subscription_parked("p")[0].ack()
    c.close()


def test_timeout_redelivers_by_the_store_clock(store: Store) -> None:
    now = [1000]
    store.set_clock(lambda: now[0])
    _fill(store, 1)
    store.subscription_create("t", message_timeout_ms=5000)
    c1, c2 = store.subscription_connect("t"), store.subscription_connect("t")
    assert _take(c1, 1)[0].delivery_count == 1
    assert c2.next(0) == []
    now[0] += 5000
    d = _take(c2, 1)[0]
    assert d.delivery_count == 2
    with pytest.raises(tidemark.InvalidArgumentError):
        c1.ack(d.revision)
    d.ack()
    c1.close()
    c2.close()


def test_iterator_async_and_callback_consumers(store: Store) -> None:
    store.subscription_create("it", max_in_flight=1)  # a batch is one event: breaking out leaves none held
    _fill(store, 6)
    c = store.subscription_connect("it")
    seen = []
    for d in c:
        seen.append(d.data)
        d.ack()
        if len(seen) == 2:
            break

    async def run() -> list:
        out = []
        async for d in c:
            out.append(d.data)
            d.ack()
            if len(out) == 2:
                break
        return out

    seen += asyncio.run(run())
    c.close()
    done = threading.Event()
    last: list = []

    def on_event(d: tidemark.Delivery) -> None:
        seen.append(d.data)
        last.append(d.revision)
        d.ack()
        if len(seen) == 6:
            done.set()

    t = store.subscription_consume("it", on_event)
    assert done.wait(30)
    t.stop()
    assert seen == [f"orders-{i}".encode() for i in range(6)]
    assert store.subscription_list()[0]["checkpoint"] == last[-1]


def test_reopen_resumes_at_the_first_unacked(tmp_path) -> None:
    path = str(tmp_path / "db")
    with Store(path) as s:
        _fill(s, 10)
        s.subscription_create("sub", max_in_flight=10)
        c = s.subscription_connect("sub")
        got = _take(c, 10)
        c.ack(got[:5])
        c.close()
    with Store(path) as s:
        c = s.subscription_connect("sub")
        assert [d.data for d in _take(c, 5)] == [f"orders-{i}".encode() for i in range(5, 10)]
        c.close()


def test_bad_input(store: Store) -> None:
    with pytest.raises(tidemark.NotFoundError):
        store.subscription_connect("nope")
    with pytest.raises(tidemark.NotFoundError):
        store.subscription_delete("nope")
    with pytest.raises(tidemark.InvalidArgumentError):
        store.subscription_create("")
    with pytest.raises(tidemark.TooLargeError):
        store.subscription_create("x" * 1025)
    with pytest.raises(tidemark.InvalidArgumentError):
        store.subscription_create("x", max_in_flight=0)
    with pytest.raises(ValueError):
        store.subscription_create("x", start="later")
    with pytest.raises(TypeError):
        store.subscription_create("x", start=1.5)
    with pytest.raises(tidemark.FutureRevisionError):
        store.subscription_create("x", start=10)
    with pytest.raises(TypeError):
        store.subscription_create("x", stream="a", prefix="b")
    store.subscription_create("x")
    with pytest.raises(tidemark.ConflictError):
        store.subscription_create("x")
    _fill(store, 1)
    c = store.subscription_connect("x")
    other = store.subscription_connect("x")
    d = _take(c, 1)[0]
    with pytest.raises(tidemark.InvalidArgumentError):
        other.ack(d)
    with pytest.raises(tidemark.InvalidArgumentError):
        c.nack(d, 7)
    store.subscription_delete("x")
    with pytest.raises(tidemark.NotFoundError):
        c.next(0)
    c.close()
    c.close()
    with pytest.raises(tidemark.ClosedError):
        c.next(0)
    other.close()


def test_acks_twice_after_disconnect_and_on_a_closed_store() -> None:
    s = Store()
    s.subscription_create("x")
    _fill(s, 2)
    c = s.subscription_connect("x")
    first, second = _take(c, 2)
    first.ack()
    with pytest.raises(tidemark.InvalidArgumentError):  # acked already
        first.ack()
    with pytest.raises(tidemark.InvalidArgumentError):
        c.ack([second, first])  # all or nothing: second stays in flight
    with pytest.raises(tidemark.InvalidArgumentError):
        c.ack(12345)  # never delivered
    with pytest.raises(TypeError):
        c.ack("x")  # type: ignore[arg-type]
    c.ack([])
    c.close()
    with pytest.raises(tidemark.ClosedError):  # after disconnect
        second.ack()
    with pytest.raises(tidemark.ClosedError):
        second.nack(SKIP)
    parked_like = tidemark.persistent.Delivery.__new__(tidemark.persistent.Delivery)
    parked_like._consumer = None
    with pytest.raises(TypeError):
        parked_like.ack()
    c2 = s.subscription_connect("x")
    again = _take(c2, 1)[0]
    assert (again.revision, again.delivery_count) == (second.revision, 2)
    s.close()
    with pytest.raises(tidemark.ClosedError):  # the store closed under a connected consumer
        c2.next(0)
    with pytest.raises(tidemark.ClosedError):
        again.ack()
    for call in (lambda: s.subscription_create("y"), lambda: s.subscription_list(),
                 lambda: s.subscription_connect("x"), lambda: s.subscription_parked("x"),
                 lambda: s.subscription_replay_parked("x"), lambda: s.subscription_delete("x")):
        with pytest.raises(tidemark.ClosedError):
            call()
    c2.close()
    assert list(c2) == []  # a closed consumer's iterator ends


def test_reset_redelivers_backwards_skips_forwards(store: Store) -> None:
    _fill(store, 4)
    store.subscription_create("r", start="beginning", max_in_flight=10)
    c = store.subscription_connect("r")
    first = _take(c, 4)
    c.ack(first)
    current = store.revision
    for bad in (0, current + 2):
        with pytest.raises(tidemark.InvalidArgumentError):
            store.subscription_reset("r", bad)
    with pytest.raises(tidemark.NotFoundError):
        store.subscription_reset("nope", 1)
    for wrong in (-1, 1.5, "1", None):
        with pytest.raises(TypeError):
            store.subscription_reset("r", wrong)  # type: ignore[arg-type]
    assert store.revision == current
    # Backwards: one commit; the open consumer is told; a new one gets the events again.
    assert store.subscription_reset("r", first[1].revision) == current + 1
    assert store.subscription_list()[0]["checkpoint"] == first[1].revision - 1
    with pytest.raises(tidemark.ConflictError):
        c.next(0)
    c.close()
    with store.subscription_connect("r") as c:
        again = _take(c, 3)
        assert [d.revision for d in again] == [d.revision for d in first[1:]]
        c.ack(again)
    # Forwards, past the end: only new events.
    store.subscription_reset("r", store.revision + 1)
    with store.subscription_connect("r") as c:
        assert c.next(0) == []
        _fill(store, 1, "later")
        assert [d.stream for d in _take(c, 1)] == [b"later"]
