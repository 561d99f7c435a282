"""Events and their bulk decoding.

A ``tidemark_events`` batch is an array of ``tidemark_event`` (64 bytes each on 64-bit
platforms) plus one arena every key and value points into. Reading it field by field
through ctypes costs a few microseconds per event; instead the array and the arena are each
copied once (``ctypes.string_at``) and decoded column-wise with ``memoryview`` and ``struct``,
so the per-event cost is the allocation of the Python objects themselves.
"""

from __future__ import annotations

import ctypes
import enum
import operator
import struct
import sys
from array import array
from ctypes import string_at
from itertools import accumulate, repeat
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from . import _ffi

__all__ = ["EventKind", "Event", "Entry", "Page", "PUT", "DELETE", "PROGRESS", "COMPACTED", "CLOSED"]


class EventKind(enum.IntEnum):
    """``tidemark_event_kind``. Compares equal to the C integer values."""

    PUT = 1
    DELETE = 2
    #: No key; ``revision`` is the store revision the watch has caught up to.
    PROGRESS = 3
    #: Terminal: the watch fell behind compaction; ``revision`` is the earliest retained one.
    COMPACTED = 4
    #: Terminal: the store was closed.
    CLOSED = 5


PUT = EventKind.PUT
DELETE = EventKind.DELETE
PROGRESS = EventKind.PROGRESS
COMPACTED = EventKind.COMPACTED
CLOSED = EventKind.CLOSED


class Event(NamedTuple):
    """One change (a tuple: cheap to build, unpackable, comparable).

    ``key`` and ``value`` are always ``bytes`` (whatever type was written); use
    :attr:`key_str` / :attr:`value_str` for UTF-8 text. ``kind`` is an :class:`EventKind`
    (a plain ``int`` for a kind this binding does not know). For ``DELETE`` the value is
    empty and ``create_revision``/``version`` are 0; ``PROGRESS``, ``COMPACTED`` and ``CLOSED``
    have no key and carry a revision only.
    """

    revision: int
    kind: Union[EventKind, int]
    key: bytes
    value: bytes
    create_revision: int
    version: int

    @property
    def key_str(self) -> str:
        """The key decoded as UTF-8 (``UnicodeDecodeError`` if it is not)."""
        return self.key.decode("utf-8")

    @property
    def value_str(self) -> str:
        """The value decoded as UTF-8 (``UnicodeDecodeError`` if it is not)."""
        return self.value.decode("utf-8")

    @property
    def is_terminal(self) -> bool:
        """True for ``COMPACTED`` and ``CLOSED``: the watch has ended."""
        return self.kind == COMPACTED or self.kind == CLOSED

    def __repr__(self) -> str:
        kind = self.kind.name if isinstance(self.kind, EventKind) else str(self.kind)
        if kind in ("PUT", "DELETE"):
            return (
                f"Event({kind} rev={self.revision} key={self.key!r} value={_short(self.value)} "
                f"create={self.create_revision} version={self.version})"
            )
        return f"Event({kind} rev={self.revision})"


def _short(b: bytes) -> str:
    return repr(b) if len(b) <= 40 else repr(b[:37]) + f"...({len(b)} bytes)"


