"""The fault matrix: every upstream fault, through the real gateway and through the middleware in process.

Gateway: uvicorn + ResponsesMiddleware + ProxyApp on 127.0.0.1, in front of the faulty
upstream in its own process (see conftest.py). In process: the faulty app wrapped directly by
the middleware, driven by a raw ASGI harness. For every fault a client that stays gets a
complete stream that passes the checker and ends with exactly one terminal event, or, for a
fault before any byte, an OpenAI-shaped HTTP error with the right status. Clients that leave
end their upstream request. Security: size limits, credentials in logs and error messages,
hop-by-hop and Content-Length headers.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx
import openai
import pytest

from stream_mw import ResponsesMiddleware
from tests.checker import CheckedStream, check_stream
from tests.faults.faulty_upstream import (
    FaultRaised,
    FaultyUpstream,
    after_finish_cuts,
    drop_plan,
    fault_model,
)
from tests.faults.gateway import (
    CLIENT_KEY,
    GATEWAY_KEY,
    MAX_ARGUMENT_BYTES,
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    Gateway,
    GatewayFactory,
)
from tests.faults.harness import (
    ServerProcess,
    asgi_call,
    assert_openai_error,
    parse_events,
    proc_status_kib,
    responses_body,
)

pytestmark = pytest.mark.timeout(60)

TIMEOUT = httpx.Timeout(15.0)
DROP_SEEDS = range(8)
AFTER_FINISH = after_finish_cuts()

# (fault, params, terminal status the client must see)
STREAM_FAULTS: list[tuple[str, dict[str, object], str]] = [
    ("ok", {}, "completed"),
    ("tool", {}, "completed"),
    ("garbage", {"kind": "json"}, "failed"),
    ("garbage", {"kind": "binary"}, "failed"),
    ("garbage", {"kind": "nosse"}, "failed"),
    ("raise", {"when": "after"}, "failed"),
    ("early_done", {}, "failed"),
    ("trunc_tool", {"end": "eof"}, "failed"),
    ("trunc_tool", {"end": "done"}, "failed"),
    ("trunc_tool", {"end": "length"}, "incomplete"),
    ("bigargs", {"size": 2 * MAX_ARGUMENT_BYTES}, "failed"),
    ("inband_error", {}, "failed"),
]
STREAM_IDS = [fault_model(f, **p) for f, p, _ in STREAM_FAULTS]

# (fault, params, HTTP status the client must see) before any byte of a stream
PRE_STREAM_FAULTS: list[tuple[str, dict[str, object], int]] = [
    ("status", {"code": 500, "ctype": "json"}, 500),
    ("status", {"code": 500, "ctype": "text"}, 500),
    ("status", {"code": 429, "ctype": "json"}, 429),
    ("status", {"code": 429, "ctype": "text"}, 429),
    ("status", {"code": 401, "ctype": "json"}, 401),
    ("raise", {"when": "before"}, 500),
    ("encoded", {}, 502),
]
PRE_STREAM_IDS = [fault_model(f, **p) for f, p, _ in PRE_STREAM_FAULTS]


def check_fault_stream(fault: str, body: bytes, status: str) -> CheckedStream:
    checked = check_stream(body)
    assert checked.status == status, (checked.status, checked.response.get("error"))
    if fault == "trunc_tool":
        (call,) = [i for i in checked.items if i.type == "function_call"]
        assert not call.done, "a truncated call got output_item.done"
        assert not call.arguments_done, "a truncated call got function_call_arguments.done"
        listed = [i for i in checked.response["output"] if i["type"] == "function_call"]
        assert [i["status"] for i in listed] == ["incomplete"]
    if fault == "bigargs":
        assert "max_argument_bytes" in checked.response["error"]["message"]
        assert not any(i.done for i in checked.items if i.type == "function_call")
    if fault in ("ok", "tool"):
        assert checked.done_marker
    return checked


def no_secret(text: str) -> None:
    assert GATEWAY_KEY not in text, "the configured upstream key reached the client"


async def stream_via(client: httpx.AsyncClient, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "input": "hello", "stream": True, **extra}
    response = await client.post("/v1/responses", json=body)
    no_secret(response.text + str(response.headers))
    return response


async def upstream_record(upstream: ServerProcess, tag: str) -> dict[str, Any]:
    """The faulty upstream's record of request ``tag``, once that request has ended."""
    async with httpx.AsyncClient(base_url=upstream.url, timeout=TIMEOUT) as up:
        return (await up.get(f"/_wait/{tag}")).json()  # type: ignore[no-any-return]


