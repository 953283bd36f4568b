"""What the stores keep, and the one protocol every backend implements.

- ``StoredResponse``, what is kept per response: the Response object (which echoes
  ``instructions`` and holds the output items) and the full input the model saw, after
  ``previous_response_id`` expansion, normalised to items with ids;
- ``NotStored``, the small tombstone kept instead of a response over the size limit, so that
  a later ``GET`` or ``previous_response_id`` says why it is missing instead of "not found";
- conversations (the Conversations API): a ``conversation`` object (id, ``created_at``,
  ``metadata``) and its items in the order they were added;
- ``Store``, the async, tenant-scoped protocol the memory, SQLite and Redis backends
  implement side by side.

Isolation: every operation takes a tenant key. Keys are ``(tenant, id)``, so another tenant's
id is simply absent and answers 404, exactly like an unknown one.

This module imports no backend, and no backend imports another, so the package has no import
cycles (``tests/store/test_layout.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from .._errors import InvalidRequestError, clip
from .._items import new_id
from .._observe import logger

__all__ = [
    "ConversationFullError",
    "NotStored",
    "Store",
    "StoredResponse",
    "decode_record",
    "encode_bounded",
    "find_items",
    "fresh_item_id",
    "unique_item_ids",
]


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


def find_items(
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


class Store(Protocol):
    """Async, tenant-scoped storage of responses and conversations. Implementations bound
    their size and age.

    Every method raises ``StoreUnavailableError`` when the backend fails. ``put`` keeps a
    ``NotStored`` tombstone (and logs a warning) instead of a response over the per-response
    size limit.

    A conversation expires ``store_ttl`` seconds after its last change (its creation, an
    update, items added or deleted); its items expire with it.
    """

    # --- responses ----------------------------------------------------------------------

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

    # --- conversations ------------------------------------------------------------------

    async def create_conversation(
        self, tenant: str, conversation: dict[str, Any], items: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Store a new conversation (its ``id`` is fresh) holding ``items``; returns them as
        stored (an id repeated among them is replaced by a fresh one).

        Raises:
            ConversationFullError: more items than a conversation may hold (nothing stored).
        """
        ...

    async def get_conversation(self, tenant: str, conversation_id: str) -> dict[str, Any] | None:
        """The live conversation object, else ``None``."""
        ...

    async def update_conversation(self, tenant: str, conversation: dict[str, Any]) -> bool:
        """Replace a live conversation's object (same ``id``); ``False`` if there is none."""
        ...

    async def delete_conversation(self, tenant: str, conversation_id: str) -> bool:
        """Delete the conversation and its items; ``True`` if a live one existed."""
        ...

    async def conversation_items(
        self, tenant: str, conversation_id: str
    ) -> list[dict[str, Any]] | None:
        """Every item of a live conversation, oldest first; ``None`` if there is none."""
        ...

    async def add_conversation_items(
        self, tenant: str, conversation_id: str, items: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]] | None:
        """Append ``items``, all or none; returns them as stored, or ``None`` when there is no
        such live conversation.

        An item whose id the conversation already holds (or that repeats one before it) is
        stored under a fresh id, so that ids stay unique and paging by ``after`` terminates.

        Raises:
            ConversationFullError: the conversation would hold more items than it may.
        """
        ...

    async def delete_conversation_item(
        self, tenant: str, conversation_id: str, item_id: str
    ) -> bool | None:
        """Delete one item: ``True`` if it was there, ``False`` if not, ``None`` if there is
        no such live conversation."""
        ...

    # --- background responses: the event log and cancellation ---------------------------

    async def append_events(
        self, tenant: str, response_id: str, events: Sequence[tuple[int, bytes]]
    ) -> None:
        """Append ``(sequence_number, event JSON)`` pairs to the response's event log, in
        order. The log expires ``store_ttl`` seconds after its last append."""
        ...

    async def events_after(
        self, tenant: str, response_id: str, after: int, wait: float
    ) -> list[tuple[int, bytes]]:
        """The logged events whose sequence number is above ``after``, oldest first; when
        there are none yet, waits up to ``wait`` seconds for some (``[]`` if none came)."""
        ...

    async def request_cancel(self, tenant: str, response_id: str) -> None:
        """Ask the process running the background response to cancel it."""
        ...

    async def cancel_requested(self, tenant: str, response_id: str) -> bool:
        """Whether ``request_cancel`` was called for the response (from any process)."""
        ...

    async def ping(self) -> None:
        """Return when the backend answers (cheaply); raise ``StoreUnavailableError`` when
        it does not. Readiness probes call it."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads. The store is unusable afterwards."""
        ...


def encode_bounded(
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


class ConversationFullError(InvalidRequestError):
    """A conversation would hold more than ``store_max_conversation_items`` items."""

    def __init__(self, conversation_id: str, limit: int) -> None:
        super().__init__(
            f"Conversation '{clip(conversation_id)}' would hold more than {limit} items "
            "(store_max_conversation_items). Start a new conversation, or delete items "
            "from this one.",
            param="items",
            code="conversation_full",
        )
        self.limit = limit


# Prefixes of fresh item ids, by item type, as OpenAI's.
_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
}


def fresh_item_id(kind: object) -> str:
    """A new id for an item of type ``kind``, prefixed as OpenAI prefixes that type."""
    return new_id(_ID_PREFIX.get(kind if isinstance(kind, str) else "", "item"))


def unique_item_ids(
    items: Sequence[dict[str, Any]], taken: set[str] | None = None
) -> list[dict[str, Any]]:
    """``items`` with every id that is missing, in ``taken`` or repeated replaced by a fresh
    one (``taken`` is updated with the ids used)."""
    seen = set() if taken is None else taken
    out: list[dict[str, Any]] = []
    for item in items:
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id or item_id in seen:
            item = {**item, "id": fresh_item_id(item.get("type", "message"))}
            item_id = item["id"]
        seen.add(item_id)
        out.append(item)
    return out
