"""Watches three ways: a blocking iterator (:class:`Watch`, the pull API), a callback
(:class:`WatchHandle`, the push API) and ``async for`` (:class:`AsyncWatch`, the push API with
flow control, feeding the asyncio loop thread-safely).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
import time
import weakref
from ctypes import byref, c_size_t, c_uint32, c_uint64, c_void_p
from typing import Any, Callable, Deque, Iterable, Iterator, List, NamedTuple, Optional

from . import _ffi
from ._events import CLOSED, COMPACTED, DELETE, PUT, Event, decode_callback, take_events
from ._handle import StoreHandle
from ._util import CallbackRegistry, describe_selector, enter_callback, leave_callback, report_callback_exception
from .errors import ClosedError, CompactedError, NotFoundError, WatchTimeout


__all__ = ["Watch", "WatchHandle", "AsyncWatch"]

#: The longest a pull watch waits inside the C library before returning to Python, in ms.
#: Lets ``close()`` from another thread and Ctrl-C take effect; an idle watch costs a few
#: wake-ups per second, nothing more.
WAIT_SLICE_MS = 200


class WatchSpec(NamedTuple):
    """What a watch is opened with (:meth:`Store.watch <tidemark.Store.watch>`): the selector,
    the revision to start from (0 = the next one) and the options."""

    selector: Optional[_ffi.Selector]
    start_revision: int
    max_queue: int
    progress_interval_ms: int

    def options(self, credit: int = 0) -> _ffi.WatchOptions:
        """The C watch options, each checked by :func:`~tidemark._ffi.check_uint`
        (``TypeError``/``ValueError`` naming the option)."""
        return _ffi.WatchOptions(
            _ffi.check_uint(self.start_revision, "start_revision"),
            _ffi.check_uint(self.max_queue, "max_queue", c_size_t),
            _ffi.check_uint(self.progress_interval_ms, "progress_interval_ms", c_uint32),
            _ffi.check_uint(credit, "credit"),
        )

    def start(self, store: StoreHandle) -> int:
        """The revision the watch starts from: ``start_revision``, or the store's next one."""
        return self.start_revision or store.revision + 1


def _compacted(event: Event) -> CompactedError:
    return CompactedError(
        f"the watch fell behind compaction; the earliest retained revision is {event.revision}: "
        "resync (e.g. Store.range) and watch again from there",
        revision=event.revision,
    )


# =============================================================================================
# Pull: the blocking iterator


