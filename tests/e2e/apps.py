"""Scripted Chat Completions upstreams for the end-to-end tests.

``ScriptedChat`` is a raw ASGI app serving ``POST /v1/chat/completions`` (and ``GET
/v1/models``) from scripts chosen by the request's ``model``. With ``stream: true`` it sends one
ASGI body message per script frame (so chunk boundaries reach the middleware as written);
without, it answers the ``chat.completion`` those frames add up to. It records every request
and tracks its running streams, so tests can see what the middleware sent and whether a stream
stopped. It works in-process (``httpx.ASGITransport``) and behind uvicorn in another thread,
which is why its signals are ``threading`` primitives.

``starlette_upstream`` and ``fastapi_upstream`` serve the same scripts as ordinary
Starlette/FastAPI routes with a lifespan, for the "attach it to your own app" tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

__all__ = [
    "SCRIPTS",
    "Reply",
    "ScriptedChat",
    "chunk",
    "completion_of",
    "fastapi_upstream",
    "sse",
    "starlette_upstream",
    "tool_call",
]

CREATED = 1_700_000_000


def chunk(
    delta: Mapping[str, Any] | None = None,
    *,
    finish: str | None = None,
    usage: Mapping[str, Any] | None = None,
    choices: bool = True,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` (id, model and timestamps are filled in when sent)."""
    out: dict[str, Any] = {"object": "chat.completion.chunk"}
    out["choices"] = (
        [{"index": 0, "delta": dict(delta or {}), "finish_reason": finish, "logprobs": None}]
        if choices
        else []
    )
    if usage is not None:
        out["usage"] = dict(usage)
    return out


def tool_call(index: int, *, call_id: str | None = None, name: str | None = None,
              arguments: str = "") -> dict[str, Any]:  # fmt: skip
    """A ``tool_calls`` delta entry; the first fragment of a call carries its id and name."""
    function: dict[str, Any] = {"arguments": arguments}
    entry: dict[str, Any] = {"index": index, "function": function}
    if call_id is not None:
        entry["id"] = call_id
        entry["type"] = "function"
        function["name"] = name
    return entry


USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


@dataclass
class Reply:
    """What a script answers.

    ``frames`` are sent in order, one ASGI body message each: dicts as ``data: <json>``
    events, bytes raw. ``done`` appends ``data: [DONE]``. A ``status`` other than 200 answers
    ``error`` (a dict as JSON, a str as text) instead, for streams and non-streams alike.
    """

    frames: list[dict[str, Any] | bytes] = field(default_factory=list)
    done: bool = True
    status: int = 200
    error: Any = None
    #: Seconds between frames (an upstream generating tokens), for the disconnect test.
    pace: float = 0.0
    #: Frames repeated forever after ``frames`` (with ``pace``), for the disconnect test.
    endless: dict[str, Any] | None = None
    #: Go silent forever after ``frames`` (an upstream that hangs), for the disconnect test.
    hang: bool = False
    #: Raise ``RuntimeError("scripted crash")`` after this many frames (-1: before answering).
    crash_after: int | None = None


Script = Callable[[Mapping[str, Any]], Reply]


def _text(request: Mapping[str, Any]) -> Reply:
    return Reply(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hello"}),
            chunk({"content": ", world"}),
            chunk({"content": "! 🌍"}),
            chunk(finish="stop"),
            chunk(usage=USAGE, choices=False),
        ]
    )


def _reasoning(request: Mapping[str, Any]) -> Reply:
    return Reply(
        [
            chunk({"role": "assistant", "reasoning_content": "The user "}),
            chunk({"reasoning_content": "says hi."}),
            chunk({"content": "Hi there."}),
            chunk(finish="stop"),
            chunk(usage=USAGE, choices=False),
        ]
    )


def _refusal(request: Mapping[str, Any]) -> Reply:
    return Reply(
        [
            chunk({"role": "assistant", "refusal": "I can't "}),
            chunk({"refusal": "help with that."}),
            chunk(finish="stop"),
            chunk(usage=USAGE, choices=False),
        ]
    )


def _parallel_tools(request: Mapping[str, Any]) -> Reply:
    return Reply(
        [
            chunk({"role": "assistant", "tool_calls": [
                tool_call(0, call_id="call_paris", name="get_weather", arguments='{"ci')]}),
            chunk({"tool_calls": [tool_call(0, arguments='ty": "Paris"}')]}),
            chunk({"tool_calls": [
                tool_call(1, call_id="call_tokyo", name="get_weather", arguments="")]}),
            chunk({"tool_calls": [tool_call(1, arguments='{"city": "Tokyo"}')]}),
            chunk(finish="tool_calls"),
            chunk(usage=USAGE, choices=False),
        ]
    )  # fmt: skip


def _length(request: Mapping[str, Any]) -> Reply:
    return Reply(
        [
            chunk({"role": "assistant", "content": "This answer is cut"}),
            chunk({"content": " short"}),
            chunk(finish="length"),
            chunk(usage=USAGE, choices=False),
        ]
    )


