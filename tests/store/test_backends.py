"""The Store contract, run against every backend (memory, a SQLite file, a real Redis)."""

from __future__ import annotations

import logging

import pytest

from stream_mw import Settings
from stream_mw._store import NotStored, Store, StoredResponse, open_store
from tests.store.helpers import new_response_id, stored

pytestmark = pytest.mark.anyio


async def test_put_then_get_returns_an_equal_response(store: Store) -> None:
    item = stored(text="héllo ✓")
    await store.put("tenant-a", item)
    assert await store.get("tenant-a", item.id) == item


async def test_unknown_id_is_none(store: Store) -> None:
    assert await store.get("tenant-a", new_response_id()) is None


async def test_another_tenant_does_not_see_the_response(store: Store) -> None:
    item = stored()
    await store.put("tenant-a", item)
    assert await store.get("tenant-b", item.id) is None
    assert await store.delete("tenant-b", item.id) is False
    assert await store.get("tenant-a", item.id) == item


async def test_the_same_id_under_two_tenants_is_two_responses(store: Store) -> None:
    response_id = new_response_id()
    await store.put("tenant-a", stored(response_id, text="for a"))
    await store.put("tenant-b", stored(response_id, text="for b"))
    a = await store.get("tenant-a", response_id)
    b = await store.get("tenant-b", response_id)
    assert a is not None
    assert b is not None
    assert a.response["output"][0]["content"][0]["text"] == "for a"
    assert b.response["output"][0]["content"][0]["text"] == "for b"


async def test_delete_removes_and_reports_whether_it_existed(store: Store) -> None:
    item = stored()
    await store.put("t", item)
    assert await store.delete("t", item.id) is True
    assert await store.get("t", item.id) is None
    assert await store.delete("t", item.id) is False


async def test_put_again_replaces_the_response(store: Store) -> None:
    response_id = new_response_id()
    await store.put("t", stored(response_id, text="first"))
    await store.put("t", stored(response_id, text="second"))
    got = await store.get("t", response_id)
    assert got is not None
    assert got.response["output"][0]["content"][0]["text"] == "second"


async def test_mutating_a_returned_response_does_not_change_the_stored_one(
    store: Store,
) -> None:
    item = stored()
    await store.put("t", item)
    got = await store.get("t", item.id)
    assert got is not None
    got.response["output"].clear()
    item.response["status"] = "failed"
    again = await store.get("t", item.id)
    assert again is not None
    assert again.response["output"]
    assert again.response["status"] == "completed"


async def test_response_over_the_size_limit_leaves_a_tombstone_and_a_warning(
    backend_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    small = stored(text="x")
    limit = len(small.encode()) + 100
    store = open_store(Settings(store_url=backend_url, store_max_response_bytes=limit))
    assert store is not None
    try:
        big = stored(text="x" * 200)
        with caplog.at_level(logging.WARNING, logger="stream_mw"):
            await store.put("t", big)
            await store.put("t", small)
        assert await store.get("t", big.id) == NotStored(
            big.id, len(big.encode()), limit, "store_max_response_bytes"
        )
        assert await store.get("t", small.id) == small
        assert await store.get_items("t", big.item_ids()) == {}
        assert any(
            r.levelno == logging.WARNING
            and big.id in r.getMessage()
            and "store_max_response_bytes" in r.getMessage()
            for r in caplog.records
        )
    finally:
        await store.aclose()


async def test_large_response_under_the_limit_round_trips(store: Store) -> None:
    item = StoredResponse(
        response=stored(text="y" * 2_000_000).response,
        input_items=[
            {"type": "function_call_output", "id": f"fco_{i}", "call_id": f"call_{i}",
             "output": "z" * 1000, "status": "completed"}
            for i in range(500)
        ],
    )  # fmt: skip
    await store.put("t", item)
    assert await store.get("t", item.id) == item


# --- the item index (item_reference) -------------------------------------------------------


async def test_input_and_output_items_are_found_by_id(store: Store) -> None:
    item = stored()
    await store.put("t", item)
    [user] = item.input_items
    [answer] = item.response["output"]
    found = await store.get_items("t", [answer["id"], user["id"]])
    assert found == {answer["id"]: answer, user["id"]: user}


async def test_items_of_every_type_are_indexed(store: Store) -> None:
    items = [
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f",
         "arguments": "{}", "status": "completed"},
        {"type": "function_call_output", "id": "fco_1", "call_id": "c1", "output": "42",
         "status": "completed"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "t"}]},
        {"type": "custom_tool_call", "id": "ctc_1", "call_id": "c2", "name": "g", "input": "x",
         "status": "completed"},
    ]  # fmt: skip
    item = StoredResponse(response=stored().response, input_items=items)
    await store.put("t", item)
    assert await store.get_items("t", [i["id"] for i in items]) == {i["id"]: i for i in items}


async def test_unknown_and_foreign_item_ids_are_absent(store: Store) -> None:
    item = stored()
    await store.put("tenant-a", item)
    answer_id = item.response["output"][0]["id"]
    assert await store.get_items("tenant-b", [answer_id]) == {}
    assert await store.get_items("tenant-a", ["msg_unknown", answer_id]) == {
        answer_id: item.response["output"][0]
    }
    assert await store.get_items("tenant-a", []) == {}


async def test_items_of_a_deleted_response_are_absent(store: Store) -> None:
    item = stored()
    await store.put("t", item)
    await store.delete("t", item.id)
    assert await store.get_items("t", item.item_ids()) == {}


async def test_an_item_repeated_by_a_later_turn_outlives_the_earlier_turn(
    store: Store,
) -> None:
    first = stored()
    await store.put("t", first)
    # The second turn of a previous_response_id chain holds the first turn's items again.
    second = StoredResponse(response=stored(text="second").response, input_items=first.items())
    await store.put("t", second)
    await store.delete("t", first.id)
    answer = first.response["output"][0]
    assert await store.get_items("t", [answer["id"]]) == {answer["id"]: answer}
