"""StoreGateway: previous_response_id expansion, saving, and the GET/DELETE/input_items routes.

The routes are driven by the real openai SDK with strict response validation, through the
gateway mounted in a bare ASGI app (the middleware mounts it the same way), against every
backend.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import hypothesis
import openai
import orjson
import pytest
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from stream_mw import InvalidRequestError, NotFoundError, Settings, StoreUnavailableError
from stream_mw._store_gateway import StoreGateway, normalize_input, tenant_key
from tests.redis_server import RedisServer
from tests.store.helpers import make_response, new_response_id

pytestmark = pytest.mark.anyio

Scope = dict[str, Any]


def scope_for(key: str | None, method: str = "POST", path: str = "/v1/responses") -> Scope:
    headers = [] if key is None else [(b"authorization", f"Bearer {key}".encode())]
    return {"type": "http", "method": method, "path": path, "headers": headers}


ALICE = scope_for("key-alice")
BOB = scope_for("key-bob")


def asgi_app(gateway: StoreGateway) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if gateway.matches(scope):
            await gateway.handle(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b"not the gateway"})

    return app


def sdk(gateway: StoreGateway, key: str = "key-alice") -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app(gateway)))
    return openai.AsyncOpenAI(
        base_url="http://gateway.test/v1",
        api_key=key,
        http_client=http,
        max_retries=0,
        _strict_response_validation=True,
    )


def raw(gateway: StoreGateway, key: str = "key-alice") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi_app(gateway)),
        base_url="http://gateway.test",
        headers={"authorization": f"Bearer {key}"},
    )


async def turn(
    gateway: StoreGateway,
    scope: Scope,
    new_input: Any,
    previous: str | None = None,
    *,
    output: list[dict[str, Any]] | None = None,
    **request: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One request through the gateway as the middleware runs it: expand, (model), save.

    Returns (the body the upstream translation would see, the stored response)."""
    body: dict[str, Any] = {"model": "test-model", "input": new_input, **request}
    if previous is not None:
        body["previous_response_id"] = previous
    expanded, items = await gateway.expand(scope, body)
    response = make_response(new_response_id(), previous_response_id=previous)
    if output is not None:
        response["output"] = output
    if "store" in request:
        response["store"] = request["store"]
    await gateway.save(scope, items, response)
    return expanded, response


@pytest.fixture
async def gateway(store_settings: Settings) -> AsyncIterator[StoreGateway]:
    gw = StoreGateway(store_settings)
    try:
        yield gw
    finally:
        await gw.aclose()


# --- routes through the openai SDK -----------------------------------------------------------


async def test_sdk_retrieves_a_stored_response(gateway: StoreGateway) -> None:
    _, response = await turn(gateway, ALICE, "hi")
    async with sdk(gateway) as client:
        got = await client.responses.retrieve(response["id"])
    assert got.id == response["id"]
    assert got.output_text == "hello"
    # exclude_unset: newer SDKs add optional usage fields the stored object never had.
    assert got.model_dump(mode="json", exclude_unset=True)["usage"] == response["usage"]


async def test_sdk_lists_input_items_newest_first_by_default(gateway: StoreGateway) -> None:
    first_expanded, first = await turn(gateway, ALICE, "one")
    _, second = await turn(gateway, ALICE, [{"role": "user", "content": "two"}], first["id"])
    async with sdk(gateway) as client:
        page = await client.responses.input_items.list(second["id"])
    items = [item.model_dump(mode="json", exclude_none=True) for item in page.data]
    # Stored input of turn 1 (a user message), turn 1's output, then turn 2's user message.
    assert [i["type"] for i in items] == ["message", "message", "message"]
    assert [i["role"] for i in items] == ["user", "assistant", "user"]
    assert items[0]["content"] == [{"type": "input_text", "text": "two"}]
    assert items[2]["content"] == [{"type": "input_text", "text": "one"}]
    assert items[1]["id"] == first["output"][0]["id"]
    assert all(i["id"] for i in items)
    assert first_expanded["input"] == "one"  # no previous_response_id: body untouched


