"""HTTP delivery: one ``POST {path_prefix}/responses`` answered as SSE or as JSON.

Strategy: the run decides everything; this only frames it. A stream gets our own start
message (the upstream's kept headers, ``text/event-stream``, no caching, no proxy
buffering) and one body message per ``Delivery`` call; a JSON answer gets one start and one
body with its ``Content-Length``. ``events`` is the server's ``send`` itself, so the
streaming hot path costs what it would without a delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.types import Receive, Scope, Send

from .._delivery import Headers
from .._run import ResponseRun
from .._service import REQUEST_ID_HEADER

if TYPE_CHECKING:
    from .._middleware import ResponsesMiddleware

__all__ = ["HTTPDelivery", "respond"]

_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    # nginx and friends buffer proxied bodies unless told not to (sse-starlette does the same).
    (b"x-accel-buffering", b"no"),
]
_JSON_TYPE: Final = (b"content-type", b"application/json")


async def respond(
    mw: ResponsesMiddleware, rid: bytes, scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer one ``POST {path_prefix}/responses`` over HTTP."""
    delivery = HTTPDelivery(send, rid)

    async def detach(run: ResponseRun) -> None:
        await mw.background.start(run, send)

    route = f"POST {mw.settings.responses_path}"
    await ResponseRun(mw, scope, receive, delivery, rid, detach=detach, route=route).respond()


class HTTPDelivery:
    """A run's answer as the ASGI messages of one HTTP response."""

    __slots__ = ("events", "request_id", "send")

    def __init__(self, send: Send, rid: bytes) -> None:
        self.send = send
        #: The server's own: the run's body messages go to it as they are.
        self.events = send
        self.request_id = (REQUEST_ID_HEADER, rid)

    async def answer(
        self, status: int, body: dict[str, Any], headers: Headers, *, close: bool
    ) -> None:
        data = orjson.dumps(body)
        extra = [_JSON_TYPE, (b"content-length", str(len(data)).encode("ascii")), self.request_id]
        if close:
            # The exception is re-raised next, and servers drop the connection for that
            # (uvicorn closes the transport): tell the client not to reuse it.
            extra.append((b"connection", b"close"))
        await self.send(
            {"type": "http.response.start", "status": status, "headers": [*headers, *extra]}
        )
        await self.send({"type": "http.response.body", "body": data, "more_body": False})

    async def start(self, headers: Headers, events: bytes, *, end: bool) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*headers, *_SSE_HEADERS, self.request_id],
            }
        )
        await self.send({"type": "http.response.body", "body": events, "more_body": not end})

    async def end(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": False})
