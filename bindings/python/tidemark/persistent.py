"""Persistent subscriptions: :class:`PersistentMixin` gives :class:`~tidemark.Store` its
``subscription_create``, ``subscription_delete``, ``subscription_list``,
``subscription_connect``, ``subscription_consume``, ``subscription_parked``,
``subscription_replay_parked`` and ``subscription_reset`` over ``tidemark_store_subscription_*`` and
``tidemark_subscription_*``.

A :class:`Consumer` is consumed as an iterator (``for d in consumer``), with ``async for``,
or with ``next(timeout)``; :meth:`PersistentMixin.subscription_consume` runs a callback on a
thread of its own. Each item is a :class:`Delivery`: the stream event's fields, its
``delivery_count``, and ``ack()`` / ``nack(action)``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from ctypes import byref, c_size_t, c_uint64, c_void_p, string_at
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Sequence, Union

from . import _ffi
from ._util import Key, to_bytes
from .errors import ClosedError, NotFoundError, WatchTimeout
from .subscriptions import make_stream_selector

__all__ = ["Delivery", "Consumer", "ConsumerThread", "PersistentMixin", "RETRY", "PARK", "SKIP"]

RETRY, PARK, SKIP = 0, 1, 2
_STARTS = {"beginning": 0, "end": 1}
_MAX_WAIT_MS = 0xFFFFFFFF


def _bytes(b: Any) -> bytes:
    return string_at(b.ptr, b.len) if b.len else b""


class Delivery:
    """An event delivered by a persistent subscription; ack it (or nack it) on the consumer
    it came from."""

    __slots__ = ("stream", "id", "type", "data", "metadata", "version", "revision", "timestamp_ms",
                 "delivery_count", "_consumer")

    def __init__(self, d: Any, consumer: Optional["Consumer"]) -> None:
        e = d.event
        self.stream, self.id, self.type = _bytes(e.stream), _bytes(e.id), _bytes(e.event_type)
        self.data, self.metadata = _bytes(e.data), _bytes(e.metadata)
        self.version, self.revision, self.timestamp_ms = e.version, e.revision, e.timestamp_ms
        self.delivery_count = d.delivery_count
        self._consumer = consumer

    def ack(self) -> None:
        """Acks this event (see :meth:`Consumer.ack`)."""
        self._owner().ack(self)

    def nack(self, action: int = RETRY) -> None:
        """Gives it back: ``RETRY``, ``PARK`` or ``SKIP``."""
        self._owner().nack(self, action)

    def _owner(self) -> "Consumer":
        if self._consumer is None:
            raise TypeError("a parked event is not in flight; replay it with subscription_replay_parked")
        return self._consumer

    def __repr__(self) -> str:
        return (f"Delivery(stream={self.stream!r}, version={self.version}, revision={self.revision}, "
                f"delivery_count={self.delivery_count})")


def _take(handle: Optional[int], consumer: Optional["Consumer"]) -> List[Delivery]:
    try:
        n = _ffi.deliveries_len(handle)
        data = _ffi.deliveries_data(handle)
        return [Delivery(data[i], consumer) for i in range(n)]
    finally:
        _ffi.deliveries_free(handle)


def _revision(e: Union[Delivery, int]) -> int:
    if type(e) is int:
        return e
    if isinstance(e, Delivery):
        return e.revision
    raise TypeError(f"a Delivery or a revision, not {type(e).__name__}")


class Consumer:
    """One consumer of a persistent subscription (``store.subscription_connect(name)``).
    Use it from one thread at a time; ``close()`` (or leaving ``with``) hands its unacked
    events to the other consumers."""

    def __init__(self, store: Any, handle: int) -> None:
        self._store = store  # keeps the store's library state alive while connected
        self._h: Optional[int] = handle
        self._lock = threading.Lock()

    def _handle(self) -> int:
        if self._h is None:
            raise ClosedError("the consumer is closed")
        return self._h

    def next(self, timeout: Optional[float] = None) -> List[Delivery]:
        """Waits up to ``timeout`` seconds (None = without end) for deliveries; [] when none
        came. Raises :class:`~tidemark.NotFoundError` once the subscription was deleted and
        :class:`~tidemark.ClosedError` once the store closed."""
        ms = _MAX_WAIT_MS if timeout is None else max(0, min(_MAX_WAIT_MS, int(timeout * 1000)))
        while True:
            out = c_void_p()
            try:
                _ffi.subscription_next(self._handle(), ms, byref(out))
            except WatchTimeout:
                if timeout is None:
                    continue
                return []
            return _take(out.value, self)

    def ack(self, events: Union[Delivery, int, Sequence[Union[Delivery, int]]]) -> None:
        """Acks one or several delivered events (a :class:`Delivery` or its revision) in one
        commit. Raises :class:`~tidemark.InvalidArgumentError`, acking nothing, if one was
        not delivered to this consumer (or already acked, or timed out)."""
        revs = [_revision(e) for e in (events if isinstance(events, (list, tuple)) else [events])]
        arr = (c_uint64 * len(revs))(*revs) if revs else None
        _ffi.subscription_ack(self._handle(), arr, len(revs))

    def nack(self, event: Union[Delivery, int], action: int = RETRY) -> None:
        """``RETRY`` (delivered again; parked after ``max_retry``), ``PARK`` or ``SKIP``."""
        _ffi.subscription_nack(self._handle(), _revision(event), action)

    def close(self) -> None:
        with self._lock:
            h, self._h = self._h, None
        if h is not None:
            _ffi.subscription_close(h)

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __iter__(self) -> Iterator[Delivery]:
        """Blocks for each delivery; ends when the subscription is deleted or the store or
        the consumer closes."""
        while True:
            try:
                batch = self.next(None)
            except (ClosedError, NotFoundError):
                return
            yield from batch

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        """``async for d in consumer``: waits in a worker thread, so the loop keeps running."""
        while True:
            try:
                batch = await asyncio.to_thread(self.next, 0.25)
            except (ClosedError, NotFoundError):
                return
            for d in batch:
                yield d


class ConsumerThread:
    """A callback consumer: a thread of its own calls ``callback(delivery)`` for each event
    (the callback acks or nacks it). ``stop()`` ends it and closes the consumer."""

    def __init__(self, consumer: Consumer, callback: Callable[[Delivery], None]) -> None:
        self.consumer = consumer
        self._stop = threading.Event()
        self._callback = callback
        self._thread = threading.Thread(target=self._run, name="tidemark-consumer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self.consumer.next(0.1)
            except (ClosedError, NotFoundError):
                return
            for d in batch:
                self._callback(d)

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self.consumer.close()


class PersistentMixin:
    """The persistent subscription methods of :class:`~tidemark.Store` (see the module doc)."""

    _call: Any

    def subscription_create(
        self,
        name: Key,
        *,
        stream: Optional[Key] = None,
        prefix: Optional[Key] = None,
        event_type: Optional[Key] = None,
        start: Union[str, int] = "beginning",
        max_in_flight: int = 100,
        message_timeout_ms: int = 30_000,
        max_retry: int = 10,
        pinned: bool = False,
    ) -> int:
        """Creates the persistent subscription ``name`` over the stream events the selector
        keywords match (as for :meth:`subscribe`), from ``start``: ``"beginning"``, ``"end"``
        or a revision >= 1. Returns the commit's revision. A name in use raises
        :class:`~tidemark.ConflictError`."""
        n = to_bytes(name, "name")
        sel = make_stream_selector(stream, prefix, event_type)
        if isinstance(start, str):
            if start not in _STARTS:
                raise ValueError('start must be "beginning", "end" or a revision >= 1')
            kind, rev = _STARTS[start], 0
        elif type(start) is int:
            kind, rev = 2, start
        else:
            raise TypeError('start must be "beginning", "end" or a revision >= 1')
        opts = _ffi.SubscriptionOptions(max_in_flight, message_timeout_ms, max_retry, bool(pinned))
        out = c_uint64()
        self._call(_ffi.store_subscription_create, n, len(n), byref(sel) if sel is not None else None,
                   kind, rev, byref(opts), byref(out))
        return out.value

    def subscription_delete(self, name: Key) -> int:
        """Deletes the subscription, its checkpoint and parked events; returns the revision."""
        n = to_bytes(name, "name")
        out = c_uint64()
        self._call(_ffi.store_subscription_delete, n, len(n), byref(out))
        return out.value

    def subscription_list(self) -> List[Dict[str, Any]]:
        """Every subscription: name, selector, options, ``checkpoint``, ``lag``,
        ``in_flight``, ``parked``, ``consumers``."""
        out = c_void_p()
        self._call(_ffi.store_subscription_list, byref(out))
        try:
            return json.loads(string_at(out.value).decode("utf-8"))
        finally:
            _ffi.string_free(out.value)

    def subscription_connect(self, name: Key) -> Consumer:
        """A new :class:`Consumer` of the subscription ``name``."""
        n = to_bytes(name, "name")
        out = c_void_p()
        self._call(_ffi.subscription_connect, n, len(n), byref(out))
        return Consumer(self, out.value)

    def subscription_consume(self, name: Key, callback: Callable[[Delivery], None]) -> ConsumerThread:
        """Connects a consumer and calls ``callback(delivery)`` on a thread of its own."""
        return ConsumerThread(self.subscription_connect(name), callback)

    def subscription_parked(self, name: Key, limit: int = 0) -> List[Delivery]:
        """Parked events (``delivery_count`` = deliveries when parked), in revision order."""
        n = to_bytes(name, "name")
        out = c_void_p()
        self._call(_ffi.store_subscription_parked, n, len(n), limit, byref(out))
        return _take(out.value, None)

    def subscription_replay_parked(self, name: Key) -> int:
        """Delivers every parked event again; returns how many were queued."""
        n = to_bytes(name, "name")
        out = c_size_t()
        self._call(_ffi.store_subscription_replay_parked, n, len(n), byref(out))
        return out.value

    def subscription_reset(self, name: Key, revision: int) -> int:
        """Delivery starts again at ``revision`` (1 to the current revision + 1): earlier
        delivers events again, later skips them; parked events stay parked. Connected
        consumers get :class:`~tidemark.ConflictError` and connect again. Returns the
        revision of the commit that moved the checkpoint."""
        if type(revision) is not int or revision < 0:
            raise TypeError("revision must be an int >= 1")
        n = to_bytes(name, "name")
        out = c_uint64()
        self._call(_ffi.store_subscription_reset, n, len(n), revision, byref(out))
        return out.value
