"""Every exception class, raised by a real failing call wherever the library can produce it."""

from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from ctypes import byref, c_void_p

import pytest

import tidemark
from tidemark import Store, _ffi
from tidemark.errors import error_for_status


def test_null_argument_from_the_library() -> None:
    # The binding never passes NULL; the raw layer shows the library's own check.
    with pytest.raises(tidemark.NullArgumentError, match="store"):
        _ffi.store_put(None, b"k", 1, b"v", 1, None)
    with Store() as s:
        with pytest.raises(tidemark.NullArgumentError) as ei:
            s._call(_ffi.store_put, None, 3, b"v", 1, None)  # NULL key with a length
        assert ei.value.status == 1 and ei.value.status_name == "TIDEMARK_ERR_NULL_ARGUMENT"


def test_invalid_argument(store: Store) -> None:
    with pytest.raises(tidemark.InvalidArgumentError, match="empty") as ei:
        store.put("", "v")
    assert isinstance(ei.value, ValueError)
    assert ei.value.status_name == "TIDEMARK_ERR_INVALID_ARGUMENT"
    with pytest.raises(tidemark.InvalidArgumentError):
        store.watch(key="")
    with pytest.raises(tidemark.InvalidArgumentError):
        store.range(start="b", end="a")
    with pytest.raises(tidemark.InvalidArgumentError):
        store.changes(1, key="")
    with pytest.raises(TypeError):
        store.range(key="a", prefix="b")
    # keys starting with the byte 0 belong to tidemark's features (the reserved namespace)
    for call in (
        lambda: store.put(b"\0s/x", "v"),
        lambda: store.get(b"\0"),
        lambda: store.delete(b"\0x"),
        lambda: store.range(prefix=b"\0"),
        lambda: store.changes(1, key=b"\0k"),
        lambda: store.watch(prefix=b"\0s/"),
    ):
        with pytest.raises(tidemark.InvalidArgumentError, match="reserved"):
            call()


def test_not_found(store: Store) -> None:
    with pytest.raises(tidemark.NotFoundError) as ei:
        store.delete("missing")
    assert isinstance(ei.value, KeyError)
    assert "missing" in str(ei.value)  # not KeyError's repr-quoting
    assert store.revision == 0  # took no revision
    with pytest.raises(tidemark.NotFoundError, match="watch"):
        store._unwatch(12345)


def test_compacted(store: Store) -> None:
    for i in range(10):
        store.put("k", str(i))
    assert store.compact(6) == 5
    assert store.earliest_revision == 6
    with pytest.raises(tidemark.CompactedError) as ei:
        store.changes(2)
    assert ei.value.earliest_revision == 6
    assert ei.value.revision == 6
    assert "6" in str(ei.value)
    with pytest.raises(tidemark.CompactedError) as ei2:
        store.watch(start_revision=3)
    assert ei2.value.earliest_revision == 6
    with pytest.raises(tidemark.CompactedError):
        store.watch(start_revision=3, callback=lambda e: None)
    # the current state of keys survives compaction
    assert store.get("k").value == b"9"  # type: ignore[union-attr]


def test_future_revision(store: Store) -> None:
    store.put("a", "1")
    store.put("a", "2")
    with pytest.raises(tidemark.FutureRevisionError) as ei:
        store.changes(4)
    assert ei.value.current_revision == 2
    assert store.changes(3).events == []  # current + 1 is fine
    with pytest.raises(tidemark.FutureRevisionError) as ei:
        store.compact(10)
    assert ei.value.current_revision == 2
    with pytest.raises(tidemark.FutureRevisionError):
        store.watch(start_revision=10)


def test_conflict(store: Store) -> None:
    store.put("k", "v")
    store.put("k", "v")
    with pytest.raises(tidemark.ConflictError) as ei:
        store.put_if("k", "w", 1)
    assert ei.value.current_revision == 2
    assert ei.value.status == 6


def test_watch_timeout(store: Store) -> None:
    with store.watch() as w:
        with pytest.raises(tidemark.WatchTimeout) as ei:
            w.next_batch(timeout=0.01)
        assert isinstance(ei.value, TimeoutError)
    # straight from the library
    out = c_void_p()
    store._call(_ffi.watch_open, None, None, byref(out))
    try:
        with pytest.raises(tidemark.WatchTimeout) as ei2:
            _ffi.watch_next(out.value, 0, byref(c_void_p()))
        assert ei2.value.status_name == "TIDEMARK_ERR_TIMEOUT"
    finally:
        _ffi.watch_close(out.value)


