"""The writer of Responses stream events: sequence numbers, event shapes, SSE framing.

Theory of operation
-------------------
The state machine (``_state.py``) decides *which* event comes next; this module decides what
it looks like on the wire. It knows nothing of Chat Completions and nothing of which item is
open: every method appends one or more complete SSE events (``event: …\\ndata: …\\n\\n``) to
``out`` and gives each the next ``sequence_number``, starting at 0 and rising by 1
(Guarantee 4). ``take()`` hands the bytes written so far to the caller.

Deltas are the hot path. When an item or content part opens, ``delta_template`` fixes
everything about its delta events but the sequence number and the delta (event name, item
id, output index, content or summary index) in one ``%``-template, so one delta costs one
``orjson.dumps`` of a string and one formatting operation. Lifecycle events (created,
in_progress, the terminal event) carry a full Response snapshot; the in-progress snapshot is
encoded once at ``start()`` and repeated by ``keepalive()``.

The ``error`` event (``Settings.error_event``) carries its fields both flat and nested under
``error``: the openai SDKs' ``ResponseErrorEvent`` model reads ``code``/``message``/``param``
at the top, while openai-python's stream reader raises ``APIError`` only when the event has an
``error`` object, which the Open Responses schema also requires (``{type, code, message,
param}``). Each reader ignores the other's keys, so one event with both satisfies them all.
"""

from __future__ import annotations

from typing import Any

import orjson

from ._errors import UpstreamError
from ._sse import encode_event

__all__ = ["EventWriter", "Template", "delta_template"]

_dumps = orjson.dumps
_DONE_MARKER = b"data: [DONE]\n\n"

#: A delta event with everything fixed but ``(sequence_number, json(delta))``; opaque to
#: the state machine, which only keeps it beside the item it belongs to.
Template = bytes

# The nested error's ``type`` for a code, as the middleware's HTTP error bodies name it.
_ERROR_TYPES = {
    "context_length_exceeded": "invalid_request_error",
    "invalid_prompt": "invalid_request_error",
    "rate_limit_exceeded": "rate_limit_error",
    "insufficient_quota": "rate_limit_error",
}


def delta_template(
    event_type: str,
    item_id: str,
    output_index: int,
    index_name: str | None = None,
    index: int = 0,
    tail: str = "}",
) -> Template:
    """A delta event as a ``%``-template: ``template % (sequence_number, json(delta))``
    (``tail`` may add a third ``%s``, as the logprobs template does)."""
    fixed = f',"item_id":{_dumps(item_id).decode()},"output_index":{output_index}'
    if index_name is not None:
        fixed += f',"{index_name}":{index}'
    head = f'event: {event_type}\ndata: {{"type":"{event_type}","sequence_number":'
    template = head.replace("%", "%%") + "%d" + fixed.replace("%", "%%") + ',"delta":%s'
    return (template + tail + "\n\n").encode()


def error_event_fields(error: UpstreamError) -> dict[str, Any]:
    """The ``error`` event's fields, flat and nested at once (see the module docstring)."""
    return {
        "code": error.code,
        "message": error.message,
        "param": None,
        "error": {
            "type": _ERROR_TYPES.get(error.code, "server_error"),
            "code": error.code,
            "message": error.message,
            "param": None,
        },
    }


