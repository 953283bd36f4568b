"""The ``sqlite:///path`` store: one file, shared safely by the processes of one machine."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson

from .._errors import ConfigurationError, StoreUnavailableError
from ._protocol import (
    ConversationFullError,
    NotStored,
    StoredResponse,
    decode_record,
    encode_bounded,
    find_items,
    unique_item_ids,
)

__all__ = ["SQLiteStore", "sqlite_path"]

_T = TypeVar("_T")

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
    # Conversations: the object, and its items in the order they were added (seq). Items
    # have no expiry of their own: they go with their conversation (deleted or purged).
    """CREATE TABLE IF NOT EXISTS stream_mw_conversations (
        tenant TEXT NOT NULL,
        id TEXT NOT NULL,
        expires_at REAL NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (tenant, id)
    )""",
    "CREATE INDEX IF NOT EXISTS stream_mw_conversations_expires_at "
    "ON stream_mw_conversations (expires_at)",
    """CREATE TABLE IF NOT EXISTS stream_mw_conversation_items (
        tenant TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (tenant, conversation_id, id)
    )""",
    "CREATE INDEX IF NOT EXISTS stream_mw_conversation_items_seq "
    "ON stream_mw_conversation_items (tenant, conversation_id, seq)",
    # Background responses: each one's events by sequence number, and the cancellations
    # asked for (the process running the response polls its row).
    """CREATE TABLE IF NOT EXISTS stream_mw_events (
        tenant TEXT NOT NULL,
        response_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        expires_at REAL NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (tenant, response_id, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS stream_mw_events_expires_at ON stream_mw_events (expires_at)",
    """CREATE TABLE IF NOT EXISTS stream_mw_cancels (
        tenant TEXT NOT NULL,
        response_id TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (tenant, response_id)
    )""",
)
#: Seconds between a waiting reader's looks at the event log (other processes append to it).
_EVENT_POLL_SECONDS = 0.1
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
        max_conversation_items: Most items one conversation holds.
        busy_timeout: Seconds to wait for another process's write lock.
        clock: Wall-clock seconds; shared with other processes, so not monotonic.
    """

    def __init__(
        self,
        path: str,
        *,
        ttl: float,
        max_response_bytes: int,
        max_conversation_items: int = 1000,
        busy_timeout: float = 4.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._max_conversation_items = max_conversation_items
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
        data, item_ids = encode_bounded(stored, self._max_response_bytes)
        await self._call(self._put_sync, tenant, stored.id, data, item_ids)

    async def delete(self, tenant: str, response_id: str) -> bool:
        return await self._call(self._delete_sync, tenant, response_id)

    async def create_conversation(
        self, tenant: str, conversation: dict[str, Any], items: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if len(items) > self._max_conversation_items:
            raise ConversationFullError(conversation["id"], self._max_conversation_items)
        stored = unique_item_ids(items)
        await self._call(self._create_conversation_sync, tenant, conversation, stored)
        return stored

    async def get_conversation(self, tenant: str, conversation_id: str) -> dict[str, Any] | None:
        body = await self._call(self._conversation_body_sync, tenant, conversation_id)
        return None if body is None else _loads_object(body)

    async def update_conversation(self, tenant: str, conversation: dict[str, Any]) -> bool:
        return await self._call(self._update_conversation_sync, tenant, conversation)

    async def delete_conversation(self, tenant: str, conversation_id: str) -> bool:
        return await self._call(self._delete_conversation_sync, tenant, conversation_id)

    async def conversation_items(
        self, tenant: str, conversation_id: str
    ) -> list[dict[str, Any]] | None:
        return await self._call(self._conversation_items_sync, tenant, conversation_id)

    async def add_conversation_items(
        self, tenant: str, conversation_id: str, items: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]] | None:
        return await self._call(self._add_items_sync, tenant, conversation_id, list(items))

    async def delete_conversation_item(
        self, tenant: str, conversation_id: str, item_id: str
    ) -> bool | None:
        return await self._call(self._delete_item_sync, tenant, conversation_id, item_id)

    async def append_events(
        self, tenant: str, response_id: str, events: Sequence[tuple[int, bytes]]
    ) -> None:
        await self._call(self._append_events_sync, tenant, response_id, list(events))

    async def events_after(
        self, tenant: str, response_id: str, after: int, wait: float
    ) -> list[tuple[int, bytes]]:
        deadline = time.monotonic() + wait
        while True:
            found = await self._call(self._events_after_sync, tenant, response_id, after)
            if found or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(min(_EVENT_POLL_SECONDS, max(deadline - time.monotonic(), 0)))

    async def request_cancel(self, tenant: str, response_id: str) -> None:
        await self._call(self._request_cancel_sync, tenant, response_id)

    async def cancel_requested(self, tenant: str, response_id: str) -> bool:
        return await self._call(self._cancel_requested_sync, tenant, response_id)

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
                self._set_up(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        # Two processes (or workers) opening one new file at once: switching it to WAL needs a
        # lock that SQLite does not wait for with busy_timeout, so one of them is told
        # "database is locked" at once. Retried within busy_timeout, it finds WAL already set.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
        # Safe with WAL: a power cut may lose the last writes, never corrupt the file.
        conn.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            conn.execute(statement)

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
        return find_items(records, wanted)

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
        self._maybe_purge_sync(now)

    def _maybe_purge_sync(self, now: float) -> None:
        if now >= self._next_purge:
            self._next_purge = now + min(self._ttl, 60.0)
            self._purge_sync(_PURGE_BATCH)

    def _conversation_body_sync(self, tenant: str, conversation_id: str) -> bytes | None:
        row = (
            self._connection()
            .execute(
                "SELECT body FROM stream_mw_conversations "
                "WHERE tenant = ? AND id = ? AND expires_at > ?",
                (tenant, conversation_id, self._clock()),
            )
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def _create_conversation_sync(
        self, tenant: str, conversation: dict[str, Any], items: list[dict[str, Any]]
    ) -> None:
        conversation_id = conversation["id"]
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO stream_mw_conversations (tenant, id, expires_at, body) "
                "VALUES (?, ?, ?, ?)",
                (tenant, conversation_id, self._clock() + self._ttl, orjson.dumps(conversation)),
            )
            # Rows left by an expired conversation with this id must not show up in it.
            conn.execute(
                "DELETE FROM stream_mw_conversation_items WHERE tenant = ? AND conversation_id = ?",
                (tenant, conversation_id),
            )
            self._insert_items(conn, tenant, conversation_id, items, 0)
        self._maybe_purge_sync(self._clock())

    def _insert_items(
        self,
        conn: sqlite3.Connection,
        tenant: str,
        conversation_id: str,
        items: list[dict[str, Any]],
        seq: int,
    ) -> None:
        conn.executemany(
            "INSERT INTO stream_mw_conversation_items (tenant, conversation_id, id, seq, body) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (tenant, conversation_id, item["id"], seq + n, orjson.dumps(item))
                for n, item in enumerate(items, 1)
            ],
        )

    def _renew_sync(self, conn: sqlite3.Connection, tenant: str, conversation_id: str) -> bool:
        now = self._clock()
        cursor = conn.execute(
            "UPDATE stream_mw_conversations SET expires_at = ? "
            "WHERE tenant = ? AND id = ? AND expires_at > ?",
            (now + self._ttl, tenant, conversation_id, now),
        )
        return cursor.rowcount > 0

    def _update_conversation_sync(self, tenant: str, conversation: dict[str, Any]) -> bool:
        now = self._clock()
        cursor = self._connection().execute(
            "UPDATE stream_mw_conversations SET body = ?, expires_at = ? "
            "WHERE tenant = ? AND id = ? AND expires_at > ?",
            (orjson.dumps(conversation), now + self._ttl, tenant, conversation["id"], now),
        )
        return cursor.rowcount > 0

    def _delete_conversation_sync(self, tenant: str, conversation_id: str) -> bool:
        with self._transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM stream_mw_conversations "
                "WHERE tenant = ? AND id = ? AND expires_at > ?",
                (tenant, conversation_id, self._clock()),
            )
            conn.execute(
                "DELETE FROM stream_mw_conversation_items WHERE tenant = ? AND conversation_id = ?",
                (tenant, conversation_id),
            )
        return cursor.rowcount > 0

    def _conversation_items_sync(
        self, tenant: str, conversation_id: str
    ) -> list[dict[str, Any]] | None:
        # One read transaction, so the items match the conversation that was found live.
        with self._transaction("BEGIN") as conn:
            if self._conversation_body_sync(tenant, conversation_id) is None:
                return None
            rows = conn.execute(
                "SELECT body FROM stream_mw_conversation_items "
                "WHERE tenant = ? AND conversation_id = ? ORDER BY seq",
                (tenant, conversation_id),
            ).fetchall()
        return [_loads_object(row[0]) for row in rows]

    def _add_items_sync(
        self, tenant: str, conversation_id: str, items: list[dict[str, Any]]
    ) -> list[dict[str, Any]] | None:
        with self._transaction() as conn:
            if not self._renew_sync(conn, tenant, conversation_id):
                return None
            taken = {
                row[0]
                for row in conn.execute(
                    "SELECT id FROM stream_mw_conversation_items "
                    "WHERE tenant = ? AND conversation_id = ?",
                    (tenant, conversation_id),
                )
            }
            if len(taken) + len(items) > self._max_conversation_items:
                raise ConversationFullError(conversation_id, self._max_conversation_items)
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM stream_mw_conversation_items "
                "WHERE tenant = ? AND conversation_id = ?",
                (tenant, conversation_id),
            ).fetchone()
            stored = unique_item_ids(items, taken)
            self._insert_items(conn, tenant, conversation_id, stored, int(last))
        return stored

    def _delete_item_sync(self, tenant: str, conversation_id: str, item_id: str) -> bool | None:
        with self._transaction() as conn:
            if not self._renew_sync(conn, tenant, conversation_id):
                return None
            cursor = conn.execute(
                "DELETE FROM stream_mw_conversation_items "
                "WHERE tenant = ? AND conversation_id = ? AND id = ?",
                (tenant, conversation_id, item_id),
            )
        return cursor.rowcount > 0

    @contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock at once: a read-check-write (the item cap, the ids
        # taken) is then atomic against other processes, and never fails upgrading a lock.
        conn = self._connection()
        conn.execute(begin)
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _delete_sync(self, tenant: str, response_id: str) -> bool:
        cursor = self._connection().execute(
            "DELETE FROM stream_mw_responses WHERE tenant = ? AND id = ? AND expires_at > ?",
            (tenant, response_id, self._clock()),
        )
        return cursor.rowcount > 0

    def _append_events_sync(
        self, tenant: str, response_id: str, events: list[tuple[int, bytes]]
    ) -> None:
        expires_at = self._clock() + self._ttl
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO stream_mw_events "
                "(tenant, response_id, seq, expires_at, body) VALUES (?, ?, ?, ?, ?)",
                [(tenant, response_id, seq, expires_at, body) for seq, body in events],
            )

    def _events_after_sync(
        self, tenant: str, response_id: str, after: int
    ) -> list[tuple[int, bytes]]:
        rows = (
            self._connection()
            .execute(
                "SELECT seq, body FROM stream_mw_events WHERE tenant = ? AND response_id = ? "
                "AND seq > ? AND expires_at > ? ORDER BY seq",
                (tenant, response_id, after, self._clock()),
            )
            .fetchall()
        )
        return [(int(seq), bytes(body)) for seq, body in rows]

    def _request_cancel_sync(self, tenant: str, response_id: str) -> None:
        self._connection().execute(
            "INSERT OR REPLACE INTO stream_mw_cancels (tenant, response_id, expires_at) "
            "VALUES (?, ?, ?)",
            (tenant, response_id, self._clock() + self._ttl),
        )

    def _cancel_requested_sync(self, tenant: str, response_id: str) -> bool:
        row = (
            self._connection()
            .execute(
                "SELECT 1 FROM stream_mw_cancels WHERE tenant = ? AND response_id = ? "
                "AND expires_at > ?",
                (tenant, response_id, self._clock()),
            )
            .fetchone()
        )
        return row is not None

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
        self._purge_conversations_sync(now, limit)
        conn.execute("DELETE FROM stream_mw_events WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM stream_mw_cancels WHERE expires_at <= ?", (now,))
        return cursor.rowcount

    def _purge_conversations_sync(self, now: float, limit: int | None) -> None:
        conn = self._connection()
        expired = conn.execute(
            "SELECT tenant, id FROM stream_mw_conversations WHERE expires_at <= ? LIMIT ?",
            (now, -1 if limit is None else limit),
        ).fetchall()
        if not expired:
            return
        with self._transaction() as conn:
            for tenant, conversation_id in expired:
                conn.execute(
                    "DELETE FROM stream_mw_conversation_items "
                    "WHERE tenant = ? AND conversation_id = ?",
                    (tenant, conversation_id),
                )
                # Only if still expired: another process may have renewed it meanwhile.
                conn.execute(
                    "DELETE FROM stream_mw_conversations "
                    "WHERE tenant = ? AND id = ? AND expires_at <= ?",
                    (tenant, conversation_id, now),
                )

    def _ping_sync(self) -> None:
        # Opens the file (and the schema) if need be: a missing directory or an unreadable
        # file fails here, as it would on the next request.
        self._connection().execute("SELECT 1").fetchone()

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def sqlite_path(url: str) -> str:
    # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute/path.db.
    rest = url[len("sqlite://") :]
    if rest in ("", "/", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/") or "?" in rest:
        raise ConfigurationError(
            f"store_url must look like sqlite:///relative.db or sqlite:////absolute.db, got {url!r}"
        )
    return rest[1:]


def _loads_object(data: bytes | str) -> dict[str, Any]:
    obj = orjson.loads(data)
    if not isinstance(obj, dict):
        raise StoreUnavailableError("The SQLite store holds a record that is not an object.")
    return obj
