"""Contexts through the Python binding: dicts in and out, SyncResult, Chord's defects,
concurrent updates, TTL cleanup and bad input."""

from __future__ import annotations

import threading
from typing import Any, Dict, List

import pytest

import tidemark
from tidemark import Context, ContextDelta, Store, SyncResult


def apply(doc: Dict[str, Any], patch: List[Dict[str, Any]]) -> Dict[str, Any]:
    """A small RFC 6902 applier for the operations tidemark's deltas use (add, remove,
    replace) on object members, enough to check a delta against the document it yields."""
    import copy

    out = copy.deepcopy(doc)
    for op in patch:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target: Any = out
        for p in parts[:-1]:
            target = target[int(p)] if isinstance(target, list) else target[p]
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(target, list) and op["op"] == "add":
                target.insert(len(target) if last == "-" else int(last), op["value"])
            elif isinstance(target, list):
                target[int(last)] = op["value"]
            else:
                target[last] = op["value"]
        elif op["op"] == "remove":
            del target[int(last) if isinstance(target, list) else last]
        else:  # pragma: no cover - not produced for these documents
            raise AssertionError(f"unexpected op {op}")
    return out


def test_set_update_get_delete(store: Store) -> None:
    w = store.context_set("call:1", {"status": "ringing", "n": 1})
    assert (w.version, w.document) == (1, {"status": "ringing", "n": 1})
    w = store.context_update("call:1", {"status": "active", "n": None})
    assert (w.version, w.document) == (2, {"status": "active"})
    assert {op["op"] for op in w.delta} == {"replace", "remove"}
    same = store.context_update("call:1", {"status": "active"})
    assert (same.version, same.delta, same.revision) == (2, [], 0)
    c = store.context_get("call:1")
    assert isinstance(c, Context)
    assert (c.id, c.document, c.version, c.revision) == (b"call:1", {"status": "active"}, 2, w.revision)
    assert c.created_ms <= c.updated_ms
    assert store.context_get("missing") is None
    store.context_set(b"\xffbin", {})
    assert [x.id for x in store.list_contexts()] == [b"call:1", b"\xffbin"]
    assert [x.id for x in store.list_contexts(1, 0, "desc")] == [b"\xffbin"]
    assert [d.version for d in store.context_deltas("call:1")] == [2]
    assert isinstance(store.context_deltas("call:1")[0], ContextDelta)
    assert store.status()["contexts"] == 2
    assert store.context_delete("call:1") > 0
    with pytest.raises(tidemark.NotFoundError):
        store.context_delete("call:1")
    # Re-created, it goes on from the deleted one's version: its old clients get "full".
    assert store.context_set("call:1", {"again": 1}).version == 3
    assert store.context_sync("call:1", 2) == SyncResult("full", 3, document={"again": 1})
    assert store.changes(1).events == [], "contexts are not user keys"


def test_sync_kinds(store: Store) -> None:
    docs = [None]
    for i in range(1, 6):
        docs.append(store.context_update("c", {f"k{i}": i}).document)
    assert store.context_sync("c", 5) == SyncResult("no_change", 5)
    r = store.context_sync("c", 2)
    assert (r.kind, r.version, r.document) == ("delta", 5, None)
    assert apply(docs[2], r.patch) == docs[5]
    for client in (None, 0, -7, 6):
        r = store.context_sync("c", client)
        assert (r.kind, r.document, r.patch) == ("full", docs[5], None)
    with pytest.raises(tidemark.NotFoundError):
        store.context_sync("nope", 1)
    with pytest.raises(TypeError):
        store.context_sync("c", "1")  # type: ignore[arg-type]


def test_chord_defects() -> None:
    with Store() as s:  # threshold 100 (the default)
        docs = [None]
        for i in range(1, 151):
            docs.append(s.context_update("c", {f"f{i % 7}": i, "last": i}).document)
        r = s.context_sync("c", 120)
        assert r.kind == "delta" and apply(docs[120], r.patch) == docs[150]
        assert s.context_sync("c", 10).kind == "full"
        s.context_set("k", {"k": "old"})
        s.context_update("k", {"k": None})
        s.context_update("k", {"k": "new"})
        r = s.context_sync("k", 1)
        assert r.kind == "delta" and apply({"k": "old"}, r.patch) == {"k": "new"}


def test_concurrent_updates_of_distinct_fields(store: Store) -> None:
    def run(t: int) -> None:
        for i in range(25):
            store.context_update("shared", {f"f{t}_{i}": i})

    threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c = store.context_get("shared")
    assert c is not None and c.version == 200 and len(c.document) == 200


def test_options_and_cleanup() -> None:
    with Store(delta_threshold=2, delta_ttl_ms=1, context_ttl_ms=1, context_auto_delete=True) as s:
        for i in range(4):
            s.context_update("a", {"v": i})
        assert [d.version for d in s.context_deltas("a", order="desc")] == [4, 3]
        # The system clock moves on: a later pass removes the expired context and its deltas.
        import time

        deadline = time.monotonic() + 20
        while s.context_get("a") is not None and time.monotonic() < deadline:
            s.context_cleanup()
        assert s.context_get("a") is None
        assert s.context_cleanup(5) == (0, 0)
    with pytest.raises(tidemark.InvalidArgumentError, match="delta_threshold"):
        Store(delta_threshold=-1)


