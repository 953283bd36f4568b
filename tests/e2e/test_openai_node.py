"""openai-node 7 (``client.responses.*``) against the middleware.

Each scenario is ``tests/e2e/js/openai_node.mjs`` run with the pinned Node 22 against one
uvicorn server with default settings; the server's recording of what it sent passes the checker.
"""

from __future__ import annotations

import json
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
def openai_node(js_clients: JsClients, server: ClientServer) -> Iterator[Any]:
    server.reset()

    def run(scenario: str) -> dict[str, Any]:
        return js_clients.run("openai_node.mjs", server.base_url, scenario)

    yield run
    # Every stream the client received in the test passes the checker.
    server.streams()


def test_a_text_answer_arrives_streamed_and_not(openai_node: Any) -> None:
    assert openai_node("text") == {"text": ANSWER, "streamedText": ANSWER, "stderr": ""}


@pytest.mark.parametrize(
    ("scenario", "cities"), [("tool-loop", ["Paris"]), ("parallel", ["Paris", "Tokyo"])]
)
def test_a_tool_loop_answers_from_the_outputs_of_every_call(
    openai_node: Any, scenario: str, cities: list[str]
) -> None:
    result = openai_node(scenario)
    expected_calls = [[f"call_{c.lower()}", json.dumps({"city": c})] for c in cities]
    assert result["calls"] == expected_calls
    outputs = [weather(city) for city in cities]
    if scenario == "tool-loop":
        assert result["text"] == f"The weather tool says: {outputs[0]}"
    else:
        assert result["text"] == " / ".join(outputs)


def test_streamed_reasoning_arrives_as_summary_text_with_the_default_settings(
    openai_node: Any,
) -> None:
    result = openai_node("reasoning")
    assert result["summary"] == REASONING
    assert result["text"] == ANSWER


def test_structured_output_is_parsed(openai_node: Any) -> None:
    assert openai_node("structured")["output"] == STRUCTURED


@pytest.mark.parametrize("scenario", ["previous-response-id", "item-reference", "stateless"])
def test_every_way_of_replaying_keeps_the_earlier_answer(
    openai_node: Any, server: ClientServer, scenario: str
) -> None:
    result = openai_node(scenario)
    assert result["text"].startswith(f"Earlier I said: {FIRST_ANSWER}")
    if scenario == "stateless":
        assert result["encrypted"] == "string"
    roles = [m["role"] for m in server.chat_requests()[1]["messages"]]
    assert roles == ["user", "assistant", "user"]


def test_an_upstream_429_is_a_rate_limit_error(openai_node: Any) -> None:
    result = openai_node("rate-limited")
    assert result["error"] == "RateLimitError"
    assert result["status"] == 429
    assert "Rate limit reached" in result["message"]


def test_an_error_mid_stream_ends_in_a_failed_response_after_the_partial_text(
    openai_node: Any, server: ClientServer
) -> None:
    result = openai_node("in-band-error")
    assert result["text"] == "Partial answer"
    assert result["types"][-1] == "response.failed"
    assert "crashed mid-generation" in result["failure"]
    [checked] = server.streams()
    assert checked.status == "failed"


def test_a_call_cut_mid_arguments_never_gets_its_arguments_done(
    openai_node: Any, server: ClientServer
) -> None:
    result = openai_node("cut-call")
    assert result["argumentsDone"] == []
    assert "response.output_item.done" not in result["types"]
    [checked] = server.streams()
    assert checked.status == "failed"


def test_max_tokens_ends_the_answer_as_incomplete(openai_node: Any) -> None:
    result = openai_node("max-tokens")
    assert result == {
        "status": "incomplete",
        "reason": "max_output_tokens",
        "text": CUT_ANSWER,
        "stderr": "",
    }