class Watch:
    """A pull watch: ``for event in store.watch(prefix="tasks/"): ...``.

    Iteration blocks until events come (``timeout`` seconds at most per wait, then
    :class:`WatchTimeout`; ``None`` = wait forever). It yields ``PUT``/``DELETE`` events, and
    ``PROGRESS`` events if ``progress_interval_ms`` was set. It ends when the store is closed
    (after everything already committed was yielded) or the watch is closed; a watch that fell
    behind compaction raises :class:`CompactedError` (``.earliest_revision``) and is over.

    The GIL is released while waiting. Read a watch from one thread at a time (concurrent
    readers are serialized). :meth:`close` may be called from any thread. A ``Watch`` keeps
    its store alive; it is closed when garbage-collected. ``async for`` also works on it
    (see :class:`AsyncWatch`).
    """

    # The C pull API this class drives; a subscription (tidemark.subscriptions) is the same
    # class over its own functions.
    _OPEN = staticmethod(_ffi.watch_open)
    _NEXT = staticmethod(_ffi.watch_next)
    _ID = staticmethod(_ffi.watch_id)
    _CLOSE = staticmethod(_ffi.watch_close)
    _TAKE = staticmethod(take_events)
    _ASYNC: Any  # AsyncWatch, set below

    def __init__(self, store: StoreHandle, spec: WatchSpec, timeout: Optional[float] = None) -> None:
        self._h: Optional[int] = None
        self._lock = threading.Lock()
        self._pending: Deque[Event] = collections.deque()
        self._close_requested = False
        # Set first thing by close(): from then on nothing is yielded, whatever was fetched.
        self._closed_by_user = False
        # A COMPACTED that came after events in the same delivery: raised by the next fetch.
        self._deferred: Optional[CompactedError] = None
        self._store = store
        self._spec = spec
        self.timeout = _ffi.check_timeout(timeout)
        #: The terminal event (``COMPACTED`` or ``CLOSED``) once the watch has ended on one.
        self.terminal: Optional[Event] = None
        opts = spec.options()
        # Where this watch starts in the log, to hand over to a push watch for `async for`.
        self._position = spec.start(store)
        out = c_void_p()
        store._call(self._OPEN, spec.selector, byref(opts), byref(out))
        self._h = out.value

    def __repr__(self) -> str:
        state = "closed" if self._h is None else f"id={self.id}"
        return f"<tidemark.Watch {describe_selector(self._spec.selector)} {state}>"

    @property
    def id(self) -> int:
        """The watch's id in the store (0 once closed)."""
        h = self._h
        return self._ID(h) if h is not None else 0

    @property
    def closed(self) -> bool:
        """True once the watch has ended (terminal event, :meth:`close`, garbage collection)."""
        return self._h is None and not self._pending

    @property
    def position(self) -> int:
        """The revision the watch continues from (after the events fetched so far)."""
        return self._position

    # -- reading -----------------------------------------------------------------------------

    def _free(self) -> None:
        # Holding self._lock (or the only reference).
        h, self._h = self._h, None
        if h is not None:
            self._CLOSE(h)

    def _fetch(self, timeout: Optional[float]) -> Optional[List[Event]]:
        """One delivery from the library; ``None`` once the watch has ended."""
        timeout = _ffi.check_timeout(timeout)
        if timeout is None:
            self._lock.acquire()
        elif not self._lock.acquire(timeout=max(timeout, 0)):
            raise WatchTimeout(f"no event within {timeout} s (another thread is reading this watch)")
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            out = c_void_p()
            while True:
                h = self._h
                if h is None:
                    deferred, self._deferred = self._deferred, None
                    if deferred is not None:
                        raise deferred
                    return None
                if self._close_requested:
                    self._free()
                    return None
                if deadline is None:
                    wait_ms = WAIT_SLICE_MS
                else:
                    wait_ms = min(WAIT_SLICE_MS, max(0, int((deadline - time.monotonic()) * 1000)))
                try:
                    self._NEXT(h, wait_ms, byref(out))
                except WatchTimeout:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise WatchTimeout(f"no event within {timeout} s") from None
                    continue
                except ClosedError:
                    self._free()
                    return None
                events, next_revision = self._TAKE(out.value or 0)
                if self._closed_by_user:  # closed while this thread waited: drop it
                    self._free()
                    return None
                if not events:  # pragma: no cover - the library never delivers an empty batch
                    continue
                last = events[-1]
                if last.kind == COMPACTED or last.kind == CLOSED:
                    # The events before the terminal one (if any) are still yielded.
                    self.terminal = events.pop()
                    self._free()
                    if last.kind == COMPACTED:
                        if not events:
                            raise _compacted(last)
                        self._deferred = _compacted(last)
                    if not events:
                        return None
                self._position = next_revision
                return events
        finally:
            self._lock.release()

    def next_batch(self, timeout: Optional[float] = None) -> List[Event]:
        """The next delivery as a list: whole commits in order, or one ``PROGRESS`` event.
        Returns ``[]`` once the watch has ended (store closed, watch closed); raises
        :class:`WatchTimeout` if nothing came within ``timeout`` seconds (``None`` = wait),
        :class:`CompactedError` if the watch fell behind compaction."""
        if self._closed_by_user:
            return []
        if self._pending:
            batch = list(self._pending)
            self._pending.clear()
            return batch
        return self._fetch(timeout) or []

    def __iter__(self) -> Iterator[Event]:
        pending = self._pending
        pop = pending.popleft
        while True:
            # Checked before every yield: after close() returns, nothing more is yielded.
            while pending and not self._closed_by_user:
                yield pop()
            if self._closed_by_user:
                return
            batch = self._fetch(self.timeout)
            if batch is None:
                return
            pending.extend(batch)

    def __next__(self) -> Event:
        if self._closed_by_user:
            raise StopIteration
        if not self._pending:
            batch = self._fetch(self.timeout)
            if batch is None:
                raise StopIteration
            self._pending.extend(batch)
        return self._pending.popleft()

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Ends the watch (idempotent, any thread). If another thread is blocked reading it,
        that thread wakes up within ``WAIT_SLICE_MS`` and its iteration ends. Once it
        returns, nothing more is yielded (events already fetched are dropped)."""
        self._closed_by_user = True
        self._pending.clear()
        if self._lock.acquire(blocking=False):
            try:
                self._free()
            finally:
                self._lock.release()
        else:
            self._close_requested = True

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._free()
        except Exception:  # pragma: no cover
            pass

    # -- async -------------------------------------------------------------------------------

    def __aiter__(self) -> "AsyncWatch":
        """``async for`` over this watch: hands over to an :class:`AsyncWatch` that continues
        exactly where this one is (events already fetched are yielded first)."""
        with self._lock:
            carry = list(self._pending)
            self._pending.clear()
            ended = self._h is None
            self._free()
        spec = self._spec._replace(start_revision=self._position)
        return self._ASYNC(self._store, spec, carry=carry, ended=ended, terminal=self.terminal)


# =============================================================================================
# Push: callbacks on the store's threads

_registry: CallbackRegistry["WatchHandle"] = CallbackRegistry("_on_drop")


def _on_c_callback(userdata: Optional[int], events: Optional[int], count: int) -> None:
    handle = _registry.get(userdata or 0)
    if handle is not None:
        handle._on_events(events or 0, count)


# The only two C function pointers the binding ever hands to the library. They are module
# globals, so they outlive every watch; which watch a call is for comes from `userdata`
# (a token into _registry, whose entry is removed by the drop function, called exactly once).
_c_callback = _ffi.WATCH_CALLBACK(_on_c_callback)
_c_drop = _ffi.DROP_CALLBACK(_registry.drop)


class WatchHandle:
    """A push watch: ``store.watch(prefix="tasks/", callback=fn)``.

    ``fn(event)`` runs on a thread the store owns (never on two threads at once for one
    watch), for every event in order; with ``batched=True`` it gets each delivery (whole
    commits) as a list. Its last call, if the watch ends on its own, is the terminal event:
    ``COMPACTED`` (fell behind compaction; ``event.revision`` is the earliest retained
    revision) or ``CLOSED`` (the store was closed or garbage-collected). :meth:`cancel` ends
    it without a terminal call.

    An exception raised by the callback does not stop the watch: it is reported through
    ``sys.unraisablehook`` (printed to stderr by default) and kept in :attr:`exceptions`.

    The callback may use the store (put, get, cancel its own watch...). A ``WatchHandle``
    does not keep its store alive. The C callback objects are module-level and live
    forever; the handle itself stays registered until the library calls its drop function.
    """

    # The C push API this class drives (see Watch._OPEN).
    _REGISTER = staticmethod(_ffi.store_watch)
    _DECODE = staticmethod(decode_callback)

    def __init__(self, store: StoreHandle, callback: Optional[Callable[[Any], Any]], batched: bool) -> None:
        self._store_ref = weakref.ref(store)
        self._callback = callback
        self._batched = batched
        self._token = _registry.new_token()
        self._done = threading.Event()
        self._cancel_requested = False
        # Set first thing by cancel(): the trampoline stops calling the callback at once.
        self._cancelled = False
        self._on_end: Optional[Callable[[], None]] = None
        self._selector_desc = "all"
        #: The watch id in the store (set once registered).
        self.id: Optional[int] = None
        #: The terminal event (``COMPACTED``/``CLOSED``) if the watch ended on one.
        self.terminal: Optional[Event] = None
        #: The last exceptions raised by the callback (at most 100), oldest first.
        self.exceptions: Deque[BaseException] = collections.deque(maxlen=100)
        #: How many times the callback raised.
        self.exception_count = 0
        #: Events delivered so far (terminal included).
        self.delivered = 0

    @classmethod
    def _register(
        cls,
        store: StoreHandle,
        spec: WatchSpec,
        credit: int,
        callback: Optional[Callable[[Any], Any]],
        batched: bool,
        prepare: Optional[Callable[["WatchHandle"], None]] = None,
    ) -> "WatchHandle":
        """Registers a push watch. ``prepare(handle)`` may set the handle's internals (the
        callback, an end hook) before the library can call it."""
        if prepare is None:
            if not callable(callback):
                raise TypeError("callback must be callable")
            if asyncio.iscoroutinefunction(callback):
                raise TypeError("callback is a coroutine function: use `async for ev in store.watch(...)` instead")
        opts = spec.options(credit)
        handle = cls(store, callback, batched)
        handle._selector_desc = describe_selector(spec.selector)
        if prepare is not None:
            prepare(handle)
        # Registered before the call: callbacks (a replay) may run before it returns.
        _registry[handle._token] = handle
        out = c_uint64()
        try:
            store._call(cls._REGISTER, spec.selector, byref(opts), _c_callback, handle._token, _c_drop, byref(out))
        except BaseException:
            # The library called drop_userdata already (it always does once it took the
            # callback); make sure the handle does not linger either way.
            _registry.drop(handle._token)
            raise
        handle.id = out.value
        if handle._cancel_requested:
            handle.cancel()
        return handle

    def __repr__(self) -> str:
        state = "active" if self.active else "ended"
        return f"<tidemark.WatchHandle id={self.id} {self._selector_desc} {state}>"

    @property
    def active(self) -> bool:
        """True until the watch has ended and its callback will never be called again."""
        return not self._done.is_set()

    @property
    def store(self) -> Optional[StoreHandle]:
        """The store, or ``None`` if it was garbage-collected."""
        return self._store_ref()

    def _on_events(self, events_ptr: int, count: int) -> None:
        events = self._DECODE(events_ptr, count)
        self.delivered += len(events)
        if events and events[-1].is_terminal:
            self.terminal = events[-1]
        cb = self._callback
        if cb is None or self._cancelled:
            return
        enter_callback()
        try:
            if self._batched:
                self._invoke(cb, events)
            else:
                for ev in events:
                    if self._cancelled:  # cancelled by an earlier call of this delivery
                        break
                    self._invoke(cb, ev)
        finally:
            leave_callback()

    def _invoke(self, cb: Callable[[Any], Any], arg: Any) -> None:
        try:
            cb(arg)
        except BaseException as exc:  # never let it reach the C library
            self.exception_count += 1
            self.exceptions.append(exc)
            report_callback_exception(exc, cb, self)

    def _on_drop(self) -> None:
        self._callback = None  # release the user's closure
        self._done.set()
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            try:
                on_end()
            except BaseException as exc:  # pragma: no cover
                report_callback_exception(exc, on_end, self)

    def cancel(self) -> None:
        """Ends the watch (idempotent). From outside the callback: when it returns the
        callback is not running and will not be called again. From inside the callback: it
        returns at once and the callback is not called again after the current call (not
        for the rest of the current delivery either)."""
        self._cancelled = True
        if self.id is None:  # still registering (called from a replayed callback)
            self._cancel_requested = True
            return
        if self._done.is_set():
            return
        store = self._store_ref()
        if store is None or store.closed:
            return  # closing the store ends the watch
        try:
            store._unwatch(self.id)
        except (NotFoundError, ClosedError):
            pass  # it ended on its own meanwhile

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits until the watch has ended (its drop function ran); False on timeout."""
        return self._done.wait(timeout)

    def grant(self, n: int) -> None:
        """Grants ``n`` more events to a watch opened with ``credit=``."""
        store = self._store_ref()
        if store is None or self.id is None:
            raise ClosedError("the watch's store is gone")
        store._grant(self.id, n)

    def __enter__(self) -> "WatchHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()


