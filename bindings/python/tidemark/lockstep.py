"""lockstep over HTTP: serve a store's keys as lockstep feeds (:class:`Server`) and mirror a
lockstep feed into a store (:class:`Follower`). See ``docs/lockstep.md`` for the protocol.

Both are started from a store (:meth:`Store.serve <tidemark.Store.serve>`,
:meth:`Store.follow <tidemark.Store.follow>`), run on threads the library owns, and are
stopped by ``stop()``, by leaving their ``with`` block, by the garbage collector, or by
closing their store (which stops them first).
"""

from __future__ import annotations

import collections
import enum
import json
import threading
import time
import weakref
from ctypes import byref, c_void_p, string_at
from typing import Any, Callable, ClassVar, Deque, Dict, NamedTuple, Optional, Tuple, Union
from urllib.parse import urlencode

from . import _ffi
from ._handle import CHandle, StoreHandle, ended_at_exit
from ._util import CallbackRegistry, enter_callback, leave_callback, report_callback_exception, take_json_string
from .errors import ClosedError, InvalidArgumentError


__all__ = ["Server", "Follower", "FollowEvent", "FollowEventKind"]

Address = Union[str, bytes, Tuple[str, int]]

# Every server and follower still running, stopped at interpreter exit (while Python is whole:
# a follower's thread must not call into a finalizing interpreter).
_live: "weakref.WeakSet[Any]" = ended_at_exit()


def _need(fn: Any) -> Any:
    if fn is None:  # pragma: no cover - only with a library older than the binding
        raise NotImplementedError(
            f"{_ffi.library_path} has no lockstep functions: rebuild it with `cargo build --release`"
        )
    return fn


def _options_json(options: Dict[str, Any]) -> Optional[bytes]:
    """The options as the JSON object the library parses. ``None`` values are left out (the
    library's default applies); ``bytes`` values must be UTF-8 (JSON strings)."""
    clean: Dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, (bytes, bytearray, memoryview)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidArgumentError(f'option "{name}" must be UTF-8 text') from None
        clean[name] = value
    if not clean:
        return None
    try:
        return json.dumps(clean).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise TypeError(f"options must be JSON values (str, int, bool...): {e}") from None


def _address(addr: Address) -> bytes:
    if isinstance(addr, tuple):
        if len(addr) != 2:
            raise TypeError("addr must be 'host:port' or a (host, port) tuple")
        host, port = addr
        if not isinstance(port, int) or isinstance(port, bool):
            raise TypeError("the port of a (host, port) address must be an int")
        host = str(host)
        text = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        return text.encode("utf-8")
    if isinstance(addr, str):
        return addr.encode("utf-8")
    if isinstance(addr, (bytes, bytearray)):
        return bytes(addr)
    raise TypeError(f"addr must be 'host:port' or a (host, port) tuple, not {type(addr).__name__}")


def _query_value(v: Any) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v)


