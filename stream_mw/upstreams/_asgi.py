"""Small raw-ASGI helpers the upstream apps share: lifespan and JSON replies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.types import Receive, Send

from .._errors import error_body

__all__ = ["send_error", "send_json", "serve_lifespan"]


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown (these apps hold nothing that needs them)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def send_json(send: Send, status: int, payload: Mapping[str, Any]) -> None:
    """A complete JSON response (``default=str`` so provider objects never fail to encode)."""
    body = orjson.dumps(payload, default=str)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, status: int, message: str, code: str) -> None:
    """An OpenAI-shaped error response."""
    error_type = "invalid_request_error" if status < 500 else "server_error"
    await send_json(send, status, error_body(message, error_type, code=code))
