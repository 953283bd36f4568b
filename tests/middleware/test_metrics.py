"""``Settings.metrics`` and ``Settings.traces``: what each response adds, through the harness.

The gateway's ``/metrics`` over real processes (and ``--workers``) is in
``tests/gateway/test_metrics.py``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import orjson
import pytest

from stream_mw import ConfigurationError, ResponsesMiddleware
from tests.e2e.apps import chunk, sse
from tests.middleware.harness import (
    END,
    Exchange,
    Upstream,
    drive,
    events_of,
    http_scope,
    responses_body,
)

parser = pytest.importorskip("prometheus_client.parser")
pytestmark = pytest.mark.anyio

USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 7,
    "total_tokens": 18,
    "prompt_tokens_details": {"cached_tokens": 5},
    "completion_tokens_details": {"reasoning_tokens": 3},
}
TEXT = [
    sse(chunk({"role": "assistant", "content": "Hi"})),
    sse(chunk(finish="stop")),
    sse(chunk(usage=USAGE, choices=False)),
    b"data: [DONE]\n\n",
]


async def scrape(mw: ResponsesMiddleware, path: str = "/metrics") -> dict[Any, float]:
    exchange = await drive(mw, scope=http_scope("GET", path))
    assert exchange.status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parser.text_string_to_metric_families(exchange.body.decode())
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_tokens_are_counted_by_kind_including_cached_and_reasoning() -> None:
    mw = ResponsesMiddleware(Upstream([*TEXT, END]), metrics=True, keepalive_interval=0)
    await drive(mw, responses_body())

    found = await scrape(mw)

    for kind, count in (("input", 11), ("output", 7), ("cached", 5), ("reasoning", 3)):
        assert value(found, "stream_mw_tokens_total", kind=kind, model="text") == count


async def test_an_upstream_error_is_counted_by_its_code_and_a_client_error_is_not() -> None:
    failing = Upstream([b'{"error": {"message": "slow down"}}', END], status=429,
                       content_type=b"application/json")  # fmt: skip
    mw = ResponsesMiddleware(failing, metrics=True, keepalive_interval=0)
    assert (await drive(mw, responses_body())).status == 429
    assert (await drive(mw, b'{"model": "m"}')).status == 400

    found = await scrape(mw)

    assert value(found, "stream_mw_upstream_errors_total", kind="rate_limit_exceeded") == 1
    assert value(found, "stream_mw_upstream_errors_total", kind="invalid_request_error") == 0
    route = "POST /v1/responses"
    assert value(found, "stream_mw_requests_total", route=route, status="429", model="text") == 1


async def test_an_open_stream_is_in_the_gauge_and_keepalives_are_counted() -> None:
    release = anyio.Event()
    upstream = Upstream([TEXT[0], release.wait, *TEXT[1:], END])
    mw = ResponsesMiddleware(upstream, metrics=True, keepalive_interval=0.05)
    kept_alive = anyio.Event()

    def watch(message: Any, exchange: Exchange) -> None:
        # The start of the stream has one in_progress event; each keep-alive is another.
        if exchange.body.count(b"event: response.in_progress") >= 2:
            kept_alive.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(drive, mw, responses_body(), on_send=watch))
        with anyio.fail_after(10):
            await kept_alive.wait()
        during = await scrape(mw)
        release.set()
    after = await scrape(mw)

    assert value(during, "stream_mw_streams_open") == 1
    assert value(after, "stream_mw_streams_open") == 0
    assert value(after, "stream_mw_keepalives_total") >= 1


async def test_metrics_are_served_without_a_client_key_on_their_own_path() -> None:
    from stream_mw import ClientKeys

    upstream = Upstream([*TEXT, END])
    mw = ResponsesMiddleware(
        upstream, metrics=True, metrics_path="/internal/metrics", client_keys=ClientKeys(["k"])
    )

    found = await scrape(mw, "/internal/metrics")

    assert value(found, "stream_mw_streams_open") == 0
    assert upstream.calls == 0


async def test_without_metrics_the_metrics_path_reaches_the_wrapped_app() -> None:
    upstream = Upstream([b"app's own", END], content_type=b"text/plain")
    mw = ResponsesMiddleware(upstream)

    exchange = await drive(mw, scope=http_scope("GET", "/metrics"))

    assert upstream.calls == 1
    assert exchange.body == b"app's own"


def test_a_metrics_path_beside_a_probe_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="metrics_path"):
        ResponsesMiddleware(Upstream(), metrics=True, metrics_path="/health")


async def test_traces_record_one_genai_span_per_response() -> None:
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    exporting = pytest.importorskip("opentelemetry.sdk.trace.export")
    in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    from opentelemetry import trace

    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(exporting.SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    mw = ResponsesMiddleware(Upstream([*TEXT, END]), traces=True, keepalive_interval=0)

    exchange = await drive(mw, responses_body(temperature=0.5))

    (span,) = exporter.get_finished_spans()
    response_id = events_of(exchange.body)[-1]["response"]["id"]
    assert span.name == "chat text"
    assert span.kind == trace.SpanKind.CLIENT
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "text"
    assert attributes["gen_ai.request.temperature"] == 0.5
    assert attributes["gen_ai.response.id"] == response_id
    assert attributes["gen_ai.usage.input_tokens"] == 11
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert span.end_time is not None
    assert span.start_time is not None
    assert span.end_time >= span.start_time


async def websocket_response(mw: ResponsesMiddleware, create: dict[str, Any]) -> list[Any]:
    """One ``response.create`` over a WebSocket; the frames the server sent, to the last."""
    incoming = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": orjson.dumps(create).decode()},
    ]
    done = anyio.Event()
    frames: list[Any] = []

    async def receive() -> Any:
        if incoming:
            return incoming.pop(0)
        await done.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Any) -> None:
        if message["type"] == "websocket.send":
            frame = orjson.loads(message["text"])
            frames.append(frame)
            if frame["type"] in ("response.completed", "response.failed", "error"):
                done.set()

    scope = {**http_scope("GET"), "type": "websocket", "scheme": "ws", "subprotocols": []}
    with anyio.fail_after(10):
        await mw(scope, receive, send)
    return frames


async def test_every_route_is_counted_under_its_template_and_a_compaction_once() -> None:
    """Issue 12: the routes beside ``POST /responses`` (conversations, compact,
    input_tokens, cancel, a resumed stream, the WebSocket mode) were not counted."""
    mw = ResponsesMiddleware(Upstream([*TEXT, END]), metrics=True, keepalive_interval=0)
    created = await drive(mw, b'{"items": []}', scope=http_scope("POST", "/v1/conversations"))
    conversation = orjson.loads(created.body)["id"]
    await drive(mw, scope=http_scope("GET", f"/v1/conversations/{conversation}"))
    await drive(mw, scope=http_scope("GET", f"/v1/conversations/{conversation}/items"))
    compacted = await drive(
        mw,
        b'{"model": "text", "input": "hello"}',
        scope=http_scope("POST", "/v1/responses/compact"),
    )
    assert compacted.status == 200
    counted = await drive(
        mw, responses_body(stream=False), scope=http_scope("POST", "/v1/responses/input_tokens")
    )
    assert counted.status == 501
    await drive(mw, scope=http_scope("POST", "/v1/responses/resp_nope/cancel"))
    await drive(mw, scope=http_scope("GET", "/v1/responses/resp_nope", query_string=b"stream=true"))
    frames = await websocket_response(
        mw, {"type": "response.create", "model": "text", "input": "hello"}
    )
    assert frames[-1]["type"] == "response.completed"

    found = await scrape(mw)

    def requests(route: str, status: str, model: str = "") -> float:
        return value(found, "stream_mw_requests_total", route=route, status=status, model=model)

    assert requests("POST /v1/conversations", "200") == 1
    assert requests("GET /v1/conversations/{id}", "200") == 1
    assert requests("GET /v1/conversations/{id}/items", "200") == 1
    assert requests("POST /v1/responses/compact", "200") == 1
    assert requests("POST /v1/responses/input_tokens", "501") == 1
    assert requests("POST /v1/responses/{id}/cancel", "404") == 1
    assert requests("GET /v1/responses/{id}", "404") == 1
    assert requests("WEBSOCKET /v1/responses", "200", "text") == 1
    # The compaction's model call is counted once, on its own route; its tokens count.
    assert requests("POST /v1/responses", "200", "text") == 0
    assert value(found, "stream_mw_tokens_total", kind="input", model="text") == 2 * 11
