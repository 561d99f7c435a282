"""Callback (push) watches: delivery, cancel, terminal calls, raising callbacks, lifetimes."""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from typing import Any, List

import pytest

import tidemark
from tidemark import CLOSED, COMPACTED, PUT, Event, Store
from tidemark import watch as watch_mod
from conftest import PATIENCE, wait_until


def test_callback_per_event(store: Store) -> None:
    got: List[Event] = []
    threads: set = set()

    def cb(ev: Event) -> None:
        threads.add(threading.get_ident())
        got.append(ev)

    h = store.watch(prefix="t/", callback=cb)
    assert h.active and h.id and h.id > 0
    store.put("t/1", "a")
    store.put("x", "b")
    store.put("t/2", "c")
    wait_until(lambda: len(got) == 2, "2 events")
    assert [(e.kind, e.key, e.value) for e in got] == [(PUT, b"t/1", b"a"), (PUT, b"t/2", b"c")]
    assert threading.get_ident() not in threads  # a store thread, not ours
    h.cancel()
    assert not h.active  # cancel returns after the drop
    store.put("t/3", "d")
    assert h.wait(0)
    assert len(got) == 2 and h.terminal is None
    assert "ended" in repr(h)


def test_batched_callback_and_start_in_past(store: Store) -> None:
    for i in range(10):
        store.put(f"k{i}", str(i))
    deliveries: List[List[Event]] = []
    h = store.watch(start_revision=3, callback=deliveries.append, batched=True)
    store.put("k10", "10")
    wait_until(lambda: sum(map(len, deliveries)) == 9, "replay + live")
    revs = [e.revision for d in deliveries for e in d]
    assert revs == list(range(3, 12))
    assert all(isinstance(d, list) for d in deliveries)
    h.cancel()


def test_terminal_closed_is_the_last_call() -> None:
    s = Store()
    got: List[Event] = []
    h = s.watch(callback=got.append)
    s.put("a", "1")
    s.close()
    assert h.wait(PATIENCE)
    assert [e.kind for e in got] == [PUT, CLOSED]
    assert h.terminal == got[-1]
    h.cancel()  # no-op once ended


def test_terminal_compacted_for_a_slow_callback(store: Store) -> None:
    gate = threading.Event()
    got: List[Event] = []

    def slow(ev: Event) -> None:
        got.append(ev)
        gate.wait(PATIENCE)

    h = store.watch(prefix="k", max_queue=2, callback=slow)
    for i in range(20):
        store.put(f"k{i}", "v")
    store.compact(store.revision + 1)
    gate.set()
    assert h.wait(PATIENCE)
    assert got[-1].kind == COMPACTED and got[-1].revision == 21
    assert h.terminal is got[-1]
    revs = [e.revision for e in got[:-1]]
    assert revs == list(range(1, len(revs) + 1))  # gap-free before the terminal event
    # (the library runs drop_userdata just before it stops counting the watch)
    wait_until(lambda: store.watcher_count == 0, "the watch to be forgotten")


def test_slow_callback_loses_nothing(store: Store) -> None:
    gate = threading.Event()
    got: List[int] = []

    def slow(ev: Event) -> None:
        gate.wait(PATIENCE)
        got.append(ev.revision)

    h = store.watch(max_queue=3, callback=slow)
    n = 1500
    for i in range(n):
        store.put(f"k{i % 10}", str(i))
    gate.set()
    wait_until(lambda: len(got) == n, "every event")
    assert got == list(range(1, n + 1))
    h.cancel()


def test_raising_callback_is_reported_and_continues(store: Store) -> None:
    seen: List[Any] = []
    hooked: List[Any] = []
    old = sys.unraisablehook
    sys.unraisablehook = hooked.append
    try:

        def cb(ev: Event) -> None:
            seen.append(ev.revision)
            if ev.revision % 2:
                raise ValueError(f"odd {ev.revision}")

        h = store.watch(callback=cb)
        for i in range(6):
            store.put("k", str(i))
        wait_until(lambda: len(seen) == 6, "all events despite the exceptions")
        h.cancel()
    finally:
        sys.unraisablehook = old
    assert seen == [1, 2, 3, 4, 5, 6]
    assert h.exception_count == 3
    assert [str(e) for e in h.exceptions] == ["odd 1", "odd 3", "odd 5"]
    assert len(hooked) == 3
    assert hooked[0].exc_type is ValueError and "tidemark watch callback" in hooked[0].err_msg
    assert hooked[0].object is cb


def test_raising_callback_default_report_goes_to_stderr(store: Store, capfd: Any) -> None:
    old = sys.unraisablehook
    sys.unraisablehook = sys.__unraisablehook__
    try:
        h = store.watch(callback=lambda ev: 1 / 0)
        store.put("a", "1")
        wait_until(lambda: h.exception_count == 1, "the exception")
        h.cancel()
    finally:
        sys.unraisablehook = old
    err = capfd.readouterr().err
    assert "ZeroDivisionError" in err and "tidemark watch callback" in err