def test_closed_from_the_library() -> None:
    s = Store()
    out = c_void_p()
    s._call(_ffi.watch_open, None, None, byref(out))
    h = out.value
    try:
        s.close()
        ev = c_void_p()
        _ffi.watch_next(h, 1000, byref(ev))  # the CLOSED event
        events, _ = tidemark._events.take_events(ev.value)
        assert [e.kind for e in events] == [tidemark.CLOSED]
        with pytest.raises(tidemark.ClosedError) as ei:
            _ffi.watch_next(h, 0, byref(ev))
        assert ei.value.status_name == "TIDEMARK_ERR_CLOSED"
    finally:
        _ffi.watch_close(h)
    with pytest.raises(tidemark.ClosedError):  # and from the binding
        s.put("a", "b")


def test_too_large() -> None:
    with Store(max_key_size=4, max_value_size=8) as s:
        with pytest.raises(tidemark.TooLargeError, match="max_key_size"):
            s.put("12345", "v")
        with pytest.raises(tidemark.TooLargeError, match="max_value_size"):
            s.put("k", "123456789")
        with pytest.raises(tidemark.TooLargeError):
            with s.batch() as b:
                b.put("ok", "ok").put("k", "x" * 9)
        assert s.revision == 0


def _durable_supported() -> bool:
    with tempfile.TemporaryDirectory() as d:
        try:
            Store(d).close()
            return True
        except tidemark.InvalidArgumentError:
            return False


durable = pytest.mark.skipif(not _durable_supported(), reason="this libtidemark has no durable stores yet")


@durable
def test_locked(tmp_path: Path) -> None:  # pragma: no cover - depends on the library
    d = tmp_path / "store"
    with Store(d):
        with pytest.raises(tidemark.LockedError, match="store"):
            Store(d)
    Store(d).close()  # free again once closed


@durable
def test_corrupt(tmp_path: Path) -> None:  # pragma: no cover - depends on the library
    d = tmp_path / "store"
    try:
        s = Store(d, segment_size=4096)
    except tidemark.InvalidArgumentError:
        pytest.skip("this library has no segment_size option")
    with s:
        for i in range(200):
            s.put(f"k{i}", "v" * 100)
    segments = sorted(d.glob("seg-*.log"))
    if len(segments) < 2:
        pytest.skip("the log layout is not the one this test knows (seg-*.log files)")
    data = bytearray(segments[0].read_bytes())
    data[200] ^= 0xFF  # inside a record of a segment that is not the last
    segments[0].write_bytes(bytes(data))
    with pytest.raises(tidemark.CorruptError) as ei:
        Store(d)
    assert ei.value.status_name == "TIDEMARK_ERR_CORRUPT"


