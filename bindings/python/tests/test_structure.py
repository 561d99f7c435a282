"""The package's shape: modules import one way only, and the status table matches the header."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, List, Set

import pytest

import tidemark
from tidemark import _ffi, errors

PKG = Path(tidemark.__file__).resolve().parent
HEADER = PKG.parent.parent.parent / "include" / "tidemark.h"


def _imports(path: Path) -> Set[str]:
    """The package modules ``path`` imports anywhere (top level, functions, TYPE_CHECKING)."""
    out: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tidemark."):
            out.add(node.module.split(".")[1])  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("tidemark."))
    return out


def test_modules_import_one_way() -> None:
    graph: Dict[str, Set[str]] = {
        p.stem: _imports(p) for p in PKG.glob("*.py") if p.stem != "__init__"
    }
    assert {"store", "watch", "lockstep", "_handle", "_ffi", "errors"} <= graph.keys()
    # Depth-first search for a cycle; report the first one found.
    state: Dict[str, int] = {}
    path: List[str] = []

    def visit(mod: str) -> None:
        state[mod] = 1
        path.append(mod)
        for dep in sorted(graph.get(mod, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep in graph and dep not in state:
                visit(dep)
        path.pop()
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod)
    # The layers of issue 19: watches and lockstep never reach up to the store.
    assert "store" not in graph["watch"] | graph["lockstep"] | graph["_handle"]
    assert "errors" in graph["_ffi"] and not graph["errors"]


def _header_statuses() -> Dict[str, int]:
    text = HEADER.read_text()
    body = re.search(r"enum tidemark_status\b[^{]*\{(.*?)\};", text, re.S)
    assert body, "no enum tidemark_status in the header"
    codes = {m.group(1): int(m.group(2)) for m in re.finditer(r"\b(TIDEMARK_\w+)\s*=\s*(\d+)", body.group(1))}
    assert codes.get("TIDEMARK_OK") == 0 and len(codes) > 10
    return codes


@pytest.mark.skipif(not HEADER.exists(), reason="not a source checkout")
def test_every_status_of_the_header_has_its_exception() -> None:
    codes = _header_statuses()
    for name, value in codes.items():
        assert _ffi.status_name(value) == name  # the library agrees with its header
        if value == 0:
            continue
        err = errors.error_for_status(value, "m", 7)
        assert type(err) is not errors.UnknownStatusError, f"{name} has no exception class"
        assert (err.STATUS, err.STATUS_NAME, err.status) == (value, name, value)
    # ...and the binding knows no status the header does not declare.
    known = {cls.STATUS: cls.STATUS_NAME for cls in errors._BY_STATUS.values()}
    assert known == {v: n for n, v in codes.items() if v != 0}
    assert type(errors.error_for_status(max(codes.values()) + 1)) is errors.UnknownStatusError
