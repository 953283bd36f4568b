"""The gateway under trio: the paths taken when the event loop is not asyncio.

The middleware, ProxyApp and its transport take an asyncio fast path (plain tasks, the
backend's cancel scope class, one timer per connection for timeouts) and fall back to anyio's
general machinery under any other backend. The rest of the suite runs on asyncio; these
tests run the fallbacks, with the upstream served by uvicorn in its own thread.
"""

from __future__ import annotations

import threading

import anyio
import httpx
import pytest
from starlette.types import Receive, Scope, Send

from stream_mw import ResponsesMiddleware
from stream_mw.upstreams import ProxyApp, ScriptedBackend, Turn
from tests.e2e.conftest import serve
from tests.faults.harness import parse_events

WAIT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


def gateway_client(proxy: ProxyApp) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=ResponsesMiddleware(proxy))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


@pytest.mark.anyio
async def test_a_streamed_response_is_relayed_and_translated_under_trio() -> None:
    backend = ScriptedBackend([Turn.text("Hello from trio"), Turn.text("And again")])
    with serve(backend) as up:
        async with ProxyApp(up.url + "/v1") as proxy, gateway_client(proxy) as client:
            with anyio.fail_after(WAIT):
                bodies = [
                    (
                        await client.post(
                            "/v1/responses", json={"model": "m", "input": "hi", "stream": True}
                        )
                    ).content
                    for _ in range(2)
                ]
    for body, text in zip(bodies, ["Hello from trio", "And again"], strict=True):
        events = parse_events(body)
        assert events[0]["type"] == "response.created"
        assert events[-1]["type"] == "response.completed"
        deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
        assert "".join(deltas) == text
    assert len(backend.requests) == 2


@pytest.mark.anyio
async def test_an_upstream_silent_past_the_read_timeout_is_a_504_under_trio() -> None:
    release = threading.Event()

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await anyio.to_thread.run_sync(release.wait, WAIT)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve(silent) as up:
        try:
            async with ProxyApp(up.url, read_timeout=0.3) as proxy:
                transport = httpx.ASGITransport(app=proxy)
                async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
                    with anyio.fail_after(WAIT):
                        started = anyio.current_time()
                        response = await client.post("/v1/chat/completions", json={})
                        waited = anyio.current_time() - started
        finally:
            release.set()
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert waited < 0.3 + 2.0


@pytest.mark.anyio
async def test_an_upstream_that_breaks_off_mid_stream_fails_the_response_under_trio() -> None:
    async def breaking(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        chunk = b'data: {"choices":[{"index":0,"delta":{"content":"Hal"}}]}\n\n'
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        raise RuntimeError("the model crashed")

    with serve(breaking) as up:
        async with ProxyApp(up.url + "/v1") as proxy, gateway_client(proxy) as client:
            with anyio.fail_after(WAIT):
                response = await client.post(
                    "/v1/responses", json={"model": "m", "input": "hi", "stream": True}
                )
    events = parse_events(response.content)
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Hal"]
    terminal = [e for e in events if e["type"].startswith("response.") and "response" in e]
    assert terminal[-1]["type"] == "response.failed"
    assert "broke off" in terminal[-1]["response"]["error"]["message"]


@pytest.mark.anyio
async def test_a_background_response_under_trio_is_a_400_naming_background() -> None:
    # A run must outlive its request; without asyncio there is no task to hand it to.
    backend = ScriptedBackend([Turn.text("never run")])
    transport = httpx.ASGITransport(app=ResponsesMiddleware(backend))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        answer = await client.post(
            "/v1/responses", json={"model": "m", "input": "hi", "background": True}
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "background"
    assert backend.requests == []
