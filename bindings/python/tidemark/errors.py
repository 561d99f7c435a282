"""Exceptions raised by tidemark.

Every C function that returns a ``tidemark_status`` is checked; a non-OK status raises the
subclass of :class:`TidemarkError` that matches it, carrying the library's own message
(``tidemark_last_error_message()``) and, where the C API gives one, the revision that goes
with the failure (``tidemark_last_error_revision()``).

Several classes also derive from the built-in exception a Python programmer would expect:
``NotFoundError`` is a ``KeyError``, ``InvalidArgumentError`` a ``ValueError``,
``WatchTimeout`` a ``TimeoutError``, ``TidemarkIOError`` an ``OSError``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

__all__ = [
    "TidemarkError",
    "NullArgumentError",
    "InvalidArgumentError",
    "NotFoundError",
    "CompactedError",
    "FutureRevisionError",
    "ConflictError",
    "WatchTimeout",
    "ClosedError",
    "TidemarkIOError",
    "CorruptError",
    "LockedError",
    "TooLargeError",
    "PanicError",
    "UnknownStatusError",
    "error_for_status",
]


class TidemarkError(Exception):
    """Base class of every error tidemark raises.

    Attributes:
        message: the library's description of the failure.
        status: the numeric ``tidemark_status`` (``None`` for errors raised by the binding
            itself, e.g. using a closed store).
        status_name: e.g. ``"TIDEMARK_ERR_CONFLICT"``.
        revision: the revision the C API reported with the failure (0 when none).
    """

    #: The ``tidemark_status`` value this class stands for (``None`` for the base class).
    STATUS: Optional[int] = None
    #: The C name of that status.
    STATUS_NAME: str = ""

    def __init__(self, message: str = "", *, status: Optional[int] = None, revision: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = self.STATUS if status is None else status
        self.status_name = self.STATUS_NAME
        self.revision = revision

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.message, self.status, self.revision), self.__dict__)


def _rebuild(cls: Type[TidemarkError], message: str, status: Optional[int], revision: int) -> TidemarkError:
    return cls(message, status=status, revision=revision)


class NullArgumentError(TidemarkError):
    """A required pointer was NULL (``TIDEMARK_ERR_NULL_ARGUMENT``).

    The binding never passes NULL itself, so seeing this means a bug in the binding (or a
    direct call into the low-level ``tidemark._ffi`` layer)."""

    STATUS, STATUS_NAME = 1, "TIDEMARK_ERR_NULL_ARGUMENT"


class InvalidArgumentError(TidemarkError, ValueError):
    """A malformed argument: empty key, bad selector, unknown option... (``TIDEMARK_ERR_INVALID_ARGUMENT``)."""

    STATUS, STATUS_NAME = 2, "TIDEMARK_ERR_INVALID_ARGUMENT"


class NotFoundError(TidemarkError, KeyError):
    """The key (or watch) does not exist (``TIDEMARK_ERR_NOT_FOUND``). Also a ``KeyError``."""

    STATUS, STATUS_NAME = 3, "TIDEMARK_ERR_NOT_FOUND"


class CompactedError(TidemarkError):
    """The requested revision was compacted away (``TIDEMARK_ERR_COMPACTED``), or a watch fell
    behind compaction (its terminal ``COMPACTED`` event).

    ``earliest_revision`` is the earliest revision still in the log: resync from the current
    state (``Store.range``) and continue from there."""

    STATUS, STATUS_NAME = 4, "TIDEMARK_ERR_COMPACTED"

    @property
    def earliest_revision(self) -> int:
        return self.revision


class FutureRevisionError(TidemarkError, ValueError):
    """The revision is beyond the current revision + 1 (``TIDEMARK_ERR_FUTURE_REVISION``).

    ``current_revision`` is the store's current revision."""

    STATUS, STATUS_NAME = 5, "TIDEMARK_ERR_FUTURE_REVISION"

    @property
    def current_revision(self) -> int:
        return self.revision


class ConflictError(TidemarkError):
    """A conditional write or batch requirement failed (``TIDEMARK_ERR_CONFLICT``); nothing was applied.

    ``current_revision`` is the key's current mod_revision (0 = the key does not exist).
    After :meth:`Store.append <tidemark.Store.append>`, ``current_version`` is the stream's
    current version (-1 = the stream does not exist); -1 for other conflicts."""

    current_version: int = -1

    STATUS, STATUS_NAME = 6, "TIDEMARK_ERR_CONFLICT"

    @property
    def current_revision(self) -> int:
        return self.revision


class WatchTimeout(TidemarkError, TimeoutError):
    """Nothing arrived on a watch within the timeout (``TIDEMARK_ERR_TIMEOUT``). Also a ``TimeoutError``."""

    STATUS, STATUS_NAME = 7, "TIDEMARK_ERR_TIMEOUT"


class ClosedError(TidemarkError):
    """The store or watch is closed (``TIDEMARK_ERR_CLOSED``)."""

    STATUS, STATUS_NAME = 8, "TIDEMARK_ERR_CLOSED"


class TidemarkIOError(TidemarkError, OSError):
    """An I/O failure of a durable store (``TIDEMARK_ERR_IO``). Also an ``OSError``."""

    STATUS, STATUS_NAME = 9, "TIDEMARK_ERR_IO"


class CorruptError(TidemarkError):
    """A durable store's data is corrupt before its tail (``TIDEMARK_ERR_CORRUPT``)."""

    STATUS, STATUS_NAME = 10, "TIDEMARK_ERR_CORRUPT"


class LockedError(TidemarkError):
    """The store directory is open elsewhere (``TIDEMARK_ERR_LOCKED``)."""

    STATUS, STATUS_NAME = 11, "TIDEMARK_ERR_LOCKED"


class TooLargeError(TidemarkError, ValueError):
    """A key, value or request exceeds a configured limit (``TIDEMARK_ERR_TOO_LARGE``)."""

    STATUS, STATUS_NAME = 12, "TIDEMARK_ERR_TOO_LARGE"


class PanicError(TidemarkError):
    """A bug inside tidemark was caught at the C boundary (``TIDEMARK_ERR_PANIC``); the store
    may be unusable."""

    STATUS, STATUS_NAME = 13, "TIDEMARK_ERR_PANIC"


class UnknownStatusError(TidemarkError):
    """A status this version of the binding does not know (a newer library)."""


_BY_STATUS: Dict[int, Type[TidemarkError]] = {
    cls.STATUS: cls
    for cls in (
        NullArgumentError,
        InvalidArgumentError,
        NotFoundError,
        CompactedError,
        FutureRevisionError,
        ConflictError,
        WatchTimeout,
        ClosedError,
        TidemarkIOError,
        CorruptError,
        LockedError,
        TooLargeError,
        PanicError,
    )
    if cls.STATUS is not None
}


def error_for_status(status: int, message: str = "", revision: int = 0) -> TidemarkError:
    """Builds the exception for a non-OK ``tidemark_status``."""
    cls = _BY_STATUS.get(status, UnknownStatusError)
    return cls(message, status=status, revision=revision)
