"""Exceptions in the wrapped app and clients that go away, message by message."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import httpx
import openai
import pytest

from stream_mw import UpstreamError
from tests.checker import check_stream
from tests.e2e.apps import USAGE, chunk, sse
from tests.middleware.harness import (
    END,
    Exchange,
    Upstream,
    drive,
    event_types,
    http_scope,
    middleware,
    responses_body,
)

pytestmark = pytest.mark.anyio

TEXT = [
    sse(chunk({"role": "assistant", "content": "Hel"})),
    sse(chunk({"content": "lo"})),
    sse(chunk(finish="stop")),
    sse(chunk(usage=USAGE, choices=False)),
    b"data: [DONE]\n\n",
]


# --- exceptions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
async def test_an_exception_before_the_response_started_is_a_500_and_is_re_raised(
    stream: bool,
) -> None:
    upstream = Upstream([RuntimeError("database on fire")], start=False)
    exchange = Exchange()
    with pytest.raises(RuntimeError, match="database on fire"):
        await drive(middleware(upstream), responses_body(stream=stream), exchange=exchange)

    exchange.check()
    assert exchange.status == 500
    assert exchange.headers["content-type"] == "application/json"
    error = exchange.json()["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "server_error"
    assert "RuntimeError" in error["message"]
    assert "database on fire" not in error["message"], "internals leaked to the client"
    # Re-raising makes servers drop the connection, so the client is told not to reuse it.
    assert exchange.headers["connection"] == "close"


async def test_an_upstream_error_raised_before_the_start_keeps_its_status_and_message() -> None:
    failure = UpstreamError("backend unreachable", code="server_error", status_code=503)
    upstream = Upstream([failure], start=False)
    exchange = Exchange()
    with pytest.raises(UpstreamError):
        await drive(middleware(upstream), responses_body(), exchange=exchange)

    assert exchange.status == 503
    assert exchange.json()["error"]["message"] == "backend unreachable"


async def test_an_exception_mid_stream_sends_response_failed_ends_the_body_and_is_re_raised() -> (
    None
):
    upstream = Upstream([TEXT[0], TEXT[1], ValueError("lost the socket")])
    exchange = Exchange()
    with pytest.raises(ValueError, match="lost the socket"):
        await drive(middleware(upstream), responses_body(), exchange=exchange)

    exchange.check()
    assert exchange.status == 200
    checked = check_stream(exchange.body, done_marker=True)
    assert checked.status == "failed"
    assert checked.response["error"]["code"] == "server_error"
    assert checked.output_text == "Hello"


async def test_an_upstream_error_mid_stream_keeps_its_code() -> None:
    failure = UpstreamError("prompt too long for context window", code="context_length_exceeded")
    upstream = Upstream([TEXT[0], failure])
    exchange = Exchange()
    with pytest.raises(UpstreamError):
        await drive(middleware(upstream), responses_body(), exchange=exchange)

    checked = check_stream(exchange.body)
    assert checked.response["error"]["code"] == "context_length_exceeded"


async def test_an_exception_after_the_stream_finished_leaves_the_body_alone_and_is_re_raised() -> (
    None
):
    upstream = Upstream([*TEXT, KeyError("cleanup failed")])
    exchange = Exchange()
    with pytest.raises(KeyError):
        await drive(middleware(upstream), responses_body(), exchange=exchange)

    exchange.check()
    assert check_stream(exchange.body).status == "completed"


async def test_an_exception_in_a_streamed_upstream_of_a_non_streaming_request_is_an_http_error() -> (
    None
):
    upstream = Upstream([TEXT[0], RuntimeError("boom")])
    exchange = Exchange()
    with pytest.raises(RuntimeError):
        await drive(middleware(upstream), responses_body(stream=False), exchange=exchange)

    exchange.check()
    assert exchange.status >= 500
    assert exchange.json()["error"]["type"] == "server_error"


async def test_an_exception_while_a_json_upstream_body_is_read_is_an_http_error() -> None:
    upstream = Upstream([b'{"id": "x", ', RuntimeError("boom")], content_type=b"application/json")
    exchange = Exchange()
    with pytest.raises(RuntimeError):
        await drive(middleware(upstream), responses_body(stream=False), exchange=exchange)

    exchange.check()
    assert exchange.status == 500


async def test_an_app_returning_without_a_response_is_a_500() -> None:
    exchange = await drive(middleware(Upstream([], start=False)), responses_body())

    exchange.check()
    assert exchange.status == 500
    assert "without sending a response" in exchange.json()["error"]["message"]
    assert "connection" not in exchange.headers


async def test_an_app_returning_mid_stream_closes_the_stream() -> None:
    exchange = await drive(middleware(Upstream(TEXT[:2])), responses_body())

    exchange.check()
    assert check_stream(exchange.body).status == "failed"


async def test_a_body_before_the_start_is_an_error() -> None:
    upstream = Upstream([TEXT[0]], start=False)
    with pytest.raises(RuntimeError, match=r"http\.response\.start"):
        await drive(middleware(upstream), responses_body())


# --- clients that go away -----------------------------------------------------------------------


@pytest.mark.parametrize("keepalive", [0, 0.05])
async def test_a_client_disconnect_mid_stream_cancels_the_app(keepalive: float) -> None:
    disconnect = anyio.Event()

    def leave_after_first_text(message: Any, exchange: Exchange) -> None:
        if message["type"] == "http.response.body" and "response.output_text.delta" in (
            event_types(message["body"])
        ):
            disconnect.set()

    upstream = Upstream([TEXT[0], anyio.sleep_forever])
    exchange = Exchange()
    with anyio.fail_after(5):
        await drive(
            middleware(upstream, keepalive_interval=keepalive),
            responses_body(),
            disconnect=disconnect,
            on_send=leave_after_first_text,
            exchange=exchange,
        )

    assert upstream.cancelled
    assert not upstream.finished
    assert exchange.bodies[-1]["more_body"] is True, "nothing is sent to a client that left"


async def test_an_app_waiting_in_receive_is_stopped_when_the_client_leaves() -> None:
    disconnect = anyio.Event()
    upstream = Upstream([TEXT[0], None, anyio.sleep_forever])
    upstream.steps[1] = upstream.wait_for_disconnect

    def leave(message: Any, exchange: Exchange) -> None:
        if len(exchange.bodies) == 2:
            disconnect.set()

    with anyio.fail_after(5):
        await drive(middleware(upstream), responses_body(), disconnect=disconnect, on_send=leave)

    assert upstream.cancelled
    assert upstream.later_messages in ([], [{"type": "http.disconnect"}])


async def test_a_send_raising_oserror_cancels_the_app_and_is_not_raised() -> None:
    upstream = Upstream([TEXT[0], anyio.sleep_forever])
    bodies = 0

    def broken_pipe(message: Any) -> BaseException | None:
        nonlocal bodies
        if message["type"] == "http.response.body":
            bodies += 1
            if bodies == 2:
                return BrokenPipeError("client went away")
        return None

    with anyio.fail_after(5):
        await drive(middleware(upstream), responses_body(), send_error=broken_pipe)

    assert upstream.cancelled


async def test_a_client_leaving_during_a_non_streaming_request_cancels_the_app() -> None:
    disconnect = anyio.Event()
    disconnect.set()
    upstream = Upstream([anyio.sleep_forever], content_type=b"application/json")
    with anyio.fail_after(5):
        exchange = await drive(
            middleware(upstream), responses_body(stream=False), disconnect=disconnect
        )

    assert upstream.cancelled
    assert (
        exchange.messages
        == [m for m in exchange.messages if m["type"] == "http.response.start"]
        == []
    )


async def test_after_the_response_is_complete_the_app_hears_disconnect_and_is_not_cancelled() -> (
    None
):
    upstream = Upstream([*TEXT, None, END])
    upstream.steps[len(TEXT)] = upstream.wait_for_disconnect
    with anyio.fail_after(5):
        exchange = await drive(middleware(upstream), responses_body())

    exchange.check()
    assert upstream.later_messages == [{"type": "http.disconnect"}]
    assert upstream.finished
    assert not upstream.cancelled


async def test_a_receive_that_fails_cancels_the_app_and_is_raised() -> None:
    upstream = Upstream([TEXT[0], anyio.sleep_forever])
    records: list[Any] = []
    calls = 0

    async def receive() -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": responses_body(), "more_body": False}
        await anyio.lowlevel.checkpoint()
        raise RuntimeError("receive broke")

    async def send(message: Any) -> None:
        pass

    app = middleware(upstream, on_response=records.append)
    with anyio.fail_after(5), pytest.raises(RuntimeError, match="receive broke"):
        await app(http_scope(), receive, send)

    assert upstream.cancelled
    assert not upstream.finished
    assert [r.status for r in records] == ["failed"]
    assert records[0].error["code"] == "server_error"


async def test_a_stream_failed_mid_body_stops_the_app_rather_than_reading_the_rest() -> None:
    # An upstream that never ends and never reads: only cancellation stops it.
    cancelled = False

    async def endless(scope: Any, receive: Any, send: Any) -> None:
        nonlocal cancelled
        await receive()
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        error = b'data: {"error": {"message": "the model crashed", "type": "server_error"}}\n\n'
        try:
            for body in (TEXT[0], error):
                await send({"type": "http.response.body", "body": body, "more_body": True})
            while True:
                await send({"type": "http.response.body", "body": TEXT[1], "more_body": True})
                await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class():
            cancelled = True
            raise

    with anyio.fail_after(5):
        exchange = await drive(middleware(endless), responses_body())

    exchange.check()
    assert event_types(exchange.body)[-1] == "response.failed"
    assert cancelled


# --- a body that breaks off after finish_reason ------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [TEXT[3][: len(TEXT[3]) // 2], TEXT[3] + b"data: [DO"],
    ids=["inside the usage chunk", "inside [DONE]"],
)
async def test_a_non_streamed_answer_cut_after_finish_reason_is_answered_and_stored(
    tail: bytes,
) -> None:
    """Issue 11.1: such a cut was a 502 and nothing was stored."""
    app = middleware(Upstream([*TEXT[:3], tail, END]))
    exchange = await drive(app, responses_body(stream=False))

    exchange.check()
    assert exchange.status == 200, exchange.body
    response = exchange.json()
    assert response["status"] == "completed"
    assert response["output"][0]["content"][0]["text"] == "Hello"
    stored = await drive(
        app, b"", scope=http_scope(method="GET", path=f"/v1/responses/{response['id']}")
    )
    assert stored.status == 200
    assert stored.json()["id"] == response["id"]


# --- the error event -------------------------------------------------------------------------


async def sdk_events(error_event: bool) -> list[str]:
    """The event types openai-python's ``responses.create(stream=True)`` yields for a stream
    that fails in-band, through the middleware served over ``httpx.ASGITransport``."""
    failing = Upstream([TEXT[0], sse({"error": {"message": "model overloaded"}}), END])
    app = middleware(failing, error_event=error_event)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport) as http_client:
        client = openai.AsyncOpenAI(
            api_key="sk-test",
            base_url="http://gateway/v1",
            http_client=http_client,
            max_retries=0,
            _strict_response_validation=True,
        )
        stream = await client.responses.create(model="m", input="hi", stream=True)
        return [event.type async for event in stream]


async def test_with_error_event_on_openai_python_raises_api_error_with_the_message() -> None:
    """Issue 10.5: the flat error event was yielded as a plain event, never raised."""
    with pytest.raises(openai.APIError) as info:
        await sdk_events(error_event=True)
    assert info.value.message == "upstream reported an error: model overloaded"
    assert info.value.body == {
        "type": "server_error",
        "code": "server_error",
        "message": "upstream reported an error: model overloaded",
        "param": None,
    }


async def test_with_error_event_off_openai_python_sees_response_failed_and_no_error() -> None:
    types = await sdk_events(error_event=False)
    assert types[-1] == "response.failed"
    assert "error" not in types


def endless_text(stopped: list[str]) -> Any:
    """A wrapped app streaming text for ever (and never reading): only cancellation stops it."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        piece = sse(chunk({"content": "x" * 1000}))
        try:
            await send({"type": "http.response.body", "body": TEXT[0], "more_body": True})
            while True:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                await anyio.lowlevel.checkpoint()
        except anyio.get_cancelled_exc_class():
            stopped.append("cancelled")
            raise

    return app


@pytest.mark.parametrize("stream", [True, False])
async def test_an_upstream_stream_past_max_response_bytes_fails_and_stops_the_app(
    stream: bool,
) -> None:
    stopped: list[str] = []
    app = middleware(endless_text(stopped), max_response_bytes=100_000)
    with anyio.fail_after(5):
        exchange = await drive(app, responses_body(stream=stream))

    if stream:
        exchange.check()
        checked = check_stream(exchange.body)
        assert checked.status == "failed"
        error = checked.response["error"]
        assert len(checked.output_text) < 100_000
    else:
        assert exchange.status == 502
        error = exchange.json()["error"]
    assert error["code"] == "server_error"
    assert "max_response_bytes (100000 bytes)" in error["message"]
    assert stopped == ["cancelled"]


@pytest.mark.parametrize("stream", [True, False])
async def test_an_upstream_stream_exactly_max_response_bytes_long_completes(stream: bool) -> None:
    app = middleware(Upstream([*TEXT, END]), max_response_bytes=sum(map(len, TEXT)))
    exchange = await drive(app, responses_body(stream=stream))

    assert exchange.status == 200
    if stream:
        assert check_stream(exchange.body).status == "completed"
    else:
        assert exchange.json()["status"] == "completed"