class EventWriter:
    """Responses events as SSE bytes, numbered in the order they are written."""

    __slots__ = ("_done_marker", "_snapshot", "out", "seq")

    def __init__(self, *, done_marker: bool) -> None:
        self._done_marker = done_marker
        #: The bytes written since the last ``take()``.
        self.out: list[bytes] = []
        #: The next sequence number.
        self.seq = 0
        self._snapshot = b""

    def take(self) -> bytes:
        out = self.out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    # --- the hot path ---------------------------------------------------------------------

    def delta(self, template: Template, text: str) -> None:
        seq = self.seq
        self.seq = seq + 1
        self.out.append(template % (seq, _dumps(text)))

    def deltas(self, template: Template, texts: list[str]) -> None:
        """One delta event per text, in order."""
        seq = self.seq
        self.seq = seq + len(texts)
        self.out += [template % (n, _dumps(text)) for n, text in enumerate(texts, seq)]

    def delta_now(self, template: Template, text: str) -> bytes:
        """A delta event returned at once rather than written (nothing else is pending)."""
        seq = self.seq
        self.seq = seq + 1
        return template % (seq, _dumps(text))

    def delta_with_logprobs(
        self, template: Template, text: str, logprobs: list[dict[str, Any]]
    ) -> None:
        seq = self.seq
        self.seq = seq + 1
        self.out.append(template % (seq, _dumps(text), _dumps(logprobs)))

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, snapshot: dict[str, Any]) -> None:
        """``response.created`` and ``response.in_progress`` with the in-progress object."""
        self._snapshot = _dumps(snapshot)
        self._lifecycle("response.created", self._snapshot)
        self._lifecycle("response.in_progress", self._snapshot)

    def keepalive(self) -> None:
        """One more ``response.in_progress`` (SSE comments do not reset Codex's idle timer)."""
        self._lifecycle("response.in_progress", self._snapshot)

    def terminal(self, event_type: str, response: dict[str, Any]) -> None:
        """The terminal event, then ``[DONE]`` when the settings ask for it."""
        self._lifecycle(event_type, _dumps(response))
        if self._done_marker:
            self.out.append(_DONE_MARKER)

    def error(self, error: UpstreamError) -> None:
        self.emit("error", error_event_fields(error))

    def _lifecycle(self, event_type: str, response_json: bytes) -> None:
        seq = self.seq
        self.seq = seq + 1
        name = event_type.encode()
        self.out.append(
            b'event: %s\ndata: {"type":"%s","sequence_number":%d,"response":%s}\n\n'
            % (name, name, seq, response_json)
        )

    # --- items and parts ------------------------------------------------------------------

    def emit(self, event_type: str, fields: dict[str, Any]) -> None:
        """Any event: its ``type`` and ``sequence_number`` first, then ``fields`` in order."""
        seq = self.seq
        self.seq = seq + 1
        body = {"type": event_type, "sequence_number": seq}
        body.update(fields)
        self.out.append(encode_event(event_type, _dumps(body)))

    def item_added(self, output_index: int, item: dict[str, Any]) -> None:
        self.emit("response.output_item.added", {"output_index": output_index, "item": item})

    def item_done(self, output_index: int, item: dict[str, Any]) -> None:
        self.emit("response.output_item.done", {"output_index": output_index, "item": item})

    def part_added(
        self, item_id: str, output_index: int, content_index: int, part: dict[str, Any]
    ) -> None:
        self.emit(
            "response.content_part.added",
            {
                "item_id": item_id,
                "output_index": output_index,
                "content_index": content_index,
                "part": part,
            },
        )

    def part_done(
        self, item_id: str, output_index: int, content_index: int, part: dict[str, Any]
    ) -> None:
        self.emit(
            "response.content_part.done",
            {
                "item_id": item_id,
                "output_index": output_index,
                "content_index": content_index,
                "part": part,
            },
        )

    def text_done(
        self,
        item_id: str,
        output_index: int,
        content_index: int,
        text: str,
        logprobs: list[dict[str, Any]],
    ) -> None:
        self.emit(
            "response.output_text.done",
            {
                "item_id": item_id,
                "output_index": output_index,
                "content_index": content_index,
                "text": text,
                "logprobs": logprobs,
            },
        )

    def refusal_done(self, item_id: str, output_index: int, content_index: int, text: str) -> None:
        self.emit(
            "response.refusal.done",
            {
                "item_id": item_id,
                "output_index": output_index,
                "content_index": content_index,
                "refusal": text,
            },
        )

    def annotation_added(
        self,
        item_id: str,
        output_index: int,
        content_index: int,
        annotation_index: int,
        annotation: dict[str, Any],
    ) -> None:
        self.emit(
            "response.output_text.annotation.added",
            {
                "item_id": item_id,
                "output_index": output_index,
                "content_index": content_index,
                "annotation_index": annotation_index,
                "annotation": annotation,
            },
        )

    def reasoning_part_added(self, summary: bool, item_id: str, output_index: int) -> None:
        """The one content part (``reasoning_text``) or summary part of a reasoning item."""
        where = {"item_id": item_id, "output_index": output_index}
        if summary:
            self.emit(
                "response.reasoning_summary_part.added",
                {**where, "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
            )
        else:
            self.emit(
                "response.content_part.added",
                {**where, "content_index": 0, "part": {"type": "reasoning_text", "text": ""}},
            )

    def reasoning_done(self, summary: bool, item_id: str, output_index: int, text: str) -> None:
        """The text done and part done events of a reasoning item."""
        where = {"item_id": item_id, "output_index": output_index}
        if summary:
            self.emit(
                "response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": text}
            )
            self.emit(
                "response.reasoning_summary_part.done",
                {**where, "summary_index": 0, "part": {"type": "summary_text", "text": text}},
            )
        else:
            self.emit("response.reasoning_text.done", {**where, "content_index": 0, "text": text})
            self.emit(
                "response.content_part.done",
                {**where, "content_index": 0, "part": {"type": "reasoning_text", "text": text}},
            )

    def arguments_done(self, item_id: str, output_index: int, name: str, arguments: str) -> None:
        self.emit(
            "response.function_call_arguments.done",
            {
                "item_id": item_id,
                "output_index": output_index,
                "name": name,
                "arguments": arguments,
            },
        )

    def custom_input_delta(self, item_id: str, output_index: int, delta: str) -> None:
        self.emit(
            "response.custom_tool_call_input.delta",
            {"item_id": item_id, "output_index": output_index, "delta": delta},
        )

    def custom_input_done(self, item_id: str, output_index: int, text: str) -> None:
        self.emit(
            "response.custom_tool_call_input.done",
            {"item_id": item_id, "output_index": output_index, "input": text},
        )

    def item_event(self, event_type: str, item_id: str, output_index: int) -> None:
        """An event that only names its item (``response.mcp_call.in_progress``,
        ``response.mcp_list_tools.completed``...)."""
        self.emit(event_type, {"item_id": item_id, "output_index": output_index})

    def mcp_arguments_done(self, item_id: str, output_index: int, arguments: str) -> None:
        self.emit(
            "response.mcp_call_arguments.done",
            {"item_id": item_id, "output_index": output_index, "arguments": arguments},
        )
