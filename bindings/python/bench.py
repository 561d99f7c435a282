#!/usr/bin/env python3
"""Benchmarks of the Python binding (run by `make bench`). Prints one line per measurement.

Workload (the same as the core benchmark): 16-byte keys over 100 k distinct keys, 100-byte
values, in-memory store. Each figure is the best of REPEAT runs (the machine is shared, the
best run is the least disturbed one). Nothing here is a test: numbers are reported, never
asserted.

    PYTHONPATH=bindings/python python3 bindings/python/bench.py [--quick]
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import platform
import sqlite3
import sys
import threading
import time
from ctypes import byref, c_uint64, c_void_p
from typing import Callable, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tidemark  # noqa: E402
from tidemark import _events, _ffi  # noqa: E402

QUICK = "--quick" in sys.argv
REPEAT = 2 if QUICK else 5
N_PUTS = 100_000 if QUICK else 300_000
N_EVENTS = 100_000 if QUICK else 200_000
DISTINCT = 100_000
VALUE = b"v" * 100
KEYS = [b"key-%012d" % (i % DISTINCT) for i in range(max(N_PUTS, N_EVENTS))]  # 16 bytes each
assert len(KEYS[0]) == 16


def best(fn: Callable[[], Tuple[int, float]], repeat: int = REPEAT) -> Tuple[float, float]:
    """Runs fn (returns (ops, seconds)) `repeat` times; returns (best ops/s, median ops/s)."""
    rates = []
    for _ in range(repeat):
        gc.collect()
        n, dt = fn()
        rates.append(n / dt)
    rates.sort()
    return rates[-1], rates[len(rates) // 2]


def report(what: str, rate: Tuple[float, float], unit: str = "ops/s", note: str = "") -> None:
    b, m = rate
    print(
        f"{what:<58} {b:>12,.0f} {unit:<9} {1e9 / b:>10,.0f} ns each  (median {m:,.0f}){'  ' + note if note else ''}",
        flush=True,
    )


def filled_store(n: int, mixed: bool = False) -> tidemark.Store:
    s = tidemark.Store()
    put = s.put
    if mixed:
        for i in range(n):
            k = KEYS[i][: 8 + i % 9]
            put(k, VALUE[: (i * 7) % 150]) if i % 10 else (s.delete(k) if s.get(k) else put(k, b"x"))
    else:
        for i in range(n):  # one commit per put: pages end where the limit says
            put(KEYS[i], VALUE)
    return s


# -- writes ---------------------------------------------------------------------------------


def bench_put(keys: List, value: object) -> Callable[[], Tuple[int, float]]:
    def run() -> Tuple[int, float]:
        with tidemark.Store() as s:
            put = s.put
            t = time.perf_counter()
            for k in keys:
                put(k, value)
            return len(keys), time.perf_counter() - t

    return run


def bench_batch(size: int) -> Callable[[], Tuple[int, float]]:
    def run() -> Tuple[int, float]:
        with tidemark.Store() as s:
            t = time.perf_counter()
            keys = KEYS[:N_PUTS]
            for i in range(0, len(keys), size):
                with s.batch() as b:
                    bput = b.put
                    for k in keys[i : i + size]:
                        bput(k, VALUE)
            return len(keys), time.perf_counter() - t

    return run


def bench_raw_put() -> Tuple[int, float]:
    """The same puts straight through the declared ctypes function (no binding code)."""
    with tidemark.Store() as s:
        h = s._h
        put = _ffi.store_put
        out = c_uint64()
        ref = byref(out)
        v = VALUE
        lv = len(v)
        keys = KEYS[:N_PUTS]
        t = time.perf_counter()
        for k in keys:
            put(h, k, 16, v, lv, ref)
        return len(keys), time.perf_counter() - t


def bench_noop_call() -> Tuple[int, float]:
    """A trivial C call (tidemark_store_current_revision) through ctypes: the per-call floor."""
    with tidemark.Store() as s:
        h = s._h
        f = _ffi.store_current_revision
        n = 300_000
        t = time.perf_counter()
        for _ in range(n):
            f(h)
        return n, time.perf_counter() - t


def bench_get() -> Tuple[int, float]:
    s = filled_store(DISTINCT)
    get = s.get
    keys = KEYS[:DISTINCT]
    t = time.perf_counter()
    for k in keys:
        get(k)
    dt = time.perf_counter() - t
    s.close()
    return len(keys), dt


# -- reads ----------------------------------------------------------------------------------


def bench_changes(store: tidemark.Store, limit: int) -> Callable[[], Tuple[int, float]]:
    def run() -> Tuple[int, float]:
        n = 0
        frm = 1
        t = time.perf_counter()
        while True:
            page = store.changes(frm, limit=limit)
            for ev in page.events:  # touch every event (the list exists already)
                pass
            n += len(page.events)
            if not page.has_more:
                break
            frm = page.next_revision
        return n, time.perf_counter() - t

    return run


def bench_iter_changes(store: tidemark.Store) -> Tuple[int, float]:
    t = time.perf_counter()
    n = 0
    for ev in store.iter_changes(1, page_size=1000):
        n += 1
    return n, time.perf_counter() - t


def bench_changes_consumed(store: tidemark.Store) -> Tuple[int, float]:
    """changes + reading every field of every event in Python (what a consumer does)."""
    t = time.perf_counter()
    total = 0
    for ev in store.iter_changes(1, page_size=1000):
        total += len(ev.key) + len(ev.value) + ev.revision
    return store.revision, time.perf_counter() - t


def bench_field_by_field(store: tidemark.Store, limit: int = 1000) -> Tuple[int, float]:
    """The naive way, for comparison: each field of each event read through ctypes."""
    E = _ffi.EventStruct
    out = c_void_p()
    t = time.perf_counter()
    store._call(_ffi.store_changes, None, 1, 0, limit, byref(out))
    h = out.value
    n = _ffi.events_len(h)
    arr = ctypes.cast(_ffi.events_data(h), ctypes.POINTER(E))
    res = []
    for i in range(n):
        e = arr[i]
        res.append(
            (e.revision, e.kind, ctypes.string_at(e.key.ptr, e.key.len), ctypes.string_at(e.value.ptr, e.value.len), e.create_revision, e.version)
        )
    _ffi.events_free(h)
    return n, time.perf_counter() - t


def bench_decode_only(store: tidemark.Store) -> Tuple[int, float]:
    """Decoding a 1000-event batch already in memory (no C call in the loop)."""
    out = c_void_p()
    store._call(_ffi.store_changes, None, 1, 0, 1000, byref(out))
    h = out.value
    try:
        reps = 200
        t = time.perf_counter()
        for _ in range(reps):
            evs = _events.decode_events(h)
        return reps * len(evs), time.perf_counter() - t
    finally:
        _ffi.events_free(h)


def bench_decode_nogc(store: tidemark.Store) -> Tuple[int, float]:
    """The same with the cyclic GC paused (the binding never does this itself)."""
    gc.disable()
    try:
        return bench_decode_only(store)
    finally:
        gc.enable()


def bench_sqlite(n: int) -> Tuple[int, float]:
    """For scale: sqlite3 fetchall on a change table with the same rows."""
    db = sqlite3.connect(":memory:")
    db.execute("create table changes(revision integer primary key, kind integer, key blob, value blob, create_revision integer, version integer)")
    db.executemany("insert into changes values (?,?,?,?,?,?)", ((i + 1, 1, KEYS[i], VALUE, i + 1, 1) for i in range(n)))
    db.commit()
    t = time.perf_counter()
    rows = db.execute("select * from changes where revision >= ? order by revision", (1,)).fetchall()
    dt = time.perf_counter() - t
    db.close()
    return len(rows), dt


# -- watches --------------------------------------------------------------------------------


def bench_watch_replay(store: tidemark.Store) -> Tuple[int, float]:
    """An iterator watch replaying the log from revision 1 (the catch-up path)."""
    n = store.revision
    t = time.perf_counter()
    with store.watch(start_revision=1, timeout=10) as w:
        i = 0
        for ev in w:
            i += 1
            if i == n:
                break
    return n, time.perf_counter() - t


def bench_watch_live(batch: int) -> Callable[[], Tuple[int, float]]:
    """A writer thread commits (in batches of `batch` puts) while an iterator watch consumes."""

    def run() -> Tuple[int, float]:
        n = N_EVENTS // 2
        with tidemark.Store() as s:
            w = s.watch(timeout=10, max_queue=10_000)

            def writer() -> None:
                if batch == 1:
                    for k in KEYS[:n]:
                        s.put(k, VALUE)
                else:
                    for i in range(0, n, batch):
                        with s.batch() as b:
                            for k in KEYS[i : i + batch]:
                                b.put(k, VALUE)

            th = threading.Thread(target=writer)
            t = time.perf_counter()
            th.start()
            i = 0
            for ev in w:
                i += 1
                if i == n:
                    break
            dt = time.perf_counter() - t
            th.join()
            w.close()
        return n, dt

    return run


def bench_callback(store_events: int) -> Tuple[int, float]:
    """A push watch replaying the log into a Python callback (per event)."""
    s = filled_store(store_events)
    done = threading.Event()
    count = [0]

    def cb(ev: tidemark.Event) -> None:
        count[0] += 1
        if count[0] == store_events:
            done.set()

    t = time.perf_counter()
    h = s.watch(start_revision=1, callback=cb)
    done.wait(60)
    dt = time.perf_counter() - t
    h.cancel()
    s.close()
    return count[0], dt


def bench_async(store: tidemark.Store) -> Tuple[int, float]:
    n = store.revision

    async def main() -> float:
        t = time.perf_counter()
        i = 0
        async for ev in store.awatch(start_revision=1, max_queue=5000):
            i += 1
            if i == n:
                break
        return time.perf_counter() - t

    return n, asyncio.run(main())


def bench_latency(samples: int = 2000) -> List[float]:
    """put -> callback latency, measured in Python (time.perf_counter in both threads)."""
    with tidemark.Store() as s:
        lat: List[float] = []
        got = threading.Event()
        sent = [0.0]

        def cb(ev: tidemark.Event) -> None:
            lat.append(time.perf_counter() - sent[0])
            got.set()

        h = s.watch(callback=cb)
        for i in range(samples):
            got.clear()
            sent[0] = time.perf_counter()
            s.put(KEYS[i], VALUE)
            got.wait(5)
        h.cancel()
    lat.sort()
    return lat


def bench_durable(threads: int, seconds: float = 1.5) -> Tuple[int, float]:
    """Durable puts with sync="always" from `threads` Python threads: the GIL is released
    while a writer waits for fsync, so the library's group commit can batch them."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        s = tidemark.Store(d, sync="always")
        counts = [0] * threads
        stop = time.monotonic() + seconds

        def writer(n: int) -> None:
            i = 0
            while time.monotonic() < stop:
                s.put(b"t%02d-%011d" % (n, i % 1000), VALUE)
                i += 1
            counts[n] = i

        ts = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
        t = time.perf_counter()
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        dt = time.perf_counter() - t
        s.close()
    return sum(counts), dt