# =============================================================================================
# Async: a push watch with credit, feeding the loop


def _async_deliver(ref: "weakref.ref[AsyncWatch]", loop: asyncio.AbstractEventLoop, events: List[Event]) -> None:
    # On a store thread. Hands the whole delivery to the loop; never blocks.
    aw = ref()
    if aw is None:
        raise _Abandoned()
    try:
        loop.call_soon_threadsafe(aw._push, events)
    except RuntimeError:  # the loop is closed: nobody will read this watch any more
        raise _Abandoned() from None


class _Abandoned(Exception):
    pass


class AsyncWatch:
    """``async for event in store.watch(...)`` (or ``store.awatch(...)``).

    Backed by a push watch with flow control (``credit``): the store's thread hands each
    delivery to the event loop with ``loop.call_soon_threadsafe``, and more events are granted
    only as the coroutine consumes them, so at most about ``max_queue`` events wait in Python
    however slow the consumer. No thread is blocked and nothing polls.

    Same events and endings as :class:`Watch`: ``CompactedError`` on ``COMPACTED``, the
    iteration stops on ``CLOSED``. Call :meth:`aclose` (or use ``async with``) to end it
    early; an abandoned ``AsyncWatch`` is cancelled when garbage-collected.
    """

    _HANDLE = WatchHandle  # the push watch it is backed by

    def __init__(
        self,
        store: StoreHandle,
        spec: WatchSpec,
        *,
        carry: Iterable[Event] = (),
        ended: bool = False,
        terminal: Optional[Event] = None,
    ) -> None:
        spec.options()  # checks them now rather than at the first await
        self._store = store
        self._spec = spec._replace(start_revision=spec.start(store))
        self._credit = spec.max_queue or 1000
        self._buf: Deque[Event] = collections.deque(carry)
        self._carry = len(self._buf)  # events not delivered through the push watch (no credit)
        self._owed = 0
        self._handle: Optional[WatchHandle] = None
        self._waiter: Optional["asyncio.Future[None]"] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._ended = ended  # no more events will be pushed
        self._finished = False  # the consumer saw the end
        self.terminal = terminal

    def __repr__(self) -> str:
        return f"<tidemark.AsyncWatch {describe_selector(self._spec.selector)} {'ended' if self._finished else 'open'}>"

    def _push(self, events: List[Event]) -> None:
        # On the loop thread. A delivery scheduled before aclose() is dropped.
        if self._finished:
            return
        self._buf.extend(events)
        if events and events[-1].is_terminal:
            self._ended = True
        self._wake()

    def _mark_ended(self) -> None:
        # On the loop thread, after the push watch's drop: nothing more will come.
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def __aiter__(self) -> "AsyncWatch":
        return self

    async def __anext__(self) -> Event:
        if self._finished:
            raise StopAsyncIteration
        if self._handle is None and not self._ended:
            self._open_with_callback()
        buf = self._buf
        while not buf:
            if self._ended:
                self._finish()
                raise StopAsyncIteration
            loop = self._loop or asyncio.get_running_loop()
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        ev = buf.popleft()
        kind = ev.kind
        if kind == PUT or kind == DELETE:
            if self._carry:
                self._carry -= 1
            else:
                self._owed += 1
                if self._owed * 2 >= self._credit and self._handle is not None and self._handle.active:
                    n, self._owed = self._owed, 0
                    try:
                        self._handle.grant(n)
                    except (NotFoundError, ClosedError):
                        pass  # ended meanwhile; its terminal event is on its way
        elif kind == COMPACTED or kind == CLOSED:
            self.terminal = ev
            self._finish()
            if kind == COMPACTED:
                raise _compacted(ev)
            raise StopAsyncIteration
        return ev

    def _open_with_callback(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        ref = weakref.ref(self)

        def prepare(handle: WatchHandle) -> None:
            handle._callback = functools.partial(_async_callback, ref, loop, handle)
            handle._on_end = functools.partial(_async_ended, ref, loop)

        try:
            self._handle = self._HANDLE._register(self._store, self._spec, self._credit, None, True, prepare)
        except BaseException:
            self._ended = True
            self._finished = True
            raise

    def _finish(self) -> None:
        self._finished = True
        self._ended = True
        h = self._handle
        if h is not None:
            h.cancel()

    async def aclose(self) -> None:
        """Ends the watch (idempotent)."""
        self._finish()
        self._buf.clear()
        self._wake()

    def close(self) -> None:
        """Synchronous :meth:`aclose`."""
        self._finish()
        self._buf.clear()
        self._wake()

    async def __aenter__(self) -> "AsyncWatch":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        h = getattr(self, "_handle", None)  # None if __init__ raised
        if h is not None and h.active:
            try:
                h.cancel()
            except Exception:  # pragma: no cover
                pass


Watch._ASYNC = AsyncWatch


def _async_callback(
    ref: "weakref.ref[AsyncWatch]", loop: asyncio.AbstractEventLoop, handle: WatchHandle, events: List[Event]
) -> None:
    try:
        _async_deliver(ref, loop, events)
    except _Abandoned:
        handle.cancel()  # from inside the callback: returns at once


def _async_ended(ref: "weakref.ref[AsyncWatch]", loop: asyncio.AbstractEventLoop) -> None:
    aw = ref()
    if aw is None:
        return
    try:
        loop.call_soon_threadsafe(aw._mark_ended)
    except RuntimeError:
        pass


