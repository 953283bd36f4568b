"""The Store's event log and cancellation flag (background responses), on every backend."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import anyio
import pytest
import redis.asyncio

from stream_mw._store import MemoryStore, SQLiteStore, Store
from stream_mw._store.redis import RedisStore
from tests.redis_server import RedisServer
from tests.store.test_memory import Clock

pytestmark = pytest.mark.anyio


def response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


async def test_events_read_back_after_a_sequence_number_in_order(store: Store) -> None:
    rid = response_id()
    await store.append_events("t", rid, [(0, b'{"n":0}'), (1, b'{"n":1}')])
    await store.append_events("t", rid, [(2, b'{"n":2}')])
    assert await store.events_after("t", rid, -1, 0) == [
        (0, b'{"n":0}'),
        (1, b'{"n":1}'),
        (2, b'{"n":2}'),
    ]
    assert await store.events_after("t", rid, 1, 0) == [(2, b'{"n":2}')]


async def test_a_waiting_reader_wakes_when_an_event_is_appended(store: Store) -> None:
    rid = response_id()
    await store.append_events("t", rid, [(0, b"{}")])
    got: list[tuple[int, bytes]] = []

    async def read() -> None:
        got.extend(await store.events_after("t", rid, 0, 10))

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.sleep(0.2)
        await store.append_events("t", rid, [(1, b'{"late":true}')])
    assert got == [(1, b'{"late":true}')]


async def test_a_reader_with_nothing_new_gets_nothing_once_the_wait_is_over(store: Store) -> None:
    rid = response_id()
    await store.append_events("t", rid, [(0, b"{}")])
    assert await store.events_after("t", rid, 0, 0.2) == []
    assert await store.events_after("t", response_id(), -1, 0) == []


async def test_another_tenant_sees_no_events_and_no_cancellation(store: Store) -> None:
    rid = response_id()
    await store.append_events("a", rid, [(0, b"{}")])
    await store.request_cancel("a", rid)
    assert await store.events_after("b", rid, -1, 0) == []
    assert await store.cancel_requested("b", rid) is False
    assert await store.cancel_requested("a", rid) is True
    assert await store.cancel_requested("a", response_id()) is False


async def test_a_memory_log_and_its_cancellation_expire_with_the_ttl() -> None:
    clock = Clock()
    store = MemoryStore(ttl=10, max_responses=10, max_bytes=10_000, max_response_bytes=10_000,
                        clock=clock)  # fmt: skip
    await store.append_events("t", "resp_a", [(0, b"{}")])
    await store.request_cancel("t", "resp_a")
    clock.now += 11
    assert await store.events_after("t", "resp_a", -1, 0) == []
    await store.append_events("t", "resp_b", [(0, b"{}")])  # a later write sweeps
    assert await store.cancel_requested("t", "resp_a") is False


async def test_a_sqlite_log_and_its_cancellation_expire_with_the_ttl(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(str(tmp_path / "s.db"), ttl=10, max_response_bytes=10_000, clock=clock)
    try:
        await store.append_events("t", "resp_a", [(0, b"{}")])
        await store.request_cancel("t", "resp_a")
        clock.now += 11
        assert await store.events_after("t", "resp_a", -1, 0) == []
        assert await store.cancel_requested("t", "resp_a") is False
        await store.purge_expired()
        with sqlite3.connect(tmp_path / "s.db") as db:
            assert db.execute("SELECT count(*) FROM stream_mw_events").fetchone() == (0,)
    finally:
        await store.aclose()


async def test_a_redis_log_is_a_stream_with_the_response_ttl(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, ttl=60, max_response_bytes=10_000)
    try:
        rid = response_id()
        await store.append_events("t", rid, [(0, b"{}"), (1, b"{}")])
        key = store.events_key("t", rid)
        client = redis.asyncio.Redis.from_url(redis_server.url)
        try:
            assert await client.type(key) == b"stream"
            assert 0 < await client.pttl(key) <= 60_000
        finally:
            await client.aclose()
    finally:
        await store.aclose()