def test_ttls_with_an_injected_clock() -> None:
    now = [5_000]
    with Store(delta_ttl_ms=100, context_ttl_ms=1_000, context_auto_delete=True) as s:
        s.set_clock(lambda: now[0])
        s.context_set("a", {"v": 1})
        s.context_update("a", {"v": 2})
        c = s.context_get("a")
        assert c is not None and (c.created_ms, c.updated_ms) == (5_000, 5_000)
        assert s.context_sync("a", 1).kind == "delta"
        now[0] = 5_100
        assert s.context_sync("a", 1).kind == "full", "the delta expired"
        assert s.context_cleanup() == (0, 1)
        now[0] = 6_000
        assert s.context_cleanup() == (1, 0)
        assert s.context_get("a") is None
        s.context_set("t", {})
        with pytest.raises(tidemark.NotFoundError):
            s.set_context_cleaner_interval(5)
        with pytest.raises(tidemark.InvalidArgumentError):
            s.start_context_cleaner(0)
        s.start_context_cleaner(1)
        s.set_context_cleaner_interval(2)
        assert s.status()["context_cleaner"]["running"] is True
        now[0] = 100_000
        import time

        deadline = time.monotonic() + 20
        while s.context_get("t") is not None and time.monotonic() < deadline:
            time.sleep(0.001)
        assert s.context_get("t") is None, "the cleanup thread deleted it"
        assert s.stop_context_cleaner() is True
        assert s.stop_context_cleaner() is False
        s.start_context_cleaner(60_000)  # still running at close: close stops it
        s.set_clock(None)
        s.context_set("b", {})
        b = s.context_get("b")
        assert b is not None and b.created_ms > 1_600_000_000_000
        with pytest.raises(TypeError):
            s.set_clock(5)  # type: ignore[arg-type]


def test_bad_input_changes_nothing() -> None:
    with Store(max_value_size=1024) as s:
        s.context_set("a", {"x": 1})
        rev = s.revision
        for bad in ([1], "s", None, 3):
            with pytest.raises(tidemark.InvalidArgumentError, match="JSON object"):
                s.context_set("a", bad)  # type: ignore[arg-type]
            with pytest.raises(tidemark.InvalidArgumentError):
                s.context_update("a", bad)  # type: ignore[arg-type]
        with pytest.raises(tidemark.TooLargeError):
            s.context_set("a", {"x": "y" * 2000})
        with pytest.raises(tidemark.InvalidArgumentError):
            s.context_set("", {})
        with pytest.raises(TypeError):
            s.context_set("a", {"x": object()})
        with pytest.raises(ValueError):
            s.list_contexts(order="sideways")
        with pytest.raises(ValueError):
            s.context_set("a", {"x": float("nan")})
        assert s.revision == rev
        c = s.context_get("a")
        assert c is not None and c.document == {"x": 1}


def test_the_example_runs() -> None:
    import runpy
    from pathlib import Path

    example = Path(__file__).resolve().parents[3] / "examples" / "python" / "contexts.py"
    runpy.run_path(str(example), run_name="__main__")


def test_exporter_on_demand_and_before_a_ttl_delete() -> None:
    now = [1_000]
    with Store(context_ttl_ms=100, context_auto_delete=True) as s:
        s.set_clock(lambda: now[0])
        with pytest.raises(tidemark.InvalidArgumentError):
            s.context_export("a")  # no exporter
        got: List[Context] = []
        failing = [False]

        def export(c: Context) -> None:
            if failing[0]:
                raise RuntimeError("the archive is down")
            assert s.context_get(c.id) is not None  # it may use the store
            got.append(c)

        s.set_context_exporter(export)
        s.context_set("a", {"x": 1})
        assert s.context_export("a").document == {"x": 1}
        assert [(c.id, c.document, c.version) for c in got] == [(b"a", {"x": 1}, 1)]
        with pytest.raises(tidemark.NotFoundError):
            s.context_export("missing")
        now[0] += 100
        failing[0] = True
        assert s.context_cleanup() == (0, 0), "a failed export keeps the context"
        assert s.context_get("a") is not None
        assert s.status()["context_cleaner"]["export_failures"] == 1
        with pytest.raises(tidemark.TidemarkIOError):
            s.context_export("a")
        failing[0] = False
        assert s.context_cleanup() == (1, 0)
        assert [c.id for c in got] == [b"a", b"a"]
        s.set_context_exporter(None)
        with pytest.raises(TypeError):
            s.set_context_exporter(42)  # type: ignore[arg-type]


def test_provider_restores_missing_contexts() -> None:
    with Store() as s:
        asked: List[bytes] = []

        def provide(id: bytes) -> Any:
            asked.append(id)
            if id == b"kept":
                return {"r": 1}, 7
            if id == b"plain":
                return {"a": 1}
            if id == b"broken":
                raise RuntimeError("the archive is down")
            if id == b"bad":
                return [1]
            return None

        s.set_context_provider(provide)
        c = s.context_get("kept")
        assert c is not None and (c.document, c.version) == ({"r": 1}, 7)
        assert s.context_sync("kept", 7) == SyncResult("no_change", 7)
        w = s.context_update("plain", {"b": 2})
        assert (w.document, w.version) == ({"a": 1, "b": 2}, 2)
        assert s.context_get("none") is None
        with pytest.raises(tidemark.NotFoundError):
            s.context_sync("none", 1)
        with pytest.raises(tidemark.TidemarkIOError):
            s.context_get("broken")
        with pytest.raises(tidemark.TidemarkIOError):
            s.context_get("bad")
        assert asked.count(b"kept") == 1, "stored once"
        assert [x.id for x in s.list_contexts()] == [b"kept", b"plain"]
        assert s.context_restore("kept", {"other": 1}, 99).document == {"r": 1}
        assert s.context_restore("r", {"k": 1}).version == 1
        s.set_context_provider(None)
        assert s.context_get("broken") is None