async def upstream_requests(upstream: ServerProcess) -> int:
    async with httpx.AsyncClient(base_url=upstream.url, timeout=TIMEOUT) as up:
        return int((await up.get("/_stats")).json()["requests"])


@pytest.fixture
async def client(gateway: Gateway) -> Any:
    # A new connection per request: after an upstream failure uvicorn closes the connection
    # (test_an_upstream_that_breaks_off_does_not_cost_the_client_its_keep_alive_connection),
    # which would turn a test's next request into an error unrelated to what it checks.
    async with httpx.AsyncClient(
        base_url=gateway.url,
        timeout=TIMEOUT,
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as c:
        yield c


# --- through the gateway (uvicorn + middleware + ProxyApp) -----------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "params", "status"), STREAM_FAULTS, ids=STREAM_IDS)
async def test_every_stream_fault_ends_with_exactly_one_terminal_event_over_the_gateway(
    client: httpx.AsyncClient, fault: str, params: dict[str, object], status: str
) -> None:
    response = await stream_via(client, fault_model(fault, **params))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    check_fault_stream(fault, response.content, status)


@pytest.mark.anyio
@pytest.mark.parametrize("seed", DROP_SEEDS)
async def test_a_connection_dropped_at_any_byte_ends_the_stream_cleanly_over_the_gateway(
    client: httpx.AsyncClient, seed: int
) -> None:
    response = await stream_via(client, fault_model("drop", seed=seed))
    assert response.status_code == 200
    checked = check_stream(response.content)
    _, cut, finish_end = drop_plan(seed)
    # After finish_reason the answer is whole: a drop there does not fail it.
    assert checked.status == ("failed" if cut < finish_end else "completed"), checked.response


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
@pytest.mark.parametrize("past", AFTER_FINISH.values(), ids=AFTER_FINISH.keys())
async def test_a_connection_dropped_after_finish_reason_completes_over_the_gateway(
    client: httpx.AsyncClient, past: int, stream: bool
) -> None:
    """Issue 11.1 and 11.2: a cut in the usage chunk or [DONE] failed a finished answer."""
    response = await stream_via(client, fault_model("drop", past=past), stream=stream)
    assert response.status_code == 200, response.text
    if stream:
        checked = check_stream(response.content)
        assert checked.status == "completed", checked.response
        assert checked.output_text == "".join(f"w{i} " for i in range(20))
    else:
        assert response.json()["status"] == "completed"


@pytest.mark.anyio
async def test_an_upstream_that_stalls_mid_stream_fails_the_response_after_the_read_timeout(
    client: httpx.AsyncClient, upstream: ServerProcess
) -> None:
    response = await stream_via(client, fault_model("stall", after=2, tag="stall-mid"))
    assert response.status_code == 200
    checked = check_stream(response.content)
    assert checked.status == "failed"
    assert checked.output_text == "w0 w1 "
    record = await upstream_record(upstream, "stall-mid")
    assert record["outcome"] == "disconnected"


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
@pytest.mark.parametrize(("fault", "params", "status"), PRE_STREAM_FAULTS, ids=PRE_STREAM_IDS)
async def test_a_fault_before_the_stream_gets_an_openai_error_with_the_upstream_status(
    client: httpx.AsyncClient, fault: str, params: dict[str, object], status: int, stream: bool
) -> None:
    response = await stream_via(client, fault_model(fault, **params), stream=stream)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = assert_openai_error(response.content)
    if status == 429:
        assert "try again in" in error["message"]


@pytest.mark.anyio
async def test_an_upstream_that_stalls_before_answering_gets_a_504(
    client: httpx.AsyncClient,
) -> None:
    response = await stream_via(client, fault_model("stall", after=-1))
    assert response.status_code == 504, response.text
    assert_openai_error(response.content)


@pytest.mark.anyio
async def test_an_unreachable_upstream_gets_a_502() -> None:
    # A port that was free a moment ago: nothing listens there.
    import socket

    from stream_mw.upstreams.proxy import ProxyApp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = ProxyApp(f"http://127.0.0.1:{port}/v1", api_key=GATEWAY_KEY, connect_timeout=2)
    app = ResponsesMiddleware(proxy)
    async with proxy:
        result = await asgi_call(app, json.dumps(responses_body("ok")).encode())
    assert result.error is None
    assert result.status == 502
    assert_openai_error(result.body)
    no_secret(result.body.decode())


# --- clients that leave --------------------------------------------------------------------


async def leave_after(client: httpx.AsyncClient, model: str, events: int) -> int:
    """Read ``events`` SSE events (0: only the headers), then hang up. Returns events read."""
    seen = 0
    body = {"model": model, "input": "hello", "stream": True}
    async with client.stream("POST", "/v1/responses", json=body) as response:
        assert response.status_code == 200
        if events:
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    seen += 1
                    if seen >= events:
                        break
    return seen


@pytest.mark.anyio
async def test_every_client_that_disconnects_mid_stream_ends_its_upstream_request(
    gateway: Gateway, upstream: ServerProcess
) -> None:
    rng = random.Random(6)
    plans = []
    for i in range(16):
        tag = f"leave-{i}"
        if i % 2:
            model = fault_model("ok", chunks=400, interval=5, tag=tag)
        else:
            model = fault_model("stall", after=rng.randrange(0, 4), tag=tag)
        plans.append((tag, model, rng.randrange(0, 6)))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=TIMEOUT) as client:
        await asyncio.gather(*(leave_after(client, model, n) for _, model, n in plans))
    async with httpx.AsyncClient(base_url=upstream.url, timeout=TIMEOUT) as up:
        records = await asyncio.gather(*(up.get(f"/_wait/{tag}") for tag, _, _ in plans))
    outcomes = {r.json()["tag"]: r.json()["outcome"] for r in records}
    assert outcomes == {tag: "disconnected" for tag, _, _ in plans}


