"""The real ``openai`` SDK, in strict validation mode, against the middleware.

Every scenario runs twice: in process through ``httpx.ASGITransport`` and over a real uvicorn
server on 127.0.0.1. The upstream is ``tests.e2e.apps.ScriptedChat``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
from asgi_lifespan import LifespanManager
from openai import AsyncOpenAI
from pydantic import BaseModel
from starlette.config import Config
from starlette.middleware import Middleware

from stream_mw import ResponsesMiddleware, Settings
from tests.checker import check_response, check_stream
from tests.e2e.apps import ScriptedChat, fastapi_upstream, starlette_upstream
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

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]


class City(BaseModel):
    city: str
    temperature: int


def sdk(http: httpx.AsyncClient, base_url: str) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=base_url,
        api_key="sk-test",
        http_client=http,
        max_retries=0,
        _strict_response_validation=True,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve(ResponsesMiddleware(ScriptedChat(), keepalive_interval=0)) as running:
        yield running


@pytest.fixture(params=["asgi", "uvicorn"])
async def client(
    request: pytest.FixtureRequest, server: RunningServer
) -> AsyncIterator[AsyncOpenAI]:
    if request.param == "asgi":
        app = ResponsesMiddleware(ScriptedChat(), keepalive_interval=0)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        base_url = "http://testserver/v1"
    else:
        # No TLS here: skipping the certificate store saves ~0.1 s per client.
        http = httpx.AsyncClient(verify=False)
        base_url = server.url + "/v1"
    async with http, sdk(http, base_url) as client:
        yield client


def message_text(response: Any) -> str:
    return "".join(
        part.text
        for item in response.output
        if item.type == "message"
        for part in item.content
        if part.type == "output_text"
    )


def check_scenario(model: str, response: Any) -> None:
    """The final Response object each scenario must produce."""
    if model == "text":
        assert response.status == "completed"
        assert response.output_text == "Hello, world! 🌍"
        assert response.usage.total_tokens == 18
    elif model == "reasoning":
        assert response.status == "completed"
        assert [item.type for item in response.output] == ["reasoning", "message"]
        reasoning = response.output[0]
        texts = [c.text for c in reasoning.content or []] + [s.text for s in reasoning.summary]
        assert "".join(texts) == "The user says hi."
        assert response.output_text == "Hi there."
    elif model == "refusal":
        assert response.status == "completed"
        [message] = response.output
        assert [part.type for part in message.content] == ["refusal"]
        assert message.content[0].refusal == "I can't help with that."
    elif model == "parallel-tools":
        assert response.status == "completed"
        calls = [(i.call_id, i.name, i.arguments) for i in response.output]
        assert calls == [
            ("call_paris", "get_weather", '{"city": "Paris"}'),
            ("call_tokyo", "get_weather", '{"city": "Tokyo"}'),
        ]
    elif model == "length":
        assert response.status == "incomplete"
        assert response.incomplete_details.reason == "max_output_tokens"
        assert message_text(response) == "This answer is cut short"
    elif model == "content-filter":
        assert response.status == "incomplete"
        assert response.incomplete_details.reason == "content_filter"
    else:  # pragma: no cover
        raise AssertionError(model)


SCENARIOS = ["text", "reasoning", "refusal", "parallel-tools", "length", "content-filter"]
TERMINAL = {
    "text": "response.completed",
    "reasoning": "response.completed",
    "refusal": "response.completed",
    "parallel-tools": "response.completed",
    "length": "response.incomplete",
    "content-filter": "response.incomplete",
}


@pytest.mark.parametrize("model", SCENARIOS)
async def test_create_stream_yields_valid_events_ending_in_the_terminal_event(
    client: AsyncOpenAI, model: str
) -> None:
    stream = await client.responses.create(model=model, input="hi", tools=TOOLS, stream=True)
    events = [event async for event in stream]

    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == TERMINAL[model]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    check_scenario(model, events[-1].response)  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["text", "reasoning", "refusal", "parallel-tools"])
async def test_stream_helper_returns_the_final_response(client: AsyncOpenAI, model: str) -> None:
    async with client.responses.stream(model=model, input="hi", tools=TOOLS) as stream:
        final = await stream.get_final_response()

    check_scenario(model, final)
    if model == "parallel-tools":
        assert [call.parsed_arguments for call in final.output] == [  # type: ignore[union-attr]
            {"city": "Paris"},
            {"city": "Tokyo"},
        ]


@pytest.mark.parametrize("model", ["length", "content-filter", "error-during"])
async def test_stream_helper_reports_a_stream_that_did_not_complete(
    client: AsyncOpenAI, model: str
) -> None:
    with pytest.raises(RuntimeError, match=r"response\.completed"):
        async with client.responses.stream(model=model, input="hi") as stream:
            await stream.get_final_response()


@pytest.mark.parametrize("model", SCENARIOS)
async def test_create_without_stream_returns_the_same_response(
    client: AsyncOpenAI, model: str
) -> None:
    raw = await client.responses.with_raw_response.create(model=model, input="hi", tools=TOOLS)
    response = raw.parse()

    check_response(raw.http_response.json())
    assert response.id.startswith("resp_")
    check_scenario(model, response)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    ("model", "error_class", "status", "code", "message"),
    [
        ("http-400", openai.BadRequestError, 400, "context_length_exceeded", "maximum context length"),
        ("http-429", openai.RateLimitError, 429, "rate_limit_exceeded", "try again in 2s"),
        ("http-503-text", openai.InternalServerError, 503, "server_error", "backend overloaded"),
    ],
)  # fmt: skip
async def test_an_upstream_error_before_the_stream_is_an_sdk_status_error(
    client: AsyncOpenAI,
    stream: bool,
    model: str,
    error_class: type[openai.APIStatusError],
    status: int,
    code: str,
    message: str,
) -> None:
    with pytest.raises(error_class) as caught:
        await client.responses.create(model=model, input="hi", stream=stream)  # type: ignore[call-overload]

    assert caught.value.status_code == status
    assert caught.value.code == code
    assert message in caught.value.body["message"]  # type: ignore[index]


async def test_an_upstream_error_during_the_stream_is_a_failed_response(
    client: AsyncOpenAI,
) -> None:
    stream = await client.responses.create(model="error-during", input="hi", stream=True)
    events = [event async for event in stream]

    assert events[-1].type == "response.failed"
    response = events[-1].response
    assert response.status == "failed"
    assert response.error is not None
    assert "crashed mid-generation" in response.error.message
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "Partial answer"


async def test_an_upstream_error_without_stream_is_an_sdk_status_error(
    client: AsyncOpenAI,
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        await client.responses.create(model="error-during", input="hi")

    assert "crashed mid-generation" in caught.value.body["message"]  # type: ignore[index]


async def test_an_invalid_request_is_an_sdk_bad_request_error(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="text", input=[{"type": "no_such_item"}])  # type: ignore[list-item]

    assert caught.value.param == "input[0].type"


@pytest.mark.parametrize("model", [*SCENARIOS, "error-during"])
async def test_the_raw_stream_passes_the_checker(client: AsyncOpenAI, model: str) -> None:
    body = {"model": model, "input": "hi", "stream": True, "tools": TOOLS}
    async with client.with_streaming_response.responses.create(**body) as raw:  # type: ignore[call-overload]
        data = await raw.read()

    assert check_stream(data, done_marker=True).types[-1] == TERMINAL.get(model, "response.failed")


# --- store: false with encrypted reasoning (issue 10, item 3) --------------------------------------

REASONING_KEY = "e2e-reasoning-key-0123456789"


@contextmanager
def stateless_client(transport: str, upstream: ScriptedChat) -> Iterator[AsyncOpenAI]:
    app = ResponsesMiddleware(
        upstream, keepalive_interval=0, reasoning_passback=True, reasoning_key=REASONING_KEY
    )
    if transport == "asgi":
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        yield sdk(http, "http://testserver/v1")
        return
    with serve(app) as running:
        yield sdk(httpx.AsyncClient(verify=False), running.url + "/v1")


async def first_turn(client: AsyncOpenAI, stream: bool) -> list[dict[str, Any]]:
    """A reasoning turn with store: false; the output items as the client would replay them."""
    body: dict[str, Any] = {"model": "reasoning", "input": "hi", "store": False}
    body["include"] = ["reasoning.encrypted_content"]
    if stream:
        async with client.with_streaming_response.responses.create(**body, stream=True) as raw:
            final = check_stream(await raw.read(), done_marker=True).response
    else:
        raw_json = await client.responses.with_raw_response.create(**body)
        final = check_response(raw_json.http_response.json())
        raw_json.parse()  # and the SDK's strict models accept it
    return [{k: v for k, v in item.items() if v is not None} for item in final["output"]]


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("transport", ["asgi", "uvicorn"])
async def test_a_stateless_client_replays_sealed_reasoning_and_the_upstream_gets_it_back(
    transport: str, stream: bool
) -> None:
    upstream = ScriptedChat()
    with stateless_client(transport, upstream) as client:
        async with client:
            output = await first_turn(client, stream)
            second = await client.responses.create(
                model="text",
                store=False,
                input=[
                    {"role": "user", "content": "hi"},
                    *output,
                    {"role": "user", "content": "?"},
                ],  # type: ignore[list-item]
            )

    assert output[0]["type"] == "reasoning"
    assert output[0]["encrypted_content"].startswith("smw1.")
    assert second.status == "completed"
    assistant = upstream.requests[-1]["messages"][1]
    assert assistant == {"role": "assistant", "content": "Hi there.", "reasoning_content": "The user says hi."}  # fmt: skip


@pytest.mark.parametrize("transport", ["asgi", "uvicorn"])
async def test_a_forged_reasoning_token_is_a_bad_request_naming_the_item(transport: str) -> None:
    upstream = ScriptedChat()
    with stateless_client(transport, upstream) as client:
        async with client:
            output = await first_turn(client, stream=True)
            token = output[0]["encrypted_content"]
            output[0]["encrypted_content"] = token[:-4] + (
                "AAAA" if token[-4:] != "AAAA" else "BBBB"
            )
            with pytest.raises(openai.BadRequestError) as caught:
                await client.responses.create(
                    model="text",
                    store=False,
                    input=[{"role": "user", "content": "hi"}, *output],  # type: ignore[list-item]
                )

    assert caught.value.param == "input[1].encrypted_content"
    assert len(upstream.requests) == 1, "the forged turn never reached the upstream"


async def test_chat_completions_and_models_still_pass_through(client: AsyncOpenAI) -> None:
    chat = await client.chat.completions.create(
        model="text", messages=[{"role": "user", "content": "hi"}]
    )
    models = await client.models.list()

    assert chat.choices[0].message.content == "Hello, world! 🌍"
    assert "text" in [m.id for m in models.data]


# --- the three ways to attach, and settings from the environment -------------------------------


def attached(how: str) -> Any:
    if how == "starlette":
        return starlette_upstream(
            middleware=[Middleware(ResponsesMiddleware, keepalive_interval=0)]
        )
    if how == "fastapi":
        app = fastapi_upstream()
        app.add_middleware(ResponsesMiddleware, keepalive_interval=0)
        return app
    return ResponsesMiddleware(starlette_upstream(), keepalive_interval=0)


@pytest.mark.parametrize("how", ["starlette", "fastapi", "wrapped"])
async def test_every_way_of_attaching_serves_responses_with_the_apps_lifespan(how: str) -> None:
    app = attached(how)
    async with LifespanManager(app) as manager:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app))
        async with http, sdk(http, "http://testserver/v1") as client:
            async with client.responses.stream(model="text", input="hi") as stream:
                final = await stream.get_final_response()
            plain = await client.responses.create(model="parallel-tools", input="hi", tools=TOOLS)
            chat = await client.chat.completions.create(
                model="text", messages=[{"role": "user", "content": "hi"}]
            )

    assert final.output_text == "Hello, world! 🌍"
    check_scenario("parallel-tools", plain)
    assert chat.choices[0].message.content == "Hello, world! 🌍"


@pytest.mark.parametrize("how", ["starlette", "fastapi", "wrapped"])
async def test_every_way_of_attaching_works_over_uvicorn(how: str) -> None:
    with serve(attached(how), lifespan="on") as running:
        http = httpx.AsyncClient(verify=False)
        async with http, sdk(http, running.url + "/v1") as client:
            stream = await client.responses.create(model="reasoning", input="hi", stream=True)
            events = [event async for event in stream]

    check_scenario("reasoning", events[-1].response)  # type: ignore[union-attr]


async def test_settings_from_the_environment_drive_the_middleware() -> None:
    settings = Settings.from_env(
        {"STREAM_MW_PATH_PREFIX": "/openai", "STREAM_MW_REASONING_EVENTS": "summary"},
        keepalive_interval=0,
    )
    app = ResponsesMiddleware(ScriptedChat(), settings=settings)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    async with http, sdk(http, "http://testserver/openai") as client:
        stream = await client.responses.create(model="reasoning", input="hi", stream=True)
        types = [event.type async for event in stream]

    assert "response.reasoning_summary_text.delta" in types
    assert "response.reasoning_text.delta" not in types


async def test_settings_from_a_starlette_config_drive_the_middleware() -> None:
    config = Config(environ={"STREAM_MW_DONE_MARKER": "false", "STREAM_MW_STORE_URL": "none"})
    app = ResponsesMiddleware(ScriptedChat(), settings=Settings.from_config(config))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        streamed = await http.post(
            "/v1/responses", json={"model": "text", "input": "hi", "stream": True}
        )
        chained = await http.post(
            "/v1/responses",
            json={"model": "text", "input": "hi", "previous_response_id": "resp_x"},
        )

    check_stream(streamed.content, done_marker=False)
    assert chained.status_code == 400, "store_url=none turns previous_response_id off"


# --- exceptions in the wrapped app ---------------------------------------------------------------


async def test_an_app_exception_is_logged_by_uvicorn_and_the_client_still_gets_a_clean_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    app = ResponsesMiddleware(ScriptedChat(), keepalive_interval=0)
    # log_config=None: uvicorn's records reach the root logger, where caplog listens.
    with serve(app, log_config=None) as running:
        http = httpx.AsyncClient(verify=False)
        async with http, sdk(http, running.url + "/v1") as client:
            with pytest.raises(openai.InternalServerError) as caught:
                await client.responses.create(model="crash-before", input="hi", stream=True)
            stream = await client.responses.create(model="crash-during", input="hi", stream=True)
            events = [event async for event in stream]

    assert caught.value.code == "server_error"
    assert "RuntimeError" in caught.value.body["message"]  # type: ignore[index]
    assert events[-1].type == "response.failed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello"
    logged = [r for r in caplog.records if r.exc_info and "scripted crash" in str(r.exc_info[1])]
    assert len(logged) == 2, "uvicorn logs both exceptions"


async def test_in_process_clients_see_the_exception_unless_told_not_to_raise() -> None:
    app = ResponsesMiddleware(ScriptedChat(), keepalive_interval=0)
    raising = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    async with raising, sdk(raising, "http://testserver/v1") as client:
        # openai 2 wrapped the app's exception in APIConnectionError; openai 3 lets it through.
        with pytest.raises((openai.APIConnectionError, RuntimeError)) as caught:
            await client.responses.create(model="crash-during", input="hi", stream=True)
    raised = caught.value.__cause__ if isinstance(caught.value, openai.APIError) else caught.value
    assert isinstance(raised, RuntimeError)
    assert str(raised) == "scripted crash"

    quiet = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False))
    async with quiet, sdk(quiet, "http://testserver/v1") as client:
        stream = await client.responses.create(model="crash-during", input="hi", stream=True)
        events = [event async for event in stream]
    assert events[-1].type == "response.failed"


# --- item_reference (issue 10.1) -------------------------------------------------------------


def keyed_sdk(http: httpx.AsyncClient, base_url: str, api_key: str) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        http_client=http,
        max_retries=0,
        _strict_response_validation=True,
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_item_references_to_an_earlier_turn_reach_the_upstream_as_that_turn(
    stream: bool,
) -> None:
    """The AI SDK replays stored turns as item_references; they used to be dropped, and the
    upstream saw user, user."""
    chat = ScriptedChat()
    with serve(ResponsesMiddleware(chat, keepalive_interval=0)) as running:
        http = httpx.AsyncClient(verify=False)
        async with http, keyed_sdk(http, running.url + "/v1", "sk-alice") as client:
            first = await client.responses.create(model="text", input="hi")
            [user] = (await client.responses.input_items.list(first.id)).data
            references: Any = [
                {"type": "item_reference", "id": user.id},
                *({"type": "item_reference", "id": item.id} for item in first.output),
                {"role": "user", "content": "and again?"},
            ]
            if stream:
                events = [e async for e in await client.responses.create(
                    model="text", input=references, stream=True
                )]  # fmt: skip
                assert events[-1].type == "response.completed"
            else:
                await client.responses.create(model="text", input=references)

    messages = chat.requests[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "hi"
    assert messages[1]["content"] == message_text(first)
    assert messages[2]["content"] == "and again?"


async def test_an_item_reference_to_another_keys_item_is_a_bad_request() -> None:
    chat = ScriptedChat()
    app = ResponsesMiddleware(chat, keepalive_interval=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        alice = keyed_sdk(http, "http://testserver/v1", "sk-alice")
        bob = keyed_sdk(http, "http://testserver/v1", "sk-bob")
        first = await alice.responses.create(model="text", input="hi")
        reference: Any = [{"role": "user", "content": "x"},
                          {"type": "item_reference", "id": first.output[0].id}]  # fmt: skip
        with pytest.raises(openai.BadRequestError) as caught:
            await bob.responses.create(model="text", input=reference)
    assert caught.value.param == "input[1]"
    assert first.output[0].id in caught.value.message
    assert len(chat.requests) == 1


async def test_an_item_reference_without_a_store_is_a_bad_request() -> None:
    chat = ScriptedChat()
    app = ResponsesMiddleware(chat, keepalive_interval=0, store_url=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        client = keyed_sdk(http, "http://testserver/v1", "sk-alice")
        reference: Any = [{"type": "item_reference", "id": "msg_1"}]
        with pytest.raises(openai.BadRequestError, match="store_url is None") as caught:
            await client.responses.create(model="text", input=reference, stream=True)
    assert caught.value.param == "input[0]"
    assert chat.requests == []


async def test_a_response_too_large_to_store_still_streams_and_later_says_why_it_is_missing() -> (
    None
):
    """Issue 11.9: the next turn used to get "previous response not found"."""
    app = ResponsesMiddleware(ScriptedChat(), keepalive_interval=0, store_max_response_bytes=2_000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        client = keyed_sdk(http, "http://testserver/v1", "sk-alice")
        stream = await client.responses.create(model="text", input="x" * 5_000, stream=True)
        events = [event async for event in stream]
        assert events[-1].type == "response.completed"
        response_id = events[-1].response.id
        with pytest.raises(openai.NotFoundError, match="was not stored: it was") as got:
            await client.responses.retrieve(response_id)
        assert "store_max_response_bytes=2000" in got.value.message
        with pytest.raises(openai.NotFoundError, match="was not stored") as continued:
            await client.responses.create(
                model="text", input="more", previous_response_id=response_id
            )
    assert continued.value.code == "response_not_stored"


# --- Every scenario of the client table, over uvicorn, with default settings -------------------


@pytest.fixture(scope="module")
def scenarios() -> Iterator[ClientServer]:
    with client_server() as running:
        yield running


@pytest.fixture
async def openai_client(scenarios: ClientServer) -> AsyncIterator[AsyncOpenAI]:
    scenarios.reset()
    async with httpx.AsyncClient(verify=False) as http, sdk(http, scenarios.base_url) as client:
        yield client
    # Every stream the client received in the test passes the checker.
    scenarios.streams()


async def test_a_text_answer_arrives_streamed_and_not(
    openai_client: AsyncOpenAI, scenarios: ClientServer
) -> None:
    plain = await openai_client.responses.create(model="text", input="Hi")
    async with openai_client.responses.stream(model="text", input="Hi") as stream:
        streamed = await stream.get_final_response()
    assert plain.output_text == streamed.output_text == ANSWER
    [checked] = scenarios.streams()
    assert checked.output_text == ANSWER


async def test_a_tool_loop_runs_the_call_and_answers_from_its_output(
    openai_client: AsyncOpenAI, scenarios: ClientServer
) -> None:
    first = await openai_client.responses.create(model="tool-loop", input="Weather?", tools=TOOLS)
    [call] = first.output
    assert call.type == "function_call"
    assert json.loads(call.arguments) == {"city": "Paris"}
    output = {"type": "function_call_output", "call_id": call.call_id,
              "output": weather("Paris")}  # fmt: skip
    async with openai_client.responses.stream(
        model="tool-loop", input=[output], previous_response_id=first.id, tools=TOOLS
    ) as stream:
        final = await stream.get_final_response()
    assert final.output_text == f"The weather tool says: {weather('Paris')}"


async def test_parallel_calls_arrive_as_two_finished_function_calls(
    openai_client: AsyncOpenAI, scenarios: ClientServer
) -> None:
    async with openai_client.responses.stream(
        model="parallel", input="Weather in Paris and Tokyo?", tools=TOOLS
    ) as stream:
        done = [
            e.arguments async for e in stream if e.type == "response.function_call_arguments.done"
        ]
        final = await stream.get_final_response()
    assert done == ['{"city": "Paris"}', '{"city": "Tokyo"}']
    assert [item.call_id for item in final.output] == ["call_paris", "call_tokyo"]


async def test_streamed_reasoning_reaches_the_client_with_the_default_settings(
    openai_client: AsyncOpenAI, scenarios: ClientServer
) -> None:
    async with openai_client.responses.stream(model="reasoning", input="Hi") as stream:
        shown = "".join(
            [e.delta async for e in stream if e.type == "response.reasoning_summary_text.delta"]
        )
        final = await stream.get_final_response()
    assert shown == REASONING
    assert final.output_text == ANSWER


async def test_structured_output_is_parsed_into_the_callers_model(
    openai_client: AsyncOpenAI, scenarios: ClientServer
) -> None:
    parsed = await openai_client.responses.parse(model="structured", input="City?",
                                                 text_format=City)  # fmt: skip
    assert parsed.output_parsed == City(**STRUCTURED)
    request = scenarios.chat_requests()[0]
    assert request["response_format"]["json_schema"]["schema"]["required"] == ["city",
                                                                              "temperature"]  # fmt: skip


async def test_previous_response_id_brings_back_the_earlier_answer(
    openai_client: AsyncOpenAI, scenarios: ClientServer
) -> None:
    first = await openai_client.responses.create(model="memory", input="Pick a number.")
    second = await openai_client.responses.create(
        model="memory", input="What did you say?", previous_response_id=first.id
    )
    assert second.output_text.startswith(f"Earlier I said: {FIRST_ANSWER}")
    roles = [m["role"] for m in scenarios.chat_requests()[1]["messages"]]
    assert roles == ["user", "assistant", "user"]


async def test_an_item_reference_to_the_earlier_answer_is_resolved_from_the_store(
    openai_client: AsyncOpenAI, scenarios: ClientServer
) -> None:
    first = await openai_client.responses.create(model="memory", input="Pick a number.")
    [message] = [item for item in first.output if item.type == "message"]
    second = await openai_client.responses.create(
        model="memory",
        input=[
            {"role": "user", "content": "Pick a number."},
            {"type": "item_reference", "id": message.id},
            {"role": "user", "content": "What did you say?"},
        ],
    )
    assert second.output_text.startswith(f"Earlier I said: {FIRST_ANSWER}")


async def test_a_stateless_replay_keeps_the_encrypted_reasoning(
    openai_client: AsyncOpenAI, scenarios: ClientServer
) -> None:
    first = await openai_client.responses.create(
        model="memory",
        input="Pick a number.",
        store=False,
        include=["reasoning.encrypted_content"],
    )
    reasoning, _ = first.output
    assert reasoning.type == "reasoning"
    assert isinstance(reasoning.encrypted_content, str)
    assert REASONING not in reasoning.encrypted_content
    replay: list[Any] = [{"role": "user", "content": "Pick a number."}]
    replay += [item.model_dump(exclude_none=True) for item in first.output]
    replay.append({"role": "user", "content": "What did you say?"})
    second = await openai_client.responses.create(
        model="memory", input=replay, store=False, include=["reasoning.encrypted_content"]
    )
    assert second.output_text.startswith(f"Earlier I said: {FIRST_ANSWER}")


@pytest.mark.parametrize("stream", [True, False])
async def test_an_upstream_429_is_a_rate_limit_error(
    openai_client: AsyncOpenAI, stream: bool
) -> None:
    with pytest.raises(openai.RateLimitError, match="Rate limit reached"):
        await openai_client.responses.create(model="rate-limited", input="Hi", stream=stream)


async def test_an_error_mid_stream_ends_in_a_failed_response_with_the_upstreams_message(
    openai_client: AsyncOpenAI, scenarios: ClientServer
) -> None:
    stream = await openai_client.responses.create(model="in-band-error", input="Hi", stream=True)
    events = [event async for event in stream]
    assert "response.output_text.delta" in [event.type for event in events]
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.error is not None
    assert "crashed mid-generation" in failed.response.error.message
    [checked] = scenarios.streams()
    assert checked.status == "failed"


async def test_a_call_cut_mid_arguments_is_never_reported_finished(
    openai_client: AsyncOpenAI, scenarios: ClientServer
) -> None:
    stream = await openai_client.responses.create(
        model="cut-call", input="Weather?", tools=TOOLS, stream=True
    )
    seen: list[Any] = []
    with contextlib.suppress(openai.APIError):
        async for event in stream:
            seen.append(event)
    types = [event.type for event in seen]
    assert "response.function_call_arguments.delta" in types
    assert "response.function_call_arguments.done" not in types
    assert not [e for e in seen if e.type == "response.output_item.done"]
    [checked] = scenarios.streams()
    assert checked.status == "failed"
    [call] = checked.response["output"]
    assert call["status"] == "incomplete"


async def test_max_tokens_ends_the_answer_as_incomplete(
    openai_client: AsyncOpenAI, scenarios: ClientServer
) -> None:
    response = await openai_client.responses.create(
        model="max-tokens", input="Hi", max_output_tokens=16
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == CUT_ANSWER
    assert scenarios.chat_requests()[0]["max_tokens"] == 16
