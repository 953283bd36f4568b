"""``POST /v1/responses/compact`` through a real ``stream-mw serve`` with the openai SDK: the
model summarises, the compaction item starts a new chain, and only this server's (and this
credential's) items open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stream_mw import Settings
from tests.gateway.helpers import Process, running, write_script

SUMMARY = "The user wants a haiku about rivers; none written yet."


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Process]:
    script = write_script(tmp_path / "script.json", [{"text": SUMMARY}, {"text": "A haiku."}])
    with running("serve", "--script", str(script), tmp_path=tmp_path) as process:
        yield process


def _client(process: Process, key: str = "k") -> openai.OpenAI:
    return openai.OpenAI(base_url=process.url + "/v1", api_key=key, max_retries=0)


def _recorded(process: Process) -> list[dict[str, Any]]:
    recorded = httpx.get(process.url + "/_scripted/requests", timeout=10).json()
    return [r["body"] for r in recorded if r["path"].endswith("/chat/completions")]


def test_a_compaction_summarises_the_conversation_and_its_item_starts_a_new_chain(
    gateway: Process,
) -> None:
    client = _client(gateway)
    conversation: list[Any] = [
        {"role": "user", "content": "Write me a haiku about rivers."},
        {"role": "assistant", "content": "Which river?"},
        {"role": "user", "content": "Any river."},
    ]
    raw = client.responses.with_raw_response.compact(model="scripted-model", input=conversation)
    compacted = raw.parse()
    assert compacted.object == "response.compaction"
    assert compacted.output[-1].type == "compaction"
    # The user messages, then the compaction item (read raw: the SDK types output items as
    # the model's, and user messages are not).
    *users, item = raw.http_response.json()["output"]
    assert [u["content"][0]["text"] for u in users] == [
        "Write me a haiku about rivers.",
        "Any river.",
    ]
    summary_request = _recorded(gateway)[0]["messages"]
    assert summary_request[-1]["content"] == Settings().compaction_prompt
    assert [m["content"] for m in summary_request[:-1]] == [c["content"] for c in conversation]

    answer = client.responses.create(
        model="scripted-model",
        input=[item, {"role": "user", "content": "Go on."}],
    )
    assert answer.output_text == "A haiku."
    continued = _recorded(gateway)[1]["messages"]
    assert [m["role"] for m in continued] == ["user", "user"]
    assert continued[0]["content"].endswith(SUMMARY)
    assert continued[1]["content"] == "Go on."


def test_a_compaction_item_opens_only_for_the_credential_it_was_made_for(
    gateway: Process,
) -> None:
    raw = _client(gateway, "key-a").responses.with_raw_response.compact(
        model="scripted-model", input="Remember the number 7."
    )
    item = raw.http_response.json()["output"][-1]
    with pytest.raises(openai.BadRequestError) as refused:
        _client(gateway, "key-b").responses.create(model="scripted-model", input=[item])
    assert refused.value.code == "invalid_encrypted_content"


def test_a_compaction_request_without_a_conversation_is_a_400(gateway: Process) -> None:
    answer = httpx.post(
        gateway.url + "/v1/responses/compact", json={"model": "scripted-model"}, timeout=30
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "input"


def test_a_compaction_over_a_previous_response_id_chain_summarises_every_turn_of_it(
    tmp_path: Path,
) -> None:
    script = write_script(
        tmp_path / "chain.json",
        [{"text": "Which river?"}, {"text": "Rivers it is."}, {"text": SUMMARY}],
    )
    with running("serve", "--script", str(script), tmp_path=tmp_path) as gateway:
        client = _client(gateway)
        first = client.responses.create(
            model="scripted-model", input="Write me a haiku about rivers."
        )
        second = client.responses.create(
            model="scripted-model", input="Any river.", previous_response_id=first.id
        )
        raw = client.responses.with_raw_response.compact(
            model="scripted-model", previous_response_id=second.id, input="Keep it short."
        )
        compacted = raw.parse()
        recorded = _recorded(gateway)
    assert compacted.output[-1].type == "compaction"
    # The whole chain went to the model, in order, then the new input and the prompt.
    summary_request = recorded[-1]["messages"]
    assert [(m["role"], m["content"]) for m in summary_request] == [
        ("user", "Write me a haiku about rivers."),
        ("assistant", "Which river?"),
        ("user", "Any river."),
        ("assistant", "Rivers it is."),
        ("user", "Keep it short."),
        ("user", Settings().compaction_prompt),
    ]
    # The compact resource keeps the chain's user messages (not the prompt) before the item.
    *users, _ = raw.http_response.json()["output"]
    assert [u["content"][0]["text"] for u in users] == [
        "Write me a haiku about rivers.",
        "Any river.",
        "Keep it short.",
    ]
