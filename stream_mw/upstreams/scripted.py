"""A scripted Chat Completions backend: real ``chat.completion.chunk`` SSE, no model needed.

``ScriptedBackend`` is an ASGI app that answers ``POST /v1/chat/completions`` by replaying
``Turn`` objects, one per request, in order. It is the gateway's embedded demo backend and a
test double for your own suites::

    backend = ScriptedBackend([
        Turn.tool_call("get_weather", {"city": "Paris"}),
        Turn.text("It is sunny in Paris."),
    ])
    app = ResponsesMiddleware(backend)
    ...
    assert backend.requests[1].body["messages"][-1]["role"] == "tool"

What one turn streams, chunk by chunk (``drop_after=N`` ends the body after the first N):

1. the role chunk (``delta: {"role": "assistant", "content": ""}``);
2. the reasoning, as ``reasoning_content`` fragments;
3. the text, as ``content`` fragments;
4. per tool call: one chunk with its ``id``, ``name`` and empty ``arguments``, then the
   arguments in fragments;
5. then either the in-band error (``data: {"error": ...}``), or the ``finish_reason`` chunk
   and, when the request asked for ``stream_options.include_usage``, the usage chunk;
6. ``data: [DONE]``.

Strings are split into ``fragments`` pieces of about equal size, or, by default, into words,
as a model's tokens would arrive. A turn with an HTTP ``status`` other than 200 answers with an
OpenAI-shaped JSON error before any byte of a stream. Delays simulate a slow model: ``delay``
before the response starts, ``chunk_delay`` between chunks.

Requests are recorded (``ScriptedBackend.requests``, also served as JSON at
``GET /_scripted/requests`` with credentials redacted), so tests can assert what the
middleware sent upstream. ``/v1/models`` lists the backend's model.

Deliberate simplifications: one choice per response (``n`` is ignored); a drop ends the body
cleanly, as a server that stops mid-answer and closes the connection would.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ._asgi import serve_lifespan

__all__ = [
    "RecordedRequest",
    "ScriptedBackend",
    "ToolCall",
    "Turn",
    "demo_reply",
    "load_script",
]

#: The model name ``/v1/models`` lists and chunks report when the request names none.
DEFAULT_MODEL = "scripted-model"

_WORDS = re.compile(r"\s*\S+\s*|\s+")
_REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key"})


@dataclass(frozen=True)
class ToolCall:
    """One function call a turn makes.

    Args:
        name: The function name, as the request's tools name it.
        arguments: The arguments JSON string, streamed in fragments.
        call_id: The call's ``id``; a fresh ``call_...`` id when omitted.
    """

    name: str
    arguments: str = "{}"
    call_id: str | None = None


@dataclass(frozen=True)
class Turn:
    """One scripted reply. Build it with ``Turn.text``, ``Turn.tool_call`` or ``Turn.error``,
    or with the constructor, and adjust it with ``dataclasses.replace``.

    Args:
        content: The assistant's text.
        reasoning: Reasoning streamed before the text (``reasoning_content``).
        tool_calls: Function calls, streamed after the text.
        finish_reason: Defaults to ``"tool_calls"`` when there are calls, else ``"stop"``.
        usage: ``True`` for token counts estimated from the sizes, a mapping for exact ones
            (``{"prompt_tokens": 5, "completion_tokens": 7}``), ``False`` for none.
        fragments: Pieces each string is split into; ``None`` splits into words.
        failure: An OpenAI error object (``{"message", "type", "code"}``). With ``status`` 200
            it is sent in-band after the text; otherwise it is the body of the HTTP error.
        status: The HTTP status; anything but 200 answers with ``{"error": failure}``.
        delay: Seconds to wait before answering.
        chunk_delay: Seconds to wait before each chunk after the first.
        drop_after: End the body after this many chunks, without ``finish_reason`` or
            ``[DONE]`` (an upstream that dies mid-answer).
        model: The model the chunks report; defaults to the request's ``model``.
    """

    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Mapping[str, int] | bool = True
    fragments: int | None = None
    failure: Mapping[str, Any] | None = field(default=None, hash=False)
    status: int = 200
    delay: float = 0.0
    chunk_delay: float = 0.0
    drop_after: int | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if self.fragments is not None and self.fragments < 1:
            raise ValueError(f"fragments must be >= 1 or None, got {self.fragments}")
        if self.drop_after is not None and self.drop_after < 0:
            raise ValueError(f"drop_after must be >= 0 or None, got {self.drop_after}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status}")
        if self.status != 200 and self.failure is None:
            raise ValueError(f"a turn with status {self.status} needs a failure (error object)")
        if self.delay < 0 or self.chunk_delay < 0:
            raise ValueError("delay and chunk_delay must be >= 0 seconds")

    @classmethod
    def text(
        cls,
        content: str,
        *,
        reasoning: str = "",
        finish_reason: str | None = None,
        fragments: int | None = None,
        drop_after: int | None = None,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
    ) -> Turn:
        """A text answer (after optional ``reasoning``). ``finish_reason="length"`` makes it a
        truncated one."""
        return cls(
            content=content,
            reasoning=reasoning,
            finish_reason=finish_reason,
            fragments=fragments,
            drop_after=drop_after,
            delay=delay,
            chunk_delay=chunk_delay,
        )

    @classmethod
    def tool_call(
        cls,
        name: str,
        arguments: str | Mapping[str, Any] = "{}",
        *,
        call_id: str | None = None,
        content: str = "",
        fragments: int | None = None,
        drop_after: int | None = None,
    ) -> Turn:
        """A turn that calls one function (after optional ``content``).

        ``arguments`` may be a JSON string or a mapping, which is serialised with
        ``json.dumps`` (``{"cmd": "ls"}`` becomes ``'{"cmd": "ls"}'``).
        """
        return cls(
            content=content,
            tool_calls=(ToolCall(name, _arguments_json(arguments), call_id),),
            fragments=fragments,
            drop_after=drop_after,
        )

    @classmethod
    def error(
        cls,
        message: str,
        *,
        status: int = 200,
        code: str | None = None,
        error_type: str = "server_error",
        content: str = "",
    ) -> Turn:
        """A turn that fails: in-band after ``content`` (``status=200``), or as an HTTP error."""
        failure = {"message": message, "type": error_type, "param": None, "code": code}
        return cls(content=content, failure=failure, status=status)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Turn:
        """Build a turn from JSON-like data (the ``--script`` file format).

        Keys are the constructor's, plus shortcuts: ``text`` for ``content``, ``tool_call``
        for a single call, and ``error`` for ``failure`` (an error object or just a message).
        A call is ``{"name", "arguments", "call_id"}``; ``arguments`` may be an object.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a turn must be a JSON object, got {data!r}")
        aliases = {"text": "content", "error": "failure"}
        known = {f.name for f in dataclasses.fields(cls)} | set(aliases) | {"tool_call"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown turn key(s) {', '.join(unknown)}; expected some of {sorted(known)}"
            )
        values = {aliases.get(k, k): v for k, v in data.items()}
        calls = list(values.pop("tool_calls", None) or [])
        if "tool_call" in values:
            calls.insert(0, values.pop("tool_call"))
        values["tool_calls"] = tuple(_tool_call_from_dict(c) for c in calls)
        failure = values.get("failure")
        if isinstance(failure, str):
            values["failure"] = {
                "message": failure,
                "type": "server_error",
                "param": None,
                "code": None,
            }
        return cls(**values)


