"""The Store's conversation contract, run against every backend (memory, SQLite, real Redis)."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from stream_mw import Settings
from stream_mw._store import ConversationFullError, MemoryStore, SQLiteStore, Store, open_store
from stream_mw._store.redis import RedisStore

pytestmark = pytest.mark.anyio


def conversation(**metadata: str) -> dict[str, Any]:
    return {
        "id": f"conv_{uuid.uuid4().hex}",
        "object": "conversation",
        "created_at": 1_700_000_000,
        "metadata": metadata,
    }


def message(text: str, item_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id or f"msg_{uuid.uuid4().hex}",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
        "status": "completed",
    }


async def test_a_created_conversation_reads_back_with_its_items_in_order(store: Store) -> None:
    conv = conversation(topic="tea")
    items = [message("one"), message("two")]
    assert await store.create_conversation("tenant-a", conv, items) == items
    assert await store.get_conversation("tenant-a", conv["id"]) == conv
    assert await store.conversation_items("tenant-a", conv["id"]) == items


async def test_another_tenant_sees_no_conversation_and_cannot_change_it(store: Store) -> None:
    conv = conversation()
    await store.create_conversation("tenant-a", conv, [message("mine")])
    assert await store.get_conversation("tenant-b", conv["id"]) is None
    assert await store.conversation_items("tenant-b", conv["id"]) is None
    assert await store.add_conversation_items("tenant-b", conv["id"], [message("x")]) is None
    assert await store.update_conversation("tenant-b", {**conv, "metadata": {"a": "b"}}) is False
    assert await store.delete_conversation_item("tenant-b", conv["id"], "msg_x") is None
    assert await store.delete_conversation("tenant-b", conv["id"]) is False
    assert await store.get_conversation("tenant-a", conv["id"]) == conv
    assert [
        i["content"][0]["text"]
        for i in await store.conversation_items("tenant-a", conv["id"]) or []
    ] == ["mine"]


async def test_added_items_go_after_the_existing_ones(store: Store) -> None:
    conv = conversation()
    first = message("first")
    await store.create_conversation("t", conv, [first])
    added = await store.add_conversation_items(
        "t", conv["id"], [message("second"), message("third")]
    )
    assert added is not None
    assert await store.conversation_items("t", conv["id"]) == [first, *added]


async def test_an_item_id_the_conversation_already_holds_is_stored_under_a_fresh_one(
    store: Store,
) -> None:
    conv = conversation()
    await store.create_conversation("t", conv, [message("a", "msg_same")])
    added = await store.add_conversation_items(
        "t",
        conv["id"],
        [message("b", "msg_same"), message("c", "msg_new"), message("d", "msg_new")],
    )
    assert added is not None
    ids = [i["id"] for i in await store.conversation_items("t", conv["id"]) or []]
    assert len(set(ids)) == 4
    assert ids[0] == "msg_same"
    assert ids[2] == "msg_new"
    assert ids[1].startswith("msg_")
    assert ids[3].startswith("msg_")
    assert [i["id"] for i in added] == ids[1:]


async def test_updating_replaces_the_object_and_keeps_the_items(store: Store) -> None:
    conv = conversation(v="1")
    items = [message("kept")]
    await store.create_conversation("t", conv, items)
    assert await store.update_conversation("t", {**conv, "metadata": {"v": "2"}}) is True
    assert (await store.get_conversation("t", conv["id"]) or {})["metadata"] == {"v": "2"}
    assert await store.conversation_items("t", conv["id"]) == items


async def test_deleting_an_item_removes_only_that_item(store: Store) -> None:
    conv = conversation()
    a, b, c = message("a"), message("b"), message("c")
    await store.create_conversation("t", conv, [a, b, c])
    assert await store.delete_conversation_item("t", conv["id"], b["id"]) is True
    assert await store.delete_conversation_item("t", conv["id"], b["id"]) is False
    assert await store.conversation_items("t", conv["id"]) == [a, c]


async def test_a_deleted_conversation_is_gone_with_its_items(store: Store) -> None:
    conv = conversation()
    await store.create_conversation("t", conv, [message("a")])
    assert await store.delete_conversation("t", conv["id"]) is True
    assert await store.delete_conversation("t", conv["id"]) is False
    assert await store.get_conversation("t", conv["id"]) is None
    assert await store.conversation_items("t", conv["id"]) is None
    assert await store.add_conversation_items("t", conv["id"], [message("b")]) is None


async def test_unknown_conversations_are_none_everywhere(store: Store) -> None:
    missing = f"conv_{uuid.uuid4().hex}"
    assert await store.get_conversation("t", missing) is None
    assert await store.conversation_items("t", missing) is None
    assert await store.update_conversation("t", {**conversation(), "id": missing}) is False
    assert await store.delete_conversation_item("t", missing, "msg_x") is None


@pytest.fixture
async def small_store(backend_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    opened = open_store(Settings(store_url=backend_url, store_max_conversation_items=3))
    assert opened is not None
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_a_conversation_holds_at_most_the_item_limit_all_or_nothing(
    small_store: Store,
) -> None:
    conv = conversation()
    with pytest.raises(ConversationFullError) as caught:
        await small_store.create_conversation("t", conv, [message(str(n)) for n in range(4)])
    assert "store_max_conversation_items" in caught.value.message
    assert caught.value.status_code == 400
    assert await small_store.get_conversation("t", conv["id"]) is None
    await small_store.create_conversation("t", conv, [message("1"), message("2")])
    with pytest.raises(ConversationFullError):
        await small_store.add_conversation_items("t", conv["id"], [message("3"), message("4")])
    assert len(await small_store.conversation_items("t", conv["id"]) or []) == 2
    assert await small_store.add_conversation_items("t", conv["id"], [message("3")]) is not None
    assert len(await small_store.conversation_items("t", conv["id"]) or []) == 3


async def test_a_conversation_expires_after_the_ttl_since_its_last_change(
    backend_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    opened = open_store(Settings(store_url=backend_url, store_ttl=1.0))
    assert opened is not None
    try:
        conv = conversation()
        await opened.create_conversation("t", conv, [message("a")])
        await anyio.sleep(0.6)
        # A change renews it: it is still there 0.2 s after the first TTL ran out.
        assert await opened.add_conversation_items("t", conv["id"], [message("b")]) is not None
        await anyio.sleep(0.6)
        assert await opened.get_conversation("t", conv["id"]) == conv
        await anyio.sleep(0.6)
        assert await opened.get_conversation("t", conv["id"]) is None
        assert await opened.conversation_items("t", conv["id"]) is None
    finally:
        await opened.aclose()


async def test_concurrent_appends_to_one_conversation_all_land_once(store: Store) -> None:
    conv = conversation()
    await store.create_conversation("t", conv, [])
    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(store.add_conversation_items, "t", conv["id"], [message(str(n))])
    items = await store.conversation_items("t", conv["id"]) or []
    assert sorted(int(i["content"][0]["text"]) for i in items) == list(range(20))
    assert len({i["id"] for i in items}) == 20


async def test_memory_keeps_at_most_max_responses_conversations_least_recent_first() -> None:
    store = MemoryStore(ttl=60, max_responses=2, max_bytes=10**6, max_response_bytes=10**6)
    a, b, c = conversation(), conversation(), conversation()
    await store.create_conversation("t", a, [message("a")])
    await store.create_conversation("t", b, [message("b")])
    assert await store.get_conversation("t", a["id"]) == a  # a is now the most recent
    await store.create_conversation("t", c, [message("c")])
    assert await store.get_conversation("t", b["id"]) is None
    assert await store.get_conversation("t", a["id"]) == a
    assert await store.get_conversation("t", c["id"]) == c


async def test_memory_keeps_conversations_within_max_bytes() -> None:
    store = MemoryStore(ttl=60, max_responses=100, max_bytes=4000, max_response_bytes=10**6)
    kept = []
    for _ in range(10):
        conv = conversation()
        await store.create_conversation("t", conv, [message("x" * 900)])
        kept.append(conv["id"])
    live = [c for c in kept if await store.get_conversation("t", c) is not None]
    assert 1 <= len(live) <= 4
    assert live == kept[-len(live) :]


async def test_memory_conversations_expire_on_their_clock() -> None:
    now = [0.0]
    store = MemoryStore(
        ttl=10, max_responses=10, max_bytes=10**6, max_response_bytes=10**6, clock=lambda: now[0]
    )
    conv = conversation()
    await store.create_conversation("t", conv, [message("a")])
    now[0] = 9.0
    assert await store.add_conversation_items("t", conv["id"], [message("b")]) is not None
    now[0] = 18.0  # 9 s after the last change: alive
    assert await store.get_conversation("t", conv["id"]) == conv
    now[0] = 19.5
    assert await store.get_conversation("t", conv["id"]) is None


async def test_sqlite_purges_expired_conversations_and_their_items(tmp_path: Path) -> None:
    now = [1000.0]
    path = str(tmp_path / "c.db")
    store = SQLiteStore(path, ttl=10, max_response_bytes=10**6, clock=lambda: now[0])
    try:
        old, fresh = conversation(), conversation()
        await store.create_conversation("t", old, [message("a"), message("b")])
        now[0] = 1008.0
        await store.create_conversation("t", fresh, [message("c")])
        now[0] = 1015.0
        await store.purge_expired()
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        conversations = conn.execute("SELECT id FROM stream_mw_conversations").fetchall()
        items = conn.execute("SELECT conversation_id FROM stream_mw_conversation_items").fetchall()
    assert conversations == [(fresh["id"],)]
    assert items == [(fresh["id"],)]


async def test_redis_keeps_the_tenant_out_of_conversation_keys(redis_server: Any) -> None:
    store = RedisStore(redis_server.url, ttl=60, max_response_bytes=10**6)
    try:
        conv = conversation()
        await store.create_conversation("tenant-secret", conv, [message("a")])
        key = store.conversation_key("tenant-secret", conv["id"])
        assert "tenant-secret" not in key
        client = store._client
        ttls = [await client.pttl(k) for k in (key, f"{key}:ids", f"{key}:items")]
        assert all(0 < ttl <= 60_000 for ttl in ttls)
    finally:
        await store.aclose()