@pytest.mark.anyio
async def test_a_client_that_gives_up_before_the_upstream_answers_ends_the_upstream_request(
    gateway: Gateway, upstream: ServerProcess
) -> None:
    body = responses_body("stall", after=-1, tag="leave-early")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=httpx.Timeout(0.2)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/responses", json=body)
    record = await upstream_record(upstream, "leave-early")
    assert record["outcome"] == "disconnected"


# --- the openai SDK against the gateway ----------------------------------------------------


@pytest.fixture
async def sdk(gateway: Gateway) -> Any:
    async with openai.AsyncOpenAI(
        base_url=gateway.url + "/v1",
        api_key=CLIENT_KEY,
        max_retries=0,
        _strict_response_validation=True,
    ) as c:
        yield c


SDK_STREAMS = [
    ("ok", {}, "response.completed"),
    ("tool", {}, "response.completed"),
    ("drop", {"seed": 1}, "response.failed"),
    ("early_done", {}, "response.failed"),
    ("trunc_tool", {"end": "length"}, "response.incomplete"),
    ("trunc_tool", {"end": "eof"}, "response.failed"),
    ("stall", {"after": 1}, "response.failed"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fault", "params", "terminal"),
    SDK_STREAMS,
    ids=[fault_model(f, **p) for f, p, _ in SDK_STREAMS],
)
async def test_the_openai_sdk_sees_one_terminal_event_for_every_fault(
    sdk: openai.AsyncOpenAI, fault: str, params: dict[str, object], terminal: str
) -> None:
    stream = await sdk.responses.create(model=fault_model(fault, **params), input="hi", stream=True)
    types = [event.type async for event in stream]
    terminals = [
        t for t in types if t in ("response.completed", "response.failed", "response.incomplete")
    ]
    assert terminals == [terminal]
    assert types[-1] == terminal
    if fault == "trunc_tool":
        assert "response.function_call_arguments.delta" in types
        assert "response.function_call_arguments.done" not in types
        assert types.count("response.output_item.done") == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("model", "error", "status"),
    [
        (fault_model("status", code=429), openai.RateLimitError, 429),
        (fault_model("status", code=500, ctype="text"), openai.InternalServerError, 500),
        (fault_model("stall", after=-1), openai.APIStatusError, 504),
    ],
)
async def test_the_openai_sdk_raises_the_upstream_status_for_faults_before_the_stream(
    sdk: openai.AsyncOpenAI, model: str, error: type[openai.APIStatusError], status: int
) -> None:
    with pytest.raises(error) as raised:
        await sdk.responses.create(model=model, input="hi", stream=True)
    assert raised.value.status_code == status
    no_secret(str(raised.value) + raised.value.response.text)


