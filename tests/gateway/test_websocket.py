"""The Responses WebSocket mode over a real ``stream-mw serve`` (uvicorn) and the
``websockets`` client library: sequential responses, ``store: false`` continuations on the
connection, ``previous_response_not_found``, eviction after a failed continuation, client
keys and tenants."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from stream_mw._deliver.websocket import MAX_QUEUED_FRAMES
from tests.gateway.helpers import Process, running, write_script

CALL = {"name": "lookup", "arguments": {"q": "x"}, "call_id": "call_ws_1"}
TURNS = [{"text": "first"}, {"tool_call": CALL}, {"text": "after the tool"}]
TOOLS = [
    {
        "type": "function",
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Process]:
    script = write_script(tmp_path / "script.json", TURNS)
    with running("serve", "--script", str(script), tmp_path=tmp_path) as process:
        yield process


def _ws_url(process: Process) -> str:
    return f"ws://127.0.0.1:{process.port}/v1/responses"


def _create(ws: ClientConnection, **fields: Any) -> list[dict[str, Any]]:
    """Send one ``response.create`` and read events up to its terminal or error event."""
    ws.send(json.dumps({"type": "response.create", "model": "scripted-model", **fields}))
    events = []
    while True:
        event = json.loads(ws.recv(timeout=30))
        events.append(event)
        if event["type"] in (
            "error",
            "response.completed",
            "response.failed",
            "response.incomplete",
        ):
            if event["type"] == "error" and "status" not in event:
                continue  # an in-stream error event: response.failed follows
            return events


def _recorded(process: Process) -> list[dict[str, Any]]:
    recorded = httpx.get(process.url + "/_scripted/requests", timeout=10).json()
    return [r["body"] for r in recorded if r["path"].endswith("/chat/completions")]


def test_each_response_create_frame_gets_the_streams_events_in_order(gateway: Process) -> None:
    with connect(_ws_url(gateway)) as ws:
        first = _create(ws, input="hi")
        second = _create(ws, input="again")
    for events in (first, second):
        assert events[0]["type"] == "response.created"
        assert events[-1]["type"] == "response.completed"
        numbers = [event["sequence_number"] for event in events]
        assert numbers == list(range(len(events)))
    assert first[-1]["response"]["output"][0]["content"][0]["text"] == "first"
    assert first[0]["response"]["id"] != second[0]["response"]["id"]


def test_a_store_false_response_is_continued_on_its_connection_with_only_new_input(
    gateway: Process,
) -> None:
    with connect(_ws_url(gateway)) as ws:
        _create(ws, input="hi", store=False)
        asked = _create(ws, input="call the tool", store=False, tools=TOOLS)
        [call] = [
            item for item in asked[-1]["response"]["output"] if item["type"] == "function_call"
        ]
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "42"}
        done = _create(
            ws,
            input=[output],
            previous_response_id=asked[-1]["response"]["id"],
            store=False,
            tools=TOOLS,
        )
    assert done[-1]["type"] == "response.completed"
    messages = _recorded(gateway)[2]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[0]["content"] == "call the tool"
    assert messages[1]["tool_calls"][0]["id"] == "call_ws_1"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_ws_1", "content": "42"}


def test_a_store_false_response_is_not_found_on_another_connection(gateway: Process) -> None:
    with connect(_ws_url(gateway)) as ws:
        kept = _create(ws, input="hi", store=False)[-1]["response"]["id"]
    with connect(_ws_url(gateway)) as ws:
        [error] = _create(ws, input="more", previous_response_id=kept)
    assert error["status"] == 400
    assert error["error"]["code"] == "previous_response_not_found"
    assert error["error"]["param"] == "previous_response_id"


def test_a_failed_continuation_evicts_the_response_it_continued_from(gateway: Process) -> None:
    stray = {"type": "function_call_output", "call_id": "call_nobody_made", "output": "x"}
    with connect(_ws_url(gateway)) as ws:
        kept = _create(ws, input="hi", store=False)[-1]["response"]["id"]
        [failed] = _create(ws, input=[stray], previous_response_id=kept, store=False)
        [gone] = _create(ws, input="more", previous_response_id=kept, store=False)
    assert failed["status"] == 400
    assert "call_nobody_made" in failed["error"]["message"]
    assert gone["error"]["code"] == "previous_response_not_found"


def test_a_tool_output_answering_no_call_of_the_previous_response_is_a_400_over_http(
    gateway: Process,
) -> None:
    first = httpx.post(
        gateway.url + "/v1/responses", json={"model": "scripted-model", "input": "hi"}, timeout=30
    ).json()
    stray = {"type": "function_call_output", "call_id": "call_nobody_made", "output": "x"}
    answer = httpx.post(
        gateway.url + "/v1/responses",
        json={"model": "scripted-model", "input": [stray], "previous_response_id": first["id"]},
        timeout=30,
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "input"
    # Without previous_response_id the whole history is the client's: the output is kept
    # as a user message, as before.
    stateless = httpx.post(
        gateway.url + "/v1/responses",
        json={"model": "scripted-model", "input": [stray]},
        timeout=30,
    )
    assert stateless.status_code == 200


def test_a_stored_response_is_continued_from_another_connection(gateway: Process) -> None:
    with connect(_ws_url(gateway)) as ws:
        kept = _create(ws, input="hi")[-1]["response"]["id"]
    with connect(_ws_url(gateway)) as ws:
        events = _create(ws, input="more", previous_response_id=kept)
    assert events[-1]["type"] == "response.completed"
    assert [m["content"] for m in _recorded(gateway)[1]["messages"]] == ["hi", "first", "more"]


def test_an_invalid_frame_gets_an_error_event_and_the_connection_serves_on(
    gateway: Process,
) -> None:
    with connect(_ws_url(gateway)) as ws:
        ws.send("not json")
        error = json.loads(ws.recv(timeout=30))
        [bad] = _create(ws, input=[{"type": "no_such_item"}])
        events = _create(ws, input="hi")
    assert error["type"] == "error"
    assert error["status"] == 400
    assert bad["status"] == 400
    assert bad["error"]["type"] == "invalid_request_error"
    assert events[-1]["type"] == "response.completed"


@pytest.fixture
def keyed_gateway(tmp_path: Path) -> Iterator[Process]:
    script = write_script(tmp_path / "script.json", [{"text": "first"}])
    keys = tmp_path / "keys"
    keys.write_text("sk-a team-a\nsk-b team-b\n", encoding="utf-8")
    with running(
        "serve", "--script", str(script), "--client-keys", str(keys), tmp_path=tmp_path
    ) as process:
        yield process


def test_a_websocket_without_a_valid_client_key_is_refused(keyed_gateway: Process) -> None:
    with pytest.raises(InvalidStatus) as refused, connect(_ws_url(keyed_gateway)):
        pass
    assert refused.value.response.status_code == 403
    with connect(_ws_url(keyed_gateway), additional_headers={"Authorization": "Bearer sk-a"}) as ws:
        assert _create(ws, input="hi")[-1]["type"] == "response.completed"


def test_a_stored_response_is_not_found_by_another_tenants_websocket(
    keyed_gateway: Process,
) -> None:
    url = _ws_url(keyed_gateway)
    with connect(url, additional_headers={"Authorization": "Bearer sk-a"}) as ws:
        kept = _create(ws, input="hi")[-1]["response"]["id"]
    with connect(url, additional_headers={"Authorization": "Bearer sk-b"}) as ws:
        [error] = _create(ws, input="more", previous_response_id=kept)
    assert error["error"]["code"] == "previous_response_not_found"
    with connect(url, additional_headers={"Authorization": "Bearer sk-a"}) as ws:
        assert _create(ws, input="more", previous_response_id=kept)[-1]["type"] == (
            "response.completed"
        )


def test_a_warm_up_with_generate_false_calls_no_model_and_can_be_continued(
    gateway: Process,
) -> None:
    with connect(_ws_url(gateway)) as ws:
        warm = _create(ws, input="hi", generate=False, store=False)
        events = _create(
            ws, input="more", previous_response_id=warm[-1]["response"]["id"], store=False
        )
    assert warm[-1]["type"] == "response.completed"
    assert warm[-1]["response"]["output"] == []
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "first"
    [request] = _recorded(gateway)
    assert [m["content"] for m in request["messages"]] == ["hi", "more"]


def test_a_frame_over_max_request_bytes_gets_a_413_error_event(tmp_path: Path) -> None:
    script = write_script(tmp_path / "script.json", [{"text": "first"}])
    env = {"STREAM_MW_MAX_REQUEST_BYTES": "2000"}
    with (
        running("serve", "--script", str(script), tmp_path=tmp_path, env=env) as process,
        connect(_ws_url(process)) as ws,
    ):
        [error] = _create(ws, input="x" * 3000)
        events = _create(ws, input="hi")
    assert error["status"] == 413
    assert error["error"]["code"] == "request_too_large"
    assert events[-1]["type"] == "response.completed"


def test_a_response_still_running_at_shutdown_ends_with_its_terminal_event(
    tmp_path: Path,
) -> None:
    words = " ".join(f"w{n}" for n in range(8))
    script = write_script(tmp_path / "slow.json", [{"text": words, "chunk_delay": 2.0}])
    events: list[dict[str, Any]] = []
    with running(
        "serve", "--script", str(script), "--graceful-timeout", "0.5", tmp_path=tmp_path
    ) as process:
        with connect(_ws_url(process)) as ws:
            ws.send(json.dumps({"type": "response.create", "model": "m", "input": "hi"}))
            signalled = False
            for message in ws:
                events.append(json.loads(message))
                if not signalled and events[-1]["type"] == "response.output_text.delta":
                    process.popen.send_signal(signal.SIGTERM)
                    signalled = True
                if events[-1]["type"] == "response.failed":
                    break
        assert process.popen.wait(60) == 0
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_shutting_down"


def test_frames_past_the_bound_on_frames_waiting_get_an_error_each(tmp_path: Path) -> None:
    script = write_script(tmp_path / "script.json", [{"text": "slow", "delay": 1.0}, {"text": "x"}])
    sent = MAX_QUEUED_FRAMES + 4
    with (
        running("serve", "--script", str(script), tmp_path=tmp_path) as process,
        connect(_ws_url(process)) as ws,
    ):
        for _ in range(sent):
            ws.send(json.dumps({"type": "response.create", "model": "m", "input": "hi"}))
        events = []
        while sum(e["type"] in ("response.completed", "error") for e in events) < sent:
            events.append(json.loads(ws.recv(timeout=30)))
    refused = [e for e in events if e["type"] == "error"]
    completed = [e for e in events if e["type"] == "response.completed"]
    # One response runs while MAX_QUEUED_FRAMES wait; the rest are refused at once.
    assert len(completed) >= MAX_QUEUED_FRAMES
    assert len(refused) == sent - len(completed)
    assert len(refused) >= 3
    assert all(e["error"]["code"] == "too_many_frames" and e["status"] == 429 for e in refused)


def test_a_compaction_item_starts_a_new_chain_over_the_websocket(gateway: Process) -> None:
    compacted = httpx.post(
        gateway.url + "/v1/responses/compact",
        json={"model": "scripted-model", "input": "hi"},
        timeout=30,
    ).json()
    item = compacted["output"][-1]
    with connect(_ws_url(gateway)) as ws:
        events = _create(ws, input=[item, {"role": "user", "content": "go on"}], store=False)
    assert events[-1]["type"] == "response.completed"
    messages = _recorded(gateway)[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "user"]
    assert messages[0]["content"].endswith("first")
    assert messages[1]["content"] == "go on"
