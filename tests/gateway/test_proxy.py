"""ProxyApp: a streaming reverse proxy to an OpenAI-compatible server, over real sockets.

Upstreams here are tiny ASGI apps served by uvicorn in a thread (``tests.e2e.conftest.serve``);
they signal what they saw with ``threading.Event`` so a test can wait on it without sleeping.
Streaming is proven by lock-step: the upstream withholds its second piece until the client
has received the first, so a proxy that buffered would never deliver it (and the test fails
on its timeout instead of hanging).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.types import Receive, Scope, Send

from stream_mw import ConfigurationError, ResponsesMiddleware
from stream_mw.upstreams import ProxyApp, ScriptedBackend, Turn
from tests.checker import check_stream
from tests.e2e.conftest import serve
from tests.gateway.helpers import breaking_upstream, resetting_upstream

WAIT = 10.0

App = Callable[[Scope, Receive, Send], Any]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def wait_for(event: threading.Event) -> bool:
    return await anyio.to_thread.run_sync(event.wait, WAIT)


@pytest.mark.parametrize(
    ("base_url", "path", "target"),
    [
        ("http://h:8000/v1", "/v1/chat/completions", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1/", "/v1/models", "http://h:8000/v1/models"),
        ("http://h:8000", "/v1/chat/completions", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/", "/v1/models/llama", "http://h:8000/v1/models/llama"),
        ("https://h/api/v1", "/v1/chat/completions", "https://h/api/v1/chat/completions"),
        (
            "https://h/v1beta/openai",
            "/v1/chat/completions",
            "https://h/v1beta/openai/chat/completions",
        ),
        ("http://h:11434/v1", "/chat/completions", "http://h:11434/v1/chat/completions"),
    ],
)
def test_incoming_paths_map_onto_the_base_url_like_the_openai_sdk(
    base_url: str, path: str, target: str
) -> None:
    assert str(ProxyApp(base_url).target_url(path)) == target


@pytest.mark.parametrize(
    "bad", ["notaurl", "ftp://h/v1", "http://", "localhost:8000/v1", "http://h/v1#part"]
)
def test_a_bad_base_url_is_refused_with_an_example_of_a_good_one(bad: str) -> None:
    with pytest.raises(ConfigurationError, match=r"upstream URL"):
        ProxyApp(bad)


def test_credentials_in_the_base_url_are_not_shown() -> None:
    assert ProxyApp("http://user:secret@h:8000/v1").base_url == "http://h:8000/v1"


@pytest.mark.anyio
async def test_responses_stream_down_chunk_by_chunk() -> None:
    received_first = threading.Event()

    async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        await wait_for(received_first)
        await send({"type": "http.response.body", "body": b"data: two\n\n", "more_body": False})

    with serve(upstream) as up, serve(ProxyApp(up.url + "/v1")) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            with anyio.fail_after(WAIT):
                async with client.stream("POST", "/v1/chat/completions", json={}) as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"] == "text/event-stream"
                    pieces = response.aiter_raw()
                    assert await pieces.__anext__() == b"data: one\n\n"
                    received_first.set()
                    assert b"".join([p async for p in pieces]) == b"data: two\n\n"


@pytest.mark.anyio
async def test_request_bodies_stream_up_as_they_arrive() -> None:
    upstream_got_first = threading.Event()
    seen: list[bytes] = []

    async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        seen.append(dict(scope["headers"]).get(b"content-length", b"?"))
        while True:
            message = await receive()
            if message.get("body"):
                seen.append(message["body"])
                upstream_got_first.set()
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def body() -> AsyncIterator[bytes]:
        yield b'{"messages": '
        assert await wait_for(upstream_got_first), "the first piece never reached the upstream"
        yield b"[]}"

    with serve(upstream) as up, serve(ProxyApp(up.url)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            with anyio.fail_after(WAIT):
                response = await client.post(
                    "/v1/chat/completions", content=body(), headers={"content-length": "16"}
                )
    assert response.text == "ok"
    # The client's Content-Length went along, so the upstream saw no chunked encoding.
    assert seen[0] == b"16"
    assert b"".join(seen[1:]) == b'{"messages": []}'


@pytest.mark.anyio
async def test_a_client_that_leaves_closes_the_upstream_response() -> None:
    upstream_saw_disconnect = threading.Event()

    async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        if (await receive())["type"] == "http.disconnect":
            upstream_saw_disconnect.set()

    with serve(upstream) as up, serve(ProxyApp(up.url)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            with anyio.fail_after(WAIT):
                async with client.stream("POST", "/v1/chat/completions", json={}) as response:
                    await response.aiter_raw().__anext__()
        assert await wait_for(upstream_saw_disconnect)


@pytest.mark.anyio
async def test_a_client_that_leaves_before_the_first_byte_closes_the_upstream_request() -> None:
    upstream_saw_disconnect = threading.Event()

    async def thinking(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        # A model thinking before its first token: nothing is sent until the client leaves.
        if (await receive())["type"] == "http.disconnect":
            upstream_saw_disconnect.set()

    with serve(thinking) as up, serve(ProxyApp(up.url)) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=0.5) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/v1/chat/completions", json={})
        assert await wait_for(upstream_saw_disconnect)


def recording_upstream(
    seen: list[dict[str, str]], response_headers: list[tuple[bytes, bytes]]
) -> App:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        seen.append(
            {k.decode(): v.decode() for k, v in scope["headers"]}
            | {":path": scope["path"], ":query": scope["query_string"].decode()}
        )
        headers = [(b"content-type", b"application/json"), *response_headers]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"object": "list", "data": []}'})

    return app


HOP_BY_HOP_RESPONSE = [
    (b"connection", b"x-private-hop"),
    (b"x-private-hop", b"1"),
    (b"keep-alive", b"timeout=5"),
    (b"proxy-authenticate", b"Basic"),
    (b"x-upstream", b"kept"),
]


@pytest.mark.anyio
async def test_hop_by_hop_headers_are_dropped_both_ways_and_the_client_key_forwarded() -> None:
    seen: list[dict[str, str]] = []
    upstream = recording_upstream(seen, HOP_BY_HOP_RESPONSE)
    with serve(upstream) as up:
        # ASGITransport shows the proxy's own response headers, before a server rewrites them.
        async with (
            ProxyApp(up.url + "/v1") as proxy,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=proxy), base_url="http://proxy"
            ) as client,
        ):
            response = await client.get(
                "/v1/models?limit=2",
                headers={
                    "authorization": "Bearer client-key",
                    "connection": "x-client-hop",
                    "x-client-hop": "1",
                    "te": "trailers",
                    "proxy-authorization": "Basic abc",
                    "x-custom": "kept",
                },
            )
    assert response.status_code == 200
    [up] = seen
    assert up[":path"] == "/v1/models"
    assert up[":query"] == "limit=2"
    assert up["authorization"] == "Bearer client-key"
    assert up["x-custom"] == "kept"
    for name in ("x-client-hop", "te", "proxy-authorization"):
        assert name not in up, name
    assert up.get("connection") in (None, "keep-alive")
    assert response.headers["x-upstream"] == "kept"
    for name in ("x-private-hop", "keep-alive", "proxy-authenticate", "server", "date"):
        assert name not in response.headers, name


@pytest.mark.anyio
async def test_a_cookie_one_user_got_from_the_upstream_never_goes_up_with_another_users_request() -> (
    None
):
    seen: list[dict[str, str]] = []
    upstream = recording_upstream(seen, [(b"set-cookie", b"session=user-a; Path=/")])
    with serve(upstream) as up:
        async with (
            ProxyApp(up.url + "/v1") as proxy,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=proxy), base_url="http://proxy"
            ) as client,
        ):
            first = await client.get("/v1/models", headers={"authorization": "Bearer a"})
            # The second user's own client keeps no cookies either: only the proxy could.
            client.cookies.clear()
            await client.get("/v1/models", headers={"authorization": "Bearer b"})
    # The cookie reaches the user it was meant for, and is not kept by the proxy.
    assert first.headers["set-cookie"] == "session=user-a; Path=/"
    assert [request.get("cookie") for request in seen] == [None, None]


@pytest.mark.anyio
async def test_a_configured_key_replaces_the_clients() -> None:
    backend = ScriptedBackend([Turn.text("hi")])
    with serve(backend) as up:
        async with ProxyApp(up.url + "/v1", api_key="sk-configured") as proxy:
            transport = httpx.ASGITransport(app=proxy)
            async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
                response = await client.post(
                    "/v1/chat/completions",
                    json={"model": "m", "messages": [], "stream": True},
                    headers={"authorization": "Bearer client-key"},
                )
    assert response.status_code == 200
    assert "data: [DONE]" in response.text
    assert backend.requests[0].headers["authorization"] == "Bearer sk-configured"


@pytest.mark.anyio
async def test_paths_other_than_chat_and_models_are_not_forwarded() -> None:
    async with ProxyApp("http://127.0.0.1:9/v1") as proxy:
        transport = httpx.ASGITransport(app=proxy)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            response = await client.post("/v1/embeddings", json={})
            long = await client.get("/v1/" + "x" * 60_000)
    assert response.status_code == 404
    assert "not forwarded" in response.json()["error"]["message"]
    # A path is quoted clipped: a long one is not echoed back whole.
    assert long.status_code == 404
    assert len(long.json()["error"]["message"]) < 200


@pytest.mark.anyio
async def test_an_unreachable_upstream_is_a_502_naming_it_but_not_the_key() -> None:
    port = free_port()
    async with ProxyApp(f"http://127.0.0.1:{port}/v1", api_key="sk-secret-key") as proxy:
        transport = httpx.ASGITransport(app=proxy)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            response = await client.post("/v1/chat/completions", json={"messages": []})
    assert response.status_code == 502
    error = response.json()["error"]
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in error["message"]
    assert error["code"] == "upstream_unreachable"
    assert "sk-secret-key" not in response.text


@pytest.mark.anyio
async def test_an_upstream_silent_past_the_read_timeout_is_a_504() -> None:
    release = threading.Event()

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await wait_for(release)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve(silent) as up:
        try:
            async with ProxyApp(up.url, read_timeout=0.2) as proxy:
                transport = httpx.ASGITransport(app=proxy)
                async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
                    response = await client.post("/v1/chat/completions", json={})
        finally:
            release.set()
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert up.url in response.json()["error"]["message"]


FIRST_EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "Hal"}}]}\n\n'


@pytest.mark.anyio
async def test_an_upstream_breaking_off_between_events_gets_an_in_band_error_naming_it() -> None:
    with serve(breaking_upstream(FIRST_EVENT)) as up:
        async with ProxyApp(up.url + "/v1") as proxy:
            transport = httpx.ASGITransport(app=proxy)
            async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
                response = await client.post("/v1/chat/completions", json={})
    assert response.status_code == 200
    assert response.content.startswith(FIRST_EVENT)
    last = response.content[len(FIRST_EVENT) :]
    assert last.startswith(b"data: ")
    assert last.endswith(b"\n\n")
    error = json.loads(last[len(b"data: ") :])["error"]
    assert error["message"].startswith(f"upstream {up.url}/v1/chat/completions broke off")


@pytest.mark.anyio
async def test_an_upstream_breaking_off_mid_event_leaves_the_unfinished_event_alone() -> None:
    with serve(breaking_upstream(FIRST_EVENT, b'data: {"choi')) as up:
        async with ProxyApp(up.url + "/v1") as proxy:
            transport = httpx.ASGITransport(app=proxy)
            async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
                response = await client.post("/v1/chat/completions", json={})
    assert response.content == FIRST_EVENT + b'data: {"choi'


@pytest.mark.anyio
async def test_behind_the_middleware_a_broken_upstream_fails_the_response_naming_it() -> None:
    with serve(breaking_upstream(FIRST_EVENT)) as up:
        async with ProxyApp(up.url + "/v1") as proxy:
            # raise_app_exceptions stays on: nothing is raised to the server.
            transport = httpx.ASGITransport(app=ResponsesMiddleware(proxy))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                response = await client.post(
                    "/v1/responses", json={"model": "m", "input": "hi", "stream": True}
                )
    terminal = [
        json.loads(line[6:])
        for line in response.text.splitlines()
        if line.startswith("data: {") and '"response.failed"' in line
    ]
    assert len(terminal) == 1
    assert up.url in terminal[0]["response"]["error"]["message"]


FINISHED_ANSWER = [
    FIRST_EVENT,
    b'data: {"choices": [{"index": 0, "delta": {"content": "lo"}}]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n',
    b'data: {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, '
    b'"total_tokens": 7}}\n\n',
]


def clean_upstream(*pieces: bytes) -> App:
    """Sends ``pieces`` as an event stream and ends the body properly."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


