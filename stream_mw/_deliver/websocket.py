"""The Responses WebSocket mode: ``response.create`` frames in, the stream's events out.

Strategy: one ``WebSocketSession`` per connection, accepted on ``{path_prefix}/responses``.
Each ``response.create`` frame is turned into the body of a streaming ``POST`` and run by the
same code as an HTTP request (``run``, the middleware's responder), through an HTTP scope
made from the upgrade request, so authentication, tenants, limits, the store, metrics and
the drain on shutdown are exactly those of HTTP. What the run sends is delivered as frames:
each SSE event's JSON as one text frame (no SSE framing, no ``[DONE]``), an HTTP error as an
``error`` event carrying its status. Responses run one at a time, in the order their frames
came; a reader task takes frames meanwhile (bounded) and notices the client leaving, which
cancels the response running for it.

Every finished response is kept in the connection's ``LocalHistory``, so the next
``response.create`` can continue from it with ``previous_response_id`` and only the new
input, ``store: false`` included. A continuation that fails evicts the id it continued
from: the client must start again from a full input (OpenAI's rule). A new connection
starts empty.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.types import Message, Receive, Scope, Send

from .._continuation import LocalHistory
from .._errors import clip, error_body
from .._settings import Settings

__all__ = ["RunResponse", "WebSocketSession"]

logger = logging.getLogger("stream_mw")

#: Runs one response for an HTTP scope and returns ``(response, input_items)``: the terminal
#: response and the full input it answered, or ``None``s when it ended with an HTTP error.
#: ``generate=False`` asks for the response without calling the model (a warm-up: Codex
#: sends its instructions and tools once, then continues from the empty response).
RunResponse = Callable[
    [Scope, Receive, Send, LocalHistory, bool],
    Awaitable[tuple[dict[str, Any] | None, list[dict[str, Any]] | None]],
]

#: Frames a client may send ahead of the response being generated; more are refused with
#: an ``error`` event each (a client pipelining turns needs a couple, not hundreds).
MAX_QUEUED_FRAMES: Final = 8
#: Responses a connection remembers for ``previous_response_id`` (a tool loop continues
#: from the last one; a few more allow forking from an earlier turn).
MAX_LOCAL_RESPONSES: Final = 16

# Upgrade-request headers that describe the WebSocket handshake, not the request we make.
_HANDSHAKE_HEADERS: Final = frozenset({b"connection", b"upgrade", b"content-length"})
_TERMINAL_STATUSES: Final = frozenset({"completed", "incomplete"})


class WebSocketSession:
    """One WebSocket connection to ``{path_prefix}/responses``.

    Args:
        run: Runs one response (the middleware's HTTP path) and reports how it ended.
        settings: The middleware's settings (limits and the local history's bounds).
        store_on: Whether a store may hold a ``previous_response_id`` not on the connection.
    """

    __slots__ = ("_closed", "_history", "_run", "_settings", "_store_on")

    def __init__(self, run: RunResponse, settings: Settings, *, store_on: bool) -> None:
        self._run = run
        self._settings = settings
        self._store_on = store_on
        self._history = LocalHistory(
            max_responses=MAX_LOCAL_RESPONSES, max_bytes=settings.store_max_response_bytes
        )
        #: Set when the client closed the connection.
        self._closed = anyio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        frames_in, frames_out = anyio.create_memory_object_stream[str | bytes](MAX_QUEUED_FRAMES)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read, receive, send, frames_in)
            try:
                await self._serve(scope, send, frames_out)
            finally:
                tg.cancel_scope.cancel()

    async def _read(
        self, receive: Receive, send: Send, frames: MemoryObjectSendStream[str | bytes]
    ) -> None:
        # The only reader of the connection: a response running meanwhile learns of the
        # client leaving from _closed, never by reading itself.
        with frames:
            while True:
                try:
                    message = await receive()
                except OSError:
                    break
                if message["type"] == "websocket.disconnect":
                    break
                if message["type"] != "websocket.receive":
                    continue
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                try:
                    frames.send_nowait(data)
                except anyio.WouldBlock:
                    await _send_error(
                        send,
                        429,
                        "rate_limit_error",
                        "too_many_frames",
                        f"More than {MAX_QUEUED_FRAMES} response.create frames are waiting "
                        "for the response in progress; this one was dropped.",
                    )
        self._closed.set()

    async def _serve(
        self, scope: Scope, send: Send, frames: MemoryObjectReceiveStream[str | bytes]
    ) -> None:
        with frames:
            async for frame in frames:
                try:
                    await self._one(scope, send, frame)
                except OSError:
                    return  # the client is gone
                if self._closed.is_set():
                    return

    async def _one(self, scope: Scope, send: Send, frame: str | bytes) -> None:
        raw = frame.encode("utf-8") if isinstance(frame, str) else frame
        limit = self._settings.max_request_bytes
        if len(raw) > limit:
            await _send_error(
                send,
                413,
                "invalid_request_error",
                "request_too_large",
                f"The frame is larger than the server's limit of {limit} bytes "
                "(max_request_bytes).",
            )
            return
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            await _send_error(
                send, 400, "invalid_request_error", None, "A frame must be a JSON object."
            )
            return
        kind = event.get("type")
        if kind == "response.processed":
            return  # Codex acknowledges each response; there is nothing to do with it
        if kind != "response.create":
            await _send_error(
                send,
                400,
                "invalid_request_error",
                "unknown_event_type",
                f"Unknown client event type {kind!r}: expected 'response.create'.",
                param="type",
            )
            return
        body = {k: v for k, v in event.items() if k not in ("type", "generate")}
        if body.get("background") is True:
            await _send_error(
                send,
                400,
                "invalid_request_error",
                None,
                "'background' is not supported in WebSocket mode.",
                param="background",
            )
            return
        # The events are the delivery here: the response is always streamed.
        body["stream"] = True
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self._history and not self._store_on:
            await _previous_not_found(send, previous)
            return
        await self._respond(
            scope, send, body, previous, generate=event.get("generate") is not False
        )

    async def _respond(
        self, scope: Scope, send: Send, body: dict[str, Any], previous: object, *, generate: bool
    ) -> None:
        data = orjson.dumps(body)
        delivery = _Frames(send)
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": data, "more_body": False}
            await self._closed.wait()
            return {"type": "http.disconnect"}

        try:
            response, items = await self._run(
                _http_scope(scope, len(data)),
                receive,
                delivery.send_message,
                self._history,
                generate,
            )
        except OSError:
            raise
        except Exception:
            # The events already ended with response.failed; the connection serves on.
            logger.exception("the wrapped app failed during a WebSocket response")
            response, items = None, None
        if delivery.error is not None:
            status, error = delivery.error
            if status == 404 and error.get("param") == "previous_response_id":
                status, error = 400, {**error, "code": "previous_response_not_found"}
            await _send(
                send, {"type": "error", "sequence_number": 0, "status": status, "error": error}
            )
        succeeded = response is not None and response.get("status") in _TERMINAL_STATUSES
        if succeeded and response is not None and items is not None:
            self._history.keep(str(response.get("id")), items, response)
        elif previous is not None:
            self._history.evict(previous)


class _Frames:
    """An HTTP ``send`` that delivers the run's SSE events as WebSocket text frames."""

    __slots__ = ("buffer", "error", "parts", "send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 0
        self.buffer = b""
        self.parts: list[bytes] = []
        #: ``(status, error object)`` when the run answered with an HTTP error.
        self.error: tuple[int, dict[str, Any]] | None = None

    async def send_message(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            return
        if kind != "http.response.body":
            return
        body: bytes = message.get("body", b"")
        if self.status != 200:
            self.parts.append(body)
            if not message.get("more_body", False):
                self.error = (self.status, _error_object(b"".join(self.parts), self.status))
            return
        # The converter sends whole events, but nothing here depends on it.
        buffer = self.buffer + body
        *events, self.buffer = buffer.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    payload = line[5:].lstrip(b" ")
                    if payload != b"[DONE]":
                        await _send(self.send, payload)


def _http_scope(scope: Scope, length: int) -> Scope:
    headers = [
        (name, value)
        for name, value in scope["headers"]
        if name not in _HANDSHAKE_HEADERS and not name.startswith(b"sec-websocket-")
    ]
    headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", str(length).encode("ascii")))
    http = {k: v for k, v in scope.items() if k != "subprotocols"}
    http["type"] = "http"
    http["method"] = "POST"
    http["scheme"] = "https" if scope.get("scheme") == "wss" else "http"
    http["http_version"] = scope.get("http_version", "1.1")
    http["headers"] = headers
    return http


def _error_object(raw: bytes, status: int) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error
    return {
        "type": "server_error",
        "code": None,
        "message": f"The server answered HTTP {status}.",
        "param": None,
    }


async def _send(send: Send, payload: bytes | dict[str, Any]) -> None:
    text = (payload if isinstance(payload, bytes) else orjson.dumps(payload)).decode("utf-8")
    await send({"type": "websocket.send", "text": text})


async def _send_error(
    send: Send,
    status: int,
    error_type: str,
    code: str | None,
    message: str,
    *,
    param: str | None = None,
) -> None:
    error = error_body(message, error_type, param=param, code=code)["error"]
    await _send(send, {"type": "error", "sequence_number": 0, "status": status, "error": error})


async def _previous_not_found(send: Send, previous: object) -> None:
    await _send_error(
        send,
        400,
        "invalid_request_error",
        "previous_response_not_found",
        f"Previous response with id '{clip(str(previous))}' not found.",
        param="previous_response_id",
    )
