"""ScriptedBackend: scripted turns become real Chat Completions SSE, and requests are recorded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stream_mw import ResponsesMiddleware
from stream_mw.upstreams import ScriptedBackend, ToolCall, Turn, demo_reply, load_script

CHAT: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "stream_options": {"include_usage": True},
}


async def chat(
    app: Any, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scripted") as client:
        return await client.post("/v1/chat/completions", json=body or CHAT, headers=headers)


def events(response: httpx.Response) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded except ``[DONE]``."""
    out: list[Any] = []
    for block in response.text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def deltas(chunks: list[Any], key: str) -> list[Any]:
    return [
        c["choices"][0]["delta"][key]
        for c in chunks
        if isinstance(c, dict) and c.get("choices") and key in c["choices"][0]["delta"]
    ]


@pytest.mark.anyio
async def test_a_text_turn_streams_role_words_finish_usage_and_done() -> None:
    response = await chat(ScriptedBackend([Turn.text("Hello there, friend.")]))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = events(response)
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert deltas(chunks, "content")[1:] == ["Hello ", "there, ", "friend."]
    assert [c["choices"][0]["finish_reason"] for c in chunks[-3:-2]] == ["stop"]
    usage = chunks[-2]["usage"]
    assert chunks[-2]["choices"] == []
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert chunks[-1] == "[DONE]"
    assert {c["model"] for c in chunks[:-1]} == {"m"}


@pytest.mark.anyio
async def test_usage_is_sent_only_when_the_request_asks_for_it() -> None:
    body = {**CHAT, "stream_options": None}
    chunks = events(await chat(ScriptedBackend([Turn.text("hi")]), body))
    assert not any("usage" in c for c in chunks if isinstance(c, dict))


@pytest.mark.anyio
async def test_exact_usage_and_fragments_are_honoured() -> None:
    turn = Turn(content="abcdefgh", fragments=3, usage={"prompt_tokens": 5, "completion_tokens": 7})
    chunks = events(await chat(ScriptedBackend([turn])))
    assert deltas(chunks, "content")[1:] == ["abc", "def", "gh"]
    assert chunks[-2]["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}


@pytest.mark.anyio
async def test_reasoning_streams_before_the_text() -> None:
    turn = Turn.text("Answer.", reasoning="Think first.")
    chunks = events(await chat(ScriptedBackend([turn])))
    kinds = [
        next(k for k in ("reasoning_content", "content") if k in c["choices"][0]["delta"])
        for c in chunks[1:]
        if isinstance(c, dict) and c["choices"] and c["choices"][0]["delta"]
    ]
    assert kinds == ["reasoning_content", "reasoning_content", "content"]
    assert "".join(deltas(chunks, "reasoning_content")) == "Think first."
    details = chunks[-2]["usage"]["completion_tokens_details"]
    assert details["reasoning_tokens"] > 0


@pytest.mark.anyio
async def test_a_tool_call_streams_id_and_name_then_its_arguments_in_fragments() -> None:
    turn = Turn.tool_call("exec_command", {"cmd": "ls -l"}, call_id="call_1", fragments=4)
    chunks = events(await chat(ScriptedBackend([turn])))
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if _has_calls(c)]
    assert calls[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "exec_command", "arguments": ""},
    }
    fragments = [c["function"]["arguments"] for c in calls[1:]]
    assert len(fragments) == 4
    assert json.loads("".join(fragments)) == {"cmd": "ls -l"}
    finish = [c["choices"][0]["finish_reason"] for c in chunks if _finish(c)]
    assert finish == ["tool_calls"]


@pytest.mark.anyio
async def test_parallel_tool_calls_get_their_own_indexes_and_fresh_ids() -> None:
    turn = Turn(tool_calls=(ToolCall("a", "{}"), ToolCall("b", '{"x":1}')))
    chunks = events(await chat(ScriptedBackend([turn])))
    heads = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if _has_calls(c) and "id" in c["choices"][0]["delta"]["tool_calls"][0]
    ]
    assert [(h["index"], h["function"]["name"]) for h in heads] == [(0, "a"), (1, "b")]
    assert heads[0]["id"] != heads[1]["id"]
    assert all(h["id"].startswith("call_") for h in heads)


