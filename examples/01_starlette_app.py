"""An existing Starlette app that serves Chat Completions, now also serving the Responses API.

The app below is the kind you may already have: a ``POST /v1/chat/completions`` endpoint
(here a toy "echo model" that streams the user's words back). One line,
``Middleware(ResponsesMiddleware)``, adds ``POST /v1/responses`` in front of it; the chat
endpoint keeps working unchanged.

Run it (needs ``pip install "stream-mw[gateway]"`` for uvicorn)::

    python examples/01_starlette_app.py

Then, from another terminal::

    curl -sN http://127.0.0.1:8000/v1/responses -H 'content-type: application/json' \\
      -d '{"model": "echo", "input": "Hello there!", "stream": true}'
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from stream_mw import ResponsesMiddleware


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


async def chat_completions(request: Request) -> Response:
    """The app's own endpoint: an "echo model" speaking plain Chat Completions."""
    body = await request.json()
    answer = f"You said: {last_user_text(body['messages'])}"
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": body["model"],
    }
    words = len(answer.split())
    usage = {"prompt_tokens": 5, "completion_tokens": words, "total_tokens": 5 + words}

    if not body.get("stream"):
        message = {"role": "assistant", "content": answer}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return JSONResponse(
            {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        )

    async def events() -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        for word in answer.split(" "):
            yield chunk({"content": word + " "})
        yield chunk({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            data = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            yield f"data: {json.dumps(data)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


app = Starlette(
    routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])],
    # The one line that adds the Responses API (POST /v1/responses and the stored-response
    # routes); everything else passes through to the app untouched.
    middleware=[Middleware(ResponsesMiddleware)],
)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
