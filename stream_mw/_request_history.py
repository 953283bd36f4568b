"""Responses input items → Chat ``messages``, with the tool conversation repaired.

``_History`` reads the input items of a validated request in order and builds the Chat
messages. Replayed history is repaired rather than rejected (``design.md``), because Codex and
the Agents SDK resend whatever they have and strict backends (vLLM, Mistral, OpenAI itself)
answer 400 to a malformed tool conversation:

- Consecutive ``function_call`` / ``custom_tool_call`` items, and the assistant text just
  before them, become one assistant message with ``tool_calls``.
- Every tool call is answered before the next user or assistant turn: a call without an output
  gets a synthetic tool message saying no output was recorded.
- An output whose call is not in the conversation (the client trimmed or compacted its history)
  becomes a ``user`` message quoting it. A bare tool message would be rejected, and dropping it
  would hide from the model what the tool returned.
- System/developer messages and such quoted outputs that arrive while calls still await their
  outputs are held back until those outputs are written, because a ``tool_calls`` message must
  be followed directly by its tool messages.

Reasoning items are passed back as the next assistant message's ``reasoning_content`` (a
sealed ``encrypted_content`` of ours is opened for it), a compaction item of ours becomes a
user message holding its summary, and MCP items become the function calls and results the
backend made and read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from ._errors import InvalidRequestError
from ._mcp._plan import function_name_for
from ._observe import logger
from ._request_content import (
    _PART_SEPARATOR,
    _assistant_content,
    _tool_output_text,
    _user_content,
)
from ._sealed import PREFIX, SealError, compaction_tenant, open_reasoning, reasoning_key
from ._settings import Settings
from ._tools import ToolMap

if TYPE_CHECKING:
    from ._mcp._plan import McpPlan

#: What a ``compaction`` item made here becomes for the Chat backend: a user message with
#: this, then the summary.
COMPACTION_PREAMBLE: Final = "Summary of the conversation so far:\n\n"

#: What the backend reads for an MCP call the user declined (then the reason, if given).
MCP_DECLINED: Final = "The user declined this call; it was not run."

_NO_OUTPUT: Final = "No output was recorded for this call."


class _History:
    """Builds Chat ``messages`` from Responses input items, repairing the tool conversation."""

    __slots__ = (
        "_dropped",
        "_held",
        "_mcp",
        "_open",
        "_reasoning",
        "_settings",
        "_tenant",
        "_tool_map",
        "answers",
        "messages",
    )

    def __init__(
        self, settings: Settings, tool_map: ToolMap, tenant: str, mcp: McpPlan | None = None
    ) -> None:
        self._settings = settings
        self._tool_map = tool_map
        self._tenant = tenant
        self._mcp = mcp
        #: The input's answers to MCP approval requests: ``approve`` and ``reason`` by
        #: request id.
        self.answers: dict[str, tuple[bool, str | None]] = {}
        self.messages: list[dict[str, Any]] = []
        # Call ids of the last assistant message that still await an output (a dict keeps order).
        self._open: dict[str, None] = {}
        # Messages that must wait until every open call is answered.
        self._held: list[dict[str, Any]] = []
        # Replayed reasoning waiting for the assistant message it belongs to.
        self._reasoning: list[str] = []
        self._dropped: Counter[str] = Counter()

    def add(self, item: Mapping[str, Any], path: str) -> None:
        kind = item.get("type") or "message"
        if kind == "message":
            self._add_message(item, path)
        elif kind == "function_call":
            name = self._tool_map.chat_name(item["name"], namespace=item.get("namespace"))
            self._add_call(item["call_id"], name, item["arguments"] or "{}")
        elif kind == "custom_tool_call":
            name = self._tool_map.chat_name(
                item["name"], namespace=item.get("namespace"), kind="custom"
            )
            arguments = orjson.dumps({"input": item["input"]}).decode()
            self._add_call(item["call_id"], name, arguments)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self._add_output(item, _tool_output_text(item["output"]))
        elif kind == "reasoning":
            self._add_reasoning(item, path)
        elif kind == "compaction":
            self._add_compaction(item, path)
        elif kind == "mcp_call":
            self._add_mcp_call(item, path)
        elif kind == "mcp_approval_request":
            answer = self.answers.get(item["id"])
            if answer is not None and not answer[0]:
                # The model asked and was refused: it must learn so, or it asks again.
                call_id = item["id"]
                self._add_call(call_id, self._mcp_function(item), item["arguments"] or "{}")
                reason = answer[1]
                text = f"{MCP_DECLINED} Reason: {reason}" if reason else MCP_DECLINED
                self._add_output({"call_id": call_id}, text)
            # Approved: the MCP tool loop runs the call and records it as an mcp_call item;
            # unanswered: nothing happened yet, so the backend sees nothing.
        elif kind in ("mcp_list_tools", "mcp_approval_response"):
            pass  # what the listing offered reaches the backend as its tools
        elif kind == "item_reference":
            # The middleware's store resolves references before translation; one still here
            # names an item nobody looked up, and dropping it would cut the conversation.
            raise InvalidRequestError(
                f"'{path}' is an item_reference, which only a response store can resolve; "
                "send the item itself.",
                param=path,
            )
        else:
            self._dropped[kind] += 1

    def finish(self) -> None:
        self._close_batch()
        if self._reasoning:
            self._dropped["reasoning (no assistant message after it)"] += len(self._reasoning)
            self._reasoning.clear()
        if self._dropped:
            logger.debug(
                "Dropped input items with no Chat Completions equivalent: %s",
                ", ".join(f"{kind} x{count}" for kind, count in self._dropped.items()),
            )

    def _add_message(self, item: Mapping[str, Any], path: str) -> None:
        role = item["role"]
        content = item["content"]
        if role == "assistant":
            self._close_batch()
            text, refusal = _assistant_content(content)
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if refusal is not None:
                message["refusal"] = refusal
            self._attach_reasoning(message)
            self.messages.append(message)
        elif role == "user":
            self._close_batch()
            if self._reasoning:
                self._dropped["reasoning (no assistant message after it)"] += len(self._reasoning)
                self._reasoning.clear()
            self.messages.append({"role": "user", "content": _user_content(content, path)})
        else:
            converted = _user_content(content, path)
            if not converted:
                self._dropped[f"empty {role} message"] += 1
                return
            chat_role = "system" if role == "system" else self._settings.developer_role
            self._emit({"role": chat_role, "content": converted})

    def _mcp_function(self, item: Mapping[str, Any]) -> str:
        """The Chat function name of an MCP tool named by a replayed item: the one it is
        offered under now, or the name it would have (a tool no longer offered)."""
        label, name = item["server_label"], item["name"]
        tool = self._mcp.find(label, name) if self._mcp is not None else None
        return tool.function_name if tool is not None else function_name_for(label, name)

    def _add_mcp_call(self, item: Mapping[str, Any], path: str) -> None:
        # (An item replayed without its id still needs one to pair the call with its result.)
        call_id = item.get("id") or "mcp_" + path.replace("[", "_").rstrip("]")
        self._add_call(call_id, self._mcp_function(item), item["arguments"] or "{}")
        output, error = item.get("output"), item.get("error")
        if error is not None:
            self._add_output({"call_id": call_id}, f"Error: {_mcp_error_text(error)}")
        elif output is not None:
            self._add_output({"call_id": call_id}, output)
        # Neither: the call never returned; the batch's end answers it as having no output.

    def _add_call(self, call_id: str, name: str, arguments: str) -> None:
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant":
            self._close_batch()
            last = {"role": "assistant", "content": None}
            self.messages.append(last)
        elif last["content"] == "":
            last["content"] = None
        self._attach_reasoning(last)
        calls: list[dict[str, Any]] = last.setdefault("tool_calls", [])
        if call_id in self._open or any(call["id"] == call_id for call in calls):
            self._dropped["function_call (repeated call_id)"] += 1
            return
        calls.append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        )
        self._open[call_id] = None

    def _add_output(self, item: Mapping[str, Any], text: str) -> None:
        call_id = item["call_id"]
        if call_id in self._open:
            del self._open[call_id]
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
            if not self._open:
                self._flush_held()
            return
        logger.debug("Tool output for call_id %s has no open call; sent as a user message", call_id)
        tool = item.get("name")
        label = (
            f"tool '{tool}' (call_id {call_id})" if isinstance(tool, str) else f"call_id {call_id}"
        )
        self._emit(
            {
                "role": "user",
                "content": f"[Output of {label}; the call itself is not in this conversation]\n{text}",
            }
        )

    def _add_reasoning(self, item: Mapping[str, Any], path: str) -> None:
        if not self._settings.reasoning_passback:
            # Nothing of the item reaches the model, so its token is not checked either: Codex
            # replays every reasoning item it ever got, and a session must not break with a 400
            # because the gateway restarted with a new per-process key.
            self._dropped["reasoning"] += 1
            return
        sealed = item.get("encrypted_content")
        restored = None if sealed is None else self._unseal(sealed, path)
        if restored:
            # The token holds exactly what the model wrote, whatever the visible parts say.
            self._reasoning.append(restored)
            return
        # Raw reasoning is what the model wrote; the summary is the fallback.
        for key in ("content", "summary"):
            parts = [part["text"] for part in item.get(key) or () if part["text"]]
            if parts:
                self._reasoning.append(_PART_SEPARATOR.join(parts))
                return

    def _add_compaction(self, item: Mapping[str, Any], path: str) -> None:
        sealed = item.get("encrypted_content")
        if not isinstance(sealed, str) or not sealed.startswith(PREFIX):
            # Another server's compaction (OpenAI's) holds nothing a Chat backend can read.
            self._dropped["compaction"] += 1
            return
        summary = self._unseal(sealed, path, tenant=compaction_tenant(self._tenant))
        self._close_batch()
        self.messages.append({"role": "user", "content": COMPACTION_PREAMBLE + summary})

    def _unseal(self, token: str, path: str, *, tenant: str | None = None) -> str:
        settings = self._settings
        try:
            return open_reasoning(
                token,
                key=reasoning_key(settings.reasoning_key),
                tenant=self._tenant if tenant is None else tenant,
                max_bytes=settings.max_request_bytes,
            )
        except SealError as exc:
            raise InvalidRequestError(
                f"The item's encrypted_content cannot be used: {exc}. Send back the reasoning "
                "and compaction items of this server and credential unchanged, or leave "
                "encrypted_content out.",
                param=f"{path}.encrypted_content",
                code="invalid_encrypted_content",
            ) from None

    def _attach_reasoning(self, message: dict[str, Any]) -> None:
        if not self._reasoning:
            return
        joined = _PART_SEPARATOR.join(self._reasoning)
        self._reasoning.clear()
        earlier = message.get("reasoning_content")
        message["reasoning_content"] = f"{earlier}{_PART_SEPARATOR}{joined}" if earlier else joined

    def _emit(self, message: dict[str, Any]) -> None:
        if self._open:
            self._held.append(message)
        else:
            self.messages.append(message)

    def _close_batch(self) -> None:
        for call_id in self._open:
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": _NO_OUTPUT})
        self._open.clear()
        self._flush_held()

    def _flush_held(self) -> None:
        if self._held:
            self.messages.extend(self._held)
            self._held.clear()


def _approval_answers(items: Sequence[Any]) -> dict[str, tuple[bool, str | None]]:
    """The ``mcp_approval_response`` items of an input: ``(approve, reason)`` by request id."""
    return {
        item["approval_request_id"]: (item["approve"], item.get("reason"))
        for item in items
        if isinstance(item, Mapping) and item.get("type") == "mcp_approval_response"
    }


def _mcp_error_text(error: str | Mapping[str, Any]) -> str:
    """An ``mcp_call``'s ``error`` as text for the model: a message, the text blocks of a
    tool's error result, or the object as JSON."""
    if isinstance(error, str):
        return error
    message = error.get("message")
    if isinstance(message, str) and message:
        return message
    content = error.get("content")
    if isinstance(content, list):
        texts = [
            block["text"]
            for block in content
            if isinstance(block, Mapping) and isinstance(block.get("text"), str)
        ]
        if texts:
            return _PART_SEPARATOR.join(texts)
    return orjson.dumps(error).decode()
