"""Contexts: versioned JSON documents with exact deltas. :class:`ContextsMixin` gives
:class:`~tidemark.Store` its ``context_*`` methods over the C API
(``tidemark_store_context_set`` and friends).

Documents and merge patches go in as ``dict`` and come back as ``dict``; a delta is a list
of RFC 6902 operations (dicts). Context ids are ``str`` (UTF-8) or bytes in and ``bytes``
out. The library checks everything: a document or patch that is not a JSON object raises
:class:`~tidemark.InvalidArgumentError`, one too large :class:`~tidemark.TooLargeError`,
and nothing is written.
"""

from __future__ import annotations

import json
import sys
from ctypes import byref, c_bool, c_uint32, c_uint64, c_void_p, string_at
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

from . import _ffi
from ._util import Key, take_json_string, to_bytes
from .errors import NotFoundError

__all__ = ["Context", "ContextWrite", "ContextDelta", "SyncResult", "ContextsMixin"]


class Context(NamedTuple):
    """A context as stored."""

    id: bytes
    document: Dict[str, Any]
    version: int
    created_ms: int
    updated_ms: int
    revision: int


class ContextWrite(NamedTuple):
    """What ``context_set``/``context_update`` wrote: the new document and version, and the
    RFC 6902 delta from the previous version (``[]`` and revision 0 when nothing changed)."""

    document: Dict[str, Any]
    version: int
    delta: List[Dict[str, Any]]
    revision: int


class ContextDelta(NamedTuple):
    """A retained delta: the patch from ``version - 1`` to ``version``."""

    version: int
    timestamp_ms: int
    patch: List[Dict[str, Any]]


class SyncResult(NamedTuple):
    """The answer of ``context_sync``: ``kind`` is ``"no_change"``, ``"delta"`` (``patch``
    turns exactly the client's version into ``version``) or ``"full"`` (``document``)."""

    kind: str
    version: int
    patch: Optional[List[Dict[str, Any]]] = None
    document: Optional[Dict[str, Any]] = None


_ORDERS = {"asc": _ffi.ORDER_ASC, "desc": _ffi.ORDER_DESC}


def _order(order: str) -> int:
    try:
        return _ORDERS[order]
    except (KeyError, TypeError):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}") from None


