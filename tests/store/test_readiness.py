"""Readiness follows the store: a real ``redis-server`` stopped and started under a real gateway.

The gateway is the ``stream-mw serve`` command (uvicorn, the middleware, the demo backend) in
its own process, configured with a Redis store; the probes are plain HTTP requests.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from stream_mw import StoreUnavailableError
from stream_mw._store import Store
from tests.gateway.helpers import running
from tests.redis_server import RedisServer

#: How long readiness may take to follow the store (Redis' client timeouts are 2 s).
FOLLOW_DEADLINE = 20.0


def wait_for_status(url: str, expected: int) -> list[int]:
    """Probe ``url`` until it answers ``expected``; every status seen on the way."""
    seen: list[int] = []
    deadline = time.monotonic() + FOLLOW_DEADLINE
    while time.monotonic() < deadline:
        seen.append(httpx.get(url, timeout=10).status_code)
        if seen[-1] == expected:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered {expected}: {seen}")


@pytest.mark.redis
def test_readiness_turns_503_when_redis_stops_and_200_when_it_is_back(
    own_redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {"STREAM_MW_STORE_URL": own_redis_server.url}
    with running("serve", tmp_path=tmp_path, env=env) as gateway:
        ready, health = f"{gateway.url}/ready", f"{gateway.url}/health"
        assert httpx.get(ready).status_code == 200

        own_redis_server.stop()
        wait_for_status(ready, 503)
        body = httpx.get(ready).json()
        assert body["error"]["code"] == "not_ready"
        assert body["error"]["message"] == "Not ready: the response store does not answer."
        # The store's address stays in the log, out of the unauthenticated answer.
        assert str(own_redis_server.port) not in str(body)
        assert httpx.get(health).status_code == 200

        own_redis_server.start()
        wait_for_status(ready, 200)
        assert httpx.get(health).status_code == 200
    log = gateway.stderr()
    assert "not ready: store: " in log
    assert "ready again" in log
    assert "Traceback" not in log


@pytest.mark.anyio
async def test_every_backend_answers_a_ping(store: Store) -> None:
    await store.ping()


@pytest.mark.redis
@pytest.mark.anyio
async def test_a_stopped_redis_fails_its_ping(own_redis_server: RedisServer) -> None:
    from stream_mw._store.redis import RedisStore

    store = RedisStore(own_redis_server.url, ttl=60, max_response_bytes=1024)
    try:
        await store.ping()
        own_redis_server.stop()
        with pytest.raises(StoreUnavailableError):
            await store.ping()
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_an_unopenable_sqlite_file_fails_its_ping(tmp_path: Path) -> None:
    from stream_mw._store import SQLiteStore

    store = SQLiteStore(
        str(tmp_path / "missing-dir" / "responses.db"), ttl=60, max_response_bytes=1024
    )
    try:
        with pytest.raises(StoreUnavailableError):
            await store.ping()
    finally:
        await store.aclose()
