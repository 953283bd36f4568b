"""The Open Responses compliance runner's default cases, as plain HTTP over uvicorn.

The runner (openresponses/openresponses, a bun script) posts a handful of requests (a basic
reply, a stream, a system prompt, tool calling with and without streaming, an image, a
multi-turn history, a function-call round trip) and validates each answer against the spec's
schema. These tests send requests of the same shapes, as a plain HTTP client like the runner
does, and hold every answer to ``tests/checker.py``, whose rules are that schema's required
keys and nullability. Before issue 10's fixes, every case with tools failed (``tools.0``: no
``strict``) and so did a stream with reasoning (``encrypted_content: null``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stream_mw import ResponsesMiddleware
from tests.checker import check_response, check_stream
from tests.e2e.apps import ScriptedChat
from tests.e2e.conftest import RunningServer, serve

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


#: (case, model of the scripted upstream, streamed, request body)
CASES: list[tuple[str, str, bool, dict[str, Any]]] = [
    ("basic-response", "text", False, {"input": [user("Say hello in exactly 3 words.")]}),
    ("streaming-response", "text", True, {"input": [user("Count from 1 to 5.")]}),
    (
        "streaming-reasoning",
        "reasoning",
        True,
        {"input": [user("Think first.")], "include": ["reasoning.encrypted_content"]},
    ),
    (
        "system-prompt",
        "text",
        False,
        {"input": [{"type": "message", "role": "system", "content": "Be a pirate."}, user("Hi.")]},
    ),
    ("tool-calling", "parallel-tools", False, {"input": [user("Weather?")], "tools": [WEATHER]}),
    (
        "tool-calling-streaming",
        "parallel-tools",
        True,
        {"input": [user("Weather?")], "tools": [WEATHER]},
    ),
    (
        "image-input",
        "text",
        False,
        {
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
                    ],
                }
            ]
        },
    ),
    (
        "multi-turn",
        "text",
        False,
        {
            "input": [
                user("My name is Alice."),
                {"type": "message", "role": "assistant", "content": "Hello Alice!"},
                user("What is my name?"),
            ]
        },
    ),
    (
        "function-call-round-trip",
        "text",
        True,
        {
            "input": [
                user("Weather?"),
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"location": "Paris"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "18 C"},
            ],
            "tools": [WEATHER],
        },
    ),
]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve(ResponsesMiddleware(ScriptedChat(), keepalive_interval=0)) as running:
        yield running


@pytest.mark.parametrize(("case", "model", "stream", "body"), CASES, ids=[c[0] for c in CASES])
def test_each_compliance_case_answers_within_the_open_responses_schema(
    server: RunningServer, case: str, model: str, stream: bool, body: dict[str, Any]
) -> None:
    reply = httpx.post(
        f"{server.url}/v1/responses",
        json={"model": model, **body, "stream": stream},
        headers={"authorization": "Bearer sk-compliance"},
        timeout=30,
    )

    assert reply.status_code == 200, reply.text
    if stream:
        checked = check_stream(reply.content, done_marker=True)
        response = checked.response
        if "tools" in body and model == "parallel-tools":
            types = checked.types
            assert "response.function_call_arguments.delta" in types
            assert "response.function_call_arguments.done" in types
    else:
        response = check_response(reply.json())
    assert response["status"] == "completed"
    assert response["output"], "the runner requires output items"
    if model == "parallel-tools":
        assert {item["type"] for item in response["output"]} == {"function_call"}
