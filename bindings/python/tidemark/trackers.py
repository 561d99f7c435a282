"""Trackers: lifecycle notifications of a feature. :class:`TrackersMixin` gives
:class:`~tidemark.Store` ``track`` (a callback), ``tracker`` (an iterator), ``atrack`` (an
async iterator), ``untrack``, ``tracker_members`` and ``notify`` over the C API
(``tidemark_store_track`` and friends).

A feature is ``"streams"``, ``"snapshots"``, ``"contexts"``, ``"subscriptions"``, ``"keys"`` (every user key),
``"keys/<prefix>"`` (the user keys under a prefix), or any other name: a user feature, whose
notifications :meth:`TrackersMixin.notify` writes. Each :class:`Notification` says which
instance (``id``) was ``"created"``, ``"updated"`` or ``"deleted"`` at which revision, with
its ``data`` decoded from JSON. A tracker's last notification, if it ends by itself, is
``"compacted"`` (it fell behind compaction) or ``"closed"`` (the store closed).
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import weakref
from ctypes import byref, c_size_t, c_uint64, string_at
from typing import Any, Callable, Deque, List, NamedTuple, Optional

from . import _ffi
from ._handle import StoreHandle
from ._util import CallbackRegistry, Key, enter_callback, leave_callback, report_callback_exception, to_bytes
from .errors import ClosedError, CompactedError, InvalidArgumentError, NotFoundError, WatchTimeout

__all__ = ["Notification", "Tracker", "TrackerIterator", "AsyncTracker", "TrackersMixin", "ACTIONS"]

#: The actions a user may notify, by name, and their C numbers (``tidemark_action``).
ACTIONS = {"created": 1, "updated": 2, "deleted": 3}
_NAMES = {1: "created", 2: "updated", 3: "deleted", 4: "compacted", 5: "closed"}


class Notification(NamedTuple):
    """One notification of a tracker."""

    feature: str
    #: ``"created"``, ``"updated"``, ``"deleted"``, or the terminal ``"compacted"`` / ``"closed"``.
    action: str
    #: The instance: stream name, context id, key, or the notified id (``b""`` for terminal ones).
    id: bytes
    #: The commit's revision (``"compacted"``: the earliest retained revision).
    revision: int
    #: The data, decoded from JSON (``None`` for terminal notifications).
    data: Any

    @property
    def is_terminal(self) -> bool:
        return self.action in ("compacted", "closed")


def _bytes(b: Any) -> bytes:
    return string_at(b.ptr, b.len) if b.len else b""


def _decode(n: Any) -> Notification:
    return Notification(
        _bytes(n.feature).decode("utf-8"),
        _NAMES.get(n.action, str(n.action)),
        _bytes(n.id),
        n.revision,
        json.loads(_bytes(n.data)),
    )


_registry: CallbackRegistry["Tracker"] = CallbackRegistry("_on_drop")


def _on_c_callback(userdata: Optional[int], ptr: Any) -> None:
    tracker = _registry.get(userdata or 0)
    if tracker is not None:
        tracker._on_notification(_decode(ptr.contents))


# Module globals, so they outlive every tracker; `userdata` says which tracker a call is for.
_c_callback = _ffi.TRACKER_CALLBACK(_on_c_callback)
_c_drop = _ffi.DROP_CALLBACK(_registry.drop)


class Tracker:
    """A tracker with a callback: ``store.track("streams", fn)``.

    ``fn(notification)`` runs on a thread the store owns, never on two threads at once, for
    every notification in order, the terminal one last. An exception it raises is reported
    through ``sys.unraisablehook`` and does not stop the tracker. :meth:`untrack` ends it
    without a terminal call; when it returns (outside the callback) ``fn`` is not running and
    will not run again. The callback may use the store (notify, untrack itself...).
    """

    def __init__(
        self,
        store: StoreHandle,
        feature: str,
        callback: Callable[[Notification], Any],
        start_revision: int = 0,
        max_queue: int = 0,
        credit: int = 0,
    ) -> None:
        if not callable(callback):
            raise TypeError("callback must be callable")
        if asyncio.iscoroutinefunction(callback):
            raise TypeError("callback is a coroutine function: use `async for n in store.atrack(...)` instead")
        self._store_ref = weakref.ref(store)
        self._callback: Optional[Callable[[Notification], Any]] = callback
        self._done = threading.Event()
        self._token = _registry.new_token()
        self.feature = feature
        #: The tracker id in the store.
        self.id: Optional[int] = None
        #: The terminal notification (``"compacted"``/``"closed"``) if the tracker ended on one.
        self.terminal: Optional[Notification] = None
        opts = _ffi.WatchOptions(start_revision, max_queue, 0, credit)
        out = c_uint64()
        _registry[self._token] = self  # before the call: a replay may call back before it returns
        try:
            store._call(_ffi.store_track, to_bytes(feature, "feature"), byref(opts), _c_callback, self._token, _c_drop, byref(out))
        except BaseException:
            _registry.drop(self._token)
            raise
        self.id = out.value

    def __repr__(self) -> str:
        return f"<tidemark.Tracker id={self.id} {self.feature!r} {'active' if self.active else 'ended'}>"

    @property
    def active(self) -> bool:
        """True until the tracker has ended and its callback will never be called again."""
        return not self._done.is_set()

    def _on_notification(self, n: Notification) -> None:
        if n.is_terminal:
            self.terminal = n
        cb = self._callback
        if cb is None:
            return
        enter_callback()
        try:
            cb(n)
        except BaseException as exc:  # never let it reach the C library
            report_callback_exception(exc, cb, self, "tracker")
        finally:
            leave_callback()

    def _on_drop(self) -> None:
        self._callback = None
        self._done.set()

    def untrack(self) -> None:
        """Ends the tracker (idempotent)."""
        self._callback = None
        store = self._store_ref()
        if self.id is None or self._done.is_set() or store is None or store.closed:
            return
        try:
            store._call(_ffi.store_untrack, self.id)
        except (NotFoundError, ClosedError):
            pass  # it ended on its own meanwhile

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits until the tracker has ended (its drop function ran); False on timeout."""
        return self._done.wait(timeout)

    def _grant(self, n: int) -> None:
        store = self._store_ref()
        if store is not None and self.id is not None and self.active:
            try:
                store._grant(self.id, n)
            except (NotFoundError, ClosedError):
                pass  # ended meanwhile; its terminal notification is on its way

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.untrack()


