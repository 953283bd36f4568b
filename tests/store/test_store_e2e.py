"""End to end: the openai SDK chains turns through ResponsesMiddleware against each real store.

In-process tests drive the middleware with ``httpx.ASGITransport`` and the SDK in strict
validation mode; the multi-process test runs two uvicorn gateways on loopback sharing one Redis.
The backend is ``tests/store/upstream.py``'s scripted Chat Completions app, which records every
Chat request so each test can assert the history the upstream actually received.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stream_mw import ResponsesMiddleware
from tests.redis_server import RedisServer
from tests.store.upstream import TOOL_CALL_ID, WEATHER_TOOL, chat_app, text_of

ROOT = Path(__file__).resolve().parents[2]
MODEL = "scripted-model"


def sdk(app: Any, key: str = "key-alice") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://gateway.test/v1",
        api_key=key,
        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),
        max_retries=0,
        _strict_response_validation=True,
    )


def conversation(chat_request: dict[str, Any]) -> list[tuple[str, str]]:
    """A Chat request's messages as (role, text or tool-call summary)."""
    out = []
    for m in chat_request["messages"]:
        if m.get("tool_calls"):
            calls = ",".join(f"{c['id']}:{c['function']['name']}" for c in m["tool_calls"])
            out.append((m["role"], f"calls {calls}"))
        else:
            out.append((m["role"], text_of(m.get("content"))))
    return out


async def three_turns(client: openai.AsyncOpenAI) -> list[Any]:
    """Text (streamed), a function call (not streamed), text after the tool output (stream
    helper): the Agents-SDK-style tool loop, chained by previous_response_id."""
    stream = await client.responses.create(
        model=MODEL, input="Hi there", instructions="Be brief.", tools=[WEATHER_TOOL], stream=True
    )
    events = [event async for event in stream]
    assert events[-1].type == "response.completed"
    first = events[-1].response
    second = await client.responses.create(
        model=MODEL,
        input="What's the weather in Paris?",
        previous_response_id=first.id,
        tools=[WEATHER_TOOL],
    )
    async with client.responses.stream(
        model=MODEL,
        input=[{"type": "function_call_output", "call_id": TOOL_CALL_ID, "output": "sunny"}],
        previous_response_id=second.id,
        tools=[WEATHER_TOOL],
    ) as helper:
        third = await helper.get_final_response()
    return [first, second, third]


@pytest.mark.anyio
async def test_sdk_chains_three_turns_with_a_tool_call_then_retrieves_lists_and_deletes(
    backend_url: str,
) -> None:
    upstream = chat_app()
    mw = ResponsesMiddleware(upstream, store_url=backend_url, keepalive_interval=0)
    try:
        async with sdk(mw) as client:
            first, second, third = await three_turns(client)

            assert first.output_text == "Hello! (saw 2 messages)"
            [call] = second.output
            assert call.type == "function_call"
            assert call.call_id == TOOL_CALL_ID
            assert third.output_text == "It is sunny in Paris. (saw 5 messages)"
            assert third.previous_response_id == second.id

            requests = upstream.state.requests
            assert [conversation(r) for r in requests] == [
                [("system", "Be brief."), ("user", "Hi there")],
                [
                    ("user", "Hi there"),
                    ("assistant", "Hello! (saw 2 messages)"),
                    ("user", "What's the weather in Paris?"),
                ],
                [
                    ("user", "Hi there"),
                    ("assistant", "Hello! (saw 2 messages)"),
                    ("user", "What's the weather in Paris?"),
                    ("assistant", f"calls {TOOL_CALL_ID}:get_weather"),
                    ("tool", "sunny"),
                ],
            ]

            got = await client.responses.retrieve(third.id)
            assert got.id == third.id
            assert got.output_text == third.output_text
            assert (await client.responses.retrieve(first.id)).instructions == "Be brief."

            items = [i async for i in client.responses.input_items.list(third.id, order="asc")]
            assert [(i.type, getattr(i, "role", None)) for i in items] == [
                ("message", "user"),
                ("message", "assistant"),
                ("message", "user"),
                ("function_call", None),
                ("function_call_output", None),
            ]
            assert items[1].id == first.output[0].id
            assert items[3].id == call.id
            newest = await client.responses.input_items.list(third.id, limit=1)
            assert [i.type for i in newest.data] == ["function_call_output"]
            assert newest.has_more is True

            await client.responses.delete(first.id)
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(first.id)
            with pytest.raises(openai.NotFoundError):
                await client.responses.create(model=MODEL, input="x", previous_response_id=first.id)
            assert len(requests) == 3  # the 404 came before the upstream was called
            # Later responses keep their own copy of the history.
            assert (await client.responses.retrieve(second.id)).id == second.id
            assert len([i async for i in client.responses.input_items.list(third.id)]) == 5
    finally:
        await mw.gateway.aclose()


