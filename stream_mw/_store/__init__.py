"""Where stored responses and conversations live: one protocol, three backends side by side.

- ``_protocol``: the records (``StoredResponse``, the ``NotStored`` tombstone, conversations'
  errors and ids) and ``Store``, the async, tenant-scoped protocol;
- ``memory``: ``memory://``, a bounded LRU with a TTL, per process;
- ``sqlite``: ``sqlite:///path``, WAL, safe for several worker processes on one machine;
- ``redis``: ``redis://`` (also ``rediss://``, ``unix://``), shared by every process that
  reaches one Redis. Imported only when such a URL is opened, so ``import stream_mw`` never
  imports redis.

The backends import only ``_protocol``, never each other or the gateway that uses them
(``stream_mw._store_gateway``). The package is private: ``Settings.store_url`` is the one way
to choose a store, so there is no public protocol to implement.

Every store is bounded: a per-response size limit (``store_max_response_bytes``), a per-
conversation item limit (``store_max_conversation_items``) and a TTL everywhere, plus a count
and total-bytes limit for ``memory://``.
"""

from __future__ import annotations

import importlib.util

from .._errors import ConfigurationError
from .._settings import Settings
from ._protocol import ConversationFullError, NotStored, Store, StoredResponse
from .memory import MemoryStore
from .sqlite import SQLiteStore, sqlite_path

__all__ = [
    "ConversationFullError",
    "MemoryStore",
    "NotStored",
    "SQLiteStore",
    "Store",
    "StoredResponse",
    "open_store",
    "require_store_extra",
]


def open_store(settings: Settings) -> Store | None:
    """The store ``settings.store_url`` names, or ``None`` when storage is off.

    ``memory://``, ``sqlite:///relative.db`` / ``sqlite:////absolute.db``, or
    ``redis://host:port/db`` (also ``rediss://`` and ``unix://``; needs ``stream-mw[redis]``).
    Nothing connects here: connections are made on first use.
    """
    url = settings.store_url
    if url is None:
        return None
    max_items = settings.store_max_conversation_items
    if url.startswith("memory://"):
        return MemoryStore(
            ttl=settings.store_ttl,
            max_responses=settings.store_max_responses,
            max_bytes=settings.store_max_bytes,
            max_response_bytes=settings.store_max_response_bytes,
            max_conversation_items=max_items,
        )
    if url.startswith("sqlite://"):
        return SQLiteStore(
            sqlite_path(url),
            ttl=settings.store_ttl,
            max_response_bytes=settings.store_max_response_bytes,
            max_conversation_items=max_items,
        )
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisStore

        return RedisStore(
            url,
            ttl=settings.store_ttl,
            max_response_bytes=settings.store_max_response_bytes,
            max_conversation_items=max_items,
        )
    raise ConfigurationError(f"unsupported store_url {url!r}")


def require_store_extra(url: str) -> None:
    """Fail now, not at the first request, when ``url``'s backend needs a missing package.

    Raises:
        ConfigurationError: names the package and the command that installs it.
    """
    scheme = url.partition("://")[0]
    if scheme in ("redis", "rediss", "unix") and importlib.util.find_spec("redis") is None:
        # The scheme only: the URL may hold a password.
        raise ConfigurationError(
            f"store_url {scheme}://... needs the redis package: pip install 'stream-mw[redis]'"
        )