async def test_sdk_pages_through_input_items_in_both_orders(gateway: StoreGateway) -> None:
    inputs = [{"role": "user", "content": f"m{i}"} for i in range(7)]
    _, response = await turn(gateway, ALICE, inputs)
    async with sdk(gateway) as client:
        asc = [
            item.content[0].text
            async for item in client.responses.input_items.list(
                response["id"], limit=2, order="asc"
            )
        ]
        desc = [
            item.content[0].text
            async for item in client.responses.input_items.list(response["id"], limit=3)
        ]
    assert asc == [f"m{i}" for i in range(7)]
    assert desc == asc[::-1]


async def test_input_items_page_shape_and_cursor(gateway: StoreGateway) -> None:
    inputs = [{"role": "user", "content": f"m{i}", "id": f"msg_{i}"} for i in range(5)]
    _, response = await turn(gateway, ALICE, inputs)
    url = f"/v1/responses/{response['id']}/input_items"
    async with raw(gateway) as client:
        first = (await client.get(url, params={"limit": 2, "order": "asc"})).json()
        after = (
            await client.get(url, params={"limit": 2, "order": "asc", "after": "msg_1"})
        ).json()
        last = (await client.get(url, params={"order": "asc", "after": "msg_3"})).json()
        empty = (await client.get(url, params={"after": "msg_0"})).json()
    assert {k: v for k, v in first.items() if k != "data"} == {
        "object": "list", "first_id": "msg_0", "last_id": "msg_1", "has_more": True,
    }  # fmt: skip
    assert [i["id"] for i in after["data"]] == ["msg_2", "msg_3"]
    assert after["has_more"] is True
    assert [i["id"] for i in last["data"]] == ["msg_4"]
    assert last["has_more"] is False
    assert empty == {
        "object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False,
    }  # fmt: skip


async def test_duplicate_item_ids_page_to_the_end_one_item_at_a_time(
    gateway: StoreGateway,
) -> None:
    """Issue 11.8: with two items sharing an id, limit=1 followed msg_x forever."""
    inputs = [
        {"role": "user", "content": "a", "id": "msg_x"},
        {"role": "user", "content": "b", "id": "msg_x"},
        {"role": "user", "content": "c", "id": "msg_y"},
    ]
    _, response = await turn(gateway, ALICE, inputs)
    async with sdk(gateway) as client:
        pages = client.responses.input_items.list(response["id"], limit=1, order="asc")
        texts = []
        async for item in pages:
            texts.append(item.content[0].text)
            assert len(texts) <= 3, "pagination did not end"
    assert texts == ["a", "b", "c"]


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(
    ids=st.lists(st.sampled_from(["msg_a", "msg_b", "fc_a", ""]), max_size=10),
    limit=st.integers(1, 4),
    order=st.sampled_from(["asc", "desc"]),
)
def test_paging_by_the_last_id_lists_every_item_once_whatever_ids_were_sent(
    ids: list[str], limit: int, order: str
) -> None:
    async def pages() -> tuple[list[str], list[str]]:
        gateway = StoreGateway(Settings(store_url="memory://"))
        sent = [
            {"role": "user", "content": f"m{i}", "id": item_id} for i, item_id in enumerate(ids)
        ]
        _, response = await turn(gateway, ALICE, sent)
        seen: list[str] = []
        after: str | None = None
        for _ in range(len(ids) + 1):
            query = {"limit": str(limit), "order": order, **({"after": after} if after else {})}
            page = await gateway._list_input_items(
                tenant_key(ALICE, gateway._settings), response["id"], QueryParams(query)
            )
            seen += [item["content"][0]["text"] for item in page["data"]]
            if not page["has_more"]:
                break
            after = page["last_id"]
        else:
            raise AssertionError("pagination did not end")
        expected = [f"m{i}" for i in range(len(ids))]
        return seen, expected if order == "asc" else expected[::-1]

    seen, expected = anyio.run(pages)
    assert seen == expected


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"order": "newest"}, "order"),
        ({"after": "msg_unknown"}, "after"),
    ],
)
async def test_invalid_input_items_parameters_are_400_naming_the_parameter(
    gateway: StoreGateway, params: dict[str, str], param: str
) -> None:
    _, response = await turn(gateway, ALICE, "hi")
    async with raw(gateway) as client:
        reply = await client.get(f"/v1/responses/{response['id']}/input_items", params=params)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == param
    assert reply.json()["error"]["type"] == "invalid_request_error"