@contextmanager
def lost_upstream(how: str, *pieces: bytes) -> Iterator[str]:
    """An upstream on loopback that sends ``pieces``, then is lost: uvicorn closing the
    connection mid-body, or a reset (RST)."""
    if how == "reset":
        with resetting_upstream(*pieces) as url:
            yield url
    else:
        with serve(breaking_upstream(*pieces)) as up:
            yield up.url


async def ask_gateway(upstream_url: str, *, stream: bool) -> httpx.Response:
    async with ProxyApp(upstream_url + "/v1") as proxy:
        # raise_app_exceptions stays on: nothing is raised to the server.
        transport = httpx.ASGITransport(app=ResponsesMiddleware(proxy))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.post(
                "/v1/responses", json={"model": "m", "input": "hi", "stream": stream}
            )


LOST = pytest.mark.parametrize("how", ["closed", "reset"])


@pytest.mark.anyio
@LOST
async def test_an_upstream_lost_after_finish_and_usage_completes_as_if_it_had_ended(
    how: str,
) -> None:
    """Issue 11.2: the in-band error ProxyApp injected failed a finished answer."""
    with serve(clean_upstream(*FINISHED_ANSWER, b"data: [DONE]\n\n")) as up:
        clean = check_stream((await ask_gateway(up.url, stream=True)).content)
    with lost_upstream(how, *FINISHED_ANSWER) as url:
        lost = check_stream((await ask_gateway(url, stream=True)).content)
    assert lost.status == clean.status == "completed"
    assert lost.types == clean.types
    assert lost.output_text == clean.output_text == "Hallo"
    assert lost.response["usage"] == clean.response["usage"]
    assert lost.response["usage"]["total_tokens"] == 7


