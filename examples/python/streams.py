#!/usr/bin/env python3
"""Event sourcing with tidemark from Python: a named store, appends with expected versions,
a conflict, an idempotent retry, reads both ways, snapshots, and a durable reopen.

Run from the repository root after `cargo build --release`:

    PYTHONPATH=bindings/python python3 examples/python/streams.py
"""

import sys
import tempfile
from pathlib import Path

try:
    import tidemark
except ImportError:  # run from a checkout without PYTHONPATH: use the binding next door
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bindings" / "python"))
    import tidemark

from tidemark import ExpectedVersion

with tempfile.TemporaryDirectory() as d:
    store = tidemark.open_store("orders", d, sync="always")
    print("named stores:", sorted(tidemark.stores()))

    # A new stream: NO_STREAM makes sure nobody created it first.
    a = store.append("order-42", [("created", b'{"total": 10}'), ("paid", b'{"by": "card"}')],
                     ExpectedVersion.NO_STREAM)
    print(f"appended versions {a.first_version}..{a.version} at revisions {a.first_revision}..")

    # Optimistic concurrency: an append that expects an old version fails and says the current one.
    try:
        store.append("order-42", [("cancelled", b"{}")], 0)
    except tidemark.ConflictError as e:
        print("conflict: the stream is at version", e.current_version)

    # A retried append (same ids, e.g. after a lost reply) writes nothing and returns the first result.
    shipped = [{"type": "shipped", "data": b"{}", "id": bytes(range(16))}]
    first = store.append("order-42", shipped, 1)
    again = store.append("order-42", shipped, 1)
    print("retry returned the same result:", first == again, "- stream version", store.stream_version("order-42"))

    for ev in store.read_stream("order-42"):
        print(f"  v{ev.version} rev {ev.revision} {ev.type.decode()} {ev.data.decode()}")
    print("latest, backward:", [e.type.decode() for e in store.read_stream("order-42", -1, 2, backward=True)])

    store.record_snapshot("order-projection", "order-42", 2, b'{"state": "shipped"}')
    snap = store.read_snapshot("order-projection", "order-42", 10)
    print(f"snapshot at version {snap.version}: {snap.data.decode()}")
    print("streams:", store.list_streams())
    print("user keys see none of it:", store.changes(1).events)
    tidemark.close_store("orders")

    # Durable: everything is there after a reopen.
    with tidemark.Store(d) as again_store:
        print("after reopen, version", again_store.stream_version("order-42"))
