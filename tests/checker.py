"""The stream invariant checker: one judge of an emitted Responses SSE body, for every tier.

Usage::

    from tests.checker import check_stream

    checked = check_stream(body)                      # raises AssertionError on any violation
    checked.status                                    # "completed" / "incomplete" / "failed"
    checked.items[0].text                             # the text its deltas spelled out
    checked.response["usage"]

``check_stream`` parses the body strictly and replays every event through a small model of
the protocol (``responses-protocol.md`` §1-§4 and the Guarantees in ``design.md``). The first
violation raises ``AssertionError`` naming the event (index, ``sequence_number``, type) and
what was expected. What it checks:

Framing
    Every frame is exactly ``event: <type>\\n`` + ``data: <json>\\n`` + ``\\n``; ``<type>``
    equals the JSON ``type``; the JSON is a compact single-line object (no whitespace outside
    strings); only LF line endings; nothing after the terminal event except an optional
    ``data: [DONE]\\n\\n`` (required or forbidden with ``done_marker=True/False``).
Lifecycle
    ``sequence_number`` is 0, 1, 2, ... on every event; ``response.created`` (status
    in_progress, empty output) first and ``response.in_progress`` second; every lifecycle event
    carries the same ``resp_`` id; exactly one terminal event (completed / incomplete / failed)
    and it is the last event; an ``error`` event may only come right before
    ``response.failed``.
Items and parts
    ``output_item.added`` output_index 0, 1, 2 in order, each item ``in_progress`` with a
    fresh, correctly prefixed id (msg_/rs_/fc_/ctc_, at most 64 characters);
    ``content_part.added`` (and ``reasoning_summary_part.added``) before any delta of that
    part, indexes 0, 1 in order, one open part at a time; deltas only for live (added, not
    done) items and parts; every ``*.done`` text equals its concatenated deltas (text,
    refusal, reasoning text, summary, arguments, custom input); each item closes in order
    (text done, part done, item done) and its ``output_item.done`` item matches what was
    streamed, with the same id and call_id.
MCP items
    ``mcp_list_tools`` (``mcpl_``): added with ``tools: []``, ``in_progress``, then
    ``completed`` or ``failed``, then done (with ``error`` when failed). ``mcp_call``
    (``mcp_``): ``mcp_call.in_progress`` first, argument deltas, ``mcp_call_arguments.done``
    (equal to the added arguments plus the deltas), then ``mcp_call.completed`` or
    ``.failed`` and ``output_item.done`` with the matching status (and ``error`` only when
    failed, in the shape of the SDK's ``McpToolCallError``); a call cut short gets no
    result and is listed ``incomplete``. ``mcp_approval_request`` (``mcpr_``): added whole
    and done at once. An echoed ``mcp`` tool never carries ``headers`` or
    ``authorization``.
Terminal state
    ``completed``: every item done, none incomplete (an ``mcp_call`` may have failed: the
    model was told), no error. ``incomplete``:
    ``incomplete_details.reason`` set. ``failed``: ``error`` is ``{code, message}``. Every
    message and reasoning item is done before the terminal event; a function/custom call gets
    its ``arguments.done`` / ``input.done`` exactly when it gets ``output_item.done``, and
    that only when the terminal is ``response.completed`` (or ``partial_calls_done=True``, the
    opt-in setting): a call cut short gets neither.
    The terminal ``output`` lists every streamed item in output_index order with identical ids;
    done items equal their ``output_item.done`` item; calls never done appear with status
    ``incomplete`` and the streamed arguments. ``usage`` is null or complete (all five fields
    and the details, including ``cache_write_tokens``).
Schema
    Every event, and every Response, item, part and tool inside one, carries each key the
    Open Responses schema requires, with its JSON type, null only where the schema allows it
    (``_SCHEMA``, ``_EVENT_KEYS``): e.g. a function tool without ``strict`` or a reasoning item
    with ``encrypted_content: null`` fails. ``check_response`` applies the same rules (and the
    terminal-state ones) to a Response that was not streamed.

The upstream corpus (``tests/fixtures/streams``) is shared too: ``load_fixtures()`` gives every
recorded Chat Completions stream with its hand-written expectation, and
``check_expectation(checked, fixture.expect)`` compares a checked stream with it, so any tier
that can push upstream bytes through its stack can replay the whole corpus.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FIXTURE_DIR",
    "CheckedItem",
    "CheckedPart",
    "CheckedStream",
    "Fixture",
    "check_event_schema",
    "check_expectation",
    "check_response",
    "check_response_schema",
    "check_stream",
    "load_fixtures",
    "parse_frames",
]

TERMINAL_TYPES = frozenset({"response.completed", "response.incomplete", "response.failed"})
LIFECYCLE_TYPES = TERMINAL_TYPES | {"response.created", "response.in_progress"}
CALL_TYPES = frozenset({"function_call", "custom_tool_call"})
MCP_TYPES = frozenset({"mcp_call", "mcp_list_tools", "mcp_approval_request"})
ITEM_PREFIXES = {
    "message": "msg_",
    "reasoning": "rs_",
    "function_call": "fc_",
    "custom_tool_call": "ctc_",
    "mcp_call": "mcp_",
    "mcp_list_tools": "mcpl_",
    "mcp_approval_request": "mcpr_",
}
# max_messages: the MCP tool loop's bound on rounds (an openai SDK value; Open Responses
# allows any string).
INCOMPLETE_REASONS = frozenset({"max_output_tokens", "content_filter", "max_messages"})
DONE_FRAME = "data: [DONE]"

# A JSON string literal; removing them leaves only structural characters to inspect.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_WHITESPACE = re.compile(r"\s")


@dataclass
class CheckedPart:
    """One content part (``output_text``, ``refusal`` or ``reasoning_text``) or summary part."""

    type: str
    #: The concatenation of the part's deltas.
    text: str = ""
    annotations: list[dict[str, Any]] = field(default_factory=list)
    #: Logprobs carried by ``output_text.done`` (output_text parts only).
    logprobs: list[dict[str, Any]] | None = None
    text_done: bool = False
    done: bool = False


@dataclass
class CheckedItem:
    """Everything streamed for one output item."""

    output_index: int
    id: str
    type: str
    #: The item as announced by ``output_item.added``.
    added: dict[str, Any]
    #: The item carried by ``output_item.done``, or None if it never got one.
    done_item: dict[str, Any] | None = None
    #: Content parts in content_index order (message and raw-reasoning items).
    parts: list[CheckedPart] = field(default_factory=list)
    #: Reasoning summary parts in summary_index order.
    summaries: list[CheckedPart] = field(default_factory=list)
    #: Concatenated ``function_call_arguments.delta`` / ``custom_tool_call_input.delta``.
    arguments: str = ""
    #: ``function_call_arguments.done`` / ``custom_tool_call_input.done`` arrived.
    arguments_done: bool = False
    #: The ``mcp_call`` / ``mcp_list_tools`` progress events seen, in order (without the
    #: ``response.`` prefix): ``in_progress``, then ``completed`` or ``failed``.
    progress: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.done_item is not None

    @property
    def text(self) -> str:
        """All output_text of a message item."""
        return "".join(p.text for p in self.parts if p.type == "output_text")

    @property
    def refusal(self) -> str:
        return "".join(p.text for p in self.parts if p.type == "refusal")

    @property
    def reasoning_text(self) -> str:
        """Raw reasoning (``reasoning_text`` content parts) of a reasoning item."""
        return "".join(p.text for p in self.parts if p.type == "reasoning_text")

    @property
    def summary_text(self) -> str:
        return "".join(p.text for p in self.summaries)

    @property
    def input(self) -> str:
        """The custom tool input (same accumulator as ``arguments``)."""
        return self.arguments


@dataclass
class CheckedStream:
    """A body that passed every check, parsed."""

    #: Every event's JSON, in order (``data: [DONE]`` excluded).
    events: list[dict[str, Any]]
    #: The terminal event (``response.completed`` / ``.incomplete`` / ``.failed``).
    terminal: dict[str, Any]
    #: The items in output_index order.
    items: list[CheckedItem]
    #: Whether ``data: [DONE]`` followed the terminal event.
    done_marker: bool

    @property
    def response(self) -> dict[str, Any]:
        """The terminal response object."""
        return self.terminal["response"]  # type: ignore[no-any-return]

    @property
    def status(self) -> str:
        return self.response["status"]  # type: ignore[no-any-return]

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    @property
    def output_text(self) -> str:
        """All message text, as the SDK's ``Response.output_text`` would join it."""
        return "".join(i.text for i in self.items if i.type == "message")


