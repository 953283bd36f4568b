"""The Store's event log and cancellation flag (background responses), on every backend."""

from __future__ import annotations

import uuid

import anyio
import pytest

from stream_mw._store import Store

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
