"""The :class:`Store` and its atomic :class:`Batch`."""

from __future__ import annotations

import json
import os
import threading
import weakref
from ctypes import byref, c_size_t, c_uint64, c_void_p, string_at
from typing import Any, Callable, Dict, Iterator, Optional, Union, overload

from . import _ffi
from ._events import Entry, Event, Page, take_page
from ._handle import StoreHandle, ended_at_exit
from ._util import Key, in_callback, make_selector, selector_keywords, take_json_string, take_string, to_bytes
from .errors import ClosedError, NotFoundError
from .contexts import ContextsMixin
from .lockstep import Address, FollowEvent, Follower, Server
from .persistent import PersistentMixin
from .streams import StreamsMixin
from .subscriptions import SubscriptionsMixin
from .trackers import TrackersMixin
from .watch import AsyncWatch, Watch, WatchHandle, WatchSpec

__all__ = ["Store", "Batch"]

_store_put = _ffi.store_put
_store_put_if = _ffi.store_put_if
_store_delete = _ffi.store_delete
_store_get = _ffi.store_get

# Every store still open, closed at interpreter exit: push callbacks get their CLOSED call and
# pull watches wake up, instead of store threads calling into a finalizing Python.
_open_stores: "weakref.WeakSet[Store]" = ended_at_exit()


