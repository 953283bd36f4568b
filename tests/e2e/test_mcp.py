"""Remote MCP tools end to end: a real MCP server on loopback, the gateway runs the loop.

The MCP server is ``tests/mcp_server.py`` (the ``mcp`` package's own server) in a process of
its own; the Chat backend is ``ScriptedChat`` with scripts that call the MCP tool while no
tool result is in the conversation, then answer from it. The clients are the real openai SDK
(strict validation) and the Agents SDK, over uvicorn.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import anyio
import httpx
import pytest
from openai import AsyncOpenAI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.sync.client import connect

from stream_mw import ResponsesMiddleware
from tests.checker import check_response, check_stream
from tests.e2e.apps import USAGE, Reply, ScriptedChat, chunk, tool_call
from tests.e2e.conftest import RunningServer, serve

pytest.importorskip("mcp", reason="needs the mcp extra")

from tests.mcp.servers import McpServerProcess

pytestmark = pytest.mark.anyio

LABEL = "calc"
ADD = f"{LABEL}__add"
SECRET = "s3cr3t-mcp-token-77"
TERMINAL = ("response.completed", "response.incomplete", "response.failed", "error")


def _tool_results(request: Mapping[str, Any]) -> list[str]:
    return [str(m.get("content")) for m in request.get("messages", ()) if m.get("role") == "tool"]


def _add_then_answer(request: Mapping[str, Any]) -> Reply:
    """Round 1 calls the MCP tool ``add``; once its result is in, the answer quotes it."""
    results = _tool_results(request)
    if not results:
        return Reply(
            [
                chunk({"role": "assistant", "content": "Let me add. "}),
                chunk({"tool_calls": [tool_call(0, call_id="call_add_1", name=ADD)]}),
                chunk({"tool_calls": [tool_call(0, arguments='{"a": 2, ')]}),
                chunk({"tool_calls": [tool_call(0, arguments='"b": 3}')]}),
                chunk(finish="tool_calls"),
                chunk(usage=USAGE, choices=False),
            ]
        )
    return Reply(
        [
            chunk({"role": "assistant", "content": "The sum is "}),
            chunk({"content": results[-1]}),
            chunk(finish="stop"),
            chunk(usage=USAGE, choices=False),
        ]
    )


def _add_forever(request: Mapping[str, Any]) -> Reply:
    """Calls ``add`` in every round: only the rounds bound ends it."""
    n = len(_tool_results(request))
    return Reply(
        [
            chunk({"role": "assistant", "tool_calls": [
                tool_call(0, call_id=f"call_{n}", name=ADD, arguments='{"a": 1, "b": 1}')]}),
            chunk(finish="tool_calls"),
            chunk(usage=USAGE, choices=False),
        ]
    )  # fmt: skip


def _what_was_said(request: Mapping[str, Any]) -> Reply:
    """Answers with the last tool result, or says there was none."""
    results = _tool_results(request)
    return Reply(
        [
            chunk({"role": "assistant", "content": f"results: {results!r}"}),
            chunk(finish="stop"),
            chunk(usage=USAGE, choices=False),
        ]
    )


SCRIPTS = {"mcp-add": _add_then_answer, "mcp-loop": _add_forever, "echo": _what_was_said}


def mcp_tool(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": LABEL, "server_url": url, **extra}


async def post_in_process(app: ASGIApp, body: dict[str, Any]) -> httpx.Response:
    """``POST /v1/responses`` to ``app`` in process (for a middleware of a test's own)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.post("/v1/responses", json=body)


async def streamed(client: AsyncOpenAI, model: str, text: str, url: str) -> list[Any]:
    """The events of one streamed response whose MCP server needs no approvals."""
    tool: Any = mcp_tool(url, require_approval="never")
    stream = await client.responses.create(model=model, input=text, tools=[tool], stream=True)
    return [event async for event in stream]


class McpServer:
    """The real MCP server of ``tests/mcp_server.py``, and what it was asked."""

    def __init__(self, process: McpServerProcess) -> None:
        self.base = process.url
        self.url = process.url + "/mcp"

    def _stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(self.base + "/stats").json()
        return stats

    def listings(self) -> int:
        return int(self._stats()["methods"].get("tools/list", 0))

    def calls(self) -> int:
        return int(self._stats()["methods"].get("tools/call", 0))

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = self._stats()["headers"]
        return headers


class Tap:
    """Keeps the body of every streamed answer: the bytes a client read off the wire."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.streams: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts: list[bytes] = []
        streamed = False

        async def tapped(message: Message) -> None:
            nonlocal streamed
            if message["type"] == "http.response.start":
                streamed = (b"content-type", b"text/event-stream; charset=utf-8") in message[
                    "headers"
                ]
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, tapped)
        if streamed:
            self.streams.append(b"".join(parts))


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpServer]:
    with McpServerProcess("streamable-http") as process:
        yield McpServer(process)


@pytest.fixture(scope="module")
def down_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
def upstream() -> ScriptedChat:
    return ScriptedChat(SCRIPTS)


@pytest.fixture(scope="module")
def tap(upstream: ScriptedChat, mcp_server: McpServer, down_url: str) -> Tap:
    return Tap(
        ResponsesMiddleware(
            upstream,
            keepalive_interval=0,
            mcp_servers=(mcp_server.url, down_url),
            mcp_max_rounds=3,
            mcp_timeout=5.0,
        )
    )


@pytest.fixture(scope="module")
def gateway(tap: Tap) -> Iterator[RunningServer]:
    with serve(tap) as running:
        yield running


@pytest.fixture(autouse=True)
def every_stream_is_checked(tap: Tap) -> Iterator[None]:
    """Every stream a test's client read passes the protocol checker."""
    tap.streams.clear()
    yield
    for body in tap.streams:
        check_stream(body)


@pytest.fixture
async def client(gateway: RunningServer) -> Any:
    async with (
        httpx.AsyncClient() as http,
        AsyncOpenAI(
            base_url=gateway.url + "/v1",
            api_key="sk-test",
            http_client=http,
            max_retries=0,
            _strict_response_validation=True,
        ) as sdk,
    ):
        yield sdk


async def test_a_streamed_response_lists_the_tools_calls_one_and_answers_from_its_result(
    client: AsyncOpenAI, upstream: ScriptedChat, mcp_server: McpServer
) -> None:
    upstream.requests.clear()
    events = await streamed(client, "mcp-add", "What is 2 + 3?", mcp_server.url)
    types = [e.type for e in events]

    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    order = [
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
    ]
    positions = [types.index(t) for t in order]
    assert positions == sorted(positions)
    final = events[-1].response
    kinds = [item.type for item in final.output]
    assert kinds == ["mcp_list_tools", "message", "mcp_call", "message"]
    listing, call = final.output[0], final.output[2]
    assert "add" in [t.name for t in listing.tools]
    assert (call.name, call.server_label, call.output, call.error) == ("add", LABEL, "5", None)
    assert final.output_text.endswith("The sum is 5")
    # Streamed ids are the terminal ones, and usage is the sum of the two rounds.
    added = [e.item.id for e in events if e.type == "response.output_item.added"]
    assert added == [item.id for item in final.output]
    assert final.usage is not None
    assert final.usage.total_tokens == 2 * USAGE["total_tokens"]
    # The second round carried the call and its result to the model.
    assert len(upstream.requests) == 2
    second = upstream.requests[1]["messages"]
    assert second[-2]["tool_calls"][0]["function"]["name"] == ADD
    assert second[-1] == {"role": "tool", "tool_call_id": second[-2]["tool_calls"][0]["id"],
                          "content": "5"}  # fmt: skip
    assert [t["function"]["name"] for t in upstream.requests[0]["tools"]].count(ADD) == 1


async def test_a_non_streamed_response_carries_the_same_items(
    client: AsyncOpenAI, mcp_server: McpServer
) -> None:
    raw = await client.responses.with_raw_response.create(
        model="mcp-add",
        input="What is 2 + 3?",
        tools=[mcp_tool(mcp_server.url, require_approval="never")],  # type: ignore[list-item]
    )
    check_response(raw.http_response.json())
    response = raw.parse()
    assert [item.type for item in response.output] == [
        "mcp_list_tools", "message", "mcp_call", "message"]  # fmt: skip
    assert response.output_text.endswith("The sum is 5")


async def test_an_approval_request_ends_the_turn_and_the_approved_call_runs_in_the_next(
    client: AsyncOpenAI, upstream: ScriptedChat, mcp_server: McpServer
) -> None:
    tools: Any = [mcp_tool(mcp_server.url, require_approval="always")]
    first = await client.responses.create(model="mcp-add", input="What is 2 + 3?", tools=tools)
    assert [item.type for item in first.output] == [
        "mcp_list_tools", "message", "mcp_approval_request"]  # fmt: skip
    asked = first.output[-1]
    assert (asked.name, asked.server_label, asked.arguments) == ("add", LABEL, '{"a": 2, "b": 3}')
    upstream.requests.clear()
    stream = await client.responses.create(
        model="mcp-add",
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": asked.id, "approve": True}],
        tools=tools,
        stream=True,
    )
    events = [event async for event in stream]
    final = events[-1].response
    assert events[-1].type == "response.completed"
    assert [item.type for item in final.output] == ["mcp_call", "message"]
    call = final.output[0]
    assert (call.approval_request_id, call.output) == (asked.id, "5")
    assert final.output_text == "The sum is 5"
    # The stored listing was reused: no new mcp_list_tools item, and its tools went to the model.
    assert len(upstream.requests) == 1
    assert ADD in [t["function"]["name"] for t in upstream.requests[0]["tools"]]


async def test_a_declined_call_is_not_run_and_the_model_is_told(
    client: AsyncOpenAI, upstream: ScriptedChat, mcp_server: McpServer
) -> None:
    tools: Any = [mcp_tool(mcp_server.url)]
    first = await client.responses.create(model="mcp-add", input="What is 2 + 3?", tools=tools)
    asked = first.output[-1]
    calls = mcp_server.calls()
    upstream.requests.clear()
    second = await client.responses.create(
        model="echo",
        previous_response_id=first.id,
        input=[
            {
                "type": "mcp_approval_response",
                "approval_request_id": asked.id,
                "approve": False,
                "reason": "not today",
            }
        ],
        tools=tools,
    )
    assert mcp_server.calls() == calls
    assert "declined" in second.output_text
    assert "not today" in second.output_text


async def test_reaching_the_rounds_bound_ends_the_response_incomplete(
    client: AsyncOpenAI, upstream: ScriptedChat, mcp_server: McpServer
) -> None:
    upstream.requests.clear()
    events = await streamed(client, "mcp-loop", "Loop.", mcp_server.url)
    assert events[-1].type == "response.incomplete"
    assert len(upstream.requests) == 3  # mcp_max_rounds
    calls = [item for item in events[-1].response.output if item.type == "mcp_call"]
    assert [c.status for c in calls] == ["completed", "completed", "completed"]


async def test_a_tool_error_reaches_the_model_as_a_failed_call(
    client: AsyncOpenAI, upstream: ScriptedChat, mcp_server: McpServer
) -> None:
    def _fail_then_answer(request: Mapping[str, Any]) -> Reply:
        if not _tool_results(request):
            return Reply([
                chunk({"role": "assistant", "tool_calls": [
                    tool_call(0, call_id="call_f", name=f"{LABEL}__fail", arguments="{}")]}),
                chunk(finish="tool_calls")])  # fmt: skip
        return _what_was_said(request)

    upstream.scripts["mcp-fail"] = _fail_then_answer
    events = await streamed(client, "mcp-fail", "Fail.", mcp_server.url)
    types = [e.type for e in events]
    assert "response.mcp_call.failed" in types
    assert types[-1] == "response.completed"
    call = next(item for item in events[-1].response.output if item.type == "mcp_call")
    assert call.status == "failed"
    assert call.error is not None
    assert call.output is None
    assert "results:" in events[-1].response.output_text


async def test_mcp_headers_reach_the_server_and_nowhere_else(
    client: AsyncOpenAI,
    gateway: RunningServer,
    mcp_server: McpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    tool = mcp_tool(
        mcp_server.url,
        require_approval="never",
        headers={"X-Api-Key": SECRET},
        authorization=SECRET + "-bearer",
    )
    response = await client.responses.create(model="mcp-add", input="2 + 3?", tools=[tool])  # type: ignore[list-item]
    assert response.output_text.endswith("The sum is 5")
    seen = mcp_server.headers()
    assert seen.get("x-api-key") == SECRET
    assert seen.get("authorization") == f"Bearer {SECRET}-bearer"
    async with httpx.AsyncClient() as http:
        stored = await http.get(
            f"{gateway.url}/v1/responses/{response.id}", headers={"Authorization": "Bearer sk-test"}
        )
        items = await http.get(
            f"{gateway.url}/v1/responses/{response.id}/input_items",
            headers={"Authorization": "Bearer sk-test"},
        )
    assert stored.status_code == 200
    assert items.status_code == 200
    assert SECRET not in stored.text
    assert SECRET not in items.text
    assert SECRET not in response.model_dump_json()
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


async def test_an_unlisted_server_is_a_400_before_any_connection(
    client: AsyncOpenAI, mcp_server: McpServer
) -> None:
    import openai

    before = mcp_server.listings()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(
            model="mcp-add",
            input="2 + 3?",
            tools=[mcp_tool(mcp_server.url + "-elsewhere")],  # type: ignore[list-item]
        )
    body: Any = caught.value.body
    assert body["code"] == "mcp_server_not_allowed"
    assert body["param"] == "tools[0].server_url"
    assert "mcp_servers" in body["message"]
    assert mcp_server.listings() == before


async def test_the_agents_sdk_hosted_mcp_tool_runs_through_the_gateway(
    gateway: RunningServer, mcp_server: McpServer
) -> None:
    agents = pytest.importorskip("agents", reason="needs openai-agents (the test extra)")
    async with httpx.AsyncClient() as http:
        sdk = AsyncOpenAI(
            base_url=gateway.url + "/v1", api_key="sk-test", http_client=http, max_retries=0
        )
        agent = agents.Agent(
            name="calc",
            instructions="Add with the calc server.",
            tools=[agents.HostedMCPTool(tool_config=mcp_tool(mcp_server.url,
                                                             require_approval="never"))],
            model=agents.OpenAIResponsesModel(model="mcp-add", openai_client=sdk),
        )  # fmt: skip
        result = await agents.Runner.run(
            agent, "What is 2 + 3?", run_config=agents.RunConfig(tracing_disabled=True)
        )
    assert str(result.final_output).endswith("The sum is 5")
    kinds = [type(item).__name__ for item in result.new_items]
    assert "MCPListToolsItem" in kinds


async def test_the_agents_sdk_answers_an_approval_request_and_the_call_runs(
    gateway: RunningServer, mcp_server: McpServer
) -> None:
    agents = pytest.importorskip("agents", reason="needs openai-agents (the test extra)")
    asked: list[str] = []

    def approve(request: Any) -> Any:
        asked.append(request.data.name)
        return {"approve": True}

    async with httpx.AsyncClient() as http:
        sdk = AsyncOpenAI(
            base_url=gateway.url + "/v1", api_key="sk-test", http_client=http, max_retries=0
        )
        agent = agents.Agent(
            name="calc",
            instructions="Add with the calc server.",
            tools=[agents.HostedMCPTool(tool_config=mcp_tool(mcp_server.url),
                                        on_approval_request=approve)],
            model=agents.OpenAIResponsesModel(model="mcp-add", openai_client=sdk),
        )  # fmt: skip
        result = await agents.Runner.run(
            agent, "What is 2 + 3?", run_config=agents.RunConfig(tracing_disabled=True)
        )
    assert asked == ["add"]
    assert str(result.final_output).endswith("The sum is 5")


async def test_a_listing_that_fails_ends_the_response_failed_without_asking_the_model(
    client: AsyncOpenAI, upstream: ScriptedChat, down_url: str
) -> None:
    upstream.requests.clear()
    events = await streamed(client, "mcp-add", "2 + 3?", down_url)
    types = [e.type for e in events]
    assert "response.mcp_list_tools.failed" in types
    assert types[-1] == "response.failed"
    error = events[-1].response.error
    assert error is not None
    assert LABEL in error.message
    assert upstream.requests == []


async def test_a_private_address_under_a_prefix_entry_is_refused_before_connecting(
    mcp_server: McpServer,
) -> None:
    """``http://`` allows any host but the private ones: loopback needs an entry naming it."""
    app = ResponsesMiddleware(ScriptedChat(SCRIPTS), mcp_servers=("http://",))
    before = mcp_server.listings()
    answer = await post_in_process(
        app,
        {
            "model": "mcp-add",
            "input": "2 + 3?",
            "tools": [mcp_tool(mcp_server.url, require_approval="never")],
        },
    )
    assert answer.status_code == 502
    assert "mcp_servers" in answer.json()["error"]["message"]
    assert mcp_server.listings() == before


def _slow_then_answer(request: Mapping[str, Any]) -> Reply:
    """Calls ``slow`` for a minute; answers with what it said once it returned."""
    if _tool_results(request):
        return _what_was_said(request)
    return Reply(
        [
            chunk({"role": "assistant", "tool_calls": [tool_call(
                0, call_id="call_slow", name=f"{LABEL}__slow", arguments='{"seconds": 60}')]}),
            chunk(finish="tool_calls"),
        ]
    )  # fmt: skip


async def test_a_client_that_leaves_during_an_mcp_call_ends_the_call_and_the_run(
    mcp_server: McpServer,
) -> None:
    records: list[Any] = []
    ended = threading.Event()

    def observe(record: Any) -> None:
        records.append(record)
        ended.set()

    upstream = ScriptedChat({"mcp-slow": _slow_then_answer})
    app = ResponsesMiddleware(
        upstream, keepalive_interval=0, mcp_servers=(mcp_server.url,), on_response=observe
    )
    body = {
        "model": "mcp-slow",
        "input": "Wait.",
        "stream": True,
        "tools": [mcp_tool(mcp_server.url, require_approval="never")],
    }
    with serve(app) as running:
        async with (
            httpx.AsyncClient() as http,
            http.stream("POST", running.url + "/v1/responses", json=body) as answer,
        ):
            async for line in answer.aiter_lines():
                if "response.mcp_call_arguments.done" in line:
                    break  # the call is running now: leave
        # The tool would answer in a minute; the run ends as soon as the client is gone.
        assert await anyio.to_thread.run_sync(ended.wait, 20)
    assert [r.status for r in records] == ["failed"]
    assert records[0].error["code"] == "client_disconnected"
    assert len(upstream.requests) == 1


async def test_an_mcp_call_past_mcp_timeout_fails_and_the_model_is_told(
    mcp_server: McpServer,
) -> None:
    upstream = ScriptedChat({"mcp-slow": _slow_then_answer})
    app = ResponsesMiddleware(
        upstream, keepalive_interval=0, mcp_servers=(mcp_server.url,), mcp_timeout=0.5
    )
    answer = await post_in_process(
        app,
        {
            "model": "mcp-slow",
            "input": "Wait.",
            "tools": [mcp_tool(mcp_server.url, require_approval="never")],
        },
    )
    response = check_response(answer.json())
    call = next(item for item in response["output"] if item["type"] == "mcp_call")
    assert call["status"] == "failed"
    assert "mcp_timeout" in str(call["error"])
    assert len(upstream.requests) == 2
    assert "mcp_timeout" in upstream.requests[1]["messages"][-1]["content"]


def _over_websocket(url: str, request: dict[str, Any]) -> list[dict[str, Any]]:
    with connect(url) as ws:
        ws.send(json.dumps({"type": "response.create", **request}))
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in TERMINAL:
            events.append(json.loads(ws.recv(timeout=30)))
    return events


async def test_the_tool_loop_runs_the_same_over_the_websocket_mode(
    gateway: RunningServer, mcp_server: McpServer
) -> None:
    url = gateway.url.replace("http://", "ws://") + "/v1/responses"
    request = {
        "model": "mcp-add",
        "input": "What is 2 + 3?",
        "tools": [mcp_tool(mcp_server.url, require_approval="never")],
    }
    events = await anyio.to_thread.run_sync(_over_websocket, url, request)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert [item["type"] for item in final["output"]] == [
        "mcp_list_tools", "message", "mcp_call", "message"]  # fmt: skip
    assert "response.mcp_call.completed" in [e["type"] for e in events]


async def test_a_background_response_runs_the_tool_loop_detached(
    client: AsyncOpenAI, mcp_server: McpServer
) -> None:
    started = await client.responses.create(
        model="mcp-add",
        input="What is 2 + 3?",
        tools=[mcp_tool(mcp_server.url, require_approval="never")],  # type: ignore[list-item]
        background=True,
    )
    assert started.status in ("queued", "in_progress")
    stream = await client.responses.retrieve(started.id, stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "response.completed"
    final = await client.responses.retrieve(started.id)
    assert [item.type for item in final.output] == [
        "mcp_list_tools", "message", "mcp_call", "message"]  # fmt: skip
    assert final.output_text.endswith("The sum is 5")


async def test_an_upstream_error_in_a_later_round_fails_the_stream_that_began(
    client: AsyncOpenAI, upstream: ScriptedChat, mcp_server: McpServer
) -> None:
    def _add_then_429(request: Mapping[str, Any]) -> Reply:
        if not _tool_results(request):
            return _add_then_answer(request)
        error = {"message": "Rate limit reached; try again in 2s.", "type": "requests",
                 "code": "rate_limit_exceeded", "param": None}  # fmt: skip
        return Reply(status=429, error={"error": error})

    upstream.scripts["mcp-429"] = _add_then_429
    events = await streamed(client, "mcp-429", "2 + 3?", mcp_server.url)
    assert events[-1].type == "response.failed"
    final = events[-1].response
    assert final.error is not None
    assert final.error.code == "rate_limit_exceeded"
    assert "try again in 2s" in final.error.message
    # What the first round did stays in the failed response.
    call = next(item for item in final.output if item.type == "mcp_call")
    assert call.output == "5"


class JsonAnswers:
    """A Chat app that answers every request with JSON, whatever its ``stream`` says (some
    backends do): the tool loop must carry such answers round after round."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def unstreamed() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body = json.loads(message["body"])
                body.pop("stream_options", None)
                message = {**message, "body": json.dumps({**body, "stream": False}).encode()}
            return message

        await self.app(scope, unstreamed, send)


@pytest.mark.parametrize("stream", [True, False])
async def test_json_answers_in_every_round_make_one_response(
    mcp_server: McpServer, stream: bool
) -> None:
    upstream = ScriptedChat(SCRIPTS)
    app = ResponsesMiddleware(
        JsonAnswers(upstream), keepalive_interval=0, mcp_servers=(mcp_server.url,)
    )
    body = {
        "model": "mcp-add",
        "input": "What is 2 + 3?",
        "stream": stream,
        "tools": [mcp_tool(mcp_server.url, require_approval="never")],
    }
    answer = await post_in_process(app, body)
    assert answer.status_code == 200
    content = answer.content
    response = check_stream(content).response if stream else check_response(answer.json())
    assert [item["type"] for item in response["output"]] == [
        "mcp_list_tools", "message", "mcp_call", "message"]  # fmt: skip
    assert response["output"][-1]["content"][0]["text"] == "The sum is 5"
    assert len(upstream.requests) == 2


async def test_an_approved_call_of_a_tool_no_longer_allowed_is_not_made_and_the_model_is_told(
    client: AsyncOpenAI, upstream: ScriptedChat, mcp_server: McpServer
) -> None:
    first = await client.responses.create(
        model="mcp-add",
        input="What is 2 + 3?",
        tools=[mcp_tool(mcp_server.url)],  # type: ignore[list-item]
    )
    asked = first.output[-1]
    calls = mcp_server.calls()
    upstream.requests.clear()
    second = await client.responses.create(
        model="echo",
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": asked.id, "approve": True}],
        tools=[mcp_tool(mcp_server.url, allowed_tools=["echo_headers"])],  # type: ignore[list-item]
    )
    assert mcp_server.calls() == calls
    call = second.output[0]
    assert call.type == "mcp_call"
    assert call.status == "failed"
    assert call.approval_request_id == asked.id
    assert "not offered" in second.output_text