def test_cancel_from_inside_the_callback(store: Store) -> None:
    got: List[int] = []
    holder: List[Any] = []

    def cb(ev: Event) -> None:
        got.append(ev.revision)
        if ev.revision == 3:
            holder[0].cancel()

    holder.append(store.watch(callback=cb, batched=False))
    for i in range(10):
        store.put("k", str(i))
    assert holder[0].wait(PATIENCE)
    # no call after the one that cancelled, except the rest of that same delivery
    assert got[:3] == [1, 2, 3]
    store.put("k", "after")
    assert all(r <= 10 for r in got)


def test_cancel_during_replay_before_registration_returns(store: Store) -> None:
    for i in range(50):
        store.put("k", str(i))
    got: List[int] = []
    holder: List[Any] = []

    def cb(ev: Event) -> None:
        got.append(ev.revision)
        if holder:
            holder[0].cancel()
        else:
            # may run before store.watch() returned: the handle defers the cancel
            pass

    h = store.watch(start_revision=1, callback=cb)
    holder.append(h)
    h.cancel()
    assert not h.active


def test_callback_can_use_the_store(store: Store) -> None:
    # a callback that writes (re-entrancy): mirror every "src/" key to "dst/"
    def mirror(ev: Event) -> None:
        store.put(b"dst/" + ev.key[4:], ev.value)

    h = store.watch(prefix="src/", callback=mirror)
    for i in range(20):
        store.put(f"src/{i}", str(i))
    wait_until(lambda: len(store.range(prefix="dst/")) == 20, "mirrored keys")
    h.cancel()


def test_close_store_from_inside_a_callback() -> None:
    s = Store()
    got: List[Event] = []

    def cb(ev: Event) -> None:
        got.append(ev)
        if ev.kind == PUT:
            s.close()

    h = s.watch(callback=cb)
    s.put("a", "1")
    assert h.wait(PATIENCE)
    assert [e.kind for e in got] == [PUT, CLOSED]
    assert s.closed


def test_store_garbage_collected_while_callback_watch_alive() -> None:
    s = Store()
    got: List[Event] = []
    h = s.watch(callback=got.append)
    s.put("a", "1")
    ref = weakref.ref(s)
    del s
    gc.collect()
    assert ref() is None  # a callback watch does not keep its store alive
    assert h.wait(PATIENCE)
    assert [e.kind for e in got] == [PUT, CLOSED]
    assert h.store is None
    h.cancel()  # harmless


def test_handle_dropped_by_user_keeps_running(store: Store) -> None:
    got: List[Event] = []
    store.watch(callback=got.append)  # handle discarded immediately
    gc.collect()
    store.put("a", "1")
    wait_until(lambda: len(got) == 1, "the event")


def test_drop_called_exactly_once_for_every_ending(store: Store) -> None:
    drops: List[int] = []
    original = watch_mod.WatchHandle._on_drop

    def counting(self: Any) -> None:
        drops.append(self._token)
        original(self)

    watch_mod.WatchHandle._on_drop = counting  # type: ignore[method-assign]
    try:
        h1 = store.watch(callback=lambda e: None)  # cancelled
        h1.cancel()
        h1.cancel()
        store.put("x", "y")
        store.put("x", "z")
        store.compact(2)
        with pytest.raises(tidemark.CompactedError):  # failed registration
            store.watch(start_revision=1, callback=lambda e: None)
        s2 = Store()
        h3 = s2.watch(callback=lambda e: None)  # ended by store close
        s2.close()
        assert h3.wait(PATIENCE)
    finally:
        watch_mod.WatchHandle._on_drop = original  # type: ignore[method-assign]
    assert len(drops) == len(set(drops)) == 3
    assert h1._token not in watch_mod._registry and h3._token not in watch_mod._registry


def test_credit_flow_control(store: Store) -> None:
    got: List[int] = []
    h = store.watch(callback=lambda e: got.append(e.revision), credit=3)
    for i in range(10):
        store.put("k", str(i))
    wait_until(lambda: len(got) == 3, "the first 3 events")
    h.grant(4)
    wait_until(lambda: len(got) == 7, "4 more")
    h.grant(100)
    wait_until(lambda: len(got) == 10, "the rest")
    assert got == list(range(1, 11))
    h.cancel()


def test_context_manager_cancels(store: Store) -> None:
    with store.watch(callback=lambda e: None) as h:
        assert store.watcher_count == 1
    assert not h.active and store.watcher_count == 0