async def test_limit_bounds_are_inclusive(gateway: StoreGateway) -> None:
    _, response = await turn(gateway, ALICE, [{"role": "user", "content": "x"}] * 3)
    async with raw(gateway) as client:
        one = await client.get(f"/v1/responses/{response['id']}/input_items?limit=1")
        hundred = await client.get(f"/v1/responses/{response['id']}/input_items?limit=100")
    assert len(one.json()["data"]) == 1
    assert one.json()["has_more"] is True
    assert len(hundred.json()["data"]) == 3
    assert hundred.json()["has_more"] is False


async def test_sdk_deletes_then_retrieval_is_404(gateway: StoreGateway) -> None:
    _, response = await turn(gateway, ALICE, "hi")
    async with raw(gateway) as client:
        deleted = await client.delete(f"/v1/responses/{response['id']}")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": response["id"], "object": "response", "deleted": True}
    async with sdk(gateway) as client:
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(response["id"])
        with pytest.raises(openai.NotFoundError):
            await client.responses.delete(response["id"])
        with pytest.raises(openai.NotFoundError):
            await client.responses.input_items.list(response["id"])


async def test_a_huge_unknown_id_is_quoted_clipped_in_the_404(gateway: StoreGateway) -> None:
    """Issue 11: a 100 KB id was echoed back whole."""
    huge = "resp_" + "x" * 60_000  # httpx refuses URLs over 64 KiB
    async with raw(gateway) as client:
        replies = [
            await client.get(f"/v1/responses/{huge}"),
            await client.get(f"/v1/responses/{huge}/input_items"),
            await client.delete(f"/v1/responses/{huge}"),
        ]
    for reply in replies:
        assert reply.status_code == 404
        message = reply.json()["error"]["message"]
        assert message == f"Response with id '{huge[:64]}…' not found."
    with pytest.raises(NotFoundError) as caught:
        await gateway.expand(ALICE, {"model": "m", "input": "x", "previous_response_id": huge})
    assert len(caught.value.message) < 200


async def test_unknown_id_is_an_openai_shaped_404(gateway: StoreGateway) -> None:
    async with raw(gateway) as client:
        reply = await client.get("/v1/responses/resp_nope")
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "error": {
            "message": "Response with id 'resp_nope' not found.",
            "type": "not_found_error",
            "param": None,
            "code": None,
        }
    }


async def test_retrieving_with_stream_true_is_400(gateway: StoreGateway) -> None:
    _, response = await turn(gateway, ALICE, "hi")
    async with raw(gateway) as client:
        reply = await client.get(f"/v1/responses/{response['id']}", params={"stream": "true"})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "stream"


# --- tenant isolation ------------------------------------------------------------------------


async def test_another_credential_gets_404_for_get_delete_and_input_items(
    gateway: StoreGateway,
) -> None:
    _, response = await turn(gateway, ALICE, "secret")
    async with sdk(gateway, key="key-bob") as bob:
        with pytest.raises(openai.NotFoundError):
            await bob.responses.retrieve(response["id"])
        with pytest.raises(openai.NotFoundError):
            await bob.responses.input_items.list(response["id"])
        with pytest.raises(openai.NotFoundError):
            await bob.responses.delete(response["id"])
    async with sdk(gateway) as alice:  # bob's delete did not remove alice's response
        assert (await alice.responses.retrieve(response["id"])).id == response["id"]


