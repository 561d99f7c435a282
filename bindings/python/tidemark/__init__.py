"""tidemark: an embeddable change-feed engine, from Python.

A thin, pythonic ctypes binding over ``libtidemark`` (no compiled extension)::

    import tidemark

    with tidemark.Store() as store:                      # in memory; Store(path) = durable
        rev = store.put("tasks/1", "write docs")         # str or bytes in
        print(store.get("tasks/1").value)                # bytes out: b'write docs'
        for ev in store.iter_changes(1):                 # every change since revision 1
            print(ev.revision, ev.kind.name, ev.key, ev.value)
        for ev in store.watch(prefix="tasks/", start_revision=1, timeout=1.0):
            ...                                          # replay, then live

Keys and values go in as ``str`` (UTF-8) or bytes and always come back as ``bytes``
(``Event.key_str`` / ``value_str`` decode them). Every failure of the C library raises a
:class:`TidemarkError` subclass carrying the library's message.

The shared library is found through ``$TIDEMARK_LIBRARY``, then a source checkout's
``target/release``, then the package's ``_lib/``, then the system loader.
"""

from __future__ import annotations

from . import _ffi, errors
from ._events import CLOSED, COMPACTED, DELETE, PROGRESS, PUT, Entry, Event, EventKind, Page
from .errors import (
    ClosedError,
    CompactedError,
    ConflictError,
    CorruptError,
    FutureRevisionError,
    InvalidArgumentError,
    LockedError,
    NotFoundError,
    NullArgumentError,
    PanicError,
    TidemarkError,
    TidemarkIOError,
    TooLargeError,
    UnknownStatusError,
    WatchTimeout,
)
from .contexts import Context, ContextDelta, ContextWrite, SyncResult
from .lockstep import FollowEvent, FollowEventKind, Follower, Server
from .store import Batch, Store
from .stores import close_store, open_store, stores
from .streams import Appended, ExpectedVersion, Snapshot, StreamEvent
from .subscriptions import AsyncSubscription, Subscription, SubscriptionHandle
from .trackers import AsyncTracker, Notification, Tracker, TrackerIterator
from .persistent import Consumer, ConsumerThread, Delivery
from .watch import AsyncWatch, Watch, WatchHandle

__version__ = "0.1.0"

#: The version of the loaded ``libtidemark`` (``tidemark_version()``).
library_version: str = _ffi.LIBRARY_VERSION
#: The path the shared library was loaded from.
library_path: str = _ffi.library_path


def status_name(status: int) -> str:
    """The C name of a ``tidemark_status`` value, e.g. ``"TIDEMARK_ERR_COMPACTED"``."""
    return _ffi.status_name(status)


__all__ = [
    "Store",
    "Batch",
    "ExpectedVersion",
    "StreamEvent",
    "Appended",
    "Snapshot",
    "Context",
    "ContextWrite",
    "ContextDelta",
    "SyncResult",
    "Notification",
    "Tracker",
    "TrackerIterator",
    "AsyncTracker",
    "open_store",
    "stores",
    "close_store",
    "Watch",
    "WatchHandle",
    "AsyncWatch",
    "Subscription",
    "SubscriptionHandle",
    "AsyncSubscription",
    "Consumer",
    "ConsumerThread",
    "Delivery",
    "Server",
    "Follower",
    "FollowEvent",
    "FollowEventKind",
    "Event",
    "EventKind",
    "Entry",
    "Page",
    "PUT",
    "DELETE",
    "PROGRESS",
    "COMPACTED",
    "CLOSED",
    *(name for name in errors.__all__ if name != "error_for_status"),  # the exception classes
    "library_version",
    "library_path",
    "status_name",
]
