"""Iterator (pull) watches."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

import tidemark
from tidemark import CLOSED, DELETE, PROGRESS, PUT, Store
from conftest import PATIENCE, wait_until


def test_live_events(store: Store) -> None:
    w = store.watch(prefix="t/", timeout=PATIENCE)
    store.put("t/1", "a")
    store.put("other", "x")
    store.delete("t/1")
    it = iter(w)
    e1, e2 = next(it), next(it)
    assert (e1.kind, e1.key, e1.value, e1.revision) == (PUT, b"t/1", b"a", 1)
    assert (e2.kind, e2.key, e2.revision) == (DELETE, b"t/1", 3)
    assert w.position == 4
    w.close()
    assert w.closed and list(w) == []


def test_start_in_the_past_then_live(store: Store) -> None:
    for i in range(5):
        store.put(f"k{i}", str(i))
    with store.watch(start_revision=2, timeout=PATIENCE) as w:
        got = []
        for ev in w:
            got.append(ev.revision)
            if ev.revision == 5:
                store.put("k5", "5")  # live after the replay, same sequence
            if ev.revision == 6:
                break
    assert got == [2, 3, 4, 5, 6]
    assert store.watcher_count == 0


def test_selectors(store: Store) -> None:
    ws = {
        "key": store.watch(key="a", timeout=PATIENCE),
        "prefix": store.watch(prefix="a", timeout=PATIENCE),
        "range": store.watch(start="a", end="b", timeout=PATIENCE),
        "all": store.watch(timeout=PATIENCE),
    }
    for k in ["a", "ab", "b", "a"]:
        store.put(k, "v")
    store.close()  # ends every watch after what was committed
    got = {name: [e.key for e in w] for name, w in ws.items()}
    assert got == {
        "key": [b"a", b"a"],
        "prefix": [b"a", b"ab", b"a"],
        "range": [b"a", b"ab", b"a"],
        "all": [b"a", b"ab", b"b", b"a"],
    }
    for w in ws.values():
        assert w.terminal is not None and w.terminal.kind == CLOSED


def test_timeout(store: Store) -> None:
    w = store.watch(timeout=0.05)
    with pytest.raises(tidemark.WatchTimeout):
        next(iter(w))
    with pytest.raises(tidemark.WatchTimeout):
        next(w)
    store.put("a", "1")
    assert next(w).key == b"a"  # still usable after a timeout
    with pytest.raises(tidemark.WatchTimeout):
        w.next_batch(timeout=0)
    w.close()


def test_next_batch_is_one_delivery(store: Store) -> None:
    w = store.watch()
    with store.batch() as b:
        b.put("a", "1").put("b", "2")
    batch = w.next_batch(timeout=PATIENCE)
    assert [e.key for e in batch] == [b"a", b"b"]
    store.close()
    assert w.next_batch(timeout=PATIENCE) == []  # ended
    assert w.next_batch() == []


def test_slow_consumer_loses_nothing(store: Store) -> None:
    w = store.watch(prefix="k", max_queue=4, timeout=PATIENCE)
    n = 2000
    for i in range(n):
        store.put(f"k{i}", str(i))
        if i % 500 == 0:
            store.put("other", "x")
    got = []
    for ev in w:
        got.append(ev)
        if len(got) == n:
            break
    assert [e.key for e in got] == [f"k{i}".encode() for i in range(n)]
    revs = [e.revision for e in got]
    assert revs == sorted(set(revs))
    w.close()


def test_compacted_ends_the_iterator(store: Store) -> None:
    w = store.watch(prefix="k", max_queue=2, timeout=PATIENCE)
    for i in range(20):
        store.put(f"k{i}", "v")
    store.compact(store.revision + 1)
    got = []
    with pytest.raises(tidemark.CompactedError) as ei:
        for ev in w:
            got.append(ev.revision)
    assert ei.value.earliest_revision == 21
    assert got == list(range(1, len(got) + 1))  # gap-free up to the terminal event
    assert w.terminal is not None and w.terminal.kind == tidemark.COMPACTED
    assert list(w) == []  # over
    assert w.closed
    assert store.watcher_count == 0


def test_store_close_ends_iteration_after_queued_events(store: Store) -> None:
    w = store.watch(timeout=PATIENCE)
    store.put("a", "1")
    store.put("b", "2")
    store.close()
    assert [e.key for e in w] == [b"a", b"b"]
    assert w.terminal.kind == CLOSED  # type: ignore[union-attr]


def test_blocked_reader_wakes_on_store_close() -> None:
    s = Store()
    w = s.watch()  # no timeout: blocks
    got: list = []
    t = threading.Thread(target=lambda: got.extend(w))
    t.start()
    s.put("a", "1")
    wait_until(lambda: len(got) == 1, "the event")
    s.close()
    t.join(PATIENCE)
    assert not t.is_alive() and [e.key for e in got] == [b"a"]


def test_close_from_another_thread(store: Store) -> None:
    w = store.watch()
    done = threading.Event()
    got: list = []

    def reader() -> None:
        got.extend(w)
        done.set()

    t = threading.Thread(target=reader)
    t.start()
    store.put("a", "1")
    wait_until(lambda: len(got) == 1, "the event")
    w.close()
    assert done.wait(PATIENCE)
    t.join()
    wait_until(lambda: store.watcher_count == 0, "the watch to be freed")


def test_progress_events(store: Store) -> None:
    store.put("a", "1")
    w = store.watch(prefix="zzz", progress_interval_ms=20, timeout=PATIENCE)
    ev = next(w)
    assert ev.kind == PROGRESS and ev.revision == 1 and ev.key == b""
    assert not ev.is_terminal
    store.put("b", "2")  # not matching: progress moves on
    wait_until(lambda: next(w).revision == 2, "progress at revision 2")
    w.close()


def test_watch_keeps_store_alive_until_dropped() -> None:
    s = Store()
    ref = weakref.ref(s)
    w = s.watch(start_revision=1, timeout=PATIENCE)
    s.put("a", "1")
    del s
    gc.collect()
    assert ref() is not None  # the watch holds its store
    assert next(w).key == b"a"
    del w
    gc.collect()
    assert ref() is None  # both gone: the store was closed by the collector


def test_watch_garbage_collected_is_closed(store: Store) -> None:
    store.put("a", "1")
    store.watch()
    gc.collect()
    assert store.watcher_count == 0
    # an abandoned iteration too
    for _ in store.watch(start_revision=1, timeout=PATIENCE):
        break
    gc.collect()
    assert store.watcher_count == 0


def test_repr_and_id(store: Store) -> None:
    w = store.watch(prefix="p")
    assert w.id > 0 and "prefix=b'p'" in repr(w)
    w.close()
    assert w.id == 0 and "closed" in repr(w)


def test_several_readers_are_serialized(store: Store) -> None:
    w = store.watch(timeout=PATIENCE)
    n = 400
    got: list = []
    lock = threading.Lock()

    def reader() -> None:
        while True:
            batch = w.next_batch()
            if not batch:
                return
            with lock:
                got.extend(batch)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(n):
        store.put(f"k{i}", "v")
    wait_until(lambda: len(got) == n, "all events")
    store.close()
    for t in threads:
        t.join(PATIENCE)
    assert sorted(e.revision for e in got) == list(range(1, n + 1))


def test_next_then_next_batch_returns_the_rest_of_the_delivery(store: Store) -> None:
    w = store.watch(timeout=PATIENCE)
    with store.batch() as b:
        b.put("a", "1").put("b", "2").put("c", "3")
    assert next(w).key == b"a"
    assert [e.key for e in w.next_batch()] == [b"b", b"c"]  # what was fetched, not yet yielded
    store.close()
    with pytest.raises(StopIteration):
        next(w)


def test_close_inside_the_loop_yields_nothing_more(store: Store) -> None:
    # Issue 18.1 for iterators: the three events of one commit are fetched together; closing
    # the watch on the first one ends the iteration there.
    w = store.watch(prefix="c/", timeout=PATIENCE)
    with store.batch() as b:
        b.put("c/1", "1").put("c/2", "2").put("c/3", "3")
    got = []
    for ev in w:
        got.append(ev.key)
        w.close()
    assert got == [b"c/1"]
    assert w.next_batch(timeout=0) == []


def test_close_from_another_thread_while_blocked_yields_nothing_after(store: Store) -> None:
    w = store.watch(prefix="c/", timeout=PATIENCE)
    it = iter(w)
    store.put("c/0", "0")
    assert next(it).key == b"c/0"
    # Another thread closes the watch while this one will fetch the next delivery.
    with store.batch() as b:
        b.put("c/1", "1").put("c/2", "2")
    w.close()
    assert list(it) == []


@pytest.mark.parametrize("start", [0, 1])
def test_closed_store_pull_watch_yields_every_committed_event_then_ends(start: int) -> None:
    # Issue 18.2: a pull watch of a closed store yields every matching event up to the
    # revision current at close, then ends -- replaying (start_revision=1) or live.
    s = Store()
    w = s.watch(prefix="t/", start_revision=start, timeout=PATIENCE)
    for i in range(4):
        s.put(f"t/{i}", str(i))
    s.put("other", "x")  # not matched
    s.close()
    assert [e.key for e in w] == [b"t/0", b"t/1", b"t/2", b"t/3"]
    assert w.terminal is not None and w.terminal.kind == CLOSED
    assert list(w) == []


def test_closed_store_pull_watch_with_a_small_queue_yields_the_whole_backlog() -> None:
    # More events than max_queue: the rest comes from the log, still up to the close.
    s = Store()
    w = s.watch(start_revision=1, max_queue=2, timeout=PATIENCE)
    for i in range(50):
        s.put(f"k{i:02}", str(i))
    s.close()
    assert [e.revision for e in w] == list(range(1, 51))