def durable_supported() -> bool:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        try:
            tidemark.Store(d).close()
            return True
        except tidemark.InvalidArgumentError:
            return False


def main() -> None:
    print(f"tidemark Python binding benchmarks: library {tidemark.library_version} at {tidemark.library_path}")
    print(f"Python {platform.python_version()} ({platform.python_implementation()}), {platform.machine()}, {os.cpu_count()} CPUs; best of {REPEAT}")
    print()
    print("-- writes (16-byte keys over 100k distinct keys, 100-byte values)")
    report("ctypes floor: trivial C call (current_revision)", best(bench_noop_call), "calls/s")
    report("raw ctypes put (declared function, no binding code)", best(bench_raw_put))
    report("Store.put, bytes key and value", best(bench_put(KEYS[:N_PUTS], VALUE)))
    report("Store.put, str key and value", best(bench_put([k.decode() for k in KEYS[:N_PUTS]], VALUE.decode())))
    for size in (10, 100, 1000):
        report(f"Batch.put + commit, {size} puts per batch", best(bench_batch(size)))
    report("Store.get (hit)", best(bench_get))

    print()
    print(f"-- reads ({N_EVENTS} events in the log)")
    uniform = filled_store(N_EVENTS)
    for limit in (1, 10, 100, 1000, 10_000):
        report(f"changes, limit={limit}", best(bench_changes(uniform, limit)), "events/s")
    report("iter_changes (page_size=1000)", best(lambda: bench_iter_changes(uniform)), "events/s")
    report("iter_changes + read every field", best(lambda: bench_changes_consumed(uniform)), "events/s")
    report("decode only, 1000-event batch (no C call)", best(lambda: bench_decode_only(uniform)), "events/s")
    report("decode only, cyclic GC paused (see docs)", best(lambda: bench_decode_nogc(uniform)), "events/s")
    report("field-by-field ctypes decoding (for comparison)", best(lambda: bench_field_by_field(uniform)), "events/s")
    mixed = filled_store(N_EVENTS, mixed=True)
    report("changes limit=1000, mixed key/value sizes + deletes", best(bench_changes(mixed, 1000)), "events/s")
    mixed.close()
    report("sqlite3 fetchall of the same rows (for scale)", best(lambda: bench_sqlite(N_EVENTS)), "rows/s")

    print()
    print("-- watches")
    report("iterator watch, replay from revision 1", best(lambda: bench_watch_replay(uniform)), "events/s")
    report("iterator watch, live, writer thread: single puts", best(bench_watch_live(1), max(2, REPEAT // 2)), "events/s")
    report("iterator watch, live, writer thread: 100-put batches", best(bench_watch_live(100), max(2, REPEAT // 2)), "events/s")
    report("callback watch, replay, per-event callback", best(lambda: bench_callback(N_EVENTS // 2), max(2, REPEAT // 2)), "events/s")
    report("async for (awatch), replay from revision 1", best(lambda: bench_async(uniform), max(2, REPEAT // 2)), "events/s")
    uniform.close()
    if durable_supported():
        print()
        print("-- durable store, sync=\"always\" (temporary directory), puts from N Python threads")
        for threads in (1, 4, 16):
            report(f"durable put, {threads} thread(s)", best(lambda: bench_durable(threads), 1))
    lat = bench_latency()
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6  # noqa: E731
    print(f"{'put -> Python callback latency (2000 samples)':<58} p50 {pct(0.5):.0f} us, p99 {pct(0.99):.0f} us, max {lat[-1] * 1e6:.0f} us")


if __name__ == "__main__":
    main()
