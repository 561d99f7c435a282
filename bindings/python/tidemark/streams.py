"""Event streams and snapshots: :class:`StreamsMixin` gives :class:`~tidemark.Store` its
``append``, ``read_stream``, ``stream_version``, ``list_streams``, ``delete_stream`` and
snapshot methods over the C API (``tidemark_store_append`` and friends).

Streams live in the store's reserved namespace: the user key API and ``changes`` never show
them. Stream names, event types, data and metadata are ``str`` (UTF-8) or bytes in and
``bytes`` out.
"""

from __future__ import annotations

from ctypes import byref, c_int64, c_uint64, c_void_p, string_at
from typing import Any, Iterable, List, Mapping, NamedTuple, Optional, Tuple, Union

from . import _ffi
from ._events import PUT, EventKind
from ._util import Key, to_bytes

__all__ = ["ExpectedVersion", "StreamEvent", "Appended", "Snapshot", "StreamsMixin", "FORWARD", "BACKWARD"]

FORWARD, BACKWARD = 0, 1


class ExpectedVersion:
    """What :meth:`StreamsMixin.append` expects of the stream (the C ``TIDEMARK_EXPECT_*``);
    any int >= 0 is an exact version."""

    ANY = -2
    NO_STREAM = -1
    EXISTS = -4


class StreamEvent(NamedTuple):
    """An event read back from a stream (or delivered by a subscription, among notices:
    hence ``kind``, always ``PUT``, and ``is_terminal``, always false)."""

    stream: bytes
    id: bytes
    type: bytes
    data: bytes
    metadata: bytes
    version: int
    revision: int
    timestamp_ms: int

    @property
    def kind(self) -> EventKind:
        return PUT

    @property
    def is_terminal(self) -> bool:
        return False


class Appended(NamedTuple):
    """What an append wrote (or, for an idempotent retry, had written)."""

    first_version: int
    version: int
    first_revision: int


class Snapshot(NamedTuple):
    source: bytes
    stream: bytes
    version: int
    revision: int
    timestamp_ms: int
    data: bytes


#: An event to append: ``(type, data)``, ``(type, data, metadata)``, or a mapping with
#: ``type``, ``data`` and optional ``metadata`` and ``id`` (16 bytes; generated when absent).
NewEvent = Union[Tuple[Key, Key], Tuple[Key, Key, Key], Mapping[str, Any]]


def _bytes(b: Any) -> bytes:
    return string_at(b.ptr, b.len) if b.len else b""


def _event_in(e: Any, keep: List[bytes]) -> "_ffi.StreamEventIn":
    if isinstance(e, Mapping):
        unknown = set(e) - {"type", "data", "metadata", "id"}
        if unknown:
            raise TypeError(f"unknown event field(s): {', '.join(sorted(unknown))}")
        fields = (e.get("type", b""), e.get("data", b""), e.get("metadata", b""), e.get("id", b""))
    elif isinstance(e, tuple) and len(e) in (2, 3):
        fields = (e[0], e[1], e[2] if len(e) == 3 else b"", b"")
    else:
        raise TypeError("an event is (type, data[, metadata]) or a mapping with type, data, metadata, id")
    t, d, m, i = (to_bytes(x, what) for x, what in zip(fields, ("type", "data", "metadata", "id")))
    keep.extend((t, d, m, i))
    out = _ffi.StreamEventIn()
    for name, b in (("event_type", t), ("data", d), ("metadata", m), ("id", i)):
        setattr(out, name, _ffi.BytesIn(b, len(b)))
    return out


def _version_arg(v: Any, name: str) -> int:
    if type(v) is not int:
        raise TypeError(f"{name} must be an int, not {type(v).__name__}")
    return v