def _content_filter(request: Mapping[str, Any]) -> Reply:
    return Reply(
        [
            chunk({"role": "assistant", "content": "Well, "}),
            chunk(finish="content_filter"),
            chunk(usage=USAGE, choices=False),
        ]
    )


def _http_400(request: Mapping[str, Any]) -> Reply:
    message = "This model's maximum context length is 8192 tokens. However, you requested 9000."
    return Reply(
        status=400,
        error={"object": "error", "message": message, "type": "BadRequestError", "code": 400},
    )


def _http_429(request: Mapping[str, Any]) -> Reply:
    error = {"message": "Rate limit reached; try again in 2s.", "type": "requests",
             "code": "rate_limit_exceeded", "param": None}  # fmt: skip
    return Reply(status=429, error={"error": error})


def _http_503_text(request: Mapping[str, Any]) -> Reply:
    return Reply(status=503, error="backend overloaded, retry later")


def _error_during(request: Mapping[str, Any]) -> Reply:
    return Reply(
        [
            chunk({"role": "assistant", "content": "Partial"}),
            chunk({"content": " answer"}),
            {"error": {"message": "The model crashed mid-generation.", "type": "server_error",
                       "code": 500}},
        ],
        done=False,
    )  # fmt: skip


def _agent(request: Mapping[str, Any]) -> Reply:
    """Two turns: ask for the weather tool, then answer from its output."""
    tool_messages = [m for m in request.get("messages", ()) if m.get("role") == "tool"]
    if not tool_messages:
        return Reply(
            [
                chunk({"role": "assistant", "tool_calls": [
                    tool_call(0, call_id="call_weather_1", name="get_weather", arguments="")]}),
                chunk({"tool_calls": [tool_call(0, arguments='{"city": ')]}),
                chunk({"tool_calls": [tool_call(0, arguments='"Paris"}')]}),
                chunk(finish="tool_calls"),
                chunk(usage=USAGE, choices=False),
            ]
        )  # fmt: skip
    report = tool_messages[-1].get("content")
    return Reply(
        [
            chunk({"role": "assistant", "content": "The weather tool says: "}),
            chunk({"content": str(report)}),
            chunk(finish="stop"),
            chunk(usage=USAGE, choices=False),
        ]
    )


def _endless(request: Mapping[str, Any]) -> Reply:
    return Reply(
        [chunk({"role": "assistant", "content": "tick"})],
        pace=0.002,
        endless=chunk({"content": " tick"}),
    )


def _crash_before(request: Mapping[str, Any]) -> Reply:
    return Reply(crash_after=-1)


def _crash_during(request: Mapping[str, Any]) -> Reply:
    return Reply(_text(request).frames, crash_after=2)


def _hang(request: Mapping[str, Any]) -> Reply:
    return Reply([chunk({"role": "assistant", "content": "thinking..."})], hang=True)


#: The scripts every upstream here serves, by request ``model``.
SCRIPTS: dict[str, Script] = {
    "text": _text,
    "reasoning": _reasoning,
    "refusal": _refusal,
    "parallel-tools": _parallel_tools,
    "length": _length,
    "content-filter": _content_filter,
    "http-400": _http_400,
    "http-429": _http_429,
    "http-503-text": _http_503_text,
    "error-during": _error_during,
    "agent": _agent,
    "endless": _endless,
    "hang": _hang,
    "crash-before": _crash_before,
    "crash-during": _crash_during,
}


def completion_of(frames: Sequence[dict[str, Any] | bytes], model: str) -> dict[str, Any]:
    """The ``chat.completion`` a stream of chunks adds up to."""
    message: dict[str, Any] = {"role": "assistant", "content": None}
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    usage = None
    for frame in frames:
        if not isinstance(frame, dict):
            continue
        usage = frame.get("usage") or usage
        for choice in frame.get("choices", ()):
            delta = choice.get("delta") or {}
            for key in ("content", "refusal", "reasoning_content"):
                if delta.get(key):
                    message[key] = (message.get(key) or "") + delta[key]
            for call in delta.get("tool_calls") or ():
                entry = calls.setdefault(
                    call["index"],
                    {"id": None, "type": "function", "function": {"name": None, "arguments": ""}},
                )
                entry["id"] = call.get("id") or entry["id"]
                fn = call.get("function") or {}
                entry["function"]["name"] = fn.get("name") or entry["function"]["name"]
                entry["function"]["arguments"] += fn.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    out: dict[str, Any] = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def sse(frame: dict[str, Any] | bytes, model: str = "text") -> bytes:
    """One frame as upstream SSE bytes (dict chunks get id, created and model)."""
    if isinstance(frame, bytes):
        return frame
    if "choices" in frame:
        frame = {"id": "chatcmpl-scripted", "created": CREATED, "model": model, **frame}
    return b"data: " + orjson.dumps(frame) + b"\n\n"


def _error_payload(reply: Reply) -> tuple[bytes, bytes]:
    if isinstance(reply.error, str):
        return reply.error.encode(), b"text/plain; charset=utf-8"
    return orjson.dumps(reply.error), b"application/json"


