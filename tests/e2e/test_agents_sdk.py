"""The OpenAI Agents SDK (openai-agents) through the middleware: a tool loop, then every scenario."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Not in the lowest-versions run: the Agents SDK needs a newer Starlette than stream_mw does.
pytest.importorskip("agents", reason="needs openai-agents (the test extra)")
from agents import Agent, ModelSettings, OpenAIResponsesModel, RunConfig, Runner, function_tool
from agents.exceptions import ModelBehaviorError

from stream_mw import ResponsesMiddleware
from tests.checker import check_stream
from tests.e2e.apps import ScriptedChat
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
from tests.e2e.conftest import RunningServer, serve

pytestmark = pytest.mark.anyio


class Tap:
    """Keeps every body the app sends: the bytes the agent's client read off the wire."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts: list[bytes] = []

        async def tapped(message: Message) -> None:
            if message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, tapped)
        finally:
            if scope["type"] == "http":
                self.bodies.append(b"".join(parts))


@pytest.fixture(scope="module")
def upstream() -> ScriptedChat:
    return ScriptedChat()


@pytest.fixture(scope="module")
def tap(upstream: ScriptedChat) -> Tap:
    return Tap(ResponsesMiddleware(upstream, keepalive_interval=0))


@pytest.fixture(scope="module")
def server(tap: Tap) -> Iterator[RunningServer]:
    with serve(tap) as running:
        yield running


@pytest.mark.parametrize("transport", ["asgi", "uvicorn"])
async def test_a_streamed_agent_run_calls_the_tool_once_and_gets_the_final_answer(
    transport: str, server: RunningServer, upstream: ScriptedChat, tap: Tap
) -> None:
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        calls.append(city)
        return f"sunny and 21 degrees in {city}"

    if transport == "asgi":
        upstream = ScriptedChat()
        tap = Tap(ResponsesMiddleware(upstream, keepalive_interval=0))
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=tap))
        base_url = "http://testserver/v1"
    else:
        upstream.requests.clear()
        tap.bodies.clear()
        http = httpx.AsyncClient(verify=False)
        base_url = server.url + "/v1"
    client = AsyncOpenAI(
        base_url=base_url,
        api_key="sk-test",
        http_client=http,
        max_retries=0,
        _strict_response_validation=True,
    )
    agent = Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="agent", openai_client=client),
    )
    async with http, client:
        result = Runner.run_streamed(
            agent, "What's the weather in Paris?", run_config=RunConfig(tracing_disabled=True)
        )
        events: list[Any] = [event async for event in result.stream_events()]

    assert calls == ["Paris"]
    assert result.final_output == "The weather tool says: sunny and 21 degrees in Paris"
    raw_types = [e.data.type for e in events if e.type == "raw_response_event"]
    assert [check_stream(body).status for body in tap.bodies] == ["completed", "completed"]
    assert raw_types.count("response.completed") == 2
    assert "response.function_call_arguments.delta" in raw_types
    tool_outputs = [e for e in events if getattr(e, "name", None) == "tool_output"]
    assert len(tool_outputs) == 1
    # The second turn replayed the call and its output as Chat messages.
    first, second = upstream.requests
    assert first["tools"][0]["function"]["name"] == "get_weather"
    replay = second["messages"][-2:]
    assert replay[0]["role"] == "assistant"
    assert replay[0]["tool_calls"][0]["id"] == "call_weather_1"
    assert replay[1] == {
        "role": "tool",
        "tool_call_id": "call_weather_1",
        "content": "sunny and 21 degrees in Paris",
    }


# --- Every scenario of the client table, over uvicorn, with default settings -------------------


class City(BaseModel):
    city: str
    temperature: int


@pytest.fixture(scope="module")
def scenarios() -> Iterator[ClientServer]:
    with client_server() as running:
        yield running


@pytest.fixture
async def make_agent(scenarios: ClientServer) -> AsyncIterator[Any]:
    scenarios.reset()
    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        ran.append(city)
        return weather(city)

    async with httpx.AsyncClient(verify=False) as http:
        client = AsyncOpenAI(
            base_url=scenarios.base_url,
            api_key="sk-test",
            http_client=http,
            max_retries=0,
            _strict_response_validation=True,
        )

        def make(model: str, **options: Any) -> Agent[Any]:
            built: Agent[Any] = Agent(
                name="scenario",
                tools=[get_weather],
                model=OpenAIResponsesModel(model=model, openai_client=client),
                **options,
            )
            return built

        make.ran = ran  # type: ignore[attr-defined]
        yield make
        # Every stream the client received in the test passes the checker.
        scenarios.streams()


RUN = RunConfig(tracing_disabled=True)


