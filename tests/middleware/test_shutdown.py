"""``ResponsesMiddleware.shutdown()`` and the lifespan ``shutdown`` message: requests in flight
finish within the grace period or are ended with ``server_shutting_down``, never cut.

Through the hand-written harness (every message seen); the same over a real ``stream-mw
serve`` process and its signals is in ``tests/gateway/test_shutdown.py``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

from stream_mw import ResponsesMiddleware
from tests.checker import check_stream
from tests.e2e.apps import USAGE, chunk, sse
from tests.middleware.harness import END, Exchange, Upstream, drive, events_of, responses_body

pytestmark = pytest.mark.anyio

HELLO = sse(chunk({"role": "assistant", "content": "Hello"}))
REST = [sse(chunk(finish="stop")), sse(chunk(usage=USAGE, choices=False)), b"data: [DONE]\n\n"]


class Gate:
    """An ``Upstream`` step that waits until the test opens it (never, unless opened)."""

    def __init__(self) -> None:
        self.reached = anyio.Event()
        self.opened = anyio.Event()

    async def __call__(self) -> None:
        self.reached.set()
        await self.opened.wait()


def with_lifespan(app: Upstream) -> Any:
    """``app`` plus the lifespan protocol, as a framework app has it."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            kind = message["type"].rpartition(".")[2]
            await send({"type": f"{message['type']}.complete"})
            if kind == "shutdown":
                return

    return wrapped


# Off asyncio the middleware runs the app in a task group rather than a bare cancel scope.
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_shutdown_ends_an_open_stream_with_response_failed_and_cancels_the_app() -> None:
    gate = Gate()
    upstream = Upstream([HELLO, gate, *REST, END])
    mw = ResponsesMiddleware(upstream, keepalive_interval=0)
    exchange = Exchange()
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(drive, mw, responses_body(), exchange=exchange))
        await gate.reached.wait()
        drained = await mw.shutdown(grace=0)

    assert (drained.finished, drained.ended) == (0, 1)
    assert upstream.cancelled
    exchange.check()
    events = events_of(exchange.body)
    check_stream(exchange.body)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_shutting_down"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hello"


async def test_shutdown_lets_a_stream_finish_within_the_grace_period() -> None:
    gate = Gate()
    upstream = Upstream([HELLO, gate, *REST, END])
    mw = ResponsesMiddleware(upstream, keepalive_interval=0)
    exchange = Exchange()
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(drive, mw, responses_body(), exchange=exchange))
        await gate.reached.wait()
        tg.start_soon(_open_later, gate)
        drained = await mw.shutdown(grace=30)

    assert (drained.finished, drained.ended) == (1, 0)
    assert upstream.finished
    events = events_of(exchange.body)
    check_stream(exchange.body)
    assert events[-1]["type"] == "response.completed"


async def _open_later(gate: Gate) -> None:
    await anyio.sleep(0.05)
    gate.opened.set()


async def test_a_json_request_still_open_at_shutdown_gets_a_503_with_the_shutdown_code() -> None:
    gate = Gate()
    upstream = Upstream([gate, HELLO, *REST, END])
    mw = ResponsesMiddleware(upstream, keepalive_interval=0)
    exchange = Exchange()
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(drive, mw, responses_body(stream=False), exchange=exchange))
        await gate.reached.wait()
        await mw.shutdown()

    exchange.check()
    assert exchange.status == 503
    assert exchange.json()["error"]["code"] == "server_shutting_down"
    assert exchange.headers["x-request-id"]


async def test_a_request_after_shutdown_gets_a_503_and_never_reaches_the_app() -> None:
    upstream = Upstream([HELLO, *REST, END])
    mw = ResponsesMiddleware(upstream, keepalive_interval=0)
    await mw.shutdown()

    exchange = await drive(mw, responses_body())

    assert exchange.status == 503
    assert exchange.json()["error"]["code"] == "server_shutting_down"
    assert upstream.calls == 0


async def test_the_lifespan_shutdown_message_ends_the_streams_still_open() -> None:
    gate = Gate()
    upstream = Upstream([HELLO, gate, *REST, END])
    mw = ResponsesMiddleware(with_lifespan(upstream), keepalive_interval=0)
    exchange = Exchange()
    lifespan: list[Message] = []
    shutting_down = anyio.Event()

    async def receive() -> Message:
        if not lifespan:
            return {"type": "lifespan.startup"}
        await shutting_down.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: Message) -> None:
        lifespan.append(message)

    async with anyio.create_task_group() as tg:
        tg.start_soon(mw, {"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        tg.start_soon(partial(drive, mw, responses_body(), exchange=exchange))
        await gate.reached.wait()
        shutting_down.set()

    assert [m["type"] for m in lifespan] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    events = events_of(exchange.body)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_shutting_down"