def _compacted(n: Notification) -> CompactedError:
    return CompactedError(
        f"the tracker fell behind compaction; the earliest retained revision is {n.revision}: track again from there",
    )


class _Flow:
    """What the iterators share: a tracker with credit (at most ``max_queue`` notifications
    wait in Python however slow the consumer), and granting more as they are consumed."""

    def __init__(self, max_queue: int) -> None:
        self._credit = max_queue or 1000
        self._owed = 0
        self._tracker: Optional[Tracker] = None
        self._finished = False

    def _consumed(self, n: Notification) -> Notification:
        if n.action == "closed":
            self._finish()
            raise StopIteration
        if n.action == "compacted":
            self._finish()
            raise _compacted(n)
        self._owed += 1
        if self._owed * 2 >= self._credit and self._tracker is not None:
            owed, self._owed = self._owed, 0
            self._tracker._grant(owed)
        return n

    def _finish(self) -> None:
        self._finished = True
        if self._tracker is not None:
            self._tracker.untrack()


class TrackerIterator(_Flow):
    """``for n in store.tracker("contexts"): ...``: blocks for the next notification (up to
    ``timeout`` seconds, then :class:`~tidemark.WatchTimeout`), stops when the store closes,
    raises :class:`~tidemark.CompactedError` if it fell behind compaction. :meth:`close` (or
    ``with``) ends it early."""

    def __init__(
        self, store: StoreHandle, feature: str, start_revision: int, max_queue: int, timeout: Optional[float]
    ) -> None:
        super().__init__(max_queue)
        self._buf: Deque[Notification] = collections.deque()
        self._cond = threading.Condition()
        self._timeout = timeout
        self._tracker = Tracker(store, feature, self._push, start_revision, max_queue, self._credit)

    def _push(self, n: Notification) -> None:
        with self._cond:
            self._buf.append(n)
            self._cond.notify()

    def __iter__(self) -> "TrackerIterator":
        return self

    def __next__(self) -> Notification:
        if self._finished:
            raise StopIteration
        with self._cond:
            if not self._cond.wait_for(lambda: self._buf, self._timeout):
                raise WatchTimeout(f"no notification within {self._timeout} s")
            n = self._buf.popleft()
        return self._consumed(n)

    def close(self) -> None:
        self._finish()

    def __enter__(self) -> "TrackerIterator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncTracker(_Flow):
    """``async for n in store.atrack("streams"): ...``: the store's thread hands each
    notification to the event loop (``call_soon_threadsafe``); no thread blocks and nothing
    polls. Ends as :class:`TrackerIterator` does; :meth:`aclose` (or ``async with``) ends it
    early."""

    def __init__(self, store: StoreHandle, feature: str, start_revision: int, max_queue: int) -> None:
        super().__init__(max_queue)
        self._args = (store, feature, start_revision, max_queue)
        self._buf: Deque[Notification] = collections.deque()
        self._waiter: Optional["asyncio.Future[None]"] = None

    def _push(self, n: Notification) -> None:  # on the loop thread
        self._buf.append(n)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def __aiter__(self) -> "AsyncTracker":
        return self

    async def __anext__(self) -> Notification:
        if self._finished:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        if self._tracker is None:
            store, feature, start, max_queue = self._args
            ref = weakref.ref(self)

            def deliver(n: Notification) -> None:
                me = ref()
                if me is not None:
                    try:
                        loop.call_soon_threadsafe(me._push, n)
                    except RuntimeError:  # the loop is closed: nobody reads this any more
                        me._finish()

            self._tracker = Tracker(store, feature, deliver, start, max_queue, self._credit)
        while not self._buf:
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        try:
            return self._consumed(self._buf.popleft())
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._finish()

    async def __aenter__(self) -> "AsyncTracker":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class TrackersMixin:
    """The tracker methods of :class:`~tidemark.Store`."""

    _call: Any

    def track(
        self,
        feature: str,
        callback: Callable[[Notification], Any],
        *,
        start_revision: int = 0,
        max_queue: int = 0,
    ) -> Tracker:
        """Calls ``callback(notification)`` for every lifecycle change of ``feature`` from
        ``start_revision`` on (0 = from now; N replays the feature's history from revision N),
        then live. ``max_queue`` bounds what waits for a slow callback (0 = 1000)."""
        return Tracker(self, feature, callback, start_revision, max_queue)

    def tracker(
        self, feature: str, *, start_revision: int = 0, max_queue: int = 0, timeout: Optional[float] = None
    ) -> TrackerIterator:
        """An iterator over ``feature``'s notifications (see :class:`TrackerIterator`)."""
        return TrackerIterator(self, feature, start_revision, max_queue, timeout)

    def atrack(self, feature: str, *, start_revision: int = 0, max_queue: int = 0) -> AsyncTracker:
        """An async iterator over ``feature``'s notifications (see :class:`AsyncTracker`)."""
        return AsyncTracker(self, feature, start_revision, max_queue)

    def untrack(self, tracker: Any) -> None:
        """Ends a tracker, given as a :class:`Tracker` or its id; an unknown or ended id
        raises :class:`~tidemark.NotFoundError`."""
        if isinstance(tracker, Tracker):
            tracker.untrack()
        else:
            self._call(_ffi.store_untrack, tracker)

    def tracker_members(self, feature: str) -> List[int]:
        """The ids of the trackers of ``feature`` that have not ended, ascending."""
        name = to_bytes(feature, "feature")
        count = c_size_t()
        while True:
            ids = (c_uint64 * (count.value or 16))()
            self._call(_ffi.store_tracker_members, name, ids, len(ids), byref(count))
            if count.value <= len(ids):
                return list(ids[: count.value])

    def notify(self, feature: str, action: str, id: Key, data: Any = None) -> int:
        """Notifies the trackers of the user feature ``feature`` that ``id`` was ``action``
        (``"created"``, ``"updated"`` or ``"deleted"``), with ``data`` (anything
        ``json.dumps`` takes). One durable commit, replayable by trackers that start at or
        before it; returns its revision."""
        if action not in ACTIONS:
            raise InvalidArgumentError(f"unknown action {action!r}: use created, updated or deleted")
        rev = c_uint64()
        key = to_bytes(id, "id")
        self._call(
            _ffi.store_notify, to_bytes(feature, "feature"), ACTIONS[action], key, len(key),
            json.dumps(data).encode(), byref(rev),
        )
        return rev.value
