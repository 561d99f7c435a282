"""Store basics: keys, str/bytes, entries, revisions, status, options, lifecycle."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

import tidemark
from tidemark import Entry, Store


def test_library_info() -> None:
    assert tidemark.library_version.count(".") == 2
    assert tidemark.library_path
    assert tidemark.status_name(4) == "TIDEMARK_ERR_COMPACTED"
    assert tidemark.status_name(0) == "TIDEMARK_OK"
    assert tidemark.status_name(999) == "TIDEMARK_ERR_UNKNOWN"


def test_put_get_delete(store: Store) -> None:
    assert store.revision == 0
    assert store.earliest_revision == 1
    r1 = store.put("k", "v1")
    assert r1 == 1
    e = store.get("k")
    assert e == Entry(b"k", b"v1", 1, 1, 1)
    assert (e.value, e.create_revision, e.mod_revision, e.version) == (b"v1", 1, 1, 1)
    r2 = store.put("k", "v2")
    assert r2 == 2
    assert store.get("k") == Entry(b"k", b"v2", 1, 2, 2)
    assert store.delete("k") == 3
    assert store.get("k") is None
    assert store.revision == 3
    # recreated: versions start again
    store.put("k", "v3")
    assert store.get("k") == Entry(b"k", b"v3", 4, 4, 1)


def test_str_and_bytes_in_bytes_out(store: Store) -> None:
    store.put("clé", "välue ✓")
    store.put(b"\x01\x00\xffbin", b"\x00\x01\x02")
    store.put(bytearray(b"ba"), memoryview(b"mv"))
    e = store.get("clé")
    assert e is not None
    assert e.key == "clé".encode() and e.value == "välue ✓".encode()
    assert isinstance(e.value, bytes)
    assert e.value_str == "välue ✓" and e.key_str == "clé"
    # the same key, whichever type it is given as
    assert store.get("clé".encode()) == e
    assert store.get(b"\x01\x00\xffbin").value == b"\x00\x01\x02"  # type: ignore[union-attr]
    assert store.get(b"ba").value == b"mv"  # type: ignore[union-attr]
    ev = store.changes(1).events[0]
    assert isinstance(ev.key, bytes) and isinstance(ev.value, bytes)
    assert ev.key_str == "clé" and ev.value_str == "välue ✓"
    with pytest.raises(UnicodeDecodeError):
        store.changes(2).events[0].key_str
    with pytest.raises(TypeError):
        store.put(1, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.put("x", 1.5)  # type: ignore[arg-type]


def test_empty_value_and_large_value(store: Store) -> None:
    store.put("empty", b"")
    assert store.get("empty").value == b""  # type: ignore[union-attr]
    big = bytes(range(256)) * 4096  # 1 MiB
    store.put("big", big)
    assert store.get("big").value == big  # type: ignore[union-attr]
    assert store.changes(2).events[0].value == big


def test_mapping_sugar(store: Store) -> None:
    store["a"] = "1"
    assert store["a"] == b"1"
    assert "a" in store and "b" not in store
    del store["a"]
    assert "a" not in store
    with pytest.raises(KeyError):
        store["a"]
    with pytest.raises(KeyError):
        del store["a"]


def test_conditional_put(store: Store) -> None:
    assert store.put_if("k", "a", 0) == 1  # 0 = must not exist
    with pytest.raises(tidemark.ConflictError) as ei:
        store.put_if("k", "b", 0)
    assert ei.value.current_revision == 1
    with pytest.raises(tidemark.ConflictError) as ei:
        store.put("k", "b", expected_mod_revision=7)
    assert ei.value.current_revision == 1
    assert store.get("k").value == b"a"  # type: ignore[union-attr]
    assert store.revision == 1  # failed writes take no revision
    assert store.put("k", "b", expected_mod_revision=1) == 2
    with pytest.raises(tidemark.ConflictError) as ei:
        store.put_if("missing", "x", 5)
    assert ei.value.current_revision == 0  # absent


def test_status_and_options() -> None:
    with Store(dispatch_threads=2, max_key_size=64) as s:
        assert s.options == {"dispatch_threads": 2, "max_key_size": 64}
        s.put("a", "1")
        st = s.status()
        assert st["revision"] == 1 and st["keys"] == 1 and st["earliest_revision"] == 1
        assert st["watchers"] == 0 and st["durable"] is False
        assert st["dispatch_threads"] == 2 and st["max_key_size"] == 64
        assert s.path is None
        assert "memory" in repr(s)
    with Store("") as s2:
        assert s2.status()["durable"] is False


def test_bad_options() -> None:
    with pytest.raises(tidemark.InvalidArgumentError, match="unknown option"):
        Store(no_such_option=1)
    with pytest.raises(tidemark.InvalidArgumentError):
        Store(max_key_size=0)
    with pytest.raises(ValueError):  # InvalidArgumentError is a ValueError
        Store(dispatch_threads="two")


def test_watcher_count(store: Store) -> None:
    assert store.watcher_count == 0
    w = store.watch()
    h = store.watch(callback=lambda e: None)
    assert store.watcher_count == 2
    w.close()
    h.cancel()
    assert store.watcher_count == 0


def test_close_is_idempotent_and_final() -> None:
    s = Store()
    s.put("a", "1")
    s.close()
    s.close()
    assert s.closed
    assert "closed" in repr(s)
    for call in (
        lambda: s.put("a", "2"),
        lambda: s.get("a"),
        lambda: s.delete("a"),
        lambda: s.changes(1),
        lambda: s.range(),
        lambda: s.compact(1),
        lambda: s.status(),
        lambda: s.revision,
        lambda: s.earliest_revision,
        lambda: s.watcher_count,
        lambda: s.watch(),
        lambda: s.watch(callback=print),
        lambda: s.batch().put("x", "y").commit(),
    ):
        with pytest.raises(tidemark.ClosedError):
            call()


def test_context_manager() -> None:
    with Store() as s:
        s.put("a", "1")
    assert s.closed


def test_garbage_collected_store_closes() -> None:
    s = Store()
    s.put("a", "1")
    ref = weakref.ref(s)
    del s
    gc.collect()
    assert ref() is None
    from tidemark.store import _open_stores

    assert all(x is not None for x in _open_stores)


def test_many_stores_are_independent() -> None:
    stores = [Store() for _ in range(5)]
    for i, s in enumerate(stores):
        for _ in range(i + 1):
            s.put("k", str(i))
    assert [s.revision for s in stores] == [1, 2, 3, 4, 5]
    for s in stores:
        s.close()


def test_close_waits_for_calls_in_flight() -> None:
    # Many threads hammer the store while another closes it: every call either succeeds or
    # raises ClosedError, and nothing crashes.
    s = Store()
    errors: list = []
    stop = threading.Event()

    def hammer(n: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                s.put(f"k{n}-{i % 50}", "v")
                s.get(f"k{n}-{i % 50}")
                s.changes(max(1, s.revision - 5)) if i % 10 == 0 else None
            except tidemark.ClosedError:
                return
            except tidemark.CompactedError:
                pass
            except Exception as e:  # pragma: no cover
                errors.append(e)
                return
            i += 1

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    from conftest import wait_until

    wait_until(lambda: s.revision > 200, "writes")
    s.close()
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
