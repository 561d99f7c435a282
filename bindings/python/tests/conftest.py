"""Shared fixtures. Tests never assert on timing: waits have generous bounds that only
matter when something is broken (then the test fails instead of hanging)."""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package, without installing it

import tidemark  # noqa: E402

try:
    from hypothesis import settings

    settings.register_profile("tidemark", database=None, deadline=None, print_blob=True)
    settings.load_profile("tidemark")
except ImportError:  # pragma: no cover
    pass

#: Upper bound for waiting on something that should happen "soon" (never a timing assertion).
PATIENCE = 20.0


_stores_made = 0


def conformance_path() -> "str | None":
    """Where the ``store`` fixture puts a store: in memory, or with ``TIDEMARK_TEST_REDIS``
    set (``make test-redis``) a store of its own in that Redis."""
    global _stores_made
    server = os.environ.get("TIDEMARK_TEST_REDIS")
    if not server:
        return None
    _stores_made += 1
    return f"{server}/0?store=py-{os.getpid()}-{_stores_made}-{time.time_ns()}"


@pytest.fixture
def store() -> Iterator[tidemark.Store]:
    s = tidemark.Store(conformance_path())
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[str]:
    """A redis-server of the test's own: 127.0.0.1, a free port, a temporary directory, the AOF
    synced on every write; yields ``redis://127.0.0.1:PORT`` and stops the server."""
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp_path), "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    return c.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        wait_until(answers, "redis-server to start")
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def wait_until(predicate: Callable[[], bool], what: str = "condition", timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


@pytest.fixture(autouse=True)
def _no_leaked_registrations() -> Iterator[None]:
    """Every push watch a test created must have been dropped by the library (exactly once:
    the registry entry is removed by the drop function) by the end of the test, once its
    store is closed."""
    yield
    gc.collect()
    from tidemark import watch as w

    # stores closed in the test: their watches are dropped; give dispatcher threads a moment
    wait_until(lambda: all(h.store is not None and not h.store.closed for h in list(w._registry.values())),
               "push watches of closed stores to be dropped")


def pytest_report_header(config: object) -> str:
    return f"tidemark library: {tidemark.library_path} (version {tidemark.library_version}); TIDEMARK_LIBRARY={os.environ.get('TIDEMARK_LIBRARY')}"