class _Running(CHandle):
    """What a :class:`Server` and a :class:`Follower` share: started from a store (which they
    keep alive and which stops them before it closes), ``options``, ``running``, ``status()``
    and ``stop()`` (idempotent, any thread)."""

    _live = _live
    #: What ``repr`` and the errors call it.
    _NAME: ClassVar[str]

    def __init__(self, store: StoreHandle, options: Dict[str, Any]) -> None:
        super().__init__()
        self._stopped = threading.Event()
        self._store = store
        self._options = dict(options)

    def _started(self, h: Optional[int]) -> None:
        self._own(h)
        self._store._adopt(self)  # stops it and raises ClosedError if the store was closed meanwhile

    def _where(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        state = "stopped" if self._h is None else "running"
        return f"<tidemark.{self._NAME} {self._where()} {state}>"

    @property
    def options(self) -> Dict[str, Any]:
        """The options it was started with (a copy)."""
        return dict(self._options)

    @property
    def running(self) -> bool:
        """True until :meth:`stop` (or closing the store) stopped it."""
        return self._h is not None

    def _status(self, fn: Any) -> Dict[str, Any]:
        with self._lock:
            h = self._h
            if h is None:
                raise ClosedError(f"the {self._NAME.lower()} is stopped")
            out = c_void_p()
            fn(h, byref(out))
            return take_json_string(out.value, "the library returned no status")

    def stop(self) -> None:
        """Stops it (idempotent, any thread)."""
        self._end_once()

    def _end(self) -> None:
        self.stop()

    def _stop_handle(self, h: int) -> None:
        raise NotImplementedError

    def _end_handle(self, h: int) -> None:
        try:
            self._stop_handle(h)
        finally:
            self._stopped.set()
            self._store._release(self)

    def _wait_ended(self) -> None:
        self._stopped.wait()  # another thread is stopping it: wait for the end


# =============================================================================================
# The server


class Server(_Running):
    """A lockstep server: ``store.serve("127.0.0.1:0", writable=True)``.

    Serves the store's keys over HTTP (``GET /<path>/<since>``, ``?since=``, ``&follow=true``,
    and ``PUT``/``DELETE`` when ``writable``) on threads the library owns, from the moment it is
    returned until :meth:`stop`. ``addr`` and ``port`` tell where it listens (give port 0 to
    get a free one); :meth:`url` builds request URLs.

    A ``Server`` keeps its store alive. It is stopped by :meth:`stop` (idempotent), by leaving
    a ``with`` block, when it is garbage-collected, and when its store is closed.
    """

    _NAME = "Server"

    def __init__(self, store: StoreHandle, addr: Address, options: Dict[str, Any]) -> None:
        # Use Store.serve.
        super().__init__(store, options)
        #: The address it listens on, e.g. ``"127.0.0.1:41234"``.
        self.addr = ""
        #: The port it listens on.
        self.port = 0
        caddr = _address(addr)
        copts = _options_json(options)
        out = c_void_p()
        store._call(_need(_ffi.lockstep_serve), caddr, copts, byref(out))
        h = out.value
        self._h = h
        raw = _ffi.lockstep_server_addr(h)
        self.addr = raw.decode("utf-8", "replace") if raw else ""
        self.port = int(_ffi.lockstep_server_port(h))
        self._started(h)

    def _where(self) -> str:
        return f"http://{self.addr}"

    @property
    def store(self) -> StoreHandle:
        """The store it serves."""
        return self._store

    def url(self, path: str = "/", **query: Any) -> str:
        """``http://ADDR`` + ``path`` (+ the query), e.g. ``server.url("/servers/", since=5,
        follow=True)`` -> ``"http://127.0.0.1:41234/servers/?since=5&follow=true"``. The path
        is used as given (percent-encode it yourself if it needs it)."""
        if not path.startswith("/"):
            path = "/" + path
        url = f"http://{self.addr}{path}"
        if query:
            url += "?" + urlencode({k: _query_value(v) for k, v in query.items()})
        return url

    def status(self) -> Dict[str, Any]:
        """The server's counters (``tidemark_lockstep_server_status_json``): ``addr``,
        ``connections``, ``accepted_connections``, ``following``, ``requests``, ``records_served``,
        ``refused_connections``, ``writable``, ``auth``, ``heartbeat_ms``. Raises
        :class:`ClosedError` once the server is stopped."""
        return self._status(_ffi.lockstep_server_status_json)

    def stop(self) -> None:
        """Stops the server (idempotent, any thread): no new connections, every follow response
        ends with its final chunk, and every serving thread has ended when it returns (clients
        that read nothing are cut after about one second). The GIL is released meanwhile."""
        self._end_once()

    def _stop_handle(self, h: int) -> None:
        _ffi.lockstep_server_stop(h)


# =============================================================================================
# The follower


class FollowEventKind(str, enum.Enum):
    """``tidemark_lockstep_event_kind``, as strings: ``ev.kind == "applied"`` works."""

    #: A response with status 200 started; ``message`` is the request target.
    CONNECTED = "connected"
    #: Records were applied in one local commit: ``records`` read, ``writes`` local puts and
    #: deletes (repeats write nothing), ``revision`` the local revision of the commit's first
    #: write (0 = nothing written), ``cursor`` the cursor after it.
    APPLIED = "applied"
    #: A line that is not a record was skipped: ``message`` says why, ``line`` holds it (at
    #: most 1024 bytes).
    MALFORMED = "malformed"
    #: A connection or HTTP failure (``message``); retried after ``retry_ms``.
    ERROR = "error"
    #: A full resync from 0 begins (410 Gone, or the first sync); ``message`` says why.
    RESYNC_STARTED = "resync_started"
    #: The resync is complete: ``records`` local records the server no longer has were deleted.
    RESYNC_DONE = "resync_done"

    def __str__(self) -> str:
        return str(self.value)


_KINDS: Dict[int, FollowEventKind] = {
    1: FollowEventKind.CONNECTED,
    2: FollowEventKind.APPLIED,
    3: FollowEventKind.MALFORMED,
    4: FollowEventKind.ERROR,
    5: FollowEventKind.RESYNC_STARTED,
    6: FollowEventKind.RESYNC_DONE,
}


class FollowEvent(NamedTuple):
    """What a follower reports to its callback (copied out of the library's borrowed event).

    ``kind`` is a :class:`FollowEventKind` (it compares equal to ``"connected"``,
    ``"applied"``, ``"malformed"``, ``"error"``, ``"resync_started"``, ``"resync_done"``; a
    kind this binding does not know stays a plain ``int``). Fields a kind does not use are 0,
    ``None``, ``""`` or ``b""``.
    """

    kind: Union[FollowEventKind, int]
    #: ``applied``: records read; ``resync_done``: local records deleted.
    records: int = 0
    #: ``applied``: local puts and deletes (repeats write nothing).
    writes: int = 0
    #: ``applied``: the local revision of the commit's first write (0 = nothing written).
    revision: int = 0
    #: ``error``: the delay before the next attempt, in ms.
    retry_ms: int = 0
    #: ``applied``/``resync_done``: the cursor after it (an int, a str, or ``None``).
    cursor: Any = None
    #: ``connected``: the request target; ``malformed``/``error``/``resync_started``: why.
    message: str = ""
    #: ``malformed``: the line (at most 1024 bytes).
    line: bytes = b""

    def __repr__(self) -> str:
        parts = [f"kind={str(self.kind)!s}"]
        for name in ("records", "writes", "revision", "retry_ms"):
            v = getattr(self, name)
            if v:
                parts.append(f"{name}={v}")
        if self.cursor is not None:
            parts.append(f"cursor={self.cursor!r}")
        if self.message:
            parts.append(f"message={self.message!r}")
        if self.line:
            parts.append(f"line={self.line!r}")
        return f"FollowEvent({', '.join(parts)})"


def _bytes(b: Any) -> bytes:
    return string_at(b.ptr, b.len) if b.len else b""


def _decode_event(ptr: int) -> FollowEvent:
    e = _ffi.LockstepEventStruct.from_address(ptr)
    raw_cursor = _bytes(e.cursor)
    cursor: Any = None
    if raw_cursor:
        try:
            cursor = json.loads(raw_cursor)
        except ValueError:  # pragma: no cover - the library always sends JSON
            cursor = raw_cursor.decode("utf-8", "replace")
    return FollowEvent(
        _KINDS.get(e.kind, e.kind),
        e.records,
        e.writes,
        e.revision,
        e.retry_ms,
        cursor,
        _bytes(e.message).decode("utf-8", "replace"),
        _bytes(e.line),
    )


class _FollowerState:
    """What the library's callback reaches through ``userdata`` (a token into
    ``_registry``): the user's callback and the bookkeeping, but not the :class:`Follower`
    (so that dropping the follower stops it)."""

    def __init__(self, callback: Optional[Callable[[FollowEvent], Any]], desc: str) -> None:
        self.callback = callback
        self.desc = desc
        self.token = _registry.new_token()
        self.done = threading.Event()
        self.changed = threading.Condition(threading.Lock())
        self.thread_ident: Optional[int] = None
        self.events = 0
        self.exception_count = 0
        self.exceptions: Deque[BaseException] = collections.deque(maxlen=100)

    def __repr__(self) -> str:
        return f"<tidemark.Follower {self.desc}>"

    def on_event(self, ptr: int) -> None:
        self.thread_ident = threading.get_ident()
        ev = _decode_event(ptr)
        self.events += 1
        cb = self.callback
        if cb is not None:
            enter_callback()
            try:
                cb(ev)
            except BaseException as exc:  # never let it reach the library
                self.exception_count += 1
                self.exceptions.append(exc)
                report_callback_exception(exc, cb, self, "follower")
            finally:
                leave_callback()
        with self.changed:
            self.changed.notify_all()

    def on_drop(self) -> None:
        self.callback = None  # release the user's closure
        self.done.set()
        with self.changed:
            self.changed.notify_all()


_registry: CallbackRegistry[_FollowerState] = CallbackRegistry("on_drop")


def _on_c_event(userdata: Optional[int], event: Optional[int]) -> None:
    state = _registry.get(userdata or 0)
    if state is not None and event:
        state.on_event(event)


# Module globals, so they outlive every follower; which follower a call is for comes from
# `userdata`, whose registry entry the drop function (called exactly once) removes.
_c_event = _ffi.LOCKSTEP_CALLBACK(_on_c_event)
_c_drop = _ffi.DROP_CALLBACK(_registry.drop)


class Follower(_Running):
    """A lockstep follower: ``store.follow("http://127.0.0.1:4567/servers/", callback=fn)``.

    Mirrors the feed into the store (under ``prefix``, by default the URL's path) on a thread
    the library owns, resuming from the cursor committed with the records, reconnecting with
    backoff until stopped. ``callback(event)`` gets a :class:`FollowEvent` for every
    ``connected``/``applied``/``malformed``/``error``/``resync_started``/``resync_done``, on
    the follower's thread, one call at a time. An exception raised by the callback does not
    stop the follower: it is reported through ``sys.unraisablehook`` and kept in
    :attr:`exceptions`.

    A ``Follower`` keeps its store alive. It is stopped by :meth:`stop` (idempotent), by
    leaving a ``with`` block, when it is garbage-collected (unless its callback refers to it),
    and when its store is closed.
    """

    _NAME = "Follower"

    def __init__(
        self,
        store: StoreHandle,
        url: str,
        callback: Optional[Callable[[FollowEvent], Any]],
        options: Dict[str, Any],
    ) -> None:
        # Use Store.follow.
        super().__init__(store, options)
        self.url = url
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        if not isinstance(url, str):
            raise TypeError(f"url must be str, not {type(url).__name__}")
        curl = url.encode("utf-8")
        copts = _options_json(options)
        state = _FollowerState(callback, url)
        self._state = state
        # Registered before the call: the follower's thread may report before it returns.
        _registry[state.token] = state
        out = c_void_p()
        try:
            store._call(_need(_ffi.lockstep_follow), curl, copts, _c_event, state.token, _c_drop, byref(out))
        except BaseException:
            # The library dropped userdata already if it got that far; make sure either way.
            _registry.drop(state.token)
            raise
        self._started(out.value)

    def _where(self) -> str:
        return self.url

    @property
    def store(self) -> StoreHandle:
        """The local store it writes to."""
        return self._store

    @property
    def exceptions(self) -> Deque[BaseException]:
        """The last exceptions raised by the callback (at most 100), oldest first."""
        return self._state.exceptions

    @property
    def exception_count(self) -> int:
        """How many times the callback raised."""
        return self._state.exception_count

    @property
    def events_received(self) -> int:
        """How many events the library reported so far."""
        return self._state.events

    def status(self) -> Dict[str, Any]:
        """The follower's state (``tidemark_lockstep_follower_status_json``): ``state``
        (``starting``, ``connecting``, ``streaming``, ``polling``, ``backoff``, ``stopped``),
        ``cursor``, ``resyncing``, ``connected``, counters (``records``, ``writes``,
        ``batches``, ``malformed_lines``, ``errors``, ``connections``, ``resyncs``,
        ``heartbeats``), ``local_revision``, ``last_error``, ``last_malformed``, ``url``,
        ``prefix``. Raises :class:`ClosedError` once the follower is stopped."""
        return self._status(_ffi.lockstep_follower_status_json)

    def wait_for(self, predicate: Callable[[Dict[str, Any]], Any], timeout: Optional[float] = None) -> Dict[str, Any]:
        """Waits until ``predicate(self.status())`` is true and returns that status. Wakes on
        every event the follower reports (and every 50 ms, for changes without an event,
        such as heartbeats). Raises ``TimeoutError`` after ``timeout`` seconds (``None`` =
        wait forever), :class:`ClosedError` if the follower is stopped meanwhile::

            follower.wait_for(lambda s: s["state"] == "streaming", timeout=10)
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        changed = self._state.changed
        while True:
            seen = self._state.events
            status = self.status()
            if predicate(status):
                return status
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the follower's status did not match within {timeout} s; last status: {status}")
            else:
                left = 0.05
            with changed:
                if self._state.events == seen and not self._state.done.is_set():
                    changed.wait(min(left, 0.05))

    def wait_for_cursor(self, cursor: Any, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Waits until the follower is in sync up to ``cursor``: its committed cursor is at
        least ``cursor`` (the same type: with tidemark's own server, the source revision of the
        last change under the prefix you want mirrored) and no resync is under way (so local
        records the server no longer has are gone too). Returns the status. What the cursor
        covers is committed in the local store by then. ``TimeoutError`` after ``timeout``
        seconds."""

        def reached(status: Dict[str, Any]) -> bool:
            if status.get("resyncing"):
                return False
            c = status.get("cursor")
            if c is None or isinstance(c, bool) or type(c) is not type(cursor) and not (
                isinstance(c, (int, float)) and isinstance(cursor, (int, float))
            ):
                return False
            return bool(c >= cursor)

        return self.wait_for(reached, timeout)

    def stop(self) -> None:
        """Stops the follower (idempotent, any thread). When it returns, its thread has ended
        and the callback will not be called again. It takes at most about
        ``connect_timeout_ms`` (a connection attempt in flight); the GIL is released meanwhile.
        Called from inside the follower's own callback it returns at once, and the follower
        ends right after that callback."""
        self._end_once()

    def _stop_handle(self, h: int) -> None:
        _ffi.lockstep_follower_stop(h)

    def _wait_ended(self) -> None:
        # Another thread is stopping it: wait for the end (not on the follower's own thread,
        # which that stop is waiting for).
        state = self._state
        if state.thread_ident != threading.get_ident():
            state.done.wait()
