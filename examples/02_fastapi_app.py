"""FastAPI: ``app.add_middleware(ResponsesMiddleware, ...)`` with settings as keywords.

A FastAPI app with its own Chat Completions route (a toy model that answers in capitals)
gains the Responses API with one ``add_middleware`` call. Keyword arguments are ``Settings``
fields: here keep-alive events every 5 s and reasoning streamed as summaries.

Run it (needs ``pip install "stream-mw[gateway]" fastapi``)::

    python examples/02_fastapi_app.py

Then::

    curl -s http://127.0.0.1:8000/v1/responses -H 'content-type: application/json' \\
      -d '{"model": "shout", "input": "make me loud"}'
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from stream_mw import ResponsesMiddleware

app = FastAPI(title="Shouting model")
app.add_middleware(ResponsesMiddleware, keepalive_interval=5.0, reasoning_events="summary")


@app.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> dict[str, Any] | StreamingResponse:
    body = await request.json()
    question = str(body["messages"][-1].get("content") or "")
    answer = question.upper() + "!"
    base = {"id": "chatcmpl-shout", "created": int(time.time()), "model": body["model"]}

    if not body.get("stream"):
        message = {"role": "assistant", "content": answer, "reasoning_content": "Shout it."}
        return {
            **base,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        }

    async def events() -> AsyncIterator[str]:
        deltas: list[dict[str, Any]] = [
            {"role": "assistant", "reasoning_content": "Shout it."},
            *({"content": word + " "} for word in answer.split()),
        ]
        for delta in deltas:
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"
        finish = {"index": 0, "delta": {}, "finish_reason": "stop"}
        yield f"data: {json.dumps({**base, 'choices': [finish]})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