# --- security --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_100_mb_line_fails_the_response_naming_max_event_bytes_with_bounded_memory(
    start_gateway: GatewayFactory, upstream: ServerProcess
) -> None:
    with start_gateway() as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=httpx.Timeout(60.0)) as client:
            warm = await stream_via(client, fault_model("ok"))
            check_stream(warm.content)
            before = proc_status_kib(gateway.pid, "VmHWM")
            response = await stream_via(client, fault_model("hugeline", tag="huge-stream"))
            checked = check_stream(response.content)
            assert checked.status == "failed"
            assert "max_event_bytes" in checked.response["error"]["message"]
            plain = await client.post(
                "/v1/responses", json=responses_body("hugeline", stream=False, tag="huge-plain")
            )
            assert plain.status_code >= 500, plain.text
            assert "max_event_bytes" in assert_openai_error(plain.content)["message"]
            as_json = await client.post(
                "/v1/responses",
                json=responses_body("hugeline", stream=False, ctype="json", tag="huge-json"),
            )
            assert as_json.status_code >= 500, as_json.text
            assert "max_event_bytes" in assert_openai_error(as_json.content)["message"]
            grown_mib = (proc_status_kib(gateway.pid, "VmHWM") - before) / 1024
            # The default max_event_bytes is 8 MiB; holding one 100 MB line would be > 95 MiB.
            assert grown_mib < 64, f"gateway peak RSS grew {grown_mib:.0f} MiB"
            after = await stream_via(client, fault_model("ok"))
            assert check_stream(after.content).status == "completed"
    # Failing the response also ends the upstream request: nobody reads the rest.
    for tag in ("huge-stream", "huge-plain"):
        record = await upstream_record(upstream, tag)
        assert record["outcome"] == "disconnected", record


@pytest.mark.anyio
async def test_a_stream_past_max_response_bytes_fails_naming_it_and_ends_the_upstream_request(
    client: httpx.AsyncClient, upstream: ServerProcess
) -> None:
    # Not in STREAM_FAULTS: the checker takes half a minute over a body this size.
    size = 4 * MAX_RESPONSE_BYTES
    streamed = await stream_via(client, fault_model("longtext", size=size, tag="long-stream"))
    last = parse_events(streamed.content)[-1]
    assert last["type"] == "response.failed"
    assert "max_response_bytes" in last["response"]["error"]["message"]
    plain = await client.post(
        "/v1/responses",
        json=responses_body("longtext", stream=False, size=size, tag="long-plain"),
    )
    assert plain.status_code == 502, plain.text
    assert "max_response_bytes" in assert_openai_error(plain.content)["message"]
    for tag in ("long-stream", "long-plain"):
        record = await upstream_record(upstream, tag)
        assert record["outcome"] == "disconnected", record


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
async def test_an_upstream_head_with_too_many_fields_gets_a_502_naming_the_limit(
    client: httpx.AsyncClient, stream: bool
) -> None:
    fine = await stream_via(client, fault_model("headers", count=90), stream=stream)
    assert fine.status_code == 200, fine.text
    response = await stream_via(client, fault_model("headers", count=150), stream=stream)
    assert response.status_code == 502, response.text
    error = assert_openai_error(response.content)
    assert error["code"] == "upstream_invalid_response"
    assert "more than 100 header fields" in error["message"]


@pytest.mark.anyio
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_request_body_over_the_limit_gets_413_and_never_reaches_the_upstream(
    client: httpx.AsyncClient, upstream: ServerProcess, chunked: bool
) -> None:
    before = await upstream_requests(upstream)
    raw = json.dumps({"model": "ok", "input": "x" * (MAX_REQUEST_BYTES + 10)}).encode()

    async def pieces() -> Any:
        for i in range(0, len(raw), 65536):
            yield raw[i : i + 65536]

    response = await client.post(
        "/v1/responses",
        content=pieces() if chunked else raw,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert_openai_error(response.content)
    assert await upstream_requests(upstream) == before


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("model", "stream"),
    [
        (fault_model("status", code=401, ctype="json", echo=1, tag="echo-401"), True),
        (fault_model("status", code=500, ctype="text", echo=1, tag="echo-500"), False),
        (fault_model("status", code=429, ctype="json", echo=1, tag="echo-429"), False),
        (fault_model("inband_error", echo=1, tag="echo-inband"), True),
        (fault_model("inband_error", echo=1, tag="echo-inband-plain"), False),
    ],
)
async def test_upstream_errors_never_leak_the_configured_upstream_key(
    client: httpx.AsyncClient, upstream: ServerProcess, model: str, stream: bool
) -> None:
    response = await client.post(
        "/v1/responses", json={"model": model, "input": "hi", "stream": stream}
    )
    # The upstream did receive the key and echoed it into its error message.
    tag = model.rsplit("tag=", 1)[1]
    record = await upstream_record(upstream, tag)
    assert record["headers"]["authorization"] == f"Bearer {GATEWAY_KEY}"
    assert GATEWAY_KEY not in response.text
    assert GATEWAY_KEY not in str(response.headers)
    assert "upstream" in response.text or "model crashed" in response.text


