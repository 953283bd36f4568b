"""Stored responses: ``previous_response_id``, retrieval, deletion and input-item listing.

The Responses API is stateful: ``store`` defaults to true, clients chain turns with
``previous_response_id`` and fetch or delete responses by id. This module holds

- ``StoredResponse``, what is kept per response: the Response object (which echoes
  ``instructions`` and holds the output items) and the full input the model saw, after
  ``previous_response_id`` expansion, normalised to items with ids;
- ``NotStored``, the small tombstone kept instead of a response over the size limit, so that
  a later ``GET`` or ``previous_response_id`` says why it is missing instead of "not found";
- ``ResponseStore``, the async, tenant-scoped storage protocol, and two implementations:
  ``MemoryStore`` (``memory://``, a bounded LRU with a TTL) and ``SQLiteStore``
  (``sqlite:///path``, WAL, safe for several worker processes on one machine). ``RedisStore``
  (``redis://``) lives in ``_store_redis.py`` so that ``import stream_mw`` never imports redis;
- ``open_store(settings)``, which picks one by ``Settings.store_url``;
- ``StoreGateway``, the one object the middleware holds: it expands ``previous_response_id``
  and resolves ``item_reference`` input items, saves finished responses (never raising: a
  store failure must not break generation) and serves ``GET``/``DELETE
  {prefix}/responses/{id}`` and ``GET {prefix}/responses/{id}/input_items``.

Isolation: every operation takes a tenant key (``tenant_key``: ``Settings.tenant(scope)`` or a
hash of the ``Authorization`` header). Keys are ``(tenant, id)``, so another tenant's id is
simply absent and answers 404, exactly like an unknown one.

Items: every backend also indexes the ids of a stored response's input and output items, so
``item_reference`` resolves an item with one indexed lookup, never a scan. An id maps to the
newest response holding it (a ``previous_response_id`` chain repeats its history's ids in each
turn, and the newest turn expires last).

Every store is bounded: a per-response size limit (``store_max_response_bytes``) and a TTL
everywhere, plus a count and total-bytes limit for ``memory://``.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import re
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
import orjson
from starlette.datastructures import QueryParams

from ._auth import CLIENT_SCOPE_KEY
from ._errors import (
    ConfigurationError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    RequestError,
    StoreUnavailableError,
    clip,
)
from ._items import new_id
from ._observe import logger
from ._settings import Settings

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

__all__ = [
    "STORE_TIMEOUT",
    "MemoryStore",
    "NotStored",
    "ResponseStore",
    "SQLiteStore",
    "StoreGateway",
    "StoredResponse",
    "normalize_input",
    "open_store",
    "require_store_extra",
    "tenant_key",
]

#: Seconds the gateway waits for the store before answering 503 (reads) or giving up with a
#: log line (writes). The backends' own timeouts are shorter; this bounds everything else.
STORE_TIMEOUT = 5.0

_T = TypeVar("_T")


@dataclass(frozen=True)
class StoredResponse:
    """One stored response.

    Attributes:
        response: The Response object as sent to the client (terminal snapshot). It echoes
            ``instructions`` and holds the ``output`` items.
        input_items: The full input the model saw (the expanded history for a
            ``previous_response_id`` chain), normalised to items with ids.
    """

    response: dict[str, Any]
    input_items: list[dict[str, Any]]

    @property
    def id(self) -> str:
        """The response id (``resp_...``)."""
        response_id = self.response.get("id")
        if not isinstance(response_id, str) or not response_id:
            raise ValueError("a stored response needs a string 'id'")
        return response_id

    def encode(self) -> bytes:
        """The JSON bytes the stores keep (and whose length the size limits count)."""
        return orjson.dumps({"response": self.response, "input_items": self.input_items})

    @classmethod
    def decode(cls, data: bytes | str) -> StoredResponse:
        """Inverse of ``encode``."""
        obj = orjson.loads(data)
        return cls(response=obj["response"], input_items=obj["input_items"])

    def items(self) -> list[dict[str, Any]]:
        """Every item an ``item_reference`` may name: the input items, then the output."""
        output = self.response.get("output")
        return [*self.input_items, *(output if isinstance(output, list) else ())]

    def item_ids(self) -> list[str]:
        """The ids of ``items()`` (the keys of the backends' item index)."""
        return [i for item in self.items() if isinstance(i := item.get("id"), str) and i]


@dataclass(frozen=True)
class NotStored:
    """What is kept instead of a response too large to store: its size and the limit.

    Attributes:
        response_id: The id of the response that was not stored.
        size: Its encoded size in bytes.
        limit: The limit it went over, in bytes.
        setting: The ``Settings`` field holding that limit.
    """

    response_id: str
    size: int
    limit: int
    setting: str = "store_max_response_bytes"

    @property
    def reason(self) -> str:
        """Why the response is missing, in words a client can act on."""
        return (
            f"Response '{clip(self.response_id)}' was not stored: it was {self.size} bytes, "
            f"over {self.setting}={self.limit}."
        )

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "not_stored": {
                    "id": self.response_id,
                    "size": self.size,
                    "limit": self.limit,
                    "setting": self.setting,
                }
            }
        )