@durable
def test_io_error_from_a_failed_write(tmp_path: Path) -> None:  # pragma: no cover - depends on the library
    # A file size limit makes the log's write fail with EFBIG: TIDEMARK_ERR_IO. In a child
    # process, so the limit does not touch the test run.
    code = f"""
import resource, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
import tidemark
s = tidemark.Store({str(tmp_path / "store")!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
try:
    for i in range(1000):
        s.put("k%d" % i, "v" * 1000)
    print("no error")
except tidemark.TidemarkIOError as e:
    assert isinstance(e, OSError)
    print("IO", e.status_name, e)
s.get("k0")  # reads go on
print("reads ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    if "no error" in r.stdout:
        pytest.skip("the file size limit did not make a write fail")
    assert "IO TIDEMARK_ERR_IO" in r.stdout and "reads ok" in r.stdout, r.stdout


def test_status_mapping_for_every_class() -> None:
    """Every class through the mapping the errcheck uses; PANIC cannot be produced on demand
    (nor IO, CORRUPT and LOCKED with a library without durable stores)."""
    expected = {
        1: tidemark.NullArgumentError,
        2: tidemark.InvalidArgumentError,
        3: tidemark.NotFoundError,
        4: tidemark.CompactedError,
        5: tidemark.FutureRevisionError,
        6: tidemark.ConflictError,
        7: tidemark.WatchTimeout,
        8: tidemark.ClosedError,
        9: tidemark.TidemarkIOError,
        10: tidemark.CorruptError,
        11: tidemark.LockedError,
        12: tidemark.TooLargeError,
        13: tidemark.PanicError,
    }
    for status, cls in expected.items():
        e = error_for_status(status, "msg", 7)
        assert type(e) is cls
        assert isinstance(e, tidemark.TidemarkError)
        assert e.status == status and e.revision == 7 and str(e) == "msg"
        assert e.status_name == tidemark.status_name(status)
    assert isinstance(error_for_status(99, "x"), tidemark.UnknownStatusError)
    assert isinstance(error_for_status(9, "x"), OSError)


def test_exceptions_pickle() -> None:
    e = error_for_status(4, "compacted", 12)
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is tidemark.CompactedError and e2.earliest_revision == 12 and str(e2) == "compacted"


def test_last_error_is_per_thread(store: Store) -> None:
    # Each thread reads the revision of its own failure, whatever the others do meanwhile.
    keys = [f"k{i}" for i in range(4)]
    for i, k in enumerate(keys):
        for _ in range(i + 1):
            store.put(k, "v")
    mods = {k: store.get(k).mod_revision for k in keys}  # type: ignore[union-attr]
    bad: list = []

    def run(k: str) -> None:
        for _ in range(300):
            try:
                store.put_if(k, "x", 10_000)
            except tidemark.ConflictError as e:
                if e.current_revision != mods[k]:
                    bad.append((k, e.current_revision))

    threads = [threading.Thread(target=run, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_unknown_status_name() -> None:
    with pytest.raises(tidemark.UnknownStatusError) as ei:
        _ffi.raise_status(200, "test")
    assert ei.value.status == 200


# Issue 18.3: a wrong argument type is a TypeError, a negative or out-of-range integer a
# ValueError, both naming the argument, raised before anything reaches the library.
BAD_ARGUMENTS = [
    ("from_revision", TypeError, lambda s: s.changes("1")),
    ("from_revision", TypeError, lambda s: s.changes(None)),
    ("from_revision", TypeError, lambda s: s.changes(1.5)),
    ("from_revision", TypeError, lambda s: s.changes(True)),
    ("from_revision", ValueError, lambda s: s.changes(-1)),
    ("to_revision", TypeError, lambda s: s.changes(1, "2")),
    ("limit", TypeError, lambda s: s.changes(limit="2")),
    ("limit", ValueError, lambda s: s.changes(limit=-2)),
    ("limit", TypeError, lambda s: s.range(limit=None)),
    ("limit", ValueError, lambda s: s.range(limit=2**64)),
    ("from_revision", TypeError, lambda s: list(s.iter_changes("1"))),
    ("page_size", TypeError, lambda s: list(s.iter_changes(page_size="9"))),
    ("keep_revision", TypeError, lambda s: s.compact("1")),
    ("keep_revision", ValueError, lambda s: s.compact(-1)),
    ("expected_mod_revision", TypeError, lambda s: s.put("k", "v", expected_mod_revision="1")),
    ("expected_mod_revision", ValueError, lambda s: s.put_if("k", "v", -1)),
    ("expected_mod_revision", TypeError, lambda s: s.batch().require("k", "1")),
    ("expected_mod_revision", ValueError, lambda s: s.batch().require("k", -5)),
    ("start_revision", TypeError, lambda s: s.watch(start_revision="1")),
    ("start_revision", ValueError, lambda s: s.watch(start_revision=-1, callback=print)),
    ("max_queue", TypeError, lambda s: s.awatch(max_queue=1.0)),
    ("progress_interval_ms", ValueError, lambda s: s.watch(progress_interval_ms=2**32)),
    ("credit", TypeError, lambda s: s.watch(callback=print, credit="3")),
    ("timeout", TypeError, lambda s: s.watch(timeout="3")),
    ("timeout", ValueError, lambda s: s.watch(timeout=-1)),
]


@pytest.mark.parametrize("name,exc,call", BAD_ARGUMENTS, ids=[f"{n}-{e.__name__}-{i}" for i, (n, e, _) in enumerate(BAD_ARGUMENTS)])
def test_bad_argument_is_a_clear_error_naming_it(store: Store, name: str, exc: type, call: object) -> None:
    import ctypes

    store.put("k", "v")
    with pytest.raises(exc) as ei:
        call(store)  # type: ignore[operator]
    assert not isinstance(ei.value, ctypes.ArgumentError)
    assert not isinstance(ei.value, tidemark.TidemarkError)  # the binding's own check
    assert name in str(ei.value)
    assert store.revision == 1 and store.watcher_count == 0  # nothing happened


def test_good_integers_of_other_int_types_still_work(store: Store) -> None:
    import enum

    class Rev(enum.IntEnum):
        ONE = 1

    store.put("k", "v")
    assert [e.revision for e in store.changes(Rev.ONE, limit=Rev.ONE).events] == [1]
    assert store.put("k", "w", expected_mod_revision=Rev.ONE) == 2
