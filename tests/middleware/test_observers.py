"""What the middleware reports (observer, log line) and what it stores."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import orjson
import pytest

from stream_mw import ResponseRecord, ResponsesMiddleware
from stream_mw._observe import REQUEST_LOG_MESSAGE
from tests.checker import check_stream
from tests.e2e.apps import USAGE, chunk, sse
from tests.middleware.harness import END, Exchange, Upstream, drive, http_scope, responses_body

pytestmark = pytest.mark.anyio

TEXT = [
    sse(chunk({"role": "assistant", "content": "Stored answer"})),
    sse(chunk(finish="stop")),
    sse(chunk(usage=USAGE, choices=False)),
    b"data: [DONE]\n\n",
]


def text_upstream() -> Upstream:
    return Upstream([*TEXT, END])


def observed(**settings: Any) -> tuple[list[ResponseRecord], dict[str, Any]]:
    records: list[ResponseRecord] = []
    settings.setdefault("keepalive_interval", 0)
    settings["on_response"] = records.append
    return records, settings


async def test_the_observer_gets_one_record_per_streamed_response() -> None:
    records, settings = observed()
    exchange = await drive(ResponsesMiddleware(text_upstream(), **settings), responses_body())

    checked = check_stream(exchange.body)
    [record] = records
    assert record.response_id == checked.response["id"]
    assert record.model == "text"
    assert record.status == "completed"
    assert record.stream is True
    assert record.http_status == 200
    assert record.error is None
    assert record.usage is not None
    assert record.usage["input_tokens"] == USAGE["prompt_tokens"]
    assert record.usage["output_tokens"] == USAGE["completion_tokens"]
    assert record.duration > 0


async def test_an_async_observer_is_awaited_for_a_non_streaming_response() -> None:
    records: list[ResponseRecord] = []

    async def observer(record: ResponseRecord) -> None:
        await anyio.lowlevel.checkpoint()
        records.append(record)

    upstream = text_upstream()
    mw = ResponsesMiddleware(upstream, on_response=observer, keepalive_interval=0)
    exchange = await drive(mw, responses_body(stream=False))

    [record] = records
    assert record.stream is False
    assert record.response_id == exchange.json()["id"]


async def test_failed_and_rejected_requests_are_reported_too() -> None:
    records, settings = observed()
    error = sse({"error": {"message": "overloaded", "code": "rate_limit_exceeded"}})
    await drive(ResponsesMiddleware(Upstream([TEXT[0], error, END]), **settings), responses_body())
    await drive(ResponsesMiddleware(text_upstream(), **settings), b"{}")
    await drive(
        ResponsesMiddleware(Upstream([END], status=503, content_type=b"text/plain"), **settings),
        responses_body(),
    )

    failed, rejected, upstream_http = records
    assert (failed.status, failed.http_status) == ("failed", 200)
    assert failed.error is not None
    assert failed.error["code"] == "rate_limit_exceeded"
    assert (rejected.status, rejected.http_status) == ("failed", 400)
    assert (upstream_http.status, upstream_http.http_status) == ("failed", 503)


async def test_a_client_disconnect_is_reported_as_such() -> None:
    records, settings = observed()
    disconnect = anyio.Event()

    def leave(message: Any, exchange: Exchange) -> None:
        if len(exchange.bodies) == 2:
            disconnect.set()

    upstream = Upstream([TEXT[0], anyio.sleep_forever])
    await drive(
        ResponsesMiddleware(upstream, **settings),
        responses_body(),
        disconnect=disconnect,
        on_send=leave,
    )

    [record] = records
    assert record.status == "failed"
    assert record.error is not None
    assert record.error["code"] == "client_disconnected"


async def test_a_failing_observer_is_logged_and_the_response_still_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def observer(record: ResponseRecord) -> None:
        raise RuntimeError("metering down")

    mw = ResponsesMiddleware(text_upstream(), on_response=observer, keepalive_interval=0)
    with caplog.at_level(logging.ERROR, logger="stream_mw"):
        exchange = await drive(mw, responses_body())

    assert check_stream(exchange.body).status == "completed"
    assert any("observer failed" in r.getMessage() for r in caplog.records)


async def test_one_info_line_per_request_and_no_credentials_in_any_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mw = ResponsesMiddleware(text_upstream(), keepalive_interval=0)
    with caplog.at_level(logging.DEBUG, logger="stream_mw"):
        exchange = await drive(mw, responses_body())

    response_id = check_stream(exchange.body).response["id"]
    info = [
        r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("stream_mw")
    ]
    assert [r.msg for r in info] == [REQUEST_LOG_MESSAGE]
    line = info[0].getMessage()
    assert line.startswith("POST /v1/responses 200 ")
    assert f"response={response_id}" in line
    assert "status=completed" in line
    assert "input_tokens=11" in line
    for record in caplog.records:
        assert "sk-secret-token" not in record.getMessage()
        assert "authorization" not in record.getMessage().lower()


# --- the store ----------------------------------------------------------------------------------


async def get(mw: ResponsesMiddleware, path: str) -> Exchange:
    return await drive(mw, b"", scope=http_scope(method="GET", path=path))


async def test_a_stored_response_can_be_read_back_with_its_input_items() -> None:
    upstream = Upstream([*TEXT, END])
    mw = ResponsesMiddleware(upstream, keepalive_interval=0)
    exchange = await drive(mw, responses_body(stream=True, input="first question"))
    response = check_stream(exchange.body).response

    stored = await get(mw, f"/v1/responses/{response['id']}")
    assert stored.status == 200
    assert stored.json()["output"] == response["output"]
    items = await get(mw, f"/v1/responses/{response['id']}/input_items")
    assert items.status == 200
    assert "first question" in orjson.dumps(items.json()).decode()


async def test_the_response_is_stored_before_its_terminal_event_goes_out() -> None:
    """A client may continue with previous_response_id the moment it sees the terminal event,
    possibly through another gateway process sharing the store."""
    mw = ResponsesMiddleware(text_upstream(), keepalive_interval=0)
    status_at_last_byte: list[int] = []

    async def look_up_at_the_last_byte(message: Any, exchange: Exchange) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            response_id = check_stream(exchange.body).response["id"]
            status_at_last_byte.append((await get(mw, f"/v1/responses/{response_id}")).status)

    await drive(mw, responses_body(), on_send=look_up_at_the_last_byte)

    assert status_at_last_byte == [200]


async def test_previous_response_id_replays_the_stored_conversation_to_the_app() -> None:
    calls: list[Upstream] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        upstream = Upstream([*TEXT, END])
        calls.append(upstream)
        await upstream(scope, receive, send)

    mw = ResponsesMiddleware(app, keepalive_interval=0)
    first = check_stream((await drive(mw, responses_body(input="first question"))).body)
    body = responses_body(input="second question", previous_response_id=first.response["id"])
    second = await drive(mw, body)

    assert check_stream(second.body).response["previous_response_id"] == first.response["id"]
    assert calls[1].chat_request["messages"] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "Stored answer"},
        {"role": "user", "content": "second question"},
    ]


async def test_store_false_responses_are_not_kept() -> None:
    mw = ResponsesMiddleware(text_upstream(), keepalive_interval=0)
    exchange = await drive(mw, responses_body(store=False))
    response_id = check_stream(exchange.body).response["id"]

    assert (await get(mw, f"/v1/responses/{response_id}")).status == 404


async def test_store_routes_pass_through_when_storage_is_off() -> None:
    upstream = Upstream([END], status=418, content_type=b"text/plain")
    mw = ResponsesMiddleware(upstream, store_url=None)
    exchange = await get(mw, "/v1/responses/resp_123")

    assert exchange.status == 418
    assert upstream.calls == 1
