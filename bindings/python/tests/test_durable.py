"""Durable stores are being built in the library; the binding only passes the path and the
options through. Today a directory may be refused (InvalidArgumentError) or work."""

from __future__ import annotations

from pathlib import Path

import tidemark
from tidemark import Store


def test_directory_path_is_passed_through(tmp_path: Path) -> None:
    d = tmp_path / "store"
    try:
        s = Store(d)
    except tidemark.InvalidArgumentError as e:
        assert str(e)  # the library says why
        return
    try:  # pragma: no cover - depends on the library's progress
        assert s.path == str(d)
        s.put("durable", "yes")
        assert s.get("durable").value == b"yes"  # type: ignore[union-attr]
        assert s.status()["durable"] is True
    finally:
        s.close()
    with Store(str(d)) as again:  # pragma: no cover
        entry = again.get("durable")
        assert entry is None or entry.value == b"yes"
