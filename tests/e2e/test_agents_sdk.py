"""The OpenAI Agents SDK runs a two-turn tool loop through the middleware."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Not in the lowest-versions run: the Agents SDK needs a newer Starlette than stream_mw does.
pytest.importorskip("agents", reason="needs openai-agents (the test extra)")
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool

from stream_mw import ResponsesMiddleware
from tests.checker import check_stream
from tests.e2e.apps import ScriptedChat
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