async def post_all(client: httpx.AsyncClient, models: list[str]) -> None:
    for model in models:
        for stream in (True, False):
            await client.post(
                "/v1/responses",
                json={"model": model, "input": "hi", "stream": stream},
                headers={"x-api-key": CLIENT_KEY, "api-key": CLIENT_KEY},
            )


@pytest.mark.anyio
async def test_no_authorization_value_or_api_key_appears_in_debug_logs(
    client: httpx.AsyncClient, gateway: Gateway
) -> None:
    offset = gateway.log_file.stat().st_size
    models = ["ok", "tool", "status;code=401", "status;code=500;ctype=text", "inband_error"]
    await post_all(client, [*models, "raise;when=after", "drop;seed=3", "garbage;kind=binary"])
    log = gateway.log_file.read_text()[offset:]
    # The capture works: the middleware and the proxy logged at DEBUG.
    assert "\nstream_mw DEBUG " in "\n" + log, log[:2000]
    assert "\nstream_mw DEBUG upstream request POST http://" in log, log[:2000]
    assert CLIENT_KEY not in log
    assert GATEWAY_KEY not in log
    assert CLIENT_KEY not in gateway.stderr
    assert GATEWAY_KEY not in gateway.stderr


@pytest.mark.anyio
async def test_an_upstream_error_quoting_the_upstream_key_does_not_put_it_in_the_logs(
    client: httpx.AsyncClient, gateway: Gateway
) -> None:
    offset = gateway.log_file.stat().st_size
    models = ["status;code=401;echo=1", "status;code=500;ctype=text;echo=1", "inband_error;echo=1"]
    await post_all(client, models)
    log = gateway.log_file.read_text()[offset:]
    assert "upstream refused the request" in log or "model crashed" in log, log[:2000]
    assert GATEWAY_KEY not in log


@pytest.mark.anyio
async def test_stored_responses_are_visible_only_to_the_tenant_that_created_them(
    gateway: Gateway,
) -> None:
    def as_tenant(key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=gateway.url, timeout=TIMEOUT, headers={"authorization": f"Bearer {key}"}
        )

    async with as_tenant(CLIENT_KEY) as owner, as_tenant("sk-another-tenant") as other:
        created = await owner.post(
            "/v1/responses", json={"model": "ok", "input": "remember me", "store": True}
        )
        assert created.status_code == 200, created.text
        rid = created.json()["id"]
        assert (await owner.get(f"/v1/responses/{rid}")).status_code == 200
        for method, path in (
            ("GET", f"/v1/responses/{rid}"),
            ("GET", f"/v1/responses/{rid}/input_items"),
            ("DELETE", f"/v1/responses/{rid}"),
        ):
            foreign = await other.request(method, path)
            assert foreign.status_code == 404, (method, path, foreign.text)
            assert_openai_error(foreign.content)
        chained = await other.post(
            "/v1/responses", json={"model": "ok", "input": "hi", "previous_response_id": rid}
        )
        assert chained.status_code == 404, chained.text
        assert (await owner.get(f"/v1/responses/{rid}")).status_code == 200


HOP_BY_HOP_REQUEST = {
    "connection": "keep-alive, x-hop-marker",
    "x-hop-marker": "must not be forwarded",
    "keep-alive": "timeout=5",
    "te": "trailers",
    "proxy-authorization": "Basic c2VjcmV0",
}


