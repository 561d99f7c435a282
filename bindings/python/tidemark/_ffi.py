"""The low-level layer: finds ``libtidemark``, declares every C function once, maps statuses
to exceptions. Nothing here is public API; :mod:`tidemark` builds the Python idioms on it.

Library lookup order (first hit wins):

1. ``$TIDEMARK_LIBRARY`` (a path to the shared library; if set, nothing else is tried);
2. ``<repository>/target/release`` when the package is used from a source checkout
   (``bindings/python/tidemark`` -> ``../../../target/release``);
3. the package's own ``_lib/`` directory (where ``pip install`` copies the library);
4. the system loader (``ctypes.util.find_library("tidemark")``, then the bare file name).

Every function that can block or wait for the store goes through ``ctypes.CDLL``, which
releases the GIL for the duration of the C call: blocking calls (``tidemark_watch_next``,
durable writes, ``tidemark_store_close``) never stall other Python threads, and push-watch
callbacks can take the GIL meanwhile. Short calls that never block or lock the store (event batch
lengths/pointers/frees, entry fields, batch building) go through ``ctypes.PyDLL`` and keep it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import operator
import os
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int64,
    c_size_t,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Any, Callable, List, Sequence, Tuple, Union

from .errors import TidemarkError, error_for_status

__all__ = ["lib", "library_path"]

if sys.platform == "darwin":
    _LIB_NAME = "libtidemark.dylib"
elif sys.platform == "win32":
    _LIB_NAME = "tidemark.dll"
else:
    _LIB_NAME = "libtidemark.so"

_PKG_DIR = Path(__file__).resolve().parent


def _candidates() -> List[str]:
    env = os.environ.get("TIDEMARK_LIBRARY")
    if env:
        return [env]
    out = []
    checkout = _PKG_DIR.parent.parent.parent / "target" / "release" / _LIB_NAME
    if checkout.exists():
        out.append(str(checkout))
    bundled = _PKG_DIR / "_lib" / _LIB_NAME
    if bundled.exists():
        out.append(str(bundled))
    found = ctypes.util.find_library("tidemark")
    if found:
        out.append(found)
    out.append(_LIB_NAME)
    return out


def _load() -> "tuple[ctypes.CDLL, str]":
    errors = []
    for cand in _candidates():
        try:
            return ctypes.CDLL(cand), cand
        except OSError as e:
            errors.append(f"  {cand}: {e}")
    how = (
        "tidemark: cannot load the native library libtidemark.\n"
        "Tried:\n" + "\n".join(errors) + "\n"
        "Build it with `cargo build --release` at the root of the tidemark repository "
        "(it produces target/release/" + _LIB_NAME + "), then either run from the checkout, "
        "`pip install ./bindings/python` (which copies the library into the package), "
        "or set TIDEMARK_LIBRARY=/path/to/" + _LIB_NAME + "."
    )
    raise ImportError(how)


lib, library_path = _load()
# The same library through PyDLL: calls keep the GIL. Used only for O(1) accessors (lengths,
# pointers, frees, entry fields), so that reading a batch does not hand the GIL to another
# thread half a dozen times; everything that can block (store calls, watch_next, close)
# goes through `lib`, which releases the GIL.
pylib = ctypes.PyDLL(library_path)


# ---------------------------------------------------------------------------------------------
# C types


class BytesOut(Structure):
    """``tidemark_bytes`` as returned by the library (pointer read as an integer address)."""

    _fields_ = [("ptr", c_void_p), ("len", c_size_t)]


class BytesIn(Structure):
    """``tidemark_bytes`` as passed in: ``ptr`` takes a Python ``bytes`` (kept alive by the struct)."""

    _fields_ = [("ptr", c_char_p), ("len", c_size_t)]


class Selector(Structure):
    """``tidemark_selector``."""

    _fields_ = [("kind", c_uint32), ("start", BytesIn), ("end", BytesIn)]


class WatchOptions(Structure):
    """``tidemark_watch_options``."""

    _fields_ = [
        ("start_revision", c_uint64),
        ("max_queue", c_size_t),
        ("progress_interval_ms", c_uint32),
        ("credit", c_uint64),
    ]


class EventStruct(Structure):
    """``tidemark_event``; only used for its layout (sizes and offsets): events are decoded in bulk."""

    _fields_ = [
        ("revision", c_uint64),
        ("kind", c_uint32),
        ("key", BytesOut),
        ("value", BytesOut),
        ("create_revision", c_uint64),
        ("version", c_uint64),
    ]


class LockstepEventStruct(Structure):
    """``tidemark_lockstep_event`` (what a follower reports; every pointer borrowed for the call)."""

    _fields_ = [
        ("kind", c_uint32),
        ("records", c_uint64),
        ("writes", c_uint64),
        ("revision", c_uint64),
        ("retry_ms", c_uint64),
        ("cursor", BytesOut),
        ("message", BytesOut),
        ("line", BytesOut),
    ]


WATCH_CALLBACK = CFUNCTYPE(None, c_void_p, c_void_p, c_size_t)
DROP_CALLBACK = CFUNCTYPE(None, c_void_p)
#: ``tidemark_lockstep_callback``: (userdata, const tidemark_lockstep_event *).
LOCKSTEP_CALLBACK = CFUNCTYPE(None, c_void_p, c_void_p)

SELECT_ALL, SELECT_KEY, SELECT_PREFIX, SELECT_RANGE = 0, 1, 2, 3


# ---------------------------------------------------------------------------------------------
# Errors


def _message_and_revision() -> "tuple[str, int]":
    raw = _last_error_message()
    message = raw.decode("utf-8", "replace") if raw else ""
    return message, int(_last_error_revision())


def raise_status(status: int, func_name: str = "") -> None:
    """Raises the exception for ``status``, reading the thread's last error right away."""
    message, revision = _message_and_revision()
    if not message:
        message = f"{func_name} failed with {status_name(status)}"
    err = error_for_status(status, message, revision)
    if status == 6:  # CONFLICT: after an append, the stream's current version
        err.current_version = int(_last_error_current_version())
    if not err.status_name:
        err.status_name = status_name(status)
    raise err


