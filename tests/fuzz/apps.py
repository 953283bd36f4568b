"""Cheap in-process Chat Completions apps for the fuzz tier (no sockets, no sleeps).

``EchoChat`` answers any request with a short valid reply (a stream or a completion, as the
request asks) and records every Chat request the middleware sent it. ``ReplayChat`` sends
given body pieces as a 200 event stream, one ASGI body message per piece, and then ends the
way it was told: cleanly, by raising, or by returning mid-body (a dropped connection).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tests.faults.faulty_upstream import USAGE, Receive, Scope, Send, chat_chunk, sse

__all__ = ["EchoChat", "ReplayChat", "ReplayRaised"]


async def _read_body(receive: Receive) -> bytes:
    raw = bytearray()
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        raw += msg.get("body", b"")
        if not msg.get("more_body", False):
            break
    return bytes(raw)


class EchoChat:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = json.loads(await _read_body(receive))
        self.calls.append(request)
        if request.get("stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            body = (
                sse(chat_chunk({"role": "assistant", "content": "fuzzed "}))
                + sse(chat_chunk({"content": "ok"}, "stop"))
                + sse(chat_chunk(usage=USAGE, choices=False))
                + sse("[DONE]")
            )
            await send({"type": "http.response.body", "body": body})
            return
        completion = {
            "id": "chatcmpl-echo",
            "object": "chat.completion",
            "created": 1,
            "model": "echo",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "fuzzed ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(completion).encode()})


class ReplayRaised(RuntimeError):
    """Raised by ``ReplayChat`` for the ``raise`` ending."""


class ReplayChat:
    def __init__(self, pieces: Sequence[bytes], ending: str) -> None:
        self.pieces = pieces
        self.ending = ending

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _read_body(receive)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for piece in self.pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        if self.ending == "raise":
            raise ReplayRaised("the upstream app raised mid-stream")
        if self.ending == "eof":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        # "drop": return without finishing the body.