def _arguments_json(arguments: str | Mapping[str, Any]) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _tool_call_from_dict(data: Any) -> ToolCall:
    if not isinstance(data, Mapping) or "name" not in data:
        raise ValueError(f"a tool call needs at least a name, got {data!r}")
    return ToolCall(
        str(data["name"]), _arguments_json(data.get("arguments", "{}")), data.get("call_id")
    )


def load_script(path: str | Path) -> list[Turn]:
    """Read turns from a JSON file: a list of turn objects (see ``Turn.from_dict``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read script {path}: {exc}") from None
    if isinstance(data, Mapping):
        data = data.get("turns")
    if not isinstance(data, list) or not data:
        raise ValueError(f"script {path} must be a non-empty JSON list of turns")
    try:
        return [Turn.from_dict(t) for t in data]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"script {path}: {exc}") from None


@dataclass(frozen=True)
class RecordedRequest:
    """A request the backend received."""

    method: str
    path: str
    #: Header names lower-cased. Repeated headers are joined with ``", "``.
    headers: Mapping[str, str]
    #: The parsed JSON body, or ``None`` for an empty or non-JSON body.
    body: Any

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """JSON-ready form; credentials are replaced by ``"***"`` unless ``redact=False``."""
        headers = {
            k: ("***" if redact and k in _REDACTED_HEADERS else v) for k, v in self.headers.items()
        }
        return {"method": self.method, "path": self.path, "headers": headers, "body": self.body}


Script = Sequence[Turn] | Callable[[Mapping[str, Any]], Turn]


class ScriptedBackend:
    """An ASGI Chat Completions backend that replays scripted turns.

    Args:
        turns: The replies, one per chat request, or a function from the request body to the
            reply (``demo_reply`` is one).
        repeat: When the turns run out: ``"last"`` repeats the last turn, ``"cycle"`` starts
            over.
        model: The model ``/v1/models`` lists.
        max_recorded: How many requests ``requests`` keeps (oldest dropped first).
    """

    def __init__(
        self,
        turns: Script,
        *,
        repeat: Literal["last", "cycle"] = "last",
        model: str = DEFAULT_MODEL,
        max_recorded: int = 1000,
    ) -> None:
        if not callable(turns):
            turns = tuple(turns)
            if not turns:
                raise ValueError("ScriptedBackend needs at least one turn")
        if repeat not in ("last", "cycle"):
            raise ValueError(f"repeat must be 'last' or 'cycle', got {repeat!r}")
        self._turns = turns
        self._repeat = repeat
        self._model = model
        self._served = 0
        self._recorded: deque[RecordedRequest] = deque(maxlen=max_recorded)

    @classmethod
    def demo(cls) -> ScriptedBackend:
        """The gateway's embedded default: echoes the user and calls a tool when asked."""
        return cls(demo_reply, model="demo")

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (up to ``max_recorded``), oldest first."""
        return list(self._recorded)

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of the chat completion requests received so far."""
        return [
            r.body
            for r in self._recorded
            if r.path.endswith("/chat/completions") and isinstance(r.body, dict)
        ]

    def reset(self) -> None:
        """Forget the recorded requests and start the script over."""
        self._recorded.clear()
        self._served = 0

    def next_turn(self, request: Mapping[str, Any]) -> Turn:
        """The turn that answers ``request``; advances the script."""
        if callable(self._turns):
            return self._turns(request)
        index = self._served
        self._served += 1
        if index >= len(self._turns):
            index = len(self._turns) - 1 if self._repeat == "last" else index % len(self._turns)
        return self._turns[index]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw = await request.body()
        try:
            body: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        path = scope["path"]
        method = scope["method"]
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if path != "/_scripted/requests":
            self._recorded.append(RecordedRequest(method, path, headers, body))
        response = self._route(method, path, body)
        if isinstance(response, _Reply):
            response = await response.render()
        await response(scope, receive, send)

    def _route(self, method: str, path: str, body: Any) -> Response | _Reply:
        if path.endswith("/chat/completions") and method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                return _error_response(400, "the body must be a JSON object with messages")
            return _Reply(self.next_turn(body), body)
        if path.endswith("/models") and method == "GET":
            return JSONResponse(
                {
                    "object": "list",
                    "data": [
                        {
                            "id": self._model,
                            "object": "model",
                            "created": 0,
                            "owned_by": "stream-mw",
                        }
                    ],
                }
            )
        if path == "/_scripted/requests" and method == "GET":
            return JSONResponse([r.to_dict() for r in self._recorded])
        return _error_response(404, f"the scripted backend does not serve {method} {path}")


