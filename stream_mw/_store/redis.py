"""The ``redis://`` store: shared by every process and machine that reaches one Redis.

Loaded only when a ``redis://``, ``rediss://`` or ``unix://`` store URL is opened, so
``import stream_mw`` never imports redis (extra ``stream-mw[redis]``).

One key per (tenant, response), written with ``SET ... PX`` so Redis expires each response on
its own, and one key per (tenant, item id) holding the id of the response that holds the item,
with the same expiry, written together by one script (atomically). The tenant is part of every key, so
another tenant's id is simply absent.

A conversation is three keys with one expiry, renewed on every change: its object, the list of
its item ids (the order) and a hash of its items by id. Changes that check before they write
(the item cap, ids already taken) run as one script, so they are atomic against other
processes in one round trip, with no JSON handling in Lua. Socket timeouts are short and retries few, so an outage
answers ``StoreUnavailableError`` quickly instead of hanging the request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

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

__all__ = ["RedisStore"]

# KEYS[1] is the response, KEYS[2..] its items' index entries; ARGV: body, TTL (ms), id.
_PUT_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 2, #KEYS do
    redis.call('SET', KEYS[i], ARGV[3], 'PX', ARGV[2])
end
"""

# Appends a conversation's items, all or none. KEYS: the conversation, its ids, its items.
# ARGV: the item cap, the TTL (ms), then id and body of each item. Answers -1 (no such
# conversation), -2 (the cap), the ids already taken (nothing written; the caller renames them
# and tries again) or 0.
_ADD_ITEMS_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('LLEN', KEYS[2]) + (#ARGV - 2) / 2 > tonumber(ARGV[1]) then return -2 end
local taken = {}
for i = 3, #ARGV, 2 do
    if redis.call('HEXISTS', KEYS[3], ARGV[i]) == 1 then taken[#taken + 1] = ARGV[i] end
end
if #taken > 0 then return taken end
for i = 3, #ARGV, 2 do
    redis.call('RPUSH', KEYS[2], ARGV[i])
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return 0
"""

#: Defaults for the client; the URL's own query options (``?socket_timeout=0.5``) win.
CLIENT_DEFAULTS: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}


class RedisStore:
    """A ``Store`` on Redis, through ``redis.asyncio``.

    Args:
        url: ``redis://[:password@]host:port/db``, ``rediss://...`` or ``unix:///path.sock``,
            with redis-py's query options (``socket_timeout``, ``socket_connect_timeout``...).
        ttl: Seconds each response is kept (Redis expires it).
        max_response_bytes: Larger responses are not stored (with a warning).
        max_conversation_items: Most items one conversation holds.
        key_prefix: Namespace of the keys, so one Redis can hold other data too.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float,
        max_response_bytes: int,
        max_conversation_items: int = 1000,
        key_prefix: str = "stream_mw:response:",
    ) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
        except ImportError as exc:
            raise ConfigurationError(
                f"store_url {url!r} needs the redis package: pip install 'stream-mw[redis]'"
            ) from exc
        self._ttl_ms = max(1, round(ttl * 1000))
        self._max_response_bytes = max_response_bytes
        self._max_conversation_items = max_conversation_items
        self._prefix = key_prefix
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError)
        # One retry covers a pooled connection that died while Redis restarted; the default
        # (ten, with exponential backoff) would turn an outage into a long hang.
        self._client: Any = aioredis.Redis.from_url(
            url, **CLIENT_DEFAULTS, retry=Retry(NoBackoff(), 1)
        )
        self._put_script: Any = self._client.register_script(_PUT_SCRIPT)
        self._add_items_script: Any = self._client.register_script(_ADD_ITEMS_SCRIPT)

    def key(self, tenant: str, response_id: str) -> str:
        """The Redis key of a response. The tenant is hashed to a fixed width, which keeps
        keys unambiguous whatever the tenant string holds and keeps it out of plain sight."""
        return f"{self._prefix}{_digest(tenant)}:{response_id}"

    def item_key(self, tenant: str, item_id: str) -> str:
        """The Redis key of an item's index entry. ``item:`` cannot be confused with a
        response key, whose tenant part is 32 hex digits."""
        return f"{self._prefix}item:{_digest(tenant)}:{item_id}"

    async def get(self, tenant: str, response_id: str) -> StoredResponse | NotStored | None:
        try:
            data = await self._client.get(self.key(tenant, response_id))
        except self._errors as exc:
            raise _unavailable(exc) from exc
        return None if data is None else decode_record(data)

    async def get_items(self, tenant: str, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        unique = list(dict.fromkeys(item_ids))
        if not unique:
            return {}
        try:
            holders = await self._client.mget([self.item_key(tenant, i) for i in unique])
            wanted = {i: r.decode() for i, r in zip(unique, holders, strict=True) if r is not None}
            response_ids = list(set(wanted.values()))
            bodies = (
                await self._client.mget([self.key(tenant, r) for r in response_ids])
                if response_ids
                else []
            )
        except self._errors as exc:
            raise _unavailable(exc) from exc
        records = {
            r: None if body is None else decode_record(body)
            for r, body in zip(response_ids, bodies, strict=True)
        }
        return find_items(records, wanted)

    async def put(self, tenant: str, stored: StoredResponse) -> None:
        data, item_ids = encode_bounded(stored, self._max_response_bytes)
        keys = [self.key(tenant, stored.id), *(self.item_key(tenant, i) for i in item_ids)]
        try:
            # One script call: atomic like MULTI, but one command to encode and send instead
            # of one per item (a pipeline of 40 SETs cost five times a plain SET).
            await self._put_script(keys=keys, args=[data, self._ttl_ms, stored.id])
        except self._errors as exc:
            raise _unavailable(exc) from exc

    async def delete(self, tenant: str, response_id: str) -> bool:
        try:
            deleted = await self._client.delete(self.key(tenant, response_id))
        except self._errors as exc:
            raise _unavailable(exc) from exc
        return bool(deleted)

    def conversation_key(self, tenant: str, conversation_id: str) -> str:
        """The key of a conversation's object; its item ids and items add ``:ids``, ``:items``.
        ``conv:`` cannot be confused with a response key (32 hex digits) or ``item:``."""
        return f"{self._prefix}conv:{_digest(tenant)}:{conversation_id}"

    async def create_conversation(
        self, tenant: str, conversation: dict[str, Any], items: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if len(items) > self._max_conversation_items:
            raise ConversationFullError(conversation["id"], self._max_conversation_items)
        stored = unique_item_ids(items)
        key = self.conversation_key(tenant, conversation["id"])
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(key, orjson.dumps(conversation), px=self._ttl_ms)
                pipe.delete(f"{key}:ids", f"{key}:items")
                self._queue_items(pipe, key, stored)
                await pipe.execute()
        except self._errors as exc:
            raise _unavailable(exc) from exc
        return stored

    async def get_conversation(self, tenant: str, conversation_id: str) -> dict[str, Any] | None:
        try:
            data = await self._client.get(self.conversation_key(tenant, conversation_id))
        except self._errors as exc:
            raise _unavailable(exc) from exc
        return None if data is None else _loads_object(data)

    async def update_conversation(self, tenant: str, conversation: dict[str, Any]) -> bool:
        key = self.conversation_key(tenant, conversation["id"])
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                # XX: only a live conversation is replaced, never brought back.
                pipe.set(key, orjson.dumps(conversation), px=self._ttl_ms, xx=True)
                pipe.pexpire(f"{key}:ids", self._ttl_ms)
                pipe.pexpire(f"{key}:items", self._ttl_ms)
                replaced, _, _ = await pipe.execute()
        except self._errors as exc:
            raise _unavailable(exc) from exc
        return bool(replaced)

    async def delete_conversation(self, tenant: str, conversation_id: str) -> bool:
        key = self.conversation_key(tenant, conversation_id)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.delete(f"{key}:ids", f"{key}:items")
                deleted, _ = await pipe.execute()
        except self._errors as exc:
            raise _unavailable(exc) from exc
        return bool(deleted)

    async def conversation_items(
        self, tenant: str, conversation_id: str
    ) -> list[dict[str, Any]] | None:
        key = self.conversation_key(tenant, conversation_id)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.exists(key)
                pipe.lrange(f"{key}:ids", 0, -1)
                pipe.hgetall(f"{key}:items")
                exists, ids, items = await pipe.execute()
        except self._errors as exc:
            raise _unavailable(exc) from exc
        if not exists:
            return None
        return [_loads_object(items[i]) for i in ids if i in items]

    async def add_conversation_items(
        self, tenant: str, conversation_id: str, items: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]] | None:
        key = self.conversation_key(tenant, conversation_id)
        keys = [key, f"{key}:ids", f"{key}:items"]
        stored = unique_item_ids(items)
        try:
            while True:
                args: list[Any] = [self._max_conversation_items, self._ttl_ms]
                for item in stored:
                    args += [item["id"], orjson.dumps(item)]
                answer = await self._add_items_script(keys=keys, args=args)
                if answer == -1:
                    return None
                if answer == -2:
                    raise ConversationFullError(conversation_id, self._max_conversation_items)
                if not answer:
                    return stored
                # Some ids are the conversation's already: fresh ones, and again (another
                # process may take the fresh ones meanwhile, however unlikely).
                stored = unique_item_ids(stored, {i.decode() for i in answer})
        except self._errors as exc:
            raise _unavailable(exc) from exc

    async def delete_conversation_item(
        self, tenant: str, conversation_id: str, item_id: str
    ) -> bool | None:
        key = self.conversation_key(tenant, conversation_id)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.pexpire(key, self._ttl_ms)
                pipe.hdel(f"{key}:items", item_id)
                pipe.lrem(f"{key}:ids", 1, item_id)
                pipe.pexpire(f"{key}:ids", self._ttl_ms)
                pipe.pexpire(f"{key}:items", self._ttl_ms)
                live, deleted, *_ = await pipe.execute()
        except self._errors as exc:
            raise _unavailable(exc) from exc
        if not live:
            return None
        return bool(deleted)

    def _queue_items(self, pipe: Any, key: str, items: list[dict[str, Any]]) -> None:
        if items:
            pipe.rpush(f"{key}:ids", *(item["id"] for item in items))
            pipe.hset(f"{key}:items", mapping={item["id"]: orjson.dumps(item) for item in items})
        pipe.pexpire(f"{key}:ids", self._ttl_ms)
        pipe.pexpire(f"{key}:items", self._ttl_ms)

    def events_key(self, tenant: str, response_id: str) -> str:
        """The Stream holding a background response's events (``:cancel`` flags a cancel)."""
        return f"{self._prefix}events:{_digest(tenant)}:{response_id}"

    async def append_events(
        self, tenant: str, response_id: str, events: Sequence[tuple[int, bytes]]
    ) -> None:
        key = self.events_key(tenant, response_id)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for seq, body in events:
                    # The entry id carries the sequence number, so XREAD resumes after one.
                    pipe.xadd(key, {"e": body}, id=f"1-{seq}", maxlen=_LOG_MAXLEN, approximate=True)
                pipe.pexpire(key, self._ttl_ms)
                await pipe.execute()
        except self._errors as exc:
            raise _unavailable(exc) from exc

    async def events_after(
        self, tenant: str, response_id: str, after: int, wait: float
    ) -> list[tuple[int, bytes]]:
        key = self.events_key(tenant, response_id)
        start = "0-0" if after < 0 else f"1-{after}"
        # Below the client's socket timeout, so that a long block is not taken for a dead
        # connection.
        block = max(0, min(round(wait * 1000), 1000))
        try:
            answer = await self._client.xread({key: start}, block=block or None)
        except self._errors as exc:
            raise _unavailable(exc) from exc
        if not answer:
            return []
        return [(_entry_seq(i), fields[b"e"]) for i, fields in answer[0][1]]

    async def request_cancel(self, tenant: str, response_id: str) -> None:
        try:
            await self._client.set(
                self.events_key(tenant, response_id) + ":cancel", b"1", px=self._ttl_ms
            )
        except self._errors as exc:
            raise _unavailable(exc) from exc

    async def cancel_requested(self, tenant: str, response_id: str) -> bool:
        try:
            found = await self._client.exists(self.events_key(tenant, response_id) + ":cancel")
        except self._errors as exc:
            raise _unavailable(exc) from exc
        return bool(found)

    async def ping(self) -> None:
        # PING goes through the same client, so it has the store's short socket timeouts.
        try:
            await self._client.ping()
        except self._errors as exc:
            raise _unavailable(exc) from exc

    async def aclose(self) -> None:
        await self._client.aclose()


#: Entries a response's Stream keeps (trimmed approximately); the runner bounds a log
#: well below this, so trimming only ever guards against a runaway writer.
_LOG_MAXLEN = 100_000


def _entry_seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[2])


def _digest(tenant: str) -> str:
    return hashlib.blake2b(tenant.encode(), digest_size=16).hexdigest()


def _unavailable(exc: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(f"The Redis response store failed: {exc or type(exc).__name__}")


def _loads_object(data: bytes | str) -> dict[str, Any]:
    obj = orjson.loads(data)
    if not isinstance(obj, dict):
        raise StoreUnavailableError("The Redis store holds a record that is not an object.")
    return obj