def decode_record(data: bytes | str) -> StoredResponse | NotStored:
    """A stored record: a ``StoredResponse`` or the ``NotStored`` tombstone kept instead."""
    obj = orjson.loads(data)
    tombstone = obj.get("not_stored")
    if tombstone is not None:
        return NotStored(
            tombstone["id"], tombstone["size"], tombstone["limit"], tombstone["setting"]
        )
    return StoredResponse(response=obj["response"], input_items=obj["input_items"])


def _find_items(
    records: dict[str, StoredResponse | NotStored | None], wanted: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """The items ``wanted`` names (item id → response id), taken from the loaded ``records``."""
    found: dict[str, dict[str, Any]] = {}
    by_response: dict[str, set[str]] = {}
    for item_id, response_id in wanted.items():
        by_response.setdefault(response_id, set()).add(item_id)
    for response_id, item_ids in by_response.items():
        record = records.get(response_id)
        if not isinstance(record, StoredResponse):
            continue
        for item in record.items():
            held = item.get("id")
            if held in item_ids and held not in found:
                found[held] = item
    return found


class ResponseStore(Protocol):
    """Async, tenant-scoped storage of responses. Implementations bound their size and age.

    Every method raises ``StoreUnavailableError`` when the backend fails. ``put`` keeps a
    ``NotStored`` tombstone (and logs a warning) instead of a response over the per-response
    size limit.
    """

    async def get(self, tenant: str, response_id: str) -> StoredResponse | NotStored | None:
        """The live response stored by ``tenant`` under ``response_id`` (or the tombstone kept
        instead of it), else ``None``."""
        ...

    async def get_items(self, tenant: str, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The input or output items of ``tenant``'s live responses with these ids, by id.

        Ids that are unknown, expired or another tenant's are absent from the result. Costs
        one indexed lookup per id (plus one load per response they belong to), never a scan.
        """
        ...

    async def put(self, tenant: str, stored: StoredResponse) -> None:
        """Store (or replace) ``stored`` under ``(tenant, stored.id)``, indexing its items."""
        ...

    async def delete(self, tenant: str, response_id: str) -> bool:
        """Delete the response; ``True`` if a live one existed."""
        ...

    async def ping(self) -> None:
        """Return when the backend answers (cheaply); raise ``StoreUnavailableError`` when
        it does not. Readiness probes call it."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads. The store is unusable afterwards."""
        ...


def _encode_bounded(
    stored: StoredResponse, limit: int, setting: str = "store_max_response_bytes"
) -> tuple[bytes, list[str]]:
    """The bytes to keep for ``stored`` and the item ids to index: the response itself, or
    (logged as a warning) a tombstone with no items when it is over ``limit``."""
    data = stored.encode()
    if len(data) <= limit:
        return data, stored.item_ids()
    logger.warning(
        "response %s not stored: %d bytes is over %s (%d); a later GET or "
        "previous_response_id is told so",
        stored.id,
        len(data),
        setting,
        limit,
    )
    return NotStored(stored.id, len(data), limit, setting).encode(), []


# --- memory:// -------------------------------------------------------------------------------


class MemoryStore:
    """An in-process LRU bounded by count and total bytes, with one TTL for every entry.

    Entries are kept encoded, which makes the byte accounting exact and means callers can never
    mutate what is stored. All operations are O(1) (amortised for the expiry sweep; ``put``
    and removal are linear in the response's item count, for the item index). Visible only to
    the process that holds it: use SQLite or Redis when several workers share state.
    """

    def __init__(
        self,
        *,
        ttl: float,
        max_responses: int,
        max_bytes: int,
        max_response_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_responses = max_responses
        self._max_bytes = max_bytes
        self._max_response_bytes = max_response_bytes
        self._clock = clock
        # Recency order, for LRU eviction.
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        # Insertion order. With one TTL for all, this is also expiry order, so the sweep only
        # ever looks at the front.
        self._expiry: OrderedDict[tuple[str, str], float] = OrderedDict()
        # The item index: (tenant, item id) -> response id, and each entry's indexed item ids
        # so that removing the entry removes exactly its index entries.
        self._items: dict[tuple[str, str], str] = {}
        self._entry_items: dict[tuple[str, str], list[str]] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        """Encoded bytes currently held."""
        return self._bytes

    async def get(self, tenant: str, response_id: str) -> StoredResponse | NotStored | None:
        key = (tenant, response_id)
        data = self._entries.get(key)
        if data is None:
            return None
        if self._expiry[key] <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return decode_record(data)

    async def get_items(self, tenant: str, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        wanted = {i: r for i in item_ids if (r := self._items.get((tenant, i))) is not None}
        records = {r: await self.get(tenant, r) for r in set(wanted.values())}
        return _find_items(records, wanted)

    async def put(self, tenant: str, stored: StoredResponse) -> None:
        data, item_ids = _encode_bounded(stored, self._max_response_bytes)
        if len(data) > self._max_bytes:
            data, item_ids = _encode_bounded(stored, self._max_bytes, "store_max_bytes")
        key = (tenant, stored.id)
        now = self._clock()
        self._sweep(now)
        if key in self._entries:
            self._remove(key)
        self._entries[key] = data
        self._expiry[key] = now + self._ttl
        self._bytes += len(data)
        if item_ids:
            self._entry_items[key] = item_ids
            for item_id in item_ids:
                self._items[(tenant, item_id)] = stored.id
        while len(self._entries) > self._max_responses or self._bytes > self._max_bytes:
            self._remove(next(iter(self._entries)))

    async def delete(self, tenant: str, response_id: str) -> bool:
        key = (tenant, response_id)
        if key not in self._entries:
            return False
        live = self._expiry[key] > self._clock()
        self._remove(key)
        return live

    async def ping(self) -> None:
        # Memory is there as long as the process is.
        return

    async def aclose(self) -> None:
        self._entries.clear()
        self._expiry.clear()
        self._items.clear()
        self._entry_items.clear()
        self._bytes = 0

    def _remove(self, key: tuple[str, str]) -> None:
        self._bytes -= len(self._entries.pop(key))
        del self._expiry[key]
        tenant, response_id = key
        for item_id in self._entry_items.pop(key, ()):
            # A newer response holding the same item keeps its own index entry.
            if self._items.get((tenant, item_id)) == response_id:
                del self._items[(tenant, item_id)]

    def _sweep(self, now: float) -> None:
        while self._expiry:
            key, expires_at = next(iter(self._expiry.items()))
            if expires_at > now:
                return
            self._remove(key)


# --- sqlite:///path --------------------------------------------------------------------------

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS stream_mw_responses (
        tenant TEXT NOT NULL,
        id TEXT NOT NULL,
        expires_at REAL NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (tenant, id)
    )""",
    "CREATE INDEX IF NOT EXISTS stream_mw_responses_expires_at ON stream_mw_responses (expires_at)",
    # The item index: which response holds an item. Rows expire with their response and are
    # purged like them; a lookup then loads that response, so the rows of a deleted or
    # replaced response find nothing.
    """CREATE TABLE IF NOT EXISTS stream_mw_items (
        tenant TEXT NOT NULL,
        id TEXT NOT NULL,
        response_id TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (tenant, id)
    )""",
    "CREATE INDEX IF NOT EXISTS stream_mw_items_expires_at ON stream_mw_items (expires_at)",
)
# SQLite's oldest limit on bound parameters is 999; lookups go in batches below it.
_LOOKUP_BATCH = 500
# Purging deletes at most this many rows per write, so no write holds the lock for long.
_PURGE_BATCH = 500


class SQLiteStore:
    """A persistent store in one SQLite file, shared safely by processes on one machine.

    WAL mode lets readers run beside one writer; every statement is its own short
    transaction (autocommit), and ``busy_timeout`` makes a writer wait for another process's
    lock instead of failing. One connection per store is used from one dedicated thread, so
    the event loop never blocks on disk. Expired rows are invisible at once and purged in
    small batches on later writes.

    Args:
        path: The database file (created with its schema if missing), or ``":memory:"``.
        ttl: Seconds a response is kept.
        max_response_bytes: Larger responses are not stored (with a warning).
        busy_timeout: Seconds to wait for another process's write lock.
        clock: Wall-clock seconds; shared with other processes, so not monotonic.
    """

    def __init__(
        self,
        path: str,
        *,
        ttl: float,
        max_response_bytes: int,
        busy_timeout: float = 4.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._ttl = ttl
        self._max_response_bytes = max_response_bytes
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream_mw-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._next_purge = 0.0
        self._closed = False

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    async def get(self, tenant: str, response_id: str) -> StoredResponse | NotStored | None:
        return await self._call(self._get_sync, tenant, response_id)

    async def get_items(self, tenant: str, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return await self._call(self._get_items_sync, tenant, list(item_ids))

    async def put(self, tenant: str, stored: StoredResponse) -> None:
        data, item_ids = _encode_bounded(stored, self._max_response_bytes)
        await self._call(self._put_sync, tenant, stored.id, data, item_ids)

    async def delete(self, tenant: str, response_id: str) -> bool:
        return await self._call(self._delete_sync, tenant, response_id)

    async def purge_expired(self) -> int:
        """Delete every expired row now; returns how many. Writes also do this, in batches."""
        return await self._call(self._purge_sync, None)

    async def ping(self) -> None:
        await self._call(self._ping_sync)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_sync)
        finally:
            self._executor.shutdown(wait=False)

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._closed:
            raise StoreUnavailableError("The response store is closed.")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"The SQLite response store failed: {exc}") from exc

    # The methods below run on the store's thread only.

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                # Safe with WAL: a power cut may lose the last writes, never corrupt the file.
                conn.execute("PRAGMA synchronous=NORMAL")
                for statement in _SCHEMA:
                    conn.execute(statement)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _get_sync(self, tenant: str, response_id: str) -> StoredResponse | NotStored | None:
        row = (
            self._connection()
            .execute(
                "SELECT body FROM stream_mw_responses "
                "WHERE tenant = ? AND id = ? AND expires_at > ?",
                (tenant, response_id, self._clock()),
            )
            .fetchone()
        )
        return None if row is None else decode_record(row[0])

    def _get_items_sync(self, tenant: str, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        conn = self._connection()
        now = self._clock()
        wanted: dict[str, str] = {}
        unique = list(dict.fromkeys(item_ids))
        for start in range(0, len(unique), _LOOKUP_BATCH):
            batch = unique[start : start + _LOOKUP_BATCH]
            marks = ",".join("?" * len(batch))
            wanted.update(
                conn.execute(
                    f"SELECT id, response_id FROM stream_mw_items "
                    f"WHERE tenant = ? AND expires_at > ? AND id IN ({marks})",
                    (tenant, now, *batch),
                ).fetchall()
            )
        records = {r: self._get_sync(tenant, r) for r in set(wanted.values())}
        return _find_items(records, wanted)

    def _put_sync(self, tenant: str, response_id: str, data: bytes, item_ids: list[str]) -> None:
        conn = self._connection()
        now = self._clock()
        expires_at = now + self._ttl
        # One transaction: a reader never sees the response without its index, or the reverse.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT OR REPLACE INTO stream_mw_responses (tenant, id, expires_at, body) "
                "VALUES (?, ?, ?, ?)",
                (tenant, response_id, expires_at, data),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO stream_mw_items (tenant, id, response_id, expires_at) "
                "VALUES (?, ?, ?, ?)",
                [(tenant, item_id, response_id, expires_at) for item_id in item_ids],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if now >= self._next_purge:
            self._next_purge = now + min(self._ttl, 60.0)
            self._purge_sync(_PURGE_BATCH)

    def _delete_sync(self, tenant: str, response_id: str) -> bool:
        cursor = self._connection().execute(
            "DELETE FROM stream_mw_responses WHERE tenant = ? AND id = ? AND expires_at > ?",
            (tenant, response_id, self._clock()),
        )
        return cursor.rowcount > 0

    def _purge_sync(self, limit: int | None) -> int:
        conn = self._connection()
        now = self._clock()
        if limit is None:
            cursor = conn.execute("DELETE FROM stream_mw_responses WHERE expires_at <= ?", (now,))
            conn.execute("DELETE FROM stream_mw_items WHERE expires_at <= ?", (now,))
        else:
            cursor = conn.execute(
                "DELETE FROM stream_mw_responses WHERE rowid IN (SELECT rowid FROM "
                "stream_mw_responses WHERE expires_at <= ? LIMIT ?)",
                (now, limit),
            )
            conn.execute(
                "DELETE FROM stream_mw_items WHERE rowid IN (SELECT rowid FROM "
                "stream_mw_items WHERE expires_at <= ? LIMIT ?)",
                (now, limit),
            )
        return cursor.rowcount

    def _ping_sync(self) -> None:
        # Opens the file (and the schema) if need be: a missing directory or an unreadable
        # file fails here, as it would on the next request.
        self._connection().execute("SELECT 1").fetchone()

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _sqlite_path(url: str) -> str:
    # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute/path.db.
    rest = url[len("sqlite://") :]
    if rest in ("", "/", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/") or "?" in rest:
        raise ConfigurationError(
            f"store_url must look like sqlite:///relative.db or sqlite:////absolute.db, got {url!r}"
        )
    return rest[1:]


def open_store(settings: Settings) -> ResponseStore | None:
    """The store ``settings.store_url`` names, or ``None`` when storage is off.

    ``memory://``, ``sqlite:///relative.db`` / ``sqlite:////absolute.db``, or
    ``redis://host:port/db`` (also ``rediss://`` and ``unix://``; needs ``stream-mw[redis]``).
    Nothing connects here: connections are made on first use.
    """
    url = settings.store_url
    if url is None:
        return None
    if url.startswith("memory://"):
        return MemoryStore(
            ttl=settings.store_ttl,
            max_responses=settings.store_max_responses,
            max_bytes=settings.store_max_bytes,
            max_response_bytes=settings.store_max_response_bytes,
        )
    if url.startswith("sqlite://"):
        return SQLiteStore(
            _sqlite_path(url),
            ttl=settings.store_ttl,
            max_response_bytes=settings.store_max_response_bytes,
        )
    if url.startswith(("redis://", "rediss://", "unix://")):
        from ._store_redis import RedisStore

        return RedisStore(
            url, ttl=settings.store_ttl, max_response_bytes=settings.store_max_response_bytes
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


# --- tenants and input items -----------------------------------------------------------------

_ANONYMOUS = hashlib.sha256(b"anonymous").hexdigest()


def tenant_key(scope: Scope, settings: Settings) -> str:
    """The tenant a request acts for: ``settings.tenant(scope)``, or its client key's tenant,
    or a hash of its credential.

    With ``client_keys`` the middleware records the key's tenant in the scope (a named key:
    ``key:<name>``). Otherwise the default is the SHA-256 of the ``Authorization`` header, so
    the credential itself is never stored; requests without one share the ``anonymous``
    tenant.
    """
    if settings.tenant is not None:
        return settings.tenant(scope)
    client = scope.get(CLIENT_SCOPE_KEY)
    if isinstance(client, str):
        # Set by the middleware once the request's client key checked out.
        return client
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return hashlib.sha256(b"authorization\x00" + value).hexdigest()
    return _ANONYMOUS


_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
}
# Items the SDK's strict models require a ``status`` on when listed back as input items.
_NEEDS_STATUS = frozenset(
    {"function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output"}
)


def normalize_input(value: object) -> list[dict[str, Any]]:
    """A request's ``input`` as stored items, each with an ``id`` (and the shape the SDK's
    strict ``ResponseItem`` models accept).

    A string becomes one user message with an ``input_text`` part; a message's string content
    becomes one ``input_text`` (or, for the assistant, ``output_text``) part; items without an
    id get a fresh prefixed one. Items that need no change are returned as they are, so
    normalising twice costs almost nothing. ``None`` is an empty input.

    Raises:
        InvalidRequestError: ``input`` is not a string or a list of objects.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [
            {
                "type": "message",
                "id": new_id("msg"),
                "role": "user",
                "content": [{"type": "input_text", "text": value}],
                "status": "completed",
            }
        ]
    if not isinstance(value, list):
        raise InvalidRequestError(
            "Invalid 'input': expected a string or an array of input items.", param="input"
        )
    return [_normalize_item(item, index) for index, item in enumerate(value)]


def _normalize_item(item: object, index: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidRequestError(
            f"Invalid 'input[{index}]': expected an object.", param=f"input[{index}]"
        )
    kind = item.get("type")
    is_message = kind == "message" or (kind is None and "role" in item)
    changes: dict[str, Any] = {}
    if is_message:
        if kind is None:
            changes["type"] = kind = "message"
        content = _message_content(item, index)
        if content is not item.get("content"):
            changes["content"] = content
        if "status" not in item:
            changes["status"] = "completed"
    elif kind in _NEEDS_STATUS and "status" not in item:
        changes["status"] = "completed"
    if not item.get("id"):
        changes["id"] = new_id(_ID_PREFIX.get(kind if isinstance(kind, str) else "", "item"))
    return {**item, **changes} if changes else item


def _message_content(item: dict[str, Any], index: int) -> Any:
    content = item.get("content")
    assistant = item.get("role") == "assistant"
    if isinstance(content, str):
        if assistant:
            return [{"type": "output_text", "text": content, "annotations": []}]
        return [{"type": "input_text", "text": content}]
    if not isinstance(content, list):
        raise InvalidRequestError(
            f"Invalid 'input[{index}].content': expected a string or an array of parts.",
            param=f"input[{index}].content",
        )
    if assistant and any(
        isinstance(p, dict) and p.get("type") == "output_text" and "annotations" not in p
        for p in content
    ):
        return [
            {**p, "annotations": []}
            if isinstance(p, dict) and p.get("type") == "output_text" and "annotations" not in p
            else p
            for p in content
        ]
    return content


# --- the gateway the middleware holds --------------------------------------------------------

# Response ids are ours (resp_<hex>) or OpenAI's; anything else cannot be stored here.
_RESPONSE_ID = re.compile(r"[A-Za-z0-9_\-]{1,128}")
# Methods the stored-response routes leave to the wrapped app (see StoreGateway.matches).
_PASSED_METHODS = frozenset({"POST", "OPTIONS"})
_DEFAULT_LIMIT = 20
_MAX_LIMIT = 100


def _not_found(response_id: str, *, param: str | None = None) -> NotFoundError:
    what = "Previous response" if param == "previous_response_id" else "Response"
    return NotFoundError(f"{what} with id '{clip(response_id)}' not found.", param=param)


def has_item_references(value: object) -> bool:
    """Whether a request's ``input`` holds an ``item_reference`` (which the store resolves)."""
    return isinstance(value, list) and any(
        isinstance(item, dict) and item.get("type") == "item_reference" for item in value
    )


def unique_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` with every repeated id after the first replaced by a fresh one.

    Listing input items pages by id (``after`` is the last id of the previous page), so two
    items with one id would send a client round the same page forever. Clients do send
    repeats: an item replayed both from a ``previous_response_id`` chain and in ``input``.
    """
    seen: set[Any] = set()
    out: list[dict[str, Any]] | None = None
    for index, item in enumerate(items):
        item_id = item.get("id")
        if item_id not in seen:
            seen.add(item_id)
            continue
        if out is None:
            out = list(items)
        kind = item.get("type")
        fresh = new_id(_ID_PREFIX.get(kind if isinstance(kind, str) else "", "item"))
        seen.add(fresh)
        out[index] = {**item, "id": fresh}
    return items if out is None else out


class StoreGateway:
    """Everything the middleware needs from the store, behind four calls.

    One per middleware instance. The store is opened on first use (inside the server's event
    loop), so constructing the middleware never connects anywhere.

    Args:
        settings: ``store_url`` picks the backend (``None``: storage off), ``store_*`` bound it,
            ``tenant`` scopes it, ``path_prefix`` places the routes.
        timeout: Seconds before a store that does not answer counts as unavailable.
    """

    def __init__(self, settings: Settings, *, timeout: float = STORE_TIMEOUT) -> None:
        self._settings = settings
        self._timeout = timeout
        self._base = settings.responses_path + "/"
        self._store: ResponseStore | None = None
        #: Whether a store is configured (``store_url`` is not ``None``).
        self.enabled: bool = settings.store_url is not None
        if settings.store_url is not None:
            require_store_extra(settings.store_url)

    @property
    def store(self) -> ResponseStore:
        """The store, opened on first access.

        Raises:
            InvalidRequestError: storage is off (``store_url`` is ``None``).
        """
        if self._store is None:
            store = open_store(self._settings)
            if store is None:
                raise InvalidRequestError(
                    "Stored responses are turned off on this server (store_url is None)."
                )
            self._store = store
        return self._store

    def matches(self, scope: Scope) -> bool:
        """Whether ``handle`` serves this request (always ``False`` when storage is off, so
        the wrapped app keeps any routes of its own).

        Every method on the stored-response routes is served (a wrong one with 405), except
        ``POST``, which OpenAI uses for routes of its own beside them
        (``/responses/input_tokens``, ``/responses/compact``), and ``OPTIONS`` (CORS
        preflight): those reach the wrapped app.
        """
        return (
            self.enabled
            and scope["type"] == "http"
            and scope["method"] not in _PASSED_METHODS
            and self._route(scope) is not None
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a request ``matches`` accepted, with OpenAI-shaped JSON and errors."""
        route = self._route(scope)
        headers: list[tuple[bytes, bytes]] = []
        try:
            if route is None:
                raise NotFoundError(f"No route for {scope['method']} {clip(scope['path'])}.")
            response_id, input_items = route
            allowed = "GET" if input_items else "GET, DELETE"
            if scope["method"] not in allowed.split(", "):
                headers.append((b"allow", allowed.encode("ascii")))
                raise MethodNotAllowedError(scope["method"], clip(scope["path"]), allowed)
            params = QueryParams(scope.get("query_string", b""))
            tenant = tenant_key(scope, self._settings)
            if input_items:
                body = await self._list_input_items(tenant, response_id, params)
            elif scope["method"] == "DELETE":
                body = await self._delete(tenant, response_id)
            else:
                if params.get("stream", "false").lower() not in ("false", "0", ""):
                    raise InvalidRequestError(
                        "Streaming a stored response again is not supported; retrieve it "
                        "without 'stream'.",
                        param="stream",
                    )
                body = (await self._load(tenant, response_id)).response
            status = 200
        except RequestError as exc:
            status, body = exc.status_code, exc.body()
        payload = orjson.dumps(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode("ascii")),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    async def expand(
        self, scope: Scope, body: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Resolve ``previous_response_id`` before translation.

        Returns ``(body, input_items)``. Without ``previous_response_id`` the body is returned
        unchanged. With it, the returned body is a copy whose ``input`` is the stored input,
        then the stored output, then the new input, and whose ``previous_response_id`` is
        removed (the caller echoes it from the original body). ``input_items`` is always the
        full normalised input to pass to ``save`` later. ``instructions`` are not carried over,
        as with OpenAI.

        Every ``item_reference`` in ``input`` is replaced by the stored item it names (an input
        or output item of any of the tenant's stored responses), in both the returned body and
        ``input_items``.

        Raises:
            InvalidRequestError: 400, no store is configured, the id is not a string, or an
                ``item_reference`` names no item of this tenant's (``param`` is ``input[i]``).
            NotFoundError: 404, the id is unknown, expired or another tenant's.
            StoreUnavailableError: 503, the store failed or did not answer in time.
        """
        new_items = normalize_input(body.get("input"))
        if has_item_references(body.get("input")):
            new_items = await self._resolve_references(scope, new_items)
            body = {**body, "input": new_items}
        previous = body.get("previous_response_id")
        if previous is None:
            return body, new_items
        if not isinstance(previous, str) or not previous:
            raise InvalidRequestError(
                "Invalid 'previous_response_id': expected a response id string.",
                param="previous_response_id",
            )
        if not self.enabled:
            raise InvalidRequestError(
                "'previous_response_id' needs a response store, and this server has none "
                "(store_url is None). Send the whole conversation in 'input' instead.",
                param="previous_response_id",
            )
        stored = await self._load(
            tenant_key(scope, self._settings), previous, param="previous_response_id"
        )
        items = [*stored.items(), *new_items]
        expanded = {k: v for k, v in body.items() if k != "previous_response_id"}
        expanded["input"] = items
        return expanded, items

    async def _resolve_references(
        self, scope: Scope, items: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        references = [
            (index, item)
            for index, item in enumerate(items)
            if item.get("type") == "item_reference"
        ]
        if not self.enabled:
            index = references[0][0]
            raise InvalidRequestError(
                f"'input[{index}]' is an item_reference, which needs a response store to "
                "resolve, and this server has none (store_url is None). Send the item itself "
                "instead of a reference to it.",
                param=f"input[{index}]",
            )
        tenant = tenant_key(scope, self._settings)
        ids = [item["id"] for _, item in references]
        found = await self._guard(lambda store: store.get_items(tenant, ids))
        resolved = list(items)
        for index, item in references:
            target = found.get(item["id"])
            if target is None:
                raise InvalidRequestError(
                    f"Item with id '{clip(item['id'])}' not found (input[{index}] is an "
                    "item_reference). It is unknown, expired, belongs to another API key, or "
                    "was in a response sent with store set to false; send the item itself.",
                    param=f"input[{index}]",
                )
            resolved[index] = target
        return resolved

    async def save(
        self, scope: Scope, input_items: list[dict[str, Any]], response: dict[str, Any]
    ) -> None:
        """Store a finished response unless ``response["store"]`` is false or storage is off.

        Never raises: a failing, slow or full store is logged as a warning and generation goes
        on. The write is shielded from cancellation (bounded by the timeout), so a response
        the client received is stored even if the surrounding task is being cancelled.
        """
        if not self.enabled or response.get("store") is False:
            return
        response_id = response.get("id")
        try:
            stored = StoredResponse(
                response=response, input_items=unique_ids(normalize_input(input_items))
            )
            tenant = tenant_key(scope, self._settings)
            # Shielded: the caller may sit in a scope that is cancelled as soon as the last
            # byte went out (Starlette's StreamingResponse cancels its sender when the server
            # reports the finished request's disconnect). The timeout still bounds the write.
            with anyio.CancelScope(shield=True), anyio.fail_after(self._timeout):
                await self.store.put(tenant, stored)
        except Exception as exc:
            logger.warning(
                "response %s was not stored: %s",
                response_id,
                _describe(exc, self._timeout),
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )

    async def ping(self) -> str | None:
        """``None`` when the store answers a ping in time, else why not (for readiness).
        Always ``None`` when storage is off."""
        if not self.enabled:
            return None
        try:
            with anyio.fail_after(self._timeout):
                await self.store.ping()
        except Exception as exc:
            return _describe(exc, self._timeout)
        return None

    async def aclose(self) -> None:
        """Close the store if it was opened. A later call opens it again."""
        store, self._store = self._store, None
        if store is not None:
            await store.aclose()

    def _route(self, scope: Scope) -> tuple[str, bool] | None:
        path: str = scope["path"]
        # Under a mount, Starlette's ``path`` includes ``root_path``; routes are relative to it.
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if not path.startswith(self._base):
            return None
        response_id, slash, tail = path[len(self._base) :].partition("/")
        if not response_id:
            return None
        if not slash:
            return response_id, False
        if tail == "input_items":
            return response_id, True
        return None

    async def _load(
        self, tenant: str, response_id: str, *, param: str | None = None
    ) -> StoredResponse:
        if not _RESPONSE_ID.fullmatch(response_id):
            raise _not_found(response_id, param=param)
        stored = await self._guard(lambda store: store.get(tenant, response_id))
        if stored is None:
            raise _not_found(response_id, param=param)
        if isinstance(stored, NotStored):
            raise NotFoundError(stored.reason, param=param, code="response_not_stored")
        return stored

    async def _delete(self, tenant: str, response_id: str) -> dict[str, Any]:
        if not _RESPONSE_ID.fullmatch(response_id) or not await self._guard(
            lambda store: store.delete(tenant, response_id)
        ):
            raise _not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def _list_input_items(
        self, tenant: str, response_id: str, params: QueryParams
    ) -> dict[str, Any]:
        limit = _parse_limit(params.get("limit"))
        order = params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequestError(
                f"Invalid 'order': expected 'asc' or 'desc', got {order!r}.", param="order"
            )
        after = params.get("after")
        items = (await self._load(tenant, response_id)).input_items
        ordered = items if order == "asc" else items[::-1]
        start = 0
        if after is not None:
            start = next((i + 1 for i, item in enumerate(ordered) if item.get("id") == after), -1)
            if start < 0:
                raise InvalidRequestError(
                    f"Invalid 'after': no input item with id '{clip(after)}' in response "
                    f"'{clip(response_id)}'.",
                    param="after",
                )
        page = ordered[start : start + limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": start + limit < len(ordered),
        }

    async def _guard(self, call: Callable[[ResponseStore], Awaitable[_T]]) -> _T:
        try:
            with anyio.fail_after(self._timeout):
                return await call(self.store)
        except StoreUnavailableError as exc:
            failure: Exception = exc
            detail = exc.message
        except RequestError:
            raise
        except Exception as exc:
            failure, detail = exc, _describe(exc, self._timeout)
        logger.warning("response store read failed: %s", detail)
        # The client learns that the store is down, not where it lives or how it failed.
        reason = "did not answer in time" if isinstance(failure, TimeoutError) else "is unavailable"
        raise StoreUnavailableError(f"The response store {reason}; try again later.") from failure


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    return str(exc) or type(exc).__name__


def _parse_limit(raw: str | None) -> int:
    if raw is None:
        return _DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= _MAX_LIMIT:
        raise InvalidRequestError(
            f"Invalid 'limit': expected an integer between 1 and {_MAX_LIMIT}, got {raw!r}.",
            param="limit",
        )
    return limit
