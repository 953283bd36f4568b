"""Non-streaming translation: chat.completion → Response, the same shapes as the stream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream_mw import (
    Settings,
    StreamConverter,
    UpstreamProtocolError,
    UpstreamReportedError,
    translate_completion,
)
from stream_mw._items import base_response, map_usage, new_id

RESPONSE_ID = "resp_0123456789abcdef0123456789abcdef"
CREATED = 1_700_000_000
REQUIRED_FIELDS = {
    "id", "object", "created_at", "completed_at", "status", "incomplete_details", "model",
    "previous_response_id", "instructions", "output", "error", "tools", "tool_choice",
    "truncation", "parallel_tool_calls", "text", "top_p", "presence_penalty",
    "frequency_penalty", "top_logprobs", "temperature", "reasoning", "user", "usage",
    "max_output_tokens", "max_tool_calls", "store", "background", "service_tier", "metadata",
    "safety_identifier", "prompt_cache_key",
}  # fmt: skip


def completion(
    message: dict[str, Any],
    finish: str | None = "stop",
    *,
    usage: dict[str, Any] | None = None,
    logprobs: Any = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "upstream-model",
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish, "logprobs": logprobs}
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def translate(
    body: dict[str, Any],
    request: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    return translate_completion(
        body,
        request if request is not None else {"model": "m", "input": "hi"},
        settings,
        response_id=RESPONSE_ID,
        created_at=CREATED,
        clock=lambda: float(CREATED + 1),
    )


def streamed(
    body: dict[str, Any],
    request: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """The same completion as one-delta-per-chunk stream, through StreamConverter."""
    choice = body["choices"][0]
    message = dict(choice["message"])
    chunks: list[dict[str, Any]] = []
    calls = message.pop("tool_calls", None) or []
    message.pop("role", None)
    for key, value in message.items():
        if value is not None:
            chunks.append({"choices": [{"index": 0, "delta": {key: value}}]})
    if choice.get("logprobs") and chunks:
        chunks[0]["choices"][0]["logprobs"] = choice["logprobs"]
    for n, call in enumerate(calls):
        chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": n, **call}]}}]})
    chunks.append(
        {"choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]}
    )
    if "usage" in body:
        chunks.append({"choices": [], "usage": body["usage"]})
    wire = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    converter = StreamConverter(
        request if request is not None else {"model": "m", "input": "hi"},
        settings,
        response_id=RESPONSE_ID,
        created_at=CREATED,
        clock=lambda: float(CREATED + 1),
    )
    converter.feed(wire)
    converter.close()
    return converter.response


CASES: dict[str, tuple[dict[str, Any], dict[str, Any] | None, Settings | None]] = {
    "text": (
        completion(
            {"role": "assistant", "content": "Hello"},
            usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        ),
        None,
        None,
    ),
    "reasoning_then_text": (
        completion({"role": "assistant", "reasoning_content": "think", "content": "42"}),
        None,
        None,
    ),
    "reasoning_summary_mode": (
        completion({"role": "assistant", "reasoning": "think", "content": "42"}),
        None,
        Settings(reasoning_events="summary"),
    ),
    "refusal": (completion({"role": "assistant", "content": None, "refusal": "No."}), None, None),
    "calls": (
        completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                    {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "[]"}},
                ],
            },
            "tool_calls",
        ),
        None,
        None,
    ),
    "text_and_call": (
        completion(
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [{"id": "c1", "function": {"name": "a", "arguments": "{}"}}],
            },
            "tool_calls",
        ),
        None,
        None,
    ),
    "length": (completion({"role": "assistant", "content": "cut"}, "length"), None, None),
    "length_call": (
        completion(
            {"content": None, "tool_calls": [{"id": "c", "function": {"name": "a", "arguments": '{"x'}}]},
            "length",
        ),
        None,
        None,
    ),
    "content_filter": (completion({"content": "bad"}, "content_filter"), None, None),
    "error_finish": (completion({"content": "x"}, "error"), None, None),
    "custom_and_namespace": (
        completion(
            {
                "content": None,
                "tool_calls": [
                    {"id": "c1", "function": {"name": "apply_patch", "arguments": '{"input": "diff"}'}},
                    {"id": "c2", "function": {"name": "fs__read", "arguments": "{}"}},
                ],
            },
            "tool_calls",
        ),
        {
            "model": "m",
            "input": "hi",
            "tools": [
                {"type": "custom", "name": "apply_patch"},
                {"type": "namespace", "name": "fs", "tools": [{"type": "function", "name": "read"}]},
            ],
        },
        None,
    ),
    "think_tags": (
        completion({"content": "<think>plan</think>answer"}),
        None,
        Settings(think_tags=True),
    ),
    "logprobs": (
        completion(
            {"content": "Hi"},
            logprobs={"content": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}]},
        ),
        None,
        None,
    ),
    "magistral_array": (
        completion(
            {
                "content": [
                    {"type": "thinking", "thinking": [{"type": "text", "text": "hm"}]},
                    {"type": "text", "text": "ok"},
                ]
            }
        ),
        None,
        None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_non_stream_response_equals_the_streamed_terminal_response(name: str) -> None:
    body, request, settings = CASES[name]
    assert translate(body, request, settings) == streamed(body, request, settings)


def test_text_reply_becomes_a_completed_message() -> None:
    response = translate(
        completion(
            {"role": "assistant", "content": "Hello"},
            usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        )
    )
    assert set(response) == REQUIRED_FIELDS
    assert response["status"] == "completed"
    assert response["completed_at"] == CREATED + 1
    assert response["output"] == [
        {
            "id": "msg_0123456789abcdef0123456789abcdef_0",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}
            ],
        }
    ]
    assert response["usage"]["total_tokens"] == 4


def test_length_gives_incomplete_with_max_output_tokens() -> None:
    response = translate(completion({"content": "cut"}, "length"))
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    assert response["completed_at"] is None


def test_length_leaves_calls_incomplete() -> None:
    body = completion(
        {"content": None, "tool_calls": [{"id": "c", "function": {"name": "a", "arguments": "{"}}]},
        "length",
    )
    assert translate(body)["output"][0]["status"] == "incomplete"


def test_missing_finish_reason_in_a_whole_body_still_completes() -> None:
    assert translate(completion({"content": "x"}, None))["status"] == "completed"


def test_annotations_are_flattened_onto_the_text_part() -> None:
    annotation = {
        "type": "url_citation",
        "url_citation": {"url": "https://a", "title": "A", "start_index": 0, "end_index": 1},
    }
    response = translate(completion({"content": "A", "annotations": [annotation]}))
    assert response["output"][0]["content"][0]["annotations"] == [
        {"type": "url_citation", "start_index": 0, "end_index": 1, "title": "A", "url": "https://a"}
    ]


def test_call_without_id_gets_a_generated_call_id() -> None:
    body = completion(
        {"tool_calls": [{"function": {"name": "a", "arguments": "{}"}}]}, "tool_calls"
    )
    item = translate(body)["output"][0]
    assert item["call_id"] == "call_0123456789abcdef0123456789abcdef_0"
    assert item["id"] == "fc_0123456789abcdef0123456789abcdef_0"


def test_legacy_function_call_message_becomes_a_function_call() -> None:
    body = completion({"function_call": {"name": "a", "arguments": "{}"}}, "function_call")
    (item,) = translate(body)["output"]
    assert (item["type"], item["name"], item["arguments"]) == ("function_call", "a", "{}")


def test_native_custom_tool_call_keeps_its_raw_input() -> None:
    body = completion(
        {
            "tool_calls": [
                {"id": "c", "type": "custom", "custom": {"name": "apply_patch", "input": "x"}}
            ]
        },
        "tool_calls",
    )
    (item,) = translate(body)["output"]
    assert (item["type"], item["name"], item["input"]) == ("custom_tool_call", "apply_patch", "x")


def test_call_without_a_name_fails_the_response() -> None:
    body = completion({"tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}, "tool_calls")
    response = translate(body)
    assert response["status"] == "failed"
    assert "without a function name" in response["error"]["message"]
    assert response["output"] == []


def test_arguments_over_the_limit_raise_naming_the_setting() -> None:
    body = completion(
        {"tool_calls": [{"id": "c", "function": {"name": "a", "arguments": "x" * 100}}]}
    )
    with pytest.raises(UpstreamProtocolError, match="max_argument_bytes"):
        translate(body, settings=Settings(max_argument_bytes=10))


def test_model_is_the_requests_else_the_upstreams() -> None:
    assert translate(completion({"content": "x"}), {"model": "asked"})["model"] == "asked"
    assert translate(completion({"content": "x"}), {"input": "hi"})["model"] == "upstream-model"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"error": {"message": "maximum context length exceeded", "type": "invalid_request_error"}}, "context_length_exceeded"),
        ({"error": {"message": "Rate limit hit, try again in 3s", "code": "rate_limit_exceeded"}}, "rate_limit_exceeded"),
        ({"error": "boom"}, "server_error"),
        ({"object": "error", "message": "bad request", "type": "BadRequestError", "code": 400}, "invalid_prompt"),
    ],
)  # fmt: skip
def test_error_bodies_raise_upstream_reported_error(body: dict[str, Any], code: str) -> None:
    with pytest.raises(UpstreamReportedError) as caught:
        translate(body)
    assert caught.value.code == code


def test_rate_limit_message_keeps_the_try_again_text() -> None:
    with pytest.raises(UpstreamReportedError, match="try again in 3s"):
        translate({"error": {"message": "Rate limit hit, try again in 3s", "code": 429}})


@pytest.mark.parametrize("body", [{"object": "list", "data": []}, {"choices": "nope"}])
def test_bodies_that_are_not_chat_completions_raise_protocol_errors(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamProtocolError, match=r"not a chat\.completion"):
        translate(body)


def test_base_response_fills_every_required_field_with_defaults() -> None:
    response = base_response(None, "resp_x", 5, None)
    assert set(response) == REQUIRED_FIELDS
    assert response["temperature"] == 1.0
    assert response["top_p"] == 1.0
    assert response["presence_penalty"] == 0.0
    assert response["frequency_penalty"] == 0.0
    assert response["top_logprobs"] == 0
    assert response["truncation"] == "disabled"
    assert response["text"] == {"format": {"type": "text"}}
    assert response["reasoning"] == {"effort": None, "summary": None}
    assert response["tool_choice"] == "auto"
    assert response["parallel_tool_calls"] is True
    assert response["tools"] == []
    assert response["store"] is True
    assert response["background"] is False
    assert response["service_tier"] == "auto"
    assert response["metadata"] == {}
    assert response["model"] == ""


def test_base_response_ignores_nulls_for_non_nullable_numbers() -> None:
    response = base_response({"model": "m", "temperature": None, "top_p": 0.5}, "resp_x", 5, None)
    assert response["temperature"] == 1.0
    assert response["top_p"] == 0.5


def test_map_usage_fills_details_and_keeps_counts_as_reported() -> None:
    assert map_usage(None) is None
    assert map_usage({}) is None
    assert map_usage({"prompt_tokens": 2, "completion_tokens": 3}) == {
        "input_tokens": 2,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 5,
    }
    deepseek = map_usage(
        {
            "prompt_tokens": 9,
            "completion_tokens": 1,
            "total_tokens": 11,
            "prompt_cache_hit_tokens": 4,
        }
    )
    assert deepseek is not None
    assert deepseek["input_tokens_details"]["cached_tokens"] == 4
    assert deepseek["total_tokens"] == 11  # reported, even where it disagrees with the sum
    written = map_usage(
        {
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cache_write_tokens": 7},
        }
    )
    assert written is not None
    assert written["input_tokens_details"]["cache_write_tokens"] == 7


def test_new_id_is_prefixed_random_and_short() -> None:
    first, second = new_id("resp"), new_id("resp")
    assert first != second
    assert first.startswith("resp_")
    assert len(first) <= 64