async def test_another_credential_cannot_continue_a_response(gateway: StoreGateway) -> None:
    _, response = await turn(gateway, ALICE, "secret")
    with pytest.raises(NotFoundError) as caught:
        await gateway.expand(
            BOB, {"model": "m", "input": "x", "previous_response_id": response["id"]}
        )
    assert caught.value.param == "previous_response_id"
    assert "secret" not in orjson.dumps(caught.value.body()).decode()


async def test_requests_without_credentials_share_only_the_anonymous_tenant(
    gateway: StoreGateway,
) -> None:
    _, response = await turn(gateway, scope_for(None), "hi")
    again, _ = await turn(gateway, scope_for(None), "more", response["id"])
    assert len(again["input"]) == 3
    with pytest.raises(NotFoundError):
        await gateway.expand(
            ALICE, {"model": "m", "input": "x", "previous_response_id": response["id"]}
        )


async def test_tenant_setting_decides_who_sees_what(backend_url: str) -> None:
    def team(scope: Scope) -> str:
        return dict(scope["headers"]).get(b"x-team", b"none").decode()

    gateway = StoreGateway(Settings(store_url=backend_url, tenant=team))
    red_alice = {**ALICE, "headers": [*ALICE["headers"], (b"x-team", b"red")]}
    red_bob = {**BOB, "headers": [*BOB["headers"], (b"x-team", b"red")]}
    blue_alice = {**ALICE, "headers": [*ALICE["headers"], (b"x-team", b"blue")]}
    try:
        _, response = await turn(gateway, red_alice, "hi")
        expanded, _ = await turn(gateway, red_bob, "more", response["id"])
        assert len(expanded["input"]) == 3
        with pytest.raises(NotFoundError):
            await turn(gateway, blue_alice, "more", response["id"])
    finally:
        await gateway.aclose()


def test_default_tenant_is_a_hash_of_the_authorization_header() -> None:
    settings = Settings()
    alice = tenant_key(ALICE, settings)
    assert alice == tenant_key(scope_for("key-alice"), settings)
    assert alice != tenant_key(BOB, settings)
    assert alice != tenant_key(scope_for(None), settings)
    assert "key-alice" not in alice
    assert len(alice) == 64


# --- previous_response_id expansion ----------------------------------------------------------


