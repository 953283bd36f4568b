"""Background responses end to end: the openai SDK against the middleware under uvicorn."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from stream_mw import ResponsesMiddleware
from stream_mw._deliver import background
from tests.background.upstream import SlowChat, text_for
from tests.checker import check_stream
from tests.e2e.conftest import RunningServer, serve


@pytest.fixture
def upstream() -> SlowChat:
    return SlowChat()


@pytest.fixture
def server(upstream: SlowChat) -> Iterator[RunningServer]:
    app = ResponsesMiddleware(upstream, store_url="memory://", keepalive_interval=0)
    with serve(app) as running:
        yield running


def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="key-alice", max_retries=0)


def wait_until_ended(sdk: openai.OpenAI, response_id: str) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = sdk.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress"):
            return response
        time.sleep(0.05)
    raise AssertionError(f"{response_id} never ended")


HEADERS = {"authorization": "Bearer key-alice"}


def raw_events(server: RunningServer, method: str, path: str, **kwargs: Any) -> list[bytes]:
    """The SSE frames of a streamed answer, as sent (``check_stream`` judges the bytes)."""
    with (
        httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as http,
        http.stream(method, path, **kwargs) as answer,
    ):
        assert answer.status_code == 200, answer.read()
        return [frame + b"\n\n" for frame in answer.read().split(b"\n\n") if frame]


def test_a_background_create_answers_in_progress_at_once_and_runs_to_completion(
    server: RunningServer,
) -> None:
    with client(server) as sdk:
        created = sdk.responses.create(model="slow", input="Count.", background=True)
        assert created.status in ("queued", "in_progress")
        assert created.background is True
        running = sdk.responses.retrieve(created.id)
        assert running.status in ("queued", "in_progress")
        done = wait_until_ended(sdk, created.id)
    assert done.status == "completed"
    assert done.background is True
    assert done.output_text == text_for("slow")


def test_a_streamed_background_create_delivers_a_valid_stream(server: RunningServer) -> None:
    with client(server) as sdk:
        events = list(sdk.responses.create(model="fast", input="Hi", background=True, stream=True))
    assert events[-1].type == "response.completed"
    body = {"model": "fast", "input": "Hi", "background": True, "stream": True}
    with httpx.Client(base_url=server.url, headers=HEADERS) as http:
        answer = http.post("/v1/responses", json=body)
    assert answer.headers["x-request-id"]
    checked = check_stream(answer.content)
    assert checked.status == "completed"
    assert checked.response["background"] is True


def test_a_client_that_drops_a_background_stream_and_resumes_sees_every_event_once(
    server: RunningServer, upstream: SlowChat
) -> None:
    body = {"model": "slow", "input": "Count.", "background": True, "stream": True}
    seen: list[bytes] = []
    with (
        httpx.Client(base_url=server.url, headers=HEADERS) as http,
        http.stream("POST", "/v1/responses", json=body) as answer,
    ):
        for line in answer.iter_lines():
            if line.startswith("data: "):
                seen.append(line[6:].encode())
            if len(seen) == 8:
                break
    first = [httpx.Response(200, content=raw).json() for raw in seen]
    response_id = first[0]["response"]["id"]
    last = first[-1]["sequence_number"]
    with client(server) as sdk:
        rest = list(sdk.responses.retrieve(response_id, stream=True, starting_after=last))
    assert rest[0].sequence_number == last + 1
    assert rest[-1].type == "response.completed"
    prefix = b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + raw + b"\n\n"
        for e, raw in zip(first, seen, strict=True)
    )
    resumed = raw_events(
        server, "GET", f"/v1/responses/{response_id}?stream=true&starting_after={last}"
    )
    checked = check_stream(prefix + b"".join(resumed))
    assert checked.status == "completed"
    assert checked.items[0].text == text_for("slow")
    # The drop did not stop the run: the upstream request ran to its end.
    assert upstream.closed == []


def test_a_cancel_ends_the_response_cancelled_and_closes_the_upstream_within_a_second(
    server: RunningServer, upstream: SlowChat
) -> None:
    with client(server) as sdk:
        created = sdk.responses.create(model="slow", input="Count.", background=True)
        time.sleep(0.3)
        asked = time.monotonic()
        cancelled = sdk.responses.cancel(created.id)
        assert cancelled.status == "cancelled"
        assert upstream.closed, "the upstream request was not closed"
        assert upstream.closed[0] - asked < 1.0
        assert sdk.responses.retrieve(created.id).status == "cancelled"
        # Idempotent: a second cancel answers the same ended response.
        assert sdk.responses.cancel(created.id).status == "cancelled"
        events = list(sdk.responses.retrieve(created.id, stream=True, starting_after=-1))
    assert [e.type for e in events].count("response.failed") == 1
    assert events[-1].response.status == "cancelled"


def test_cancelling_a_response_that_is_not_background_is_a_400(server: RunningServer) -> None:
    with client(server) as sdk:
        plain = sdk.responses.create(model="fast", input="Hi")
        with pytest.raises(openai.BadRequestError):
            sdk.responses.cancel(plain.id)
        with pytest.raises(openai.NotFoundError):
            sdk.responses.cancel("resp_unknown")


def test_background_without_a_store_is_a_400_naming_the_parameter(upstream: SlowChat) -> None:
    with (
        serve(ResponsesMiddleware(upstream, store_url=None)) as running,
        client(running) as sdk,
        pytest.raises(openai.BadRequestError) as raised,
    ):
        sdk.responses.create(model="fast", input="Hi", background=True)
    assert raised.value.param == "background"


def test_background_with_store_false_is_a_400_naming_the_parameter(
    server: RunningServer,
) -> None:
    with client(server) as sdk, pytest.raises(openai.BadRequestError) as raised:
        sdk.responses.create(model="fast", input="Hi", background=True, store=False)
    assert raised.value.param == "background"
    # Like every answer, it names the request for the logs.
    assert raised.value.response.headers["x-request-id"]


def test_a_background_response_past_the_cap_is_a_429(upstream: SlowChat) -> None:
    app = ResponsesMiddleware(upstream, store_url="memory://", max_background_responses=1)
    with serve(app) as running, client(running) as sdk:
        first = sdk.responses.create(model="slow", input="Count.", background=True)
        with pytest.raises(openai.RateLimitError):
            sdk.responses.create(model="slow", input="Count.", background=True)
        sdk.responses.cancel(first.id)


def test_a_background_run_still_going_at_shutdown_ends_failed_in_the_store(
    upstream: SlowChat,
) -> None:
    app = ResponsesMiddleware(upstream, store_url="memory://", keepalive_interval=0)
    with serve(app) as running, client(running) as sdk:
        created = sdk.responses.create(model="slow", input="Count.", background=True)
        drained = running.call(lambda: app.shutdown(0.2))
        assert drained.ended == 1
        ended = sdk.responses.retrieve(created.id)
        assert ended.status == "failed"
        assert ended.error is not None
        assert ended.error.code == "server_shutting_down"
        events = list(sdk.responses.retrieve(created.id, stream=True, starting_after=-1))
    assert events[-1].type == "response.failed"
    assert [e.type for e in events].count("response.failed") == 1


def test_a_background_response_whose_store_is_down_is_a_503_not_a_crash(
    upstream: SlowChat,
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    app = ResponsesMiddleware(upstream, store_url=f"redis://127.0.0.1:{port}/0")
    with serve(app) as running, client(running) as sdk:
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as raised:
                sdk.responses.create(model="fast", input="Hi", background=True, stream=stream)
            assert raised.value.status_code == 503


def test_a_follower_of_a_run_that_died_unlogged_ends_failed_even_without_keepalives(
    upstream: SlowChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: with ``keepalive_interval=0`` a follower of a run whose runner died without
    logging its end (its process killed) pinged for ever; a silence past the bound ends it."""
    monkeypatch.setattr(background, "SILENT_RUN_SECONDS", 0.5, raising=False)
    app = ResponsesMiddleware(upstream, store_url="memory://", keepalive_interval=0)
    with serve(app) as running, client(running) as sdk:
        created = sdk.responses.create(model="slow", input="Count.", background=True)

        async def die() -> None:
            # What a killed process leaves: the run gone, its log and record unfinished.
            for task in list(app.background._tasks):
                task.cancel()
            await asyncio.sleep(0.05)

        running.call(die)
        assert sdk.responses.retrieve(created.id).status == "in_progress"
        frames: list[bytes] = []
        with (
            httpx.Client(base_url=running.url, headers=HEADERS, timeout=30) as http,
            http.stream("GET", f"/v1/responses/{created.id}?stream=true") as answer,
        ):
            buffer = b""
            for chunk in answer.iter_bytes():
                buffer += chunk
                *done, buffer = buffer.split(b"\n\n")
                frames.extend(done)
                # Pings come once a second while the log is silent: a few dozen mean for ever.
                if len(frames) > 60:
                    break
        events = [f for f in frames if f.startswith(b"event: ")]
        assert events[-1].startswith(b"event: response.failed")
        assert sum(frame.startswith(b"event: response.failed") for frame in frames) == 1
        ended = sdk.responses.retrieve(created.id)
    assert ended.status == "failed"
    assert ended.error is not None
    assert "stopped before it ended" in ended.error.message