def parse_frames(body: bytes) -> tuple[list[tuple[str, str]], bool]:
    """Split a body into ``(event name, data text)`` frames, strictly.

    Returns the frames and whether a ``data: [DONE]`` frame ended the body. Raises
    AssertionError for anything but ``event:`` + ``data:`` pairs terminated by a blank line.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AssertionError(f"body is not valid UTF-8: {exc}") from None
    if "\r" in text:
        raise AssertionError(f"body contains CR at offset {text.index(chr(13))}; only LF is sent")
    frames: list[tuple[str, str]] = []
    done = False
    pos = 0
    while pos < len(text):
        end = text.find("\n\n", pos)
        if end < 0:
            raise AssertionError(
                f"frame {len(frames)} at offset {pos} is not terminated by a blank line: "
                f"{text[pos : pos + 120]!r}"
            )
        block = text[pos:end]
        pos = end + 2
        if done:
            raise AssertionError(f"bytes after data: [DONE]: {block[:120]!r}")
        if block == DONE_FRAME:
            done = True
            continue
        lines = block.split("\n")
        if (
            len(lines) != 2
            or not lines[0].startswith("event: ")
            or not lines[1].startswith("data: ")
        ):
            raise AssertionError(
                f"frame {len(frames)} is not exactly 'event: <type>' + 'data: <json>': "
                f"{block[:200]!r}"
            )
        frames.append((lines[0][len("event: ") :], lines[1][len("data: ") :]))
    return frames, done


def check_stream(
    body: bytes,
    *,
    done_marker: bool | None = None,
    partial_calls_done: bool = False,
) -> CheckedStream:
    """Check one emitted Responses SSE body against every stream invariant.

    Args:
        body: The complete bytes the converter or middleware sent.
        done_marker: True requires ``data: [DONE]`` after the terminal event, False forbids
            it, None (default) accepts either.
        partial_calls_done: Allow ``output_item.done`` for calls when the terminal event is
            not ``response.completed`` (the ``close_partial_tool_calls`` setting).

    Returns:
        The parsed stream: events, terminal event and response, and per-item accumulations.

    Raises:
        AssertionError: naming the first violated invariant and the event that broke it.
    """
    frames, saw_done = parse_frames(body)
    if done_marker is True and not saw_done:
        raise AssertionError("expected data: [DONE] after the terminal event; it is missing")
    if done_marker is False and saw_done:
        raise AssertionError("data: [DONE] was sent although the done marker is off")
    if saw_done and not frames:
        raise AssertionError("data: [DONE] without any event before it")
    events = [_decode(i, name, data) for i, (name, data) in enumerate(frames)]
    state = _State(events, partial_calls_done=partial_calls_done)
    state.run()
    assert state.terminal is not None
    return CheckedStream(
        events=events, terminal=state.terminal, items=state.items, done_marker=saw_done
    )


def check_response(response: Any) -> dict[str, Any]:
    """Check a Response object that was not streamed (a JSON answer, a stored response).

    It must pass the Open Responses schema, be finished (completed, incomplete or failed) with
    the matching ``error``/``incomplete_details``, list items with unique, prefixed ids, and
    carry a complete usage or none.

    Raises:
        AssertionError: naming the first violation.
    """
    where = "response"
    check_response_schema(response, where)
    status = response["status"]
    _expect(
        status in ("completed", "incomplete", "failed"), where, f"status {status!r} is unfinished"
    )
    _expect(
        (response["error"] is not None) == (status == "failed"),
        where,
        f"error {response['error']!r} does not fit status {status!r}",
    )
    _expect(
        (response["incomplete_details"] is not None) == (status == "incomplete"),
        where,
        f"incomplete_details {response['incomplete_details']!r} does not fit status {status!r}",
    )
    ids = [item["id"] for item in response["output"]]
    _expect(len(set(ids)) == len(ids), where, f"duplicate item ids in {ids}")
    for index, item in enumerate(response["output"]):
        prefix = ITEM_PREFIXES[item["type"]]
        _expect(
            item["id"].startswith(prefix),
            f"{where}.output[{index}]",
            f"id {item['id']!r} must start with {prefix}",
        )
    _check_usage(where, response["usage"])
    return response  # type: ignore[no-any-return]


def _decode(index: int, name: str, data: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise AssertionError(
            f"event {index} ({name}): data is not JSON ({exc}): {data[:200]!r}"
        ) from None
    if not isinstance(event, dict):
        raise AssertionError(f"event {index} ({name}): data is not a JSON object: {data[:200]!r}")
    if _WHITESPACE.search(_JSON_STRING.sub("", data)):
        raise AssertionError(f"event {index} ({name}): JSON is not compact: {data[:200]!r}")
    if event.get("type") != name:
        raise AssertionError(
            f"event {index}: 'event: {name}' but JSON type is {event.get('type')!r}"
        )
    return event


def _expect(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise AssertionError(f"{where}: {message}")


class _State:
    """Replays the events through a model of the protocol; raises on the first violation."""

    def __init__(self, events: list[dict[str, Any]], *, partial_calls_done: bool) -> None:
        self.events = events
        self.partial_calls_done = partial_calls_done
        self.items: list[CheckedItem] = []
        self.ids: set[str] = set()
        self.response_id: str | None = None
        self.terminal: dict[str, Any] | None = None
        self.where = ""

    # -- driver ----------------------------------------------------------------------------

    def run(self) -> None:
        _expect(bool(self.events), "stream", "no events at all (expected response.created first)")
        for index, event in enumerate(self.events):
            self.where = f"event {index} (seq {event.get('sequence_number')}, {event['type']})"
            _expect(
                event.get("sequence_number") == index and type(event["sequence_number"]) is int,
                self.where,
                f"sequence_number must be {index}",
            )
            if index == 0:
                _expect(
                    event["type"] == "response.created",
                    self.where,
                    "first event must be response.created",
                )
            elif index == 1:
                _expect(
                    event["type"] == "response.in_progress",
                    self.where,
                    "second event must be response.in_progress",
                )
            _expect(self.terminal is None, self.where, "event after the terminal event")
            handler = _HANDLERS.get(event["type"])
            _expect(handler is not None, self.where, "unknown event type")
            check_event_schema(event, self.where)
            assert handler is not None
            handler(self, event)
            if event["type"] == "error":
                nxt = self.events[index + 1]["type"] if index + 1 < len(self.events) else None
                _expect(
                    nxt == "response.failed",
                    self.where,
                    f"an error event must be followed by response.failed, got {nxt}",
                )
        _expect(
            self.terminal is not None,
            "stream",
            f"no terminal event; last event is {self.events[-1]['type']}",
        )

    # -- lifecycle -------------------------------------------------------------------------

    def _response(self, event: dict[str, Any]) -> dict[str, Any]:
        response = event.get("response")
        _expect(isinstance(response, dict), self.where, "missing response object")
        assert isinstance(response, dict)
        _expect(response.get("object") == "response", self.where, "response.object != response")
        rid = response.get("id")
        if self.response_id is None:
            _expect(
                isinstance(rid, str) and rid.startswith("resp_"),
                self.where,
                f"response id {rid!r} must start with resp_",
            )
            self.response_id = rid
        _expect(
            rid == self.response_id,
            self.where,
            f"response id changed from {self.response_id!r} to {rid!r}",
        )
        return response

    def created(self, event: dict[str, Any]) -> None:
        _expect(self.response_id is None, self.where, "second response.created")
        response = self._response(event)
        _expect(
            response.get("status") == "in_progress",
            self.where,
            f"created status must be in_progress, got {response.get('status')!r}",
        )
        _expect(response.get("output") == [], self.where, "created output must be []")

    def in_progress(self, event: dict[str, Any]) -> None:
        response = self._response(event)
        _expect(
            response.get("status") == "in_progress",
            self.where,
            f"in_progress status is {response.get('status')!r}",
        )

    def error(self, event: dict[str, Any]) -> None:
        nested = event.get("error")
        body: dict[str, Any] = nested if isinstance(nested, dict) else event
        _expect(
            isinstance(body.get("message"), str) and bool(body["message"]),
            self.where,
            "error event without a message",
        )

    def finish(self, event: dict[str, Any]) -> None:
        response = self._response(event)
        self.terminal = event
        kind = event["type"].removeprefix("response.")
        status = response.get("status")
        _expect(status == kind, self.where, f"response.status is {status!r}")
        for item in self.items:
            if item.type in ("message", "reasoning"):
                _expect(item.done, self.where, f"{item.type} {item.id} was never done")
            if item.type == "mcp_call":
                _expect(
                    not item.done or item.arguments_done,
                    self.where,
                    f"mcp_call {item.id} done without mcp_call_arguments.done",
                )
            if item.type in CALL_TYPES:
                # The done events say "final": a call cut short gets neither (Guarantee 3).
                _expect(
                    item.arguments_done == item.done,
                    self.where,
                    f"{item.type} {item.id} got "
                    + ("only its arguments/input done event" if item.arguments_done else "no")
                    + " done event; a call gets both or, when cut short, neither",
                )
                if item.done and kind != "completed":
                    _expect(
                        self.partial_calls_done,
                        self.where,
                        f"{item.type} {item.id} got output_item.done but the response is {kind}",
                    )
        if kind == "completed":
            _expect(response.get("error") is None, self.where, "completed with an error")
            _expect(
                response.get("incomplete_details") is None,
                self.where,
                "completed with incomplete_details",
            )
            for item in self.items:
                _expect(item.done, self.where, f"completed but {item.id} was never done")
                assert item.done_item is not None
                _expect(
                    item.done_item.get("status") == "completed"
                    or (item.type == "mcp_call" and item.done_item.get("status") == "failed"),
                    self.where,
                    f"completed but {item.id} has status {item.done_item.get('status')!r}",
                )
        elif kind == "incomplete":
            details = response.get("incomplete_details")
            _expect(
                isinstance(details, dict) and details.get("reason") in INCOMPLETE_REASONS,
                self.where,
                f"incomplete_details must name a reason, got {details!r}",
            )
            _expect(response.get("error") is None, self.where, "incomplete with an error")
        else:
            error = response.get("error")
            _expect(
                isinstance(error, dict)
                and isinstance(error.get("code"), str)
                and bool(error["code"])
                and isinstance(error.get("message"), str)
                and bool(error["message"]),
                self.where,
                f"failed response needs error {{code, message}}, got {error!r}",
            )
        self._check_output(response.get("output"))
        _check_usage(self.where, response.get("usage"))

    def _check_output(self, output: Any) -> None:
        _expect(isinstance(output, list), self.where, "terminal response output is not a list")
        ids = [o.get("id") if isinstance(o, dict) else None for o in output]
        _expect(
            len(output) == len(self.items),
            self.where,
            f"terminal output lists {ids}, streamed items are {[i.id for i in self.items]}",
        )
        for item, listed in zip(self.items, output, strict=True):
            where = f"{self.where}, output[{item.output_index}]"
            _expect(
                listed.get("id") == item.id and listed.get("type") == item.type,
                where,
                f"is {listed.get('type')} {listed.get('id')}, streamed {item.type} {item.id}",
            )
            if item.done_item is not None:
                _expect(
                    listed == item.done_item,
                    where,
                    f"differs from its output_item.done item:\n  {listed}\n  {item.done_item}",
                )
                continue
            _expect(
                listed.get("status") == "incomplete",
                where,
                f"never done, so its status must be incomplete, got {listed.get('status')!r}",
            )
            self._check_call_identity(where, item, listed)

    # -- items -----------------------------------------------------------------------------

    def _item(self, event: dict[str, Any], *types: str) -> CheckedItem:
        index = event.get("output_index")
        _expect(
            isinstance(index, int) and 0 <= index < len(self.items),
            self.where,
            f"output_index {index!r} was never added",
        )
        assert isinstance(index, int)
        item = self.items[index]
        if "item_id" in event or event["type"] != "response.output_item.done":
            _expect(
                event.get("item_id") == item.id,
                self.where,
                f"item_id {event.get('item_id')!r} is not output {index}'s id {item.id!r}",
            )
        _expect(not item.done, self.where, f"item {item.id} is already done")
        if types:
            _expect(item.type in types, self.where, f"not valid for a {item.type} item")
        return item

    def item_added(self, event: dict[str, Any]) -> None:
        added = event.get("item")
        _expect(isinstance(added, dict), self.where, "missing item")
        assert isinstance(added, dict)
        _expect(
            event.get("output_index") == len(self.items),
            self.where,
            f"output_index must be {len(self.items)}, got {event.get('output_index')!r}",
        )
        kind = added.get("type")
        _expect(kind in ITEM_PREFIXES, self.where, f"unexpected item type {kind!r}")
        assert isinstance(kind, str)
        item_id = added.get("id")
        _expect(
            isinstance(item_id, str) and item_id.startswith(ITEM_PREFIXES[kind]),
            self.where,
            f"{kind} id {item_id!r} must start with {ITEM_PREFIXES[kind]}",
        )
        assert isinstance(item_id, str)
        # The real API rejects longer ids when items are replayed to it (protocol §4.4).
        _expect(len(item_id) <= 64, self.where, f"item id {item_id!r} is over 64 characters")
        _expect(item_id not in self.ids, self.where, f"duplicate item id {item_id}")
        _expect(added.get("status") == "in_progress", self.where, "added item not in_progress")
        if kind == "message":
            _expect(added.get("role") == "assistant", self.where, "message role != assistant")
            _expect(added.get("content") == [], self.where, "added message content must be []")
        elif kind == "reasoning":
            _expect(added.get("summary") == [], self.where, "added reasoning summary must be []")
        elif kind in MCP_TYPES:
            self._mcp_added(kind, added)
        else:
            for key in ("call_id", "name"):
                _expect(
                    isinstance(added.get(key), str) and bool(added[key]),
                    self.where,
                    f"{kind} needs a non-empty {key}",
                )
            field_name = "arguments" if kind == "function_call" else "input"
            _expect(added.get(field_name) == "", self.where, f"added {field_name} must be ''")
        self.ids.add(item_id)
        self.items.append(CheckedItem(len(self.items), item_id, kind, added))
        if kind == "mcp_call":
            # An approved call is announced with its arguments whole.
            self.items[-1].arguments = added["arguments"]

    def _mcp_added(self, kind: str, added: dict[str, Any]) -> None:
        _expect(
            isinstance(added.get("server_label"), str) and bool(added["server_label"]),
            self.where,
            f"{kind} needs a non-empty server_label",
        )
        if kind == "mcp_list_tools":
            _expect(added.get("tools") == [], self.where, "added mcp_list_tools tools must be []")
            return
        _expect(
            isinstance(added.get("name"), str) and bool(added["name"]),
            self.where,
            f"{kind} needs a non-empty name",
        )
        _expect(isinstance(added.get("arguments"), str), self.where, "arguments must be a string")
        if kind == "mcp_call":
            _expect(
                added.get("output") is None and added.get("error") is None,
                self.where,
                "an added mcp_call has neither output nor error",
            )

    def item_done(self, event: dict[str, Any]) -> None:
        item = self._item(event)
        done = event.get("item")
        _expect(isinstance(done, dict), self.where, "missing item")
        assert isinstance(done, dict)
        _expect(
            done.get("id") == item.id and done.get("type") == item.type,
            self.where,
            f"done item is {done.get('type')} {done.get('id')}, added {item.type} {item.id}",
        )
        statuses = (
            ("completed", "failed") if item.type in MCP_TYPES else ("completed", "incomplete")
        )
        _expect(
            done.get("status") in statuses,
            self.where,
            f"done status {done.get('status')!r}",
        )
        for part in [*item.parts, *item.summaries]:
            _expect(part.done, self.where, f"item done while its {part.type} part is open")
        if item.type == "message":
            _expect(bool(item.parts), self.where, "message item done without any content part")
            content = done.get("content")
            _expect(
                isinstance(content, list) and len(content) == len(item.parts),
                self.where,
                f"done message has {content!r}, streamed {len(item.parts)} parts",
            )
            assert isinstance(content, list)
            for part, final in zip(item.parts, content, strict=True):
                self._check_final_part(part, final)
        elif item.type == "reasoning":
            content = done.get("content") or []
            _expect(
                [c.get("text") for c in content] == [p.text for p in item.parts]
                and all(c.get("type") == "reasoning_text" for c in content),
                self.where,
                f"done reasoning content {content!r} differs from the streamed parts",
            )
            summary = done.get("summary")
            _expect(
                isinstance(summary, list)
                and [s.get("text") for s in summary] == [p.text for p in item.summaries]
                and all(s.get("type") == "summary_text" for s in summary),
                self.where,
                f"done reasoning summary {summary!r} differs from the streamed summary",
            )
        elif item.type in MCP_TYPES:
            self._mcp_done(item, done)
        else:
            _expect(
                item.arguments_done,
                self.where,
                "call done before its arguments/input done event",
            )
            self._check_call_identity(self.where, item, done)
        item.done_item = done

    def _mcp_done(self, item: CheckedItem, done: dict[str, Any]) -> None:
        status = done.get("status")
        for key in ("server_label", "name"):
            _expect(
                done.get(key) == item.added.get(key),
                self.where,
                f"{key} changed from {item.added.get(key)!r} to {done.get(key)!r}",
            )
        if item.type == "mcp_approval_request":
            _expect(
                done == {**item.added, "status": status} and status == "completed",
                self.where,
                f"an approval request is done as it was added, got {done!r}",
            )
            return
        _expect(
            item.progress == ["in_progress", status],
            self.where,
            f"{item.type} done {status} after {item.progress!r}; expected in_progress, {status}",
        )
        failed = status == "failed"
        if item.type == "mcp_list_tools":
            _expect(
                isinstance(done.get("error"), str) == failed,
                self.where,
                f"a {status} mcp_list_tools has error {done.get('error')!r}",
            )
            return
        _expect(item.arguments_done, self.where, "mcp_call done before its arguments were done")
        _expect(
            done.get("arguments") == item.arguments,
            self.where,
            f"arguments {done.get('arguments')!r} differ from the streamed {item.arguments!r}",
        )
        _expect(
            (done.get("error") is not None) == failed,
            self.where,
            f"a {status} mcp_call has error {done.get('error')!r}",
        )

    def _check_call_identity(self, where: str, item: CheckedItem, final: dict[str, Any]) -> None:
        for key in ("call_id", "name", "namespace"):
            _expect(
                final.get(key) == item.added.get(key),
                where,
                f"{key} changed from {item.added.get(key)!r} to {final.get(key)!r}",
            )
        field_name = "input" if item.type == "custom_tool_call" else "arguments"
        _expect(
            final.get(field_name) == item.arguments,
            where,
            f"{field_name} {final.get(field_name)!r} differs from the deltas {item.arguments!r}",
        )

    def _check_final_part(self, part: CheckedPart, final: Any) -> None:
        _expect(
            isinstance(final, dict) and final.get("type") == part.type,
            self.where,
            f"part {final!r} is not the streamed {part.type} part",
        )
        key = "refusal" if part.type == "refusal" else "text"
        _expect(
            final.get(key) == part.text,
            self.where,
            f"{part.type} {key} {final.get(key)!r} differs from its deltas {part.text!r}",
        )
        if part.type == "output_text":
            _expect(
                final.get("annotations") == part.annotations,
                self.where,
                f"annotations {final.get('annotations')!r} differ from the streamed ones "
                f"{part.annotations!r}",
            )
            if part.logprobs is not None and "logprobs" in final:
                _expect(
                    final["logprobs"] == part.logprobs,
                    self.where,
                    "part logprobs differ from output_text.done logprobs",
                )

    # -- content parts ---------------------------------------------------------------------

    def part_added(self, event: dict[str, Any]) -> None:
        item = self._item(event, "message", "reasoning")
        _expect(
            event.get("content_index") == len(item.parts),
            self.where,
            f"content_index must be {len(item.parts)}, got {event.get('content_index')!r}",
        )
        _expect(
            all(p.done for p in [*item.parts, *item.summaries]),
            self.where,
            "a new part opened while another part of the item is open",
        )
        part = event.get("part")
        _expect(isinstance(part, dict), self.where, "missing part")
        assert isinstance(part, dict)
        kind = part.get("type")
        allowed = ("output_text", "refusal") if item.type == "message" else ("reasoning_text",)
        _expect(kind in allowed, self.where, f"part type {kind!r} in a {item.type} item")
        assert isinstance(kind, str)
        key = "refusal" if kind == "refusal" else "text"
        _expect(part.get(key) == "", self.where, f"added part {key} must be ''")
        if kind == "output_text":
            _expect(part.get("annotations") == [], self.where, "added annotations must be []")
        item.parts.append(CheckedPart(kind))

    def _part(
        self, event: dict[str, Any], kind: str, index_key: str = "content_index"
    ) -> CheckedPart:
        item = self._item(
            event, "reasoning" if kind in ("reasoning_text", "summary_text") else "message"
        )
        parts = item.summaries if index_key == "summary_index" else item.parts
        index = event.get(index_key)
        _expect(
            isinstance(index, int) and 0 <= index < len(parts),
            self.where,
            f"{index_key} {index!r} was never added",
        )
        assert isinstance(index, int)
        part = parts[index]
        _expect(part.type == kind, self.where, f"event for a {kind} part on a {part.type} part")
        _expect(not part.done, self.where, f"{index_key} {index} is already done")
        return part

    def _delta(self, event: dict[str, Any], kind: str, index_key: str = "content_index") -> None:
        part = self._part(event, kind, index_key)
        _expect(not part.text_done, self.where, "delta after the part's text was done")
        delta = event.get("delta")
        _expect(isinstance(delta, str), self.where, "delta must be a string")
        assert isinstance(delta, str)
        part.text += delta

    def _text_done(
        self, event: dict[str, Any], kind: str, key: str, index_key: str = "content_index"
    ) -> CheckedPart:
        part = self._part(event, kind, index_key)
        _expect(not part.text_done, self.where, "second done event for the same part")
        _expect(
            event.get(key) == part.text,
            self.where,
            f"{key} {event.get(key)!r} differs from the concatenated deltas {part.text!r}",
        )
        part.text_done = True
        return part

    def text_delta(self, event: dict[str, Any]) -> None:
        _expect(isinstance(event.get("logprobs"), list), self.where, "logprobs must be a list")
        self._delta(event, "output_text")

    def text_done(self, event: dict[str, Any]) -> None:
        _expect(isinstance(event.get("logprobs"), list), self.where, "logprobs must be a list")
        self._text_done(event, "output_text", "text").logprobs = event["logprobs"]

    def annotation_added(self, event: dict[str, Any]) -> None:
        part = self._part(event, "output_text")
        _expect(
            event.get("annotation_index") == len(part.annotations),
            self.where,
            f"annotation_index must be {len(part.annotations)}",
        )
        annotation = event.get("annotation")
        _expect(isinstance(annotation, dict), self.where, "annotation must be an object")
        assert isinstance(annotation, dict)
        part.annotations.append(annotation)

    def refusal_delta(self, event: dict[str, Any]) -> None:
        self._delta(event, "refusal")

    def refusal_done(self, event: dict[str, Any]) -> None:
        self._text_done(event, "refusal", "refusal")

    def reasoning_delta(self, event: dict[str, Any]) -> None:
        self._delta(event, "reasoning_text")

    def reasoning_done(self, event: dict[str, Any]) -> None:
        self._text_done(event, "reasoning_text", "text")

    def part_done(self, event: dict[str, Any]) -> None:
        item = self._item(event, "message", "reasoning")
        index = event.get("content_index")
        _expect(
            isinstance(index, int) and 0 <= index < len(item.parts),
            self.where,
            f"content_index {index!r} was never added",
        )
        assert isinstance(index, int)
        part = item.parts[index]
        _expect(not part.done, self.where, "part already done")
        _expect(part.text_done, self.where, f"{part.type} part done before its text done event")
        self._check_final_part(part, event.get("part"))
        part.done = True

    def summary_part_added(self, event: dict[str, Any]) -> None:
        item = self._item(event, "reasoning")
        _expect(
            event.get("summary_index") == len(item.summaries),
            self.where,
            f"summary_index must be {len(item.summaries)}",
        )
        _expect(
            all(p.done for p in [*item.parts, *item.summaries]),
            self.where,
            "a summary part opened while another part is open",
        )
        _expect(
            event.get("part") == {"type": "summary_text", "text": ""},
            self.where,
            f"added summary part must be empty summary_text, got {event.get('part')!r}",
        )
        item.summaries.append(CheckedPart("summary_text"))

    def summary_delta(self, event: dict[str, Any]) -> None:
        self._delta(event, "summary_text", "summary_index")

    def summary_text_done(self, event: dict[str, Any]) -> None:
        self._text_done(event, "summary_text", "text", "summary_index")

    def summary_part_done(self, event: dict[str, Any]) -> None:
        part = self._part(event, "summary_text", "summary_index")
        _expect(part.text_done, self.where, "summary part done before its text done event")
        final = event.get("part")
        _expect(
            isinstance(final, dict)
            and final.get("type") == "summary_text"
            and final.get("text") == part.text,
            self.where,
            f"summary part {final!r} differs from its deltas {part.text!r}",
        )
        part.done = True

    # -- calls -----------------------------------------------------------------------------

    def _call_delta(self, event: dict[str, Any], kind: str) -> None:
        item = self._item(event, kind)
        _expect(not item.arguments_done, self.where, "delta after the done event")
        delta = event.get("delta")
        _expect(isinstance(delta, str), self.where, "delta must be a string")
        assert isinstance(delta, str)
        item.arguments += delta

    def _call_done(self, event: dict[str, Any], kind: str, key: str) -> None:
        item = self._item(event, kind)
        _expect(not item.arguments_done, self.where, "second done event")
        _expect(
            event.get(key) == item.arguments,
            self.where,
            f"{key} {event.get(key)!r} differs from the concatenated deltas {item.arguments!r}",
        )
        item.arguments_done = True

    def mcp_progress(self, event: dict[str, Any]) -> None:
        kind = "mcp_list_tools" if ".mcp_list_tools." in event["type"] else "mcp_call"
        item = self._item(event, kind)
        step = event["type"].rsplit(".", 1)[1]
        expected = "in_progress" if not item.progress else "completed or failed"
        _expect(
            step in expected.split(" or ") and len(item.progress) < 2,
            self.where,
            f"{kind} {step} after {item.progress!r}; expected {expected}",
        )
        if kind == "mcp_call" and step != "in_progress":
            _expect(item.arguments_done, self.where, "an mcp_call ended before its arguments")
        item.progress.append(step)

    def mcp_args_delta(self, event: dict[str, Any]) -> None:
        item = self._item(event, "mcp_call")
        _expect(
            item.progress == ["in_progress"],
            self.where,
            "mcp_call_arguments.delta before mcp_call.in_progress",
        )
        self._call_delta(event, "mcp_call")

    def mcp_args_done(self, event: dict[str, Any]) -> None:
        self._call_done(event, "mcp_call", "arguments")

    def args_delta(self, event: dict[str, Any]) -> None:
        self._call_delta(event, "function_call")

    def args_done(self, event: dict[str, Any]) -> None:
        self._call_done(event, "function_call", "arguments")

    def input_delta(self, event: dict[str, Any]) -> None:
        self._call_delta(event, "custom_tool_call")

    def input_done(self, event: dict[str, Any]) -> None:
        self._call_done(event, "custom_tool_call", "input")


_HANDLERS = {
    "response.created": _State.created,
    "response.in_progress": _State.in_progress,
    "response.completed": _State.finish,
    "response.incomplete": _State.finish,
    "response.failed": _State.finish,
    "error": _State.error,
    "response.output_item.added": _State.item_added,
    "response.output_item.done": _State.item_done,
    "response.content_part.added": _State.part_added,
    "response.content_part.done": _State.part_done,
    "response.output_text.delta": _State.text_delta,
    "response.output_text.done": _State.text_done,
    "response.output_text.annotation.added": _State.annotation_added,
    "response.refusal.delta": _State.refusal_delta,
    "response.refusal.done": _State.refusal_done,
    "response.reasoning_text.delta": _State.reasoning_delta,
    "response.reasoning_text.done": _State.reasoning_done,
    "response.reasoning_summary_part.added": _State.summary_part_added,
    "response.reasoning_summary_part.done": _State.summary_part_done,
    "response.reasoning_summary_text.delta": _State.summary_delta,
    "response.reasoning_summary_text.done": _State.summary_text_done,
    "response.function_call_arguments.delta": _State.args_delta,
    "response.function_call_arguments.done": _State.args_done,
    "response.custom_tool_call_input.delta": _State.input_delta,
    "response.custom_tool_call_input.done": _State.input_done,
    "response.mcp_list_tools.in_progress": _State.mcp_progress,
    "response.mcp_list_tools.completed": _State.mcp_progress,
    "response.mcp_list_tools.failed": _State.mcp_progress,
    "response.mcp_call.in_progress": _State.mcp_progress,
    "response.mcp_call.completed": _State.mcp_progress,
    "response.mcp_call.failed": _State.mcp_progress,
    "response.mcp_call_arguments.delta": _State.mcp_args_delta,
    "response.mcp_call_arguments.done": _State.mcp_args_done,
}


def _check_usage(where: str, usage: Any) -> None:
    if usage is None:
        return

    def count(obj: Any, key: str) -> None:
        value = obj.get(key) if isinstance(obj, dict) else None
        _expect(
            type(value) is int and value >= 0,
            where,
            f"usage {key} must be a non-negative int, got {value!r} in {usage!r}",
        )

    _expect(isinstance(usage, dict), where, f"usage must be an object or null, got {usage!r}")
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        count(usage, key)
    count(usage.get("input_tokens_details"), "cached_tokens")
    count(usage.get("input_tokens_details"), "cache_write_tokens")
    count(usage.get("output_tokens_details"), "reasoning_tokens")


# --------------------------------------------------------------------------------------------
# The Open Responses schema: required keys, types and nullability
# --------------------------------------------------------------------------------------------

# Written from the Open Responses OpenAPI document (version 2026-04-24,
# openresponses/openresponses: public/openapi/openapi.json and schema/components/schemas/),
# as our own table, not a copy. Each entry names an object's keys and what each must hold:
#   "str", "int", "num", "bool", "obj" (any JSON object), "any";
#   another entry's name (capitalised), or a union of entries chosen by the value's "type";
#   "[X]" for a list of X; a trailing "?" when the value may be null.
# A key is required unless written "~key": then it may be absent, but when present it must
# match (so "~encrypted_content": "str" allows no key or a string, never null); "!key" must be
# absent.
# Where the openai SDK's models and Open Responses differ, the table asks for what satisfies
# both; what Open Responses leaves out (OpenAI's custom_tool_call items, custom/namespace and
# hosted tools other than file_search and web_search) is held to OpenAI's required keys.
_SCHEMA: dict[str, dict[str, str]] = {
    "Response": {
        "id": "str",
        "object": "str",
        "created_at": "int",
        "completed_at": "int?",
        "status": "str",
        "incomplete_details": "IncompleteDetails?",
        "model": "str",
        "previous_response_id": "str?",
        "instructions": "str?",
        "output": "[Item]",
        "error": "Error?",
        "tools": "[Tool]",
        "tool_choice": "ToolChoice",
        "truncation": "str",
        "parallel_tool_calls": "bool",
        "text": "TextField",
        "top_p": "num",
        "presence_penalty": "num",
        "frequency_penalty": "num",
        "top_logprobs": "int",
        "temperature": "num",
        "reasoning": "ReasoningConfig?",
        # Required by ResponseResource.json, dropped from the 2026-04-24 document; sent anyway.
        "user": "str?",
        "usage": "Usage?",
        "max_output_tokens": "int?",
        "max_tool_calls": "int?",
        "store": "bool",
        "background": "bool",
        "service_tier": "str",
        "metadata": "obj",
        "safety_identifier": "str?",
        "prompt_cache_key": "str?",
    },
    "IncompleteDetails": {"reason": "str"},
    "Error": {"code": "str", "message": "str"},
    "ReasoningConfig": {"effort": "str?", "summary": "str?"},
    "Usage": {
        "input_tokens": "int",
        "output_tokens": "int",
        "total_tokens": "int",
        "input_tokens_details": "InputTokensDetails",
        "output_tokens_details": "OutputTokensDetails",
    },
    # cache_write_tokens: the openai SDK (>= 2) requires it; Open Responses allows extra keys.
    "InputTokensDetails": {"cached_tokens": "int", "cache_write_tokens": "int"},
    "OutputTokensDetails": {"reasoning_tokens": "int"},
    "TextField": {"format": "TextFormat", "~verbosity": "str"},
    "TextResponseFormat": {"type": "str"},
    "JsonSchemaResponseFormat": {
        "type": "str",
        "name": "str",
        "description": "str?",
        "schema": "obj",
        "strict": "bool",
    },
    "FunctionTool": {
        "type": "str",
        "name": "str",
        "description": "str?",
        "parameters": "obj?",
        "strict": "bool?",
    },
    "FileSearchTool": {
        "type": "str",
        "vector_store_ids": "[str]",
        "max_num_results": "int",
        "ranking_options": "RankingOptions",
        "filters": "obj?",
    },
    "RankingOptions": {"ranker": "str", "score_threshold": "num"},
    "OtherTool": {"type": "str"},
    "FunctionToolChoice": {"type": "str", "~name": "str"},
    "AllowedToolChoice": {"type": "str", "tools": "[obj]", "mode": "str"},
    "OtherToolChoice": {"type": "str"},
    "Message": {
        "type": "str",
        "id": "str",
        "status": "str",
        "role": "str",
        "content": "[Part]",
    },
    "FunctionCall": {
        "type": "str",
        "id": "str",
        "call_id": "str",
        "name": "str",
        "arguments": "str",
        "status": "str",
        "~namespace": "str",
    },
    # Not in Open Responses (OpenAI's freeform tool call); its items rule applies: id and status.
    "CustomToolCall": {
        "type": "str",
        "id": "str",
        "call_id": "str",
        "name": "str",
        "input": "str",
        "status": "str",
    },
    # Not in Open Responses (OpenAI's remote MCP items): held to the openai SDK's required
    # keys, plus the status every item carries here.
    "McpCall": {
        "type": "str",
        "id": "str",
        "server_label": "str",
        "name": "str",
        "arguments": "str",
        "status": "str",
        "output": "str?",
        "error": "McpError?",
        "~approval_request_id": "str?",
    },
    "McpListTools": {
        "type": "str",
        "id": "str",
        "server_label": "str",
        "tools": "[McpListedTool]",
        "status": "str",
        "~error": "str?",
    },
    "McpListedTool": {
        "name": "str",
        "input_schema": "obj",
        "~description": "str?",
        "~annotations": "obj?",
    },
    "McpApprovalRequest": {
        "type": "str",
        "id": "str",
        "server_label": "str",
        "name": "str",
        "arguments": "str",
        "status": "str",
    },
    "McpCodedError": {"type": "str", "code": "int", "message": "str"},
    "McpExecutionError": {"type": "str", "content": "any"},
    # The headers and token for an MCP server go to it alone: never echoed ("!": absent).
    "McpTool": {"type": "str", "server_label": "str", "!headers": "any", "!authorization": "any"},
    "McpToolChoice": {"type": "str", "server_label": "str", "~name": "str?"},
    "ReasoningItem": {
        "type": "str",
        "id": "str",
        "summary": "[Part]",
        "~content": "[Part]",
        "~encrypted_content": "str",
        # Open Responses: every item has a status; optional in both schemas, always sent.
        "status": "str",
    },
    # logprobs: optional in the document, required by the spec text and sent always.
    "OutputText": {
        "type": "str",
        "text": "str",
        "annotations": "[Annotation]",
        "logprobs": "[LogProb]",
    },
    "Refusal": {"type": "str", "refusal": "str"},
    "TextPart": {"type": "str", "text": "str"},
    "UrlCitation": {
        "type": "str",
        "url": "str",
        "start_index": "int",
        "end_index": "int",
        "title": "str",
    },
    "OtherAnnotation": {"type": "str"},
    "LogProb": {"token": "str", "logprob": "num", "bytes": "[int]", "top_logprobs": "[TopLogProb]"},
    "TopLogProb": {"token": "str", "logprob": "num", "bytes": "[int]"},
}

# Unions chosen by the value's "type"; "*" is the entry for any other type (absent: an error).
_UNIONS: dict[str, dict[str, str]] = {
    "Item": {
        "message": "Message",
        "function_call": "FunctionCall",
        "custom_tool_call": "CustomToolCall",
        "reasoning": "ReasoningItem",
        "mcp_call": "McpCall",
        "mcp_list_tools": "McpListTools",
        "mcp_approval_request": "McpApprovalRequest",
    },
    "McpError": {
        "mcp_protocol_error": "McpCodedError",
        "http_error": "McpCodedError",
        "mcp_tool_execution_error": "McpExecutionError",
    },
    "Part": {
        "output_text": "OutputText",
        "refusal": "Refusal",
        "reasoning_text": "TextPart",
        "summary_text": "TextPart",
    },
    "Tool": {
        "function": "FunctionTool",
        "file_search": "FileSearchTool",
        "mcp": "McpTool",
        "*": "OtherTool",
    },
    "ToolChoice": {
        "function": "FunctionToolChoice",
        "mcp": "McpToolChoice",
        "allowed_tools": "AllowedToolChoice",
        "*": "OtherToolChoice",
    },
    "TextFormat": {
        "text": "TextResponseFormat",
        "json_object": "TextResponseFormat",
        "json_schema": "JsonSchemaResponseFormat",
    },
    "Annotation": {"url_citation": "UrlCitation", "*": "OtherAnnotation"},
}
_TOOL_CHOICE_WORDS = frozenset({"none", "auto", "required"})

_ITEM_EVENT = {"output_index": "int", "item": "Item"}
_PART_EVENT = {"item_id": "str", "output_index": "int", "content_index": "int", "part": "Part"}
_SUMMARY_EVENT = {"item_id": "str", "output_index": "int", "summary_index": "int", "part": "Part"}
_AT_CONTENT = {"item_id": "str", "output_index": "int", "content_index": "int"}
_AT_SUMMARY = {"item_id": "str", "output_index": "int", "summary_index": "int"}
_AT_ITEM = {"item_id": "str", "output_index": "int"}
_DELTA = {"delta": "str", "~obfuscation": "str"}

#: Every event's keys besides ``type`` and ``sequence_number``. ``response.reasoning_text.*``
#: is OpenAI's name for Open Responses' ``response.reasoning.*`` (same keys); the custom tool
#: input events are OpenAI's; the ``error`` event's shape is checked by ``_State.error``.
_EVENT_KEYS: dict[str, dict[str, str]] = {
    **{kind: {"response": "Response"} for kind in LIFECYCLE_TYPES},
    "response.output_item.added": _ITEM_EVENT,
    "response.output_item.done": _ITEM_EVENT,
    "response.content_part.added": _PART_EVENT,
    "response.content_part.done": _PART_EVENT,
    "response.reasoning_summary_part.added": _SUMMARY_EVENT,
    "response.reasoning_summary_part.done": _SUMMARY_EVENT,
    "response.output_text.delta": {**_AT_CONTENT, **_DELTA, "logprobs": "[LogProb]"},
    "response.output_text.done": {**_AT_CONTENT, "text": "str", "logprobs": "[LogProb]"},
    "response.output_text.annotation.added": {
        **_AT_CONTENT,
        "annotation_index": "int",
        "annotation": "Annotation?",
    },
    "response.refusal.delta": {**_AT_CONTENT, **_DELTA},
    "response.refusal.done": {**_AT_CONTENT, "refusal": "str"},
    "response.reasoning_text.delta": {**_AT_CONTENT, **_DELTA},
    "response.reasoning_text.done": {**_AT_CONTENT, "text": "str"},
    "response.reasoning_summary_text.delta": {**_AT_SUMMARY, **_DELTA},
    "response.reasoning_summary_text.done": {**_AT_SUMMARY, "text": "str"},
    "response.function_call_arguments.delta": {**_AT_ITEM, **_DELTA},
    "response.function_call_arguments.done": {**_AT_ITEM, "arguments": "str"},
    "response.custom_tool_call_input.delta": {**_AT_ITEM, **_DELTA},
    "response.custom_tool_call_input.done": {**_AT_ITEM, "input": "str"},
    **{
        f"response.{kind}.{step}": _AT_ITEM
        for kind in ("mcp_call", "mcp_list_tools")
        for step in ("in_progress", "completed", "failed")
    },
    "response.mcp_call_arguments.delta": {**_AT_ITEM, **_DELTA},
    "response.mcp_call_arguments.done": {**_AT_ITEM, "arguments": "str"},
    "error": {},
}

_PRIMITIVES: dict[str, Any] = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: type(v) is int,
    "num": lambda v: type(v) in (int, float),
    "bool": lambda v: type(v) is bool,
    "obj": lambda v: isinstance(v, dict),
    "any": lambda v: True,
}


def check_event_schema(event: dict[str, Any], where: str = "event") -> None:
    """Check one event against the Open Responses schema (keys, types, nullability).

    Raises:
        AssertionError: naming the path of the first key that is missing or wrong.
    """
    kind = event.get("type")
    keys = _EVENT_KEYS.get(kind) if isinstance(kind, str) else None
    _expect(keys is not None, where, f"event type {kind!r} is not in the schema table")
    assert keys is not None
    _check_keys(where, event, {"type": "str", "sequence_number": "int", **keys})


def check_response_schema(response: Any, where: str = "response") -> None:
    """Check a Response object against the Open Responses schema (``ResponseResource``)."""
    _check_value(where, response, "Response")


def _check_value(where: str, value: Any, spec: str) -> None:
    if spec.endswith("?"):
        if value is None:
            return
        spec = spec[:-1]
    _expect(value is not None, where, "is null, which the schema does not allow")
    if spec.startswith("["):
        _expect(isinstance(value, list), where, f"must be a list, got {value!r}")
        for index, entry in enumerate(value):
            _check_value(f"{where}[{index}]", entry, spec[1:-1])
        return
    primitive = _PRIMITIVES.get(spec)
    if primitive is not None:
        _expect(primitive(value), where, f"must be {spec}, got {value!r}")
        return
    if spec == "ToolChoice" and isinstance(value, str):
        _expect(value in _TOOL_CHOICE_WORDS, where, f"tool_choice {value!r} is not a choice")
        return
    _expect(isinstance(value, dict), where, f"must be an object ({spec}), got {value!r}")
    union = _UNIONS.get(spec)
    if union is not None:
        kind = value.get("type")
        member = union.get(kind) if isinstance(kind, str) else None
        member = member or union.get("*")
        _expect(member is not None, where, f"type {kind!r} is not a {spec} the schema knows")
        assert member is not None
        spec = member
    _check_keys(where, value, _SCHEMA[spec])


def _check_keys(where: str, obj: dict[str, Any], keys: dict[str, str]) -> None:
    for key, spec in keys.items():
        if key.startswith("!"):
            _expect(key[1:] not in obj, where, f"key {key[1:]!r} must not be there")
            continue
        optional = key.startswith("~")
        name = key.removeprefix("~")
        if name not in obj:
            _expect(optional, where, f"required key {name!r} is missing")
            continue
        _check_value(f"{where}.{name}", obj[name], spec)


# --------------------------------------------------------------------------------------------
# The upstream corpus and its expectations
# --------------------------------------------------------------------------------------------

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "streams"


@dataclass(frozen=True)
class Fixture:
    """One recorded upstream stream: ``<name>.sse`` and ``<name>.expect.json``."""

    name: str
    #: The raw upstream body, byte for byte.
    body: bytes
    #: The expectation (shape documented in ``tests/fixtures/streams/_build.py``).
    expect: dict[str, Any]

    @property
    def request(self) -> dict[str, Any] | None:
        """The Responses request body to convert under, if the case needs one."""
        return self.expect.get("request")

    @property
    def settings(self) -> dict[str, Any]:
        """``Settings`` overrides for this case (``{}`` for the defaults)."""
        return dict(self.expect.get("settings") or {})


def load_fixtures() -> list[Fixture]:
    """Every fixture of the corpus, sorted by name."""
    fixtures = []
    for path in sorted(FIXTURE_DIR.glob("*.sse")):
        name = path.name.removesuffix(".sse")
        expect = json.loads((FIXTURE_DIR / f"{name}.expect.json").read_text(encoding="utf-8"))
        fixtures.append(Fixture(name, path.read_bytes(), expect))
    return fixtures


def check_expectation(checked: CheckedStream, expect: dict[str, Any]) -> None:
    """Compare a checked stream with a fixture's expectation; AssertionError on a mismatch."""
    response = checked.response
    where = "expectation"
    _expect(
        checked.terminal["type"] == expect["terminal"],
        where,
        f"terminal event is {checked.terminal['type']}, expected {expect['terminal']}"
        + _failure_hint(response),
    )
    _expect(response["status"] == expect["status"], where, f"status is {response['status']!r}")
    reason = (response.get("incomplete_details") or {}).get("reason")
    _expect(
        reason == expect["incomplete_reason"],
        where,
        f"incomplete reason is {reason!r}, expected {expect['incomplete_reason']!r}",
    )
    error, wanted = response.get("error"), expect["error"]
    if wanted is None:
        _expect(error is None, where, f"unexpected error {error!r}")
    else:
        _expect(
            isinstance(error, dict) and error.get("code") == wanted["code"],
            where,
            f"error is {error!r}, expected code {wanted['code']!r}",
        )
        assert isinstance(error, dict)
        contains = wanted.get("message_contains")
        _expect(
            contains is None or contains in error["message"],
            where,
            f"error message {error['message']!r} does not contain {contains!r}",
        )
    output = response["output"]
    summary = [(o.get("type"), o.get("status")) for o in output]
    _expect(
        len(output) == len(expect["output"]),
        where,
        f"output is {summary}, expected {[(e['type'], e['status']) for e in expect['output']]}",
    )
    for index, (item, listed, wanted_item) in enumerate(
        zip(checked.items, output, expect["output"], strict=True)
    ):
        _check_item(f"{where}, output[{index}]", item, listed, wanted_item)
    _expect(
        response.get("usage") == expect["usage"],
        where,
        f"usage is {response.get('usage')!r}, expected {expect['usage']!r}",
    )


