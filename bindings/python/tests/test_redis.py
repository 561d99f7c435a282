"""The Redis backend from Python: URL errors, an unreachable server, and two OS processes
(Python children) incrementing one counter with put_if on one store: no lost update, no
revision twice, every watcher sees the same gap-free sequence."""

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
