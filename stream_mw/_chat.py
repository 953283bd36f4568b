"""The reader of the Chat Completions stream vocabulary: one event's data → plain facts.

Theory of operation
-------------------
``ChatReader.read(chunk)`` turns one parsed ``chat.completion.chunk`` into a list of facts,
in the order the chunk carries them; ``read_payload`` does the same for an event's raw data
(``[DONE]``, blank data) and raises ``UpstreamProtocolError`` for data that is not a JSON
object, as ``read_message`` does for an error event. A fact is a tuple whose first element is
its kind:

=====================  =======================================================
``(MODEL, name)``      the upstream's model name (the first one seen)
``(REASONING, text)``  more reasoning text
``(TEXT, text, lp)``   more answer text, with its mapped logprobs or ``None``
``(REFUSAL, text)``    more refusal text
``(ANNOTATION, a)``    one normalised annotation (a URL citation)
``(NEW_CALL, call)``   a tool call was seen for the first time (name maybe unknown)
``(NAMED, call)``      a call's name is known: it may be announced now
``(ARGUMENTS, c, t)``  more arguments for an announced call
``(FINISH, reason)``   the choice's ``finish_reason``
``(USAGE, usage)``     the chunk's usage (cumulative: the last one wins)
``(FAIL, error)``      the stream must fail here (in-band error, a limit, bad input)
``(END,)``             the stream is over (``[DONE]``, or a lost upstream after finish)
=====================  =======================================================

Within a chunk, reasoning comes first, then content, refusal, annotations and tool calls, so
nothing a chunk carries is dropped and reasoning precedes the text it explains. The reader
never raises for upstream faults while reading a chunk: a fault becomes a ``FAIL`` fact after
the facts that came before it, so what was read before the fault is still shown.

Every provider quirk lives here, so the state machine sees one vocabulary:

- reasoning as ``reasoning_content`` (DeepSeek, Qwen, vLLM), ``reasoning`` (OpenRouter, newer
  vLLM), ``reasoning_details``/``thinking_blocks`` (``reasoning_of``), a Magistral
  ``thinking`` content part (``content_pieces``), or opt-in ``<think>`` tags in the text
  (``ThinkSplitter``, flushed by ``end()``);
- tool calls: a fragment belongs to the call with its upstream ``id``, else to the call at
  its ``index`` (a new ``id`` at a used index is a new call: Ollama puts every call at 0),
  else to the call at its position in the delta; a name repeated on every fragment (Gemini)
  does not start a new call unless the previous call's arguments are whole; arguments sent as
  an object rather than a JSON string are encoded; native custom-tool calls (``custom`` with
  ``input``) and the pre-tools ``function_call`` are read as calls too; once named, a call's
  Chat name is mapped back to the tool the request declared (its namespace, or a custom
  tool, whose one-string arguments the state machine decodes as they stream);
- errors inside a 2xx body (``{"error": …}``, vLLM's ``{"object": "error"}``, ``event:
  error``, llama.cpp's ``error:`` field); ``ProxyApp``'s report that its read failed
  (``upstream_broke_off``) after ``finish_reason`` ends the stream normally, as the reply
  had arrived whole;
- usage in ``usage`` or Groq's ``x_groq.usage``; choices other than index 0 are ignored
  (requests are sent with ``n`` = 1).

The common chunk (one more text, arguments or reasoning string and nothing else) is
recognised first and read without the general walk; ``took`` says which kind it was, so the
caller may learn a byte-level shortcut for the chunks that follow (``_shortcut.py``).
"""

from __future__ import annotations

from typing import Any

import orjson

from ._errors import UpstreamError, UpstreamProtocolError
from ._items import (
    ThinkSplitter,
    content_pieces,
    in_band_error,
    map_logprobs,
    normalise_annotation,
    preview,
    reasoning_of,
)
from ._observe import logger
from ._sse import SSEMessage
from ._tools import ToolMap

__all__ = [
    "ANNOTATION",
    "ARGUMENTS",
    "END",
    "FAIL",
    "FINISH",
    "MODEL",
    "NAMED",
    "NEW_CALL",
    "REASONING",
    "REFUSAL",
    "TEXT",
    "TOOK_ARGUMENTS",
    "TOOK_NONE",
    "TOOK_REASONING",
    "TOOK_REASONING_CONTENT",
    "TOOK_TEXT",
    "ChatCall",
    "ChatReader",
    "Fact",
    "unexpected",
]

_dumps = orjson.dumps
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

TEXT, ARGUMENTS, REASONING, REFUSAL, ANNOTATION = range(5)
NEW_CALL, NAMED, MODEL, FINISH, USAGE, FAIL, END = range(5, 12)
Fact = tuple[Any, ...]
_END: Fact = (END,)

