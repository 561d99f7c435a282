"""``async for`` watches (asyncio)."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any, List

import pytest

import tidemark
from tidemark import PUT, Event, Store
from conftest import PATIENCE, wait_until


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, PATIENCE))


def test_async_live_from_another_thread(store: Store) -> None:
    async def main() -> List[Event]:
        got: List[Event] = []
        aw = store.awatch(prefix="t/")  # starts now: the writes below are all seen
        t = threading.Thread(target=lambda: [store.put(f"t/{i}", str(i)) for i in range(5)])
        t.start()
        async for ev in aw:
            got.append(ev)
            if len(got) == 5:
                break
        await aw.aclose()
        t.join()
        return got

    got = run(main())
    assert [e.key for e in got] == [f"t/{i}".encode() for i in range(5)]
    assert [e.revision for e in got] == [1, 2, 3, 4, 5]
    wait_until(lambda: store.watcher_count == 0, "the watch to end")


def test_async_start_in_past_then_live(store: Store) -> None:
    for i in range(10):
        store.put("k", str(i))

    async def main() -> List[int]:
        got: List[int] = []
        async with store.awatch(start_revision=4) as aw:
            async for ev in aw:
                got.append(ev.revision)
                if ev.revision == 10:
                    store.put("k", "live")  # from the loop thread itself
                if ev.revision == 11:
                    break
        return got

    assert run(main()) == list(range(4, 12))


def test_async_for_on_a_watch_continues_where_it_was(store: Store) -> None:
    w = store.watch(timeout=PATIENCE)
    store.put("a", "1")
    store.put("b", "2")
    assert next(w).key == b"a"  # b is now fetched but not yet yielded

    async def main() -> List[bytes]:
        got: List[bytes] = []
        store.put("c", "3")
        async for ev in w:
            got.append(ev.key)
            if len(got) == 2:
                break
        return got

    assert run(main()) == [b"b", b"c"]


def test_async_stops_on_close(store: Store) -> None:
    async def main() -> List[Event]:
        aw = store.awatch()
        got: List[Event] = []
        store.put("a", "1")

        async def closer() -> None:
            await asyncio.sleep(0)
            while not got:
                await asyncio.sleep(0.001)
            store.close()

        task = asyncio.create_task(closer())
        async for ev in aw:
            got.append(ev)
        await task
        return got

    got = run(main())
    assert [e.kind for e in got] == [PUT]


def test_async_compacted_raises(store: Store) -> None:
    async def main() -> Any:
        aw = store.awatch(prefix="k", max_queue=2)
        store.put("k-first", "v")
        got: List[int] = []
        with pytest.raises(tidemark.CompactedError) as ei:
            async for ev in aw:
                got.append(ev.revision)
                if len(got) == 1:
                    # fall behind: many writes and a compaction while we hold little credit
                    for i in range(50):
                        store.put(f"k{i}", "v")
                    store.compact(store.revision + 1)
        with pytest.raises(StopAsyncIteration):
            await aw.__anext__()  # over
        return got, ei.value

    got, err = run(main())
    assert err.earliest_revision == 52
    assert got == list(range(1, len(got) + 1))  # gap-free up to the terminal event


def test_async_slow_consumer_bounded_and_lossless(store: Store) -> None:
    n = 3000

    async def main() -> Any:
        aw = store.awatch(max_queue=16)
        got: List[int] = []
        peak = 0
        t = threading.Thread(target=lambda: [store.put(f"k{i % 7}", str(i)) for i in range(n)])
        t.start()
        async for ev in aw:
            got.append(ev.revision)
            peak = max(peak, len(aw._buf))
            if len(got) % 100 == 0:
                await asyncio.sleep(0.001)  # slow consumer
            if len(got) == n:
                break
        t.join()
        await aw.aclose()
        return got, peak

    got, peak = run(main())
    assert got == list(range(1, n + 1))
    assert peak <= 16 + 16  # credit + at most one commit beyond it


def test_abandoned_async_watch_is_cancelled(store: Store) -> None:
    async def main() -> None:
        async for ev in store.awatch(start_revision=1):
            break

    store.put("a", "1")
    run(main())
    gc.collect()
    wait_until(lambda: store.watcher_count == 0, "the abandoned watch to be cancelled")


def test_async_loop_closed_watch_cancels_itself(store: Store) -> None:
    holder: List[Any] = []

    async def main() -> None:
        aw = store.awatch()
        holder.append(aw)
        store.put("a", "1")
        async for ev in aw:
            break

    run(main())  # the loop is closed now, the watch still referenced
    store.put("b", "2")  # its delivery finds the loop closed: the watch cancels itself
    wait_until(lambda: store.watcher_count == 0, "self-cancel")


def test_async_compacted_at_open(store: Store) -> None:
    store.put("a", "1")
    store.put("a", "2")
    store.compact(2)

    async def main() -> None:
        async for _ in store.awatch(start_revision=1):
            pass  # pragma: no cover

    with pytest.raises(tidemark.CompactedError):
        run(main())


def test_many_async_watches_one_loop(store: Store) -> None:
    async def consume(prefix: str, n: int) -> List[bytes]:
        out: List[bytes] = []
        async for ev in store.awatch(prefix=prefix, start_revision=1):
            out.append(ev.key)
            if len(out) == n:
                break
        return out

    async def main() -> Any:
        tasks = [asyncio.create_task(consume(f"p{j}/", 20)) for j in range(5)]
        await asyncio.sleep(0)
        for i in range(20):
            for j in range(5):
                store.put(f"p{j}/{i}", "v")
            await asyncio.sleep(0)
        return await asyncio.gather(*tasks)

    results = run(main())
    for j, keys in enumerate(results):
        assert keys == [f"p{j}/{i}".encode() for i in range(20)]


def test_async_watch_sync_close_and_repr(store: Store) -> None:
    async def main() -> None:
        aw = store.awatch(prefix="p")
        assert "prefix=b'p'" in repr(aw) and "open" in repr(aw)
        store.put("p1", "x")
        assert (await aw.__anext__()).key == b"p1"
        aw.close()
        assert "ended" in repr(aw)
        with pytest.raises(StopAsyncIteration):
            await aw.__anext__()

    run(main())
    wait_until(lambda: store.watcher_count == 0, "the watch to end")


def test_async_aclose_drops_deliveries_already_scheduled(store: Store) -> None:
    # Issue 18.1 for async: a delivery the store thread handed to the loop before aclose()
    # must not reach a reader that was already waiting.
    async def main() -> List[bytes]:
        aw = store.awatch(prefix="c/")
        got: List[bytes] = []

        async def reader() -> None:
            async for ev in aw:
                got.append(ev.key)

        task = asyncio.ensure_future(reader())
        while aw._handle is None:  # the reader opens the push watch
            await asyncio.sleep(0)
        handed = threading.Event()
        deliver = aw._handle._callback
        assert deliver is not None

        def spy(events: Any) -> None:
            deliver(events)  # schedules the push on the loop
            handed.set()

        aw._handle._callback = spy
        with store.batch() as b:
            b.put("c/1", "1").put("c/2", "2")
        assert handed.wait(PATIENCE)  # the loop is blocked here: the push is queued, not run
        await aw.aclose()
        await task
        return got

    assert run(main()) == []


def test_async_close_inside_the_loop_yields_nothing_more(store: Store) -> None:
    async def main() -> List[bytes]:
        aw = store.awatch(prefix="c/")
        with store.batch() as b:
            b.put("c/1", "1").put("c/2", "2").put("c/3", "3")
        got = []
        async for ev in aw:
            got.append(ev.key)
            await aw.aclose()
        return got

    assert run(main()) == [b"c/1"]


def test_async_watch_of_a_closed_store_yields_the_backlog_then_stops() -> None:
    # Issue 18.2 for async: the push watch behind it replays from start_revision=1; closing
    # the store still yields all of it, then the iteration stops.
    s = Store()
    for i in range(4):
        s.put(f"t/{i}", str(i))

    async def main() -> List[bytes]:
        aw = s.awatch(prefix="t/", start_revision=1)
        got = [(await aw.__anext__()).key]
        s.close()
        async for ev in aw:
            got.append(ev.key)
        return got

    assert run(main()) == [b"t/0", b"t/1", b"t/2", b"t/3"]