async def test_three_turns_expand_to_the_whole_conversation_in_order(
    gateway: StoreGateway,
) -> None:
    call = {
        "type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
        "arguments": '{"city":"Paris"}', "status": "completed",
    }  # fmt: skip
    _, first = await turn(gateway, ALICE, "weather?", instructions="be brief")
    second_body, second = await turn(gateway, ALICE, "in Paris", first["id"], output=[call])
    result = {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
    third_body, third = await turn(gateway, ALICE, [result], second["id"])

    assert "previous_response_id" not in second_body
    assert "previous_response_id" not in third_body
    assert "instructions" not in third_body  # OpenAI does not carry instructions over
    texts = [
        (i["type"], i.get("role"), i.get("call_id"))
        for i in third_body["input"]
    ]  # fmt: skip
    assert texts == [
        ("message", "user", None),  # turn 1 input
        ("message", "assistant", None),  # turn 1 output
        ("message", "user", None),  # turn 2 input
        ("function_call", None, "call_1"),  # turn 2 output
        ("function_call_output", None, "call_1"),  # turn 3 input
    ]
    assert third_body["input"][1] == first["output"][0]
    assert third_body["input"][3] == call
    assert third_body["input"][4]["id"].startswith("fco_")
    assert third_body["input"][4]["status"] == "completed"
    async with sdk(gateway) as client:
        listed = [i.id async for i in client.responses.input_items.list(third["id"], order="asc")]
    assert listed == [i["id"] for i in third_body["input"]]


async def test_expansion_does_not_mutate_the_request_body(gateway: StoreGateway) -> None:
    _, first = await turn(gateway, ALICE, "hi")
    body = {"model": "m", "input": "next", "previous_response_id": first["id"], "stream": True}
    snapshot = orjson.dumps(body)
    expanded, items = await gateway.expand(ALICE, body)
    assert orjson.dumps(body) == snapshot
    assert expanded["stream"] is True
    assert expanded["input"] is items


# --- item_reference --------------------------------------------------------------------------


async def test_item_references_resolve_to_stored_input_and_output_items(
    gateway: StoreGateway,
) -> None:
    _, first = await turn(gateway, ALICE, "one")
    [user] = await first_input_items(gateway, first["id"])
    [answer] = first["output"]
    references = [
        {"type": "item_reference", "id": user["id"]},
        {"type": "item_reference", "id": answer["id"]},
        {"role": "user", "content": "two"},
    ]
    body, second = await turn(gateway, ALICE, references)
    assert body["input"][:2] == [user, answer]
    assert body["input"][2]["content"] == [{"type": "input_text", "text": "two"}]
    # What is stored is the resolved conversation, so it can be referenced or continued again.
    third_body, _ = await turn(gateway, ALICE, "three", second["id"])
    assert [i.get("role") for i in third_body["input"]] == [
        "user", "assistant", "user", "assistant", "user",
    ]  # fmt: skip
    assert third_body["input"][:2] == [user, answer]


async def first_input_items(gateway: StoreGateway, response_id: str) -> list[dict[str, Any]]:
    async with raw(gateway) as client:
        reply = await client.get(f"/v1/responses/{response_id}/input_items")
    items: list[dict[str, Any]] = reply.json()["data"]
    return items


async def test_item_references_work_beside_previous_response_id(gateway: StoreGateway) -> None:
    _, first = await turn(gateway, ALICE, "one")
    _, second = await turn(gateway, ALICE, "two")
    answer = first["output"][0]
    body, _ = await turn(
        gateway, ALICE, [{"type": "item_reference", "id": answer["id"]}], second["id"]
    )
    assert body["input"][-1] == answer
    assert len(body["input"]) == 3


@pytest.mark.parametrize("who", ["unknown", "foreign"])
async def test_an_unresolvable_item_reference_is_400_naming_its_index(
    gateway: StoreGateway, who: str
) -> None:
    _, first = await turn(gateway, BOB, "bob's")
    item_id = "msg_" + "0" * 40 if who == "unknown" else first["output"][0]["id"]
    new_input = [{"role": "user", "content": "x"}, {"type": "item_reference", "id": item_id}]
    with pytest.raises(InvalidRequestError) as caught:
        await gateway.expand(ALICE, {"model": "m", "input": new_input})
    assert caught.value.status_code == 400
    assert caught.value.param == "input[1]"
    assert item_id in caught.value.message


async def test_an_item_reference_without_a_store_is_400_saying_so() -> None:
    gateway = StoreGateway(Settings(store_url=None))
    new_input = [{"type": "item_reference", "id": "msg_1"}]
    with pytest.raises(InvalidRequestError, match="store_url is None") as caught:
        await gateway.expand(ALICE, {"model": "m", "input": new_input})
    assert caught.value.param == "input[0]"


async def test_unknown_previous_response_is_404_naming_the_parameter(
    gateway: StoreGateway,
) -> None:
    for bad in ("resp_unknown", "../../etc/passwd", "x" * 500):
        with pytest.raises(NotFoundError) as caught:
            await gateway.expand(ALICE, {"model": "m", "input": "x", "previous_response_id": bad})
        assert caught.value.status_code == 404
        assert caught.value.param == "previous_response_id"


async def test_non_string_previous_response_id_is_400(gateway: StoreGateway) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await gateway.expand(ALICE, {"model": "m", "input": "x", "previous_response_id": 12})
    assert caught.value.param == "previous_response_id"


async def test_previous_response_id_without_a_store_is_400_and_routes_pass_through() -> None:
    gateway = StoreGateway(Settings(store_url=None))
    assert not gateway.enabled
    assert not gateway.matches(scope_for("k", "GET", "/v1/responses/resp_1"))
    with pytest.raises(InvalidRequestError, match="store") as caught:
        await gateway.expand(ALICE, {"model": "m", "input": "x", "previous_response_id": "resp_1"})
    assert caught.value.status_code == 400
    body = {"model": "m", "input": "x"}
    assert (await gateway.expand(ALICE, body))[0] is body
    await gateway.save(ALICE, [], make_response("resp_1"))  # a no-op, not an error


# --- saving ----------------------------------------------------------------------------------


async def test_store_false_responses_are_not_stored(gateway: StoreGateway) -> None:
    _, response = await turn(gateway, ALICE, "hi", store=False)
    with pytest.raises(NotFoundError):
        await gateway.expand(
            ALICE, {"model": "m", "input": "x", "previous_response_id": response["id"]}
        )


async def test_a_response_too_large_to_store_answers_why_it_is_missing(
    backend_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11.9: it used to be silently absent: GET said 404 not found."""
    gateway = StoreGateway(Settings(store_url=backend_url, store_max_response_bytes=5_000))
    try:
        with caplog.at_level(logging.WARNING, logger="stream_mw"):
            _, big = await turn(gateway, ALICE, "x" * 10_000)
            _, small = await turn(gateway, ALICE, "x")
        assert "store_max_response_bytes" in caplog.text
        why = f"Response '{big['id']}' was not stored: it was "
        async with raw(gateway) as client:
            for path in (f"/v1/responses/{big['id']}", f"/v1/responses/{big['id']}/input_items"):
                reply = await client.get(path)
                assert reply.status_code == 404
                error = reply.json()["error"]
                assert error["message"].startswith(why)
                assert error["message"].endswith(" bytes, over store_max_response_bytes=5000.")
                assert error["code"] == "response_not_stored"
            assert (await client.get(f"/v1/responses/{small['id']}")).status_code == 200
        with pytest.raises(NotFoundError, match=why) as caught:
            await turn(gateway, ALICE, "next", big["id"])
        assert caught.value.param == "previous_response_id"
        assert caught.value.code == "response_not_stored"
    finally:
        await gateway.aclose()


async def test_save_never_raises_on_a_broken_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = StoreGateway(Settings(store_url=f"sqlite:///{tmp_path}/missing/dir/r.db"))
    try:
        with caplog.at_level(logging.WARNING, logger="stream_mw"):
            await gateway.save(ALICE, normalize_input("hi"), make_response("resp_broken"))
            await gateway.save(ALICE, [], {"no": "id"})
        assert "resp_broken was not stored" in caplog.text
        assert "None was not stored" in caplog.text
    finally:
        await gateway.aclose()


async def test_unreadable_store_answers_503_on_every_route(
    own_redis_server: RedisServer,
) -> None:
    gateway = StoreGateway(Settings(store_url=own_redis_server.url))
    try:
        _, response = await turn(gateway, ALICE, "hi")
        own_redis_server.stop()
        async with raw(gateway) as client:
            for method, path in [
                ("GET", f"/v1/responses/{response['id']}"),
                ("DELETE", f"/v1/responses/{response['id']}"),
                ("GET", f"/v1/responses/{response['id']}/input_items"),
            ]:
                reply = await client.request(method, path)
                assert reply.status_code == 503, (method, path)
                assert reply.json()["error"]["type"] == "server_error"
                assert "try again later" in reply.json()["error"]["message"]
        with pytest.raises(StoreUnavailableError):
            await gateway.expand(
                ALICE, {"model": "m", "input": "x", "previous_response_id": response["id"]}
            )
    finally:
        await gateway.aclose()


# --- routing and normalisation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "served"),
    [
        ("GET", "/v1/responses/resp_1", True),
        ("DELETE", "/v1/responses/resp_1", True),
        ("GET", "/v1/responses/resp_1/input_items", True),
        ("POST", "/v1/responses", False),
        ("GET", "/v1/responses", False),
        ("GET", "/v1/responses/", False),
        ("POST", "/v1/responses/resp_1", False),
        ("OPTIONS", "/v1/responses/resp_1", False),
        ("PUT", "/v1/responses/resp_1", True),  # served with 405
        ("DELETE", "/v1/responses/resp_1/input_items", True),  # served with 405
        ("POST", "/v1/responses/resp_1/cancel", False),
        ("GET", "/v1/responses/resp_1/other", False),
        ("GET", "/v1/chat/completions", False),
        ("GET", "/v2/responses/resp_1", False),
    ],
)
def test_gateway_serves_only_its_routes(method: str, path: str, served: bool) -> None:
    gateway = StoreGateway(Settings())
    assert gateway.matches(scope_for("k", method, path)) is served


def test_routes_follow_the_path_prefix() -> None:
    gateway = StoreGateway(Settings(path_prefix="/api/openai"))
    assert gateway.matches(scope_for("k", "GET", "/api/openai/responses/resp_1"))
    assert not gateway.matches(scope_for("k", "GET", "/v1/responses/resp_1"))
    assert not gateway.matches({"type": "websocket", "path": "/api/openai/responses/r"})


def test_string_input_becomes_one_user_message_with_an_id() -> None:
    [item] = normalize_input("hello")
    assert item["id"].startswith("msg_")
    assert item == {
        "type": "message", "id": item["id"], "role": "user",
        "content": [{"type": "input_text", "text": "hello"}], "status": "completed",
    }  # fmt: skip


def test_items_get_ids_prefixed_by_type_and_complete_items_are_kept_as_they_are() -> None:
    complete = {
        "type": "message", "id": "msg_keep", "role": "user", "status": "completed",
        "content": [{"type": "input_text", "text": "a"}],
    }  # fmt: skip
    items = normalize_input(
        [
            complete,
            {"role": "assistant", "content": "before"},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "r"},
            {"type": "reasoning", "summary": []},
            {"type": "custom_tool_call", "call_id": "d", "name": "g", "input": "x"},
            {"type": "custom_tool_call_output", "call_id": "d", "output": "y"},
            {"type": "item_reference", "id": "msg_ref"},
        ]
    )
    assert items[0] is complete
    assert [i["id"].split("_")[0] for i in items[1:]] == [
        "msg", "fc", "fco", "rs", "ctc", "ctco", "msg",
    ]  # fmt: skip
    assert items[1]["content"] == [{"type": "output_text", "text": "before", "annotations": []}]
    assert items[1]["type"] == "message"
    assert items[1]["status"] == "completed"
    assert all(i["status"] == "completed" for i in items[2:4] + items[5:7])
    assert normalize_input(items) == items
    assert all(a is b for a, b in zip(normalize_input(items), items, strict=True))


@pytest.mark.parametrize("bad", [12, {"role": "user"}, [1], [{"role": "user", "content": 5}]])
def test_malformed_input_is_400(bad: object) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        normalize_input(bad)
    assert (caught.value.param or "").startswith("input")


def test_routes_are_relative_to_the_root_path_of_a_mount() -> None:
    gateway = StoreGateway(Settings())
    mounted = {**scope_for("k", "GET", "/llm/v1/responses/resp_1"), "root_path": "/llm"}
    assert gateway.matches(mounted)
    assert not gateway.matches({**mounted, "path": "/llm/v2/responses/resp_1"})


async def test_save_completes_inside_a_scope_that_is_being_cancelled(
    gateway: StoreGateway,
) -> None:
    # The middleware saves from inside the wrapped app's send, which Starlette cancels once
    # the finished response's disconnect arrives; the write must still land.
    response = make_response(new_response_id())
    with anyio.CancelScope() as scope:
        scope.cancel()
        await gateway.save(ALICE, normalize_input("hi"), response)
    async with raw(gateway) as client:
        assert (await client.get(f"/v1/responses/{response['id']}")).status_code == 200
