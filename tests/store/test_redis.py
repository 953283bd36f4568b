"""redis://: one key per (tenant, id) with its own TTL; outages answer fast, never hang."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import redis.asyncio as aioredis

from stream_mw import Settings, StoreUnavailableError
from stream_mw._store import open_store
from stream_mw._store.redis import RedisStore
from stream_mw._store_gateway import StoreGateway
from tests.redis_server import RedisServer
from tests.store.helpers import make_response, stored

pytestmark = pytest.mark.anyio


def test_importing_stream_mw_and_its_store_module_does_not_import_redis() -> None:
    code = (
        "import sys, stream_mw, stream_mw._store; "
        "from stream_mw._store import open_store; from stream_mw import Settings; "
        "open_store(Settings(store_url='memory://')); "
        "print('redis' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


async def test_each_response_gets_its_own_ttl_in_redis(redis_server: RedisServer) -> None:
    store = open_store(Settings(store_url=redis_server.url, store_ttl=120))
    assert isinstance(store, RedisStore)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        item = stored()
        await store.put("tenant-a", item)
        pttl = await raw.pttl(store.key("tenant-a", item.id))
        assert 110_000 < pttl <= 120_000
    finally:
        await raw.aclose()
        await store.aclose()


async def test_expired_key_is_gone(redis_server: RedisServer) -> None:
    store = open_store(Settings(store_url=redis_server.url))
    assert isinstance(store, RedisStore)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        item = stored()
        await store.put("t", item)
        # Move the expiry into the past (Redis expires the key at once) instead of waiting.
        assert await raw.pexpireat(store.key("t", item.id), 1)
        assert await store.get("t", item.id) is None
    finally:
        await raw.aclose()
        await store.aclose()


def test_keys_separate_tenants_whatever_their_names_contain() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", ttl=60, max_response_bytes=1000)
    assert store.key("a:b", "c") != store.key("a", "b:c")
    assert store.key("alice@example.com", "resp_1").startswith("stream_mw:response:")
    assert "alice" not in store.key("alice@example.com", "resp_1")


async def test_stopped_redis_makes_reads_raise_store_unavailable_and_recovers(
    own_redis_server: RedisServer,
) -> None:
    store = open_store(Settings(store_url=own_redis_server.url))
    assert store is not None
    try:
        item = stored()
        await store.put("t", item)
        own_redis_server.stop()
        with pytest.raises(StoreUnavailableError, match="Redis"):
            await store.get("t", item.id)
        with pytest.raises(StoreUnavailableError):
            await store.put("t", stored())
        with pytest.raises(StoreUnavailableError):
            await store.delete("t", item.id)
        own_redis_server.start()
        # Persistence is off, so the restarted server is empty, but it serves again.
        assert await store.get("t", item.id) is None
        await store.put("t", item)
        assert await store.get("t", item.id) == item
    finally:
        await store.aclose()


async def test_frozen_redis_times_out_instead_of_hanging(own_redis_server: RedisServer) -> None:
    url = own_redis_server.url + "?socket_timeout=0.2"
    store = open_store(Settings(store_url=url))
    assert store is not None
    try:
        item = stored()
        await store.put("t", item)
        own_redis_server.pause()
        try:
            with pytest.raises(StoreUnavailableError):
                await store.get("t", item.id)
        finally:
            own_redis_server.resume()
    finally:
        await store.aclose()


async def test_gateway_save_during_an_outage_logs_and_returns(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = StoreGateway(Settings(store_url=own_redis_server.url))
    scope = {"type": "http", "headers": []}
    try:
        own_redis_server.stop()
        response = make_response("resp_outage")
        with caplog.at_level(logging.WARNING, logger="stream_mw"):
            await gateway.save(scope, [], response)  # must not raise
        assert any(
            "resp_outage" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
        )
    finally:
        await gateway.aclose()


async def test_gateway_read_on_a_frozen_redis_is_store_unavailable(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The backend's socket timeout is long here; the gateway's own timeout bounds the wait.
    gateway = StoreGateway(
        Settings(store_url=own_redis_server.url + "?socket_timeout=30"), timeout=0.2
    )
    scope = {"type": "http", "headers": []}
    body = {"model": "m", "input": "hi", "previous_response_id": "resp_x"}
    try:
        await gateway.save(scope, [], make_response("resp_x"))
        own_redis_server.pause()
        try:
            with (
                caplog.at_level(logging.WARNING, logger="stream_mw"),
                pytest.raises(StoreUnavailableError, match="did not answer in time"),
            ):
                await gateway.expand(scope, body)
            assert "no answer within 0.2 s" in caplog.text
        finally:
            own_redis_server.resume()
    finally:
        await gateway.aclose()
