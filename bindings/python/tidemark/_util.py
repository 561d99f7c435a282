"""Small helpers shared by the store, watch and lockstep modules."""

from __future__ import annotations

import itertools
import json
import sys
import threading
import traceback
import types
from ctypes import string_at
from typing import Any, Callable, Dict, Optional, TypeVar, Union

from . import _ffi

Key = Union[str, bytes, bytearray, memoryview]
"""Keys and values: ``str`` (encoded as UTF-8) or any bytes-like object."""

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])

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


SELECTOR_DOC = """The selector is one of ``key=`` (that key), ``prefix=`` (the keys that start
with it), ``start=``/``end=`` (the half-open range ``[start, end)``; a missing ``end`` is
unbounded), or none of them (every key); giving more than one raises ``TypeError``."""


def selector_keywords(fn: _F) -> _F:
    """Marks a method taking the selector keywords (``key``, ``prefix``, ``start``, ``end``,
    turned into a selector by :func:`make_selector`): appends :data:`SELECTOR_DOC` to its
    docstring."""
    doc = (fn.__doc__ or "").rstrip()
    fn.__doc__ = doc + "\n\n        " + SELECTOR_DOC.replace("\n", "\n        ")
    return fn


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


def take_string(ptr: Optional[int], null_message: str) -> str:
    """Decodes and frees a UTF-8 string the library returned (``RuntimeError(null_message)``
    for NULL)."""
    if not ptr:  # pragma: no cover - the library always writes it on success
        raise RuntimeError(null_message)
    try:
        return string_at(ptr).decode()
    finally:
        _ffi.string_free(ptr)


def take_json_string(ptr: Optional[int], null_message: str) -> Dict[str, Any]:
    """Parses and frees a JSON string the library returned (``RuntimeError(null_message)``
    for NULL)."""
    result: Dict[str, Any] = json.loads(take_string(ptr, null_message))
    return result


class CallbackRegistry(Dict[int, _T]):
    """What the library's C callbacks reach through ``userdata``: a token (never 0) per
    registered object. The drop function (the library calls it exactly once per
    registration) removes the entry and calls the object's ``drop_method``."""

    def __init__(self, drop_method: str) -> None:
        super().__init__()
        self._drop_method = drop_method
        self._tokens = itertools.count(1)

    def new_token(self) -> int:
        return next(self._tokens)

    def drop(self, userdata: Optional[int]) -> None:
        """The drop function; also ends a registration the library did not take."""
        obj = self.pop(userdata or 0, None)
        if obj is not None:
            getattr(obj, self._drop_method)()


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
