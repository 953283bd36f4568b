"""The converter's output judged by the openai SDK itself (openai 3.x, today's releases).

Two judges, both the SDK's own code:

- every event of every fixture validates through ``openai._models.validate_type`` (the path
  ``_strict_response_validation=True`` uses) as the union member its ``type`` names;
- the SDK client, in strict mode, reads each converted stream over an in-process HTTP
  transport with ``client.responses.stream(...)``: its accumulator (``ResponseStreamState``)
  must accept every event, and for a completed stream ``get_final_response()`` must rebuild
  the terminal response item by item, with text and arguments accumulated from the deltas.

The one tolerated gap: ``context_length_exceeded`` is not in the SDK's ``ResponseError.code``
enum, but Codex needs exactly that code to stop retrying (responses-protocol.md §6.2, §9.2).
"""

from __future__ import annotations

import copy
import re
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pydantic
import pytest
from openai import APIError, OpenAI
from openai._models import validate_type
from openai.types.responses import (
    ResponseCustomToolCall,
    ResponseFailedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseReasoningItem,
    ResponseStreamEvent,
)

from tests.checker import CheckedStream, Fixture, load_fixtures
from tests.converter.test_fixtures import check_fixture_output, convert

FIXTURES = load_fixtures()
CONTEXT_LENGTH = "context_length_exceeded"

#: Each event ``type`` literal → the SDK model that must parse it.
EVENT_MODELS: dict[str, type[pydantic.BaseModel]] = {
    literal: member
    for member in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
    for literal in typing.get_args(member.model_fields["type"].annotation)
}
ITEM_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "message": ResponseOutputMessage,
    "reasoning": ResponseReasoningItem,
    "function_call": ResponseFunctionToolCall,
    "custom_tool_call": ResponseCustomToolCall,
}

parametrize_fixtures = pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.name)


def converted(fixture: Fixture) -> tuple[bytes, CheckedStream]:
    body = convert(fixture, [fixture.body])
    return body, check_fixture_output(fixture, body)


def needs_context_length_exception(event: dict[str, Any]) -> bool:
    error = (event.get("response") or {}).get("error") or {}
    return event["type"] == "response.failed" and error.get("code") == CONTEXT_LENGTH


def validate_event(event: dict[str, Any]) -> pydantic.BaseModel:
    """Strictly validate one event and check the SDK chose the right union member."""
    value = event
    if needs_context_length_exception(event):
        # The code is the only field allowed to fall outside the SDK's models.
        with pytest.raises(pydantic.ValidationError) as info:
            validate_type(type_=ResponseFailedEvent, value=event)
        assert {e["loc"] for e in info.value.errors()} == {("response", "error", "code")}
        value = copy.deepcopy(event)
        value["response"]["error"]["code"] = "server_error"
    parsed: pydantic.BaseModel = validate_type(
        type_=ResponseStreamEvent,  # type: ignore[arg-type]
        value=value,
    )
    assert type(parsed) is EVENT_MODELS[event["type"]], (event["type"], type(parsed))
    return parsed


@parametrize_fixtures
def test_every_event_validates_strictly_as_the_sdk_model_its_type_names(fixture: Fixture) -> None:
    _, checked = converted(fixture)
    for event in checked.events:
        parsed = validate_event(event)
        item = getattr(parsed, "item", None)
        if item is not None:
            assert type(item) is ITEM_MODELS[event["item"]["type"]], event
        response = getattr(parsed, "response", None)
        if response is not None:
            for listed, raw in zip(response.output, event["response"]["output"], strict=True):
                assert type(listed) is ITEM_MODELS[raw["type"]], raw


@contextmanager
def sdk_client(body: bytes, *, strict: bool) -> Iterator[OpenAI]:
    """A real openai client whose HTTP transport answers every request with ``body``."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    with httpx.Client(transport=httpx.MockTransport(answer)) as http_client:
        client = OpenAI(
            api_key="sk-test",
            base_url="http://upstream.invalid/v1",
            http_client=http_client,
            max_retries=0,
            _strict_response_validation=strict,
        )
        with client:
            yield client


def strict_tools(request: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The request's tools, function tools made strict so the SDK JSON-parses arguments."""
    tools = copy.deepcopy((request or {}).get("tools") or [])
    for tool in tools:
        if tool.get("type") == "function":
            tool["strict"] = True
    return tools


def assert_subset(ours: Any, theirs: Any, path: str) -> None:
    """Every field we sent is present, equal, in what the SDK rebuilt (it may add fields)."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict), f"{path}: {theirs!r} is not an object"
        for key, value in ours.items():
            assert key in theirs, f"{path}.{key} missing from the SDK's response"
            assert_subset(value, theirs[key], f"{path}.{key}")
    elif isinstance(ours, list):
        assert isinstance(theirs, list), f"{path}: {theirs!r} is not a list"
        assert len(theirs) == len(ours), f"{path}: {theirs!r}"
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_subset(a, b, f"{path}[{index}]")
    else:
        assert ours == theirs, f"{path}: ours {ours!r}, SDK {theirs!r}"


@parametrize_fixtures
def test_sdk_stream_helper_accepts_the_stream_and_rebuilds_the_terminal_response(
    fixture: Fixture,
) -> None:
    body, checked = converted(fixture)
    strict = not any(needs_context_length_exception(e) for e in checked.events)
    with (
        sdk_client(body, strict=strict) as client,
        client.responses.stream(
            model="m",
            input="hi",
            tools=strict_tools(fixture.request),  # type: ignore[arg-type]
        ) as stream,
    ):
        if "error" in checked.types:
            # The SDK raises on the error event (its nested ``error`` object), with its message.
            seen: list[str] = []
            with pytest.raises(APIError) as info:
                seen.extend(event.type for event in stream)
            assert seen == checked.types[: checked.types.index("error")]
            assert info.value.message == checked.response["error"]["message"]
            return
        events = list(stream)
        assert [e.type for e in events] == checked.types
        if checked.status != "completed":
            with pytest.raises(RuntimeError, match=re.escape("response.completed")):
                stream.get_final_response()
            return
        final = stream.get_final_response()

    assert final.id == checked.response["id"]
    assert final.status == "completed"
    rebuilt = final.to_dict()
    assert_subset(checked.response["output"], rebuilt["output"], "output")
    assert rebuilt.get("usage") == checked.response["usage"]
    # The helper's own accumulation from the deltas (the ``snapshot`` it attaches to each
    # delta event) ends equal to the final text and arguments.
    snapshots: dict[tuple[int, int], str] = {}
    for event in events:
        if event.type == "response.output_text.delta":
            snapshots[(event.output_index, event.content_index)] = event.snapshot
        elif event.type == "response.function_call_arguments.delta":
            snapshots[(event.output_index, -1)] = event.snapshot
    for (output_index, content_index), snapshot in snapshots.items():
        item = checked.response["output"][output_index]
        final_text = (
            item["arguments"] if content_index < 0 else item["content"][content_index]["text"]
        )
        assert snapshot == final_text, (output_index, content_index)
