"""Named stores: a process-wide registry, because event-store users address stores by name
(ExESDB's ``store`` argument). ``open_store(name, ...)`` opens and registers a store,
``stores()`` lists the open ones, ``close_store(name)`` closes one by name. A store closed
directly (``store.close()``) leaves the registry too."""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional

from .store import Store

__all__ = ["open_store", "stores", "close_store"]

_lock = threading.Lock()
_named: Dict[str, Store] = {}


def open_store(name: str, path: Optional[str] = None, **options: Any) -> Store:
    """Opens a store (as ``Store(path, **options)``) under ``name``. A name already in use
    by an open store raises ``ValueError``."""
    if not isinstance(name, str) or not name:
        raise TypeError("a store name is a non-empty str")
    with _lock:
        old = _named.get(name)
        if old is not None and not old.closed:
            raise ValueError(f"a store named {name!r} is already open")
        store = Store(path, **options)
        _named[name] = store
        return store


def stores() -> Dict[str, Store]:
    """The open named stores, by name (a new dict; closed stores are left out)."""
    with _lock:
        for name in [n for n, s in _named.items() if s.closed]:
            del _named[name]
        return dict(_named)


def close_store(name: str) -> None:
    """Closes the store opened under ``name``; an unknown name raises ``KeyError``."""
    with _lock:
        store = _named.pop(name)
    store.close()