def _json_arg(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _take(ptr: Optional[int], what: str) -> Any:
    return take_json_string(ptr, f"{what} returned NULL")


def _context(c: Dict[str, Any]) -> Context:
    return Context(
        bytes.fromhex(c["id_hex"]), c["document"], c["version"], c["created_ms"], c["updated_ms"], c["revision"]
    )


_OK, _NOT_FOUND, _FAILED = 0, 3, 9  # TIDEMARK_OK, _ERR_NOT_FOUND, _ERR_IO


def _hook_failed() -> int:
    """An exception in an exporter or provider: printed (as ctypes would), then a failure."""
    sys.excepthook(*sys.exc_info())
    return _FAILED


#: What a provider answers: the document, or (document, version it had), or None.
ProviderAnswer = Union[None, Dict[str, Any], Tuple[Dict[str, Any], int]]


class ContextsMixin:
    """The context methods of :class:`~tidemark.Store` (see the module doc)."""

    _call: Any
    _clock: Any = None
    _exporter: Any = None
    _provider: Any = None

    def set_context_exporter(self, exporter: Optional[Callable[[Context], Any]]) -> None:
        """Sets the exporter (``None`` removes it): :meth:`context_export` hands it a
        :class:`Context`, and every cleanup pass hands it each expired context before deleting
        it. An exception it raises is printed and fails the export
        (:meth:`context_export` raises :class:`~tidemark.TidemarkIOError`; cleanup keeps the
        context for a later pass). It runs on the
        thread that exports (the caller's or the cleanup thread) and may use the store."""
        if exporter is None:
            self._call(_ffi.store_context_set_exporter, _ffi.CONTEXT_EXPORTER(), None, _ffi.DROP_CALLBACK())
            self._exporter = None
            return
        if not callable(exporter):
            raise TypeError(f"exporter must be callable or None, not {type(exporter).__name__}")

        def export(_userdata: Any, _id: Any, _id_len: int, context_json: bytes, _version: int) -> int:
            try:
                exporter(_context(json.loads(context_json)))
                return _OK
            except BaseException:  # noqa: B036 - nothing may unwind into C
                return _hook_failed()

        callback = _ffi.CONTEXT_EXPORTER(export)
        self._call(_ffi.store_context_set_exporter, callback, None, _ffi.DROP_CALLBACK())
        self._exporter = callback  # kept alive while the library may call it

    def set_context_provider(self, provider: Optional[Callable[[bytes], ProviderAnswer]]) -> None:
        """Sets the provider (``None`` removes it): when :meth:`context_get`,
        :meth:`context_update` or :meth:`context_sync` finds a context missing, it calls
        ``provider(id)``. It answers the document (a dict), ``(document, version)`` (the version
        it had where it was kept), or ``None`` when it has none; the answer is stored (see
        :meth:`context_restore`) and the call goes on with it. An exception it raises is
        printed and the call raises :class:`~tidemark.TidemarkIOError` with nothing written. It runs on the calling thread and may use the store."""
        if provider is None:
            self._call(_ffi.store_context_set_provider, _ffi.CONTEXT_PROVIDER(), None, _ffi.DROP_CALLBACK())
            self._provider = None
            return
        if not callable(provider):
            raise TypeError(f"provider must be callable or None, not {type(provider).__name__}")

        def provide(_userdata: Any, id_ptr: int, id_len: int, reply: int) -> int:
            try:
                answer = provider(string_at(id_ptr, id_len))
                if answer is None:
                    return _NOT_FOUND
                document, version = answer if isinstance(answer, tuple) else (answer, 0)
                _ffi.context_reply_set(reply, _json_arg(document), version)
                return _OK
            except BaseException:  # noqa: B036 - nothing may unwind into C
                return _hook_failed()

        callback = _ffi.CONTEXT_PROVIDER(provide)
        self._call(_ffi.store_context_set_provider, callback, None, _ffi.DROP_CALLBACK())
        self._provider = callback  # kept alive while the library may call it

    def context_export(self, id: Key) -> Context:
        """Hands the context ``id`` to the exporter and returns it. Raises
        :class:`~tidemark.NotFoundError` when it does not exist, ``InvalidArgumentError``
        without an exporter, and :class:`~tidemark.TidemarkIOError` when the exporter failed."""
        i = to_bytes(id, "id")
        out = c_void_p()
        self._call(_ffi.store_context_export, i, len(i), byref(out))
        return _context(_take(out.value, "tidemark_store_context_export"))

    def context_restore(self, id: Key, document: Dict[str, Any], version: int = 0) -> Context:
        """Stores ``document`` as the context ``id`` if it does not exist (one commit, no
        delta) at the larger of ``version`` (0 = unknown) and the version a new write of the id
        gets; returns the context as it is then (another writer's, if it was first)."""
        i = to_bytes(id, "id")
        out = c_void_p()
        self._call(_ffi.store_context_restore, i, len(i), _json_arg(document), version, byref(out))
        return _context(_take(out.value, "tidemark_store_context_restore"))

    def set_clock(self, clock: Optional[Callable[[], int]]) -> None:
        """Replaces the store's clock (ms since the epoch; every timestamp and TTL of streams,
        snapshots and contexts comes from it) with ``clock``, a callable returning an int;
        ``None`` goes back to the system clock. The library may call it from any thread that
        uses the store; it must not use the store. An exception it raises is printed by
        ctypes and the time read is 0."""
        if clock is None:
            self._call(_ffi.store_set_clock, _ffi.CLOCK_CALLBACK(), None, _ffi.DROP_CALLBACK())
            self._clock = None
            return
        if not callable(clock):
            raise TypeError(f"clock must be callable or None, not {type(clock).__name__}")

        def now(_userdata: Any) -> int:
            return int(clock())

        callback = _ffi.CLOCK_CALLBACK(now)
        self._call(_ffi.store_set_clock, callback, None, _ffi.DROP_CALLBACK())
        self._clock = callback  # kept alive while the library may call it

    def _write(self, fn: Any, id: Key, value: Any) -> ContextWrite:
        i = to_bytes(id, "id")
        out = c_void_p()
        self._call(fn, i, len(i), _json_arg(value), byref(out))
        w = _take(out.value, "context write")
        return ContextWrite(w["document"], w["version"], w["delta"], w["revision"])

    def context_set(self, id: Key, document: Dict[str, Any]) -> ContextWrite:
        """Replaces the context ``id`` with ``document`` (a dict). The first write is
        version 1 (after a delete: the deleted context's version + 1); a document equal to the
        current one writes nothing."""
        return self._write(_ffi.store_context_set, id, document)

    def context_update(self, id: Key, patch: Dict[str, Any]) -> ContextWrite:
        """Applies ``patch``, an RFC 7386 JSON Merge Patch (a dict; ``None`` removes a
        field), to the context ``id`` (an absent context is ``{}``). Concurrent updates each
        get their own version; none is lost."""
        return self._write(_ffi.store_context_update, id, patch)

    def context_get(self, id: Key) -> Optional[Context]:
        """The context ``id`` (asking the provider, if any, when it is missing), or ``None``
        when it does not exist."""
        i = to_bytes(id, "id")
        out = c_void_p()
        try:
            self._call(_ffi.store_context_get, i, len(i), byref(out))
        except NotFoundError:
            return None
        return _context(_take(out.value, "tidemark_store_context_get"))

    def context_delete(self, id: Key) -> int:
        """Deletes the context and all its deltas in one commit (its revision is returned);
        raises :class:`~tidemark.NotFoundError` when it does not exist."""
        i = to_bytes(id, "id")
        out = c_uint64()
        self._call(_ffi.store_context_delete, i, len(i), byref(out))
        return out.value

    def context_sync(self, id: Key, client_version: Optional[int]) -> SyncResult:
        """What a client at ``client_version`` (``None`` or <= 0: it has nothing) needs:
        ``no_change``, one exact ``delta``, or the ``full`` document when the retained deltas
        cannot do it exactly. Raises :class:`~tidemark.NotFoundError` for an absent context."""
        if client_version is None:
            client_version = -1
        if type(client_version) is not int:
            raise TypeError(f"client_version must be an int or None, not {type(client_version).__name__}")
        i = to_bytes(id, "id")
        v = max(client_version, -1)  # every version <= 0 means the same: nothing
        kind, version, out = c_uint32(), c_uint64(), c_void_p()
        self._call(_ffi.store_context_sync, i, len(i), min(v, (1 << 63) - 1), byref(kind), byref(version), byref(out))
        if kind.value == _ffi.SYNC_NO_CHANGE:
            return SyncResult("no_change", version.value)
        body = _take(out.value, "tidemark_store_context_sync")
        if kind.value == _ffi.SYNC_DELTA:
            return SyncResult("delta", version.value, patch=body)
        return SyncResult("full", version.value, document=body)

    def list_contexts(self, limit: int = 0, offset: int = 0, order: str = "asc") -> List[Context]:
        """Contexts in id order (``order="desc"``: reverse), skipping ``offset``, at most
        ``limit`` (0 = 1000)."""
        out = c_void_p()
        self._call(_ffi.store_context_list, limit, offset, _order(order), byref(out))
        return [_context(c) for c in _take(out.value, "tidemark_store_context_list")]

    def context_deltas(self, id: Key, limit: int = 0, offset: int = 0, order: str = "asc") -> List[ContextDelta]:
        """The retained deltas of ``id`` by version (or reverse), skipping ``offset``, at most
        ``limit`` (0 = all)."""
        i = to_bytes(id, "id")
        out = c_void_p()
        self._call(_ffi.store_context_deltas, i, len(i), limit, offset, _order(order), byref(out))
        return [
            ContextDelta(d["version"], d["timestamp_ms"], d["patch"])
            for d in _take(out.value, "tidemark_store_context_deltas")
        ]

    def context_cleanup(self, limit: int = 0) -> Tuple[int, int]:
        """One cleanup pass by the store's clock (``context_ttl_ms`` with
        ``context_auto_delete``, ``delta_ttl_ms``), changing at most ``limit`` contexts
        (0 = no limit). Returns (contexts deleted, deltas deleted)."""
        contexts, deltas = c_uint64(), c_uint64()
        self._call(_ffi.store_context_cleanup, limit, byref(contexts), byref(deltas))
        return contexts.value, deltas.value

    def start_context_cleaner(self, interval_ms: int, limit: int = 0) -> None:
        """Starts the store's cleanup thread: one :meth:`context_cleanup` pass every
        ``interval_ms`` (> 0) until :meth:`stop_context_cleaner` or close; when it runs
        already, sets its interval and limit. ``status()["context_cleaner"]`` shows it."""
        self._call(_ffi.store_context_cleaner_start, interval_ms, limit)

    def set_context_cleaner_interval(self, interval_ms: int) -> None:
        """Changes the running cleanup thread's interval (:class:`~tidemark.NotFoundError`
        when none runs)."""
        self._call(_ffi.store_context_cleaner_set_interval, interval_ms)

    def stop_context_cleaner(self) -> bool:
        """Stops the cleanup thread and waits for it; returns whether one was running."""
        was = c_bool()
        self._call(_ffi.store_context_cleaner_stop, byref(was))
        return was.value

