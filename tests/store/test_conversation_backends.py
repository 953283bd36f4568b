"""The Store's conversation contract, run against every backend (memory, SQLite, real Redis)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from stream_mw import Settings
from stream_mw._store import ConversationFullError, Store, open_store

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