class StreamsMixin:
    """The stream and snapshot methods of :class:`~tidemark.Store` (see the module doc)."""

    _call: Any

    def append(self, stream: Key, events: Iterable[NewEvent], expected_version: int = ExpectedVersion.ANY) -> Appended:
        """Appends ``events`` to ``stream`` atomically (all or none, consecutive versions) if
        the stream's version matches ``expected_version`` (an :class:`ExpectedVersion`
        constant or an exact version >= 0); otherwise raises :class:`~tidemark.ConflictError`
        whose ``current_version`` is the stream's version (-1 = no stream). Appending events
        whose ids all equal those of the stream's last append returns that append's result
        and writes nothing (a retry after a lost reply)."""
        name = to_bytes(stream, "stream")
        expected = _version_arg(expected_version, "expected_version")
        keep: List[bytes] = []
        items = [_event_in(e, keep) for e in events]
        arr = (_ffi.StreamEventIn * len(items))(*items) if items else None
        out = _ffi.AppendResult()
        self._call(_ffi.store_append, name, len(name), arr, len(items), expected, byref(out))
        return Appended(out.first_version, out.version, out.first_revision)

    def read_stream(
        self, stream: Key, from_version: int = 0, count: int = 0, *, backward: bool = False
    ) -> List[StreamEvent]:
        """Up to ``count`` events (0 = all) of ``stream`` from ``from_version`` on, in version
        order, or with ``backward=True`` down to version 0 (``from_version=-1``: from the
        last). Raises :class:`~tidemark.NotFoundError` for a stream that does not exist."""
        name = to_bytes(stream, "stream")
        start = _version_arg(from_version, "from_version")
        out = c_void_p()
        self._call(_ffi.store_read_stream, name, len(name), start, count, BACKWARD if backward else FORWARD, byref(out))
        try:
            n = _ffi.stream_events_len(out.value)
            data = _ffi.stream_events_data(out.value)
            return [
                StreamEvent(
                    _bytes(e.stream),
                    _bytes(e.id),
                    _bytes(e.event_type),
                    _bytes(e.data),
                    _bytes(e.metadata),
                    e.version,
                    e.revision,
                    e.timestamp_ms,
                )
                for e in (data[i] for i in range(n))
            ]
        finally:
            _ffi.stream_events_free(out.value)

    def stream_version(self, stream: Key) -> int:
        """The stream's last version; -1 when it does not exist."""
        name = to_bytes(stream, "stream")
        out = c_int64()
        self._call(_ffi.store_stream_version, name, len(name), byref(out))
        return out.value

    def list_streams(self, prefix: Key = b"", *, after: Optional[Key] = None, limit: int = 0) -> Tuple[List[Tuple[bytes, int]], bool]:
        """One page of ``(name, version)`` in name order: names starting with ``prefix``,
        after ``after`` (exclusive), at most ``limit`` (0 = 1000); and whether more follow."""
        p = to_bytes(prefix, "prefix")
        a = b"" if after is None else to_bytes(after, "after")
        out = c_void_p()
        self._call(_ffi.store_list_streams, p, len(p), a, len(a), limit, byref(out))
        try:
            n = _ffi.stream_list_len(out.value)
            data = _ffi.stream_list_data(out.value)
            return [(_bytes(data[i].name), data[i].version) for i in range(n)], bool(_ffi.stream_list_has_more(out.value))
        finally:
            _ffi.stream_list_free(out.value)

    def delete_stream(self, stream: Key) -> int:
        """Deletes the stream's events and the stream in one commit (its revision is
        returned). The name can be appended to again, from version 0, with
        ``ExpectedVersion.NO_STREAM`` or ``ANY``."""
        name = to_bytes(stream, "stream")
        out = c_uint64()
        self._call(_ffi.store_delete_stream, name, len(name), byref(out))
        return out.value

    def record_snapshot(self, source: Key, stream: Key, version: int, data: Key) -> int:
        """Records ``data`` as ``source``'s snapshot of ``stream`` at ``version`` (replacing
        one at the same version); returns the commit's revision."""
        s, st, d = to_bytes(source, "source"), to_bytes(stream, "stream"), to_bytes(data, "data")
        out = c_uint64()
        self._call(_ffi.store_snapshot_record, s, len(s), st, len(st), version, d, len(d), byref(out))
        return out.value

    def read_snapshot(self, source: Key, stream: Key, max_version: int = (1 << 64) - 1) -> Snapshot:
        """The snapshot with the greatest version at or below ``max_version``; raises
        :class:`~tidemark.NotFoundError` when there is none."""
        s, st = to_bytes(source, "source"), to_bytes(stream, "stream")
        out = c_void_p()
        self._call(_ffi.store_snapshot_read, s, len(s), st, len(st), max_version, byref(out))
        return _take_snapshots(out.value)[0]

    def delete_snapshot(self, source: Key, stream: Key, version: int) -> int:
        """Deletes the snapshot at exactly ``version`` (:class:`~tidemark.NotFoundError` if absent)."""
        s, st = to_bytes(source, "source"), to_bytes(stream, "stream")
        out = c_uint64()
        self._call(_ffi.store_snapshot_delete, s, len(s), st, len(st), version, byref(out))
        return out.value

    def list_snapshots(self, source: Key, stream: Key) -> List[Snapshot]:
        """Every snapshot of ``stream`` by ``source``, by version ascending."""
        s, st = to_bytes(source, "source"), to_bytes(stream, "stream")
        out = c_void_p()
        self._call(_ffi.store_snapshot_list, s, len(s), st, len(st), byref(out))
        return _take_snapshots(out.value)


def _take_snapshots(h: Optional[int]) -> List[Snapshot]:
    try:
        n = _ffi.snapshots_len(h)
        data = _ffi.snapshots_data(h)
        return [
            Snapshot(_bytes(x.source), _bytes(x.stream), x.version, x.revision, x.timestamp_ms, _bytes(x.data))
            for x in (data[i] for i in range(n))
        ]
    finally:
        _ffi.snapshots_free(h)

