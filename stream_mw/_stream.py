"""The sans-IO stream converter: Chat Completions SSE bytes in, Responses SSE bytes out.

Theory of operation
-------------------
``StreamConverter`` joins four small parts, and one upstream chunk passes through them in one
direction:

    bytes ─▶ SSE events ─▶ ``_chat.ChatReader`` ─▶ facts ─▶ ``_state.Translator`` ─▶
    ``_events.EventWriter`` ─▶ bytes

- ``_sse.SSEDecoder`` splits the body into events (bounded, CR/LF/CRLF, BOM, comments);
- the **reader** (``_chat.py``, with ``_calls.py`` for tool-call fragments) turns one
  ``chat.completion.chunk`` into plain facts (``_facts.py``: text, reasoning, refusal,
  annotations, tool-call fragments, usage, finish reason, in-band error); every provider
  quirk lives there;
- the **state machine** (``_state.py``, with the records of its items in ``_output.py``)
  decides which item is open and what finalisation guarantees, and tells the writer which
  events to write; it handles no bytes;
- the **writer** (``_events.py``) numbers the events and frames them as SSE.

The reader imports neither the state machine nor the writer; the state machine imports the
reader's fact vocabulary (not the reader) and the writer; the writer imports neither
(``tests/converter/test_layers.py`` checks this). Nothing here performs I/O, awaits or reads
a clock except through the ``clock`` it was given. ``feed()``, ``keepalive()`` and ``close()``
start the stream implicitly.

Errors never escape ``feed()``: an in-band error, invalid JSON, an illegal move, an event over
``max_event_bytes`` or arguments over ``max_argument_bytes`` end the stream at once with
``response.failed``. Once ``finish_reason`` has arrived the reply is whole, so a close with an
exception, a body that breaks off inside its last event (the usage chunk, ``[DONE]``), or
``ProxyApp``'s in-band report that its read failed still ends with the status that
``finish_reason`` gives; the unfinished event is dropped. The upstream's ``[DONE]`` is never
forwarded (ours follows the terminal event).

Speed: a read is cut into events here, without the decoder, as long as each is one plain
``data: …`` line (what every backend sends); an unfinished last event waits as bytes for the
next read (up to 64 KiB). The decoder takes over for anything else (comments, ``event:``
lines, CRs, a larger event) and hands an unfinished event back once that is all it holds.
Each plain event first meets the byte-level shortcuts (``_shortcut.py``): an event laid out
byte for byte like the previous chunk of the open text part or reasoning item, or of the last
call's arguments, but for its delta string (and OpenAI's random ``obfuscation``), is read
without parsing the chunk; in a read of several events, a run of them is found and read with
one compiled match per event (which finds the event's end and its delta at once), and the
run's deltas are written in one go. This works per event, so it applies whether a read holds
one event, several, or part of one; a read holding only the first part of an event is set
aside at once. Every shortcut gives
exactly the output of the full path, so the output does not depend on how the body was split
into reads. For the commonest read of all, one event that a shortcut reads, ``feed()`` itself
adds the delta to the open item and has the writer frame it, as the state machine would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ._chat import (
    TOOK_ARGUMENTS,
    TOOK_REASONING,
    TOOK_REASONING_CONTENT,
    TOOK_TEXT,
    ChatReader,
    unexpected,
)
from ._errors import UpstreamError, UpstreamProtocolError
from ._events import EventWriter
from ._facts import ChatCall
from ._items import base_response, new_id, preview, reasoning_sealer
from ._observe import logger
from ._settings import Settings
from ._shortcut import Learned, Shortcut
from ._sse import SSEDecoder
from ._state import _BETWEEN, _FINISHED, _NEW, State, Translator
from ._tools import ToolMap

if TYPE_CHECKING:
    from ._mcp._plan import McpPlan, McpTool

__all__ = ["State", "StreamConverter"]


_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_DEFAULT_SETTINGS = Settings()
# The largest unfinished event carried from one read to the next as bytes (joined with the
# next read); a larger one is buffered by the decoder.
_TAIL_MAX = 64 * 1024

# The key whose string value a shortcut swaps out, by the kind of chunk it was learned on.
_SHORTCUT_KEYS = {
    TOOK_TEXT: b'"content":',
    TOOK_ARGUMENTS: b'"arguments":',
    TOOK_REASONING_CONTENT: b'"reasoning_content":',
    TOOK_REASONING: b'"reasoning":',
}


class StreamConverter:
    """Translate one Chat Completions stream into one Responses stream, without I/O.

    ```python
    converter = StreamConverter(request_body, settings)
    send(converter.start())
    async for data in upstream_body:
        send(converter.feed(data))
        if converter.finished:
            break
    send(converter.close())  # always, from a finally: block, with the exception if any
    ```

    Args:
        request: The Responses request body. Its parameters are echoed in the Response
            object and its ``tools`` decide namespace and custom tool calls.
        settings: Limits and stream options (``Settings()`` by default).
        response_id: The ``resp_`` id to use (random by default). Item ids derive from it,
            so a given id makes the output deterministic.
        created_at: Unix seconds for ``created_at`` (``clock()`` by default).
        clock: Returns the time in seconds; read for ``created_at`` and ``completed_at``.
        tenant: Who the response is for. When the request's ``include`` asks for
            ``reasoning.encrypted_content``, each finished reasoning item carries a token of
            its reasoning signed with ``Settings.reasoning_key`` and bound to this tenant
            (in ``output_item.done`` and the terminal response, as OpenAI sends it).
        mcp: The response's remote MCP tools (see "MCP rounds" below).

    MCP rounds
    ----------
    With an ``mcp`` plan, a Chat call of one of its functions becomes an ``mcp_call`` item
    (``response.mcp_call.in_progress``, ``response.mcp_call_arguments.delta`` as the
    arguments stream, ``.done`` when the stream ends), or, for a tool that needs approval,
    an ``mcp_approval_request`` item once the stream ends. A stream that made MCP calls ends
    a *round*, not the response: ``awaiting_mcp`` turns true, the caller runs
    ``pending_mcp_calls()`` and hands each result to ``mcp_call_result()``, then either
    ``next_round()`` and feeds the backend's next stream, or ``close()`` (when
    ``round_ends_response``: the round also made client calls or approval requests; or
    ``close(incomplete=True)`` at its bound on rounds). Sequence numbers and output indexes
    run on across rounds and ``usage`` is their sum::

        send(converter.start())
        for label, tools in listed:  # each server's tools, as the plan offers them
            send(converter.mcp_list_tools(label, tools))
        while True:
            for data in backend(chat_request(converter.output_items())):
                send(converter.feed(data))
            send(converter.end_round())
            if not converter.awaiting_mcp:
                break  # the response ended with this round
            for item_id, tool, arguments in converter.pending_mcp_calls():
                send(converter.mcp_call_result(item_id, output=run(tool, arguments)))
            if converter.round_ends_response:
                break
            converter.next_round()
        send(converter.close())
    """

    __slots__ = (
        "_arguments",
        "_calls",
        "_decoder",
        "_id",
        "_max_event",
        "_max_read",
        "_reader",
        "_reasoning",
        "_tail",
        "_tail_max",
        "_text",
        "_translator",
        "_writer",
    )

    def __init__(
        self,
        request: Mapping[str, Any] | None = None,
        settings: Settings | None = None,
        *,
        response_id: str | None = None,
        created_at: int | None = None,
        clock: Callable[[], float] = time.time,
        tenant: str = "",
        mcp: McpPlan | None = None,
    ) -> None:
        settings = settings if settings is not None else _DEFAULT_SETTINGS
        request = request if request is not None else {}
        self._id = response_id if response_id is not None else new_id("resp")
        self._max_event = settings.max_event_bytes
        self._decoder = SSEDecoder(settings.max_event_bytes)
        # The largest plain event read without the decoder (its blank line included).
        self._max_read = settings.max_event_bytes + 2
        # An unfinished plain event at the end of the last read (the decoder holds nothing).
        self._tail = b""
        self._tail_max = min(_TAIL_MAX, settings.max_event_bytes)
        tools = request.get("tools")
        self._reader = ChatReader(
            self._id,
            ToolMap.from_tools(tools) if tools else ToolMap(),
            think_tags=settings.think_tags,
            max_argument_bytes=settings.max_argument_bytes,
        )
        self._calls = self._reader.calls
        self._writer = EventWriter(done_marker=settings.done_marker)
        created = created_at if created_at is not None else int(clock())
        self._translator = Translator(
            base_response(request, self._id, created, None),
            request,
            self._writer,
            response_id=self._id,
            reasoning_mode=settings.reasoning_events,
            close_partial_tool_calls=settings.close_partial_tool_calls,
            error_event=settings.error_event,
            seal=reasoning_sealer(request, settings, tenant),
            clock=clock,
            think_tags=settings.think_tags,
            mcp=mcp,
        )
        self._text = Learned()
        self._arguments = Learned()
        self._reasoning = Learned()

    # --- public API ---------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the terminal event has been emitted (``feed`` may finish the stream itself:
        on ``[DONE]``, an in-band error or a limit)."""
        return self._translator.state is _FINISHED

    @property
    def response(self) -> dict[str, Any]:
        """The Response object: a snapshot while streaming, the terminal object after."""
        return self._translator.snapshot()

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress``; ``b""`` if already started."""
        if self._translator.state is not _NEW:
            return b""
        self._translator.start()
        return self._writer.take()

    def feed(self, data: bytes) -> bytes:
        """Translate one read of the upstream body (split anywhere) into Responses SSE bytes.

        Starts the stream if needed. Never raises for upstream faults: they end the stream
        with ``response.failed`` (check ``finished``). Returns ``b""`` once finished.
        """
        translator = self._translator
        if type(data) is not bytes:
            data = bytes(data)  # a bytearray or memoryview from a transport
        idle = self._decoder.idle
        if idle:
            # An unfinished event from the last read comes first (the decoder holds nothing).
            if self._tail:
                data = self._tail + data
                self._tail = b""
            if len(data) <= self._max_read:
                # The hot path, inlined: a read of exactly one event that a shortcut reads.
                part = translator.fast_part
                if part is not None:
                    learned = self._text
                    shortcut = learned.shortcut
                    # (A read too short for the layout, such as the first part of an event
                    # split across reads, is not even tried.)
                    size = len(data)
                    if shortcut is not None and learned.holder is part and size >= shortcut.min_len:
                        text = shortcut.delta_in(data, 0, size)
                        if text is not None:
                            if not text:
                                return b""
                            part.chunks.append(text)
                            return self._writer.delta_now(part.template, text)
                call = self._calls.fast_call
                if call is not None and translator.state is not _FINISHED:
                    learned = self._arguments
                    shortcut = learned.shortcut
                    if shortcut is not None and learned.holder is call:
                        text = shortcut.delta_in(data, 0, len(data))
                        if text is not None:
                            if not text:
                                return b""
                            try:
                                self._calls.more(call, text)
                            except UpstreamError as error:
                                self._fail(error)
                                return self._writer.take()
                            # (The arguments shortcut is learned for function calls only.)
                            return translator.argument_now(call, text)
                reasoning = translator.reasoning
                if reasoning is not None:
                    learned = self._reasoning
                    shortcut = learned.shortcut
                    if shortcut is not None and learned.holder is reasoning:
                        text = shortcut.delta_in(data, 0, len(data))
                        if text is not None:
                            if not text:
                                return b""
                            reasoning.chunks.append(text)
                            return self._writer.delta_now(reasoning.template, text)
            if (
                data[-1:] != b"\n"
                and len(data) <= self._tail_max
                and data.find(b"\n") < 0
                and data.find(b"\r") < 0
                and translator.state is not _FINISHED
                and translator.state is not _NEW
            ):
                # The first part of an event (as when every event is split across reads): it
                # waits for the rest without the general path.
                self._tail = data
                return b""
        state = translator.state
        if state is _FINISHED or state is _BETWEEN:
            # (Between rounds: bytes after the stream's ``[DONE]`` belong to no round.)
            return b""
        if state is _NEW:
            translator.start()
        try:
            if idle and data.find(b"\r") < 0:  # (find: far cheaper than `in`)
                size = len(data)
                end = data.find(b"\n")
                if end < 0 and size <= self._tail_max:
                    self._tail = data  # a part of one event: wait for the rest
                elif (
                    end == size - 2
                    and data[-1] == 0x0A
                    and data.startswith(b"data: ")
                    and size <= self._max_read
                ):
                    # The usual read: exactly one plain event, which no shortcut read above.
                    self._parsed_event(data, 0, size)
                else:
                    self._plain_events(data)
            else:
                self._decoded(data)
        except UpstreamError as error:
            self._fail(error)
        except Exception as error:
            self._fail(unexpected(error))
        if translator.state is _BETWEEN:
            # The round is over: no shortcut may add to its calls.
            self._calls.fast_call = None
        out = self._writer.out
        if len(out) == 1:
            return out.pop()
        return self._writer.take()

    def keepalive(self) -> bytes:
        """One ``response.in_progress`` event repeating the in-progress snapshot, with the
        next sequence number (SSE comments do not reset Codex's idle timer). ``b""`` once
        finished; before ``start()``, the start events themselves."""
        state = self._translator.state
        if state is _FINISHED:
            return b""
        if state is _NEW:
            return self.start()
        self._writer.keepalive()
        return self._writer.take()

    def close(self, error: BaseException | None = None, *, incomplete: bool = False) -> bytes:
        """End the stream: the done events, one terminal event and ``[DONE]``.

        Args:
            error: Why the upstream stopped, if it failed. An ``UpstreamError`` keeps its code
                and message; any other exception becomes ``server_error``. Either way the
                response fails, unless the upstream had already sent its ``finish_reason``
                (the reply arrived whole) and no MCP call is waiting. Without an error, an
                unterminated last event is still read (and dropped when it is cut short
                after ``finish_reason``), and a stream that never sent a ``finish_reason``
                fails, as does an MCP call that never got its result.
            incomplete: The MCP tool loop reached its bound on rounds: the response ends
                ``incomplete`` (reason ``max_messages``, the value both the openai SDK and
                Open Responses accept for "no more model turns").

        Works from any state; returns ``b""`` when already finished.
        """
        translator = self._translator
        if translator.state is _FINISHED:
            return b""
        if translator.state is _NEW:
            translator.start()
        reader = self._reader
        try:
            if incomplete and error is None:
                translator.apply(reader.flush([]))
                translator.finalize(None, round_bound=True)
            elif error is None:
                self._drain()
                if not self.finished:
                    self._finish(None)
            elif reader.finish_reason is not None and translator.state is not _BETWEEN:
                logger.debug("%s: upstream failed after finish_reason: %r", self._id, error)
                self._finish(None)
            else:
                self._finish(_upstream_error(error))
        except UpstreamError as failure:
            self._fail(failure)
        except Exception as failure:
            self._fail(unexpected(failure))
        return self._writer.take()

    # --- MCP rounds -----------------------------------------------------------------------

    @property
    def awaiting_mcp(self) -> bool:
        """A round ended with MCP calls: their results, then ``next_round()`` or ``close()``."""
        return self._translator.state is _BETWEEN

    @property
    def round_ends_response(self) -> bool:
        """The last round also made client tool calls or approval requests: once its MCP
        calls have their results, ``close()`` rather than ``next_round()``."""
        return self._translator.round_ends_response

    def end_round(self) -> bytes:
        """The backend's Chat body ended: read what it left unterminated, then end the round
        (with MCP calls to run) or the response. ``b""`` when ``[DONE]`` already did."""
        translator = self._translator
        if translator.state is _FINISHED or translator.state is _BETWEEN:
            return b""
        if translator.state is _NEW:
            translator.start()
        try:
            self._drain()
            if translator.state is not _FINISHED and translator.state is not _BETWEEN:
                translator.apply(self._reader.flush([]))
                translator.end_round()
        except UpstreamError as failure:
            self._fail(failure)
        except Exception as failure:
            self._fail(unexpected(failure))
        self._calls.fast_call = None
        return self._writer.take()

    def next_round(self) -> None:
        """Read the backend's next Chat stream into the same response: a new message item
        for its text, calls counted from index 0 again. Raises ``RuntimeError`` unless a
        round ended and every MCP call has its result."""
        self._translator.next_round()
        self._reader.next_stream()
        self._decoder = SSEDecoder(self._max_event)
        self._tail = b""
        self._text = Learned()
        self._arguments = Learned()
        self._reasoning = Learned()

    def pending_mcp_calls(self) -> list[tuple[str, McpTool, str]]:
        """The MCP calls to run before the next round: ``(item id, tool, arguments)``."""
        return self._translator.pending_mcp_calls()

    def mcp_call_result(
        self,
        item_id: str,
        *,
        output: str | None = None,
        error: str | Mapping[str, Any] | None = None,
    ) -> bytes:
        """The MCP server's answer to a pending call: ``response.mcp_call.completed`` and
        the call's ``output_item.done``; with ``error``, ``response.mcp_call.failed``.
        ``error`` is a message (an ``mcp_tool_execution_error``) or an object already shaped
        as one of the openai SDK's ``McpToolCallError`` types."""
        self._translator.mcp_call_result(item_id, output, error)
        return self._writer.take()

    def mcp_list_tools(
        self, server_label: str, tools: Iterable[McpTool | Mapping[str, Any]]
    ) -> bytes:
        """An ``mcp_list_tools`` item for the tools ``server_label`` offers (``McpTool``s or
        entries already in the item's shape): added, in progress, completed, done."""
        listed = [tool.listing() if not isinstance(tool, Mapping) else dict(tool) for tool in tools]
        head = self.start()
        self._translator.mcp_list_tools(server_label, listed, None)
        return head + self._writer.take()

    def mcp_list_tools_failed(self, server_label: str, message: str) -> bytes:
        """An ``mcp_list_tools`` item that failed (its ``error`` says why); the caller then
        ends the response with ``close(error)``."""
        head = self.start()
        self._translator.mcp_list_tools(server_label, None, message)
        return head + self._writer.take()

    def open_mcp_call(
        self, tool: McpTool, arguments: str, approval_request_id: str
    ) -> tuple[str, bytes]:
        """An ``mcp_call`` the user approved on the previous turn (its arguments whole),
        waiting for ``mcp_call_result``: its item id, and its events."""
        head = self.start()
        call_id = self._translator.open_mcp_call(tool, arguments, approval_request_id)
        return call_id, head + self._writer.take()

    def output_items(self) -> list[dict[str, Any]]:
        """The output items so far (finished ones in their done form), to replay to the
        backend in the next round's request."""
        return self._translator.output_items()

    # --- reads ----------------------------------------------------------------------------

    def _drain(self) -> None:
        """Read what the body left unterminated (its last event may lack the blank line),
        stopping where the stream or the round ended."""
        translator = self._translator
        reader = self._reader
        tail = self._take_tail()
        if tail:
            self._decoder.feed_data(tail)  # no blank line in it: nothing to dispatch
        for message in self._decoder.flush():
            try:
                translator.apply(reader.read_message(message))
            except UpstreamProtocolError as unfinished:
                if reader.finish_reason is None:
                    raise
                # The body broke off inside the usage chunk or ``[DONE]``: the reply
                # itself arrived whole, so the unfinished event is dropped.
                logger.debug("%s: dropped after finish_reason: %s", self._id, unfinished)
                return
            if translator.state is _FINISHED or translator.state is _BETWEEN:
                return

    def _take_tail(self) -> bytes:
        tail = self._tail
        self._tail = b""
        return tail

    def _plain_events(self, data: bytes) -> None:
        """Translate the plain events of a read (the decoder holds nothing, no CR in it);
        the rest goes to the decoder, or waits for the next read as ``_tail``."""
        size = len(data)
        limit = self._max_read
        translator = self._translator
        find = data.find
        pos = 0
        # The shortcuts that may read the next event: for the open text part or reasoning
        # item (never both), and for the last call's arguments. A run of deltas a shortcut
        # read is written in one go when the run ends.
        target, shortcut, call, call_shortcut = self._shortcuts()
        texts: list[str] = []
        arguments: list[str] = []
        while True:
            # A run of events a shortcut reads, found and read in one go (the deltas are
            # written when the run ends, in order: only one of the two lists is ever filled).
            if shortcut is not None:
                after = shortcut.run(data, pos, limit, texts)
                if after != pos:
                    if arguments:
                        self._more_arguments(call, arguments)  # type: ignore[arg-type]
                        arguments = []
                    pos = after
            if call_shortcut is not None:
                after = call_shortcut.run(data, pos, limit, arguments)
                if after != pos:
                    if texts:
                        translator.more_deltas(target, texts)  # type: ignore[arg-type]
                        texts = []
                    pos = after
            # A plain event is one line: its first line feed is the first of its two (a
            # one-byte search is far cheaper than one for the blank line).
            end = find(b"\n", pos)
            if end < 0 or end + 1 == size:
                break
            stop = end + 2
            if data[end + 1] == 0x0A and stop - pos <= limit:
                # Shortcuts first: a match is a plain event (its layout was learned from one,
                # and the delta between is one JSON string, with no line break).
                if shortcut is not None:
                    text = shortcut.delta_in(data, pos, stop)
                    if text is not None:
                        if arguments:
                            self._more_arguments(call, arguments)  # type: ignore[arg-type]
                            arguments = []
                        if text:
                            texts.append(text)
                        pos = stop
                        continue
                if call_shortcut is not None:
                    text = call_shortcut.delta_in(data, pos, stop)
                    if text is not None:
                        if texts:
                            translator.more_deltas(target, texts)  # type: ignore[arg-type]
                            texts = []
                        if text:
                            arguments.append(text)
                        pos = stop
                        continue
                if texts:
                    translator.more_deltas(target, texts)  # type: ignore[arg-type]
                    texts = []
                if arguments:
                    self._more_arguments(call, arguments)  # type: ignore[arg-type]
                    arguments = []
                if data.startswith(b"data: ", pos):
                    self._parsed_event(data, pos, stop)
                    if translator.state is _FINISHED or translator.state is _BETWEEN:
                        return
                    pos = stop
                    target, shortcut, call, call_shortcut = self._shortcuts()
                    continue
            if texts:
                translator.more_deltas(target, texts)  # type: ignore[arg-type]
                texts = []
            if arguments:
                self._more_arguments(call, arguments)  # type: ignore[arg-type]
                arguments = []
            # A line break inside the event, or an event over the bound: the decoder reads
            # it (and reports the oversized one).
            self._decoded(data[pos:])
            return
        if texts:
            translator.more_deltas(target, texts)  # type: ignore[arg-type]
        if arguments:
            self._more_arguments(call, arguments)  # type: ignore[arg-type]
        if pos < size:
            rest = data[pos:] if pos else data
            if len(rest) > self._tail_max:
                # A large event builds up in the decoder's buffer (which also reports one
                # over the bound), not by joining reads.
                self._decoded(rest)
            else:
                self._tail = rest

    def _shortcuts(self) -> tuple[object, Shortcut | None, ChatCall | None, Shortcut | None]:
        """The open item text streams into (a text part or a reasoning item) and the
        shortcut learned for it; the last call arguments went to and its shortcut."""
        translator = self._translator
        target: object = translator.fast_part
        learned = self._text
        if target is None:
            target, learned = translator.reasoning, self._reasoning
        shortcut = learned.shortcut if target is not None and learned.holder is target else None
        call = self._calls.fast_call
        learned = self._arguments
        if call is None or learned.holder is not call or translator.state is _FINISHED:
            return target, shortcut, None, None
        return target, shortcut, call, learned.shortcut

    def _more_arguments(self, call: ChatCall, texts: list[str]) -> None:
        """Arguments deltas a shortcut read for ``call``, up to the one that breaks the
        bound (which raises)."""
        calls = self._calls
        taken = calls.extend(call, texts)
        if taken < len(texts):
            self._translator.more_arguments(call, texts[:taken])
            raise calls.too_long()
        self._translator.more_arguments(call, texts)

    def _parsed_event(self, data: bytes, pos: int, stop: int) -> None:
        """The plain event ``data[pos:stop]``, parsed and read in full; its layout may teach
        a shortcut for the chunks that follow."""
        translator = self._translator
        reader = self._reader
        payload = data[pos + 6 : stop - 2]
        if payload[:1] != b"{":
            translator.apply(reader.read_payload(payload))
            return
        try:
            chunk = _loads(payload)
        except _JSONDecodeError as error:
            raise UpstreamProtocolError(
                f"upstream sent invalid JSON: {error}; data: {preview(payload)}"
            ) from None
        if type(chunk) is not dict:
            translator.apply(reader.read_payload(payload))
            return
        translator.apply(reader.read(chunk))
        took = reader.took
        if took:
            holder: object
            if took == TOOK_TEXT:
                holder, learned = translator.fast_part, self._text
            elif took == TOOK_ARGUMENTS:
                holder, learned = self._calls.fast_call, self._arguments
            else:
                holder, learned = translator.reasoning, self._reasoning
            # (Skipped once this holder's layout has been given up: it would change nothing.)
            if holder is not None and (
                holder is not learned.holder or learned.tries > 0 or learned.shortcut is not None
            ):
                event = data[pos:stop] if pos or stop != len(data) else data
                learned.update(holder, event, _SHORTCUT_KEYS[took])

    def _decoded(self, data: bytes) -> None:
        """Translate a read the general SSE decoder must see."""
        decoder = self._decoder
        translator = self._translator
        reader = self._reader
        for message in decoder.feed_data(data):
            if type(message) is bytes:
                translator.apply(reader.read_payload(message))
            else:
                translator.apply(reader.read_message(message))  # type: ignore[arg-type]
            if translator.state is _FINISHED or translator.state is _BETWEEN:
                return
        if decoder.error is not None:
            raise decoder.error
        # Take back a small unfinished event, so the next read is cut here again.
        self._tail = decoder.release(self._tail_max)

    # --- the end --------------------------------------------------------------------------

    def _finish(self, error: UpstreamError | None) -> None:
        translator = self._translator
        translator.apply(self._reader.flush([]))
        translator.finalize(error)

    def _fail(self, error: UpstreamError) -> None:
        if self._translator.state is _FINISHED:
            logger.debug("%s: error after the terminal event, ignored: %s", self._id, error)
            return
        logger.debug("%s: failing the response: %s", self._id, error.message)
        try:
            self._finish(error)
        except Exception as bug:
            # Finalising itself broke: still end the stream with exactly one terminal event.
            logger.warning("stream_mw could not finalise %s", self._id, exc_info=bug)
            self._translator.fail_plainly(error)


def _upstream_error(error: BaseException) -> UpstreamError:
    if isinstance(error, UpstreamError):
        return error
    detail = str(error)
    name = type(error).__name__
    return UpstreamError(
        f"upstream request failed: {name}: {detail}"
        if detail
        else f"upstream request failed: {name}",
        code="server_error",
    )