class Entry(NamedTuple):
    """A key's current state, as returned by :meth:`Store.get`. ``key`` and ``value`` are bytes."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int

    @property
    def key_str(self) -> str:
        return self.key.decode("utf-8")

    @property
    def value_str(self) -> str:
        return self.value.decode("utf-8")


class Page:
    """One page of events from :meth:`Store.changes` or :meth:`Store.range`.

    Iterating a page iterates its events; ``len(page)`` and ``page[i]`` work too.

    Attributes:
        events: the events, in revision order (``changes``) or key order (``range``).
        has_more: ``changes``: the limit stopped the read before ``to_revision``, call again
            from ``next_revision``; ``range``: keys were left out.
        next_revision: ``changes``: the ``from_revision`` of the next call; 0 for ``range``.
    """

    __slots__ = ("events", "has_more", "next_revision")

    def __init__(self, events: List[Event], has_more: bool, next_revision: int) -> None:
        self.events = events
        self.has_more = has_more
        self.next_revision = next_revision

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, i: Any) -> Any:
        return self.events[i]

    def __bool__(self) -> bool:
        return bool(self.events)

    def __repr__(self) -> str:
        return f"Page({len(self.events)} events, has_more={self.has_more}, next_revision={self.next_revision})"


# ---------------------------------------------------------------------------------------------
# Bulk decoding

_KIND_TABLE: List[Any] = [EventKind(i) if i in EventKind._value2member_map_ else i for i in range(256)]
_kind_of = _KIND_TABLE.__getitem__
_new = tuple.__new__
_sub = operator.sub
_add = operator.add

_E = _ffi.EventStruct
_SIZE = _ffi.EVENT_SIZE
_FAST = _SIZE == 64 and ctypes.sizeof(ctypes.c_void_p) == 8 and _E.kind.offset == 8 and _E.key.offset == 16
_CHUNK = 1024  # events per struct.Struct in the uniform-length path (bounds its size)
_UNIFORM_STRUCTS: Dict[Tuple[int, int, int], struct.Struct] = {}
_PROGRESSIONS: Dict[Tuple[int, int], Tuple[int, int]] = {}
_REPEATS: Dict[Tuple[str, int, int], bytes] = {}
_FMT_PIECES = [f"{i}s" for i in range(4096)]


def _kinds(buf: bytes, n: int) -> List[Any]:
    """The kind column as EventKind members (plain ints for kinds this binding does not know)."""
    col = memoryview(buf).cast("I")[2::16]
    if col.tobytes() == _repeated("I", 1, n):
        return [PUT] * n
    raw = col.tolist()
    try:
        return list(map(_kind_of, raw))
    except IndexError:
        return [_kind_of(k) if k < 256 else k for k in raw]


def _repeated(fmt: str, value: int, n: int) -> bytes:
    """``n`` copies of ``value`` as native integers of format ``fmt`` (cached)."""
    key = (fmt, value, n)
    b = _REPEATS.get(key)
    if b is None:
        if len(_REPEATS) > 64:
            _REPEATS.clear()
        b = _REPEATS[key] = (array(fmt, [value]) * n).tobytes()
    return b


def _progression(step: int, n: int) -> Tuple[int, int]:
    """(O, R) such that the n u64 lanes ``base + i*step`` read as one native-endian big
    integer equal ``O + base * R`` (no carries: every lane fits in 64 bits)."""
    c = _PROGRESSIONS.get((step, n))
    if c is None:
        if len(_PROGRESSIONS) > 32:
            _PROGRESSIONS.clear()
        r = ((1 << (64 * n)) - 1) // ((1 << 64) - 1)
        o = int.from_bytes(array("Q", range(0, n * step, step)).tobytes(), sys.byteorder)
        c = _PROGRESSIONS[(step, n)] = (o, r)
    return c


def _uniform_kv(arena: bytes, base: int, n: int, klen: int, vlen: int, q: memoryview) -> Optional[Sequence[bytes]]:
    """All keys of one length and all values of one length, laid out key, value, key, value...
    in the arena (checked against every pointer): key0, value0, key1, value1... from one
    ``struct`` call per 1024 events. None if the layout is another one."""
    step = klen + vlen
    if not step:
        return [b""] * (2 * n)
    # Exact check of every pointer at a few ns per event: the pointer column, read as one big
    # integer, must be the arithmetic progression base, base + step, ... (see _progression).
    o, r = _progression(step, n)
    if int.from_bytes(q[2::8].tobytes(), sys.byteorder) != o + base * r:
        return None
    if int.from_bytes(q[4::8].tobytes(), sys.byteorder) != o + (base + klen) * r:
        return None
    if n <= _CHUNK:
        return _uniform_struct(klen, vlen, n).unpack_from(arena)
    flat: List[bytes] = []
    full = _uniform_struct(klen, vlen, _CHUNK)
    off = 0
    left = n
    while left:
        st = full if left >= _CHUNK else _uniform_struct(klen, vlen, left)
        flat += st.unpack_from(arena, off)
        off += st.size
        left -= min(left, _CHUNK)
    return flat


def _uniform_struct(klen: int, vlen: int, n: int) -> struct.Struct:
    s = _UNIFORM_STRUCTS.get((klen, vlen, n))
    if s is None:
        if len(_UNIFORM_STRUCTS) > 128:
            _UNIFORM_STRUCTS.clear()
        s = _UNIFORM_STRUCTS[(klen, vlen, n)] = struct.Struct(f"{klen}s{vlen}s" * n)
    return s


def _general_kv(arena: bytes, base: int, n: int, q: memoryview) -> Sequence[bytes]:
    """Keys and values of any lengths: key0, value0, key1, value1..."""
    lens = [0] * (2 * n)
    lens[0::2] = q[3::8].tolist()
    lens[1::2] = q[5::8].tolist()
    ptrs = [0] * (2 * n)
    ptrs[0::2] = q[2::8].tolist()
    ptrs[1::2] = q[4::8].tolist()
    acc = list(accumulate(lens, initial=base))
    acc.pop()
    if acc == ptrs and n <= 4 * _CHUNK:
        # Contiguous and in order: one struct call with a format built from the lengths.
        try:
            fmt = "".join(map(_FMT_PIECES.__getitem__, lens))
        except IndexError:
            fmt = "s".join(map(str, lens)) + "s"
        return struct.unpack_from(fmt, arena)
    # Any layout: slice the arena at each pointer.
    starts = list(map(_sub, ptrs, repeat(base)))
    return list(map(arena.__getitem__, map(slice, starts, map(_add, starts, lens))))


def decode_array(buf: bytes, n: int, arena: Optional[bytes], base: int) -> List[Event]:
    """Decodes ``n`` events from a copy of the C array; keys and values from a copy of the
    arena at address ``base``, or, when ``arena`` is None, straight from memory (callbacks)."""
    if not n:
        return []
    if not _FAST:  # pragma: no cover - 32-bit or exotic layouts
        return _decode_slow(buf, n, arena, base)
    if n <= _SMALL:
        return _decode_small(buf, arena, base)
    q = memoryview(buf).cast("Q")
    flat: Optional[Sequence[bytes]] = None
    if arena is None:
        ptrs = [0] * (2 * n)
        ptrs[0::2] = q[2::8].tolist()
        ptrs[1::2] = q[4::8].tolist()
        lens = [0] * (2 * n)
        lens[0::2] = q[3::8].tolist()
        lens[1::2] = q[5::8].tolist()
        flat = [string_at(p, ln) if ln else b"" for p, ln in zip(ptrs, lens)]
    else:
        klen = q[3]
        vlen = q[5]
        if q[3::8].tobytes() == _repeated("Q", klen, n) and q[5::8].tobytes() == _repeated("Q", vlen, n):
            flat = _uniform_kv(arena, base, n, klen, vlen, q)
        if flat is None:
            flat = _general_kv(arena, base, n, q)
    kv = iter(flat)  # zip takes key then value from it, event after event
    return list(
        map(_new, repeat(Event), zip(q[0::8].tolist(), _kinds(buf, n), kv, kv, q[6::8].tolist(), q[7::8].tolist()))
    )


_ROW = struct.Struct("=QI4xQQQQQQ")
_SMALL = 12  # below this many events, a plain loop beats the column machinery


def _decode_small(buf: bytes, arena: Optional[bytes], base: int) -> List[Event]:
    out = []
    for rev, kind, kp, kl, vp, vl, crev, ver in _ROW.iter_unpack(buf):
        if arena is None:
            key = string_at(kp, kl) if kl else b""
            value = string_at(vp, vl) if vl else b""
        else:
            ko = kp - base
            vo = vp - base
            key = arena[ko : ko + kl]
            value = arena[vo : vo + vl]
        out.append(_new(Event, (rev, _KIND_TABLE[kind] if kind < 256 else kind, key, value, crev, ver)))
    return out


def _decode_slow(buf: bytes, n: int, arena: Optional[bytes], base: int) -> List[Event]:  # pragma: no cover
    out = []
    for i in range(n):
        e = _E.from_buffer_copy(buf, i * _SIZE)
        if arena is None:
            key = string_at(e.key.ptr, e.key.len) if e.key.len else b""
            value = string_at(e.value.ptr, e.value.len) if e.value.len else b""
        else:
            ko = (e.key.ptr or base) - base
            vo = (e.value.ptr or base) - base
            key = arena[ko : ko + e.key.len]
            value = arena[vo : vo + e.value.len]
        kind = _kind_of(e.kind) if e.kind < 256 else e.kind
        out.append(Event(e.revision, kind, key, value, e.create_revision, e.version))
    return out


def decode_events(handle: int) -> List[Event]:
    """Decodes a whole ``tidemark_events`` batch (does not free it)."""
    n = _ffi.events_len(handle)
    if not n:
        return []
    data = _ffi.events_data(handle)
    arena = _ffi.events_arena(handle)
    buf = string_at(data, n * _SIZE)
    alen = arena.len
    base = arena.ptr or 0
    return decode_array(buf, n, string_at(base, alen) if alen else b"", base)


def decode_callback(events_ptr: int, count: int) -> List[Event]:
    """Decodes the events a push callback receives (their bytes are valid during the call only)."""
    if not count:
        return []
    return decode_array(string_at(events_ptr, count * _SIZE), count, None, 0)


def take_page(handle: int) -> Page:
    """Decodes and frees a ``tidemark_events`` batch into a :class:`Page`."""
    try:
        return Page(decode_events(handle), bool(_ffi.events_has_more(handle)), _ffi.events_next_revision(handle))
    finally:
        _ffi.events_free(handle)


def take_events(handle: int) -> Tuple[List[Event], int]:
    """Decodes and frees a watch delivery: (events, next_revision)."""
    try:
        return decode_events(handle), _ffi.events_next_revision(handle)
    finally:
        _ffi.events_free(handle)
