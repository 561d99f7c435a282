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


@pytest.fixture
def store() -> Iterator[tidemark.Store]:
    s = tidemark.Store()
    try:
        yield s
    finally:
        s.close()


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