@pytest.mark.anyio
async def test_another_credential_can_neither_see_nor_continue_a_response(
    backend_url: str,
) -> None:
    upstream = chat_app()
    mw = ResponsesMiddleware(upstream, store_url=backend_url, keepalive_interval=0)
    try:
        async with sdk(mw, "key-alice") as alice, sdk(mw, "key-bob") as bob:
            mine = await alice.responses.create(model=MODEL, input="my secret plan")
            for attempt in (
                bob.responses.retrieve(mine.id),
                bob.responses.input_items.list(mine.id),
                bob.responses.delete(mine.id),
                bob.responses.create(model=MODEL, input="tell me", previous_response_id=mine.id),
            ):
                with pytest.raises(openai.NotFoundError) as caught:
                    await attempt
                assert "secret" not in caught.value.response.text
            assert len(upstream.state.requests) == 1
            continued = await alice.responses.create(
                model=MODEL, input="go on", previous_response_id=mine.id
            )
            assert continued.output_text == "Hello! (saw 3 messages)"
    finally:
        await mw.gateway.aclose()


@pytest.mark.anyio
async def test_store_false_responses_cannot_be_retrieved_or_continued(backend_url: str) -> None:
    mw = ResponsesMiddleware(chat_app(), store_url=backend_url, keepalive_interval=0)
    try:
        async with sdk(mw) as client:
            unstored = await client.responses.create(model=MODEL, input="hi", store=False)
            assert unstored.store is False
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(unstored.id)
            with pytest.raises(openai.NotFoundError):
                await client.responses.create(
                    model=MODEL, input="x", previous_response_id=unstored.id
                )
    finally:
        await mw.gateway.aclose()


@pytest.mark.anyio
async def test_redis_outage_keeps_generation_streaming_and_retrieval_answers_503(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = chat_app()
    mw = ResponsesMiddleware(upstream, store_url=own_redis_server.url, keepalive_interval=0)
    try:
        async with sdk(mw) as client:
            before = await client.responses.create(model=MODEL, input="hi")
            own_redis_server.stop()
            with caplog.at_level(logging.WARNING, logger="stream_mw"):
                stream = await client.responses.create(model=MODEL, input="hi", stream=True)
                events = [event async for event in stream]
            assert events[-1].type == "response.completed"
            during = events[-1].response
            assert during.output_text == "Hello! (saw 1 messages)"
            assert f"{during.id} was not stored" in caplog.text

            with pytest.raises(openai.InternalServerError) as caught:
                await client.responses.retrieve(before.id)
            assert caught.value.status_code == 503
            with pytest.raises(openai.InternalServerError) as caught:
                await client.responses.create(
                    model=MODEL, input="more", previous_response_id=before.id
                )
            assert caught.value.status_code == 503
            assert len(upstream.state.requests) == 2

            own_redis_server.start()  # back, empty (no persistence): the store serves again
            after = await client.responses.create(model=MODEL, input="hi")
            assert (await client.responses.retrieve(after.id)).id == after.id
    finally:
        await mw.gateway.aclose()


# --- two gateway processes sharing one Redis -------------------------------------------------

_RUNNING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class Gateway:
    """``uvicorn --factory tests.store.upstream:create_gateway`` (or ``factory``) on a free
    loopback port."""

    def __init__(
        self, env: dict[str, str], factory: str = "tests.store.upstream:create_gateway"
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", factory,
             "--host", "127.0.0.1", "--port", "0", "--log-level", "info"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.log: list[bytes] = []
        ready = threading.Event()
        self.port = 0

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line)
                found = _RUNNING.search(line)
                if found:
                    self.port = int(found.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60) or not self.port:
            self.stop()
            raise RuntimeError("gateway did not start:\n" + b"".join(self.log).decode())

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"http://127.0.0.1:{self.port}/v1",
            api_key=key,
            max_retries=0,
            _strict_response_validation=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def two_gateways(redis_server: RedisServer) -> Iterator[tuple[Gateway, Gateway]]:
    env = {
        **os.environ,
        "STREAM_MW_STORE_URL": redis_server.url,
        "STREAM_MW_KEEPALIVE_INTERVAL": "0",
        "PYTHONPATH": str(ROOT),
    }
    first = Gateway(env)
    try:
        second = Gateway(env)
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def test_two_gateway_processes_share_one_redis(two_gateways: tuple[Gateway, Gateway]) -> None:
    a, b = two_gateways
    assert a.port != b.port
    with a.client("key-alice") as on_a, b.client("key-alice") as on_b:
        started = on_a.responses.create(model=MODEL, input="What's the weather in Paris?")
        assert started.output[0].type == "function_call"
        continued = on_b.responses.create(
            model=MODEL,
            input=[{"type": "function_call_output", "call_id": TOOL_CALL_ID, "output": "rainy"}],
            previous_response_id=started.id,
            tools=[WEATHER_TOOL],
        )
        # Process b's upstream saw the history only process a had seen: user, call, output.
        assert continued.output_text == "It is rainy in Paris. (saw 3 messages)"
        assert on_b.responses.retrieve(started.id).output[0].type == "function_call"
        assert on_a.responses.retrieve(continued.id).output_text == continued.output_text
        listed = [i.type for i in on_a.responses.input_items.list(continued.id, order="asc")]
        assert listed == ["message", "function_call", "function_call_output"]
        on_b.responses.delete(started.id)
        with pytest.raises(openai.NotFoundError):
            on_a.responses.retrieve(started.id)
    with b.client("key-bob") as bob, pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(continued.id)