def test_callback_argument_checks(store: Store) -> None:
    with pytest.raises(TypeError):
        store.watch(callback=42)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        store.watch(callback=print, timeout=1)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        store.watch(batched=True)  # type: ignore[call-overload]
    with pytest.raises(ValueError):
        store.watch(max_queue=-1)

    async def coro(ev: Event) -> None:  # pragma: no cover
        pass

    with pytest.raises(TypeError, match="async for"):
        store.watch(callback=coro)
    assert store.watcher_count == 0


def test_callback_closing_while_another_thread_closes() -> None:
    s = Store()
    in_cb = threading.Event()
    results: List[str] = []

    def cb(ev: Event) -> None:
        if ev.kind == PUT:
            in_cb.set()
            wait_until(lambda: s.closed, "the other thread to start closing")
            s.close()  # must not deadlock with the close waiting for this callback
            results.append("closed from callback")

    h = s.watch(callback=cb)
    s.put("a", "1")
    assert in_cb.wait(PATIENCE)
    closer = threading.Thread(target=s.close)
    closer.start()
    closer.join(PATIENCE)
    assert not closer.is_alive()
    assert h.wait(PATIENCE)
    assert results == ["closed from callback"]
    assert h.terminal is not None and h.terminal.kind == CLOSED


def test_concurrent_closers_all_return_after_the_close() -> None:
    s = Store()
    h = s.watch(callback=lambda e: None)
    threads = [threading.Thread(target=s.close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    assert not any(t.is_alive() for t in threads)
    assert h.wait(0)  # every closer returned after the watch ended


def test_store_that_failed_to_open_is_harmless() -> None:
    with pytest.raises(TypeError):
        Store(option=object())  # not JSON-serializable
    with pytest.raises(tidemark.InvalidArgumentError):
        Store(bogus=1)
    gc.collect()


@pytest.mark.parametrize("batched", [False, True])
def test_cancel_inside_the_callback_stops_the_rest_of_the_delivery(store: Store, batched: bool) -> None:
    # Issue 18.1: three puts in one commit reach the trampoline as one C call; the callback
    # cancels on the first event and must not be called for the other two.
    got: List[Any] = []
    holder: List[tidemark.WatchHandle] = []
    registered = threading.Event()

    def cb(arg: Any) -> None:
        registered.wait(PATIENCE)
        got.append(arg)
        holder[0].cancel()

    holder.append(store.watch(prefix="c/", callback=cb, batched=batched))
    registered.set()
    with store.batch() as b:
        b.put("c/1", "1").put("c/2", "2").put("c/3", "3")
    store.put("c/4", "4")  # a later delivery: not called either
    assert holder[0].wait(PATIENCE)
    assert len(got) == 1
    if batched:
        # The current call had the whole delivery (c/4 may have joined it).
        assert [e.key for e in got[0]][:3] == [b"c/1", b"c/2", b"c/3"]
    else:
        assert got[0].key == b"c/1"


def test_cancel_from_another_thread_during_a_delivery_stops_it(store: Store) -> None:
    # cancel() from outside waits for the running call; the events after it in the same
    # delivery are not called.
    got: List[Event] = []
    entered = threading.Event()
    release = threading.Event()

    def cb(ev: Event) -> None:
        got.append(ev)
        entered.set()
        release.wait(PATIENCE)

    h = store.watch(prefix="c/", callback=cb)
    with store.batch() as b:
        b.put("c/1", "1").put("c/2", "2").put("c/3", "3")
    assert entered.wait(PATIENCE)
    t = threading.Thread(target=h.cancel)
    t.start()
    wait_until(lambda: h._cancelled, "cancel to start")
    release.set()
    t.join(PATIENCE)
    assert not t.is_alive()
    assert [e.key for e in got] == [b"c/1"]
    assert not h.active


def test_closed_store_push_watch_gets_its_replay_backlog_then_closed() -> None:
    # Issue 18.2 for push watches (tidemark_store_close): every matching event up to the
    # revision current at close, also a replay not delivered yet, then CLOSED at that revision.
    for _ in range(5):
        s = Store()
        for i in range(4):
            s.put(f"t/{i}", str(i))
        s.put("other", "x")
        got: List[Event] = []
        h = s.watch(prefix="t/", start_revision=1, callback=got.append)
        s.close()
        assert h.wait(PATIENCE)
        assert [e.revision for e in got[:-1]] == [1, 2, 3, 4]
        assert got[-1].kind == CLOSED and got[-1].revision == 5


def test_closed_store_push_watch_out_of_credit_gets_closed_only() -> None:
    # The one exception of the contract: a watch out of credit is not owed what it was not granted.
    s = Store()
    got: List[Event] = []
    h = s.watch(callback=got.append, credit=1)
    for i in range(4):
        s.put(f"k{i}", "v")
    wait_until(lambda: len(got) == 1, "the granted event")
    s.close()
    assert h.wait(PATIENCE)
    assert [e.revision for e in got[:-1]] == [1]
    assert got[-1].kind == CLOSED and got[-1].revision == 4
