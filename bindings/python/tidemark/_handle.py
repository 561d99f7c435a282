"""The lifetime of the objects that own a library handle (:class:`~tidemark.Store`,
:class:`~tidemark.Server` and :class:`~tidemark.Follower`), and what a store's dependents
(watches, lockstep servers and followers) use of it: :class:`StoreHandle`.

Imports run one way: ``errors <- _ffi <- _util/_events <- _handle <- watch/lockstep <- store
<- __init__``. Nothing here imports a module above it."""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from typing import Any, Callable, ClassVar, Iterable, List, Optional, TypeVar

from . import _ffi
from .errors import ClosedError

__all__ = ["CHandle", "StoreHandle", "end_each", "ended_at_exit"]

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


class StoreHandle(CHandle):
    """The part of :class:`~tidemark.Store` its dependents use: calls on the store handle
    counted as in flight (so that closing waits for them), and the lockstep servers and
    followers to stop before the store closes. :class:`~tidemark.Store` is the only
    subclass; watches and lockstep objects take a ``StoreHandle`` so that they never import
    the store module."""

    def __init__(self) -> None:
        super().__init__()
        self._inflight: List[None] = []
        # Lockstep servers and followers started from this store: stopped before it closes.
        self._dependents: "weakref.WeakSet[Any]" = weakref.WeakSet()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Calls ``fn(handle, *args)`` while registered as in flight (see :meth:`_close_handle`)."""
        inflight = self._inflight
        inflight.append(None)
        try:
            h = self._h
            if h is None:
                raise ClosedError("the store is closed")
            return fn(h, *args)
        finally:
            inflight.pop()

    def _close_handle(self, h: int) -> None:
        """Stops the dependents, waits for the calls in flight, then closes ``h``:
        ``tidemark_store_close`` must be the last call on the store. Calls other threads
        started before ``_h`` was cleared are short, except a blocking durable write or an
        unwatch waiting for its callback."""
        end_each(self._dependents)
        while self._inflight:
            time.sleep(0.0005)
        end_each(self._dependents)  # any started by a call that was in flight
        _ffi.store_close(h)

    def _adopt(self, dep: Any) -> None:
        """Registers a server or follower to stop before the store closes; if the store was
        closed meanwhile, stops it and raises :class:`ClosedError`."""
        with self._lock:
            closed = self._h is None
            if not closed:
                self._dependents.add(dep)
        if closed:
            dep.stop()
            raise ClosedError("the store is closed")

    def _release(self, dep: Any) -> None:
        self._dependents.discard(dep)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._h is None

    @property
    def revision(self) -> int:
        """The revision of the last commit (0 for a new store)."""
        return int(self._call(_ffi.store_current_revision))

    def _unwatch(self, watch_id: int) -> None:
        self._call(_ffi.store_unwatch, watch_id)

    def _grant(self, watch_id: int, n: int) -> None:
        if _ffi.store_watch_credit is None:  # pragma: no cover
            raise NotImplementedError("this libtidemark has no tidemark_store_watch_credit")
        self._call(_ffi.store_watch_credit, watch_id, n)
