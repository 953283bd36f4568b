"""A response made of several Chat requests in a row (the shape remote MCP tools need): one
``ResponseRun`` drives the app again on the same converter and delivery, with events of its
own between the rounds, and the client sees one stream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.types import Receive, Scope, Send

from stream_mw import ResponsesMiddleware
from stream_mw._deliver.http import HTTPDelivery
from stream_mw._run import ResponseRun
from tests.checker import check_stream
from tests.e2e.apps import chunk, sse
from tests.middleware.harness import drive, events_of, responses_body

pytestmark = pytest.mark.anyio


class TwoRounds(ResponseRun):
    """Drives the app twice: the first answer's body ends before its finish reason."""

    def round_end(self) -> bytes | None:
        return b"" if self.upstream_calls < 2 else None

    async def rounds(self, chat_body: bytes) -> Exception | None:
        error = await self.drive(chat_body)
        if error is None and not self.complete:
            assert self.converter is not None
            # An event of the run's own between the rounds (a tool's progress, later).
            await self.emit(self.converter.keepalive())
            error = await self.drive(chat_body)
        return error

    @property
    def upstream_calls(self) -> int:
        app = self.app
        assert isinstance(app, Answers)
        return app.calls


class Answers:
    """A Chat app answering its first request with a reply cut before its finish, and its
    second with the rest."""

    def __init__(self) -> None:
        self.calls = 0
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        self.bodies.append(orjson.loads((await receive())["body"]))
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.calls == 1:
            parts = [sse(chunk({"role": "assistant", "content": "Hello "}))]
        else:
            parts = [sse(chunk({"content": "world"})), sse(chunk(finish="stop"))]
        for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def test_a_run_driven_twice_delivers_one_stream_with_both_rounds_output() -> None:
    upstream = Answers()
    mw = ResponsesMiddleware(upstream, keepalive_interval=0)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        delivery = HTTPDelivery(send, b"rid")
        run = TwoRounds(mw, scope, receive, delivery, b"rid", route="POST /v1/responses")
        await run.respond()

    exchange = await drive(app, responses_body())

    assert upstream.calls == 2
    check_stream(exchange.body)
    events = events_of(exchange.body)
    types = [event["type"] for event in events]
    assert types.count("response.created") == 1
    assert types[-1] == "response.completed"
    # The event emitted between the rounds, after the first round's delta.
    assert types.index("response.output_text.delta") < types.index("response.in_progress", 2)
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hello world"
    assert exchange.messages[0]["type"] == "http.response.start"
    assert [m["type"] for m in exchange.messages].count("http.response.start") == 1