@pytest.mark.anyio
async def test_drop_after_ends_the_body_mid_arguments_without_finish_or_done() -> None:
    turn = Turn.tool_call("exec_command", {"cmd": "rm -rf build"}, fragments=4, drop_after=4)
    chunks = events(await chat(ScriptedBackend([turn])))
    assert len(chunks) == 4
    assert "[DONE]" not in chunks
    assert not any(_finish(c) for c in chunks)
    partial = "".join(
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
        for c in chunks
        if _has_calls(c)
    )
    assert partial
    assert json.dumps({"cmd": "rm -rf build"}).startswith(partial)
    assert partial != json.dumps({"cmd": "rm -rf build"})


@pytest.mark.anyio
async def test_an_in_band_error_follows_the_text_instead_of_a_finish_reason() -> None:
    turn = Turn.error("model overloaded", code="server_is_overloaded", content="Partial")
    chunks = events(await chat(ScriptedBackend([turn])))
    assert deltas(chunks, "content")[1:] == ["Partial"]
    assert chunks[-2] == {
        "error": {
            "message": "model overloaded",
            "type": "server_error",
            "param": None,
            "code": "server_is_overloaded",
        }
    }
    assert not any(_finish(c) for c in chunks)


@pytest.mark.anyio
async def test_an_http_error_turn_answers_with_its_status_and_an_openai_error() -> None:
    turn = Turn.error("slow down", status=429, code="rate_limit_exceeded")
    response = await chat(ScriptedBackend([turn]))
    assert response.status_code == 429
    assert response.json()["error"]["message"] == "slow down"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.anyio
async def test_a_non_streaming_request_gets_a_chat_completion() -> None:
    turn = Turn(
        content="Done.",
        reasoning="Because.",
        tool_calls=(ToolCall("f", '{"a":1}', "call_9"),),
    )
    response = await chat(ScriptedBackend([turn]), {**CHAT, "stream": False})
    body = response.json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Done."
    assert choice["message"]["reasoning_content"] == "Because."
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert body["usage"]["total_tokens"] > 0


@pytest.mark.anyio
async def test_turns_are_served_in_order_then_the_last_repeats() -> None:
    backend = ScriptedBackend([Turn.text("one"), Turn.text("two")])
    replies = [deltas(events(await chat(backend)), "content")[1] for _ in range(3)]
    assert replies == ["one", "two", "two"]


@pytest.mark.anyio
async def test_turns_can_cycle() -> None:
    backend = ScriptedBackend([Turn.text("one"), Turn.text("two")], repeat="cycle")
    replies = [deltas(events(await chat(backend)), "content")[1] for _ in range(3)]
    assert replies == ["one", "two", "one"]


@pytest.mark.anyio
async def test_requests_are_recorded_and_served_with_credentials_redacted() -> None:
    backend = ScriptedBackend([Turn.text("hi")])
    await chat(backend, headers={"authorization": "Bearer sk-secret", "x-trace": "7"})
    [recorded] = backend.requests
    assert recorded.method == "POST"
    assert recorded.path == "/v1/chat/completions"
    assert recorded.headers["authorization"] == "Bearer sk-secret"
    assert backend.chat_requests == [CHAT]

    transport = httpx.ASGITransport(app=backend)
    async with httpx.AsyncClient(transport=transport, base_url="http://scripted") as client:
        listed = (await client.get("/_scripted/requests")).json()
        models = (await client.get("/v1/models")).json()
    assert listed[0]["body"] == CHAT
    assert listed[0]["headers"]["authorization"] == "***"
    assert listed[0]["headers"]["x-trace"] == "7"
    assert "sk-secret" not in json.dumps(listed)
    assert models["data"][0]["id"] == "scripted-model"

    backend.reset()
    assert backend.requests == []


@pytest.mark.anyio
async def test_unknown_paths_and_bad_bodies_get_openai_errors() -> None:
    backend = ScriptedBackend([Turn.text("hi")])
    transport = httpx.ASGITransport(app=backend)
    async with httpx.AsyncClient(transport=transport, base_url="http://scripted") as client:
        missing = await client.get("/v1/embeddings")
        bad = await client.post("/v1/chat/completions", content=b"{not json")
    assert missing.status_code == 404
    assert "error" in missing.json()
    assert bad.status_code == 400


