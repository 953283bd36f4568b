"""memory://: an LRU bounded by count and bytes, with a TTL checked on read and swept on write."""

from __future__ import annotations

import logging

import pytest

from stream_mw._store import MemoryStore, NotStored
from tests.store.helpers import stored

pytestmark = pytest.mark.anyio


class Clock:
    """A clock the test moves by hand, so TTL tests need no sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def memory(
    clock: Clock | None = None,
    *,
    ttl: float = 60.0,
    max_responses: int = 100,
    max_bytes: int = 10_000_000,
    max_response_bytes: int = 1_000_000,
) -> MemoryStore:
    return MemoryStore(
        ttl=ttl,
        max_responses=max_responses,
        max_bytes=max_bytes,
        max_response_bytes=max_response_bytes,
        clock=clock or Clock(),
    )


async def test_count_bound_evicts_the_least_recently_used() -> None:
    store = memory(max_responses=3)
    a, b, c, d = (stored() for _ in range(4))
    for item in (a, b, c):
        await store.put("t", item)
    assert await store.get("t", a.id) == a  # a is now the most recently used
    await store.put("t", d)
    assert len(store) == 3
    assert await store.get("t", b.id) is None
    for item in (a, c, d):
        assert await store.get("t", item.id) == item


async def test_byte_bound_evicts_until_the_total_fits() -> None:
    one = len(stored().encode())
    store = memory(max_bytes=one * 3 + one // 2)
    items = [stored() for _ in range(10)]
    for item in items:
        await store.put("t", item)
        assert store.total_bytes <= one * 3 + one // 2
    assert len(store) == 3
    assert [await store.get("t", i.id) for i in items[-3:]] == items[-3:]
    assert await store.get("t", items[0].id) is None


async def test_byte_total_is_exact_after_replace_delete_and_eviction() -> None:
    store = memory(max_responses=2)
    a, b, c = stored(), stored(), stored()
    await store.put("t", a)
    await store.put("t", a)
    await store.put("t", b)
    await store.put("t", c)
    await store.delete("t", c.id)
    assert store.total_bytes == len(b.encode())
    assert len(store) == 1


async def test_response_larger_than_the_whole_store_leaves_only_a_tombstone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = memory(max_bytes=200)
    small_enough_for_one_response = stored()
    with caplog.at_level(logging.WARNING, logger="stream_mw"):
        await store.put("t", small_enough_for_one_response)
    tombstone = await store.get("t", small_enough_for_one_response.id)
    assert isinstance(tombstone, NotStored)
    assert tombstone.setting == "store_max_bytes"
    assert store.total_bytes == len(tombstone.encode()) <= 200
    assert "store_max_bytes" in caplog.text


async def test_expired_response_is_gone_on_read() -> None:
    clock = Clock()
    store = memory(clock, ttl=10)
    item = stored()
    await store.put("t", item)
    clock.now += 9.9
    assert await store.get("t", item.id) == item
    clock.now += 0.1
    assert await store.get("t", item.id) is None
    assert len(store) == 0
    assert store.total_bytes == 0


async def test_items_of_an_expired_or_evicted_response_are_gone_with_it() -> None:
    clock = Clock()
    store = memory(clock, ttl=10, max_responses=1)
    evicted, expired = stored(), stored()
    await store.put("t", evicted)
    await store.put("t", expired)
    assert await store.get_items("t", evicted.item_ids()) == {}
    clock.now += 10
    assert await store.get_items("t", expired.item_ids()) == {}
    await store.put("t", stored())
    assert len(store._items) == 2  # only the live response's two items stay indexed


async def test_reading_does_not_extend_the_ttl() -> None:
    clock = Clock()
    store = memory(clock, ttl=10)
    item = stored()
    await store.put("t", item)
    for _ in range(5):
        clock.now += 3
        await store.get("t", item.id)
    assert await store.get("t", item.id) is None


async def test_writes_sweep_expired_responses_nobody_reads() -> None:
    clock = Clock()
    store = memory(clock, ttl=10)
    old = [stored() for _ in range(50)]
    for item in old:
        await store.put("t", item)
    clock.now += 10
    fresh = stored()
    await store.put("t", fresh)
    assert len(store) == 1
    assert store.total_bytes == len(fresh.encode())


async def test_sweep_stops_at_the_first_live_entry_even_after_lru_reordering() -> None:
    clock = Clock()
    store = memory(clock, ttl=10)
    first = stored()
    await store.put("t", first)
    clock.now += 5
    second = stored()
    await store.put("t", second)
    await store.get("t", first.id)  # first becomes most recently used, but expires first
    clock.now += 5
    await store.put("t", stored())
    assert await store.get("t", first.id) is None
    assert await store.get("t", second.id) == second


async def test_deleting_an_expired_response_reports_false() -> None:
    clock = Clock()
    store = memory(clock, ttl=10)
    item = stored()
    await store.put("t", item)
    clock.now += 10
    assert await store.delete("t", item.id) is False
    assert len(store) == 0


async def test_many_writes_stay_within_both_bounds() -> None:
    store = memory(max_responses=50, max_bytes=30_000)
    for i in range(2_000):
        await store.put(f"tenant-{i % 7}", stored(text="w" * (i % 300)))
        assert len(store) <= 50
        assert store.total_bytes <= 30_000


async def test_aclose_releases_everything() -> None:
    store = memory()
    await store.put("t", stored())
    await store.aclose()
    assert len(store) == 0
    assert store.total_bytes == 0