def _in_band_error(reply: Reply) -> dict[str, Any] | None:
    return next((f for f in reply.frames if isinstance(f, dict) and "error" in f), None)


class ScriptedChat:
    """A raw ASGI Chat Completions upstream driven by ``SCRIPTS`` (see the module docstring)."""

    def __init__(self, scripts: Mapping[str, Script] = SCRIPTS) -> None:
        self.scripts = dict(scripts)
        #: Every Chat request body received, in order.
        self.requests: list[dict[str, Any]] = []
        #: The scope of every Chat request received.
        self.scopes: list[Scope] = []
        self.lifespan_events: list[str] = []
        #: Streams currently being sent.
        self.active = 0
        #: Set when a stream stops early (cancelled or told the client left).
        self.stopped = threading.Event()
        self.stopped_at = 0.0
        self.stop_reason = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert scope["type"] == "http"
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/v1/models":
            models = {"object": "list", "data": [{"id": m, "object": "model", "created": CREATED,
                                                  "owned_by": "tests"} for m in self.scripts]}  # fmt: skip
            await _send_body(send, 200, orjson.dumps(models), b"application/json")
            return
        if method != "POST" or path != "/v1/chat/completions":
            await _send_body(send, 404, b'{"detail":"Not Found"}', b"application/json")
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body", False):
                break
        request = orjson.loads(raw)
        self.requests.append(request)
        self.scopes.append(scope)
        model = request["model"]
        reply = self.scripts[model](request)
        if reply.crash_after == -1:
            raise RuntimeError("scripted crash")
        if reply.status != 200:
            body, content_type = _error_payload(reply)
            await _send_body(send, reply.status, body, content_type)
        elif not request.get("stream"):
            error = _in_band_error(reply)
            if error is not None:
                await _send_body(send, 500, orjson.dumps(error), b"application/json")
            else:
                payload = orjson.dumps(completion_of(reply.frames, model))
                await _send_body(send, 200, payload, b"application/json")
        else:
            await self._stream(reply, model, send)

    async def _stream(self, reply: Reply, model: str, send: Send) -> None:
        self.active += 1
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"x-upstream", b"scripted"),
                    ],
                }
            )
            for sent, frame in enumerate(reply.frames):
                if sent == reply.crash_after:
                    raise RuntimeError("scripted crash")
                await send({"type": "http.response.body", "body": sse(frame, model),
                            "more_body": True})  # fmt: skip
                if reply.pace:
                    await anyio.sleep(reply.pace)
            if reply.hang:
                await anyio.sleep_forever()
            while reply.endless is not None:
                await send({"type": "http.response.body", "body": sse(reply.endless, model),
                            "more_body": True})  # fmt: skip
                await anyio.sleep(reply.pace)
            tail = b"data: [DONE]\n\n" if reply.done else b""
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        except BaseException as exc:
            self.stop_reason = type(exc).__name__
            self.stopped_at = time.monotonic()
            self.stopped.set()
            raise
        finally:
            self.active -= 1

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            self.lifespan_events.append(message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send_body(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


# --- the same scripts as Starlette / FastAPI routes --------------------------------------------


async def _chat_route(request: Request) -> Response:
    # Proves the lifespan ran: LifespanManager (or a server) must have started the app.
    if not getattr(request.app.state, "ready", False):
        return PlainTextResponse("lifespan did not run", status_code=500)
    body = await request.json()
    scripts: Mapping[str, Script] = request.app.state.scripts
    request.app.state.requests.append(body)
    model = body["model"]
    reply = scripts[model](body)
    if reply.status != 200:
        payload, content_type = _error_payload(reply)
        return Response(payload, status_code=reply.status, media_type=content_type.decode())
    if not body.get("stream"):
        return JSONResponse(completion_of(reply.frames, model))

    async def frames() -> AsyncIterator[bytes]:
        for frame in reply.frames:
            yield sse(frame, model)
        if reply.done:
            yield b"data: [DONE]\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream")


async def _models_route(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": "text", "object": "model"}]})


@asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    app.state.ready = True
    yield
    app.state.ready = False


def starlette_upstream(
    scripts: Mapping[str, Script] = SCRIPTS, *, middleware: Sequence[Middleware] = ()
) -> Starlette:
    """A Starlette app serving the scripts on ``/v1/chat/completions``, with a lifespan."""
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", _chat_route, methods=["POST"]),
            Route("/v1/models", _models_route),
        ],
        middleware=list(middleware),
        lifespan=_lifespan,
    )
    app.state.scripts = dict(scripts)
    app.state.requests = []
    return app


def fastapi_upstream(scripts: Mapping[str, Script] = SCRIPTS) -> Any:
    """A FastAPI app serving the scripts on ``/v1/chat/completions``, with a lifespan."""
    from fastapi import FastAPI

    app = FastAPI(lifespan=_lifespan)
    app.add_api_route("/v1/chat/completions", _chat_route, methods=["POST"])
    app.add_api_route("/v1/models", _models_route)
    app.state.scripts = dict(scripts)
    app.state.requests = []
    return app
