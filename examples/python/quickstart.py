#!/usr/bin/env python3
"""tidemark from Python in two minutes: keys, the change log, batches, three kinds of watch,
compaction, and lockstep over HTTP (serve a prefix, mirror it into another store).

Run from the repository root after `cargo build --release`:

    PYTHONPATH=bindings/python python3 examples/python/quickstart.py

(`make demo` does exactly that.) TIDEMARK_LIBRARY may point at another libtidemark.
"""

import asyncio
import json
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

try:
    import tidemark
except ImportError:  # run from a checkout without PYTHONPATH: use the binding next door
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bindings" / "python"))
    import tidemark


def section(title: str) -> None:
    print(f"\n== {title}")


def main() -> None:
    print(f"tidemark {tidemark.library_version} ({tidemark.library_path})")

    with tidemark.Store() as store:  # in memory; tidemark.Store("/some/dir") for a durable one
        section("put / get / delete")
        rev = store.put("tasks/1", "write the docs")  # str or bytes in...
        print(f"put tasks/1 -> revision {rev}")
        store.put(b"tasks/2", b"review the binding")
        entry = store.get("tasks/1")  # ...bytes out
        print(f"get tasks/1 -> value={entry.value!r} version={entry.version} mod_revision={entry.mod_revision}")
        store.put("tasks/1", "write the docs (again)")
        print(f"after a second put: version={store.get('tasks/1').version}")
        print(f"delete tasks/2 -> revision {store.delete('tasks/2')}; get -> {store.get('tasks/2')}")
        try:
            store.put_if("tasks/1", "lost update", expected_mod_revision=1)
        except tidemark.ConflictError as e:
            print(f"conditional put refused: ConflictError (current mod_revision {e.current_revision})")

        section("a callback watch and an iterator watch, opened before the writes below")
        pushed = []
        done = threading.Event()

        def on_event(ev: tidemark.Event) -> None:  # runs on a thread the store owns
            pushed.append(ev)
            if ev.key == b"tasks/9":
                done.set()

        handle = store.watch(prefix="tasks/", callback=on_event)
        live = store.watch(prefix="tasks/", timeout=5.0)
        print(f"watchers: {store.watcher_count}")

        section("an atomic batch")
        with store.batch() as batch:  # commits on exit, discards on an exception
            for i in range(3, 10):
                batch.put(f"tasks/{i}", f"task number {i}")
            batch.delete("tasks/1")
        print(f"batch committed {len(range(3, 10)) + 1} changes from revision {batch.revision}")
        try:
            with store.batch() as batch:
                batch.put("tasks/never", "x")
                raise RuntimeError("changed my mind")
        except RuntimeError:
            print(f"a failed batch applies nothing: get tasks/never -> {store.get('tasks/never')}")

        done.wait(5)
        print(f"callback saw {len(pushed)} events: {[e.key_str for e in pushed[:3]]}...")
        handle.cancel()
        first = [next(live) for _ in range(3)]
        print(f"iterator yields: {[(e.revision, e.kind.name, e.key_str) for e in first]}")
        live.close()

        section("the change log, page by page")
        page = store.changes(1, limit=4)
        while True:
            print(f"  {[(e.revision, e.kind.name, e.key_str) for e in page]} has_more={page.has_more}")
            if not page.has_more:
                break
            page = store.changes(page.next_revision, limit=4)
        print(f"iter_changes pages for you: {sum(1 for _ in store.iter_changes(1, page_size=4))} events")
        print(f"current keys: {[e.key_str for e in store.range(prefix='tasks/')]}")

        section("async for")

        async def follow() -> None:
            watch = store.awatch(prefix="tasks/", start_revision=store.revision - 1)
            store.put("tasks/10", "async too")
            seen = []
            async for ev in watch:  # replay from a past revision, then live
                seen.append((ev.revision, ev.key_str))
                if ev.key == b"tasks/10":
                    break
            await watch.aclose()
            print(f"async watch saw {seen}")

        asyncio.run(follow())

        section("compaction")
        behind = store.watch(prefix="tasks/", start_revision=1, max_queue=2)
        removed = store.compact(store.revision)
        print(f"compact({store.revision}) removed {removed} log entries; earliest revision now {store.earliest_revision}")
        try:
            store.changes(1)
        except tidemark.CompactedError as e:
            print(f"changes(1) -> CompactedError: earliest_revision={e.earliest_revision} ({e})")
        try:
            for _ in behind:
                pass
        except tidemark.CompactedError as e:
            print(f"a watch that fell behind ends with CompactedError (resync from {e.earliest_revision})")
        print(f"keys survive compaction: {[e.key_str for e in store.range()]}")

        section("status")
        print(store.status())

    print("\nstore closed.")

    section("lockstep over HTTP: serve a prefix, mirror it into a second store")
    with tidemark.Store() as inventory, tidemark.Store() as mirror:
        inventory.put("/servers/1", json.dumps({"ip": "10.0.0.1", "port": 1234}))
        inventory.put("/servers/2", json.dumps({"ip": "10.0.0.2", "port": 1234}))
        with inventory.serve() as server:  # 127.0.0.1 and a free port; serve(writable=True) takes PUT/DELETE
            url = server.url("/servers/0")  # the records under /servers/ changed since revision 0
            with urllib.request.urlopen(url, timeout=5) as resp:
                print(f"GET {url}\n{resp.read().decode()}", end="")
            seen = []  # the follower's events, reported on its own thread
            with mirror.follow(server.url("/servers/"), callback=seen.append, prefix="/mirror/") as follower:
                follower.wait_for_cursor(inventory.revision, timeout=5)
                inventory.put("/servers/2", json.dumps({"ip": "10.0.0.22", "port": 1234}))
                inventory.delete("/servers/1")
                rev = inventory.put("/servers/3", json.dumps({"ip": "10.0.0.3", "port": 1234}))
                status = follower.wait_for_cursor(rev, timeout=5)  # mirrored up to that revision
                print(f"mirrored: {[(e.key_str, json.loads(e.value)['ip']) for e in mirror.range(prefix='/mirror/')]}")
                print(f"follower: state={status['state']} cursor={status['cursor']} records={status['records']}")
            print(f"follower events: {sorted({str(ev.kind) for ev in seen})}")
            print(f"server: {server.status()['requests']} requests, {server.status()['records_served']} records served")

    section("a durable store (a directory)")
    with tempfile.TemporaryDirectory() as d:
        try:
            with tidemark.Store(d) as durable:
                durable.put("config/mode", "fast")
                print(f"wrote revision {durable.revision} to {d}")
        except tidemark.InvalidArgumentError as e:
            print(f"durable stores are not available in this build of libtidemark: {e}")
        else:
            with tidemark.Store(d) as reopened:
                entry = reopened.get("config/mode")
                print(f"reopened: config/mode = {entry.value!r} (revision {entry.mod_revision})")
    print("done.")


if __name__ == "__main__":
    main()
