"""The lifetime of the objects that own a library handle: :class:`~tidemark.Store`,
:class:`~tidemark.Server` and :class:`~tidemark.Follower`."""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Any, ClassVar, Iterable, Optional, TypeVar

__all__ = ["CHandle", "end_each", "ended_at_exit"]

_H = TypeVar("_H", bound="CHandle")


def end_each(objects: Iterable["CHandle"]) -> None:
    """Ends every object (``close()``/``stop()``), ignoring failures."""
    for obj in list(objects):
        try:
            obj._end()
        except Exception:  # pragma: no cover - ending does not raise
            pass


def ended_at_exit() -> "weakref.WeakSet[Any]":
    """A weak set whose objects are ended at interpreter exit, while the interpreter is still
    whole (so that no library thread calls into a finalizing Python)."""
    live: "weakref.WeakSet[Any]" = weakref.WeakSet()
    atexit.register(end_each, live)
    return live


class CHandle:
    """Owns the library handle ``_h`` (``None`` before it is set and once it was ended) and
    ends it exactly once, from any thread.

    The subclass names the public end (``close()``, ``stop()``: :meth:`_end`) and implements
    it with :meth:`_end_once`, which takes the handle under ``_lock`` and calls
    :meth:`_end_handle` with it outside the lock (what the end waits for may end the object
    too); a later or concurrent call waits in :meth:`_wait_ended` instead. While it has a
    handle the object is in the class's ``_live`` set (see :func:`ended_at_exit`). It is also
    ended by leaving its ``with`` block and when garbage-collected.
    """

    #: The objects of this kind that still have a handle, ended at interpreter exit.
    _live: ClassVar["weakref.WeakSet[Any]"]

    def __init__(self) -> None:
        self._h: Optional[int] = None
        self._lock = threading.Lock()

    def _own(self, h: Optional[int]) -> None:
        """Takes ownership of the handle the library returned."""
        self._h = h
        self._live.add(self)

    def _end(self) -> None:
        """The public end (``close()`` or ``stop()``)."""
        raise NotImplementedError

    def _end_once(self) -> None:
        with self._lock:
            h, self._h = self._h, None
        if h is None:
            self._wait_ended()
            return
        self._live.discard(self)
        self._end_handle(h)

    def _end_handle(self, h: int) -> None:
        """Ends the handle (the first end only)."""
        raise NotImplementedError

    def _wait_ended(self) -> None:
        """Called by an end that found the handle taken: waits for the first one to finish."""

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._end()

    def __del__(self) -> None:
        try:
            if getattr(self, "_h", None) is not None:
                self._end()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
