"""The output items the state machine keeps, and the decoder of a custom tool's input.

Theory of operation
-------------------
``_state.Translator`` decides when an item opens and closes; the records here hold what each
item has received so far, so that the state machine can be read as moves alone:

- ``Part`` (an ``output_text`` or ``refusal`` content part), ``Message`` (its parts, the
  open one), ``Reasoning`` and ``Call`` (a function or custom tool call, around the reader's
  ``ChatCall``, which keeps its arguments). Each carries the ``%``-template of its delta
  event, made once when the item opens, so the writer frames a delta without building it.
- Text is kept as a list of fragments and joined once, on first read (``joined``): a delta
  costs an append, and the snapshot and the terminal response cost one join.
- ``McpCall`` is an ``mcp_call`` the gateway runs itself: its arguments (from the model's
  call, or given whole for a call approved on an earlier turn), then the server's result;
  ``Whole`` is an item complete when it is announced (``mcp_list_tools``,
  ``mcp_approval_request``).
- ``as_dict`` gives the item as the Responses API shows it; a custom call shows only the
  input its deltas carried until its done events, and the input decoded from its final
  arguments after.
- ``InputDecoder`` turns a custom tool's arguments, ``{"input": "..."}`` arriving in JSON
  fragments, into the decoded text for ``custom_tool_call_input.delta`` as it streams.

Nothing here writes events: the records are data, and the decoder is a pure function of the
fragments it was fed.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson

from ._events import Template
from ._facts import ChatCall
from ._items import (
    custom_input_of,
    custom_tool_call_item,
    function_call_item,
    mcp_call_item,
    message_item,
    output_text_part,
    refusal_part,
)

__all__ = ["Call", "InputDecoder", "McpCall", "Message", "Part", "Reasoning", "Whole", "joined"]

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def joined(chunks: list[str]) -> str:
    """The fragments as one string, joined once and kept joined (later reads are free)."""
    if len(chunks) > 1:
        chunks[:] = ["".join(chunks)]
    return chunks[0] if chunks else ""


class Part:
    """One content part of a message: ``output_text`` or ``refusal``."""

    __slots__ = ("annotations", "chunks", "index", "kind", "logprobs", "template", "template_lp")

    def __init__(self, kind: Literal["output_text", "refusal"], index: int) -> None:
        self.kind = kind
        self.index = index
        self.chunks: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.template: Template = b""
        # The delta template with the delta's logprobs (a third ``%s``).
        self.template_lp: Template = b""

    def text(self) -> str:
        return joined(self.chunks)

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "refusal":
            return refusal_part(self.text())
        return output_text_part(self.text(), self.annotations, self.logprobs)


class Message:
    __slots__ = ("id", "index", "part", "parts", "status")

    def __init__(self, item_id: str, index: int) -> None:
        self.id = item_id
        self.index = index
        self.parts: list[Part] = []
        self.part: Part | None = None
        self.status = "in_progress"

    def as_dict(self) -> dict[str, Any]:
        return message_item(self.id, self.status, [p.as_dict() for p in self.parts])


class Reasoning:
    __slots__ = ("chunks", "id", "index", "sealed", "status", "template")

    def __init__(self, item_id: str, index: int) -> None:
        self.id = item_id
        self.index = index
        self.chunks: list[str] = []
        self.template: Template = b""
        self.status = "in_progress"
        #: The ``encrypted_content`` token, made once when the item is done (if asked for).
        self.sealed: str | None = None

    def text(self) -> str:
        return joined(self.chunks)


class Call:
    """A function or custom tool call item, added once the upstream named the call."""

    __slots__ = (
        "call_id",
        "decoder",
        "done",
        "id",
        "index",
        "source",
        "status",
        "streamed",
        "template",
    )

    def __init__(self, source: ChatCall, item_id: str, index: int, call_id: str) -> None:
        self.source = source
        self.id = item_id
        self.index = index
        self.call_id = call_id
        self.status = "in_progress"
        #: Whether its done events were sent (its arguments are final, or closed by setting).
        self.done = False
        self.decoder = InputDecoder() if source.custom else None
        # The custom-tool input sent so far as deltas.
        self.streamed: list[str] = []
        self.template: Template = b""

    def final_input(self) -> str:
        arguments = joined(self.source.args)
        if self.source.raw_input:
            return arguments
        decoder = self.decoder
        if decoder is not None and decoder.state in (InputDecoder.INSIDE, InputDecoder.CLOSED):
            try:
                _loads(arguments)
            except _JSONDecodeError:
                # Cut short: the input is what could be decoded.
                return "".join(self.streamed)
        return custom_input_of(arguments)

    def as_dict(self) -> dict[str, Any]:
        source = self.source
        if source.custom:
            # Until its done events, a call shows only the input its deltas carried.
            text = self.final_input() if self.done else "".join(self.streamed)
            return custom_tool_call_item(self.id, self.status, self.call_id, source.tool_name, text)
        return function_call_item(
            self.id,
            self.status,
            self.call_id,
            source.tool_name,
            joined(source.args),
            source.namespace,
        )


class McpCall:
    """An ``mcp_call`` item: open from its announcement until the MCP server's result.

    ``source`` is the model's call (its arguments stream in); ``None`` for a call approved on
    an earlier turn, whose ``arguments`` are given whole. ``tool`` is the plan's tool (kept
    opaque here). ``final`` says the arguments are whole (``mcp_call_arguments.done`` sent):
    only then may the call run.
    """

    __slots__ = (
        "approval_request_id",
        "error",
        "final",
        "id",
        "index",
        "label",
        "name",
        "output",
        "source",
        "status",
        "template",
        "tool",
        "whole",
    )

    #: Its arguments stream as they are (no custom tool's input to decode).
    decoder = None

    def __init__(
        self,
        source: ChatCall | None,
        tool: Any,
        item_id: str,
        index: int,
        label: str,
        name: str,
        arguments: str = "",
        approval_request_id: str | None = None,
    ) -> None:
        self.source = source
        self.tool = tool
        self.id = item_id
        self.index = index
        self.label = label
        self.name = name
        self.whole = arguments
        self.approval_request_id = approval_request_id
        self.status = "in_progress"
        self.final = False
        self.output: str | None = None
        self.error: dict[str, Any] | None = None
        self.template: Template = b""

    def arguments(self) -> str:
        return self.whole if self.source is None else joined(self.source.args)

    def as_dict(self) -> dict[str, Any]:
        return mcp_call_item(
            self.id,
            self.status,
            self.label,
            self.name,
            self.arguments(),
            output=self.output,
            error=self.error,
            approval_request_id=self.approval_request_id,
        )


class Whole:
    """An item whole when it is announced: its ``output_item.added`` and ``.done`` carry the
    same object but for ``status``."""

    __slots__ = ("id", "index", "item", "status")

    def __init__(self, item: dict[str, Any], index: int) -> None:
        self.item = item
        self.id: str = item["id"]
        self.index = index
        self.status: str = item["status"]

    def as_dict(self) -> dict[str, Any]:
        return self.item


_INPUT_START = re.compile(r'\s*\{\s*"input"\s*:\s*"')
_INPUT_PREFIX = '{"input":"'
_STRING_BODY = re.compile(r'(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*')
_ESCAPE_PREFIX = re.compile(r"\\(u[0-9a-fA-F]{0,3})?\Z")
_HIGH_SURROGATE_TAIL = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\Z")


class InputDecoder:
    """Streams the ``input`` string of a custom tool's ``{"input": "..."}`` arguments as its
    JSON arrives, so ``custom_tool_call_input.delta`` events carry decoded text.

    Only the canonical layout (``input`` as the first key) is decoded on the fly; anything
    else gives up, and the whole input is sent as one delta when the call ends. An escape or
    a surrogate pair split across fragments is held back until complete.
    """

    SEEKING, INSIDE, CLOSED, GAVE_UP = range(4)

    __slots__ = ("_pending", "state")

    def __init__(self) -> None:
        self.state = self.SEEKING
        self._pending = ""

    def feed(self, fragment: str) -> str:
        if self.state >= self.CLOSED:
            return ""
        text = self._pending + fragment
        self._pending = ""
        if self.state == self.SEEKING:
            match = _INPUT_START.match(text)
            if match is None:
                squeezed = "".join(text.split())
                if len(squeezed) < len(_INPUT_PREFIX) and _INPUT_PREFIX.startswith(squeezed):
                    self._pending = text
                else:
                    self.state = self.GAVE_UP
                return ""
            self.state = self.INSIDE
            text = text[match.end() :]
        body = _STRING_BODY.match(text)
        end = body.end() if body is not None else 0
        rest = text[end:]
        if rest.startswith('"'):
            self.state = self.CLOSED
        elif rest and _ESCAPE_PREFIX.match(rest):
            self._pending = rest
        elif rest:
            self.state = self.GAVE_UP
        piece = text[:end]
        tail = _HIGH_SURROGATE_TAIL.search(piece)
        if tail is not None and self.state == self.INSIDE and _escapes(piece, tail.start()):
            # Half of a surrogate pair: wait for the other half.
            self._pending = piece[tail.start() :] + self._pending
            piece = piece[: tail.start()]
        if not piece:
            return ""
        try:
            decoded: str = _loads(b'"' + piece.encode() + b'"')
        except _JSONDecodeError:
            self.state = self.GAVE_UP
            return ""
        return decoded


def _escapes(text: str, backslash: int) -> bool:
    """Whether the backslash at ``backslash`` starts an escape (is not itself escaped)."""
    count = 0
    while backslash - count - 1 >= 0 and text[backslash - count - 1] == "\\":
        count += 1
    return count % 2 == 0