# Which common chunk ``read`` saw (for the caller's shortcut).
TOOK_NONE, TOOK_TEXT, TOOK_ARGUMENTS, TOOK_REASONING_CONTENT, TOOK_REASONING = range(5)

# Delta keys of a text-only delta (``role`` rides on every chunk with some backends), and of
# an arguments-only tool-call delta (``content: null`` rides along with others).
_TEXT_KEYS = frozenset({"content", "role"})
_TOOL_KEYS = frozenset({"tool_calls", "content", "role"})
# Delta keys of a reasoning-only delta, with one of the two reasoning fields (backends that
# send both take the general walk, which reads them as ``reasoning_of`` does).
_REASONING_CONTENT_KEYS = frozenset({"reasoning_content", "content", "role"})
_REASONING_KEYS = frozenset({"reasoning", "content", "role"})

#: The code of the in-band error ``ProxyApp`` sends when its read of the upstream fails.
_UPSTREAM_BROKE_OFF = "upstream_broke_off"


class ChatCall:
    """One upstream tool call as the reader knows it: identity, name and raw arguments."""

    __slots__ = (
        "announced",
        "arg_bytes",
        "args",
        "custom",
        "item",
        "name",
        "namespace",
        "raw_input",
        "tool_name",
        "upstream_id",
    )

    def __init__(self, upstream_id: str | None) -> None:
        self.upstream_id = upstream_id
        #: The Chat function name, once a fragment carried one.
        self.name: str | None = None
        #: A native Chat custom-tool call (OpenAI): ``input`` arrives as is, not as JSON.
        self.raw_input = False
        self.args: list[str] = []
        self.arg_bytes = 0
        #: Whether ``NAMED`` was reported (later arguments are reported as they come).
        self.announced = False
        #: Set with ``NAMED``: the Responses name (as declared, without its namespace), the
        #: namespace it was declared in, and whether it is a custom (freeform) tool.
        self.tool_name = ""
        self.namespace: str | None = None
        self.custom = False
        #: The state machine's item for this call; the reader never reads it.
        self.item: Any = None

    def arguments(self) -> str:
        args = self.args
        if len(args) > 1:
            args[:] = ["".join(args)]
        return args[0] if args else ""


