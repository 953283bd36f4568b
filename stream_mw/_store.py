"""Stored responses: ``previous_response_id``, retrieval, deletion and input-item listing.

The Responses API is stateful: ``store`` defaults to true, clients chain turns with
``previous_response_id`` and fetch or delete responses by id. This module holds

- ``StoredResponse``, what is kept per response: the Response object (which echoes
  ``instructions`` and holds the output items) and the full input the model saw, after
  ``previous_response_id`` expansion, normalised to items with ids;
- ``ResponseStore``, the async, tenant-scoped storage protocol, and two implementations:
  ``MemoryStore`` (``memory://``, a bounded LRU with a TTL) and ``SQLiteStore``
  (``sqlite:///path``, WAL, safe for several worker processes on one machine). ``RedisStore``
  (``redis://``) lives in ``_store_redis.py`` so that ``import stream_mw`` never imports redis;
- ``open_store(settings)``, which picks one by ``Settings.store_url``;
- ``StoreGateway``, the one object the middleware holds: it expands ``previous_response_id``,
  saves finished responses (never raising: a store failure must not break generation) and
  serves ``GET``/``DELETE {prefix}/responses/{id}`` and ``GET {prefix}/responses/{id}/input_items``.

Isolation: every operation takes a tenant key (``tenant_key``: ``Settings.tenant(scope)`` or a
hash of the ``Authorization`` header). Keys are ``(tenant, id)``, so another tenant's id is
simply absent and answers 404, exactly like an unknown one.

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
from collections.abc import Awaitable, Callable
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
    NotFoundError,
    RequestError,
    StoreUnavailableError,
)
from ._items import new_id
from ._observe import logger
from ._settings import Settings

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

__all__ = [
    "STORE_TIMEOUT",
    "MemoryStore",
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


class ResponseStore(Protocol):
    """Async, tenant-scoped storage of responses. Implementations bound their size and age.

    ``get``, ``put`` and ``delete`` raise ``StoreUnavailableError`` when the backend fails.
    ``put`` silently skips (with a warning) a response over the per-response size limit.
    """

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        """The live response stored by ``tenant`` under ``response_id``, else ``None``."""
        ...

    async def put(self, tenant: str, stored: StoredResponse) -> None:
        """Store (or replace) ``stored`` under ``(tenant, stored.id)``."""
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


def _encode_bounded(stored: StoredResponse, limit: int) -> bytes | None:
    data = stored.encode()
    if len(data) > limit:
        logger.warning(
            "response %s not stored: %d bytes is over store_max_response_bytes (%d)",
            stored.id,
            len(data),
            limit,
        )
        return None
    return data


# --- memory:// -------------------------------------------------------------------------------


class MemoryStore:
    """An in-process LRU bounded by count and total bytes, with one TTL for every entry.

    Entries are kept encoded, which makes the byte accounting exact and means callers can never
    mutate what is stored. All operations are O(1) (amortised for the expiry sweep). Visible
    only to the process that holds it: use SQLite or Redis when several workers share state.
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
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        """Encoded bytes currently held."""
        return self._bytes

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        key = (tenant, response_id)
        data = self._entries.get(key)
        if data is None:
            return None
        if self._expiry[key] <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return StoredResponse.decode(data)

    async def put(self, tenant: str, stored: StoredResponse) -> None:
        data = _encode_bounded(stored, self._max_response_bytes)
        if data is None:
            return
        if len(data) > self._max_bytes:
            logger.warning(
                "response %s not stored: %d bytes is over store_max_bytes (%d)",
                stored.id,
                len(data),
                self._max_bytes,
            )
            return
        key = (tenant, stored.id)
        now = self._clock()
        self._sweep(now)
        if key in self._entries:
            self._remove(key)
        self._entries[key] = data
        self._expiry[key] = now + self._ttl
        self._bytes += len(data)
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
        self._bytes = 0

    def _remove(self, key: tuple[str, str]) -> None:
        self._bytes -= len(self._entries.pop(key))
        del self._expiry[key]

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
)
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

    async def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        return await self._call(self._get_sync, tenant, response_id)

    async def put(self, tenant: str, stored: StoredResponse) -> None:
        data = _encode_bounded(stored, self._max_response_bytes)
        if data is not None:
            await self._call(self._put_sync, tenant, stored.id, data)

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

    def _get_sync(self, tenant: str, response_id: str) -> StoredResponse | None:
        row = (
            self._connection()
            .execute(
                "SELECT body FROM stream_mw_responses "
                "WHERE tenant = ? AND id = ? AND expires_at > ?",
                (tenant, response_id, self._clock()),
            )
            .fetchone()
        )
        return None if row is None else StoredResponse.decode(row[0])

    def _put_sync(self, tenant: str, response_id: str, data: bytes) -> None:
        conn = self._connection()
        now = self._clock()
        conn.execute(
            "INSERT OR REPLACE INTO stream_mw_responses (tenant, id, expires_at, body) "
            "VALUES (?, ?, ?, ?)",
            (tenant, response_id, now + self._ttl, data),
        )
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
        else:
            cursor = conn.execute(
                "DELETE FROM stream_mw_responses WHERE rowid IN (SELECT rowid FROM "
                "stream_mw_responses WHERE expires_at <= ? LIMIT ?)",
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
_DEFAULT_LIMIT = 20
_MAX_LIMIT = 100


def _not_found(response_id: str, *, param: str | None = None) -> NotFoundError:
    what = "Previous response" if param == "previous_response_id" else "Response"
    return NotFoundError(f"{what} with id '{response_id}' not found.", param=param)


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
        the wrapped app keeps any routes of its own)."""
        return self.enabled and scope["type"] == "http" and self._route(scope) is not None

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a request ``matches`` accepted, with OpenAI-shaped JSON and errors."""
        route = self._route(scope)
        try:
            if route is None:
                raise NotFoundError(f"No route for {scope['method']} {scope['path']}.")
            response_id, input_items = route
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

        Raises:
            InvalidRequestError: 400, no store is configured or the id is not a string.
            NotFoundError: 404, the id is unknown, expired or another tenant's.
            StoreUnavailableError: 503, the store failed or did not answer in time.
        """
        new_items = normalize_input(body.get("input"))
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
        output = stored.response.get("output")
        items = [*stored.input_items, *(output if isinstance(output, list) else ()), *new_items]
        expanded = {k: v for k, v in body.items() if k != "previous_response_id"}
        expanded["input"] = items
        return expanded, items

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
            stored = StoredResponse(response=response, input_items=normalize_input(input_items))
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
        method = scope["method"]
        if not slash:
            return (response_id, False) if method in ("GET", "DELETE") else None
        if tail == "input_items" and method == "GET":
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
                    f"Invalid 'after': no input item with id '{after}' in response "
                    f"'{response_id}'.",
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
