"""Streaming through the middleware, message by message: flushing, framing, headers, keep-alive."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from stream_mw import ResponsesMiddleware, Settings, StreamConverter
from tests.checker import check_stream
from tests.e2e.apps import USAGE, chunk, sse, tool_call
from tests.middleware.harness import (
    END,
    Exchange,
    Last,
    Upstream,
    drive,
    event_types,
    middleware,
    responses_body,
)

pytestmark = pytest.mark.anyio

TEXT = [
    sse(chunk({"role": "assistant", "content": ""})),
    sse(chunk({"content": "Hel"})),
    sse(chunk({"content": "lo"})),
    sse(chunk(finish="stop")),
    sse(chunk(usage=USAGE, choices=False)),
    b"data: [DONE]\n\n",
]


def expected_types(frames: list[bytes]) -> list[list[str]]:
    """What a converter emits for each upstream read, empty reads left out."""
    converter = StreamConverter({"model": "text", "input": "hello", "stream": True}, Settings())
    out = [event_types(converter.start())]
    for frame in frames:
        data = converter.feed(frame)
        if data:
            out.append(event_types(data))
    return out


async def test_each_upstream_chunk_is_flushed_as_one_body_message_before_the_next_is_read() -> None:
    upstream = Upstream([*TEXT, END])
    # For each client body message: how many upstream messages had been sent at that moment.
    seen_at: list[int] = []

    def record(message: Any, exchange: Exchange) -> None:
        if message["type"] == "http.response.body":
            seen_at.append(len(upstream.sent))

    exchange = await drive(middleware(upstream), responses_body(), on_send=record)

    exchange.check()
    assert [event_types(c) for c in exchange.chunks] == expected_types(TEXT)
    # response.created went out with the start, before the upstream sent any body...
    assert seen_at[0] == 1
    # ...and every later message was sent while handling a different upstream message.
    assert seen_at[1:] == sorted(set(seen_at[1:]))
    assert all(exchange.chunks), "an empty body message was sent"
    checked = check_stream(exchange.body, done_marker=True)
    assert checked.status == "completed"
    assert checked.output_text == "Hello"


async def test_response_created_goes_out_before_the_upstream_sends_its_first_chunk() -> None:
    created = anyio.Event()

    async def wait_for_created() -> None:
        with anyio.fail_after(5):
            await created.wait()

    def watch(message: Any, exchange: Exchange) -> None:
        if message["type"] == "http.response.body" and "response.created" in event_types(
            message["body"]
        ):
            created.set()

    upstream = Upstream([wait_for_created, *TEXT, END])
    exchange = await drive(middleware(upstream), responses_body(), on_send=watch)

    assert event_types(exchange.chunks[0]) == ["response.created", "response.in_progress"]
    check_stream(exchange.body)


async def test_stream_headers_drop_content_length_and_forbid_caching_and_buffering() -> None:
    upstream = Upstream(
        [*TEXT, END],
        headers=[(b"content-length", b"999"), (b"x-request-id", b"req-42"),
                 (b"cache-control", b"public, max-age=60")],
    )  # fmt: skip
    exchange = await drive(middleware(upstream), responses_body())

    assert exchange.status == 200
    headers = exchange.headers
    assert "content-length" not in headers
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert headers["x-accel-buffering"] == "no"
    assert headers["x-upstream-request-id"] == "req-42"
    assert headers["x-request-id"].startswith("req_")
    assert exchange.header_names.count("cache-control") == 1
    check_stream(exchange.body)


async def test_events_split_across_reads_are_sent_without_empty_messages() -> None:
    stream = b"".join(TEXT)
    byte_by_byte = [stream[i : i + 1] for i in range(len(stream))]
    upstream = Upstream([*byte_by_byte, END])

    exchange = await drive(middleware(upstream), responses_body())

    exchange.check()
    assert all(exchange.chunks)
    assert len(exchange.bodies) < len(byte_by_byte)
    assert check_stream(exchange.body).output_text == "Hello"


async def test_the_body_ends_at_done_and_later_upstream_sends_are_swallowed() -> None:
    exchange_box: list[Exchange] = []
    completed_early = anyio.Event()

    async def body_already_ended() -> None:
        # The upstream has sent [DONE] but not yet its final message: the client's body
        # must be complete already.
        with anyio.fail_after(5):
            await completed_early.wait()

    def watch(message: Any, exchange: Exchange) -> None:
        exchange_box.append(exchange)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            completed_early.set()

    upstream = Upstream([*TEXT, body_already_ended, b'data: {"junk": true}\n\n', END])
    exchange = await drive(middleware(upstream), responses_body(), on_send=watch)

    exchange.check()
    assert upstream.finished
    assert exchange.bodies[-1]["body"].endswith(b"data: [DONE]\n\n")
    assert b"junk" not in exchange.body
    assert check_stream(exchange.body, done_marker=True).status == "completed"


async def test_an_in_band_error_fails_the_response_and_ends_the_body_at_once() -> None:
    ended = anyio.Event()

    async def wait_until_ended() -> None:
        with anyio.fail_after(5):
            await ended.wait()

    def watch(message: Any, exchange: Exchange) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            ended.set()

    error = sse({"error": {"message": "backend exploded", "type": "server_error", "code": 500}})
    upstream = Upstream([TEXT[0], TEXT[1], error, wait_until_ended, TEXT[2], END])
    exchange = await drive(middleware(upstream), responses_body(), on_send=watch)

    exchange.check()
    checked = check_stream(exchange.body)
    assert checked.status == "failed"
    assert "backend exploded" in checked.response["error"]["message"]
    assert "lo" not in checked.output_text


async def test_an_upstream_ending_after_finish_reason_without_done_completes() -> None:
    upstream = Upstream([*TEXT[:5], END])
    exchange = await drive(middleware(upstream), responses_body())

    exchange.check()
    assert check_stream(exchange.body).status == "completed"


async def test_an_upstream_ending_before_finish_reason_fails_the_response() -> None:
    upstream = Upstream([*TEXT[:3], END])
    exchange = await drive(middleware(upstream), responses_body())

    exchange.check()
    checked = check_stream(exchange.body)
    assert checked.status == "failed"
    assert checked.output_text == "Hello"


async def test_data_in_the_upstreams_final_message_is_converted() -> None:
    upstream = Upstream([*TEXT[:4], Last(TEXT[4] + TEXT[5])])
    exchange = await drive(middleware(upstream), responses_body())

    exchange.check()
    checked = check_stream(exchange.body, done_marker=True)
    assert checked.response["usage"]["total_tokens"] == USAGE["total_tokens"]


async def test_parallel_tool_calls_stream_with_their_arguments() -> None:
    frames = [
        sse(chunk({"tool_calls": [tool_call(0, call_id="call_a", name="f", arguments="{}")]})),
        sse(chunk({"tool_calls": [tool_call(1, call_id="call_b", name="g", arguments='{"x"')]})),
        sse(chunk({"tool_calls": [tool_call(1, arguments=": 1}")]})),
        sse(chunk(finish="tool_calls")),
        b"data: [DONE]\n\n",
    ]
    tools = [
        {"type": "function", "name": "f", "parameters": {"type": "object"}},
        {"type": "function", "name": "g", "parameters": {"type": "object"}},
    ]
    exchange = await drive(middleware(Upstream([*frames, END])), responses_body(tools=tools))

    checked = check_stream(exchange.body)
    assert [(i.added["name"], i.arguments) for i in checked.items] == [
        ("f", "{}"),
        ("g", '{"x": 1}'),
    ]


async def test_keepalive_repeats_in_progress_while_the_upstream_is_silent() -> None:
    keepalive_seen = anyio.Event()

    async def silent_until_keepalive() -> None:
        with anyio.fail_after(5):
            await keepalive_seen.wait()

    def watch(message: Any, exchange: Exchange) -> None:
        if message["type"] != "http.response.body" or len(exchange.bodies) < 2:
            return
        if event_types(message["body"]) == ["response.in_progress"]:
            keepalive_seen.set()

    upstream = Upstream([TEXT[0], TEXT[1], silent_until_keepalive, *TEXT[2:], END])
    exchange = await drive(
        middleware(upstream, keepalive_interval=0.05), responses_body(), on_send=watch
    )

    exchange.check()
    keepalives = [c for c in exchange.chunks[1:] if event_types(c) == ["response.in_progress"]]
    assert keepalives
    checked = check_stream(exchange.body, done_marker=True)
    assert checked.output_text == "Hello"
    assert checked.status == "completed"


async def test_the_done_marker_setting_reaches_the_stream() -> None:
    exchange = await drive(middleware(Upstream([*TEXT, END]), done_marker=False), responses_body())
    check_stream(exchange.body, done_marker=False)


async def test_keepalive_repeats_each_interval_while_the_upstream_stays_silent() -> None:
    three_seen = anyio.Event()

    async def silent_until_three_keepalives() -> None:
        with anyio.fail_after(5):
            await three_seen.wait()

    def watch(message: Any, exchange: Exchange) -> None:
        chunks = exchange.chunks[2:]
        if sum(event_types(c) == ["response.in_progress"] for c in chunks) >= 3:
            three_seen.set()

    upstream = Upstream([TEXT[0], TEXT[1], silent_until_three_keepalives, *TEXT[2:], END])
    exchange = await drive(
        middleware(upstream, keepalive_interval=0.02), responses_body(), on_send=watch
    )

    exchange.check()
    checked = check_stream(exchange.body, done_marker=True)
    assert checked.types.count("response.in_progress") >= 4  # one at the start, then three
    assert checked.output_text == "Hello"


async def test_an_app_that_waits_before_answering_streams_the_same_events() -> None:
    async def slow_upstream(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        # The middleware prepares what it can while the app waits for its upstream.
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
        for frame in TEXT:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    waited = await drive(ResponsesMiddleware(slow_upstream, keepalive_interval=0), responses_body())
    at_once = await drive(middleware(Upstream([*TEXT, END])), responses_body())

    waited.check()
    assert [event_types(c) for c in waited.chunks] == [event_types(c) for c in at_once.chunks]
    checked = check_stream(waited.body, done_marker=True)
    assert checked.output_text == "Hello"