def _errcheck(result: int, func: Any, args: Any) -> int:
    # Runs on the calling thread right after the C call returned (ctypes re-took the GIL),
    # so the thread-local last error is the one this call set.
    if result:
        raise_status(result, func.__name__)
    return result


def status_name(status: int) -> str:
    return str(_status_name(status).decode("ascii", "replace"))


# ---------------------------------------------------------------------------------------------
# Integer arguments: checked once, here, before ctypes sees them.

#: The largest value of each unsigned C integer type an argument can have.
UINT_MAX = {t: (1 << (8 * ctypes.sizeof(t))) - 1 for t in (c_uint16, c_uint32, c_uint64, c_size_t)}


def check_uint(value: Any, name: str, ctype: Any = c_uint64) -> int:
    """``value`` as a C unsigned integer of type ``ctype``: an ``int`` (or anything with
    ``__index__``, but not a ``bool``) in ``0..max``. Otherwise ``TypeError`` (wrong type) or
    ``ValueError`` (negative, too large), naming the argument ``name``. Every integer a caller
    passes goes through here (``declare``'s named arguments, the watch options), so that
    ctypes never raises its own ``ArgumentError`` or wraps a negative number around."""
    if type(value) is not int:
        if isinstance(value, bool):
            raise TypeError(f"{name} must be an int, not bool")
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    top = UINT_MAX[ctype]
    if not 0 <= value <= top:
        raise ValueError(f"{name} must be between 0 and {top}, not {value}")
    return int(value)


