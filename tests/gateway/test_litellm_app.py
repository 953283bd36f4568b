"""LiteLLMApp: litellm.acompletion served as real Chat Completions SSE (offline, mock_response).

Importing litellm takes seconds, so every LiteLLM test of this tier lives in this module.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import openai
import pytest

from stream_mw import ResponsesMiddleware
from tests.e2e.conftest import serve

# LiteLLM's own pydantic models warn about themselves on first use; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Item .* `ReadOnly` qualifier:UserWarning")

# Before LiteLLM is first imported: no attempt to download its cost map.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm")

from stream_mw.upstreams import litellm_app  # noqa: E402  (after the skip)
from stream_mw.upstreams.litellm_app import LiteLLMApp  # noqa: E402

CHAT: dict[str, Any] = {
    "model": "client-model",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "stream_options": {"include_usage": True},
}


async def post(app: Any, body: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://litellm") as client:
        return await client.post("/v1/chat/completions", json=body)


def data_lines(response: httpx.Response) -> list[Any]:
    out: list[Any] = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


@pytest.mark.anyio
async def test_a_streamed_answer_is_real_chat_completion_chunks() -> None:
    app = LiteLLMApp("openai/mock-model", api_key="x", mock_response="Hello from LiteLLM")
    response = await post(app, CHAT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = data_lines(response)
    assert chunks[-1] == "[DONE]"
    body = [c for c in chunks if isinstance(c, dict)]
    assert {c["object"] for c in body} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in body if c.get("choices"))
    assert text == "Hello from LiteLLM"
    finishes = [c["choices"][0].get("finish_reason") for c in body if c.get("choices")]
    assert "stop" in finishes
    assert any(c.get("usage", {}).get("total_tokens") for c in body)
    # The configured model replaces the client's.
    assert {c["model"] for c in body} == {"mock-model"}


@pytest.mark.anyio
async def test_a_non_streamed_answer_is_a_chat_completion() -> None:
    app = LiteLLMApp(api_key="x", mock_response="Plain answer")
    response = await post(app, {**CHAT, "model": "openai/m", "stream": False})
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Plain answer"


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (
            lambda: litellm.RateLimitError("slow down", llm_provider="openai", model="m"),
            429,
            "rate_limit_exceeded",
        ),
        (
            lambda: litellm.ContextWindowExceededError(
                "prompt too long", model="m", llm_provider="openai"
            ),
            400,
            "context_length_exceeded",
        ),
        (
            lambda: litellm.AuthenticationError("bad key", llm_provider="openai", model="m"),
            401,
            "invalid_api_key",
        ),
    ],
)
@pytest.mark.anyio
async def test_litellm_errors_before_the_stream_keep_their_status(
    error: Any, status: int, code: str
) -> None:
    app = LiteLLMApp("openai/m", api_key="x", mock_response=error())
    response = await post(app, CHAT)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_connection_failures_and_timeouts_map_to_gateway_statuses() -> None:
    connection = litellm.APIConnectionError("refused", llm_provider="openai", model="m")
    timeout = litellm.Timeout("too slow", model="m", llm_provider="openai")
    assert litellm_app.error_from_exception(connection)[0] == 502
    assert litellm_app.error_from_exception(timeout)[0] == 504
    assert litellm_app.error_from_exception(ValueError("x")) == (
        500,
        {"error": {"message": "x", "type": "server_error", "param": None, "code": None}},
    )


class _BreaksOff(litellm.CustomLLM):  # type: ignore[misc]
    """A LiteLLM custom provider that streams one piece of text, then fails."""

    async def astreaming(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        yield {
            "text": "Hal",
            "is_finished": False,
            "finish_reason": "",
            "usage": None,
            "index": 0,
            "tool_use": None,
        }
        raise litellm.ServiceUnavailableError(
            "provider went away", llm_provider="breaks-off", model="m"
        )


@pytest.fixture
def breaks_off_provider() -> Iterator[str]:
    saved = list(litellm.custom_provider_map)
    litellm.custom_provider_map = [
        *saved,
        {"provider": "breaks-off", "custom_handler": _BreaksOff()},
    ]
    litellm.utils.custom_llm_setup()
    try:
        yield "breaks-off/m"
    finally:
        litellm.custom_provider_map = saved
        litellm.utils.custom_llm_setup()


@pytest.mark.anyio
async def test_an_error_mid_stream_becomes_an_in_band_error_the_middleware_fails_on(
    breaks_off_provider: str,
) -> None:
    app = LiteLLMApp(breaks_off_provider)
    chunks = data_lines(await post(app, CHAT))
    assert chunks[0]["choices"][0]["delta"]["content"] == "Hal"
    assert "provider went away" in chunks[-1]["error"]["message"]
    assert "[DONE]" not in chunks

    transport = httpx.ASGITransport(app=ResponsesMiddleware(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.post(
            "/v1/responses", json={"model": "m", "input": "hi", "stream": True}
        )
    failed = [line for line in response.text.splitlines() if '"response.failed"' in line]
    assert len(failed) == 1
    assert "provider went away" in failed[0]


@pytest.mark.anyio
async def test_the_openai_sdk_gets_a_responses_stream_through_the_middleware() -> None:
    app = ResponsesMiddleware(LiteLLMApp("openai/m", api_key="x", mock_response="Hi there!"))
    async with openai.AsyncOpenAI(
        base_url="http://gw/v1",
        api_key="x",
        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),
        _strict_response_validation=True,
    ) as client:
        stream = await client.responses.create(model="m", input="Say hi", stream=True)
        kinds = []
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.completed":
                completed = event.response
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert completed.output_text == "Hi there!"
    assert completed.usage is not None
    assert completed.usage.total_tokens > 0


class _Endless(litellm.CustomLLM):  # type: ignore[misc]
    """Streams one piece, then would go on forever; records when it is stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped = threading.Event()

    async def astreaming(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        try:
            yield {
                "text": "Hal",
                "is_finished": False,
                "finish_reason": "",
                "usage": None,
                "index": 0,
                "tool_use": None,
            }
            await anyio.sleep_forever()
        finally:
            self.stopped.set()


@pytest.mark.anyio
async def test_a_client_that_leaves_stops_the_litellm_stream() -> None:
    provider = _Endless()
    saved = list(litellm.custom_provider_map)
    litellm.custom_provider_map = [*saved, {"provider": "endless", "custom_handler": provider}]
    litellm.utils.custom_llm_setup()
    try:
        with serve(LiteLLMApp("endless/m")) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                with anyio.fail_after(10):
                    async with client.stream("POST", "/v1/chat/completions", json=CHAT) as reply:
                        first = await reply.aiter_lines().__anext__()
            assert '"Hal"' in first
            assert await anyio.to_thread.run_sync(provider.stopped.wait, 10)
    finally:
        litellm.custom_provider_map = saved
        litellm.utils.custom_llm_setup()
