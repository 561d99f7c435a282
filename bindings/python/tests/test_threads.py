"""Several Python threads writing and watching one store at once."""

from __future__ import annotations

import threading
from typing import Dict, List

from tidemark import PUT, Event, Store
from conftest import PATIENCE, wait_until

WRITERS = 4
PER_WRITER = 500


def test_writers_and_watchers_at_once(store: Store) -> None:
    start = threading.Barrier(WRITERS + 3)
    errors: List[BaseException] = []

    # watchers of every style, all started before the writes
    pulled: List[Event] = []
    pushed: List[Event] = []
    pushed_w1: List[Event] = []
    pull = store.watch(timeout=PATIENCE)
    push = store.watch(callback=pushed.append)
    push_w1 = store.watch(prefix="w1/", callback=pushed_w1.append, max_queue=5)

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(PER_WRITER):
                if i % 50 == 49:
                    with store.batch() as b:
                        b.put(f"w{n}/b{i}", "x").put(f"w{n}/c{i}", "y")
                else:
                    store.put(f"w{n}/{i % 20}", str(i))
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    total = WRITERS * (PER_WRITER + PER_WRITER // 50)

    def puller() -> None:
        try:
            start.wait()
            for ev in pull:
                pulled.append(ev)
                if len(pulled) == total:
                    return
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    def reader() -> None:  # concurrent reads while all this happens
        try:
            start.wait()
            while store.revision < total:
                page = store.changes(max(1, store.revision - 50), limit=100)
                revs = [e.revision for e in page]
                assert revs == sorted(revs)
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    threads += [threading.Thread(target=puller), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join(PATIENCE * 3)
    assert errors == []
    assert not any(t.is_alive() for t in threads)
    wait_until(lambda: len(pushed) == total, "push deliveries")

    expected = list(range(1, total + 1))
    assert [e.revision for e in pulled] == expected
    assert [e.revision for e in pushed] == expected
    assert pulled == pushed
    # per-writer order is preserved within the global order
    per: Dict[int, List[int]] = {}
    for e in pulled:
        per.setdefault(int(e.key.split(b"/")[0][1:]), []).append(e.revision)
    assert all(r == sorted(r) for r in per.values())
    w1 = [e for e in pulled if e.key.startswith(b"w1/")]
    wait_until(lambda: len(pushed_w1) == len(w1), "the prefix watcher")
    assert pushed_w1 == w1
    assert all(e.kind == PUT for e in pulled)
    push.cancel()
    push_w1.cancel()
    pull.close()


def test_many_threads_each_with_its_own_watch(store: Store) -> None:
    n_threads = 6
    results: Dict[int, List[int]] = {}
    ready = threading.Barrier(n_threads + 1)

    def consume(n: int) -> None:
        w = store.watch(prefix=f"t{n}/", timeout=PATIENCE)
        ready.wait()
        got = []
        for ev in w:
            got.append(int(ev.value))
            if len(got) == 100:
                break
        w.close()
        results[n] = got

    threads = [threading.Thread(target=consume, args=(n,)) for n in range(n_threads)]
    for t in threads:
        t.start()
    ready.wait()
    for i in range(100):
        for n in range(n_threads):
            store.put(f"t{n}/k", str(i))
    for t in threads:
        t.join(PATIENCE)
    assert results == {n: list(range(100)) for n in range(n_threads)}
