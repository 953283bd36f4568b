"""langchain-openai's ``ChatOpenAI`` on the Responses API against the middleware.

``ChatOpenAI(use_responses_api=True, output_version="responses/v1")`` over uvicorn, one server
with default settings for the module; what it received passes the checker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

pytest.importorskip(
    "langchain_openai", reason="needs langchain-openai (pip install langchain-openai)"
)

from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.e2e.clients import (
    ANSWER,
    CUT_ANSWER,
    FIRST_ANSWER,
    REASONING,
    STRUCTURED,
    ClientServer,
    client_server,
    weather,
)


class City(BaseModel):
    city: str
    temperature: int


@tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    return weather(city)


@pytest.fixture(scope="module")
def server() -> Iterator[ClientServer]:
    with client_server() as running:
        yield running


@pytest.fixture
def chat(server: ClientServer) -> Iterator[Any]:
    server.reset()

    def make(model: str, **options: Any) -> ChatOpenAI:
        return ChatOpenAI(
            model=model,
            base_url=server.base_url,
            api_key="sk-test",  # type: ignore[arg-type]
            max_retries=0,
            use_responses_api=True,
            output_version="responses/v1",
            **options,
        )

    yield make
    # Every stream the client received in the test passes the checker.
    server.streams()


def blocks(message: AIMessage, kind: str) -> str:
    """The text of a message's content blocks of one type (``text``, ``reasoning``)."""
    out = []
    for block in message.content:
        if isinstance(block, dict) and block.get("type") == kind:
            if kind == "reasoning":
                out += [part.get("text", "") for part in block.get("summary", [])]
            else:
                out.append(block.get("text", ""))
    return "".join(out)


def streamed(model: ChatOpenAI, prompt: Any) -> AIMessageChunk:
    total: AIMessageChunk | None = None
    for piece in model.stream(prompt):
        total = piece if total is None else total + piece
    assert total is not None
    return total


def test_a_text_answer_arrives_invoked_and_streamed(chat: Any, server: ClientServer) -> None:
    assert chat("text").invoke("Hi").text == ANSWER
    assert streamed(chat("text"), "Hi").text == ANSWER
    [checked] = server.streams()
    assert checked.status == "completed"


@pytest.mark.parametrize(
    ("scenario", "cities"), [("tool-loop", ["Paris"]), ("parallel", ["Paris", "Tokyo"])]
)
def test_a_tool_loop_answers_from_the_outputs_of_every_call(
    chat: Any, server: ClientServer, scenario: str, cities: list[str]
) -> None:
    model = chat(scenario).bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("Weather?")]
    first = model.invoke(messages)
    assert [call["args"] for call in first.tool_calls] == [{"city": c} for c in cities]
    messages.append(first)
    messages += [ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
                 for call in first.tool_calls]  # fmt: skip
    final = model.invoke(messages)
    outputs = [weather(city) for city in cities]
    expected = f"The weather tool says: {outputs[0]}" if len(cities) == 1 else " / ".join(outputs)
    assert final.text == expected


def test_streamed_reasoning_is_shown_with_the_default_settings(chat: Any) -> None:
    message = streamed(chat("reasoning"), "Hi")
    assert blocks(message, "reasoning") == REASONING
    assert message.text == ANSWER


def test_structured_output_is_parsed_into_the_callers_model(chat: Any) -> None:
    parsed = chat("structured").with_structured_output(City, method="json_schema").invoke("City?")
    assert parsed == City(**STRUCTURED)


def test_previous_response_id_brings_back_the_earlier_answer(
    chat: Any, server: ClientServer
) -> None:
    model = chat("memory", use_previous_response_id=True)
    first = model.invoke("Pick a number.")
    second = model.invoke(
        [HumanMessage("Pick a number."), first, HumanMessage("What did you say?")]
    )
    assert second.text.startswith(f"Earlier I said: {FIRST_ANSWER}")
    roles = [m["role"] for m in server.chat_requests()[1]["messages"]]
    assert roles == ["user", "assistant", "user"]


def test_a_store_false_replay_keeps_the_encrypted_reasoning(
    chat: Any, server: ClientServer
) -> None:
    model = chat("memory", store=False, include=["reasoning.encrypted_content"])
    first = model.invoke("Pick a number.")
    [reasoning] = [b for b in first.content if isinstance(b, dict) and b.get("type") == "reasoning"]
    assert isinstance(reasoning.get("encrypted_content"), str)
    second = model.invoke(
        [HumanMessage("Pick a number."), first, HumanMessage("What did you say?")]
    )
    assert second.text.startswith(f"Earlier I said: {FIRST_ANSWER}")


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_429_raises_the_sdks_rate_limit_error(chat: Any, stream: bool) -> None:
    model = chat("rate-limited")
    with pytest.raises(openai.RateLimitError, match="Rate limit reached"):
        streamed(model, "Hi") if stream else model.invoke("Hi")


def test_an_error_mid_stream_raises_with_the_upstreams_message(
    chat: Any, server: ClientServer
) -> None:
    with pytest.raises(Exception, match="crashed mid-generation"):
        streamed(chat("in-band-error"), "Hi")
    [checked] = server.streams()
    assert checked.status == "failed"


def test_a_call_cut_mid_arguments_never_becomes_a_tool_call(
    chat: Any, server: ClientServer
) -> None:
    model = chat("cut-call").bind_tools([get_weather])
    # It raises on the failed response, so no finished message (and no tool call) exists.
    with pytest.raises(ValueError, match="before finish_reason"):
        streamed(model, "Weather?")
    [checked] = server.streams()
    assert "response.function_call_arguments.done" not in checked.types


def test_max_tokens_ends_the_answer_as_incomplete(chat: Any, server: ClientServer) -> None:
    message = chat("max-tokens", max_tokens=16).invoke("Hi")
    assert message.text == CUT_ANSWER
    assert message.response_metadata["status"] == "incomplete"
    assert message.response_metadata["incomplete_details"] == {"reason": "max_output_tokens"}
    assert server.chat_requests()[0]["max_tokens"] == 16