def _failure_hint(response: dict[str, Any]) -> str:
    if response.get("error"):
        return f" (error: {response['error']})"
    if response.get("incomplete_details"):
        return f" (incomplete_details: {response['incomplete_details']})"
    return ""


def _check_item(
    where: str, item: CheckedItem, listed: dict[str, Any], wanted: dict[str, Any]
) -> None:
    _expect(
        listed["type"] == wanted["type"],
        where,
        f"is a {listed['type']} item, expected {wanted['type']}: {listed!r}",
    )
    _expect(
        listed.get("status") == wanted["status"],
        where,
        f"status is {listed.get('status')!r}, expected {wanted['status']!r}",
    )
    _expect(
        item.done == wanted["done"],
        where,
        "got output_item.done" if item.done else "never got output_item.done",
    )
    kind = wanted["type"]
    if kind == "message":
        content = listed["content"]
        _expect(
            [p["type"] for p in content] == [p["type"] for p in wanted["content"]],
            where,
            f"content parts are {content!r}, expected {wanted['content']!r}",
        )
        for part, wanted_part in zip(content, wanted["content"], strict=True):
            key = "refusal" if part["type"] == "refusal" else "text"
            _expect(
                part[key] == wanted_part[key],
                where,
                f"{part['type']} is {part[key]!r}, expected {wanted_part[key]!r}",
            )
            if "annotations" in wanted_part:
                _expect(
                    part["annotations"] == wanted_part["annotations"],
                    where,
                    f"annotations are {part['annotations']!r}",
                )
            if "logprob_tokens" in wanted_part:
                tokens = [lp.get("token") for lp in part.get("logprobs") or []]
                _expect(
                    tokens == wanted_part["logprob_tokens"],
                    where,
                    f"logprob tokens are {tokens!r}, expected {wanted_part['logprob_tokens']!r}",
                )
    elif kind == "reasoning":
        for key, got in (("text", item.reasoning_text), ("summary", item.summary_text)):
            want = wanted.get(key, "")
            _expect(got == want, where, f"reasoning {key} is {got!r}, expected {want!r}")
    else:
        _expect(listed["name"] == wanted["name"], where, f"name is {listed['name']!r}")
        if "call_id" in wanted:
            _expect(
                listed["call_id"] == wanted["call_id"],
                where,
                f"call_id is {listed['call_id']!r}, expected {wanted['call_id']!r}",
            )
        _expect(
            listed.get("namespace") == wanted.get("namespace"),
            where,
            f"namespace is {listed.get('namespace')!r}, expected {wanted.get('namespace')!r}",
        )
        key = "arguments" if kind == "function_call" else "input"
        _expect(
            listed[key] == wanted[key],
            where,
            f"{key} is {listed[key]!r}, expected {wanted[key]!r}",
        )
