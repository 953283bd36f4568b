"""The ``memory://`` store: one process's bounded LRU, for a single worker or tests."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson

from ._protocol import (
    ConversationFullError,
    NotStored,
    StoredResponse,
    decode_record,
    encode_bounded,
    find_items,
    unique_item_ids,
)

__all__ = ["MemoryStore"]


@dataclass
class _Conversation:
    # Encoded, like responses: exact byte accounting, and callers cannot mutate what is kept.
    body: bytes
    items: dict[str, bytes] = field(default_factory=dict)
    size: int = 0

    def add(self, items: Sequence[dict[str, Any]]) -> None:
        for item in items:
            data = orjson.dumps(item)
            self.items[item["id"]] = data
            self.size += len(data)


@dataclass
class _Log:
    events: list[tuple[int, bytes]] = field(default_factory=list)
    expires_at: float = 0.0
    grown: anyio.Event | None = None


class MemoryStore:
    """An in-process LRU bounded by count and total bytes, with one TTL for every entry.

    Entries are kept encoded, which makes the byte accounting exact and means callers can never
    mutate what is stored. All operations are O(1) (amortised for the expiry sweep; ``put``
    and removal are linear in the response's item count, for the item index). Visible only to
    the process that holds it: use SQLite or Redis when several workers share state.

    Conversations are kept beside the responses, bounded by the same count and byte limits
    (separately), and expire ``ttl`` seconds after their last change.
    """

    def __init__(
        self,
        *,
        ttl: float,
        max_responses: int,
        max_bytes: int,
        max_response_bytes: int,
        max_conversation_items: int = 1000,
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
        # Conversations, bounded by the same count and byte limits as responses but apart
        # from them: recency order for LRU eviction, and last-change order for expiry (a
        # change renews a conversation's TTL, so it moves to the end).
        self._max_conversation_items = max_conversation_items
        self._conversations: OrderedDict[tuple[str, str], _Conversation] = OrderedDict()
        self._conversation_expiry: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._conversation_bytes = 0
        # Background responses' event logs, each with its expiry and the event its readers
        # wait on (replaced by a fresh one at every append); and the cancellations asked for.
        self._logs: dict[tuple[str, str], _Log] = {}
        self._cancelled: set[tuple[str, str]] = set()

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
        return find_items(records, wanted)

    async def put(self, tenant: str, stored: StoredResponse) -> None:
        data, item_ids = encode_bounded(stored, self._max_response_bytes)
        if len(data) > self._max_bytes:
            data, item_ids = encode_bounded(stored, self._max_bytes, "store_max_bytes")
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

    # --- conversations ------------------------------------------------------------------

    async def create_conversation(
        self, tenant: str, conversation: dict[str, Any], items: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        conversation_id = conversation["id"]
        if len(items) > self._max_conversation_items:
            raise ConversationFullError(conversation_id, self._max_conversation_items)
        stored = unique_item_ids(items)
        entry = _Conversation(orjson.dumps(conversation))
        entry.add(stored)
        key = (tenant, conversation_id)
        self._drop_conversation(key)
        self._conversations[key] = entry
        self._conversation_bytes += len(entry.body) + entry.size
        self._renew(key)
        return stored

    async def get_conversation(self, tenant: str, conversation_id: str) -> dict[str, Any] | None:
        entry = self._live_conversation((tenant, conversation_id))
        return None if entry is None else orjson.loads(entry.body)

    async def update_conversation(self, tenant: str, conversation: dict[str, Any]) -> bool:
        key = (tenant, conversation["id"])
        entry = self._live_conversation(key)
        if entry is None:
            return False
        body = orjson.dumps(conversation)
        self._conversation_bytes += len(body) - len(entry.body)
        entry.body = body
        self._renew(key)
        return True

    async def delete_conversation(self, tenant: str, conversation_id: str) -> bool:
        key = (tenant, conversation_id)
        live = self._live_conversation(key) is not None
        self._drop_conversation(key)
        return live

    async def conversation_items(
        self, tenant: str, conversation_id: str
    ) -> list[dict[str, Any]] | None:
        entry = self._live_conversation((tenant, conversation_id))
        if entry is None:
            return None
        return [orjson.loads(data) for data in entry.items.values()]

    async def add_conversation_items(
        self, tenant: str, conversation_id: str, items: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]] | None:
        key = (tenant, conversation_id)
        entry = self._live_conversation(key)
        if entry is None:
            return None
        if len(entry.items) + len(items) > self._max_conversation_items:
            raise ConversationFullError(conversation_id, self._max_conversation_items)
        stored = unique_item_ids(items, set(entry.items))
        before = entry.size
        entry.add(stored)
        self._conversation_bytes += entry.size - before
        self._renew(key)
        return stored

    async def delete_conversation_item(
        self, tenant: str, conversation_id: str, item_id: str
    ) -> bool | None:
        key = (tenant, conversation_id)
        entry = self._live_conversation(key)
        if entry is None:
            return None
        # Renewed even when the item is not there, as the other backends do.
        self._renew(key)
        data = entry.items.pop(item_id, None)
        if data is None:
            return False
        entry.size -= len(data)
        self._conversation_bytes -= len(data)
        return True

    def _live_conversation(self, key: tuple[str, str]) -> _Conversation | None:
        entry = self._conversations.get(key)
        if entry is None:
            return None
        if self._conversation_expiry[key] <= self._clock():
            self._drop_conversation(key)
            return None
        self._conversations.move_to_end(key)
        return entry

    def _renew(self, key: tuple[str, str]) -> None:
        now = self._clock()
        self._conversation_expiry[key] = now + self._ttl
        self._conversation_expiry.move_to_end(key)
        self._conversations.move_to_end(key)
        while self._conversation_expiry:
            oldest, expires_at = next(iter(self._conversation_expiry.items()))
            if expires_at > now:
                break
            self._drop_conversation(oldest)
        while (
            len(self._conversations) > self._max_responses
            or self._conversation_bytes > self._max_bytes
        ) and len(self._conversations) > 1:
            self._drop_conversation(next(iter(self._conversations)))

    def _drop_conversation(self, key: tuple[str, str]) -> None:
        entry = self._conversations.pop(key, None)
        if entry is not None:
            del self._conversation_expiry[key]
            self._conversation_bytes -= len(entry.body) + entry.size

    async def ping(self) -> None:
        # Memory is there as long as the process is.
        return

    async def aclose(self) -> None:
        self._conversations.clear()
        self._conversation_expiry.clear()
        self._conversation_bytes = 0
        self._entries.clear()
        self._expiry.clear()
        self._items.clear()
        self._entry_items.clear()
        self._bytes = 0

    async def append_events(
        self, tenant: str, response_id: str, events: Sequence[tuple[int, bytes]]
    ) -> None:
        now = self._clock()
        self._sweep_logs(now)
        log = self._logs.setdefault((tenant, response_id), _Log())
        log.events.extend(events)
        log.expires_at = now + self._ttl
        if log.grown is not None:
            log.grown.set()
            log.grown = None

    async def events_after(
        self, tenant: str, response_id: str, after: int, wait: float
    ) -> list[tuple[int, bytes]]:
        key = (tenant, response_id)
        now = self._clock()
        log = self._logs.get(key)
        if log is None or log.expires_at <= now:
            if wait <= 0:
                return []
            # A reader may come before the first event: it waits on an empty log.
            log = self._logs[key] = _Log(expires_at=now + self._ttl)
        found = [e for e in log.events if e[0] > after]
        if found or wait <= 0:
            return found
        if log.grown is None:
            log.grown = anyio.Event()
        with anyio.move_on_after(wait):
            await log.grown.wait()
        return [e for e in log.events if e[0] > after]

    async def request_cancel(self, tenant: str, response_id: str) -> None:
        self._cancelled.add((tenant, response_id))

    async def cancel_requested(self, tenant: str, response_id: str) -> bool:
        return (tenant, response_id) in self._cancelled

    def _sweep_logs(self, now: float) -> None:
        for key in [k for k, log in self._logs.items() if log.expires_at <= now]:
            del self._logs[key]
            self._cancelled.discard(key)

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