def check_timeout(value: Any, name: str = "timeout") -> Any:
    """A timeout in seconds: ``None`` (wait forever) or a number >= 0; otherwise ``TypeError``
    or ``ValueError`` naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    if not value >= 0:  # also NaN
        raise ValueError(f"{name} must be >= 0 seconds, not {value}")
    return value


def _checking(fn: Any, checks: Sequence[Tuple[int, str, Any]]) -> Callable[..., Any]:
    """``fn`` with its named integer arguments (position, name, C type) checked first."""
    top = [(i, name, ctype, UINT_MAX[ctype]) for i, name, ctype in checks]

    def call(*args: Any) -> Any:
        for i, name, ctype, most in top:
            v = args[i]
            if type(v) is not int or not 0 <= v <= most:
                args = args[:i] + (check_uint(v, name, ctype),) + args[i + 1 :]
        return fn(*args)

    call.__name__ = fn.__name__
    call.__doc__ = f"{fn.__name__}, integer arguments checked by check_uint"
    return call


# ---------------------------------------------------------------------------------------------
# Declarations: one helper sets argtypes, restype and errcheck for every function.

_declared: List[str] = []

#: An argument type, or ``(name, integer type)`` for an integer the caller passes: checked
#: by :func:`check_uint` (``TypeError``/``ValueError`` naming ``name``) before the call.
ArgType = Union[Any, Tuple[str, Any]]


def declare(
    name: str,
    restype: Any,
    argtypes: Sequence[ArgType],
    *,
    status: bool = False,
    optional: bool = False,
    keep_gil: bool = False,
) -> Any:
    """Declares ``name``: ``argtypes`` and ``restype``, and for functions returning a
    ``tidemark_status`` (``status=True``) an ``errcheck`` that raises the matching
    :class:`~tidemark.errors.TidemarkError` with the library's message. Functions without a
    status get no errcheck (there is nothing to check). ``optional`` symbols may be missing
    from an older library (``None`` is returned). ``keep_gil`` declares it through ``PyDLL``
    (for O(1) accessors that never block); every other function releases the GIL.
    An argument given as ``(name, ctype)`` is an integer the caller passes: the returned
    function checks it with :func:`check_uint` first."""
    try:
        fn = getattr(pylib if keep_gil else lib, name)
    except AttributeError:
        if optional:
            return None
        raise ImportError(
            f"tidemark: {library_path} has no symbol {name}: the library is older than this "
            "binding; rebuild it with `cargo build --release`"
        ) from None
    checks = [(i, a[0], a[1]) for i, a in enumerate(argtypes) if isinstance(a, tuple)]
    fn.argtypes = [a[1] if isinstance(a, tuple) else a for a in argtypes]
    fn.restype = c_uint32 if status else restype
    if status:
        fn.errcheck = _errcheck
    _declared.append(name)
    return _checking(fn, checks) if checks else fn


_p = c_void_p  # opaque handles travel as integer addresses
_u64p = POINTER(c_uint64)
_pp = POINTER(c_void_p)

# errors and strings (declared first: _errcheck uses them)
_last_error_message = declare("tidemark_last_error_message", c_char_p, [], keep_gil=True)
_last_error_revision = declare("tidemark_last_error_revision", c_uint64, [], keep_gil=True)
_status_name = declare("tidemark_status_name", c_char_p, [c_uint32], keep_gil=True)
version = declare("tidemark_version", c_char_p, [], keep_gil=True)
string_free = declare("tidemark_string_free", None, [_p], keep_gil=True)

# store
store_open = declare("tidemark_store_open", None, [c_char_p, c_char_p, _pp], status=True)
store_close = declare("tidemark_store_close", None, [_p])
store_current_revision = declare("tidemark_store_current_revision", c_uint64, [_p])
store_earliest_revision = declare("tidemark_store_earliest_revision", c_uint64, [_p])
store_put = declare("tidemark_store_put", None, [_p, c_char_p, c_size_t, c_char_p, c_size_t, _u64p], status=True)
store_put_if = declare(
    "tidemark_store_put_if",
    None,
    [_p, c_char_p, c_size_t, c_char_p, c_size_t, ("expected_mod_revision", c_uint64), _u64p],
    status=True,
)
store_delete = declare("tidemark_store_delete", None, [_p, c_char_p, c_size_t, _u64p], status=True)
store_get = declare("tidemark_store_get", None, [_p, c_char_p, c_size_t, _pp], status=True)
store_commit = declare("tidemark_store_commit", None, [_p, _p, _u64p], status=True)
store_range = declare("tidemark_store_range", None, [_p, POINTER(Selector), ("limit", c_size_t), _pp], status=True)
store_changes = declare(
    "tidemark_store_changes",
    None,
    [_p, POINTER(Selector), ("from_revision", c_uint64), ("to_revision", c_uint64), ("limit", c_size_t), _pp],
    status=True,
)
store_compact = declare("tidemark_store_compact", None, [_p, ("keep_revision", c_uint64), _u64p], status=True)
store_status_json = declare("tidemark_store_status_json", None, [_p, _pp], status=True)
store_metrics_text = declare("tidemark_store_metrics_text", None, [_p, _pp], status=True)
store_metrics_json = declare("tidemark_store_metrics_json", None, [_p, _pp], status=True)
store_tail_repair = declare("tidemark_store_tail_repair", None, [_p, _u64p, _u64p, _u64p, _u64p], status=True)
store_watcher_count = declare("tidemark_store_watcher_count", c_size_t, [_p])

# entries
entry_value = declare("tidemark_entry_value", BytesOut, [_p], keep_gil=True)
entry_create_revision = declare("tidemark_entry_create_revision", c_uint64, [_p], keep_gil=True)
entry_mod_revision = declare("tidemark_entry_mod_revision", c_uint64, [_p], keep_gil=True)
entry_version = declare("tidemark_entry_version", c_uint64, [_p], keep_gil=True)
entry_free = declare("tidemark_entry_free", None, [_p], keep_gil=True)

# batches
batch_new = declare("tidemark_batch_new", _p, [], keep_gil=True)
batch_put = declare("tidemark_batch_put", None, [_p, c_char_p, c_size_t, c_char_p, c_size_t], status=True, keep_gil=True)
batch_delete = declare("tidemark_batch_delete", None, [_p, c_char_p, c_size_t], status=True, keep_gil=True)
batch_require = declare(
    "tidemark_batch_require", None, [_p, c_char_p, c_size_t, ("expected_mod_revision", c_uint64)], status=True, keep_gil=True
)
batch_len = declare("tidemark_batch_len", c_size_t, [_p], keep_gil=True)
batch_clear = declare("tidemark_batch_clear", None, [_p], keep_gil=True)
batch_free = declare("tidemark_batch_free", None, [_p], keep_gil=True)

# event batches
events_len = declare("tidemark_events_len", c_size_t, [_p], keep_gil=True)
events_data = declare("tidemark_events_data", _p, [_p], keep_gil=True)
events_arena = declare("tidemark_events_arena", BytesOut, [_p], keep_gil=True)
events_has_more = declare("tidemark_events_has_more", c_bool, [_p], keep_gil=True)
events_next_revision = declare("tidemark_events_next_revision", c_uint64, [_p], keep_gil=True)
events_free = declare("tidemark_events_free", None, [_p], keep_gil=True)

# watches
watch_options_default = declare("tidemark_watch_options_default", WatchOptions, [], keep_gil=True)
store_watch = declare(
    "tidemark_store_watch",
    None,
    [_p, POINTER(Selector), POINTER(WatchOptions), WATCH_CALLBACK, _p, DROP_CALLBACK, _u64p],
    status=True,
)
store_unwatch = declare("tidemark_store_unwatch", None, [_p, c_uint64], status=True)
store_watch_credit = declare(
    "tidemark_store_watch_credit", None, [_p, c_uint64, ("n", c_uint64)], status=True, optional=True
)
watch_open = declare("tidemark_watch_open", None, [_p, POINTER(Selector), POINTER(WatchOptions), _pp], status=True)
watch_next = declare("tidemark_watch_next", None, [_p, c_uint32, _pp], status=True)
watch_id = declare("tidemark_watch_id", c_uint64, [_p], keep_gil=True)
watch_close = declare("tidemark_watch_close", None, [_p])

# lockstep over HTTP (optional: a library built without it still loads the rest). Starting,
# stopping and status calls release the GIL: stop waits for threads that may need it.
lockstep_serve = declare("tidemark_lockstep_serve", None, [_p, c_char_p, c_char_p, _pp], status=True, optional=True)
lockstep_server_addr = declare("tidemark_lockstep_server_addr", c_char_p, [_p], keep_gil=True, optional=True)
lockstep_server_port = declare("tidemark_lockstep_server_port", c_uint16, [_p], keep_gil=True, optional=True)
lockstep_server_status_json = declare(
    "tidemark_lockstep_server_status_json", None, [_p, _pp], status=True, optional=True
)
lockstep_server_stop = declare("tidemark_lockstep_server_stop", None, [_p], optional=True)
lockstep_follow = declare(
    "tidemark_lockstep_follow",
    None,
    [_p, c_char_p, c_char_p, LOCKSTEP_CALLBACK, _p, DROP_CALLBACK, _pp],
    status=True,
    optional=True,
)
lockstep_follower_status_json = declare(
    "tidemark_lockstep_follower_status_json", None, [_p, _pp], status=True, optional=True
)
lockstep_follower_stop = declare("tidemark_lockstep_follower_stop", None, [_p], optional=True)

# streams and snapshots (tidemark.streams builds on these)
class StreamEvent(Structure):
    """``tidemark_stream_event``: input to append, output of read_stream."""

    _fields_ = [
        ("stream", BytesOut),
        ("id", BytesOut),
        ("event_type", BytesOut),
        ("data", BytesOut),
        ("metadata", BytesOut),
        ("version", c_uint64),
        ("revision", c_uint64),
        ("timestamp_ms", c_uint64),
    ]


class StreamEventIn(Structure):
    """``tidemark_stream_event`` as passed to append: the bytes fields take Python ``bytes``."""

    _fields_ = [(name, BytesIn if i < 5 else c_uint64) for i, (name, _t) in enumerate(StreamEvent._fields_)]


class AppendResult(Structure):
    _fields_ = [("first_version", c_uint64), ("version", c_uint64), ("first_revision", c_uint64)]


class StreamInfo(Structure):
    _fields_ = [("name", BytesOut), ("version", c_int64)]


class SnapshotOut(Structure):
    _fields_ = [
        ("source", BytesOut),
        ("stream", BytesOut),
        ("version", c_uint64),
        ("revision", c_uint64),
        ("timestamp_ms", c_uint64),
        ("data", BytesOut),
    ]


_last_error_current_version = declare("tidemark_last_error_current_version", c_int64, [], keep_gil=True)
store_append = declare(
    "tidemark_store_append",
    None,
    [_p, c_char_p, c_size_t, POINTER(StreamEventIn), c_size_t, c_int64, POINTER(AppendResult)],
    status=True,
)
store_read_stream = declare(
    "tidemark_store_read_stream",
    None,
    [_p, c_char_p, c_size_t, c_int64, ("count", c_size_t), c_uint32, _pp],
    status=True,
)
stream_events_len = declare("tidemark_stream_events_len", c_size_t, [_p], keep_gil=True)
stream_events_data = declare("tidemark_stream_events_data", POINTER(StreamEvent), [_p], keep_gil=True)
stream_events_free = declare("tidemark_stream_events_free", None, [_p], keep_gil=True)

# transient subscriptions (tidemark.subscriptions builds on these)
STREAMS_ALL, STREAMS_ONE, STREAMS_PREFIX = 0, 1, 2


class StreamSelector(Structure):
    """``tidemark_stream_selector``; the bytes fields take Python ``bytes``."""

    _fields_ = [("kind", c_uint32), ("stream", BytesIn), ("event_type", BytesIn)]


class SubEvent(Structure):
    """``tidemark_sub_event``: a stream event (kind PUT) or a notice."""

    _fields_ = [("kind", c_uint32), ("revision", c_uint64), ("event", StreamEvent)]


store_subscribe = declare(
    "tidemark_store_subscribe",
    None,
    [_p, POINTER(StreamSelector), POINTER(WatchOptions), WATCH_CALLBACK, _p, DROP_CALLBACK, _u64p],
    status=True,
)
store_subscribe_pull = declare(
    "tidemark_store_subscribe_pull", None, [_p, POINTER(StreamSelector), POINTER(WatchOptions), _pp], status=True
)
sub_feed_next = declare("tidemark_sub_feed_next", None, [_p, c_uint32, _pp], status=True)
sub_feed_id = declare("tidemark_sub_feed_id", c_uint64, [_p], keep_gil=True)
sub_feed_close = declare("tidemark_sub_feed_close", None, [_p])
sub_events_len = declare("tidemark_sub_events_len", c_size_t, [_p], keep_gil=True)
sub_events_data = declare("tidemark_sub_events_data", POINTER(SubEvent), [_p], keep_gil=True)
sub_events_free = declare("tidemark_sub_events_free", None, [_p], keep_gil=True)

# persistent subscriptions (tidemark.persistent builds on these)
class SubscriptionOptions(Structure):
    _fields_ = [("max_in_flight", c_uint32), ("message_timeout_ms", c_uint64), ("max_retry", c_uint32), ("pinned", c_bool)]


class DeliveryOut(Structure):
    """``tidemark_delivery``: a stream event and its delivery count."""

    _fields_ = [("event", StreamEvent), ("delivery_count", c_uint32)]


store_subscription_create = declare(
    "tidemark_store_subscription_create",
    None,
    [_p, c_char_p, c_size_t, POINTER(StreamSelector), c_uint32, ("start", c_uint64), POINTER(SubscriptionOptions), _u64p],
    status=True,
)
store_subscription_delete = declare("tidemark_store_subscription_delete", None, [_p, c_char_p, c_size_t, _u64p], status=True)
store_subscription_reset = declare(
    "tidemark_store_subscription_reset", None, [_p, c_char_p, c_size_t, c_uint64, _u64p], status=True
)
store_subscription_list = declare("tidemark_store_subscription_list", None, [_p, _pp], status=True)
subscription_connect = declare("tidemark_subscription_connect", None, [_p, c_char_p, c_size_t, _pp], status=True)
subscription_next = declare("tidemark_subscription_next", None, [_p, c_uint32, _pp], status=True)
subscription_ack = declare("tidemark_subscription_ack", None, [_p, _u64p, c_size_t], status=True)
subscription_nack = declare("tidemark_subscription_nack", None, [_p, ("revision", c_uint64), ("action", c_uint32)], status=True)
subscription_close = declare("tidemark_subscription_close", None, [_p])
store_subscription_parked = declare(
    "tidemark_store_subscription_parked", None, [_p, c_char_p, c_size_t, ("limit", c_size_t), _pp], status=True
)
store_subscription_replay_parked = declare(
    "tidemark_store_subscription_replay_parked", None, [_p, c_char_p, c_size_t, POINTER(c_size_t)], status=True
)
deliveries_len = declare("tidemark_deliveries_len", c_size_t, [_p], keep_gil=True)
deliveries_data = declare("tidemark_deliveries_data", POINTER(DeliveryOut), [_p], keep_gil=True)
deliveries_free = declare("tidemark_deliveries_free", None, [_p], keep_gil=True)
store_stream_version = declare(
    "tidemark_store_stream_version", None, [_p, c_char_p, c_size_t, POINTER(c_int64)], status=True
)
store_list_streams = declare(
    "tidemark_store_list_streams",
    None,
    [_p, c_char_p, c_size_t, c_char_p, c_size_t, ("limit", c_size_t), _pp],
    status=True,
)
stream_list_len = declare("tidemark_stream_list_len", c_size_t, [_p], keep_gil=True)
stream_list_data = declare("tidemark_stream_list_data", POINTER(StreamInfo), [_p], keep_gil=True)
stream_list_has_more = declare("tidemark_stream_list_has_more", c_bool, [_p], keep_gil=True)
stream_list_free = declare("tidemark_stream_list_free", None, [_p], keep_gil=True)
store_delete_stream = declare("tidemark_store_delete_stream", None, [_p, c_char_p, c_size_t, _u64p], status=True)
store_snapshot_record = declare(
    "tidemark_store_snapshot_record",
    None,
    [_p, c_char_p, c_size_t, c_char_p, c_size_t, ("version", c_uint64), c_char_p, c_size_t, _u64p],
    status=True,
)
store_snapshot_read = declare(
    "tidemark_store_snapshot_read",
    None,
    [_p, c_char_p, c_size_t, c_char_p, c_size_t, ("max_version", c_uint64), _pp],
    status=True,
)
store_snapshot_delete = declare(
    "tidemark_store_snapshot_delete",
    None,
    [_p, c_char_p, c_size_t, c_char_p, c_size_t, ("version", c_uint64), _u64p],
    status=True,
)
store_snapshot_list = declare(
    "tidemark_store_snapshot_list", None, [_p, c_char_p, c_size_t, c_char_p, c_size_t, _pp], status=True
)
snapshots_len = declare("tidemark_snapshots_len", c_size_t, [_p], keep_gil=True)
snapshots_data = declare("tidemark_snapshots_data", POINTER(SnapshotOut), [_p], keep_gil=True)
snapshots_free = declare("tidemark_snapshots_free", None, [_p], keep_gil=True)

# contexts (tidemark.contexts builds on these): JSON strings in, JSON strings out
SYNC_NO_CHANGE, SYNC_DELTA, SYNC_FULL = 0, 1, 2
ORDER_ASC, ORDER_DESC = 0, 1
store_context_set = declare("tidemark_store_context_set", None, [_p, c_char_p, c_size_t, c_char_p, _pp], status=True)
store_context_update = declare(
    "tidemark_store_context_update", None, [_p, c_char_p, c_size_t, c_char_p, _pp], status=True
)
store_context_get = declare("tidemark_store_context_get", None, [_p, c_char_p, c_size_t, _pp], status=True)
store_context_delete = declare("tidemark_store_context_delete", None, [_p, c_char_p, c_size_t, _u64p], status=True)
store_context_sync = declare(
    "tidemark_store_context_sync",
    None,
    [_p, c_char_p, c_size_t, c_int64, POINTER(c_uint32), _u64p, _pp],
    status=True,
)
store_context_list = declare(
    "tidemark_store_context_list",
    None,
    [_p, ("limit", c_size_t), ("offset", c_size_t), c_uint32, _pp],
    status=True,
)
store_context_deltas = declare(
    "tidemark_store_context_deltas",
    None,
    [_p, c_char_p, c_size_t, ("limit", c_size_t), ("offset", c_size_t), c_uint32, _pp],
    status=True,
)
store_context_cleaner_start = declare(
    "tidemark_store_context_cleaner_start", None, [_p, ("interval_ms", c_uint64), ("limit", c_size_t)], status=True
)
store_context_cleaner_set_interval = declare(
    "tidemark_store_context_cleaner_set_interval", None, [_p, ("interval_ms", c_uint64)], status=True
)
store_context_cleaner_stop = declare("tidemark_store_context_cleaner_stop", None, [_p, POINTER(c_bool)], status=True)
CLOCK_CALLBACK = CFUNCTYPE(c_uint64, c_void_p)
store_set_clock = declare("tidemark_store_set_clock", None, [_p, CLOCK_CALLBACK, _p, DROP_CALLBACK], status=True)
store_context_cleanup = declare(
    "tidemark_store_context_cleanup", None, [_p, ("limit", c_size_t), _u64p, _u64p], status=True
)
# the exporter and the provider: a tidemark_status (uint32) comes back from each callback
CONTEXT_EXPORTER = CFUNCTYPE(c_uint32, c_void_p, c_void_p, c_size_t, c_char_p, c_uint64)
CONTEXT_PROVIDER = CFUNCTYPE(c_uint32, c_void_p, c_void_p, c_size_t, c_void_p)
store_context_set_exporter = declare(
    "tidemark_store_context_set_exporter", None, [_p, CONTEXT_EXPORTER, _p, DROP_CALLBACK], status=True
)
store_context_set_provider = declare(
    "tidemark_store_context_set_provider", None, [_p, CONTEXT_PROVIDER, _p, DROP_CALLBACK], status=True
)
context_reply_set = declare("tidemark_context_reply_set", None, [_p, c_char_p, c_uint64], status=True)
store_context_export = declare("tidemark_store_context_export", None, [_p, c_char_p, c_size_t, _pp], status=True)
store_context_restore = declare(
    "tidemark_store_context_restore", None, [_p, c_char_p, c_size_t, c_char_p, c_uint64, _pp], status=True
)

# trackers (tidemark.trackers builds on these)
class NotificationStruct(Structure):
    """``tidemark_notification`` (every pointer borrowed for the callback)."""

    _fields_ = [("feature", BytesOut), ("action", c_uint32), ("id", BytesOut), ("revision", c_uint64), ("data", BytesOut)]


#: ``tidemark_tracker_callback``: (userdata, const tidemark_notification *).
TRACKER_CALLBACK = CFUNCTYPE(None, c_void_p, POINTER(NotificationStruct))
store_track = declare(
    "tidemark_store_track",
    None,
    [_p, c_char_p, POINTER(WatchOptions), TRACKER_CALLBACK, _p, DROP_CALLBACK, _u64p],
    status=True,
)
store_untrack = declare("tidemark_store_untrack", None, [_p, c_uint64], status=True)
store_tracker_members = declare(
    "tidemark_store_tracker_members", None, [_p, c_char_p, _u64p, c_size_t, POINTER(c_size_t)], status=True
)
store_notify = declare(
    "tidemark_store_notify", None, [_p, c_char_p, ("action", c_uint32), c_char_p, c_size_t, c_char_p, _u64p], status=True
)

LIBRARY_VERSION: str = version().decode("ascii", "replace")

EVENT_SIZE = ctypes.sizeof(EventStruct)


def check_layout() -> None:
    """Sanity check that the ctypes mirror of ``tidemark_event`` has the C layout on 64-bit."""
    if ctypes.sizeof(c_void_p) == 8 and EVENT_SIZE != 64:  # pragma: no cover
        raise ImportError(f"tidemark: unexpected tidemark_event size {EVENT_SIZE}")
    if ctypes.sizeof(c_void_p) == 8 and ctypes.sizeof(LockstepEventStruct) != 88:  # pragma: no cover
        raise ImportError(f"tidemark: unexpected tidemark_lockstep_event size {ctypes.sizeof(LockstepEventStruct)}")


check_layout()

__all__ += ["TidemarkError"]
