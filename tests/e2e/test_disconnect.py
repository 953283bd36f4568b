"""A client that disconnects mid-stream over a real uvicorn server stops the upstream at once."""

from __future__ import annotations

import asyncio
import time

import anyio
import anyio.to_thread
import httpx
import pytest

from stream_mw import ResponsesMiddleware
from tests.e2e.apps import ScriptedChat
from tests.e2e.conftest import RunningServer, serve

pytestmark = pytest.mark.anyio

# Names of coroutines that belong to one request; none may outlive the disconnect.
REQUEST_COROUTINES = (
    "run_asgi",
    "ResponseRun",
    "ScriptedChat",
    "_keepalive_loop",
    "_keepalive_now",
    "_watch",
)


async def leftover_request_tasks() -> list[str]:
    """On the server loop: wait for request tasks to end, then list any still running."""
    current = asyncio.current_task()

    def request_tasks() -> list[asyncio.Task[object]]:
        return [
            task
            for task in asyncio.all_tasks()
            if task is not current
            and not task.done()
            and any(name in repr(task.get_coro()) for name in REQUEST_COROUTINES)
        ]

    pending = request_tasks()
    if pending:
        await asyncio.wait(pending, timeout=5)
    return [repr(task.get_coro()) for task in request_tasks()]


async def stream_then_leave(running: RunningServer, model: str, wanted: bytes) -> float:
    """Read the stream until ``wanted`` appears, then drop the connection; return that time."""
    body = {"model": model, "input": "hi", "stream": True}
    async with httpx.AsyncClient(verify=False, timeout=10) as http:
        async with http.stream("POST", running.url + "/v1/responses", json=body) as response:
            assert response.status_code == 200
            seen = b""
            async for data in response.aiter_bytes():
                seen += data
                if wanted in seen:
                    break
        # Leaving the block with the body unread closes the connection.
        return time.monotonic()


@pytest.mark.parametrize(
    ("model", "keepalive", "wanted"),
    [
        # An upstream that keeps generating tokens nobody reads.
        ("endless", 0.0, b'"delta":" tick"'),
        # An upstream that went silent, with keep-alives flowing meanwhile.
        ("hang", 0.05, b'"sequence_number":5,'),
    ],
)
async def test_a_client_disconnect_stops_the_upstream_within_100_ms_and_leaves_no_task(
    model: str, keepalive: float, wanted: bytes
) -> None:
    upstream = ScriptedChat()
    with serve(ResponsesMiddleware(upstream, keepalive_interval=keepalive)) as running:
        left_at = await stream_then_leave(running, model, wanted)

        stopped = await anyio.to_thread.run_sync(upstream.stopped.wait, 5.0)
        assert stopped, "the upstream kept streaming after the client left"
        assert upstream.stop_reason == "CancelledError"
        assert upstream.stopped_at - left_at < 0.1
        assert running.call(leftover_request_tasks) == []
        assert upstream.active == 0
