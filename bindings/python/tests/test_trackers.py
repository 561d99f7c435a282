"""Trackers through the Python binding: every feature's lifecycle, user features, replay,
members, iterator and async forms, terminal notifications and bad input."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, List, Tuple

import pytest

import tidemark
from tidemark import Notification, Store
from conftest import PATIENCE, wait_until


def collect(store: Store, feature: str, **kw: Any) -> Tuple[tidemark.Tracker, "queue.Queue[Notification]"]:
    q: "queue.Queue[Notification]" = queue.Queue()
    return store.track(feature, q.put, **kw), q


def take(q: "queue.Queue[Notification]", n: int) -> List[Tuple[str, bytes, Any]]:
    return [(x.action, x.id, x.data) for x in (q.get(timeout=PATIENCE) for _ in range(n))]


def test_every_feature_notifies_its_lifecycle(store: Store) -> None:
    _, streams = collect(store, "streams")
    _, snapshots = collect(store, "snapshots")
    _, contexts = collect(store, "contexts")
    _, keys = collect(store, "keys/u/")
    _, jobs = collect(store, "jobs")
    store.append("orders", [("created", b"1")])
    store.append("orders", [("paid", b"2")])
    store.record_snapshot("agg", "orders", 1, b"state")
    store.context_set("cart", {"items": 1})
    store.context_update("cart", {"items": 2})
    store.context_delete("cart")
    store.put("u/a", "1")
    store.put("other", "1")
    store.delete("u/a")
    store.delete_stream("orders")
    rev = store.notify("jobs", "created", "j1", {"step": 1})
    store.notify("jobs", "deleted", b"j1")
    assert take(streams, 3) == [
        ("created", b"orders", {"version": 0}),
        ("updated", b"orders", {"version": 1}),
        ("deleted", b"orders", {}),
    ]
    assert take(snapshots, 1) == [("created", b"orders", {"source": "agg", "stream": "orders", "version": 1})]
    assert take(contexts, 3) == [
        ("created", b"cart", {"version": 1}),
        ("updated", b"cart", {"version": 2}),
        ("deleted", b"cart", {}),
    ]
    assert take(keys, 2) == [("created", b"u/a", {"version": 1}), ("deleted", b"u/a", {})]
    got = [jobs.get(timeout=PATIENCE) for _ in range(2)]
    assert [(n.feature, n.action, n.id, n.data) for n in got] == [
        ("jobs", "created", b"j1", {"step": 1}),
        ("jobs", "deleted", b"j1", None),
    ]
    assert got[0].revision == rev and not got[0].is_terminal
    store.close()
    for q in (streams, snapshots, contexts, keys, jobs):
        last = q.get(timeout=PATIENCE)
        assert (last.action, last.is_terminal, last.data) == ("closed", True, None)


def test_replay_from_revision_1_then_live(store: Store) -> None:
    for i in range(3):
        store.notify("jobs", "updated", f"j{i}", i)
    t, q = collect(store, "jobs", start_revision=1)
    assert take(q, 3) == [("updated", b"j0", 0), ("updated", b"j1", 1), ("updated", b"j2", 2)]
    store.notify("jobs", "deleted", "j0")
    assert take(q, 1) == [("deleted", b"j0", None)]
    t.untrack()
    assert t.wait(PATIENCE) and not t.active


def test_members_and_untrack(store: Store) -> None:
    a, _ = collect(store, "jobs")
    b, _ = collect(store, "jobs")
    assert store.tracker_members("jobs") == [a.id, b.id]
    assert store.tracker_members("streams") == []
    store.untrack(a)
    assert store.tracker_members("jobs") == [b.id]
    store.untrack(b.id)
    with pytest.raises(tidemark.NotFoundError):
        store.untrack(b.id)
    many = [collect(store, "big")[0] for _ in range(40)]
    assert store.tracker_members("big") == [t.id for t in many]  # more than one call's buffer
    for t in many:
        t.untrack()


def test_a_callback_may_use_the_store_and_untrack_itself(store: Store) -> None:
    _, echo = collect(store, "echo")
    seen: List[Notification] = []

    def cb(n: Notification) -> None:
        seen.append(n)
        store.notify("echo", "created", n.id, n.data)
        tracker.untrack()

    tracker = store.track("jobs", cb)
    store.notify("jobs", "created", "x", [1])
    store.notify("jobs", "created", "y", [2])
    assert take(echo, 1) == [("created", b"x", [1])]
    assert tracker.wait(PATIENCE)
    assert [n.id for n in seen] == [b"x"]


def test_iterator_form(store: Store) -> None:
    def write() -> None:
        for i in range(2500):  # more than the iterator's credit: it grants as it goes
            store.notify("jobs", "updated", str(i), i)

    with store.tracker("jobs", max_queue=100, timeout=PATIENCE) as it:
        threading.Thread(target=write).start()
        got = [next(it).data for _ in range(2500)]
    assert got == list(range(2500))
    with pytest.raises(StopIteration):
        next(it)  # closed


def test_iterator_raises_when_compacted(store: Store) -> None:
    for i in range(6):
        store.notify("jobs", "updated", str(i))
    it = store.tracker("jobs", start_revision=1, max_queue=1, timeout=PATIENCE)
    wait_until(lambda: len(it._buf) >= 1, "the first notification")  # credit 1: the rest waits
    keep = store.revision
    store.compact(keep)
    seen = []
    with pytest.raises(tidemark.CompactedError, match=f"earliest retained revision is {keep}"):
        while True:
            seen.append(next(it).id)
    assert seen[0] == b"0" and len(seen) < 6
    with pytest.raises(StopIteration):
        next(it)


def test_async_form(store: Store) -> None:
    async def main() -> List[Any]:
        got: List[Any] = []
        async with store.atrack("contexts", start_revision=1) as at:
            async for n in at:
                got.append((n.action, n.id))
                if len(got) == 3:
                    break
        return got

    store.context_set("c", {"a": 1})
    store.context_update("c", {"a": 2})
    threading.Timer(0.01, lambda: store.context_delete("c")).start()
    got = asyncio.run(asyncio.wait_for(main(), PATIENCE))
    assert got == [("created", b"c"), ("updated", b"c"), ("deleted", b"c")]


def test_bad_input(store: Store) -> None:
    with pytest.raises(tidemark.InvalidArgumentError):
        store.track("", print)
    with pytest.raises(tidemark.InvalidArgumentError):
        store.notify("", "created", "x")
    with pytest.raises(tidemark.InvalidArgumentError, match="unknown action"):
        store.notify("jobs", "renamed", "x")
    with pytest.raises(tidemark.InvalidArgumentError, match="built-in"):
        store.notify("streams", "created", "x")
    with pytest.raises(tidemark.InvalidArgumentError):
        store.notify("jobs", "created", "")
    with pytest.raises(TypeError):
        store.notify("jobs", "created", "x", object())  # not JSON
    with pytest.raises(TypeError):
        store.track("jobs", None)  # type: ignore[arg-type]
    with pytest.raises(tidemark.FutureRevisionError):
        store.track("jobs", print, start_revision=10)
    assert store.revision == 0


def test_persistent_subscriptions_notify_their_lifecycle(store: Store) -> None:
    _, subs = collect(store, "subscriptions")
    store.subscription_create("billing")
    store.append("orders", [("created", b"1"), ("paid", b"2")])
    with store.subscription_connect("billing") as consumer:
        got: List[int] = []
        while len(got) < 2:
            deliveries = consumer.next(timeout=PATIENCE)
            consumer.ack(deliveries)
            got += [d.revision for d in deliveries]
    store.subscription_delete("billing")
    assert take(subs, 1) == [("created", b"billing", {"checkpoint": 0})]
    checkpoint = 0
    while checkpoint < max(got):  # checkpoint moves may be coalesced; they never go back
        action, name, data = take(subs, 1)[0]
        assert (action, name) == ("updated", b"billing") and data["checkpoint"] > checkpoint
        checkpoint = data["checkpoint"]
    assert checkpoint == max(got)
    assert take(subs, 1) == [("deleted", b"billing", {})]
