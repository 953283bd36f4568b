"""pydantic-ai's ``OpenAIResponsesModel`` against the middleware.

An ``Agent`` over ``OpenAIResponsesModel`` on uvicorn, one server with default settings for the
module; what it received passes the checker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip(
    "pydantic_ai", reason="needs pydantic-ai (pip install 'pydantic-ai-slim[openai]')"
)

from pydantic import BaseModel
from pydantic_ai import Agent, NativeOutput
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import PartDeltaEvent, PartStartEvent, ThinkingPart, ThinkingPartDelta
from pydantic_ai.models.openai import OpenAIResponsesModel, OpenAIResponsesModelSettings
from pydantic_ai.profiles.openai import OpenAIModelProfile
from pydantic_ai.providers.openai import OpenAIProvider

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

pytestmark = pytest.mark.anyio


class City(BaseModel):
    city: str
    temperature: int


@pytest.fixture(scope="module")
def server() -> Iterator[ClientServer]:
    with client_server() as running:
        yield running


@pytest.fixture
def agent(server: ClientServer) -> Iterator[Any]:
    server.reset()

    def make(model: str, *, encrypted: bool = False, **options: Any) -> Agent[None, Any]:
        provider = OpenAIProvider(base_url=server.base_url, api_key="sk-test")
        provider.client.max_retries = 0
        profile = OpenAIModelProfile(openai_supports_encrypted_reasoning_content=encrypted)
        responses = OpenAIResponsesModel(model, provider=provider, profile=profile)
        built: Agent[None, Any] = Agent(responses, **options)
        return built

    yield make
    # Every stream the client received in the test passes the checker.
    server.streams()


def add_weather_tool(agent: Agent[None, Any], ran: list[str]) -> None:
    @agent.tool_plain
    def get_weather(city: str) -> str:
        """Weather for a city."""
        ran.append(city)
        return weather(city)


async def test_a_text_answer_arrives_run_and_streamed(agent: Any, server: ClientServer) -> None:
    assert (await agent("text").run("Hi")).output == ANSWER
    async with agent("text").run_stream("Hi") as stream:
        assert await stream.get_output() == ANSWER
    [checked] = server.streams()
    assert checked.status == "completed"


@pytest.mark.parametrize(
    ("scenario", "cities"), [("tool-loop", ["Paris"]), ("parallel", ["Paris", "Tokyo"])]
)
async def test_a_tool_loop_answers_from_the_outputs_of_every_call(
    agent: Any, scenario: str, cities: list[str]
) -> None:
    ran: list[str] = []
    weather_agent = agent(scenario)
    add_weather_tool(weather_agent, ran)
    result = await weather_agent.run("Weather?")
    assert sorted(ran) == cities  # it runs the calls concurrently
    outputs = [weather(city) for city in cities]
    expected = f"The weather tool says: {outputs[0]}" if len(cities) == 1 else " / ".join(outputs)
    assert result.output == expected


async def test_streamed_reasoning_is_shown_with_the_default_settings(agent: Any) -> None:
    thinking = ""
    async with agent("reasoning").run_stream_events("Hi") as events:
        async for event in events:
            if isinstance(event, PartStartEvent) and isinstance(event.part, ThinkingPart):
                thinking += event.part.content
            elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, ThinkingPartDelta):
                thinking += event.delta.content_delta or ""
    assert thinking == REASONING


async def test_structured_output_is_parsed_into_the_callers_model(
    agent: Any, server: ClientServer
) -> None:
    result = await agent("structured", output_type=NativeOutput(City)).run("City?")
    assert result.output == City(**STRUCTURED)
    assert server.chat_requests()[0]["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize(
    "settings",
    [
        OpenAIResponsesModelSettings(),
        OpenAIResponsesModelSettings(openai_previous_response_id="auto"),
        OpenAIResponsesModelSettings(openai_store=False),
    ],
    ids=["history", "previous-response-id", "store-false"],
)
async def test_the_message_history_keeps_the_earlier_answer(
    agent: Any, server: ClientServer, settings: OpenAIResponsesModelSettings
) -> None:
    stateless = settings.get("openai_store") is False
    memory = agent("memory", encrypted=stateless)
    first = await memory.run("Pick a number.", model_settings=settings)
    if stateless:
        # The encrypted reasoning is what it replays (as the part's signature).
        [thought] = [
            p for m in first.all_messages() for p in m.parts if isinstance(p, ThinkingPart)
        ]
        assert isinstance(thought.signature, str)
    second = await memory.run(
        "What did you say?", message_history=first.all_messages(), model_settings=settings
    )
    assert second.output.startswith(f"Earlier I said: {FIRST_ANSWER}")
    # Without encrypted reasoning it replays its thinking as a separate assistant message in
    # <think> tags (its choice for models it does not know), so only the answer is checked.
    messages = server.chat_requests()[1]["messages"]
    said = [m["content"] for m in messages if m["role"] == "assistant"]
    assert FIRST_ANSWER in said
    assert [m["role"] for m in messages][-1] == "user"


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_429_is_a_model_http_error(agent: Any, stream: bool) -> None:
    limited = agent("rate-limited")

    async def ask() -> None:
        if stream:
            async with limited.run_stream("Hi") as run:
                await run.get_output()
        else:
            await limited.run("Hi")

    with pytest.raises(ModelHTTPError, match="Rate limit reached") as raised:
        await ask()
    assert raised.value.status_code == 429


async def test_an_error_mid_stream_raises_with_the_upstreams_message(
    agent: Any, server: ClientServer
) -> None:
    with pytest.raises(Exception, match="crashed mid-generation"):
        async with agent("in-band-error").run_stream("Hi") as run:
            await run.get_output()
    [checked] = server.streams()
    assert checked.status == "failed"


async def test_a_call_cut_mid_arguments_is_never_run(agent: Any, server: ClientServer) -> None:
    ran: list[str] = []
    cut = agent("cut-call")
    add_weather_tool(cut, ran)
    with pytest.raises(Exception, match="finish_reason"):
        async with cut.run_stream("Weather?") as run:
            await run.get_output()
    assert ran == []
    [checked] = server.streams()
    assert "response.function_call_arguments.done" not in checked.types


async def test_max_tokens_ends_the_answer_with_finish_reason_length(
    agent: Any, server: ClientServer
) -> None:
    result = await agent("max-tokens").run("Hi", model_settings={"max_tokens": 16})
    assert result.output == CUT_ANSWER
    assert result.response.finish_reason == "length"
    assert server.chat_requests()[0]["max_tokens"] == 16