def test_turns_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="fragments"):
        Turn(content="x", fragments=0)
    with pytest.raises(ValueError, match="needs a failure"):
        Turn(status=500)
    with pytest.raises(ValueError, match="at least one turn"):
        ScriptedBackend([])


def test_a_script_file_is_a_json_list_of_turns(tmp_path: Path) -> None:
    path = tmp_path / "turns.json"
    path.write_text(
        json.dumps(
            [
                {"tool_call": {"name": "exec_command", "arguments": {"cmd": "ls"}}},
                {"text": "Done.", "reasoning": "ok", "chunk_delay": 0.01},
                {"error": "boom", "status": 503},
            ]
        )
    )
    turns = load_script(path)
    assert turns[0].tool_calls == (ToolCall("exec_command", '{"cmd": "ls"}'),)
    assert dataclasses.astuple(turns[1])[:2] == ("Done.", "ok")
    assert turns[2].failure is not None
    assert turns[2].failure["message"] == "boom"
    assert turns[2].status == 503


def test_a_bad_script_names_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "turns.json"
    path.write_text(json.dumps([{"txt": "typo"}]))
    with pytest.raises(ValueError, match=r"turns\.json: unknown turn key\(s\) txt"):
        load_script(path)
    path.write_text("[]")
    with pytest.raises(ValueError, match="non-empty JSON list"):
        load_script(path)
    with pytest.raises(ValueError, match="cannot read script"):
        load_script(tmp_path / "missing.json")


def test_the_demo_echoes_the_user() -> None:
    turn = demo_reply({"messages": [{"role": "user", "content": "What is up?"}]})
    assert "What is up?" in turn.content
    assert turn.reasoning
    assert not turn.tool_calls


def test_the_demo_calls_a_tool_the_user_names_with_the_backticked_text() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "exec_command",
                "parameters": {
                    "type": "object",
                    "properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"}},
                    "required": ["cmd"],
                },
            },
        }
    ]
    request = {"messages": [{"role": "user", "content": "run `ls -a` with exec_command"}]}
    turn = demo_reply({**request, "tools": tools})
    assert turn.tool_calls[0].name == "exec_command"
    assert json.loads(turn.tool_calls[0].arguments) == {"cmd": "ls -a"}


def test_the_demo_reports_what_a_tool_returned() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {"role": "tool", "tool_call_id": "c", "content": "file1\nfile2"},
    ]
    assert "file1 file2" in demo_reply({"messages": messages}).content


@pytest.mark.anyio
async def test_the_scripted_backend_is_a_test_double_behind_the_middleware() -> None:
    backend = ScriptedBackend(
        [
            Turn.tool_call("get_weather", {"city": "Paris"}, call_id="call_w"),
            Turn.text("It is sunny in Paris."),
        ]
    )
    app = ResponsesMiddleware(backend)
    tools: Any = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    async with openai.AsyncOpenAI(
        base_url="http://test/v1",
        api_key="x",
        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),
        _strict_response_validation=True,
    ) as client:
        first = await client.responses.create(model="m", input="Weather in Paris?", tools=tools)
        [call] = first.output
        assert call.type == "function_call"
        assert call.name == "get_weather"
        assert json.loads(call.arguments) == {"city": "Paris"}
        second = await client.responses.create(
            model="m",
            tools=tools,
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "type": "function_call",
                    "call_id": call.call_id,
                    "name": call.name,
                    "arguments": call.arguments,
                },
                {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
            ],
        )
    assert second.output_text == "It is sunny in Paris."
    tool_message = backend.chat_requests[1]["messages"][-1]
    assert tool_message == {"role": "tool", "tool_call_id": "call_w", "content": "sunny"}


def _has_calls(chunk: Any) -> bool:
    return (
        isinstance(chunk, dict)
        and bool(chunk.get("choices"))
        and "tool_calls" in chunk["choices"][0]["delta"]
    )


def _finish(chunk: Any) -> bool:
    return (
        isinstance(chunk, dict)
        and bool(chunk.get("choices"))
        and chunk["choices"][0].get("finish_reason") is not None
    )