@pytest.mark.anyio
@LOST
async def test_a_non_streamed_answer_whose_upstream_is_lost_after_finish_is_a_200(
    how: str,
) -> None:
    with lost_upstream(how, *FINISHED_ANSWER) as url:
        response = await ask_gateway(url, stream=False)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert response.json()["usage"]["total_tokens"] == 7


@pytest.mark.anyio
@LOST
async def test_an_upstream_lost_before_finish_reason_still_fails_naming_it(how: str) -> None:
    with lost_upstream(how, *FINISHED_ANSWER[:2]) as url:
        streamed = check_stream((await ask_gateway(url, stream=True)).content)
        answer = await ask_gateway(url, stream=False)
    assert streamed.status == "failed"
    assert f"upstream {url}/v1/chat/completions broke off" in streamed.response["error"]["message"]
    assert answer.status_code == 502
    assert "broke off" in answer.json()["error"]["message"]


def echoing_upstream(*pieces: bytes) -> App:
    """A careless upstream that quotes the request's Authorization header back."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        auth = dict(scope["headers"])[b"authorization"]
        headers = [(b"content-type", b"text/event-stream"), (b"x-debug-auth", auth)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in pieces:
            body = piece.replace(b"AUTH", auth)
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


@pytest.mark.anyio
async def test_an_upstream_quoting_the_configured_key_has_it_redacted() -> None:
    key = "sk-configured-SECRET-0123456789"
    # The second quote arrives split over two body messages.
    upstream = echoing_upstream(
        b"data: you sent AUTH\n\ndata: and Bearer sk-conf", b"igured-SECRET-0123456789!\n\n"
    )
    with serve(upstream) as up:
        async with ProxyApp(up.url + "/v1", api_key=key) as proxy:
            transport = httpx.ASGITransport(app=proxy)
            async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
                response = await client.post("/v1/chat/completions", json={})
    assert key not in response.text
    assert key not in str(response.headers)
    assert response.text == "data: you sent Bearer ***\n\ndata: and Bearer ***!\n\n"
    assert response.headers["x-debug-auth"] == "Bearer ***"


@pytest.mark.anyio
async def test_placeholder_keys_are_not_scrubbed_from_bodies() -> None:
    with serve(echoing_upstream(b"data: EMPTY is what you sent: AUTH\n\n")) as up:
        async with ProxyApp(up.url + "/v1", api_key="EMPTY") as proxy:
            transport = httpx.ASGITransport(app=proxy)
            async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
                response = await client.post("/v1/chat/completions", json={})
    assert response.text == "data: EMPTY is what you sent: Bearer EMPTY\n\n"


@pytest.mark.anyio
async def test_the_lifespan_opens_and_closes_the_connection_pool() -> None:
    proxy = ProxyApp("http://127.0.0.1:9/v1")
    async with LifespanManager(ResponsesMiddleware(proxy)):
        pool = proxy._transport
        assert pool is not None
        assert not pool.is_closed
    assert pool.is_closed
    assert proxy._transport is None


@pytest.mark.anyio
async def test_one_connection_pool_serves_every_request() -> None:
    backend = ScriptedBackend([Turn.text("hi")])
    with serve(backend) as up:
        async with ProxyApp(up.url + "/v1") as proxy:
            transport = httpx.ASGITransport(app=proxy)
            async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
                await client.get("/v1/models")
                first = proxy._transport
                await client.get("/v1/models")
                assert proxy._transport is first
    assert len(backend.requests) == 2