class TinyChunks:
    """A Chat app streaming ``count`` one-character deltas, each far smaller than the event
    it becomes, then the finish."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body", False):
            pass
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        delta = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
        for _ in range(self.count):
            await send({"type": "http.response.body", "body": delta, "more_body": True})
        end = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        await send({"type": "http.response.body", "body": end, "more_body": False})


def test_a_background_run_whose_event_log_outgrows_its_bound_ends_failed_event_log_full() -> None:
    """The log of a background run is bounded by 2 x max_response_bytes: events outgrow the
    upstream bytes they come from, so a run past the bound is failed with a code that says
    why, and the log stops there instead of growing with the run."""
    limit = 20_000
    upstream = TinyChunks(300)  # 18 kB of upstream, well under the limit; ~60 kB of events
    app = ResponsesMiddleware(
        upstream, store_url="memory://", keepalive_interval=0, max_response_bytes=limit
    )
    with serve(app) as running, client(running) as sdk:
        created = sdk.responses.create(model="m", input="Hi", background=True)
        ended = wait_until_ended(sdk, created.id)
        frames = raw_events(running, "GET", f"/v1/responses/{created.id}?stream=true")
    assert ended.status == "failed"
    assert ended.error is not None
    assert ended.error.code == "event_log_full"
    assert "2 x max_response_bytes" in ended.error.message
    events = [f for f in frames if f.startswith(b"event: ")]
    assert events[-1].startswith(b"event: response.failed")
    assert sum(f.startswith(b"event: response.failed") for f in events) == 1
    # Stopped at the bound: the deltas logged fall well short of the 300 the app sent.
    deltas = sum(f.startswith(b"event: response.output_text.delta") for f in events)
    assert 0 < deltas < 300
    # What the bound counts: the events' JSON, as logged (one event and the done events of
    # the open message may pass it: they are what tells the reader how the run ended).
    logged = sum(len(f.partition(b"data: ")[2]) for f in events[:-1])
    assert 2 * limit < logged <= 2 * limit + 4096
