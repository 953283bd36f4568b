"""The sans-IO stream converter: Chat Completions SSE bytes in, Responses SSE bytes out.

Theory of operation
-------------------
Three layers, each incremental: ``SSEDecoder`` (bytes → event data), the translator below
(one ``chat.completion.chunk`` → zero or more Responses events) and the encoder (events →
``event: …\\ndata: …\\n\\n`` bytes). ``StreamConverter.feed()`` runs all three on whatever bytes
the upstream produced; nothing here performs I/O, awaits or reads a clock except through the
``clock`` it was given.

States (``State``) say which item is taking deltas:

- ``NEW`` → ``IDLE`` on ``start()`` (``response.created``, ``response.in_progress``);
  ``feed()``, ``keepalive()`` and ``close()`` start implicitly.
- reasoning (``reasoning_content``, ``reasoning``, ``reasoning_details``/``thinking_blocks``,
  a Magistral ``thinking`` part, opt-in ``<think>`` tags) → ``REASONING``: a reasoning item
  is opened, closing an open message first.
- ``content`` or ``refusal`` → ``MESSAGE``: a message item is opened (closing an open
  reasoning item first, so reasoning always precedes the text it explains); a refusal after
  text (or text after a refusal) opens a new content part in the same message.
- a tool-call fragment for a new call → ``TOOL_CALLS``: an open message or reasoning item is
  closed, and a ``function_call`` (or, for a custom tool, ``custom_tool_call``) item is added
  once the call's name is known. A fragment belongs to the call with its upstream ``id``,
  else to the call at its ``index`` (a new ``id`` at a used index is a new call: Ollama),
  else to the call at its position in the delta. Calls stay open until the end: fragments of
  parallel calls may interleave, and text after the calls opens a *new* message item at the
  next ``output_index``.
- ``finish_reason`` is only recorded: usage arrives after it. ``[DONE]`` or ``close()``
  finalises (→ ``DONE``).

Within one chunk, reasoning, then content, then refusal, then annotations, then tool calls
are processed, so nothing a chunk carries is dropped. Every move goes through ``_move``,
which checks ``_TRANSITIONS``; an illegal move, an in-band error, invalid JSON, an event over
``max_event_bytes`` or arguments over ``max_argument_bytes`` all end the stream at once with
``response.failed``: errors never escape ``feed()``.

The outcome is chosen at finalisation: an error, or no ``finish_reason`` at all, fails the
response; ``length``/``model_length`` give ``response.incomplete`` (``max_output_tokens``),
``content_filter`` gives ``response.incomplete`` (``content_filter``), ``error`` fails, and
anything else (``stop``, ``tool_calls``, ``function_call``, unknown words) completes. A call
whose name never arrived fails the response too: it cannot be executed, so it is never
announced.

What finalisation guarantees (``docs/design.md``, Guarantees): an open reasoning or message
item gets its done events (``*.done``, ``content_part.done``, ``output_item.done``), with
status ``incomplete`` when the response was cut short; a call gets
``function_call_arguments.done`` (``custom_tool_call_input.done``) and ``output_item.done``
only when the response completes (its arguments are final), and neither when it was cut
short, unless ``Settings.close_partial_tool_calls``; then exactly one terminal event
(``response.completed``, ``response.incomplete``, or ``response.failed`` preceded by an ``error`` event when
``Settings.error_event``), then ``data: [DONE]`` when ``Settings.done_marker``, then nothing.
The terminal ``output`` lists every item that was announced, with the streamed ids and final
content; a call that never got its done events is listed with status ``incomplete`` and the
arguments (input) its deltas carried.

Speed: text, argument and reasoning deltas are written from ``%``-templates prepared when
their item opens (only the sequence number and the JSON-encoded delta change), text is kept as
a list of fragments joined once at the end, and full Response snapshots are built only for the
lifecycle events. A read holding exactly one plain event skips the SSE decoder; a chunk that
is only more text (more arguments, more reasoning) skips the general dispatch; and a read laid
out byte for byte like the previous such chunk but for its delta string (and OpenAI's random
``obfuscation`` string) skips parsing the chunk at all (``_Shortcut``). Each shortcut gives
exactly the output of the full path, so the output still does not depend on how the body was
split into reads.

Deliberate deviations: the upstream's ``[DONE]`` is never forwarded (ours follows the terminal
event); choices other than index 0 are ignored (requests are sent with ``n`` = 1); once
``finish_reason`` has arrived the reply is whole, so a close with an exception, a body that
breaks off inside its last event (the usage chunk, ``[DONE]``), or ``ProxyApp``'s in-band
report that its read failed (code ``upstream_broke_off``) still ends with the status that
``finish_reason`` gives; the unfinished event is dropped.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import orjson

from ._errors import UpstreamError, UpstreamProtocolError, UpstreamReportedError
from ._items import (
    Outcome,
    ThinkSplitter,
    base_response,
    content_pieces,
    custom_input_of,
    custom_tool_call_item,
    error_object,
    finish_outcome,
    function_call_item,
    in_band_error,
    item_id,
    map_logprobs,
    map_usage,
    message_item,
    new_id,
    normalise_annotation,
    output_text_part,
    preview,
    random_part,
    reasoning_item,
    reasoning_of,
    reasoning_sealer,
    refusal_part,
)
from ._observe import logger
from ._settings import Settings
from ._sse import SSEDecoder, SSEMessage, encode_event
from ._tools import ToolMap

__all__ = ["State", "StreamConverter"]

_dumps = orjson.dumps
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_DEFAULT_SETTINGS = Settings()
_DONE_MARKER = b"data: [DONE]\n\n"
# Delta keys of a text-only delta (``role`` rides on every chunk with some backends), and of
# an arguments-only tool-call delta (``content: null`` rides along with others).
_TEXT_KEYS = frozenset({"content", "role"})
_TOOL_KEYS = frozenset({"tool_calls", "content", "role"})
# Delta keys of a reasoning-only delta, with one of the two reasoning fields (backends that
# send both take the full path, which reads them as ``reasoning_of`` does).
_REASONING_CONTENT_KEYS = frozenset({"reasoning_content", "content", "role"})
_REASONING_KEYS = frozenset({"reasoning", "content", "role"})
# Which fast path a chunk took.
_TOOK_NONE, _TOOK_TEXT, _TOOK_ARGUMENTS, _TOOK_REASONING_CONTENT, _TOOK_REASONING = range(5)


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
    #: The terminal event has been sent; all further input is ignored.
    DONE = "done"


_NEW, _IDLE, _REASONING, _MESSAGE, _TOOL_CALLS, _FINISHED = State

#: The only moves the translator makes; anything else is a bug and fails the response.
_TRANSITIONS: dict[State, frozenset[State]] = {
    _NEW: frozenset({_IDLE}),
    _IDLE: frozenset({_REASONING, _MESSAGE, _TOOL_CALLS, _FINISHED}),
    _REASONING: frozenset({_MESSAGE, _TOOL_CALLS, _FINISHED}),
    _MESSAGE: frozenset({_REASONING, _TOOL_CALLS, _FINISHED}),
    _TOOL_CALLS: frozenset({_REASONING, _MESSAGE, _FINISHED}),
    _FINISHED: frozenset(),
}


class _IllegalTransition(UpstreamProtocolError):
    """The translator was asked for a move its table does not allow (a bug, reported as a
    failed response rather than a half-finished stream)."""


def _delta_template(
    event_type: str,
    item_id: str,
    output_index: int,
    index_name: str | None = None,
    index: int = 0,
    tail: str = "}",
) -> bytes:
    """A delta event as a ``%``-template: ``template % (sequence_number, json(delta))``.

    Everything but the sequence number and the delta is fixed when the item or part opens, so
    a delta costs one ``orjson.dumps`` of a string and one formatting operation.
    """
    fixed = f',"item_id":{_dumps(item_id).decode()},"output_index":{output_index}'
    if index_name is not None:
        fixed += f',"{index_name}":{index}'
    head = f'event: {event_type}\ndata: {{"type":"{event_type}","sequence_number":'
    template = head.replace("%", "%%") + "%d" + fixed.replace("%", "%%") + ',"delta":%s'
    return (template + tail + "\n\n").encode()


# Pattern of the one string value the shortcut below swaps out.
_CONTENT_KEY = b'"content":'
_ARGUMENTS_KEY = b'"arguments":'
_SHORTCUT_KEYS = {
    _TOOK_TEXT: _CONTENT_KEY,
    _TOOK_ARGUMENTS: _ARGUMENTS_KEY,
    _TOOK_REASONING_CONTENT: b'"reasoning_content":',
    _TOOK_REASONING: b'"reasoning":',
}
_JSON_STRING = re.compile(rb'"(?:[^"\\\x00-\x1f]|\\.)*"')
# A top-level string nothing reads, which OpenAI fills with random padding on every chunk
# (``stream_options.include_obfuscation``): the shortcut lets it vary too.
_IGNORED_KEY = b'"obfuscation":'
# A shortcut that served this many reads may be re-learned when the chunk layout drifts
# (llama.cpp's ``created`` ticks every second); one that did not is given up after a few
# tries (a layout that changes some other way on every chunk).
_SHORTCUT_PROVEN = 16
_SHORTCUT_TRIES = 3


class _Shortcut:
    """The bytes of a read around the one delta string that changes from chunk to chunk.

    Most backends send every text (arguments, reasoning) chunk of a stream with identical
    bytes but for the delta string: same id, created, model, fingerprint, keys and key order.
    Once one such read has been parsed in full and translated, a later read that starts with
    the same ``prefix`` and ends with the same ``suffix`` is the same JSON document with
    another string in that place, provided what lies between is exactly one JSON string
    (checked by parsing it alone). Such a read is translated by decoding that string only,
    with exactly the result of the full path. Anything else (a finish reason, usage, another
    field) changes the bytes around the string and takes the full path.

    When the chunk also carries OpenAI's ``obfuscation`` string after the delta, the bytes
    after the delta are ``gap``, that string, then ``suffix``; both strings may vary, and each
    is checked to be exactly one JSON string. The full path never reads ``obfuscation``, so
    its value cannot change the translation.
    """

    __slots__ = ("end", "gap", "hits", "min_len", "prefix", "start", "suffix")

    def __init__(self, prefix: bytes, suffix: bytes, gap: bytes = b"") -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.gap = gap
        self.start = len(prefix)
        self.end = len(suffix)
        self.min_len = self.start + self.end + (len(gap) + 4 if gap else 2)
        self.hits = 0

    def delta_end(self, data: bytes) -> int:
        """Where the delta string of ``data`` (which starts with ``prefix`` and ends with
        ``suffix``) ends: before ``gap``, when what follows ``gap`` is one JSON string; else
        ``start`` (an empty delta, which no read takes the shortcut with)."""
        stop = len(data) - self.end
        gap = self.gap
        at = data.rfind(gap, self.start, stop)
        if at < 0:
            return self.start
        ignored = data[at + len(gap) : stop]
        if ignored[:1] != b'"' or ignored[-1:] != b'"':
            return self.start
        try:
            value = _loads(ignored)
        except _JSONDecodeError:
            return self.start
        return at if type(value) is str else self.start

    def delta_in(self, data: bytes) -> str | None:
        """The delta string of ``data`` when ``data`` has this layout, else ``None``."""
        if not (
            data.startswith(self.prefix)
            and data.endswith(self.suffix)
            and len(data) >= self.min_len
        ):
            return None
        if self.gap:
            middle = data[self.start : self.delta_end(data)]
        else:
            middle = data[self.start : len(data) - self.end]
        # Quotes at both ends: whitespace around the string would be a line break outside it
        # (which SSE reads differently).
        if middle[-1:] != b'"' or middle[:1] != b'"':
            return None
        try:
            value = _loads(middle)
        except _JSONDecodeError:
            return None
        if type(value) is not str:
            return None
        self.hits += 1
        return value


def _learn(data: bytes, key: bytes) -> _Shortcut | None:
    """The shortcut for ``data`` (one plain event) around the string value of ``key``, when
    ``key`` occurs exactly once (an unescaped quote cannot occur inside a JSON string, so
    each match is a real key)."""
    at = data.find(key)
    if at < 0 or data.find(key, at + 1) >= 0:
        return None
    start = at + len(key)
    match = _JSON_STRING.match(data, start)
    if match is None:
        return None
    ignored = data.find(_IGNORED_KEY, match.end())
    if (
        ignored >= 0
        and data.find(_IGNORED_KEY, ignored + 1) < 0
        and data.find(_IGNORED_KEY) == ignored
    ):
        value_at = ignored + len(_IGNORED_KEY)
        value = _JSON_STRING.match(data, value_at)
        if value is not None:
            return _Shortcut(data[:start], data[value.end() :], data[match.end() : value_at])
    return _Shortcut(data[:start], data[match.end() :])


def _joined(chunks: list[str]) -> str:
    """The fragments as one string, joined once and kept joined (later reads are free)."""
    if len(chunks) > 1:
        chunks[:] = ["".join(chunks)]
    return chunks[0] if chunks else ""


class _Streamed:
    """Text that streams as delta events: its fragments, its delta template and shortcut."""

    __slots__ = ("chunks", "shortcut", "template", "tries")

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.template = b""
        self.shortcut: _Shortcut | None = None
        self.tries = _SHORTCUT_TRIES

    def text(self) -> str:
        return _joined(self.chunks)


class _Part(_Streamed):
    """One content part of a message: ``output_text`` or ``refusal``."""

    __slots__ = ("annotations", "index", "kind", "logprobs", "template_lp")

    def __init__(self, kind: Literal["output_text", "refusal"], index: int) -> None:
        super().__init__()
        self.kind = kind
        self.index = index
        self.logprobs: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        # The delta template with the delta's logprobs (a third ``%s``).
        self.template_lp = b""

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "refusal":
            return refusal_part(self.text())
        return output_text_part(self.text(), self.annotations, self.logprobs)


class _Message:
    __slots__ = ("id", "index", "part", "parts", "status")

    def __init__(self, item_id: str, index: int) -> None:
        self.id = item_id
        self.index = index
        self.parts: list[_Part] = []
        self.part: _Part | None = None
        self.status = "in_progress"

    def as_dict(self) -> dict[str, Any]:
        return message_item(self.id, self.status, [p.as_dict() for p in self.parts])


class _Reasoning(_Streamed):
    __slots__ = ("id", "index", "sealed", "status")

    def __init__(self, item_id: str, index: int) -> None:
        super().__init__()
        self.id = item_id
        self.index = index
        self.status = "in_progress"
        #: The ``encrypted_content`` token, made once when the item is done (if asked for).
        self.sealed: str | None = None


class _Call:
    """A function or custom tool call. ``index is None`` until its name is known and its
    ``output_item.added`` has been sent."""

    __slots__ = (
        "arg_bytes",
        "args",
        "call_id",
        "custom",
        "decoder",
        "done",
        "id",
        "index",
        "name",
        "namespace",
        "raw_input",
        "shortcut",
        "status",
        "streamed",
        "template",
        "tool_name",
        "tries",
        "upstream_id",
    )

    def __init__(self, upstream_id: str | None) -> None:
        self.upstream_id = upstream_id
        self.id = ""
        self.index: int | None = None
        self.call_id = ""
        #: The Chat function name the upstream called.
        self.name: str | None = None
        #: The Responses name (as declared, without its namespace).
        self.tool_name = ""
        self.namespace: str | None = None
        self.custom = False
        # A native Chat custom-tool call (OpenAI): ``input`` arrives as is, not as JSON.
        self.raw_input = False
        self.args: list[str] = []
        self.arg_bytes = 0
        self.status = "in_progress"
        #: Whether its done events were sent (its arguments are final, or closed by setting).
        self.done = False
        self.decoder: _InputDecoder | None = None
        # The custom-tool input sent so far as deltas.
        self.streamed: list[str] = []
        # Set with ``output_item.added``; a fragment may take the fast path only after it.
        self.template = b""
        self.shortcut: _Shortcut | None = None
        self.tries = _SHORTCUT_TRIES

    def arguments(self) -> str:
        return _joined(self.args)

    def final_input(self) -> str:
        arguments = self.arguments()
        if self.raw_input:
            return arguments
        decoder = self.decoder
        if decoder is not None and decoder.state in (_InputDecoder.INSIDE, _InputDecoder.CLOSED):
            try:
                _loads(arguments)
            except _JSONDecodeError:
                # Cut short: the input is what could be decoded.
                return "".join(self.streamed)
        return custom_input_of(arguments)

    def as_dict(self) -> dict[str, Any]:
        if self.custom:
            # Until its done events, a call shows only the input its deltas carried.
            text = self.final_input() if self.done else "".join(self.streamed)
            return custom_tool_call_item(self.id, self.status, self.call_id, self.tool_name, text)
        return function_call_item(
            self.id, self.status, self.call_id, self.tool_name, self.arguments(), self.namespace
        )


_INPUT_START = re.compile(r'\s*\{\s*"input"\s*:\s*"')
_INPUT_PREFIX = '{"input":"'
_STRING_BODY = re.compile(r'(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*')
_ESCAPE_PREFIX = re.compile(r"\\(u[0-9a-fA-F]{0,3})?\Z")
_HIGH_SURROGATE_TAIL = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\Z")


class _InputDecoder:
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
    """

    __slots__ = (
        "_base",
        "_by_id",
        "_by_key",
        "_calls",
        "_clock",
        "_decoder",
        "_fast_call",
        "_fast_part",
        "_finish_reason",
        "_id",
        "_items",
        "_max_read",
        "_message",
        "_model",
        "_out",
        "_reasoning",
        "_reasoning_mode",
        "_request",
        "_response",
        "_seal",
        "_seq",
        "_settings",
        "_snapshot_json",
        "_state",
        "_stem",
        "_text_part",
        "_think",
        "_tools",
        "_usage",
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
    ) -> None:
        self._settings = settings if settings is not None else _DEFAULT_SETTINGS
        self._request: Mapping[str, Any] = request if request is not None else {}
        self._seal = reasoning_sealer(self._request, self._settings, tenant)
        self._id = response_id if response_id is not None else new_id("resp")
        self._stem = random_part(self._id)
        self._clock = clock
        self._decoder = SSEDecoder(self._settings.max_event_bytes)
        # The largest single-event read that may bypass the decoder (its blank line included).
        self._max_read = self._settings.max_event_bytes + 2
        tools = self._request.get("tools")
        self._tools = ToolMap.from_tools(tools) if tools else ToolMap()
        self._reasoning_mode: Literal["text", "summary"] = self._settings.reasoning_events
        self._think = ThinkSplitter() if self._settings.think_tags else None
        self._state = _NEW
        self._seq = 0
        self._out: list[bytes] = []
        self._items: list[_Message | _Reasoning | _Call] = []
        self._message: _Message | None = None
        self._text_part: _Part | None = None
        # The open output_text part when its deltas may skip every check (no think tags).
        self._fast_part: _Part | None = None
        # The call whose arguments-only fragments last took the fast path (and may now take
        # its shortcut); cleared whenever a new call could take over its index.
        self._fast_call: _Call | None = None
        self._reasoning: _Reasoning | None = None
        self._calls: list[_Call] = []
        self._by_key: dict[int, _Call] = {}
        self._by_id: dict[str, _Call] = {}
        self._finish_reason: str | None = None
        self._usage: object = None
        self._model: str | None = None
        self._response: dict[str, Any] | None = None
        created = created_at if created_at is not None else int(clock())
        self._base = base_response(self._request, self._id, created, None)
        self._snapshot_json = b""

    # --- public API ---------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the terminal event has been emitted (``feed`` may finish the stream itself:
        on ``[DONE]``, an in-band error or a limit)."""
        return self._state is _FINISHED

    @property
    def response(self) -> dict[str, Any]:
        """The Response object: a snapshot while streaming, the terminal object after."""
        if self._response is not None:
            return self._response
        snapshot = dict(self._base)
        snapshot["output"] = [self._item_dict(item) for item in self._items]
        return snapshot

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress``; ``b""`` if already started."""
        if self._state is not _NEW:
            return b""
        self._start()
        return self._take()

    def _text_by_shortcut(self, target: _Streamed, data: bytes) -> bytes | None:
        """The delta event for ``data`` when it is one more chunk of ``target``'s layout."""
        shortcut = target.shortcut
        if shortcut is None:
            return None
        text = shortcut.delta_in(data)
        if text is None:
            return None
        if not text:
            return b""
        target.chunks.append(text)
        seq = self._seq
        self._seq = seq + 1
        return target.template % (seq, _dumps(text))

    def feed(self, data: bytes) -> bytes:
        """Translate one read of the upstream body (split anywhere) into Responses SSE bytes.

        Starts the stream if needed. Never raises for upstream faults: they end the stream
        with ``response.failed`` (check ``finished``). Returns ``b""`` once finished.
        """
        if type(data) is not bytes:
            data = bytes(data)  # a bytearray or memoryview from a transport
        single = False
        if self._decoder.idle and len(data) <= self._max_read:
            # Shortcuts first: a read that is one more text (or arguments) chunk laid out
            # exactly like the previous ones (see ``_Shortcut``).
            part = self._fast_part
            if part is not None:
                event = self._text_by_shortcut(part, data)
                if event is not None:
                    return event
            call = self._fast_call
            if call is not None and call.shortcut is not None:
                arguments = call.shortcut.delta_in(data)
                if arguments is not None:
                    if arguments:
                        try:
                            self._arguments(call, arguments)
                        except UpstreamError as error:
                            self._fail(error)
                    return self._take()
            reasoning = self._reasoning
            if reasoning is not None:
                event = self._text_by_shortcut(reasoning, data)
                if event is not None:
                    return event
            # The usual read: exactly one plain event. The decoder has nothing buffered, so
            # its work reduces to these checks.
            single = (
                data.endswith(b"\n\n")
                and data.startswith(b"data: ")
                and data.find(b"\n", 6) == len(data) - 2
                and b"\r" not in data
            )
        state = self._state
        if state is _FINISHED:
            return b""
        if state is _NEW:
            self._start()
        try:
            if single:
                payload = data[6:-2]
                chunk = _loads(payload) if payload[:1] == b"{" else None
                if type(chunk) is dict:
                    took = self._on_chunk(chunk)
                    if took:
                        self._learn_shortcut(took, data)
                else:
                    self._payload(payload)
            else:
                decoder = self._decoder
                for message in decoder.feed_data(data):
                    if type(message) is bytes:
                        self._payload(message)
                    else:
                        self._payload(self._special(message))  # type: ignore[arg-type]
                    if self._state is _FINISHED:
                        break
                else:
                    if decoder.error is not None:
                        raise decoder.error
        except _JSONDecodeError as error:
            self._fail(
                UpstreamProtocolError(
                    f"upstream sent invalid JSON: {error}; data: {preview(data[6:-2])}"
                )
            )
        except UpstreamError as error:
            self._fail(error)
        except Exception as error:
            self._fail(_unexpected(error))
        out = self._out
        if len(out) == 1:
            return out.pop()
        return self._take()

    def keepalive(self) -> bytes:
        """One ``response.in_progress`` event repeating the in-progress snapshot, with the
        next sequence number (SSE comments do not reset Codex's idle timer). ``b""`` once
        finished; before ``start()``, the start events themselves."""
        if self._state is _FINISHED:
            return b""
        if self._state is _NEW:
            return self.start()
        self._lifecycle("response.in_progress", self._snapshot_json)
        return self._take()

    def close(self, error: BaseException | None = None) -> bytes:
        """End the stream: the done events, one terminal event and ``[DONE]``.

        Args:
            error: Why the upstream stopped, if it failed. An ``UpstreamError`` keeps its code
                and message; any other exception becomes ``server_error``. Either way the
                response fails, unless the upstream had already sent its ``finish_reason``
                (the reply arrived whole). Without an error, an unterminated last event is
                still read (and dropped when it is cut short after ``finish_reason``), and a
                stream that never sent a ``finish_reason`` fails.

        Works from any state; returns ``b""`` when already finished.
        """
        if self._state is _FINISHED:
            return b""
        if self._state is _NEW:
            self._start()
        try:
            if error is None:
                for message in self._decoder.flush():
                    try:
                        self._payload(self._special(message))
                    except UpstreamProtocolError as unfinished:
                        if self._finish_reason is None:
                            raise
                        # The body broke off inside the usage chunk or ``[DONE]``: the reply
                        # itself arrived whole, so the unfinished event is dropped.
                        logger.debug("%s: dropped after finish_reason: %s", self._id, unfinished)
                        break
                    if self.finished:
                        return self._take()
                self._finalize(None)
            elif self._finish_reason is not None:
                logger.debug("%s: upstream failed after finish_reason: %r", self._id, error)
                self._finalize(None)
            else:
                self._finalize(_upstream_error(error))
        except UpstreamError as failure:
            self._fail(failure)
        except Exception as failure:
            self._fail(_unexpected(failure))
        return self._take()

    # --- plumbing -----------------------------------------------------------------------

    def _take(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()
        return data

    def _move(self, to: State) -> None:
        if to not in _TRANSITIONS[self._state]:
            raise _IllegalTransition(
                f"stream_mw translator cannot move from {self._state.name} to {to.name}"
            )
        self._state = to

    def _emit(self, event_type: str, fields: dict[str, Any]) -> None:
        seq = self._seq
        self._seq = seq + 1
        body = {"type": event_type, "sequence_number": seq}
        body.update(fields)
        self._out.append(encode_event(event_type, _dumps(body)))

    def _lifecycle(self, event_type: str, response_json: bytes) -> None:
        seq = self._seq
        self._seq = seq + 1
        name = event_type.encode()
        self._out.append(
            b'event: %s\ndata: {"type":"%s","sequence_number":%d,"response":%s}\n\n'
            % (name, name, seq, response_json)
        )

    def _start(self) -> None:
        self._move(_IDLE)
        self._snapshot_json = _dumps(self._base)
        self._lifecycle("response.created", self._snapshot_json)
        self._lifecycle("response.in_progress", self._snapshot_json)

    def _special(self, message: SSEMessage) -> bytes:
        """The data of an event with fields besides ``data``; raises for error events."""
        if message.error is not None:
            raise in_band_error(_json_or_text(message.error.encode()))
        if message.event == "error":
            raise in_band_error(_json_or_text(message.data))
        return message.data

    def _learn_shortcut(self, took: int, data: bytes) -> None:
        holder: _Part | _Call | _Reasoning | None
        if took == _TOOK_TEXT:
            holder = self._fast_part
        elif took == _TOOK_ARGUMENTS:
            holder = self._fast_call
        else:
            holder = self._reasoning
        if holder is None:
            return
        shortcut = holder.shortcut
        if shortcut is None or shortcut.hits < _SHORTCUT_PROVEN:
            if holder.tries <= 0:
                holder.shortcut = None  # this upstream's layout varies: stop trying
                return
            holder.tries -= 1
        holder.shortcut = _learn(data, _SHORTCUT_KEYS[took])

    def _payload(self, payload: bytes) -> None:
        """One event's data: a chunk, ``[DONE]``, or nothing."""
        if payload[:1] != b"{":
            stripped = payload.strip()
            if stripped == b"[DONE]":
                self._finalize(None)
                return
            if not stripped:
                return  # "data:" with nothing after it carries nothing
        try:
            chunk = _loads(payload)
        except _JSONDecodeError as error:
            raise UpstreamProtocolError(
                f"upstream sent invalid JSON: {error}; data: {preview(payload)}"
            ) from None
        if type(chunk) is not dict:
            raise UpstreamProtocolError(
                f"upstream sent a JSON {type(chunk).__name__} where a "
                f"chat.completion.chunk object belongs: {preview(payload)}"
            )
        self._on_chunk(chunk)

    # --- chunks ---------------------------------------------------------------------------

    def _on_chunk(self, chunk: dict[str, Any]) -> int:
        """Translate one chunk; returns which fast path it took (``_TOOK_*``), if any."""
        choices = chunk.get("choices")
        if (
            choices
            and len(choices) == 1
            and chunk.get("usage") is None
            and "error" not in chunk
            and "x_groq" not in chunk
        ):
            # Fast paths for the chunks that make up nearly every stream: more text for the
            # open part, more arguments for an announced call, and more reasoning for the
            # open reasoning item. Anything unusual in the chunk (a finish reason, logprobs,
            # another field) takes the full path below.
            choice = choices[0]
            delta = choice.get("delta")
            if (
                type(delta) is dict
                and not choice.get("finish_reason")
                and not choice.get("logprobs")
                and not choice.get("index")
            ):
                content = delta.get("content")
                if type(content) is str:
                    part = self._fast_part
                    if part is not None and _TEXT_KEYS.issuperset(delta):
                        if content:
                            part.chunks.append(content)
                            seq = self._seq
                            self._seq = seq + 1
                            self._out.append(part.template % (seq, _dumps(content)))
                        return _TOOK_TEXT
                elif content is None:
                    tool_calls = delta.get("tool_calls")
                    if tool_calls and len(tool_calls) == 1 and _TOOL_KEYS.issuperset(delta):
                        fragment = tool_calls[0]
                        function = fragment.get("function")
                        if (
                            type(function) is dict
                            and not fragment.get("id")
                            and not function.get("name")
                        ):
                            arguments = function.get("arguments")
                            index = fragment.get("index")
                            call = self._by_key.get(0 if index is None else index)
                            if (
                                call is not None
                                and call.template
                                and not call.custom
                                and type(arguments) is str
                            ):
                                if arguments:
                                    self._arguments(call, arguments)
                                self._fast_call = call
                                return _TOOK_ARGUMENTS
                    reasoning = self._reasoning
                    if reasoning is not None:
                        # Exactly what _delta does with it (see reasoning_of), when the delta
                        # holds nothing else.
                        text = delta.get("reasoning_content")
                        if text is None:
                            took, keys, text = (
                                _TOOK_REASONING,
                                _REASONING_KEYS,
                                delta.get("reasoning"),
                            )
                        else:
                            took, keys = _TOOK_REASONING_CONTENT, _REASONING_CONTENT_KEYS
                        if type(text) is str and keys.issuperset(delta):
                            if text:
                                reasoning.chunks.append(text)
                                seq = self._seq
                                self._seq = seq + 1
                                self._out.append(reasoning.template % (seq, _dumps(text)))
                            return took
        self._full_chunk(chunk)
        return _TOOK_NONE

    def _full_chunk(self, chunk: dict[str, Any]) -> None:
        error = chunk.get("error")
        if error:
            if self._finish_reason is not None and _lost_upstream(error):
                # ProxyApp lost the upstream after the reply arrived whole: as for
                # close(exception), the answer stands.
                logger.debug("%s: upstream lost after finish_reason: %s", self._id, error)
                self._finalize(None)
                return
            raise in_band_error(chunk)
        choices = chunk.get("choices")
        if choices:
            if self._model is None:
                model = chunk.get("model")
                if isinstance(model, str) and model:
                    self._model = model
            for choice in choices:
                if choice.get("index"):
                    continue  # n is forced to 1; other choices are not ours to show
                delta = choice.get("delta")
                if delta:
                    self._delta(delta, choice)
                finish_reason = choice.get("finish_reason")
                if finish_reason:
                    self._finish_reason = str(finish_reason)
        elif chunk.get("object") == "error":
            raise in_band_error(chunk)
        usage = chunk.get("usage")
        if usage:
            self._usage = usage  # cumulative usage on every chunk: the last one wins
        else:
            groq = chunk.get("x_groq")
            if isinstance(groq, dict) and groq.get("usage"):
                self._usage = groq["usage"]

    def _delta(self, delta: dict[str, Any], choice: dict[str, Any]) -> None:
        # One delta may carry everything at once; this order keeps reasoning before the text
        # it explains and text before the calls it announces.
        reasoning = reasoning_of(delta)
        if reasoning:
            self._reasoning_delta(reasoning)
        content = delta.get("content")
        if content:
            if isinstance(content, str):
                self._content(content, choice)
            elif isinstance(content, list):
                for is_reasoning, piece in content_pieces(content):
                    if is_reasoning:
                        self._reasoning_delta(piece)
                    else:
                        self._text(piece, None)
        refusal = delta.get("refusal")
        if refusal and isinstance(refusal, str):
            self._refusal(refusal)
        annotations = delta.get("annotations")
        if annotations and isinstance(annotations, list):
            self._annotations(annotations)
        tool_calls = delta.get("tool_calls")
        if tool_calls and isinstance(tool_calls, list):
            for position, fragment in enumerate(tool_calls):
                if isinstance(fragment, dict):
                    self._tool_fragment(fragment, position)
        function_call = delta.get("function_call")
        if function_call and isinstance(function_call, dict):
            # The pre-tools API: one call per response, no id, no index.
            self._tool_fragment({"index": -1, "function": function_call}, 0)

    def _content(self, content: str, choice: dict[str, Any]) -> None:
        logprobs = choice.get("logprobs")
        mapped = map_logprobs(logprobs.get("content")) if isinstance(logprobs, dict) else None
        if self._think is None:
            self._text(content, mapped)
            return
        for is_reasoning, piece in self._think.feed(content):
            if is_reasoning:
                self._reasoning_delta(piece)
            else:
                self._text(piece, mapped)
                mapped = None

    # --- message items --------------------------------------------------------------------

    def _open_message(self) -> _Message:
        message = self._message
        if message is not None:
            return message
        if self._state is _REASONING:
            self._close_reasoning("completed")
        self._move(_MESSAGE)
        index = len(self._items)
        message = _Message(item_id(self._id, "msg", index), index)
        self._items.append(message)
        self._message = message
        self._emit(
            "response.output_item.added",
            {"output_index": index, "item": message_item(message.id, "in_progress", [])},
        )
        return message

    def _open_part(self, kind: Literal["output_text", "refusal"]) -> _Part:
        message = self._open_message()
        if message.part is not None:
            self._close_part(message, message.part)
        part = _Part(kind, len(message.parts))
        message.parts.append(part)
        message.part = part
        where = (message.id, message.index, "content_index", part.index)
        if kind == "output_text":
            part.template = _delta_template("response.output_text.delta", *where, ',"logprobs":[]}')
            part.template_lp = _delta_template(
                "response.output_text.delta", *where, ',"logprobs":%s}'
            )
            self._text_part = part
            if self._think is None:
                self._fast_part = part
        else:
            part.template = _delta_template("response.refusal.delta", *where)
        self._emit(
            "response.content_part.added",
            {
                "item_id": message.id,
                "output_index": message.index,
                "content_index": part.index,
                "part": output_text_part("") if kind == "output_text" else refusal_part(""),
            },
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
        seq = self._seq
        self._seq = seq + 1
        if logprobs:
            part.logprobs.extend(logprobs)
            self._out.append(part.template_lp % (seq, _dumps(text), _dumps(logprobs)))
        else:
            self._out.append(part.template % (seq, _dumps(text)))

    def _refusal(self, text: str) -> None:
        message = self._message
        part = message.part if message is not None else None
        if part is None or part.kind != "refusal":
            part = self._open_part("refusal")
        part.chunks.append(text)
        seq = self._seq
        self._seq = seq + 1
        self._out.append(part.template % (seq, _dumps(text)))

    def _annotations(self, annotations: list[Any]) -> None:
        for raw in annotations:
            annotation = normalise_annotation(raw)
            if annotation is None:
                continue
            part = self._text_part
            if part is None:
                part = self._open_part("output_text")
            message = self._message
            assert message is not None
            self._emit(
                "response.output_text.annotation.added",
                {
                    "item_id": message.id,
                    "output_index": message.index,
                    "content_index": part.index,
                    "annotation_index": len(part.annotations),
                    "annotation": annotation,
                },
            )
            part.annotations.append(annotation)

    def _close_part(self, message: _Message, part: _Part) -> None:
        text = part.text()
        where = {"item_id": message.id, "output_index": message.index, "content_index": part.index}
        if part.kind == "output_text":
            self._emit(
                "response.output_text.done", {**where, "text": text, "logprobs": part.logprobs}
            )
            self._text_part = self._fast_part = None
        else:
            self._emit("response.refusal.done", {**where, "refusal": text})
        self._emit("response.content_part.done", {**where, "part": part.as_dict()})
        message.part = None

    def _close_message(self, status: str) -> None:
        message = self._message
        assert message is not None
        if message.part is not None:
            self._close_part(message, message.part)
        message.status = status
        self._emit(
            "response.output_item.done", {"output_index": message.index, "item": message.as_dict()}
        )
        self._message = None

    # --- reasoning items ------------------------------------------------------------------

    def _reasoning_delta(self, text: str) -> None:
        if not text:
            return
        reasoning = self._reasoning
        if reasoning is None:
            reasoning = self._open_reasoning()
        reasoning.chunks.append(text)
        seq = self._seq
        self._seq = seq + 1
        self._out.append(reasoning.template % (seq, _dumps(text)))

    def _open_reasoning(self) -> _Reasoning:
        if self._state is _MESSAGE:
            self._close_message("completed")
        self._move(_REASONING)
        index = len(self._items)
        reasoning = _Reasoning(item_id(self._id, "rs", index), index)
        self._items.append(reasoning)
        self._reasoning = reasoning
        mode = self._reasoning_mode
        self._emit(
            "response.output_item.added",
            {
                "output_index": index,
                "item": reasoning_item(reasoning.id, "in_progress", None, mode),
            },
        )
        where = {"item_id": reasoning.id, "output_index": index}
        if mode == "text":
            reasoning.template = _delta_template(
                "response.reasoning_text.delta", reasoning.id, index, "content_index", 0
            )
            self._emit(
                "response.content_part.added",
                {**where, "content_index": 0, "part": {"type": "reasoning_text", "text": ""}},
            )
        else:
            reasoning.template = _delta_template(
                "response.reasoning_summary_text.delta", reasoning.id, index, "summary_index", 0
            )
            self._emit(
                "response.reasoning_summary_part.added",
                {**where, "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
            )
        return reasoning

    def _close_reasoning(self, status: str) -> None:
        reasoning = self._reasoning
        assert reasoning is not None
        text = reasoning.text()
        where = {"item_id": reasoning.id, "output_index": reasoning.index}
        if self._reasoning_mode == "text":
            self._emit("response.reasoning_text.done", {**where, "content_index": 0, "text": text})
            self._emit(
                "response.content_part.done",
                {**where, "content_index": 0, "part": {"type": "reasoning_text", "text": text}},
            )
        else:
            self._emit(
                "response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": text}
            )
            self._emit(
                "response.reasoning_summary_part.done",
                {**where, "summary_index": 0, "part": {"type": "summary_text", "text": text}},
            )
        reasoning.status = status
        if self._seal is not None:
            reasoning.sealed = self._seal(text)
        self._emit(
            "response.output_item.done",
            {"output_index": reasoning.index, "item": self._item_dict(reasoning)},
        )
        self._reasoning = None

    # --- tool calls -----------------------------------------------------------------------

    def _tool_fragment(self, fragment: dict[str, Any], position: int) -> None:
        function = fragment.get("function")
        custom = fragment.get("custom")
        raw_input = False
        if not isinstance(function, dict) and isinstance(custom, dict):
            function = {"name": custom.get("name"), "arguments": custom.get("input")}
            raw_input = True
        elif not isinstance(function, dict):
            function = {}
        name = function.get("name")
        arguments = function.get("arguments")
        call = self._find_call(fragment, position, name)
        if raw_input:
            call.raw_input = True
        if call.name is None and isinstance(name, str) and name:
            call.name = name
        if arguments is not None and not isinstance(arguments, str):
            # Some backends send the arguments as an object rather than a JSON string.
            arguments = _dumps(arguments).decode()
        if arguments:
            self._arguments(call, arguments)
        if call.index is None and call.name is not None:
            self._add_call(call)

    def _find_call(self, fragment: dict[str, Any], position: int, name: object) -> _Call:
        """The call a fragment belongs to: by upstream id, else by index (else position)."""
        upstream_id = fragment.get("id")
        if not (isinstance(upstream_id, str) and upstream_id):
            upstream_id = None
        else:
            known = self._by_id.get(upstream_id)
            if known is not None:
                return known
        index = fragment.get("index")
        indexed = isinstance(index, int) and not isinstance(index, bool)
        key: int = index if isinstance(index, int) and indexed else position
        existing = self._by_key.get(key)
        if existing is not None:
            if upstream_id is None:
                # Without an id, an explicit index is the call's identity (a name may be
                # repeated on every fragment). Without either, a name starts a new call when
                # the previous one has another name or its arguments are already whole.
                if (
                    indexed
                    or not (isinstance(name, str) and name and existing.name)
                    or (name == existing.name and not _complete_json(existing.arguments()))
                ):
                    return existing
            elif existing.upstream_id is None and existing.index is None:
                existing.upstream_id = upstream_id
                self._by_id[upstream_id] = existing
                return existing
            # Otherwise a different id at a known index (Ollama puts every call at index 0):
            # a new call.
        call = _Call(upstream_id)
        # The new call may take over an index the fast path routes by.
        self._fast_call = None
        self._by_key[key] = call
        if upstream_id is not None:
            self._by_id[upstream_id] = call
        self._calls.append(call)
        return call

    def _arguments(self, call: _Call, text: str) -> None:
        call.arg_bytes += len(text) if text.isascii() else len(text.encode())
        limit = self._settings.max_argument_bytes
        if call.arg_bytes > limit:
            raise UpstreamProtocolError(
                f"upstream tool call arguments exceed max_argument_bytes ({limit} bytes); "
                "raise Settings.max_argument_bytes to allow larger calls"
            )
        call.args.append(text)
        if call.index is not None:
            self._argument_delta(call, text)
        # Otherwise the call is announced, with everything so far, once its name arrives.

    def _argument_delta(self, call: _Call, text: str) -> None:
        if call.custom:
            if not call.raw_input:
                assert call.decoder is not None
                text = call.decoder.feed(text)
            if not text:
                return
            call.streamed.append(text)
        seq = self._seq
        self._seq = seq + 1
        self._out.append(call.template % (seq, _dumps(text)))

    def _add_call(self, call: _Call) -> None:
        if self._state is _MESSAGE:
            self._close_message("completed")
        elif self._state is _REASONING:
            self._close_reasoning("completed")
        if self._state is not _TOOL_CALLS:
            self._move(_TOOL_CALLS)
        index = len(self._items)
        target = self._tools.resolve(call.name or "")
        call.index = index
        call.tool_name = target.name
        call.namespace = target.namespace
        call.custom = target.kind == "custom" or call.raw_input
        call.call_id = call.upstream_id or f"call_{self._stem}_{index}"
        self._items.append(call)
        if call.custom:
            call.id = item_id(self._id, "ctc", index)
            call.decoder = _InputDecoder()
            item = custom_tool_call_item(call.id, "in_progress", call.call_id, call.tool_name, "")
            call.template = _delta_template("response.custom_tool_call_input.delta", call.id, index)
        else:
            call.id = item_id(self._id, "fc", index)
            item = function_call_item(
                call.id, "in_progress", call.call_id, call.tool_name, "", call.namespace
            )
            call.template = _delta_template(
                "response.function_call_arguments.delta", call.id, index
            )
        self._emit("response.output_item.added", {"output_index": index, "item": item})
        if call.args:
            self._argument_delta(call, call.arguments())

    def _close_call(self, call: _Call, final: bool) -> None:
        call.status = "completed" if final else "incomplete"
        if not (final or self._settings.close_partial_tool_calls):
            # Both done events mean "final": llama-index builds a call from
            # function_call_arguments.done and Codex runs one on output_item.done, so a cut
            # call gets neither and is listed as incomplete in the terminal output.
            return
        call.done = True
        where = {"item_id": call.id, "output_index": call.index}
        if call.custom:
            text = call.final_input()
            streamed = "".join(call.streamed)
            if len(text) > len(streamed) and text.startswith(streamed):
                rest = text[len(streamed) :]
                call.streamed.append(rest)
                self._emit("response.custom_tool_call_input.delta", {**where, "delta": rest})
            elif text != streamed:
                logger.debug("%s: custom tool input differs from what streamed", self._id)
            self._emit("response.custom_tool_call_input.done", {**where, "input": text})
        else:
            self._emit(
                "response.function_call_arguments.done",
                {**where, "name": call.tool_name, "arguments": call.arguments()},
            )
        self._emit(
            "response.output_item.done", {"output_index": call.index, "item": call.as_dict()}
        )

    # --- the end ----------------------------------------------------------------------------

    def _fail(self, error: UpstreamError) -> None:
        if self._state is _FINISHED:
            logger.debug("%s: error after the terminal event, ignored: %s", self._id, error)
            return
        logger.debug("%s: failing the response: %s", self._id, error.message)
        try:
            self._finalize(error)
        except Exception as bug:
            # Finalising itself broke: still end the stream with exactly one terminal event.
            logger.warning("stream_mw could not finalise %s", self._id, exc_info=bug)
            self._state = _FINISHED
            self._fast_part = self._fast_call = self._reasoning = None
            response = dict(self._base)
            response["status"] = "failed"
            response["error"] = error_object(error)
            self._response = response
            self._lifecycle("response.failed", _dumps(response))
            if self._settings.done_marker:
                self._out.append(_DONE_MARKER)

    def _finalize(self, error: UpstreamError | None) -> None:
        self._fast_call = None
        if self._think is not None:
            for is_reasoning, piece in self._think.flush():
                if is_reasoning:
                    self._reasoning_delta(piece)
                else:
                    self._text(piece, None)
        reason: str | None = None
        outcome: Outcome
        unnamed = [call for call in self._calls if call.index is None]
        if unnamed and error is None:
            # A call is announced once its name arrives; one that never got a name cannot be
            # executed, and announcing it nameless would invite a client to try.
            error = UpstreamProtocolError(
                "upstream sent a tool call without a function name "
                f"(call id {unnamed[0].upstream_id or 'none'}, arguments "
                f"{preview(unnamed[0].arguments().encode(), 80)})"
            )
        if error is not None:
            outcome = "failed"
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
        cut = outcome != "completed"
        status = "incomplete" if cut else "completed"
        # Close what is still open, in output order.
        for item in [item for item in self._items if item.status == "in_progress"]:
            if isinstance(item, _Message):
                self._close_message(status)
            elif isinstance(item, _Reasoning):
                self._close_reasoning(status)
            else:
                self._close_call(item, final=not cut)
        self._move(_FINISHED)
        response = dict(self._base)
        if not isinstance(self._request.get("model"), str) and self._model:
            response["model"] = self._model
        response["status"] = outcome
        response["output"] = [self._item_dict(item) for item in self._items]
        response["usage"] = map_usage(self._usage)
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
            if self._settings.error_event:
                self._emit("error", _error_event_fields(error))
        self._response = response
        self._lifecycle(event_type, _dumps(response))
        if self._settings.done_marker:
            self._out.append(_DONE_MARKER)

    def _item_dict(self, item: _Message | _Reasoning | _Call) -> dict[str, Any]:
        if isinstance(item, _Reasoning):
            return reasoning_item(
                item.id,
                item.status,
                item.text() if item.status != "in_progress" or item.chunks else None,
                self._reasoning_mode,
                item.sealed,
            )
        return item.as_dict()


# The nested error's ``type`` for a code, as the middleware's HTTP error bodies name it.
_ERROR_TYPES = {
    "context_length_exceeded": "invalid_request_error",
    "invalid_prompt": "invalid_request_error",
    "rate_limit_exceeded": "rate_limit_error",
    "insufficient_quota": "rate_limit_error",
}


def _error_event_fields(error: UpstreamError) -> dict[str, Any]:
    """The ``error`` event's fields, flat and nested at once.

    The openai SDKs' ``ResponseErrorEvent`` model has ``code``/``message``/``param`` at the
    top; openai-python's stream reader raises ``APIError`` only when the event carries an
    ``error`` object, and the Open Responses schema requires exactly that object
    (``{type, code, message, param}``). Each reader ignores the other's keys, so one event
    with both satisfies them all.
    """
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


#: The code of the in-band error ``ProxyApp`` sends when its read of the upstream fails.
_UPSTREAM_BROKE_OFF = "upstream_broke_off"


def _lost_upstream(error: object) -> bool:
    """Whether an in-band error is a proxy's report of a failed read (a transport failure
    that only ends the body early), rather than the upstream's own error."""
    return isinstance(error, dict) and error.get("code") == _UPSTREAM_BROKE_OFF


def _complete_json(text: str) -> bool:
    if not text:
        return False
    try:
        _loads(text)
    except _JSONDecodeError:
        return False
    return True


def _json_or_text(data: bytes) -> object:
    try:
        return _loads(data)
    except _JSONDecodeError:
        return data.decode("utf-8", "replace").strip()


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


def _unexpected(error: Exception) -> UpstreamError:
    logger.warning("stream_mw could not translate the upstream stream", exc_info=error)
    return UpstreamError(
        f"stream_mw could not translate the upstream stream ({type(error).__name__}: {error})",
        code="server_error",
    )
