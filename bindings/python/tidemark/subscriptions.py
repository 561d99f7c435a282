"""Transient subscriptions: :class:`SubscriptionsMixin` gives :class:`~tidemark.Store` its
``subscribe`` and ``asubscribe`` over ``tidemark_store_subscribe`` /
``tidemark_store_subscribe_pull``.

A subscription is a watch over stream events, so it is consumed exactly like a watch, by the
same classes: :class:`Subscription` is a :class:`~tidemark.Watch` (blocking iterator and
``async for``), :class:`SubscriptionHandle` a :class:`~tidemark.WatchHandle` (callback, with
``cancel()`` and ``grant(n)``), :class:`AsyncSubscription` an :class:`~tidemark.AsyncWatch`.
They yield :class:`~tidemark.StreamEvent` items (``kind`` ``PUT``) and the same notices
(``PROGRESS``, and the terminal ``COMPACTED`` / ``CLOSED``) as :class:`~tidemark.Event`.
"""

from __future__ import annotations

from ctypes import string_at
from typing import Any, Callable, List, Optional, Tuple, Union

from . import _ffi
from ._events import PUT, Event
from ._util import Key, to_bytes
from .errors import InvalidArgumentError
from .streams import StreamEvent
from .watch import AsyncWatch, Watch, WatchHandle, WatchSpec

__all__ = ["Subscription", "SubscriptionHandle", "AsyncSubscription", "SubscriptionsMixin"]

_NO_BYTES = b""


def _bytes(b: Any) -> bytes:
    return string_at(b.ptr, b.len) if b.len else _NO_BYTES


def _item(e: Any) -> Union[StreamEvent, Event]:
    if e.kind != PUT:
        return Event(e.revision, e.kind, b"", b"", 0, 0)
    s = e.event
    return StreamEvent(
        _bytes(s.stream), _bytes(s.id), _bytes(s.event_type), _bytes(s.data), _bytes(s.metadata),
        s.version, s.revision, s.timestamp_ms,
    )


def _decode_callback(ptr: int, count: int) -> List[Any]:
    """The items a push callback receives (valid during the call only)."""
    if not count:
        return []
    arr = (_ffi.SubEvent * count).from_address(ptr)
    return [_item(e) for e in arr]


def _take(handle: int) -> Tuple[List[Any], int]:
    """Decodes and frees a pull delivery: (items, the revision after the last one)."""
    try:
        n = _ffi.sub_events_len(handle)
        data = _ffi.sub_events_data(handle)
        items = [_item(data[i]) for i in range(n)]
    finally:
        _ffi.sub_events_free(handle)
    return items, (items[-1].revision + 1 if items else 0)


def make_stream_selector(stream: Optional[Key], prefix: Optional[Key], event_type: Optional[Key]) -> Optional[_ffi.StreamSelector]:
    """The C stream selector: ``stream=`` (one stream) or ``prefix=`` (names starting with
    it) or neither (all streams), optionally with ``event_type=``; ``None`` = everything."""
    if stream is not None and prefix is not None:
        raise TypeError("give at most one of stream= and prefix=")
    if stream is None and prefix is None and event_type is None:
        return None
    if stream is not None:
        kind, name, desc = _ffi.STREAMS_ONE, to_bytes(stream, "stream"), f"stream={stream!r}"
    elif prefix is not None:
        kind, name, desc = _ffi.STREAMS_PREFIX, to_bytes(prefix, "prefix"), f"prefix={prefix!r}"
    else:
        kind, name, desc = _ffi.STREAMS_ALL, b"", "all streams"
    t = b"" if event_type is None else to_bytes(event_type, "event_type")
    if event_type is not None and not t:
        # Empty means "any type" in C; here it would silently widen the selector.
        raise InvalidArgumentError("an event_type selector needs a non-empty type")
    sel = _ffi.StreamSelector(kind, _ffi.BytesIn(name, len(name)), _ffi.BytesIn(t, len(t)))
    sel.desc = desc + (f", event_type={event_type!r}" if event_type is not None else "")
    return sel


class Subscription(Watch):
    """A pull subscription: ``for ev in store.subscribe(prefix="order-", start_revision=1)``.
    Everything :class:`~tidemark.Watch` says holds; items are :class:`~tidemark.StreamEvent`."""

    _OPEN = staticmethod(_ffi.store_subscribe_pull)
    _NEXT = staticmethod(_ffi.sub_feed_next)
    _ID = staticmethod(_ffi.sub_feed_id)
    _CLOSE = staticmethod(_ffi.sub_feed_close)
    _TAKE = staticmethod(_take)


class SubscriptionHandle(WatchHandle):
    """A push subscription: ``store.subscribe(stream="order-1", callback=fn)``; see
    :class:`~tidemark.WatchHandle`."""

    _REGISTER = staticmethod(_ffi.store_subscribe)
    _DECODE = staticmethod(_decode_callback)


class AsyncSubscription(AsyncWatch):
    """``async for ev in store.subscribe(...)`` (or ``store.asubscribe(...)``); see
    :class:`~tidemark.AsyncWatch`."""

    _HANDLE = SubscriptionHandle


Subscription._ASYNC = AsyncSubscription


class SubscriptionsMixin:
    """The subscription methods of :class:`~tidemark.Store` (see the module doc)."""

    def subscribe(
        self,
        *,
        stream: Optional[Key] = None,
        prefix: Optional[Key] = None,
        event_type: Optional[Key] = None,
        start_revision: int = 0,
        max_queue: int = 0,
        progress_interval_ms: int = 0,
        timeout: Optional[float] = None,
        callback: Optional[Callable[[Any], Any]] = None,
        batched: bool = False,
        credit: int = 0,
    ) -> Any:
        """Subscribes to stream events: of one ``stream``, of the streams whose names start
        with ``prefix``, or of all streams, optionally of one ``event_type`` only.

        ``start_revision`` 0 = only what is appended from now on, 1 = from the beginning,
        N = from global revision N, then live: in revision order, no gap, no duplicate.
        Without ``callback``: a :class:`Subscription` (``for`` / ``async for``); with it, a
        :class:`SubscriptionHandle`. The other arguments are :meth:`Store.watch`'s.
        Bad names (empty, longer than 1024 bytes) raise ``InvalidArgumentError`` /
        ``TooLargeError``."""
        spec = WatchSpec(make_stream_selector(stream, prefix, event_type), start_revision, max_queue, progress_interval_ms)
        if callback is None:
            if batched or credit:
                raise TypeError("batched= and credit= only apply to callback subscriptions")
            return Subscription(self, spec, timeout)  # type: ignore[arg-type]
        if timeout is not None:
            raise TypeError("timeout= only applies to iterator subscriptions")
        return SubscriptionHandle._register(self, spec, credit, callback, batched)  # type: ignore[arg-type]

    def asubscribe(
        self,
        *,
        stream: Optional[Key] = None,
        prefix: Optional[Key] = None,
        event_type: Optional[Key] = None,
        start_revision: int = 0,
        max_queue: int = 0,
        progress_interval_ms: int = 0,
    ) -> AsyncSubscription:
        """Like :meth:`subscribe`, for ``async for`` only (see :meth:`Store.awatch`)."""
        spec = WatchSpec(make_stream_selector(stream, prefix, event_type), start_revision, max_queue, progress_interval_ms)
        return AsyncSubscription(self, spec)  # type: ignore[arg-type]