async def test_a_text_answer_arrives_run_and_streamed(make_agent: Any) -> None:
    assert (await Runner.run(make_agent("text"), "Hi", run_config=RUN)).final_output == ANSWER
    streamed = Runner.run_streamed(make_agent("text"), "Hi", run_config=RUN)
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == ANSWER


async def test_parallel_calls_both_run_before_the_answer(make_agent: Any) -> None:
    result = await Runner.run(make_agent("parallel"), "Weather?", run_config=RUN)
    assert sorted(make_agent.ran) == ["Paris", "Tokyo"]
    assert result.final_output == f"{weather('Paris')} / {weather('Tokyo')}"


async def test_streamed_reasoning_is_shown_with_the_default_settings(make_agent: Any) -> None:
    streamed = Runner.run_streamed(make_agent("reasoning"), "Hi", run_config=RUN)
    # As the SDK's reasoning example renders it: the summary deltas of the raw stream.
    shown = "".join(
        [
            event.data.delta
            async for event in streamed.stream_events()
            if event.type == "raw_response_event"
            and event.data.type == "response.reasoning_summary_text.delta"
        ]
    )
    assert shown == REASONING
    assert streamed.final_output == ANSWER


async def test_structured_output_is_parsed_into_the_agents_output_type(
    make_agent: Any, scenarios: ClientServer
) -> None:
    result = await Runner.run(make_agent("structured", output_type=City), "City?", run_config=RUN)
    assert result.final_output == City(**STRUCTURED)
    assert scenarios.chat_requests()[0]["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize("how", ["previous-response-id", "input-list", "store-false"])
async def test_a_second_run_keeps_the_earlier_answer(
    make_agent: Any, scenarios: ClientServer, how: str
) -> None:
    settings = ModelSettings()
    if how == "store-false":
        settings = ModelSettings(store=False, response_include=["reasoning.encrypted_content"])
    agent = make_agent("memory", model_settings=settings)
    first = await Runner.run(agent, "Pick a number.", run_config=RUN)
    if how == "previous-response-id":
        second = await Runner.run(
            agent, "What did you say?", previous_response_id=first.last_response_id,
            run_config=RUN,
        )  # fmt: skip
    else:
        replay = [*first.to_input_list(), {"role": "user", "content": "What did you say?"}]
        second = await Runner.run(agent, replay, run_config=RUN)
    assert second.final_output.startswith(f"Earlier I said: {FIRST_ANSWER}")
    roles = [m["role"] for m in scenarios.chat_requests()[1]["messages"]]
    assert roles == ["user", "assistant", "user"]
    if how == "store-false":
        [reasoning] = [i for i in first.new_items if i.type == "reasoning_item"]
        assert isinstance(reasoning.raw_item.encrypted_content, str)


async def test_an_upstream_429_is_a_rate_limit_error(make_agent: Any) -> None:
    with pytest.raises(openai.RateLimitError, match="Rate limit reached"):
        await Runner.run(make_agent("rate-limited"), "Hi", run_config=RUN)


async def test_an_error_mid_stream_raises_with_the_upstreams_message(
    make_agent: Any, scenarios: ClientServer
) -> None:
    streamed = Runner.run_streamed(make_agent("in-band-error"), "Hi", run_config=RUN)

    async def read() -> None:
        async for _ in streamed.stream_events():
            pass

    # The error event (openai's reader) or response.failed (the SDK's own check), whichever
    # it meets first, stops the run with the upstream's message.
    with pytest.raises((openai.APIError, ModelBehaviorError), match="crashed mid-generation"):
        await read()
    [checked] = scenarios.streams()
    assert checked.status == "failed"


async def test_a_call_cut_mid_arguments_is_never_run(
    make_agent: Any, scenarios: ClientServer
) -> None:
    streamed = Runner.run_streamed(make_agent("cut-call"), "Weather?", run_config=RUN)

    async def read() -> None:
        async for _ in streamed.stream_events():
            pass

    with pytest.raises(Exception, match="finish_reason"):
        await read()
    assert make_agent.ran == []
    [checked] = scenarios.streams()
    assert "response.function_call_arguments.done" not in checked.types


async def test_max_tokens_stops_the_run_naming_the_reason(
    make_agent: Any, scenarios: ClientServer
) -> None:
    agent = make_agent("max-tokens", model_settings=ModelSettings(max_tokens=16))
    with pytest.raises(ModelBehaviorError, match="max_output_tokens"):
        await Runner.run(agent, "Hi", run_config=RUN)
    assert scenarios.chat_requests()[0]["max_tokens"] == 16
    assert CUT_ANSWER in str(scenarios.responses())
