"""The Redis backend from Python: URL errors, an unreachable server, and two OS processes
(Python children) incrementing one counter with put_if on one store: no lost update, no
revision twice, every watcher sees the same gap-free sequence; and three processes writing
keys of their own at once (puts and batches), which the server places after each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tidemark
from tidemark.errors import ConflictError, InvalidArgumentError, TidemarkIOError

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time
import tidemark
from tidemark.errors import ConflictError
url, me, writers, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with tidemark.Store(url) as s:
    acked = []
    with s.watch(start_revision=1, timeout=30) as w:
        for _ in range(rounds):
            while True:
                e = s.get("ctr")
                value, expected = (int(e.value), e.mod_revision) if e else (0, 0)
                try:
                    acked.append(s.put_if("ctr", str(value + 1), expected))
                    break
                except ConflictError:
                    pass
        acked.append(s.put(f"done/{me}", ""))
        seen, done = [], set()
        for ev in w:
            seen.append([ev.revision, ev.key.decode(), ev.value.decode()])
            if ev.key.startswith(b"done/"):
                done.add(ev.key)
            if len(done) == writers:
                break
    print(json.dumps({"acked": acked, "seen": seen}))
"""


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1", "redis://127.0.0.1:1?store=", "rediss://h?store=a&ca=/nonexistent/ca.pem"])
def test_bad_urls_are_invalid_arguments(url: str) -> None:
    with pytest.raises(InvalidArgumentError, match="bad Redis store URL"):
        tidemark.Store(url)


def test_unreachable_server_is_an_io_error() -> None:
    with pytest.raises(TidemarkIOError, match="Redis at redis://127.0.0.1:1/0"):
        tidemark.Store("redis://127.0.0.1:1/0?store=a")


def test_two_processes_share_one_store(redis_server: str) -> None:
    url = f"{redis_server}/0?store=py-two"
    writers, rounds = 2, 30
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, url, str(i), str(writers), str(rounds)],
                              stdout=subprocess.PIPE, env=env) for i in range(writers)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    acked = [r for o in outs for r in o["acked"]]
    assert len(set(acked)) == len(acked), "a revision was handed out twice"
    assert outs[0]["seen"] == outs[1]["seen"], "the watchers saw different sequences"
    seen = outs[0]["seen"]
    assert [e[0] for e in seen] == list(range(1, len(seen) + 1))
    assert set(acked) == {e[0] for e in seen}
    assert [e[2] for e in seen if e[1] == "ctr"] == [str(v) for v in range(1, writers * rounds + 1)]
    with tidemark.Store(url) as s:
        assert s.revision == len(seen)
        with pytest.raises(ConflictError):
            s.put_if("ctr", "x", 1)


DISJOINT = r"""
import json, sys
import tidemark
url, me = sys.argv[1], sys.argv[2]
with tidemark.Store(url) as s:
    acked = []
    for i in range(60):
        key = f"{me}/{i % 7}"
        if i % 3 == 2:
            with s.batch() as b:
                b.put(f"{me}/batch/{i}", "a")
                b.put(key, "b")
            acked += [[b.revision, f"{me}/batch/{i}"], [b.revision + 1, key]]
        else:
            acked.append([s.put(key, str(i)), key])
    print(json.dumps(acked))
"""


def test_processes_writing_their_own_keys_share_one_log(redis_server: str) -> None:
    url = f"{redis_server}/0?store=py-disjoint"
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    procs = [subprocess.Popen([sys.executable, "-c", DISJOINT, url, f"p{i}"], stdout=subprocess.PIPE, env=env)
             for i in range(3)]
    acked = sorted(tuple(a) for p in procs for a in json.loads(p.communicate(timeout=120)[0]))
    assert all(p.returncode == 0 for p in procs)
    assert [a[0] for a in acked] == list(range(1, len(acked) + 1)), "gap-free, no revision twice"
    with tidemark.Store(url) as s:
        log = s.changes(1, limit=10_000).events
        assert [(e.revision, e.key.decode()) for e in log] == [(r, k) for r, k in acked]
        first, count = {}, {}
        for e in log:
            first.setdefault(e.key, e.revision)
            count[e.key] = count.get(e.key, 0) + 1
            assert (e.create_revision, e.version) == (first[e.key], count[e.key]), e
