"""The Conversations API over uvicorn: the openai SDK's ``conversations.*`` and
``responses.create(conversation=...)``, and the Agents SDK's ``OpenAIConversationsSession``.

The upstream is a ``ScriptedBackend`` whose reply counts the Chat messages it received, and
which records every Chat request, so a test sees the history each turn carried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import openai
import pytest

from stream_mw import ResponsesMiddleware
from stream_mw.upstreams import ScriptedBackend, Turn
from tests.e2e.conftest import RunningServer, serve

pytestmark = pytest.mark.anyio
MODEL = "scripted"


def reply(request: Mapping[str, Any]) -> Turn:
    return Turn.text(f"Reply to {len(request['messages'])} messages.")


def said(chat_request: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for message in chat_request["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content)
        out.append((message["role"], content))
    return out


@pytest.fixture(scope="module")
def backend() -> ScriptedBackend:
    return ScriptedBackend(reply)


@pytest.fixture(scope="module")
def server(backend: ScriptedBackend) -> Iterator[RunningServer]:
    with serve(ResponsesMiddleware(backend, keepalive_interval=0)) as running:
        yield running


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=server.url + "/v1",
        api_key="sk-alice",
        max_retries=0,
        _strict_response_validation=True,
    ) as sdk:
        yield sdk


async def test_the_openai_sdk_manages_a_conversation_and_its_items(
    client: openai.AsyncOpenAI,
) -> None:
    conv = await client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "first"}], metadata={"a": "1"}
    )
    assert (await client.conversations.retrieve(conv.id)).metadata == {"a": "1"}
    assert (await client.conversations.update(conv.id, metadata={"a": "2"})).metadata == {"a": "2"}

    added = await client.conversations.items.create(
        conv.id,
        items=[{"type": "message", "role": "user", "content": f"more {n}"} for n in range(4)],
    )
    assert len(added.data) == 4
    page = await client.conversations.items.list(conv.id, limit=2)
    assert [i.content[0].text for i in page.data] == ["more 3", "more 2"]
    assert page.has_more is True
    everything = [i async for i in client.conversations.items.list(conv.id, limit=2)]
    assert [i.content[0].text for i in everything] == [
        "more 3", "more 2", "more 1", "more 0", "first",
    ]  # fmt: skip

    item = await client.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    assert item.content[0].text == "more 0"
    await client.conversations.items.delete(added.data[0].id, conversation_id=conv.id)
    left = [i.content[0].text async for i in client.conversations.items.list(conv.id, order="asc")]
    assert left == ["first", "more 1", "more 2", "more 3"]

    assert (await client.conversations.delete(conv.id)).deleted is True
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conv.id)


async def test_two_turns_with_conversation_carry_the_first_turn_to_the_upstream(
    client: openai.AsyncOpenAI, backend: ScriptedBackend
) -> None:
    conv = await client.conversations.create()
    before = len(backend.chat_requests)
    first = await client.responses.create(model=MODEL, input="Hello", conversation=conv.id)
    async with client.responses.stream(
        model=MODEL, input="Again", conversation={"id": conv.id}
    ) as stream:
        second = await stream.get_final_response()

    assert first.output_text == "Reply to 1 messages."
    assert second.output_text == "Reply to 3 messages."
    assert first.conversation is not None
    assert first.conversation.id == conv.id
    assert second.conversation is not None
    assert second.conversation.id == conv.id
    turn_one, turn_two = backend.chat_requests[before:]
    assert said(turn_one) == [("user", "Hello")]
    assert said(turn_two) == [
        ("user", "Hello"),
        ("assistant", "Reply to 1 messages."),
        ("user", "Again"),
    ]
    kept = [i async for i in client.conversations.items.list(conv.id, order="asc")]
    assert [i.id for i in kept][1] == first.output[0].id
    assert len(kept) == 4


async def test_another_api_key_gets_404_for_my_conversation(
    client: openai.AsyncOpenAI, server: RunningServer
) -> None:
    conv = await client.conversations.create(items=[{"role": "user", "content": "private"}])
    async with openai.AsyncOpenAI(
        base_url=server.url + "/v1", api_key="sk-bob", max_retries=0
    ) as bob:
        with pytest.raises(openai.NotFoundError):
            await bob.conversations.retrieve(conv.id)
        with pytest.raises(openai.NotFoundError):
            await bob.conversations.items.list(conv.id)
        with pytest.raises(openai.NotFoundError):
            await bob.responses.create(model=MODEL, input="hi", conversation=conv.id)
    async with httpx.AsyncClient(base_url=server.url + "/v1") as anonymous:
        assert (await anonymous.get(f"/conversations/{conv.id}")).status_code == 404


async def test_the_agents_sdk_keeps_a_two_turn_session_in_a_conversation(
    client: openai.AsyncOpenAI, backend: ScriptedBackend
) -> None:
    pytest.importorskip("agents", reason="needs openai-agents (the test extra)")
    from agents import Agent, OpenAIConversationsSession, OpenAIResponsesModel, RunConfig, Runner

    session = OpenAIConversationsSession(openai_client=client)
    agent = Agent(
        name="echo",
        instructions="Be brief.",
        model=OpenAIResponsesModel(model=MODEL, openai_client=client),
    )
    config = RunConfig(tracing_disabled=True)
    before = len(backend.chat_requests)
    first = await Runner.run(agent, "My name is Ada.", session=session, run_config=config)
    second = await Runner.run(agent, "What is my name?", session=session, run_config=config)

    assert first.final_output == "Reply to 2 messages."
    assert second.final_output == "Reply to 4 messages."
    turn_one, turn_two = backend.chat_requests[before:]
    assert said(turn_one) == [("system", "Be brief."), ("user", "My name is Ada.")]
    assert said(turn_two) == [
        ("system", "Be brief."),
        ("user", "My name is Ada."),
        ("assistant", "Reply to 2 messages."),
        ("user", "What is my name?"),
    ]
    # The session lives in the server's conversation: a fresh client sees all four items.
    items = [i async for i in client.conversations.items.list(session.session_id, order="asc")]
    assert [(i.type, i.role) for i in items] == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
        ("message", "assistant"),
    ]
    assert await session.pop_item() is not None
    assert len(await session.get_items()) == 3
    conversation_id = session.session_id
    await session.clear_session()
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conversation_id)