class ChatReader:
    """Reads one Chat Completions stream's chunks into facts (see the module docstring).

    Args:
        label: Names the stream in log messages (the response id).
        tools: The request's tools, to map a called Chat name back to the declared tool.
        think_tags: Read ``<think>…</think>`` in the text as reasoning.
        max_argument_bytes: The bound on one call's arguments; more fails the stream.
    """

    __slots__ = (
        "_by_id",
        "_by_key",
        "_label",
        "_max_arguments",
        "_model",
        "_think",
        "_tools",
        "fast_call",
        "finish_reason",
        "took",
    )

    def __init__(
        self, label: str, tools: ToolMap, *, think_tags: bool, max_argument_bytes: int
    ) -> None:
        self._label = label
        self._tools = tools
        self._think = ThinkSplitter() if think_tags else None
        self._max_arguments = max_argument_bytes
        self._by_key: dict[int, ChatCall] = {}
        self._by_id: dict[str, ChatCall] = {}
        self._model: str | None = None
        #: The finish reason, once a chunk carried one.
        self.finish_reason: str | None = None
        #: Which common chunk the last ``read`` saw (``TOOK_*``).
        self.took = TOOK_NONE
        #: The call the last arguments-only chunk went to; ``None`` once a new call may have
        #: taken over its index.
        self.fast_call: ChatCall | None = None

    # --- whole events -----------------------------------------------------------------

    def read_payload(self, payload: bytes) -> list[Fact]:
        """The facts of one event's data: a chunk, ``[DONE]``, or nothing. Raises
        ``UpstreamProtocolError`` for data that is not a JSON object."""
        if payload[:1] != b"{":
            stripped = payload.strip()
            if stripped == b"[DONE]":
                return self.end([])
            if not stripped:
                return []  # "data:" with nothing after it carries nothing
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
        return self.read(chunk)

    def read_message(self, message: SSEMessage) -> list[Fact]:
        """The facts of an event with fields besides ``data``; raises for error events."""
        if message.error is not None:
            raise in_band_error(_json_or_text(message.error.encode()))
        if message.event == "error":
            raise in_band_error(_json_or_text(message.data))
        return self.read_payload(message.data)

    def end(self, facts: list[Fact]) -> list[Fact]:
        """``facts`` with what the stream's end releases (text held back by the ``<think>``
        reader), then ``END``."""
        self.flush(facts)
        facts.append(_END)
        return facts

    def flush(self, facts: list[Fact]) -> list[Fact]:
        """``facts`` with the text the ``<think>`` reader still holds (once)."""
        if self._think is not None:
            for is_reasoning, piece in self._think.flush():
                facts.append((REASONING, piece) if is_reasoning else (TEXT, piece, None))
        return facts

    # --- one chunk --------------------------------------------------------------------

    def read(self, chunk: dict[str, Any]) -> list[Fact]:
        """The facts of one ``chat.completion.chunk``, in order."""
        self.took = TOOK_NONE
        choices = chunk.get("choices")
        if (
            choices
            and len(choices) == 1
            and chunk.get("usage") is None
            and "error" not in chunk
            and "x_groq" not in chunk
            # Until it is known, the general walk notes the model name.
            and (self._model is not None or not chunk.get("model"))
        ):
            choice = choices[0]
            delta = choice.get("delta")
            content = delta.get("content") if type(delta) is dict else None
            if (
                type(content) is str
                and self._think is None
                and _TEXT_KEYS.issuperset(delta)
                and not choice.get("finish_reason")
                and not choice.get("logprobs")
                and not choice.get("index")
            ):
                # The commonest chunk of all, read here: one more text string.
                self.took = TOOK_TEXT
                return [(TEXT, content, None)] if content else []
            facts = self._read_common(choice)
            if facts is not None:
                return facts
        facts = []
        try:
            self._read_chunk(chunk, facts)
        except UpstreamError as error:
            facts.append((FAIL, error))
        except Exception as error:
            facts.append((FAIL, unexpected(error)))
        return facts

    def more_arguments(self, call: ChatCall, text: str) -> None:
        """More arguments for the announced ``call`` (its next fragment, read by a shortcut,
        which stands for ``(ARGUMENTS, call, text)``). Raises when they break the bound."""
        call.arg_bytes += len(text) if text.isascii() else len(text.encode())
        if call.arg_bytes > self._max_arguments:
            raise self._too_long()
        call.args.append(text)

    def _read_common(self, choice: dict[str, Any]) -> list[Fact] | None:
        """The facts of a chunk that is only one more text, arguments or reasoning string
        (exactly what the general walk gives for it); ``None`` for any other chunk."""
        delta = choice.get("delta")
        if (
            type(delta) is not dict
            or choice.get("finish_reason")
            or choice.get("logprobs")
            or choice.get("index")
        ):
            return None
        content = delta.get("content")
        if type(content) is str:
            if self._think is not None or not _TEXT_KEYS.issuperset(delta):
                return None
            self.took = TOOK_TEXT
            return [(TEXT, content, None)] if content else []
        if content is not None:
            return None
        tool_calls = delta.get("tool_calls")
        if tool_calls and len(tool_calls) == 1 and _TOOL_KEYS.issuperset(delta):
            fragment = tool_calls[0]
            function = fragment.get("function")
            if type(function) is dict and not fragment.get("id") and not function.get("name"):
                arguments = function.get("arguments")
                index = fragment.get("index")
                call = self._by_key.get(0 if index is None else index)
                if (
                    call is not None
                    and call.announced
                    and not call.custom
                    and type(arguments) is str
                ):
                    facts: list[Fact] = []
                    if arguments:
                        self._arguments(call, arguments, facts)
                    self.fast_call = call
                    self.took = TOOK_ARGUMENTS
                    return facts
            return None
        text = delta.get("reasoning_content")
        if text is None:
            took, keys, text = TOOK_REASONING, _REASONING_KEYS, delta.get("reasoning")
        else:
            took, keys = TOOK_REASONING_CONTENT, _REASONING_CONTENT_KEYS
        if type(text) is str and keys.issuperset(delta):
            self.took = took
            return [(REASONING, text)] if text else []
        return None

    def _read_chunk(self, chunk: dict[str, Any], facts: list[Fact]) -> None:
        error = chunk.get("error")
        if error:
            if self.finish_reason is not None and _lost_upstream(error):
                # ProxyApp lost the upstream after the reply arrived whole: as for
                # close(exception), the answer stands.
                logger.debug("%s: upstream lost after finish_reason: %s", self._label, error)
                self.end(facts)
                return
            raise in_band_error(chunk)
        choices = chunk.get("choices")
        if choices:
            if self._model is None:
                model = chunk.get("model")
                if isinstance(model, str) and model:
                    self._model = model
                    facts.append((MODEL, model))
            for choice in choices:
                if choice.get("index"):
                    continue  # n is forced to 1; other choices are not ours to show
                delta = choice.get("delta")
                if delta and self._delta(delta, choice, facts):
                    return
                finish_reason = choice.get("finish_reason")
                if finish_reason:
                    self.finish_reason = str(finish_reason)
                    facts.append((FINISH, self.finish_reason))
        elif chunk.get("object") == "error":
            raise in_band_error(chunk)
        usage = chunk.get("usage")
        if usage:
            facts.append((USAGE, usage))
        else:
            groq = chunk.get("x_groq")
            if isinstance(groq, dict) and groq.get("usage"):
                facts.append((USAGE, groq["usage"]))

    def _delta(self, delta: dict[str, Any], choice: dict[str, Any], facts: list[Fact]) -> bool:
        """Read one delta into ``facts``; whether it ended with ``FAIL``."""
        reasoning = reasoning_of(delta)
        if reasoning:
            facts.append((REASONING, reasoning))
        content = delta.get("content")
        if content:
            if isinstance(content, str):
                self._content(content, choice, facts)
            elif isinstance(content, list):
                for is_reasoning, piece in content_pieces(content):
                    facts.append((REASONING, piece) if is_reasoning else (TEXT, piece, None))
        refusal = delta.get("refusal")
        if refusal and isinstance(refusal, str):
            facts.append((REFUSAL, refusal))
        annotations = delta.get("annotations")
        if annotations and isinstance(annotations, list):
            for raw in annotations:
                annotation = normalise_annotation(raw)
                if annotation is not None:
                    facts.append((ANNOTATION, annotation))
        tool_calls = delta.get("tool_calls")
        if tool_calls and isinstance(tool_calls, list):
            for position, fragment in enumerate(tool_calls):
                if isinstance(fragment, dict) and self._tool_fragment(fragment, position, facts):
                    return True
        function_call = delta.get("function_call")
        if function_call and isinstance(function_call, dict):
            # The pre-tools API: one call per response, no id, no index.
            return self._tool_fragment({"index": -1, "function": function_call}, 0, facts)
        return False

    def _content(self, content: str, choice: dict[str, Any], facts: list[Fact]) -> None:
        logprobs = choice.get("logprobs")
        mapped = map_logprobs(logprobs.get("content")) if isinstance(logprobs, dict) else None
        if self._think is None:
            facts.append((TEXT, content, mapped))
            return
        for is_reasoning, piece in self._think.feed(content):
            if is_reasoning:
                facts.append((REASONING, piece))
            else:
                facts.append((TEXT, piece, mapped))
                mapped = None

    # --- tool calls -------------------------------------------------------------------

    def _tool_fragment(self, fragment: dict[str, Any], position: int, facts: list[Fact]) -> bool:
        """Read one tool-call fragment into ``facts``; whether it ended with ``FAIL``."""
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
        call = self._find_call(fragment, position, name, facts)
        if raw_input:
            call.raw_input = True
        if call.name is None and isinstance(name, str) and name:
            call.name = name
        if arguments is not None and not isinstance(arguments, str):
            # Some backends send the arguments as an object rather than a JSON string.
            arguments = _dumps(arguments).decode()
        if arguments and self._arguments(call, arguments, facts):
            return True
        if not call.announced and call.name is not None:
            target = self._tools.resolve(call.name)
            call.tool_name = target.name
            call.namespace = target.namespace
            call.custom = target.kind == "custom" or call.raw_input
            call.announced = True
            facts.append((NAMED, call))
        return False

    def _find_call(
        self, fragment: dict[str, Any], position: int, name: object, facts: list[Fact]
    ) -> ChatCall:
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
            elif existing.upstream_id is None and not existing.announced:
                existing.upstream_id = upstream_id
                self._by_id[upstream_id] = existing
                return existing
            # Otherwise a different id at a known index (Ollama puts every call at index 0):
            # a new call.
        call = ChatCall(upstream_id)
        # The new call may take over an index the common-chunk path routes by.
        self.fast_call = None
        self._by_key[key] = call
        if upstream_id is not None:
            self._by_id[upstream_id] = call
        facts.append((NEW_CALL, call))
        return call

    def _arguments(self, call: ChatCall, text: str, facts: list[Fact]) -> bool:
        """Add ``text`` to ``call``'s arguments; whether that broke the bound (``FAIL``)."""
        call.arg_bytes += len(text) if text.isascii() else len(text.encode())
        if call.arg_bytes > self._max_arguments:
            facts.append((FAIL, self._too_long()))
            return True
        call.args.append(text)
        if call.announced:
            facts.append((ARGUMENTS, call, text))
        # Otherwise the call is announced, with everything so far, once its name arrives.
        return False

    def _too_long(self) -> UpstreamProtocolError:
        return UpstreamProtocolError(
            f"upstream tool call arguments exceed max_argument_bytes ({self._max_arguments} "
            "bytes); raise Settings.max_argument_bytes to allow larger calls"
        )


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


def unexpected(error: Exception) -> UpstreamError:
    """A bug met while translating, as the error that fails the response."""
    logger.warning("stream_mw could not translate the upstream stream", exc_info=error)
    return UpstreamError(
        f"stream_mw could not translate the upstream stream ({type(error).__name__}: {error})",
        code="server_error",
    )
