"""Non-streaming answers, stream/JSON mismatches and upstream HTTP errors, message by message."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.checker import check_response, check_stream
from tests.e2e.apps import USAGE, chunk, completion_of, sse
from tests.middleware.harness import END, Last, Upstream, drive, middleware, responses_body

pytestmark = pytest.mark.anyio

FRAMES = [
    chunk({"role": "assistant", "content": "Hello"}),
    chunk({"content": " there"}),
    chunk(finish="stop"),
    chunk(usage=USAGE, choices=False),
]
SSE = [sse(frame) for frame in FRAMES] + [b"data: [DONE]\n\n"]
COMPLETION = orjson.dumps(completion_of(FRAMES, "text"))


def output_text(response: dict[str, Any]) -> str:
    return "".join(
        part.get("text", "")
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


async def test_a_json_completion_becomes_one_response_object() -> None:
    upstream = Upstream([Last(COMPLETION)], content_type=b"application/json",
                        headers=[(b"content-length", str(len(COMPLETION)).encode())])  # fmt: skip
    exchange = await drive(middleware(upstream), responses_body(stream=False))

    exchange.check()
    assert len(exchange.bodies) == 1
    assert exchange.status == 200
    assert exchange.headers["content-type"] == "application/json"
    assert int(exchange.headers["content-length"]) == len(exchange.body)
    response = check_response(exchange.json())
    assert response["object"] == "response"
    assert response["status"] == "completed"
    assert response["id"].startswith("resp_")
    assert output_text(response) == "Hello there"
    assert response["usage"]["total_tokens"] == USAGE["total_tokens"]


async def test_a_json_completion_split_over_many_messages_is_joined() -> None:
    pieces = [COMPLETION[i : i + 7] for i in range(0, len(COMPLETION), 7)]
    upstream = Upstream([*pieces, END], content_type=b"application/json")
    exchange = await drive(middleware(upstream), responses_body(stream=False))

    assert output_text(exchange.json()) == "Hello there"


async def test_a_streamed_upstream_answers_a_non_streaming_request_with_json() -> None:
    upstream = Upstream([*SSE, END])
    exchange = await drive(middleware(upstream), responses_body(stream=False))

    exchange.check()
    assert exchange.headers["content-type"] == "application/json"
    response = check_response(exchange.json())
    assert response["status"] == "completed"
    assert output_text(response) == "Hello there"


async def test_a_json_upstream_answers_a_streaming_request_with_a_full_stream() -> None:
    upstream = Upstream([Last(COMPLETION)], content_type=b"application/json")
    exchange = await drive(middleware(upstream), responses_body(stream=True))

    exchange.check()
    assert exchange.headers["content-type"].startswith("text/event-stream")
    checked = check_stream(exchange.body, done_marker=True)
    assert checked.status == "completed"
    assert checked.output_text == "Hello there"
    assert checked.response["usage"]["total_tokens"] == USAGE["total_tokens"]


async def test_a_json_tool_call_completion_streams_as_a_function_call() -> None:
    completion = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "f", "arguments": '{"a": 1}'}},
                    ],
                },
            }
        ],
    }  # fmt: skip
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    upstream = Upstream([Last(orjson.dumps(completion))], content_type=b"application/json")
    exchange = await drive(middleware(upstream), responses_body(tools=tools))

    checked = check_stream(exchange.body)
    assert checked.status == "completed"
    [call] = checked.items
    assert (call.added["call_id"], call.arguments) == ("call_1", '{"a": 1}')


async def test_a_failed_streamed_upstream_gives_a_non_streaming_request_an_http_error() -> None:
    error = sse({"error": {"message": "model crashed", "type": "server_error"}})
    upstream = Upstream([SSE[0], error, END])
    exchange = await drive(middleware(upstream), responses_body(stream=False))

    exchange.check()
    assert exchange.status == 502
    body = exchange.json()
    assert "model crashed" in body["error"]["message"]
    assert body["error"]["type"] == "server_error"


async def test_a_length_cut_non_streaming_response_is_incomplete_with_status_200() -> None:
    frames = [chunk({"content": "cut"}), chunk(finish="length")]
    upstream = Upstream([Last(orjson.dumps(completion_of(frames, "m")))],
                        content_type=b"application/json")  # fmt: skip
    exchange = await drive(middleware(upstream), responses_body(stream=False))

    assert exchange.status == 200
    response = check_response(exchange.json())
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("status", "content_type", "body", "message", "code"),
    [
        (
            400,
            b"application/json",
            {"error": {"message": "bad tool schema", "type": "invalid_request_error",
                       "param": "tools", "code": "invalid_tools"}},
            "bad tool schema",
            "invalid_tools",
        ),
        (
            400,
            b"application/json",
            {"object": "error", "message": "This model's maximum context length is 4096 tokens.",
             "type": "BadRequestError", "param": None, "code": 400},
            "This model's maximum context length is 4096 tokens.",
            "context_length_exceeded",
        ),
        (422, b"application/json", {"detail": "model not loaded"}, "model not loaded",
         "invalid_prompt"),
        (429, b"application/json", {"error": "slow down"}, "slow down", "rate_limit_exceeded"),
        (401, b"application/json", {"message": "bad key"}, "bad key", "invalid_api_key"),
        (503, b"text/plain", "upstream overloaded", "upstream overloaded", "server_error"),
        (500, b"text/html", "", "The upstream answered HTTP 500 with an empty body.",
         "server_error"),
    ],
)  # fmt: skip
async def test_an_upstream_http_error_keeps_its_status_and_message(
    stream: bool, status: int, content_type: bytes, body: Any, message: str, code: str
) -> None:
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    upstream = Upstream([Last(raw)], status=status, content_type=content_type,
                        headers=[(b"retry-after", b"2"), (b"content-length", b"1")])  # fmt: skip
    exchange = await drive(middleware(upstream), responses_body(stream=stream))

    exchange.check()
    assert exchange.status == status
    assert exchange.headers["content-type"] == "application/json"
    assert exchange.headers["retry-after"] == "2"
    assert int(exchange.headers["content-length"]) == len(exchange.body)
    error = exchange.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] == message
    assert error["code"] == code
    assert isinstance(error["type"], str)


async def test_a_validation_error_detail_list_becomes_its_json_text() -> None:
    detail = [{"loc": ["body", "model"], "msg": "field required"}]
    upstream = Upstream([Last(orjson.dumps({"detail": detail}))], status=422,
                        content_type=b"application/json")  # fmt: skip
    exchange = await drive(middleware(upstream), responses_body())

    assert exchange.status == 422
    assert "field required" in exchange.json()["error"]["message"]


async def test_an_error_body_with_status_200_is_an_http_error() -> None:
    payload = orjson.dumps({"error": {"message": "quota exhausted", "code": "insufficient_quota"}})
    upstream = Upstream([Last(payload)], content_type=b"application/json")
    for stream in (True, False):
        exchange = await drive(middleware(upstream), responses_body(stream=stream))
        assert exchange.status == 429
        assert "quota exhausted" in exchange.json()["error"]["message"]


async def test_a_non_json_2xx_body_is_a_bad_gateway_error() -> None:
    upstream = Upstream([Last(b"<html>hello</html>")], content_type=b"text/html")
    exchange = await drive(middleware(upstream), responses_body(stream=False))

    assert exchange.status == 502
    assert "neither JSON nor an event stream" in exchange.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_cut_off_json_body_is_a_bad_gateway_error_that_says_it_was_cut_off(
    stream: bool,
) -> None:
    """Issue 10.7: it was reported as "neither JSON nor an event stream"."""
    whole = orjson.dumps({"id": "c", "object": "chat.completion", "choices": []})
    upstream = Upstream([whole[:20], END], content_type=b"application/json")
    exchange = await drive(middleware(upstream), responses_body(stream=stream))

    assert exchange.status == 502
    message = exchange.json()["error"]["message"]
    assert "JSON body that ended before it was complete (after 20 bytes)" in message


async def test_a_json_body_over_the_limit_is_a_bad_gateway_error() -> None:
    upstream = Upstream([COMPLETION, Last(COMPLETION)], content_type=b"application/json")
    exchange = await drive(
        middleware(upstream, max_event_bytes=len(COMPLETION) + 10), responses_body(stream=False)
    )

    assert exchange.status == 502
    assert "max_event_bytes" in exchange.json()["error"]["message"]


async def test_a_huge_error_body_is_not_kept_whole() -> None:
    upstream = Upstream([b"x" * 50_000] * 10 + [END], status=500, content_type=b"text/plain")
    exchange = await drive(middleware(upstream), responses_body())

    assert exchange.status == 500
    assert len(exchange.body) < 10_000