@pytest.mark.anyio
async def test_hop_by_hop_request_headers_do_not_reach_the_upstream(
    client: httpx.AsyncClient, upstream: ServerProcess
) -> None:
    response = await client.post(
        "/v1/responses",
        json=responses_body("ok", tag="hop-request"),
        headers=HOP_BY_HOP_REQUEST,
    )
    assert response.status_code == 200
    record = await upstream_record(upstream, "hop-request")
    seen = record["headers"]
    for name in ("x-hop-marker", "keep-alive", "te", "proxy-authorization"):
        assert name not in seen, (name, seen)
    assert seen.get("connection", "keep-alive") == "keep-alive"
    # The translated body is not the client's: its length is the upstream's own, exactly.
    assert int(seen["content-length"]) == record["body_bytes"]


@pytest.mark.anyio
async def test_a_rewritten_json_body_carries_its_own_content_length_and_no_hop_by_hop_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/responses", json=responses_body("json", stream=False))
    assert response.status_code == 200, response.text
    assert json.loads(response.content)["output"][0]["content"][0]["text"] == (
        "a complete non-streamed answer"
    )
    assert int(response.headers["content-length"]) == len(response.content)
    for name in ("keep-alive", "proxy-authenticate"):
        assert name not in response.headers
    streamed = await stream_via(client, fault_model("json"))
    assert "content-length" not in streamed.headers
    assert check_stream(streamed.content).status == "completed"


def h11_exchange(port: int, models: list[str]) -> list[int | None]:
    """POST each model on ONE keep-alive connection; the status of each (None: no answer)."""
    import socket

    import h11

    statuses: list[int | None] = []
    conn = h11.Connection(h11.CLIENT)
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        for model in models:
            body = json.dumps({"model": model, "input": "hi", "stream": True}).encode()
            headers = [
                ("host", "127.0.0.1"),
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
            ]
            try:
                sock.sendall(
                    conn.send(h11.Request(method="POST", target="/v1/responses", headers=headers))
                )
                sock.sendall(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            except OSError:
                statuses.append(None)
                break
            status = None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    try:
                        conn.receive_data(sock.recv(65536))
                    except OSError:
                        conn.receive_data(b"")
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            if not isinstance(event, h11.EndOfMessage) or conn.our_state is h11.MUST_CLOSE:
                statuses.append(None)
                break
            statuses.append(status)
            conn.start_next_cycle()
    return statuses + [None] * (len(models) - len(statuses))


def test_an_upstream_that_breaks_off_does_not_cost_the_client_its_keep_alive_connection(
    gateway: Gateway,
) -> None:
    # ProxyApp reports a broken upstream as UpstreamError; the stream already ended with
    # response.failed. Re-raising it makes uvicorn drop the client's connection without
    # 'Connection: close', so the client's next request on it fails.
    models = ["ok", "drop;seed=1", "ok", "raise;when=after", "early_done", "ok"]
    assert h11_exchange(gateway.port, models) == [200] * len(models)


# --- in process: the faulty app wrapped directly ---------------------------------------------


def in_process(upstream: FaultyUpstream, **settings: Any) -> ResponsesMiddleware:
    return ResponsesMiddleware(
        upstream,
        max_argument_bytes=MAX_ARGUMENT_BYTES,
        max_response_bytes=MAX_RESPONSE_BYTES,
        keepalive_interval=0,
        **settings,
    )


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "params", "status"), STREAM_FAULTS, ids=STREAM_IDS)
async def test_every_stream_fault_ends_with_exactly_one_terminal_event_in_process(
    fault: str, params: dict[str, object], status: str
) -> None:
    app = in_process(FaultyUpstream())
    result = await asgi_call(app, json.dumps(responses_body(fault, **params)).encode())
    assert result.status == 200
    assert result.complete
    check_fault_stream(fault, result.body, status)
    if fault == "raise":
        # Re-raised after the clean end of the body, so the server logs it.
        assert isinstance(result.error, FaultRaised)
    else:
        assert result.error is None


@pytest.mark.anyio
@pytest.mark.parametrize("seed", DROP_SEEDS)
async def test_an_app_that_returns_mid_body_ends_the_stream_cleanly_in_process(seed: int) -> None:
    app = in_process(FaultyUpstream())
    result = await asgi_call(app, json.dumps(responses_body("drop", seed=seed)).encode())
    assert result.complete
    assert result.error is None
    checked = check_stream(result.body)
    _, cut, finish_end = drop_plan(seed)
    assert checked.status == ("failed" if cut < finish_end else "completed")


