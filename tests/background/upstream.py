"""A slow Chat Completions app for background responses, and a gateway factory around it.

The model name sets the pace: ``slow`` streams 40 words 0.1 s apart, anything else 5 words at
once. Every request that ends early (cancelled, or its client gone) is recorded with the
time it ended: in ``closed`` for a test in the same process, and, when
``STREAM_MW_TEST_CLOSED`` names a file, as one line there for a test driving another process.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import orjson
from starlette.types import Receive, Scope, Send

WORDS = 40
SLOW_DELAY = 0.1


def text_for(model: str) -> str:
    count = WORDS if model == "slow" else 5
    return "".join(f"w{i} " for i in range(count))


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-slow",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class SlowChat:
    """A raw ASGI Chat Completions app (no framework between the request and its end)."""

    def __init__(self) -> None:
        #: ``time.monotonic()`` of each request that ended before its last word.
        self.closed: list[float] = []
        self.started = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        model = orjson.loads(body).get("model", "fast")
        self.started += 1
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        words = text_for(model).split(" ")[:-1]
        finished = False
        try:
            await send({"type": "http.response.body", "body": _chunk(model, {"role": "assistant"}),
                        "more_body": True})  # fmt: skip
            for word in words:
                if model == "slow":
                    await anyio.sleep(SLOW_DELAY)
                await send({"type": "http.response.body",
                            "body": _chunk(model, {"content": word + " "}), "more_body": True})  # fmt: skip
            await send({"type": "http.response.body", "body": _chunk(model, {}, "stop"),
                        "more_body": True})  # fmt: skip
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n",
                        "more_body": False})  # fmt: skip
            finished = True
        finally:
            if not finished:
                self._record()

    def _record(self) -> None:
        now = time.monotonic()
        self.closed.append(now)
        path = os.environ.get("STREAM_MW_TEST_CLOSED")
        if path:
            with open(path, "a") as f:
                f.write(f"{time.time()}\n")


def create_gateway() -> Any:
    """uvicorn factory: the middleware (settings from ``STREAM_MW_*``) around ``SlowChat``."""
    from stream_mw import ResponsesMiddleware, Settings

    return ResponsesMiddleware(SlowChat(), Settings.from_env())
