"""The whole upstream corpus (``tests/fixtures/streams``) replayed through the middleware.

Each recorded Chat Completions body reaches the middleware as an ASGI app would send it, one
body message per SSE event, and the client's stream must pass the checker and match the
fixture's expectation, exactly as the converter alone does: the middleware adds no
behaviour of its own to a stream.
"""

from __future__ import annotations

import orjson
import pytest

from stream_mw import ResponsesMiddleware
from tests.checker import Fixture, check_expectation, check_stream, load_fixtures
from tests.middleware.harness import END, Upstream, drive

pytestmark = pytest.mark.anyio

FIXTURES = load_fixtures()


def events_of(body: bytes) -> list[bytes]:
    """The body cut after every blank line (any line ending), bytes kept as they are."""
    pieces, start = [], 0
    for index in range(len(body)):
        if body[index : index + 2] in (b"\n\n", b"\r\r") or body[index : index + 4] == b"\r\n\r\n":
            end = index + (4 if body[index : index + 4] == b"\r\n\r\n" else 2)
            if end > start:
                pieces.append(body[start:end])
                start = end
    if start < len(body):
        pieces.append(body[start:])
    return pieces


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
async def test_every_corpus_stream_comes_out_of_the_middleware_as_expected(
    fixture: Fixture,
) -> None:
    request = dict(fixture.request or {"model": "m", "input": "hello"})
    request["stream"] = True
    settings = {"keepalive_interval": 0, **fixture.settings}
    upstream = Upstream([*events_of(fixture.body), END])

    exchange = await drive(ResponsesMiddleware(upstream, **settings), orjson.dumps(request))

    exchange.check()
    assert exchange.status == 200
    assert all(exchange.chunks), "an empty body message was sent"
    assert len(exchange.bodies) <= len(upstream.steps) + 1
    checked = check_stream(
        exchange.body,
        done_marker=settings.get("done_marker", True),
        partial_calls_done=settings.get("close_partial_tool_calls", False),
    )
    check_expectation(checked, fixture.expect)
