"""A scripted Chat Completions backend for the store's end-to-end tests, and a gateway factory.

The reply depends only on the conversation it receives, so any process answers the same way:

- last message is a tool result ``R`` → text ``"It is R in Paris. (saw N messages)"``;
- last user message mentions the weather → a ``get_weather({"city": "Paris"})`` tool call;
- anything else → text ``"Hello! (saw N messages)"``.

``N`` (the number of Chat messages received) lets a test in another process see that the
history was expanded. Streams (``stream: true``) and plain completions are both served.

``create_gateway`` is a uvicorn factory (``uvicorn --factory tests.store.upstream:create_gateway``)
for the multi-process tests: the middleware around this backend, configured from
``STREAM_MW_*`` environment variables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TOOL_CALL_ID = "call_weather_1"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def script(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message to answer with."""
    last = messages[-1]
    seen = f"(saw {len(messages)} messages)"
    if last.get("role") == "tool":
        return {
            "role": "assistant",
            "content": f"It is {text_of(last['content'])} in Paris. {seen}",
        }
    if last.get("role") == "user" and "weather" in text_of(last.get("content")).lower():
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": TOOL_CALL_ID,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        }
    return {"role": "assistant", "content": f"Hello! {seen}"}


USAGE = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def _stream(model: str, message: dict[str, Any]) -> AsyncIterator[bytes]:
    yield _chunk(model, {"role": "assistant", "content": ""})
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        head = {"index": 0, "id": call["id"], "type": "function"}
        args = call["function"]["arguments"]
        yield _chunk(
            model,
            {
                "tool_calls": [
                    {**head, "function": {"name": call["function"]["name"], "arguments": ""}}
                ]
            },
        )
        for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
            yield _chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        finish = "tool_calls"
    else:
        text = message["content"]
        for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
            yield _chunk(model, {"content": piece})
        finish = "stop"
    yield _chunk(model, {}, finish)
    usage = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1_700_000_000,
             "model": model, "choices": [], "usage": USAGE}  # fmt: skip
    yield b"data: " + orjson.dumps(usage) + b"\n\n"
    yield b"data: [DONE]\n\n"


def chat_app() -> Starlette:
    """The scripted backend. ``app.state.requests`` lists every Chat request body received."""
    received: list[dict[str, Any]] = []

    async def completions(request: Request) -> Response:
        body = await request.json()
        received.append(body)
        message = script(body["messages"])
        model = body.get("model", "scripted")
        if body.get("stream"):
            return StreamingResponse(_stream(model, message), media_type="text/event-stream")
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        return JSONResponse(
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": USAGE,
            }
        )

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    app.state.requests = received
    return app


def create_gateway() -> Any:
    """uvicorn factory: the middleware (settings from ``STREAM_MW_*``) around ``chat_app``."""
    from stream_mw import ResponsesMiddleware, Settings

    return ResponsesMiddleware(chat_app(), Settings.from_env())
