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


def test_tail_repair_is_reported(tmp_path: Path) -> None:
    d = tmp_path / "torn"
    with Store(d) as s:
        assert s.tail_repair is None
        for i in range(3):
            s.put(f"k{i}", "v")
    # The last commit loses its last byte, as in a crash while it was being written.
    seg = d / "seg-00000000000000000001.log"
    data = bytearray(seg.read_bytes())
    end = len(data.rstrip(b"\0"))
    data[end - 1] = 0
    seg.write_bytes(bytes(data))
    with Store(d) as s:
        assert s.revision == 2
        r = s.tail_repair
        assert r is not None
        assert r["commits"] == 1 and r["revisions"] == 1 and r["first_revision"] == 3 and r["bytes"] >= 1
        assert s.status()["tail_repair"]["commits"] == 1
    with Store(d) as s:
        assert s.tail_repair is None
    assert Store().tail_repair is None


def test_strict_recovery_refuses_more_than_one_commit_cut(tmp_path: Path) -> None:
    d = tmp_path / "holes"
    with Store(d, sync="none") as s:
        for i in range(5):
            s.put(f"k{i}", "v" * 20)
    seg = d / "seg-00000000000000000001.log"
    data = bytearray(seg.read_bytes())
    data[24 + 40] ^= 0xFF  # damage in the second record; whole records follow it
    seg.write_bytes(bytes(data))
    try:
        Store(d, strict_recovery=True, sync="none")
        raise AssertionError("opened")
    except tidemark.CorruptError as e:
        assert "strict_recovery" in str(e)
    with Store(d, sync="none") as s:
        assert s.tail_repair is not None and s.tail_repair["commits"] > 1
