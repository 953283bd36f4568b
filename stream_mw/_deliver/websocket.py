"""The Responses WebSocket mode: ``response.create`` frames in, the stream's events out.

Strategy: one ``WebSocketSession`` per connection, accepted on ``{path_prefix}/responses``.
Each ``response.create`` frame is the body of a streaming request, run by a ``ResponseRun``
(the run every route shares) on an HTTP scope made from the upgrade request, so
authentication, tenants, limits, the store, metrics and the drain on shutdown are exactly
those of HTTP. ``_Frames`` is its delivery: each event's JSON as one text frame (no SSE
framing, no ``[DONE]``), an error answer as an ``error`` event carrying its status. Responses run one at a time, in the order their frames
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
from typing import TYPE_CHECKING, Any, Final

import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.types import Message, Receive, Scope, Send

from .._continuation import LocalHistory
from .._delivery import Headers
from .._errors import clip, error_body
from .._run import ResponseRun
from .._service import request_id
from .._sse import event_payloads
from .._store_gateway import normalize_input
from .._upstream_answer import no_generation

if TYPE_CHECKING:
    from .._middleware import ResponsesMiddleware

__all__ = ["WebSocketSession"]

logger = logging.getLogger("stream_mw")

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
        mw: The middleware whose runs, settings and store the connection uses.
    """

    __slots__ = ("_closed", "_history", "_mw", "_settings", "_store_on")

    def __init__(self, mw: ResponsesMiddleware) -> None:
        self._mw = mw
        settings = self._settings = mw.settings
        #: Whether a store may hold a ``previous_response_id`` not on the connection.
        self._store_on = mw._store_on
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

        async def receive() -> Message:
            # The run reads this only to learn of the client leaving (it is given the body).
            await self._closed.wait()
            return {"type": "http.disconnect"}

        http = _http_scope(scope, len(data))
        rid = request_id(http)
        route = f"WEBSOCKET {self._settings.responses_path}"
        run = ResponseRun(
            self._mw, http, receive, delivery, rid, history=self._history, route=route
        )
        if not generate:
            # A warm-up: Codex sends its instructions and tools once, then continues from
            # the empty response, without the model being called.
            run.app = no_generation
        try:
            await run.respond(data)
        except OSError:
            raise
        except Exception:
            # The events already ended with response.failed; the connection serves on.
            logger.exception("the wrapped app failed during a WebSocket response")
        if delivery.error is not None:
            status, error = delivery.error
            if status == 404 and error.get("param") == "previous_response_id":
                status, error = 400, {**error, "code": "previous_response_not_found"}
            await _send(
                send, {"type": "error", "sequence_number": 0, "status": status, "error": error}
            )
        converter = run.converter
        response = converter.response if converter is not None and converter.finished else None
        if response is not None and response.get("status") in _TERMINAL_STATUSES:
            items = run.input_items
            if items is None:
                items = normalize_input(run.request.get("input"))
            self._history.keep(str(response.get("id")), items, response)
        elif previous is not None:
            self._history.evict(previous)


class _Frames:
    """A run's delivery as WebSocket text frames, one per event."""

    __slots__ = ("error", "send")

    def __init__(self, send: Send) -> None:
        self.send = send
        #: ``(status, error object)`` when the run answered with an error.
        self.error: tuple[int, dict[str, Any]] | None = None

    async def answer(
        self, status: int, body: dict[str, Any], headers: Headers, *, close: bool
    ) -> None:
        # Only errors come here: a WebSocket response is always streamed.
        if status != 200:
            self.error = (status, _error_object(body, status))

    async def start(self, headers: Headers, events: bytes, *, end: bool) -> None:
        await self._events(events)

    async def events(self, message: Message) -> None:
        await self._events(message["body"])

    async def _events(self, data: bytes) -> None:
        for payload in event_payloads(data):
            await _send(self.send, payload)

    async def end(self, data: bytes) -> None:
        await self._events(data)


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


def _error_object(body: dict[str, Any], status: int) -> dict[str, Any]:
    error = body.get("error")
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