class _Reply:
    """Renders one turn for one request, streamed or not."""

    def __init__(self, turn: Turn, request: Mapping[str, Any]) -> None:
        self.turn = turn
        self.request = request
        self.model = turn.model or str(request.get("model") or DEFAULT_MODEL)
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.calls = [
            dataclasses.replace(c, call_id=c.call_id or "call_" + secrets.token_hex(12))
            for c in turn.tool_calls
        ]

    async def render(self) -> Response:
        turn = self.turn
        if turn.delay:
            await anyio.sleep(turn.delay)
        if turn.status != 200:
            return JSONResponse({"error": dict(turn.failure or {})}, status_code=turn.status)
        if self.request.get("stream"):
            return StreamingResponse(
                self._stream(),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        return self._completion()

    @property
    def finish_reason(self) -> str:
        if self.turn.finish_reason is not None:
            return self.turn.finish_reason
        return "tool_calls" if self.calls else "stop"

    def usage(self) -> dict[str, Any] | None:
        usage = self.turn.usage
        if usage is False:
            return None
        if isinstance(usage, Mapping):
            prompt = int(usage.get("prompt_tokens", 0))
            completion = int(usage.get("completion_tokens", 0))
            reasoning = int(usage.get("reasoning_tokens", 0))
        else:
            prompt = max(1, len(orjson.dumps(self.request.get("messages"))) // 4)
            reasoning = _estimate_tokens(self.turn.reasoning)
            completion = reasoning + _estimate_tokens(
                self.turn.content, *(c.arguments for c in self.calls)
            )
        result: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if reasoning:
            result["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        return result

    def _completion(self) -> Response:
        turn = self.turn
        if turn.failure is not None:
            return JSONResponse({"error": dict(turn.failure)}, status_code=500)
        message: dict[str, Any] = {"role": "assistant", "content": turn.content or None}
        if turn.reasoning:
            message["reasoning_content"] = turn.reasoning
        if self.calls:
            message["tool_calls"] = [
                {
                    "id": c.call_id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.calls
            ]
        body = orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
                "usage": self.usage(),
            }
        )
        if turn.drop_after is not None:
            body = body[: len(body) // 2]
        return Response(body, media_type="application/json")

    def _chunk(
        self, delta: Mapping[str, Any], finish_reason: str | None = None, **extra: Any
    ) -> bytes:
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        data = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return b"data: " + orjson.dumps(data) + b"\n\n"

    def _chunks(self) -> Iterable[bytes]:
        turn = self.turn
        yield self._chunk({"role": "assistant", "content": ""})
        for piece in _split(turn.reasoning, turn.fragments):
            yield self._chunk({"reasoning_content": piece})
        for piece in _split(turn.content, turn.fragments):
            yield self._chunk({"content": piece})
        for index, call in enumerate(self.calls):
            head = {
                "index": index,
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            yield self._chunk({"tool_calls": [head]})
            for piece in _split(call.arguments, turn.fragments):
                yield self._chunk(
                    {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                )
        if turn.failure is not None:
            yield b"data: " + orjson.dumps({"error": dict(turn.failure)}) + b"\n\n"
        else:
            yield self._chunk({}, self.finish_reason)
            options = self.request.get("stream_options")
            usage = self.usage()
            if usage is not None and isinstance(options, Mapping) and options.get("include_usage"):
                data = {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage,
                }
                yield b"data: " + orjson.dumps(data) + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def _stream(self) -> AsyncIterator[bytes]:
        for sent, chunk in enumerate(self._chunks()):
            if self.turn.drop_after is not None and sent >= self.turn.drop_after:
                return
            if sent and self.turn.chunk_delay:
                await anyio.sleep(self.turn.chunk_delay)
            yield chunk


def _split(text: str, fragments: int | None) -> list[str]:
    if not text:
        return []
    if fragments is None:
        return _WORDS.findall(text)
    size, extra = divmod(len(text), fragments)
    pieces, start = [], 0
    for i in range(fragments):
        end = start + size + (1 if i < extra else 0)
        if end > start:
            pieces.append(text[start:end])
        start = end
    return pieces


def _estimate_tokens(*texts: str) -> int:
    # About four characters per token, as OpenAI's rule of thumb has it.
    return sum((len(t) + 3) // 4 for t in texts if t)


def _error_response(status: int, message: str) -> Response:
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
        status_code=status,
    )


# --- the demo script --------------------------------------------------------------------------

_BACKTICKS = re.compile(r"`([^`]+)`")


def demo_reply(request: Mapping[str, Any]) -> Turn:
    """The embedded demo's script: echo the user, call a tool when the user names one.

    - The last message is a tool result: report what the tool returned.
    - The user names one of the request's function tools: call it, filling its string
      parameters with the text in backticks (or the whole message). "Run `ls` with
      exec_command" makes Codex run ``ls``.
    - Otherwise: a short reasoning, then a friendly echo, streamed word by word.
    """
    messages = request.get("messages")
    last: Mapping[str, Any] = messages[-1] if isinstance(messages, list) and messages else {}
    if not isinstance(last, Mapping):
        last = {}
    content = _text_of(last.get("content"))
    if last.get("role") == "tool":
        return Turn(
            content=f"The tool answered: {_shorten(content, 300)}",
            chunk_delay=0.02,
        )
    for tool in _function_tools(request):
        if re.search(rf"\b{re.escape(tool['name'])}\b", content):
            return Turn.tool_call(tool["name"], _demo_arguments(tool, content))
    said = _shorten(content, 200) if content else "nothing"
    count = len(content.split())
    return Turn(
        reasoning=f"The user wrote {count} word{'' if count == 1 else 's'}. "
        f"I will echo {'it' if count == 1 else 'them'} back.",
        content=(
            f"Hello! You said: “{said}”. This reply comes from the stream-mw demo backend, "
            "streamed as Responses API events. Point `stream-mw serve --upstream URL` at a "
            "Chat Completions server (vLLM, Ollama, llama.cpp, LM Studio, LiteLLM) to talk "
            "to a real model."
        ),
        chunk_delay=0.02,
    )


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, Mapping)
        ).strip()
    return ""


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _function_tools(request: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tools = request.get("tools")
    found = []
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            found.append(function)
    return found


def _demo_arguments(tool: Mapping[str, Any], content: str) -> dict[str, Any]:
    quoted = _BACKTICKS.search(content)
    value = quoted.group(1) if quoted else content
    parameters = tool.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
    if not isinstance(properties, Mapping):
        return {}
    required = parameters.get("required") if isinstance(parameters, Mapping) else None
    names = [n for n in (required or []) if n in properties] or list(properties)[:1]
    return {
        name: value
        for name in names
        if isinstance(properties[name], Mapping) and properties[name].get("type") == "string"
    }
