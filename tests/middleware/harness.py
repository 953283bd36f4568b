"""A hand-written ASGI harness: scope, receive and send built by hand, every message kept.

``drive(app, ...)`` plays the server: it sends a request body in the chunks you give, records
every message the app sends (``Exchange.messages``) and, like uvicorn, answers
``http.disconnect`` to ``receive`` once the response is complete, or earlier when the test
sets ``disconnect``. ``Exchange.check()`` asserts the ASGI framing every server enforces (one
start, then body messages, exactly one ``more_body: False``, nothing after it).

``Upstream`` is the wrapped app: a raw ASGI app that plays a list of steps (bytes are body
messages, callables are awaited, exceptions raised) and records what it received.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stream_mw import ResponsesMiddleware

__all__ = [
    "END",
    "Exchange",
    "Last",
    "Upstream",
    "drive",
    "event_types",
    "events_of",
    "http_scope",
    "responses_body",
]

#: An ``Upstream`` step: the final, empty ``more_body: False`` body message.
END = object()


class Last(bytes):
    """An ``Upstream`` step: the final body message, carrying these bytes."""


def events_of(data: bytes) -> list[dict[str, Any]]:
    """The JSON of each event in some Responses SSE bytes (``[DONE]`` skipped)."""
    events = []
    for block in data.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                events.append(orjson.loads(line[6:]))
    return events


def event_types(data: bytes) -> list[str]:
    return [event["type"] for event in events_of(data)]


def responses_body(model: str = "text", *, stream: bool = True, **fields: Any) -> bytes:
    return orjson.dumps({"model": model, "input": "hello", "stream": stream, **fields})


def http_scope(
    method: str = "POST",
    path: str = "/v1/responses",
    headers: Sequence[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> Scope:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", b"Bearer sk-secret-token"),
            (b"content-type", b"application/json"),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
        "extensions": {},
    }
    scope.update(extra)
    return scope


@dataclass
class Exchange:
    """Everything one request produced."""

    messages: list[Message] = field(default_factory=list)
    #: How many times the app called ``receive``.
    receive_calls: int = 0
    #: Set by the harness when the response is complete (the final body message arrived).
    complete: anyio.Event = field(default_factory=anyio.Event)

    @property
    def start(self) -> Message:
        assert self.messages, "nothing was sent"
        assert self.messages[0]["type"] == "http.response.start", self.messages[0]
        return self.messages[0]

    @property
    def status(self) -> int:
        return int(self.start["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode().lower(): v.decode() for k, v in self.start.get("headers", [])}

    @property
    def header_names(self) -> list[str]:
        return [k.decode().lower() for k, _ in self.start.get("headers", [])]

    @property
    def bodies(self) -> list[Message]:
        return [m for m in self.messages if m["type"] == "http.response.body"]

    @property
    def chunks(self) -> list[bytes]:
        return [m.get("body", b"") for m in self.bodies]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return orjson.loads(self.body)

    def check(self) -> None:
        """The framing a server enforces: start, bodies, one final body, nothing after."""
        types = [m["type"] for m in self.messages]
        assert types[:1] == ["http.response.start"], types
        assert types.count("http.response.start") == 1, types
        assert all(t == "http.response.body" for t in types[1:]), types
        more = [m.get("more_body", False) for m in self.bodies]
        assert more, "no body message was sent"
        assert more[-1] is False, f"the body never ended: more_body={more}"
        assert more.count(False) == 1, f"more_body False sent {more.count(False)} times"
        for message in self.bodies:
            assert isinstance(message.get("body", b""), bytes)


async def drive(
    app: ASGIApp,
    body: bytes | Sequence[bytes] = b"",
    *,
    scope: Scope | None = None,
    disconnect: anyio.Event | None = None,
    on_send: Callable[[Message, Exchange], Awaitable[None] | None] | None = None,
    send_error: Callable[[Message], BaseException | None] | None = None,
    exchange: Exchange | None = None,
) -> Exchange:
    """Run one request through ``app`` and return what it sent.

    Args:
        body: The request body, or its chunks (each one ``http.request`` message).
        disconnect: When set, ``receive`` answers ``http.disconnect`` (the client left).
        on_send: Called with each message after it was recorded (may be async).
        send_error: Returns an exception for ``send`` to raise instead of recording a
            message (a server whose client went away), or None.
        exchange: Record into this one (to inspect it when the app raises).
    """
    exchange = exchange if exchange is not None else Exchange()
    chunks = [body] if isinstance(body, bytes) else list(body)
    pending = list(enumerate(chunks))
    gone = disconnect if disconnect is not None else anyio.Event()

    async def receive() -> Message:
        exchange.receive_calls += 1
        if pending:
            index, data = pending.pop(0)
            return {"type": "http.request", "body": data, "more_body": index < len(chunks) - 1}
        async with anyio.create_task_group() as tg:

            async def wait(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(wait, gone)
            tg.start_soon(wait, exchange.complete)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if send_error is not None:
            error = send_error(message)
            if error is not None:
                raise error
        exchange.messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            exchange.complete.set()
        if on_send is not None:
            result = on_send(message, exchange)
            if inspect.isawaitable(result):
                await result

    await app(scope if scope is not None else http_scope(), receive, send)
    return exchange


Step = Any


class Upstream:
    """A wrapped app that plays ``steps`` after answering ``http.response.start``.

    Steps: ``bytes`` is a body message with ``more_body: True``; ``END`` the final empty
    one, ``Last(data)`` a final one with data; an async callable is awaited (a gate); an
    exception instance is raised.
    """

    def __init__(
        self,
        steps: Sequence[Step] = (),
        *,
        status: int = 200,
        content_type: bytes | None = b"text/event-stream",
        headers: Sequence[tuple[bytes, bytes]] = (),
        start: bool = True,
    ) -> None:
        self.steps = list(steps)
        self.status = status
        self.headers = list(headers)
        if content_type is not None:
            self.headers.append((b"content-type", content_type))
        self.send_start = start
        self.calls = 0
        self.scope: Scope = {}
        self.request_body = b""
        #: Messages ``receive`` returned after the body (e.g. ``http.disconnect``).
        self.later_messages: list[Message] = []
        #: Set when the app stopped because it was cancelled.
        self.cancelled = False
        self.finished = False
        self.sent: list[Message] = []

    @property
    def chat_request(self) -> dict[str, Any]:
        return orjson.loads(self.request_body)  # type: ignore[no-any-return]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        self.scope = scope
        while True:
            message = await receive()
            assert message["type"] == "http.request", message
            self.request_body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.receive = receive
        try:
            if self.send_start:
                await self._send(send, {"type": "http.response.start", "status": self.status,
                                        "headers": self.headers})  # fmt: skip
            for step in self.steps:
                if isinstance(step, Last):
                    await self._send(send, {"type": "http.response.body", "body": bytes(step),
                                            "more_body": False})  # fmt: skip
                elif isinstance(step, bytes):
                    await self._send(send, {"type": "http.response.body", "body": step,
                                            "more_body": True})  # fmt: skip
                elif step is END:
                    await self._send(send, {"type": "http.response.body", "body": b"",
                                            "more_body": False})  # fmt: skip
                elif isinstance(step, BaseException):
                    raise step
                else:
                    await step()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        self.finished = True

    async def _send(self, send: Send, message: Message) -> None:
        self.sent.append(message)
        await send(message)

    async def wait_for_disconnect(self) -> None:
        """A step: block in ``receive`` until the server says the client left."""
        message = await self.receive()
        self.later_messages.append(message)


def middleware(app: ASGIApp, **settings: Any) -> ResponsesMiddleware:
    """The middleware around ``app``, keep-alives off unless a test turns them on."""
    settings.setdefault("keepalive_interval", 0)
    return ResponsesMiddleware(app, **settings)
