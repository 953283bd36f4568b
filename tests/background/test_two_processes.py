"""Background responses across two gateway processes sharing one store (SQLite file, Redis).

The response runs in process A; process B streams it, resumes it after a drop, and cancels
another one: everything B knows comes through the store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.background.upstream import text_for
from tests.checker import check_stream
from tests.redis_server import RedisServer
from tests.store.conftest import redis_server
from tests.store.test_store_e2e import ROOT, Gateway

__all__ = ["redis_server"]  # the session-wide real Redis, as a fixture here too

HEADERS = {"authorization": "Bearer key-alice"}


@pytest.fixture(params=["sqlite", "redis"])
def two_gateways(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Gateway, Gateway, Path]]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        url = server.url
    else:
        url = f"sqlite:///{tmp_path / 'store.db'}"
    closed = tmp_path / "closed.txt"
    env = {
        **os.environ,
        "STREAM_MW_STORE_URL": url,
        "STREAM_MW_KEEPALIVE_INTERVAL": "0",
        "STREAM_MW_TEST_CLOSED": str(closed),
        "PYTHONPATH": str(ROOT),
    }
    first = Gateway(env, factory="tests.background.upstream:create_gateway")
    try:
        second = Gateway(env, factory="tests.background.upstream:create_gateway")
        try:
            yield first, second, closed
        finally:
            second.stop()
    finally:
        first.stop()


def frames(port: int, method: str, path: str, limit: int | None = None, **kw: Any) -> list[bytes]:
    out: list[bytes] = []
    with (
        httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=30) as http,
        http.stream(method, path, **kw) as answer,
    ):
        assert answer.status_code == 200
        buffer = b""
        for chunk in answer.iter_bytes():
            buffer += chunk
            *done, buffer = buffer.split(b"\n\n")
            out.extend(f + b"\n\n" for f in done if f)
            if limit is not None and len(out) >= limit:
                return out[:limit]
    return out


def test_a_background_stream_dropped_on_one_process_resumes_on_another_once_each(
    two_gateways: tuple[Gateway, Gateway, Path],
) -> None:
    a, b, _ = two_gateways
    body = {"model": "slow", "input": "Count.", "background": True, "stream": True}
    head = frames(a.port, "POST", "/v1/responses", limit=6, json=body)
    first = httpx.Response(200, content=head[0].split(b"data: ", 1)[1]).json()
    response_id = first["response"]["id"]
    last = httpx.Response(200, content=head[-1].split(b"data: ", 1)[1]).json()["sequence_number"]
    with b.client("key-alice") as on_b:
        assert on_b.responses.retrieve(response_id).status == "in_progress"
        events = list(on_b.responses.retrieve(response_id, stream=True, starting_after=last))
        assert events[0].sequence_number == last + 1
        assert on_b.responses.retrieve(response_id).output_text == text_for("slow")
    # The same resumption, as bytes, judged whole with what came before the drop.
    rest = frames(b.port, "GET", f"/v1/responses/{response_id}?stream=true&starting_after={last}")
    checked = check_stream(b"".join(head + rest))
    assert checked.status == "completed"


def test_a_cancel_through_another_process_stops_the_upstream_within_a_second(
    two_gateways: tuple[Gateway, Gateway, Path],
) -> None:
    a, b, closed = two_gateways
    with a.client("key-alice") as on_a, b.client("key-alice") as on_b:
        created = on_a.responses.create(model="slow", input="Count.", background=True)
        time.sleep(0.3)
        asked = time.time()
        assert on_b.responses.cancel(created.id).status == "cancelled"
        assert closed.exists(), "the upstream request was not closed"
        assert float(closed.read_text().split()[0]) - asked < 1.0
        assert on_a.responses.retrieve(created.id).status == "cancelled"
        with pytest.raises(openai.NotFoundError):
            on_b.with_options(api_key="key-bob").responses.cancel(created.id)


def test_a_run_whose_process_dies_ends_failed_for_its_followers_never_silently(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "STREAM_MW_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "STREAM_MW_KEEPALIVE_INTERVAL": "0.3",
        "PYTHONPATH": str(ROOT),
    }
    factory = "tests.background.upstream:create_gateway"
    a, b = Gateway(env, factory=factory), Gateway(env, factory=factory)
    try:
        with a.client("key-alice") as on_a, b.client("key-alice") as on_b:
            created = on_a.responses.create(model="slow", input="Count.", background=True)
            time.sleep(0.5)
            a.proc.kill()
            events = list(on_b.responses.retrieve(created.id, stream=True, starting_after=-1))
            assert events[-1].type == "response.failed"
            assert [e.type for e in events].count("response.failed") == 1
            ended = on_b.responses.retrieve(created.id)
            assert ended.status == "failed"
            assert ended.error is not None
            assert ended.error.code == "server_error"
            assert "stopped before it ended" in ended.error.message
    finally:
        a.stop()
        b.stop()