class Store(StreamsMixin, SubscriptionsMixin, PersistentMixin, ContextsMixin, TrackersMixin, StoreHandle):
    """A tidemark store: one revision log, its key/value view and its watches.

    ``Store()`` (or ``Store(None)`` / ``Store("")``) opens an in-memory store; ``Store(path)``
    a durable store in that directory (where the library supports it). Keyword options are
    passed to the library as a JSON object, e.g. ``Store(dispatch_threads=2,
    max_value_size=1 << 20)``; unknown options raise :class:`InvalidArgumentError`.

    Keys and values may be ``str`` (stored as UTF-8) or bytes-like; everything read back
    (entries, events) is ``bytes``.

    A store is thread-safe: any number of Python threads may use it at once. Use it as a
    context manager or call :meth:`close` (idempotent); a store that is garbage-collected is
    closed, and every store still open is closed at interpreter exit. Closing ends every watch
    (iterators stop, callbacks get a final ``CLOSED`` event) and first stops the lockstep
    servers and followers started from the store (:meth:`serve`, :meth:`follow`).
    """

    _live = _open_stores

    def __init__(self, path: Union[None, str, "os.PathLike[str]", bytes] = None, **options: Any) -> None:
        super().__init__()
        self._close_done = threading.Event()
        self._close_done.set()  # nothing to wait for until the store is open
        self._options: Dict[str, Any] = dict(options)
        self._path = None if path is None else os.fsdecode(path)
        cpath = None if path is None else os.fsencode(path)
        copts = json.dumps(options).encode("utf-8") if options else None
        out = c_void_p()
        _ffi.store_open(cpath, copts, byref(out))
        self._close_done.clear()
        self._own(out.value)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the store (idempotent). Its lockstep servers and followers are stopped
        first (a follower's stop can take up to its ``connect_timeout_ms``). Every watch ends:
        pull watches return what they had queued and then stop, push callbacks receive a final
        ``CLOSED`` event. Calls in flight on other threads finish first; later calls raise
        :class:`ClosedError`.

        Called from inside a watch callback, the store is marked closed at once and the rest
        of the close runs on a helper thread once the callback returns."""
        # The lock only guards taking the handle: the close itself runs outside it, because a
        # callback the close is waiting for may call close() too.
        self._end_once()

    def _end(self) -> None:
        self.close()

    def _wait_ended(self) -> None:
        if not in_callback():
            self._close_done.wait()  # another thread is closing: wait for it to finish

    def _end_handle(self, h: int) -> None:
        if in_callback():
            threading.Thread(target=self._finish_close, args=(h,), name="tidemark-close", daemon=True).start()
            return
        self._finish_close(h)

    def _finish_close(self, h: int) -> None:
        try:
            self._close_handle(h)
        finally:
            self._close_done.set()

    def __repr__(self) -> str:
        where = "memory" if not self._path else repr(self._path)
        if self._h is None:
            return f"<tidemark.Store {where} closed>"
        return f"<tidemark.Store {where} revision={self.revision}>"

    # -- keys ------------------------------------------------------------------------------

    def put(self, key: Key, value: Key, *, expected_mod_revision: Optional[int] = None) -> int:
        """Sets ``key`` to ``value`` and returns the new revision.

        With ``expected_mod_revision`` the write is conditional (see :meth:`put_if`).
        Raises :class:`InvalidArgumentError` for an empty key, :class:`TooLargeError` past
        the store's size limits, :class:`ConflictError` when the condition fails."""
        if type(key) is not bytes:
            key = to_bytes(key, "key")
        if type(value) is not bytes:
            value = to_bytes(value, "value")
        out = c_uint64()
        inflight = self._inflight
        inflight.append(None)
        try:
            h = self._h
            if h is None:
                raise ClosedError("the store is closed")
            if expected_mod_revision is None:
                _store_put(h, key, len(key), value, len(value), byref(out))
            else:
                _store_put_if(h, key, len(key), value, len(value), expected_mod_revision, byref(out))
        finally:
            inflight.pop()
        return out.value

    def put_if(self, key: Key, value: Key, expected_mod_revision: int) -> int:
        """Sets ``key`` only if its mod_revision is ``expected_mod_revision`` (0 = the key
        must not exist); returns the new revision. Otherwise nothing changes and
        :class:`ConflictError` is raised, its ``current_revision`` being the key's current
        mod_revision (0 = absent)."""
        return self.put(key, value, expected_mod_revision=expected_mod_revision)

    def get(self, key: Key) -> Optional[Entry]:
        """The key's current :class:`Entry` (value, create_revision, mod_revision, version),
        or ``None`` if it does not exist."""
        if type(key) is not bytes:
            key = to_bytes(key, "key")
        out = c_void_p()
        inflight = self._inflight
        inflight.append(None)
        try:
            h = self._h
            if h is None:
                raise ClosedError("the store is closed")
            try:
                _store_get(h, key, len(key), byref(out))
            except NotFoundError:
                return None
        finally:
            inflight.pop()
        e = out.value
        try:
            v = _ffi.entry_value(e)
            value = string_at(v.ptr, v.len) if v.len else b""
            return Entry(
                key, value, _ffi.entry_create_revision(e), _ffi.entry_mod_revision(e), _ffi.entry_version(e)
            )
        finally:
            _ffi.entry_free(e)

    def delete(self, key: Key) -> int:
        """Deletes ``key`` and returns the delete's revision. A missing key raises
        :class:`NotFoundError` (a ``KeyError``) and takes no revision."""
        if type(key) is not bytes:
            key = to_bytes(key, "key")
        out = c_uint64()
        inflight = self._inflight
        inflight.append(None)
        try:
            h = self._h
            if h is None:
                raise ClosedError("the store is closed")
            _store_delete(h, key, len(key), byref(out))
        finally:
            inflight.pop()
        return out.value

    def __getitem__(self, key: Key) -> bytes:
        """``store[key]``: the value (bytes); :class:`NotFoundError` (a ``KeyError``) if absent."""
        entry = self.get(key)
        if entry is None:
            raise NotFoundError(f"key {to_bytes(key)!r} does not exist", revision=0)
        return entry.value

    def __setitem__(self, key: Key, value: Key) -> None:
        self.put(key, value)

    def __delitem__(self, key: Key) -> None:
        self.delete(key)

    def __contains__(self, key: Key) -> bool:
        return self.get(key) is not None

    # -- batches ---------------------------------------------------------------------------

    def batch(self) -> "Batch":
        """A new atomic :class:`Batch`. As a context manager it commits on a normal exit and
        discards everything on an exception::

            with store.batch() as b:
                b.put("a", "1")
                b.delete("b")
            print(b.revision)   # the first revision of the commit
        """
        return Batch(self)

    # -- reads -----------------------------------------------------------------------------

    def _page(self, fn: Callable[..., Any], *args: Any) -> Page:
        """Calls ``fn(handle, *args, &out)`` (see :meth:`_call`) and takes the page it wrote."""
        out = c_void_p()
        self._call(fn, *args, byref(out))
        return take_page(out.value or 0)

    @selector_keywords
    def range(
        self,
        *,
        key: Optional[Key] = None,
        prefix: Optional[Key] = None,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        limit: int = 0,
    ) -> Page:
        """The current keys matching the selector (none = all), in byte order, as ``PUT``
        events (``revision`` = the key's mod_revision), at most ``limit`` (0 = no limit).
        ``page.has_more`` tells whether keys were left out."""
        return self._page(_ffi.store_range, make_selector(key, prefix, start, end), limit)

    @selector_keywords
    def changes(
        self,
        from_revision: int = 1,
        to_revision: int = 0,
        *,
        key: Optional[Key] = None,
        prefix: Optional[Key] = None,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        limit: int = 0,
    ) -> Page:
        """The changes matching the selector with revision in ``[from_revision, to_revision]``
        (``to_revision`` 0 = current), ascending, about ``limit`` events at most (0 = 1000;
        a commit is never split). Continue from ``page.next_revision`` while
        ``page.has_more`` -- or use :meth:`iter_changes`, which does it for you.

        Raises :class:`CompactedError` (``.earliest_revision``) when ``from_revision`` was
        compacted, :class:`FutureRevisionError` (``.current_revision``) beyond current + 1."""
        sel = make_selector(key, prefix, start, end)
        return self._page(_ffi.store_changes, sel, from_revision, to_revision, limit)

    @selector_keywords
    def iter_changes(
        self,
        from_revision: int = 1,
        to_revision: int = 0,
        *,
        key: Optional[Key] = None,
        prefix: Optional[Key] = None,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        page_size: int = 1000,
    ) -> Iterator[Event]:
        """Every change matching the selector from ``from_revision`` on, paging through
        ``has_more`` transparently. ``to_revision`` 0 means the revision current when the
        iteration starts (so it terminates even under concurrent writes)."""
        sel = make_selector(key, prefix, start, end)
        # Checked here, not only in the C call: they are compared first.
        from_revision = _ffi.check_uint(from_revision, "from_revision")
        to_revision = _ffi.check_uint(to_revision, "to_revision")
        page_size = _ffi.check_uint(page_size, "page_size", c_size_t)
        if not to_revision:
            to_revision = self.revision
            if to_revision < from_revision:
                return
        frm = from_revision
        while True:
            page = self._page(_ffi.store_changes, sel, frm, to_revision, page_size)
            yield from page.events
            if not page.has_more:
                return
            frm = page.next_revision

    # -- log -------------------------------------------------------------------------------

    def compact(self, keep_revision: int) -> int:
        """Drops log entries below ``keep_revision`` (the current state of every key is
        kept) and returns how many were dropped. Watches that still needed a dropped event
        end with ``COMPACTED``. Beyond current + 1: :class:`FutureRevisionError`."""
        out = c_uint64()
        self._call(_ffi.store_compact, keep_revision, byref(out))
        return out.value

    @property
    def earliest_revision(self) -> int:
        """The first revision still in the log (1 for a new store; current + 1 once
        everything was compacted)."""
        return int(self._call(_ffi.store_earliest_revision))

    @property
    def tail_repair(self) -> Optional[Dict[str, int]]:
        """What opening this directory store cut off the end of its log (a torn tail, see
        docs/durability.md "Tail repairs"): ``{"bytes", "commits", "revisions",
        "first_revision"}``, or ``None`` when nothing was cut (always for in-memory stores)."""
        out = [c_uint64() for _ in range(4)]
        self._call(_ffi.store_tail_repair, *(byref(o) for o in out))
        if out[1].value == 0:
            return None
        return dict(zip(("bytes", "commits", "revisions", "first_revision"), (o.value for o in out)))

    @property
    def watcher_count(self) -> int:
        """Push and pull watches that have not ended."""
        return int(self._call(_ffi.store_watcher_count))

    def status(self) -> Dict[str, Any]:
        """The store's state as reported by the library (``tidemark_store_status_json``):
        ``revision``, ``earliest_revision``, ``keys``, ``watchers``, ``durable``, the
        effective options, and more for durable stores."""
        out = c_void_p()
        self._call(_ffi.store_status_json, byref(out))
        return take_json_string(out.value, "tidemark_store_status_json returned NULL")

    def metrics(self) -> Dict[str, Any]:
        """The store's metrics by family name (``tidemark_store_metrics_json``, see
        docs/operations.md): a number, a histogram ``{"count", "sum", "buckets"}``, or for a
        labeled family a list of ``{"labels": {...}, "value": v}``."""
        out = c_void_p()
        self._call(_ffi.store_metrics_json, byref(out))
        return take_json_string(out.value, "tidemark_store_metrics_json returned NULL")

    def metrics_text(self) -> str:
        """The store's metrics in the Prometheus text exposition format
        (``tidemark_store_metrics_text``)."""
        out = c_void_p()
        self._call(_ffi.store_metrics_text, byref(out))
        return take_string(out.value, "tidemark_store_metrics_text returned NULL")

    @property
    def options(self) -> Dict[str, Any]:
        """The options this store was opened with (a copy; ``status()`` shows the effective
        values, defaults included)."""
        return dict(self._options)

    @property
    def path(self) -> Optional[str]:
        """The directory of a durable store; ``None`` (or ``""``) for an in-memory store."""
        return self._path

    # -- watches ---------------------------------------------------------------------------

    @overload
    def watch(
        self,
        *,
        key: Optional[Key] = ...,
        prefix: Optional[Key] = ...,
        start: Optional[Key] = ...,
        end: Optional[Key] = ...,
        start_revision: int = ...,
        max_queue: int = ...,
        progress_interval_ms: int = ...,
        timeout: Optional[float] = ...,
        callback: None = ...,
    ) -> Watch: ...

    @overload
    def watch(
        self,
        *,
        key: Optional[Key] = ...,
        prefix: Optional[Key] = ...,
        start: Optional[Key] = ...,
        end: Optional[Key] = ...,
        start_revision: int = ...,
        max_queue: int = ...,
        progress_interval_ms: int = ...,
        callback: Callable[[Any], Any],
        batched: bool = ...,
        credit: int = ...,
    ) -> WatchHandle: ...

    @selector_keywords
    def watch(
        self,
        *,
        key: Optional[Key] = None,
        prefix: Optional[Key] = None,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        start_revision: int = 0,
        max_queue: int = 0,
        progress_interval_ms: int = 0,
        timeout: Optional[float] = None,
        callback: Optional[Callable[[Any], Any]] = None,
        batched: bool = False,
        credit: int = 0,
    ) -> Any:
        """Watches the keys matching the selector (``key=``, ``prefix=``, ``start=``/``end=``,
        or none for all).

        Without ``callback``: returns a :class:`~tidemark.watch.Watch`, iterable with ``for``
        (blocking, ``timeout`` seconds per wait) and with ``async for``.

        With ``callback``: ``callback(event)`` is called for each event (``callback(events)``
        with a list per delivery if ``batched``) on a thread the store owns; returns a
        :class:`~tidemark.watch.WatchHandle` whose ``cancel()`` ends it.

        ``start_revision`` 0 = only changes committed from now on; N = replay from revision N,
        then continue live, with no gap and no duplicate. ``max_queue`` (0 = 1000) bounds
        what the library buffers for a slow consumer (it then catches up from the log: nothing
        is lost). ``progress_interval_ms`` > 0 adds ``PROGRESS`` events on idle watches.
        ``credit`` (callbacks only) enables flow control: at most that many events are
        delivered before ``handle.grant(n)``."""
        spec = WatchSpec(make_selector(key, prefix, start, end), start_revision, max_queue, progress_interval_ms)
        if callback is None:
            if batched or credit:
                raise TypeError("batched= and credit= only apply to callback watches")
            return Watch(self, spec, timeout)
        if timeout is not None:
            raise TypeError("timeout= only applies to iterator watches")
        return WatchHandle._register(self, spec, credit, callback, batched)

    @selector_keywords
    def awatch(
        self,
        *,
        key: Optional[Key] = None,
        prefix: Optional[Key] = None,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        start_revision: int = 0,
        max_queue: int = 0,
        progress_interval_ms: int = 0,
    ) -> AsyncWatch:
        """Like :meth:`watch`, for ``async for`` only: events are pushed by the store's
        thread to the running asyncio loop (``loop.call_soon_threadsafe``), with flow
        control so a slow coroutine never makes memory grow. ``async for ev in
        store.watch(...)`` does the same."""
        spec = WatchSpec(make_selector(key, prefix, start, end), start_revision, max_queue, progress_interval_ms)
        return AsyncWatch(self, spec)

    # -- lockstep over HTTP ----------------------------------------------------------------

    def serve(self, addr: Address = "127.0.0.1:0", **options: Any) -> Server:
        """Serves this store's keys over HTTP as lockstep feeds (see ``docs/lockstep.md``) and
        returns the running :class:`~tidemark.lockstep.Server`::

            with store.serve(writable=True) as server:
                print(server.url("/servers/0"))      # GET it: the records under /servers/

        ``addr`` is ``"host:port"`` or ``(host, port)``; port 0 (the default) picks a free
        port (``server.port``). Options (JSON-encoded for the library; ``None`` = default):
        ``writable``, ``token``, ``heartbeat_ms``, ``max_connections`` (finite requests at
        once), ``max_follows`` (follow streams at once), ``max_sockets``, ``threads``,
        ``tls_cert`` and ``tls_key`` (PEM files: serve HTTPS), ``max_header_bytes``,
        ``max_body_bytes``, ``allow_remote`` (needed for a non-loopback address),
        ``max_queue``, ``idle_timeout_ms``, ``request_timeout_ms``, ``write_timeout_ms``.
        A bad address or option raises :class:`InvalidArgumentError`; an address in use
        :class:`TidemarkIOError`."""
        return Server(self, addr, options)

    def follow(
        self, url: str, callback: Optional[Callable[[FollowEvent], Any]] = None, **options: Any
    ) -> Follower:
        """Mirrors the lockstep feed at ``url`` (e.g. ``"http://127.0.0.1:4567/servers/"``)
        into this store and returns the running :class:`~tidemark.lockstep.Follower`. A record
        is put at ``prefix + id`` as the JSON line received, a record with a ``deleted_at``
        deletes it; the cursor is committed with the records, so a follower of a durable store
        resumes where its data is.

        ``callback(event)`` (optional) gets each :class:`~tidemark.lockstep.FollowEvent` on the
        follower's thread. Options (``None`` = default): ``prefix`` (default: the URL's path),
        ``id_field``, ``order_by``, ``token``, ``follow``, ``cursor_param``, ``cursor_key``,
        ``poll_ms``, ``connect_timeout_ms``, ``idle_timeout_ms``, ``backoff_initial_ms``,
        ``backoff_max_ms``, ``batch_records``, ``max_line_bytes``, ``adopt`` (without it a
        first sync into a prefix that already holds keys is refused), ``allow_root_prefix``,
        ``tls_ca_file``, ``name`` (how a tidemark server's metrics and status page name this
        follower). A bad URL or option raises :class:`InvalidArgumentError`."""
        return Follower(self, url, callback, options)


class Batch:
    """An atomic write batch: its operations commit together (consecutive revisions, one
    watch delivery) or not at all. Not thread-safe: build it from one thread.

    Use it as a context manager (``with store.batch() as b: ...``: commit on a normal exit,
    discard on an exception) or call :meth:`commit` yourself; a batch can be committed
    several times. ``revision`` is the first revision of the last commit."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._b: Optional[int] = _ffi.batch_new()
        self.revision: Optional[int] = None

    def _handle(self) -> int:
        if self._b is None:
            raise ClosedError("the batch was committed or discarded by its with block")
        return self._b

    def put(self, key: Key, value: Key) -> "Batch":
        """Adds a put (returns the batch, so calls can be chained)."""
        k = to_bytes(key, "key")
        v = to_bytes(value, "value")
        _ffi.batch_put(self._handle(), k, len(k), v, len(v))
        return self

    def delete(self, key: Key) -> "Batch":
        """Adds a delete; at commit a key that does not exist (counting the batch's earlier
        operations) fails the whole batch with :class:`NotFoundError`."""
        k = to_bytes(key, "key")
        _ffi.batch_delete(self._handle(), k, len(k))
        return self

    def require(self, key: Key, expected_mod_revision: int) -> "Batch":
        """Adds a condition checked at commit against the state before the batch: the key's
        mod_revision must be ``expected_mod_revision`` (0 = must not exist), otherwise nothing
        is applied and the commit raises :class:`ConflictError`."""
        k = to_bytes(key, "key")
        _ffi.batch_require(self._handle(), k, len(k), expected_mod_revision)
        return self

    def __len__(self) -> int:
        return _ffi.batch_len(self._b) if self._b is not None else 0

    def clear(self) -> None:
        """Removes every operation."""
        if self._b is not None:
            _ffi.batch_clear(self._b)

    def commit(self) -> int:
        """Applies the batch atomically; returns the first revision it wrote (0 when it held
        only requirements). :class:`ConflictError` / :class:`NotFoundError`: nothing applied."""
        out = c_uint64()
        self._store._call(_ffi.store_commit, self._handle(), byref(out))
        self.revision = out.value
        return out.value

    def discard(self) -> None:
        """Frees the batch without committing it (idempotent)."""
        b, self._b = self._b, None
        if b is not None:
            _ffi.batch_free(b)

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.discard()

    def __del__(self) -> None:
        try:
            self.discard()
        except Exception:  # pragma: no cover
            pass

    def __repr__(self) -> str:
        return f"<tidemark.Batch {len(self)} ops>"
