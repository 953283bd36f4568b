"""Continuing a response: the rule for tool outputs, and a WebSocket connection's memory.

``previous_response_id`` means the model sees the earlier response's input and output, then
the new input. A ``function_call_output`` in the new input must answer a call found there:
OpenAI answers 400 otherwise, and a client that gets it knows its chain is broken, where a
quiet repair (the stateless replay path turns such an output into a user message) would
hide that. Stateless requests, with the whole history in ``input``, keep the repair.

``LocalHistory`` is what a WebSocket connection remembers of its own responses, so that a
``store: false`` response can be continued on the same connection. It is bounded in count
and bytes; the oldest entries go first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

import orjson

from ._errors import InvalidRequestError, clip
from ._store_gateway import normalize_input

__all__ = ["LocalHistory", "check_tool_outputs"]

_OUTPUT_TYPES: Final = frozenset({"function_call_output", "custom_tool_call_output"})
_CALL_TYPES: Final = frozenset({"function_call", "custom_tool_call"})


def check_tool_outputs(items: list[dict[str, Any]], new_input: object) -> None:
    """Raise 400 for a tool output in ``new_input`` that answers no call in ``items``.

    Args:
        items: The whole input of a continuation: the earlier turns, then the new input.
        new_input: The request's own ``input``; only its tool outputs are checked.

    Raises:
        InvalidRequestError: a ``function_call_output`` (or custom tool output) names a
            ``call_id`` of no call in ``items`` (``param`` is ``input``).
    """
    new_items = normalize_input(new_input)
    if not any(item.get("type") in _OUTPUT_TYPES for item in new_items):
        return
    calls = {item.get("call_id") for item in items if item.get("type") in _CALL_TYPES}
    for item in new_items:
        if item.get("type") in _OUTPUT_TYPES and item.get("call_id") not in calls:
            call_id = item.get("call_id")
            raise InvalidRequestError(
                f"No tool call found for function call output with call_id {clip(str(call_id))}.",
                param="input",
            )


class LocalHistory:
    """One connection's finished responses: id → the items a continuation starts from.

    Args:
        max_responses: Most responses kept.
        max_bytes: Most bytes kept in all (JSON-encoded); a larger single response is not
            kept at all.
    """

    __slots__ = ("_entries", "_max_bytes", "_max_responses", "_size")

    def __init__(self, *, max_responses: int, max_bytes: int) -> None:
        # Kept encoded: the items a continuation gets are its own copies to translate, and
        # the size bound is the size held.
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._max_responses = max_responses
        self._max_bytes = max_bytes
        self._size = 0

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def items(self, response_id: object) -> list[dict[str, Any]] | None:
        """The input then the output of ``response_id``, or ``None`` when not kept."""
        if not isinstance(response_id, str):
            return None
        entry = self._entries.get(response_id)
        if entry is None:
            return None
        self._entries.move_to_end(response_id)
        items: list[dict[str, Any]] = orjson.loads(entry)
        return items

    def keep(
        self, response_id: str, input_items: list[dict[str, Any]], response: dict[str, Any]
    ) -> None:
        """Remember a finished response, dropping the oldest ones past the bounds."""
        output = response.get("output")
        encoded = orjson.dumps([*input_items, *(output if isinstance(output, list) else ())])
        self.evict(response_id)
        if len(encoded) > self._max_bytes:
            return
        self._entries[response_id] = encoded
        self._size += len(encoded)
        while len(self._entries) > self._max_responses or self._size > self._max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._size -= len(dropped)

    def evict(self, response_id: object) -> None:
        """Forget ``response_id`` (a continuation from it failed)."""
        if isinstance(response_id, str):
            entry = self._entries.pop(response_id, None)
            if entry is not None:
                self._size -= len(entry)
