"""The Conversations API through ResponsesMiddleware, driven by the real openai SDK.

In process (``httpx.ASGITransport``), in strict validation mode, against every backend: the
``conversations.*`` calls, a response created with ``conversation`` over two turns (the
scripted upstream records the Chat requests, so a test sees the history it received), tenant
isolation, and the routes' errors.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from stream_mw import ResponsesMiddleware
from stream_mw.upstreams import ScriptedBackend, ToolCall, Turn
from tests.redis_server import RedisServer
from tests.store.test_store_e2e import ROOT, Gateway
from tests.store.upstream import chat_app, text_of

pytestmark = pytest.mark.anyio
MODEL = "scripted-model"


def sdk(app: Any, key: str = "key-alice") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://gateway.test/v1",
        api_key=key,
        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),
        max_retries=0,
        _strict_response_validation=True,
    )


def raw(app: Any, key: str = "key-alice") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://gateway.test/v1",
        headers={"authorization": f"Bearer {key}"},
    )


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


def texts(chat_request: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], text_of(m.get("content"))) for m in chat_request["messages"]]


@pytest.fixture
async def mw(backend_url: str) -> Any:
    app = ResponsesMiddleware(chat_app(), store_url=backend_url, keepalive_interval=0)
    try:
        yield app
    finally:
        await app.gateway.aclose()


async def test_create_retrieve_update_and_delete_a_conversation(mw: Any) -> None:
    async with sdk(mw) as client:
        created = await client.conversations.create(
            items=[user("Hello"), {"type": "message", "role": "assistant", "content": "Hi!"}],
            metadata={"topic": "greetings"},
        )
        assert created.id.startswith("conv_")
        assert created.object == "conversation"
        assert created.metadata == {"topic": "greetings"}
        assert await client.conversations.retrieve(created.id) == created

        updated = await client.conversations.update(created.id, metadata={"topic": "tea"})
        assert updated.metadata == {"topic": "tea"}
        assert updated.created_at == created.created_at
        assert (await client.conversations.retrieve(created.id)).metadata == {"topic": "tea"}

        deleted = await client.conversations.delete(created.id)
        assert (deleted.id, deleted.object, deleted.deleted) == (
            created.id,
            "conversation.deleted",
            True,
        )
        with pytest.raises(openai.NotFoundError):
            await client.conversations.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            await client.conversations.delete(created.id)


async def test_items_are_created_listed_paged_retrieved_and_deleted(mw: Any) -> None:
    async with sdk(mw) as client:
        conv = await client.conversations.create()
        added = await client.conversations.items.create(
            conv.id, items=[user(f"message {n}") for n in range(5)]
        )
        assert [i.content[0].text for i in added.data] == [f"message {n}" for n in range(5)]
        assert (added.first_id, added.last_id, added.has_more) == (
            added.data[0].id,
            added.data[-1].id,
            False,
        )
        ids = [i.id for i in added.data]

        newest = await client.conversations.items.list(conv.id, limit=2)
        assert [i.id for i in newest.data] == ids[::-1][:2]
        assert newest.has_more is True
        assert (newest.first_id, newest.last_id) == (ids[4], ids[3])
        # The SDK's paginator follows has_more/after to the end.
        assert [i.id async for i in client.conversations.items.list(conv.id, limit=2)] == ids[::-1]
        oldest = [i.id async for i in client.conversations.items.list(conv.id, order="asc")]
        assert oldest == ids
        last = await client.conversations.items.list(conv.id, order="asc", after=ids[3])
        assert ([i.id for i in last.data], last.has_more) == ([ids[4]], False)

        item = await client.conversations.items.retrieve(ids[2], conversation_id=conv.id)
        assert item.type == "message"
        assert item.content[0].text == "message 2"

        after_delete = await client.conversations.items.delete(ids[2], conversation_id=conv.id)
        assert after_delete.id == conv.id
        assert after_delete.object == "conversation"
        remaining = [i.id async for i in client.conversations.items.list(conv.id, order="asc")]
        assert remaining == [ids[0], ids[1], ids[3], ids[4]]
        with pytest.raises(openai.NotFoundError):
            await client.conversations.items.retrieve(ids[2], conversation_id=conv.id)
        with pytest.raises(openai.NotFoundError):
            await client.conversations.items.delete(ids[2], conversation_id=conv.id)


async def test_a_response_with_conversation_sees_and_extends_it_over_two_turns(
    mw: Any,
) -> None:
    upstream = mw.app
    async with sdk(mw) as client:
        conv = await client.conversations.create(items=[user("My name is Ada.")])
        stream = await client.responses.create(
            model=MODEL, input="Hi there", conversation=conv.id, stream=True
        )
        events = [event async for event in stream]
        first = events[-1].response
        assert events[0].response.conversation is not None
        assert events[0].response.conversation.id == conv.id
        assert first.conversation is not None
        assert first.conversation.id == conv.id
        second = await client.responses.create(
            model=MODEL, input="And again", conversation={"id": conv.id}
        )
        assert second.conversation is not None
        assert second.conversation.id == conv.id

        assert [texts(r) for r in upstream.state.requests] == [
            [("user", "My name is Ada."), ("user", "Hi there")],
            [
                ("user", "My name is Ada."),
                ("user", "Hi there"),
                ("assistant", "Hello! (saw 2 messages)"),
                ("user", "And again"),
            ],
        ]
        items = [i async for i in client.conversations.items.list(conv.id, order="asc")]
        assert [(i.type, i.role, i.content[0].text) for i in items] == [
            ("message", "user", "My name is Ada."),
            ("message", "user", "Hi there"),
            ("message", "assistant", "Hello! (saw 2 messages)"),
            ("message", "user", "And again"),
            ("message", "assistant", "Hello! (saw 4 messages)"),
        ]
        # The output items keep the ids the response gave them.
        assert items[2].id == first.output[0].id
        assert items[4].id == second.output[0].id


async def test_a_response_with_store_false_still_adds_its_turn_to_the_conversation(
    mw: Any,
) -> None:
    async with sdk(mw) as client:
        conv = await client.conversations.create()
        response = await client.responses.create(
            model=MODEL, input="Hi", conversation=conv.id, store=False
        )
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(response.id)
        items = [i async for i in client.conversations.items.list(conv.id, order="asc")]
        assert [i.role for i in items] == ["user", "assistant"]


async def test_another_credential_sees_no_conversation_of_mine(mw: Any) -> None:
    async with sdk(mw) as alice, sdk(mw, key="key-bob") as bob:
        conv = await alice.conversations.create(items=[user("secret")])
        with pytest.raises(openai.NotFoundError):
            await bob.conversations.retrieve(conv.id)
        with pytest.raises(openai.NotFoundError):
            await bob.conversations.items.list(conv.id)
        with pytest.raises(openai.NotFoundError):
            await bob.conversations.items.create(conv.id, items=[user("mine now")])
        with pytest.raises(openai.NotFoundError):
            await bob.conversations.update(conv.id, metadata={"owner": "bob"})
        with pytest.raises(openai.NotFoundError):
            await bob.conversations.delete(conv.id)
        with pytest.raises(openai.NotFoundError):
            await bob.responses.create(model=MODEL, input="hi", conversation=conv.id)
        items = [i async for i in alice.conversations.items.list(conv.id)]
        assert [i.content[0].text for i in items] == ["secret"]


async def test_items_replayed_with_their_id_and_status_are_accepted_as_input(mw: Any) -> None:
    async with sdk(mw) as client:
        conv = await client.conversations.create(items=[user("Hi there")])
        first = await client.responses.create(model=MODEL, input="Hello", conversation=conv.id)
        listed = [i async for i in client.conversations.items.list(conv.id, order="asc")]
        # As the Agents SDK replays history: the listed items, ids and statuses included.
        replay = [i.model_dump(exclude_unset=True) for i in listed]
        assert all("id" in i and "status" in i for i in replay)
        again = await client.responses.create(model=MODEL, input=[*replay, user("More")])
        assert again.output_text == "Hello! (saw 4 messages)"
        assert first.status == again.status == "completed"


async def test_the_routes_answer_openai_shaped_errors(mw: Any) -> None:
    async with raw(mw) as http:
        conv = (await http.post("/conversations", json={})).json()
        assert conv["metadata"] == {}
        cases = [
            ("PUT", f"/conversations/{conv['id']}", None, 405, None),
            ("GET", "/conversations", None, 405, None),
            ("POST", "/conversations", {"items": "nope"}, 400, "items"),
            ("POST", "/conversations", {"items": [{"type": 1}]}, 400, "items[0].type"),
            ("POST", "/conversations", {"metadata": {"k": 1}}, 400, "metadata.k"),
            (
                "POST",
                "/conversations",
                {"metadata": {str(n): "v" for n in range(17)}},
                400,
                "metadata",
            ),
            ("POST", "/conversations", {"items": [user("x")] * 21}, 400, "items"),
            ("POST", f"/conversations/{conv['id']}", {}, 400, "metadata"),
            ("POST", f"/conversations/{conv['id']}/items", {}, 400, "items"),
            ("GET", f"/conversations/{conv['id']}/items?order=up", None, 400, "order"),
            ("GET", f"/conversations/{conv['id']}/items?limit=0", None, 400, "limit"),
            ("GET", f"/conversations/{conv['id']}/items?after=msg_x", None, 400, "after"),
            ("GET", "/conversations/conv_missing", None, 404, None),
            ("GET", "/conversations/conv_missing/items", None, 404, None),
            ("GET", "/conversations/conv.dotted", None, 404, None),
            ("GET", f"/conversations/{conv['id']}/items/msg.dotted", None, 404, None),
        ]
        for method, path, body, status, param in cases:
            answer = await http.request(method, path, json=body)
            assert answer.status_code == status, (method, path, answer.text)
            error = answer.json()["error"]
            assert error["param"] == param, (method, path, error)
            assert error["message"]
        assert (await http.put(f"/conversations/{conv['id']}")).headers["allow"] == (
            "GET, POST, DELETE"
        )
        broken = await http.post("/conversations", content=b"{not json")
        assert broken.status_code == 400


async def test_a_full_conversation_refuses_more_items_and_a_turn_before_generating(
    backend_url: str,
) -> None:
    upstream = chat_app()
    mw = ResponsesMiddleware(
        upstream, store_url=backend_url, store_max_conversation_items=2, keepalive_interval=0
    )
    try:
        async with sdk(mw) as client:
            conv = await client.conversations.create(items=[user("one")])
            with pytest.raises(openai.BadRequestError) as caught:
                await client.conversations.items.create(conv.id, items=[user("2"), user("3")])
            assert "store_max_conversation_items" in caught.value.message
            with pytest.raises(openai.BadRequestError):
                await client.responses.create(
                    model=MODEL, input=[user("2"), user("3")], conversation=conv.id
                )
            assert upstream.state.requests == []
    finally:
        await mw.gateway.aclose()


async def test_without_a_store_the_conversation_routes_are_the_apps() -> None:
    mw = ResponsesMiddleware(chat_app(), store_url=None)
    async with raw(mw) as http:
        answer = await http.post("/conversations", json={})
    # The wrapped app has no such route: its own 404, not the middleware's.
    assert answer.status_code == 404
    assert answer.text == "Not Found"


def failing_or_long(request: Any) -> Turn:
    text = text_of(request["messages"][-1].get("content"))
    if "fail in band" in text:
        return Turn(content="partial", failure={"message": "boom", "type": "server_error"})
    if "fail" in text:
        return Turn(status=500, failure={"message": "boom", "type": "server_error"})
    if "long" in text:
        return Turn(content="one", tool_calls=(ToolCall("f", {"a": 1}), ToolCall("g", {"b": 2})))
    return Turn.text("fine")


async def test_a_failed_response_adds_nothing_to_its_conversation(backend_url: str) -> None:
    mw = ResponsesMiddleware(
        ScriptedBackend(failing_or_long), store_url=backend_url, keepalive_interval=0
    )
    try:
        async with sdk(mw) as client:
            conv = await client.conversations.create(items=[user("hello")])
            with pytest.raises(openai.InternalServerError):
                await client.responses.create(model=MODEL, input="fail now", conversation=conv.id)
            stream = await client.responses.create(
                model=MODEL, input="fail in band", conversation=conv.id, stream=True
            )
            events = [event async for event in stream]
            assert events[-1].type == "response.failed"
            items = [i async for i in client.conversations.items.list(conv.id)]
            assert [i.content[0].text for i in items] == ["hello"]
    finally:
        await mw.gateway.aclose()


async def test_a_turn_whose_output_overflows_the_conversation_is_not_added_but_completes(
    backend_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    mw = ResponsesMiddleware(
        ScriptedBackend(failing_or_long),
        store_url=backend_url,
        store_max_conversation_items=3,
        keepalive_interval=0,
    )
    try:
        async with sdk(mw) as client:
            conv = await client.conversations.create()
            # One input item fits; with its three output items the turn would hold four.
            response = await client.responses.create(
                model=MODEL, input="long answer please", conversation=conv.id
            )
            assert response.status == "completed"
            assert len(response.output) == 3
            assert [i async for i in client.conversations.items.list(conv.id)] == []
        assert any(
            "not added to its conversation" in r.getMessage()
            and "store_max_conversation_items" in r.getMessage()
            for r in caplog.records
        )
    finally:
        await mw.gateway.aclose()


async def test_a_conversation_body_over_max_request_bytes_is_413() -> None:
    mw = ResponsesMiddleware(chat_app(), max_request_bytes=1000)
    async with raw(mw) as http:
        answer = await http.post(
            "/conversations", json={"metadata": {"k": "v" * 500}, "x": "y" * 600}
        )
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "request_too_large"


async def test_an_item_reference_cannot_be_added_to_a_conversation(mw: Any) -> None:
    async with raw(mw) as http:
        answer = await http.post(
            "/conversations", json={"items": [{"type": "item_reference", "id": "msg_1"}]}
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "items[0]"


@pytest.fixture
def gateways_on_redis(redis_server: RedisServer) -> Iterator[tuple[Gateway, Gateway]]:
    env = {
        **os.environ,
        "STREAM_MW_STORE_URL": redis_server.url,
        "STREAM_MW_KEEPALIVE_INTERVAL": "0",
        "PYTHONPATH": str(ROOT),
    }
    with contextlib.ExitStack() as stack:
        first = Gateway(env)
        stack.callback(first.stop)
        second = Gateway(env)
        stack.callback(second.stop)
        yield first, second


def test_a_conversation_is_shared_by_two_gateway_processes_on_one_redis(
    gateways_on_redis: tuple[Gateway, Gateway],
) -> None:
    a, b = gateways_on_redis
    with a.client("key-alice") as on_a, b.client("key-alice") as on_b:
        conv = on_a.conversations.create(items=[user("My name is Ada.")])
        first = on_b.responses.create(model=MODEL, input="Hi there", conversation=conv.id)
        assert first.output_text == "Hello! (saw 2 messages)"
        second = on_a.responses.create(model=MODEL, input="Again", conversation=conv.id)
        # Process a's upstream saw the turn only process b had run.
        assert second.output_text == "Hello! (saw 4 messages)"
        texts_on_b = [
            i.content[0].text for i in on_b.conversations.items.list(conv.id, order="asc")
        ]
        assert texts_on_b == [
            "My name is Ada.",
            "Hi there",
            "Hello! (saw 2 messages)",
            "Again",
            "Hello! (saw 4 messages)",
        ]
        on_b.conversations.delete(conv.id)
        with pytest.raises(openai.NotFoundError):
            on_a.conversations.retrieve(conv.id)


async def test_the_routes_follow_path_prefix() -> None:
    mw = ResponsesMiddleware(chat_app(), path_prefix="/api")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mw), base_url="http://gateway.test"
    ) as http:
        created = await http.post("/api/conversations", json={"metadata": {"k": "v"}})
        assert created.status_code == 200
        conv_id = created.json()["id"]
        assert (await http.get(f"/api/conversations/{conv_id}")).json()["metadata"] == {"k": "v"}
        assert (await http.post("/v1/conversations", json={})).text == "Not Found"


async def test_a_redis_outage_answers_503_on_the_routes_and_for_a_turn(
    own_redis_server: RedisServer,
) -> None:
    upstream = chat_app()
    mw = ResponsesMiddleware(upstream, store_url=own_redis_server.url, keepalive_interval=0)
    try:
        async with sdk(mw) as client:
            conv = await client.conversations.create()
            own_redis_server.stop()
            for call in (
                lambda: client.conversations.create(),
                lambda: client.conversations.retrieve(conv.id),
                lambda: client.conversations.items.list(conv.id),
                lambda: client.responses.create(model=MODEL, input="hi", conversation=conv.id),
            ):
                with pytest.raises(openai.InternalServerError) as caught:
                    await call()
                assert caught.value.status_code == 503
            assert upstream.state.requests == []
    finally:
        await mw.gateway.aclose()