@pytest.mark.anyio
@pytest.mark.parametrize("past", AFTER_FINISH.values(), ids=AFTER_FINISH.keys())
async def test_an_app_that_returns_after_finish_reason_completes_in_process(past: int) -> None:
    app = in_process(FaultyUpstream())
    body = responses_body("drop", past=past)
    result = await asgi_call(app, json.dumps(body).encode())
    assert result.complete
    assert check_stream(result.body).status == "completed"


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "params", "status"), PRE_STREAM_FAULTS, ids=PRE_STREAM_IDS)
async def test_a_fault_before_the_stream_gets_an_openai_error_in_process(
    fault: str, params: dict[str, object], status: int
) -> None:
    app = in_process(FaultyUpstream())
    result = await asgi_call(app, json.dumps(responses_body(fault, **params)).encode())
    assert result.status == status
    assert result.complete
    assert_openai_error(result.body)
    if fault == "raise":
        assert isinstance(result.error, FaultRaised)


@pytest.mark.anyio
async def test_a_100_mb_line_fails_naming_max_event_bytes_and_stops_the_app_in_process() -> None:
    upstream = FaultyUpstream()
    app = in_process(upstream)
    result = await asgi_call(app, json.dumps(responses_body("hugeline", tag="huge")).encode())
    checked = check_stream(result.body)
    assert checked.status == "failed"
    assert "max_event_bytes" in checked.response["error"]["message"]
    record = await upstream.wait("huge", timeout=5)
    assert record is not None
    assert record.outcome in ("disconnected", "cancelled"), record
    # 64 KiB pieces: stopping at the 8 MiB limit, not after 100 MB.
    assert record.chunks_sent < 8 * 1024 * 1024 // (64 * 1024) * 2


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
async def test_an_oversized_upstream_json_body_is_not_read_to_its_end_in_process(
    stream: bool,
) -> None:
    # A JSON (not SSE) upstream body over max_event_bytes: the answer is an error either
    # way, so reading the other ~90 MB (or an endless body) only wastes the upstream's work
    # and delays the client's error until the upstream stops by itself.
    upstream = FaultyUpstream()
    app = in_process(upstream)
    body = responses_body("hugeline", stream=stream, ctype="json", tag="huge-json")
    result = await asgi_call(app, json.dumps(body).encode())
    assert result.status >= 500
    assert "max_event_bytes" in assert_openai_error(result.body)["message"]
    record = await upstream.wait("huge-json", timeout=5)
    assert record is not None
    assert record.outcome in ("disconnected", "cancelled"), record
    assert record.chunks_sent < 8 * 1024 * 1024 // (64 * 1024) * 2


@pytest.mark.anyio
@pytest.mark.parametrize("leave_after", [0, 1, 2, 3, 5, 8])
@pytest.mark.parametrize("fault", ["stall", "ok"])
async def test_a_client_leaving_cancels_the_wrapped_app_in_process(
    fault: str, leave_after: int
) -> None:
    upstream = FaultyUpstream()
    app = in_process(upstream)
    params: dict[str, object] = (
        {"after": 10} if fault == "stall" else {"chunks": 100_000, "interval": 1}
    )
    before = len(asyncio.all_tasks())
    result = await asyncio.wait_for(
        asgi_call(
            app,
            json.dumps(responses_body(fault, tag="gone", **params)).encode(),
            disconnect_after=leave_after,
        ),
        timeout=10,
    )
    assert result.returned
    assert result.error is None
    record = await upstream.wait("gone", timeout=5)
    assert record is not None
    assert record.outcome in ("disconnected", "cancelled"), record
    # A cancelled task finishes on a later loop turn than the one it was cancelled in (on
    # Python 3.12+ one turn later than before): give the loop a bounded number of turns, then
    # require every task the request started to be gone.
    for _ in range(50):
        if len(asyncio.all_tasks()) == before:
            break
        await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before


@pytest.mark.anyio
async def test_the_default_request_limit_answers_413_in_process() -> None:
    upstream = FaultyUpstream()
    app = ResponsesMiddleware(upstream)
    limit = app.settings.max_request_bytes
    raw = b'{"model":"ok","input":"' + b"x" * limit + b'"}'
    result = await asgi_call(app, [raw[i : i + (1 << 20)] for i in range(0, len(raw), 1 << 20)])
    assert result.status == 413
    assert "max_request_bytes" in assert_openai_error(result.body)["message"]
    assert upstream.records == {}
