"""The Vercel AI SDK 7 with @ai-sdk/openai 4 (``openai.responses(model)``) against the middleware.

Each scenario is ``tests/e2e/js/ai_sdk.mjs`` run with the pinned Node 22 against one uvicorn
server with default settings; it prints what the SDK gave its caller, and the server's
recording of what it sent passes the checker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.clients import (
    ANSWER,
    CUT_ANSWER,
    FIRST_ANSWER,
    REASONING,
    STRUCTURED,
    ClientServer,
    JsClients,
    client_server,
    weather,
)

pytestmark = pytest.mark.npm


@pytest.fixture(scope="module")
def server() -> Iterator[ClientServer]:
    with client_server() as running:
        yield running


@pytest.fixture
def ai_sdk(js_clients: JsClients, server: ClientServer) -> Iterator[Any]:
    server.reset()

    def run(scenario: str, **options: Any) -> dict[str, Any]:
        return js_clients.run("ai_sdk.mjs", server.base_url, scenario, **options)

    yield run
    # Every stream the client received in the test passes the checker.
    server.streams()


def test_generate_and_stream_text_both_return_the_answer(ai_sdk: Any, server: ClientServer) -> None:
    assert ai_sdk("text") == {"text": ANSWER, "streamedText": ANSWER, "stderr": ""}
    [checked] = server.streams()
    assert checked.status == "completed"


@pytest.mark.parametrize(
    ("scenario", "cities"), [("tool-loop", ["Paris"]), ("parallel", ["Paris", "Tokyo"])]
)
def test_a_tool_loop_inside_one_generate_text_call_answers_from_the_tool_outputs(
    ai_sdk: Any, server: ClientServer, scenario: str, cities: list[str]
) -> None:
    result = ai_sdk(scenario)
    assert result["executed"] == cities
    outputs = [weather(city) for city in cities]
    expected = (
        f"The weather tool says: {outputs[0]}" if scenario == "tool-loop" else " / ".join(outputs)
    )
    assert result["text"] == expected
    # The replayed calls kept their assistant turn, whatever form the SDK sent them in.
    second = server.chat_requests()[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", *["tool"] * len(cities)]
    assert [c["id"] for c in second[1]["tool_calls"]] == [f"call_{c.lower()}" for c in cities]


def test_streamed_reasoning_is_shown_with_the_default_settings(ai_sdk: Any) -> None:
    result = ai_sdk("reasoning")
    assert result["reasoning"] == REASONING
    assert result["text"] == ANSWER


def test_structured_output_is_parsed_into_the_callers_schema(
    ai_sdk: Any, server: ClientServer
) -> None:
    assert ai_sdk("structured")["output"] == STRUCTURED
    [request] = server.chat_requests()
    assert request["response_format"]["type"] == "json_schema"


def test_the_default_replay_by_item_reference_keeps_the_assistants_turn(
    ai_sdk: Any, server: ClientServer
) -> None:
    result = ai_sdk("memory")
    assert result["text"].startswith(f"Earlier I said: {FIRST_ANSWER}")
    roles = [m["role"] for m in server.chat_requests()[1]["messages"]]
    assert roles == ["user", "assistant", "user"]


def test_a_store_false_replay_keeps_the_reasoning_without_a_warning(
    ai_sdk: Any, server: ClientServer
) -> None:
    result = ai_sdk("memory", openai={"store": False})
    assert result["warnings"] == []
    assert "Reasoning parts without encrypted content" not in result["stderr"]
    assert result["text"].startswith(f"Earlier I said: {FIRST_ANSWER}")
    first = server.chat_requests()[0]
    assert first["messages"] == [{"role": "user", "content": "Pick a number."}]
    reasoning, _ = server.responses()[0]["output"]
    assert reasoning["type"] == "reasoning"
    assert isinstance(reasoning["encrypted_content"], str)


def test_previous_response_id_brings_back_the_earlier_answer(
    ai_sdk: Any, server: ClientServer
) -> None:
    result = ai_sdk("memory", previousResponseId=True)
    assert result["text"].startswith(f"Earlier I said: {FIRST_ANSWER}")


def test_an_upstream_429_is_an_api_call_error_with_its_status(ai_sdk: Any) -> None:
    result = ai_sdk("rate-limited")
    assert result["error"] == "APICallError"
    assert result["status"] == 429
    assert "Rate limit reached" in result["message"]


def test_an_error_mid_stream_is_an_error_part_after_the_partial_text(
    ai_sdk: Any, server: ClientServer
) -> None:
    result = ai_sdk("in-band-error")
    assert result["text"] == "Partial answer"
    [error] = result["errors"]
    assert "crashed mid-generation" in error
    assert result["finishReason"] == "error"
    [checked] = server.streams()
    assert checked.status == "failed"


def test_a_call_cut_mid_arguments_is_never_executed(ai_sdk: Any, server: ClientServer) -> None:
    result = ai_sdk("cut-call")
    assert result["executed"] == []
    assert result["toolInputs"] == []
    assert result["finishReason"] == "error"
    [checked] = server.streams()
    assert "response.function_call_arguments.done" not in checked.types
    [call] = checked.response["output"]
    assert call["status"] == "incomplete"


def test_max_tokens_finishes_with_reason_length(ai_sdk: Any, server: ClientServer) -> None:
    assert ai_sdk("max-tokens") == {"text": CUT_ANSWER, "finishReason": "length", "stderr": ""}
    assert server.chat_requests()[0]["max_tokens"] == 16
