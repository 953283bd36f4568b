"""The reader of the Chat Completions stream vocabulary: one event's data → plain facts.

Theory of operation
-------------------
``ChatReader.read(chunk)`` turns one parsed ``chat.completion.chunk`` into a list of facts,
in the order the chunk carries them; ``read_payload`` does the same for an event's raw data
(``[DONE]``, blank data) and raises ``UpstreamProtocolError`` for data that is not a JSON
object, as ``read_message`` does for an error event. A fact is a tuple whose first element is
its kind (``_facts.py``, shared with the state machine):

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
- tool calls: which call a fragment belongs to (by upstream ``id``, ``index`` or position,
  as Ollama, Gemini and vLLM differ), arguments sent as objects, native custom-tool calls,
  the pre-tools ``function_call`` and the bound on arguments are kept by ``_calls.Calls``;
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

from ._calls import Calls
from ._errors import UpstreamError, UpstreamProtocolError
from ._facts import (
    ANNOTATION,
    END,
    FAIL,
    FINISH,
    MODEL,
    REASONING,
    REFUSAL,
    TEXT,
    USAGE,
    Fact,
)
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
    "TOOK_ARGUMENTS",
    "TOOK_NONE",
    "TOOK_REASONING",
    "TOOK_REASONING_CONTENT",
    "TOOK_TEXT",
    "ChatReader",
    "unexpected",
]

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

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


class ChatReader:
    """Reads one Chat Completions stream's chunks into facts (see the module docstring).

    Args:
        label: Names the stream in log messages (the response id).
        tools: The request's tools, to map a called Chat name back to the declared tool.
        think_tags: Read ``<think>…</think>`` in the text as reasoning.
        max_argument_bytes: The bound on one call's arguments; more fails the stream.
    """

    __slots__ = ("_label", "_model", "_think", "calls", "finish_reason", "took")

    def __init__(
        self, label: str, tools: ToolMap, *, think_tags: bool, max_argument_bytes: int
    ) -> None:
        self._label = label
        self._think = ThinkSplitter() if think_tags else None
        #: The stream's tool calls (``calls.fast_call``: where arguments-only chunks go).
        self.calls = Calls(tools, max_argument_bytes)
        self._model: str | None = None
        #: The finish reason, once a chunk carried one.
        self.finish_reason: str | None = None
        #: Which common chunk the last ``read`` saw (``TOOK_*``).
        self.took = TOOK_NONE

    def next_stream(self) -> None:
        """Read another Chat stream of the same response (an MCP tool loop's next round):
        call indexes, the finish reason and the ``<think>`` reader start afresh."""
        self.calls.clear()
        self.finish_reason = None
        self.took = TOOK_NONE
        if self._think is not None:
            self._think = ThinkSplitter()

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
                calls = self.calls
                call = calls.by_key.get(0 if index is None else index)
                if (
                    call is not None
                    and call.announced
                    and not call.custom
                    and not call.held
                    and type(arguments) is str
                ):
                    facts: list[Fact] = []
                    if arguments:
                        calls.add(call, arguments, facts)
                    calls.fast_call = call
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
                if isinstance(fragment, dict) and self.calls.fragment(fragment, position, facts):
                    return True
        function_call = delta.get("function_call")
        if function_call and isinstance(function_call, dict):
            # The pre-tools API: one call per response, no id, no index.
            return self.calls.fragment({"index": -1, "function": function_call}, 0, facts)
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


def _lost_upstream(error: object) -> bool:
    """Whether an in-band error is a proxy's report of a failed read (a transport failure
    that only ends the body early), rather than the upstream's own error."""
    return isinstance(error, dict) and error.get("code") == _UPSTREAM_BROKE_OFF


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
