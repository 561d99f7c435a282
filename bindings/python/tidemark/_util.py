"""Small helpers shared by the store and watch modules."""

from __future__ import annotations

import sys
import threading
import traceback
import types
from typing import Any, Optional, Union

from . import _ffi

Key = Union[str, bytes, bytearray, memoryview]
"""Keys and values: ``str`` (encoded as UTF-8) or any bytes-like object."""

# Per-thread state: how deep the current thread is inside tidemark push callbacks (the store's
# own threads). Closing a store from there is finished on a helper thread instead.
_tls = threading.local()


def in_callback() -> bool:
    return getattr(_tls, "depth", 0) > 0


def enter_callback() -> None:
    _tls.depth = getattr(_tls, "depth", 0) + 1


def leave_callback() -> None:
    _tls.depth -= 1


def to_bytes(x: Any, what: str = "key") -> bytes:
    """``str`` -> UTF-8, bytes-like -> ``bytes``; anything else is a ``TypeError``."""
    t = type(x)
    if t is bytes:
        out: bytes = x
        return out
    if t is str:
        out = x.encode("utf-8")
        return out
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, str):
        return str.encode(x, "utf-8")
    raise TypeError(f"{what} must be str or bytes, not {t.__name__}")


def make_selector(
    key: Optional[Key] = None,
    prefix: Optional[Key] = None,
    start: Optional[Key] = None,
    end: Optional[Key] = None,
) -> Optional[_ffi.Selector]:
    """The C selector for the keyword arguments: ``key=``, ``prefix=``, ``start=``/``end=``
    (half-open ``[start, end)``; a missing ``end`` is unbounded), or nothing (``None`` = all)."""
    ranged = start is not None or end is not None
    if (key is not None) + (prefix is not None) + ranged > 1:
        raise TypeError("give at most one selector: key=, prefix=, or start=/end=")
    if key is not None:
        kind, s, e = _ffi.SELECT_KEY, to_bytes(key), b""
    elif prefix is not None:
        kind, s, e = _ffi.SELECT_PREFIX, to_bytes(prefix, "prefix"), b""
    elif ranged:
        kind = _ffi.SELECT_RANGE
        s = b"" if start is None else to_bytes(start, "start")
        e = b"" if end is None else to_bytes(end, "end")
    else:
        return None
    sel = _ffi.Selector(kind, _ffi.BytesIn(s, len(s)), _ffi.BytesIn(e, len(e)))
    sel.desc = (
        f"key={s!r}" if kind == _ffi.SELECT_KEY else f"prefix={s!r}" if kind == _ffi.SELECT_PREFIX else f"start={s!r}, end={e!r}"
    )
    return sel


def describe_selector(sel: Optional[_ffi.Selector]) -> str:
    return "all" if sel is None else getattr(sel, "desc", "?")


def report_callback_exception(exc: BaseException, callback: Any, watch: Any, what: str = "watch") -> None:
    """Reports an exception raised by a user callback through ``sys.unraisablehook`` (the
    standard channel for errors that cannot propagate; pytest turns them into warnings).
    The default hook prints the traceback to stderr. ``what`` names the owner ("watch",
    "follower")."""
    msg = f"Exception in tidemark {what} callback {callback!r} of {watch!r} (the {what} continues)"
    hook = sys.unraisablehook
    try:
        if hook is not sys.__unraisablehook__:
            hook(
                types.SimpleNamespace(
                    exc_type=type(exc),
                    exc_value=exc,
                    exc_traceback=exc.__traceback__,
                    err_msg=msg,
                    object=callback,
                )
            )
            return
    except Exception:  # a broken hook must not break the watch
        pass
    try:
        stderr = sys.stderr
        if stderr is not None:
            stderr.write(msg + ":\n")
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=stderr)
            stderr.flush()
    except Exception:
        pass
