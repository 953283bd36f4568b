"""The translator's state machine: which item is open, how facts move it, what the end keeps.

Theory of operation
-------------------
``Translator.apply(facts)`` takes the reader's facts (``_chat.py``) in order and tells the
writer (``_events.py``) which events to write; it handles no bytes and no JSON. Everything
that decides an item's life lives here.

States (``State``) say which item is taking deltas:

- ``NEW`` → ``IDLE`` on ``start()`` (``response.created``, ``response.in_progress``).
- ``REASONING`` on reasoning text: a reasoning item is opened, closing an open message first.
- ``MESSAGE`` on text or refusal: a message item is opened (closing an open reasoning item
  first, so reasoning always precedes the text it explains); a refusal after text (or text
  after a refusal) opens a new content part in the same message.
- ``TOOL_CALLS`` when a call is named: an open message or reasoning item is closed, and a
  ``function_call`` (or, for a custom tool, ``custom_tool_call``) item is added. Calls stay
  open until the end: fragments of parallel calls may interleave, and text after the calls
  opens a *new* message item at the next ``output_index``.
- ``FINISH`` is only recorded (usage arrives after it); ``END`` or ``finalize()`` → ``DONE``.
- With an MCP plan, a named call of one of its functions becomes an ``mcp_call`` item
  (``response.mcp_call.in_progress``, then its arguments as ``mcp_call_arguments.delta``), or,
  when the tool needs approval, is held back and announced whole as an
  ``mcp_approval_request`` once the stream ends. ``END`` (``end_round``) after a stream that
  finished and made MCP calls closes the round's items, writes each call's
  ``mcp_call_arguments.done`` (only now are they final, so only now may they run) and moves
  to ``BETWEEN_ROUNDS``: the caller hands in each result (``mcp_call_result``) and then
  ``next_round()`` → ``IDLE`` for the backend's next stream, or ends the response. Output
  indexes and sequence numbers run on; ``usage`` is summed over the rounds.

Every move goes through ``_move``, which checks ``TRANSITIONS``; an illegal move raises, and
like every other error it ends the stream with ``response.failed``.

The outcome is chosen at finalisation: an error, or no ``finish_reason`` at all, fails the
response; ``length``/``model_length`` give ``response.incomplete`` (``max_output_tokens``),
``content_filter`` gives ``response.incomplete`` (``content_filter``), ``error`` fails, and
anything else (``stop``, ``tool_calls``, ``function_call``, unknown words) completes. A call
whose name never arrived fails the response too: it cannot be executed, so it is never
announced.

What finalisation guarantees (``docs/design.md``, Guarantees):

- an open reasoning or message item gets its done events (``*.done``, part done,
  ``output_item.done``), with status ``incomplete`` when the response was cut short;
- a call gets ``function_call_arguments.done`` (``custom_tool_call_input.done``) and
  ``output_item.done`` only when the response completes (its arguments are final), and
  neither when it was cut short, unless ``Settings.close_partial_tool_calls``: Codex runs a
  call on ``output_item.done`` and llama-index builds one from ``arguments.done``, so a cut
  call must look finished in neither;
- a reasoning item's ``encrypted_content`` (when the request's ``include`` asks for it) is
  sealed once, when the item is done, and appears only in its ``output_item.done`` and the
  terminal response;
- an ``mcp_call`` without its result (cut short, or still waiting when the response ends) is
  listed ``incomplete`` and gets no further event: it never looks finished. A response that
  would complete with such a call fails instead (the model never saw the answer);
- then exactly one terminal event (``response.completed``, ``response.incomplete``, or
  ``response.failed``, preceded by an ``error`` event when ``Settings.error_event``), then
  ``[DONE]`` when ``Settings.done_marker``, then nothing. The terminal ``output`` lists every
  announced item with the streamed ids and final content; a call that never got its done
  events is listed with status ``incomplete`` and the arguments (input) its deltas carried.

What each item has received so far (its text fragments, parts, a custom call's decoded
input) is kept in the records of ``_output.py``, so that this module holds the moves alone.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

from ._errors import UpstreamError, UpstreamProtocolError, UpstreamReportedError
from ._events import EventWriter, delta_template
from ._facts import (
    ANNOTATION,
    ARGUMENTS,
    END,
    FAIL,
    FINISH,
    MODEL,
    NAMED,
    NEW_CALL,
    REASONING,
    REFUSAL,
    TEXT,
    USAGE,
    ChatCall,
    Fact,
)
from ._items import (
    Outcome,
    custom_tool_call_item,
    error_object,
    finish_outcome,
    function_call_item,
    item_id,
    map_usage,
    mcp_approval_request_item,
    mcp_call_item,
    mcp_error,
    mcp_list_tools_item,
    message_item,
    output_text_part,
    preview,
    random_part,
    reasoning_item,
    refusal_part,
    sum_usage,
)
from ._observe import logger
from ._output import Call, McpCall, Message, Part, Reasoning, Whole, joined

if TYPE_CHECKING:
    from ._mcp._plan import McpPlan, McpTool

_Item = Message | Reasoning | Call | McpCall | Whole

__all__ = ["TRANSITIONS", "State", "Translator"]


class State(enum.Enum):
    """Which item the translator is streaming into."""

    #: ``start()`` has not run; nothing has been sent.
    NEW = "new"
    #: ``response.created`` and ``response.in_progress`` sent; no reasoning or message open.
    IDLE = "idle"
    #: A reasoning item is open and takes reasoning deltas.
    REASONING = "reasoning"
    #: A message item is open and takes text and refusal deltas.
    MESSAGE = "message"
    #: The latest item is a tool call; every call stays open until finalisation.
    TOOL_CALLS = "tool_calls"
    #: A Chat stream ended with MCP calls for the gateway to run: their results, then
    #: ``next_round()`` (another Chat stream) or the end.
    BETWEEN_ROUNDS = "between_rounds"
    #: The terminal event has been sent; all further input is ignored.
    DONE = "done"


_NEW, _IDLE, _REASONING, _MESSAGE, _TOOL_CALLS, _BETWEEN, _FINISHED = State

#: The only moves the translator makes; anything else is a bug and fails the response.
TRANSITIONS: dict[State, frozenset[State]] = {
    _NEW: frozenset({_IDLE}),
    _IDLE: frozenset({_REASONING, _MESSAGE, _TOOL_CALLS, _FINISHED}),
    _REASONING: frozenset({_MESSAGE, _TOOL_CALLS, _BETWEEN, _FINISHED}),
    _MESSAGE: frozenset({_REASONING, _TOOL_CALLS, _BETWEEN, _FINISHED}),
    _TOOL_CALLS: frozenset({_REASONING, _MESSAGE, _BETWEEN, _FINISHED}),
    _BETWEEN: frozenset({_IDLE, _FINISHED}),
    _FINISHED: frozenset(),
}


class _IllegalTransition(UpstreamProtocolError):
    """The translator was asked for a move its table does not allow (a bug, reported as a
    failed response rather than a half-finished stream)."""


class Translator:
    """The state machine of one response (see the module docstring).

    Args:
        base: The in-progress Response object (every echoed field, no output).
        response_id: Its id; item ids derive from it.
        request: The Responses request (its ``model`` decides whether the upstream's shows).
        writer: Where the events go.
        reasoning_mode: ``"text"`` (``reasoning_text`` events) or ``"summary"``.
        close_partial_tool_calls: Give a cut call its done events anyway.
        error_event: Write an ``error`` event before ``response.failed``.
        seal: Makes a finished reasoning item's ``encrypted_content``, if asked for.
        clock: Read for ``completed_at``.
        think_tags: Whether text may be split by a ``<think>`` reader (no ``fast_part``).
        mcp: The response's MCP tools: a call of one of their functions becomes an
            ``mcp_call`` (or, needing approval, an ``mcp_approval_request``), and a stream
            that made MCP calls ends a round rather than the response.
    """

    __slots__ = (
        "_base",
        "_calls",
        "_clock",
        "_close_partial",
        "_earlier_usage",
        "_error_event",
        "_fast_parts",
        "_finish_reason",
        "_held",
        "_id",
        "_items",
        "_mcp",
        "_message",
        "_model",
        "_request",
        "_round_mcp",
        "_seal",
        "_stem",
        "_summary",
        "_text_part",
        "_usage",
        "_w",
        "fast_part",
        "reasoning",
        "response",
        "round_ends_response",
        "state",
    )

    def __init__(
        self,
        base: dict[str, Any],
        request: Mapping[str, Any],
        writer: EventWriter,
        *,
        response_id: str,
        reasoning_mode: Literal["text", "summary"],
        close_partial_tool_calls: bool,
        error_event: bool,
        seal: Callable[[str], str] | None,
        clock: Callable[[], float] = time.time,
        think_tags: bool,
        mcp: McpPlan | None = None,
    ) -> None:
        self._base = base
        self._mcp = mcp
        # This round's MCP calls, and the calls that wait for approval (announced only when
        # the round ends, as ``mcp_approval_request`` items).
        self._round_mcp: list[McpCall] = []
        self._held: list[tuple[ChatCall, McpTool]] = []
        # The usage of the rounds before this one, summed.
        self._earlier_usage: dict[str, Any] | None = None
        #: The last round also made client tool calls or approval requests: after its MCP
        #: calls' results, the response ends rather than asking the backend again.
        self.round_ends_response = False
        self._request = request
        self._w = writer
        self._id = response_id
        self._stem = random_part(response_id)
        self._summary = reasoning_mode == "summary"
        self._close_partial = close_partial_tool_calls
        self._error_event = error_event
        self._seal = seal
        self._clock = clock
        self.state = _NEW
        self._items: list[_Item] = []
        self._message: Message | None = None
        self._text_part: Part | None = None
        #: The open output_text part, when its deltas are never split by a ``<think>`` reader
        #: (a byte-level shortcut may then add text to it directly).
        self.fast_part: Part | None = None
        self._fast_parts = not think_tags
        #: The open reasoning item.
        self.reasoning: Reasoning | None = None
        # Every call the reader saw, named or not (an unnamed one fails the response).
        self._calls: list[ChatCall] = []
        self._finish_reason: str | None = None
        self._usage: object = None
        self._model: str | None = None
        #: The terminal Response object, once written.
        self.response: dict[str, Any] | None = None

    def output_items(self) -> list[dict[str, Any]]:
        """The output items so far, each as it stands (a finished one in its done form)."""
        return [self._item_dict(item) for item in self._items]

    def snapshot(self) -> dict[str, Any]:
        """The Response object as it stands."""
        if self.response is not None:
            return self.response
        snapshot = dict(self._base)
        snapshot["output"] = [self._item_dict(item) for item in self._items]
        return snapshot

    def _move(self, to: State) -> None:
        if to not in TRANSITIONS[self.state]:
            raise _IllegalTransition(
                f"stream_mw translator cannot move from {self.state.name} to {to.name}"
            )
        self.state = to

    def start(self) -> None:
        self._move(_IDLE)
        self._w.start(self._base)

    # --- facts ------------------------------------------------------------------------

    def apply(self, facts: list[Fact]) -> None:
        """Act on the reader's facts in order. Raises the error of a ``FAIL`` fact."""
        for fact in facts:
            kind = fact[0]
            if kind == TEXT:
                part = self._text_part
                if part is not None and fact[1] and not fact[2]:
                    part.chunks.append(fact[1])
                    self._w.delta(part.template, fact[1])
                else:
                    self._text(fact[1], fact[2])
            elif kind == ARGUMENTS:
                call = fact[1].item
                if call is not None:
                    self._argument_delta(call, fact[2])
            elif kind == REASONING:
                self._reasoning_delta(fact[1])
            elif kind == REFUSAL:
                self._refusal(fact[1])
            elif kind == ANNOTATION:
                self._annotation(fact[1])
            elif kind == NEW_CALL:
                self._calls.append(fact[1])
            elif kind == NAMED:
                self._add_call(fact[1])
            elif kind == MODEL:
                self._model = fact[1]
            elif kind == FINISH:
                self._finish_reason = fact[1]
            elif kind == USAGE:
                self._usage = fact[1]  # cumulative usage on every chunk: the last one wins
            elif kind == FAIL:
                raise fact[1]
            elif kind == END:
                self.end_round()

    def more_deltas(self, target: Part | Reasoning, texts: list[str]) -> None:
        """Deltas for the open ``fast_part`` or ``reasoning`` item, one event each."""
        target.chunks.extend(texts)
        self._w.deltas(target.template, texts)

    def argument_now(self, source: ChatCall, text: str) -> bytes:
        """One arguments delta for an announced function call, returned at once (nothing
        else is pending): ``(ARGUMENTS, source, text)`` for a call that is not custom."""
        return self._w.delta_now(source.item.template, text)

    def more_arguments(self, source: ChatCall, texts: list[str]) -> None:
        """Arguments deltas for an announced call, as ``(ARGUMENTS, source, text)`` each."""
        call = source.item
        if call.decoder is None:
            self._w.deltas(call.template, texts)
            return
        for text in texts:
            self._argument_delta(call, text)

    def _open_message(self) -> Message:
        message = self._message
        if message is not None:
            return message
        if self.state is _REASONING:
            self._close_reasoning("completed")
        self._move(_MESSAGE)
        index = len(self._items)
        message = Message(item_id(self._id, "msg", index), index)
        self._items.append(message)
        self._message = message
        self._w.item_added(index, message_item(message.id, "in_progress", []))
        return message

    def _open_part(self, kind: Literal["output_text", "refusal"]) -> Part:
        message = self._open_message()
        if message.part is not None:
            self._close_part(message, message.part)
        part = Part(kind, len(message.parts))
        message.parts.append(part)
        message.part = part
        where = (message.id, message.index, "content_index", part.index)
        if kind == "output_text":
            part.template = delta_template("response.output_text.delta", *where, ',"logprobs":[]}')
            part.template_lp = delta_template(
                "response.output_text.delta", *where, ',"logprobs":%s}'
            )
            self._text_part = part
            if self._fast_parts:
                self.fast_part = part
        else:
            part.template = delta_template("response.refusal.delta", *where)
        self._w.part_added(
            message.id,
            message.index,
            part.index,
            output_text_part("") if kind == "output_text" else refusal_part(""),
        )
        return part

    def _text(self, text: str, logprobs: list[dict[str, Any]] | None) -> None:
        part = self._text_part
        if not text:
            if logprobs and part is not None:
                part.logprobs.extend(logprobs)
            return
        if part is None:
            part = self._open_part("output_text")
        part.chunks.append(text)
        if logprobs:
            part.logprobs.extend(logprobs)
            self._w.delta_with_logprobs(part.template_lp, text, logprobs)
        else:
            self._w.delta(part.template, text)

    def _refusal(self, text: str) -> None:
        message = self._message
        part = message.part if message is not None else None
        if part is None or part.kind != "refusal":
            part = self._open_part("refusal")
        part.chunks.append(text)
        self._w.delta(part.template, text)

    def _annotation(self, annotation: dict[str, Any]) -> None:
        part = self._text_part
        if part is None:
            part = self._open_part("output_text")
        message = self._message
        assert message is not None
        self._w.annotation_added(
            message.id, message.index, part.index, len(part.annotations), annotation
        )
        part.annotations.append(annotation)

    def _close_part(self, message: Message, part: Part) -> None:
        text = part.text()
        if part.kind == "output_text":
            self._w.text_done(message.id, message.index, part.index, text, part.logprobs)
            self._text_part = self.fast_part = None
        else:
            self._w.refusal_done(message.id, message.index, part.index, text)
        self._w.part_done(message.id, message.index, part.index, part.as_dict())
        message.part = None

    def _close_message(self, status: str) -> None:
        message = self._message
        assert message is not None
        if message.part is not None:
            self._close_part(message, message.part)
        message.status = status
        self._w.item_done(message.index, message.as_dict())
        self._message = None

    # --- reasoning items --------------------------------------------------------------

    def _reasoning_delta(self, text: str) -> None:
        if not text:
            return
        reasoning = self.reasoning
        if reasoning is None:
            reasoning = self._open_reasoning()
        reasoning.chunks.append(text)
        self._w.delta(reasoning.template, text)

    def _open_reasoning(self) -> Reasoning:
        if self.state is _MESSAGE:
            self._close_message("completed")
        self._move(_REASONING)
        index = len(self._items)
        reasoning = Reasoning(item_id(self._id, "rs", index), index)
        self._items.append(reasoning)
        self.reasoning = reasoning
        mode: Literal["text", "summary"] = "summary" if self._summary else "text"
        self._w.item_added(index, reasoning_item(reasoning.id, "in_progress", None, mode))
        if self._summary:
            event, index_name = "response.reasoning_summary_text.delta", "summary_index"
        else:
            event, index_name = "response.reasoning_text.delta", "content_index"
        reasoning.template = delta_template(event, reasoning.id, index, index_name, 0)
        self._w.reasoning_part_added(self._summary, reasoning.id, index)
        return reasoning

    def _close_reasoning(self, status: str) -> None:
        reasoning = self.reasoning
        assert reasoning is not None
        text = reasoning.text()
        self._w.reasoning_done(self._summary, reasoning.id, reasoning.index, text)
        reasoning.status = status
        if self._seal is not None:
            reasoning.sealed = self._seal(text)
        self._w.item_done(reasoning.index, self._item_dict(reasoning))
        self.reasoning = None

    # --- tool calls -------------------------------------------------------------------

    def _add_call(self, source: ChatCall) -> None:
        if self.state is _MESSAGE:
            self._close_message("completed")
        elif self.state is _REASONING:
            self._close_reasoning("completed")
        if self.state is not _TOOL_CALLS:
            self._move(_TOOL_CALLS)
        if self._mcp is not None:
            tool = self._mcp.tool(source.name or "")
            if tool is not None:
                self._add_mcp_call(source, tool)
                return
        index = len(self._items)
        response_id = self._id
        call_id = source.upstream_id or f"call_{self._stem}_{index}"
        if source.custom:
            call = Call(source, item_id(response_id, "ctc", index), index, call_id)
            item = custom_tool_call_item(call.id, "in_progress", call_id, source.tool_name, "")
            call.template = delta_template("response.custom_tool_call_input.delta", call.id, index)
        else:
            call = Call(source, item_id(response_id, "fc", index), index, call_id)
            item = function_call_item(
                call.id, "in_progress", call_id, source.tool_name, "", source.namespace
            )
            call.template = delta_template("response.function_call_arguments.delta", call.id, index)
        source.item = call
        self._items.append(call)
        self._w.item_added(index, item)
        if source.args:
            self._argument_delta(call, joined(source.args))

    def _argument_delta(self, call: Call | McpCall, text: str) -> None:
        decoder = call.decoder
        if decoder is not None:
            custom = cast(Call, call)  # (only a custom tool's call has a decoder)
            if not custom.source.raw_input:
                text = decoder.feed(text)
            if not text:
                return
            custom.streamed.append(text)
        self._w.delta(call.template, text)

    def _close_call(self, call: Call, final: bool) -> None:
        call.status = "completed" if final else "incomplete"
        if not (final or self._close_partial):
            # Both done events mean "final" (see the module docstring): a cut call gets
            # neither and is listed as incomplete in the terminal output.
            return
        call.done = True
        if call.source.custom:
            text = call.final_input()
            streamed = "".join(call.streamed)
            if len(text) > len(streamed) and text.startswith(streamed):
                rest = text[len(streamed) :]
                call.streamed.append(rest)
                self._w.custom_input_delta(call.id, call.index, rest)
            elif text != streamed:
                logger.debug("%s: custom tool input differs from what streamed", self._id)
            self._w.custom_input_done(call.id, call.index, text)
        else:
            self._w.arguments_done(
                call.id, call.index, call.source.tool_name, joined(call.source.args)
            )
        self._w.item_done(call.index, call.as_dict())

    # --- MCP calls ------------------------------------------------------------------

    def _add_mcp_call(self, source: ChatCall, tool: McpTool) -> None:
        if tool.needs_approval:
            # Nothing runs without the user's word: the call is shown, whole, as an approval
            # request once the round ends (and its arguments are final).
            source.held = True
            self._held.append((source, tool))
            return
        index = len(self._items)
        call = McpCall(
            source, tool, item_id(self._id, "mcp", index), index, tool.server.label, tool.name
        )
        call.template = delta_template("response.mcp_call_arguments.delta", call.id, index)
        source.item = call
        self._items.append(call)
        self._round_mcp.append(call)
        self._w.item_added(index, mcp_call_item(call.id, "in_progress", call.label, call.name, ""))
        self._w.item_event("response.mcp_call.in_progress", call.id, index)
        if source.args:
            self._argument_delta(call, joined(source.args))

    def open_mcp_call(self, tool: McpTool, arguments: str, approval_request_id: str) -> str:
        """An ``mcp_call`` the user approved on an earlier turn, its arguments whole; returns
        its item id (the call waits for ``mcp_call_result``)."""
        self._between_rounds("open_mcp_call")
        index = len(self._items)
        call = McpCall(
            None,
            tool,
            item_id(self._id, "mcp", index),
            index,
            tool.server.label,
            tool.name,
            arguments,
            approval_request_id,
        )
        call.final = True
        self._items.append(call)
        self._w.item_added(
            index,
            mcp_call_item(
                call.id,
                "in_progress",
                call.label,
                call.name,
                arguments,
                approval_request_id=approval_request_id,
            ),
        )
        self._w.item_event("response.mcp_call.in_progress", call.id, index)
        self._w.mcp_arguments_done(call.id, index, arguments)
        return call.id

    def mcp_call_result(
        self, call_id: str, output: str | None, error: str | Mapping[str, Any] | None
    ) -> None:
        """The MCP server's answer to a pending call: ``response.mcp_call.completed`` (or
        ``.failed``, with ``error``) and the call's ``output_item.done``."""
        self._between_rounds("mcp_call_result")
        call = next((c for c in self._items if isinstance(c, McpCall) and c.id == call_id), None)
        if call is None or not call.final or call.status != "in_progress":
            raise RuntimeError(f"{call_id!r} is not an MCP call waiting for its result")
        if error is not None:
            call.error = mcp_error(error)
            call.status = "failed"
        else:
            call.output = output
            call.status = "completed"
        self._w.item_event(f"response.mcp_call.{call.status}", call.id, call.index)
        self._w.item_done(call.index, call.as_dict())

    def pending_mcp_calls(self) -> list[tuple[str, McpTool, str]]:
        """The MCP calls to run now: ``(item id, tool, arguments)``, in output order."""
        return [
            (item.id, item.tool, item.arguments())
            for item in self._items
            if isinstance(item, McpCall) and item.final and item.status == "in_progress"
        ]

    def mcp_list_tools(
        self, server_label: str, tools: list[dict[str, Any]] | None, error: str | None
    ) -> None:
        """An ``mcp_list_tools`` item: the tools ``server_label`` listed, or why listing
        failed (``tools`` ``None``)."""
        self._between_rounds("mcp_list_tools")
        index = len(self._items)
        listed_id = item_id(self._id, "mcpl", index)
        self._w.item_added(index, mcp_list_tools_item(listed_id, "in_progress", server_label, []))
        self._w.item_event("response.mcp_list_tools.in_progress", listed_id, index)
        status = "completed" if tools is not None else "failed"
        item = Whole(
            mcp_list_tools_item(listed_id, status, server_label, tools or [], error), index
        )
        self._items.append(item)
        self._w.item_event(f"response.mcp_list_tools.{status}", listed_id, index)
        self._w.item_done(index, item.item)

    def next_round(self) -> None:
        """Take the next Chat stream of this response (after every MCP call's result)."""
        if self.state is not _BETWEEN:
            raise RuntimeError(
                f"next_round() needs a round that ended; the state is {self.state.name}"
            )
        pending = self.pending_mcp_calls()
        if pending:
            raise RuntimeError(
                f"next_round() before the result of MCP call {pending[0][0]!r}: the model "
                "must see every result"
            )
        self._finish_reason = None
        self._calls = []
        self._round_mcp = []
        self.round_ends_response = False
        self._move(_IDLE)

    def _between_rounds(self, what: str) -> None:
        if self._mcp is None or self.state not in (_IDLE, _BETWEEN) or self._message is not None:
            raise RuntimeError(
                f"{what}() needs an MCP plan and a response between rounds; the state is "
                f"{self.state.name}"
            )

    # --- the end ----------------------------------------------------------------------

    def end_round(self) -> None:
        """The Chat stream ended (``[DONE]``, or its body ended after ``finish_reason``).
        Without MCP calls to run, that ends the response; with some, the round: its items
        are closed, its approval requests announced, and the response waits."""
        if self._mcp is None:
            self.finalize(None)
            return
        if self.state is _BETWEEN or self.state is _FINISHED:
            return
        outcome, _ = finish_outcome(self._finish_reason)
        if (
            outcome != "completed"
            or not self._round_mcp
            or any(not call.announced for call in self._calls)
        ):
            self.finalize(None)
            return
        self._close_round()
        self._earlier_usage = sum_usage(self._earlier_usage, map_usage(self._usage))
        self._usage = None
        self._move(_BETWEEN)

    def _close_round(self) -> None:
        """Close a round that finished: its text and reasoning, the arguments of its MCP
        calls (final now, so they may run), its client calls, then its approval requests."""
        if self._message is not None:
            self._close_message("completed")
        if self.reasoning is not None:
            self._close_reasoning("completed")
        client_calls = False
        for item in self._items:
            if item.status != "in_progress":
                continue
            if isinstance(item, Call):
                self._close_call(item, final=True)
                client_calls = True
            elif isinstance(item, McpCall) and not item.final:
                item.final = True
                self._w.mcp_arguments_done(item.id, item.index, item.arguments())
        for source, tool in self._held:
            index = len(self._items)
            request = Whole(
                mcp_approval_request_item(
                    item_id(self._id, "mcpr", index),
                    tool.server.label,
                    tool.name,
                    source.arguments(),
                ),
                index,
            )
            self._items.append(request)
            self._w.item_added(index, {**request.item, "status": "in_progress"})
            self._w.item_done(index, request.item)
        self.round_ends_response = client_calls or bool(self._held)
        self._held = []

    def finalize(self, error: UpstreamError | None, *, round_bound: bool = False) -> None:
        """Close what is open, choose the outcome and write the terminal event.

        ``round_bound``: the MCP tool loop reached its bound on rounds, so the response
        ends ``incomplete`` (``max_messages``: it may not ask the model again)."""
        reason: str | None = None
        outcome: Outcome
        unnamed = [call for call in self._calls if not call.announced]
        if unnamed and error is None:
            # A call is announced once its name arrives; one that never got a name cannot be
            # executed, and announcing it nameless would invite a client to try.
            error = UpstreamProtocolError(
                "upstream sent a tool call without a function name "
                f"(call id {unnamed[0].upstream_id or 'none'}, arguments "
                f"{preview(joined(unnamed[0].args).encode(), 80)})"
            )
        if error is not None:
            outcome = "failed"
        elif round_bound:
            outcome, reason = "incomplete", "max_messages"
        else:
            outcome, reason = finish_outcome(self._finish_reason)
            if outcome == "failed":
                if self._finish_reason is None:
                    error = UpstreamProtocolError(
                        "upstream stream ended before finish_reason (the reply may be truncated)"
                    )
                else:
                    error = UpstreamReportedError(
                        f"upstream finished with finish_reason {self._finish_reason!r}"
                    )
            elif self._mcp is not None:
                if self.state is not _BETWEEN:
                    self._close_round()
                waiting = self.pending_mcp_calls()
                if waiting:
                    # An MCP call that never ran: the model has no answer to go on.
                    outcome = "failed"
                    error = UpstreamError(
                        f"the response ended before MCP call {waiting[0][0]} returned",
                        code="server_error",
                    )
        cut = outcome != "completed"
        status = "incomplete" if cut else "completed"
        # Close what is still open, in output order.
        for item in [item for item in self._items if item.status == "in_progress"]:
            if isinstance(item, Message):
                self._close_message(status)
            elif isinstance(item, Reasoning):
                self._close_reasoning(status)
            elif isinstance(item, Call):
                self._close_call(item, final=not cut)
            else:
                # An MCP call without a result: it is listed, never shown as finished.
                item.status = "incomplete"
        self._move(_FINISHED)
        response = dict(self._base)
        if not isinstance(self._request.get("model"), str) and self._model:
            response["model"] = self._model
        response["status"] = outcome
        response["output"] = [self._item_dict(item) for item in self._items]
        response["usage"] = sum_usage(self._earlier_usage, map_usage(self._usage))
        if outcome == "completed":
            response["completed_at"] = int(self._clock())
            event_type = "response.completed"
        elif outcome == "incomplete":
            response["incomplete_details"] = {"reason": reason}
            event_type = "response.incomplete"
        else:
            assert error is not None
            response["error"] = error_object(error)
            event_type = "response.failed"
            if self._error_event:
                self._w.error(error)
        self.response = response
        self._w.terminal(event_type, response)

    def fail_plainly(self, error: UpstreamError) -> None:
        """End with ``response.failed`` and nothing else, when finalising itself broke: the
        stream still gets exactly one terminal event."""
        self.state = _FINISHED
        self.fast_part = self.reasoning = None
        response = dict(self._base)
        response["status"] = "failed"
        response["error"] = error_object(error)
        self.response = response
        self._w.terminal("response.failed", response)

    def _item_dict(self, item: _Item) -> dict[str, Any]:
        if isinstance(item, Reasoning):
            return reasoning_item(
                item.id,
                item.status,
                item.text() if item.status != "in_progress" or item.chunks else None,
                "summary" if self._summary else "text",
                item.sealed,
            )
        return item.as_dict()
