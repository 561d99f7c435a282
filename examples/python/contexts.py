#!/usr/bin/env python3
"""Contexts from Python: a call's state as a versioned JSON document, and clients kept in
sync with exact deltas instead of the whole document (docs/contexts.md).

Run from the repository root after `cargo build --release`:

    PYTHONPATH=bindings/python python3 examples/python/contexts.py
"""

import sys
from pathlib import Path

try:
    import tidemark
except ImportError:  # run from a checkout without PYTHONPATH: use the binding next door
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bindings" / "python"))
    import tidemark


def main() -> None:
    with tidemark.Store(delta_threshold=100) as store:
        w = store.context_set("call:123", {"status": "ringing", "participants": ["ann"]})
        print("set      -> version", w.version, "delta", w.delta)
        client_doc, client_version = w.document, w.version  # what a client got

        store.context_update("call:123", {"status": "active"})
        w = store.context_update("call:123", {"participants": ["ann", "bob"], "muted": None})
        print("update   -> version", w.version, "delta", w.delta)

        r = store.context_sync("call:123", client_version)
        print("sync v1  ->", r.kind, "to version", r.version, "patch", r.patch)
        assert r.kind == "delta"
        print("sync v3  ->", store.context_sync("call:123", 3).kind)
        print("sync new ->", store.context_sync("call:123", None).kind, store.context_sync("call:123", None).document)
        print("deltas   ->", [(d.version, d.patch) for d in store.context_deltas("call:123")])
        assert client_doc != store.context_get("call:123").document
        store.context_delete("call:123")
        print("deleted  ->", store.context_get("call:123"))


if __name__ == "__main__":
    main()
