"""``include: ["reasoning.encrypted_content"]``: the token, where it appears, and its replay.

Issue 10, item 3: stateless clients (``store: false``; Codex, the AI SDK) replay reasoning
items and can only carry the reasoning in ``encrypted_content``. These tests pin the token's
properties (round trip, tamper-evidence, key and tenant binding), where the converter puts it
(only on finished items, identical in ``output_item.done`` and the terminal response), and
what ``translate_request`` does with it on the way back.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from stream_mw import (
    ConfigurationError,
    InvalidRequestError,
    Settings,
    _sealed,
    translate_completion,
)
from stream_mw._requests import translate_request
from stream_mw._sealed import SealError, open_reasoning, seal_reasoning
from stream_mw._stream import StreamConverter
from tests.checker import check_response, check_stream
from tests.converter.test_schema import COMPLETION
from tests.converter.test_stream_units import CREATED, RESPONSE_ID, body_of, chunk

KEY = "k" * 32
SETTINGS = Settings(reasoning_key=KEY, reasoning_passback=True)
INCLUDE = {"model": "m", "input": "hi", "include": ["reasoning.encrypted_content"]}


def opened(token: str, tenant: str = "alice", key: str = KEY) -> str:
    return open_reasoning(token, key=key.encode(), tenant=tenant, max_bytes=1 << 20)


def converted(
    request: dict[str, Any], mode: str = "text", tenant: str = "alice"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    converter = StreamConverter(
        request,
        SETTINGS.replace(reasoning_events=mode),
        response_id=RESPONSE_ID,
        created_at=CREATED,
        tenant=tenant,
    )
    reads = body_of(
        chunk({"reasoning_content": "Think "}),
        chunk({"reasoning_content": "hard."}),
        chunk({"content": "42"}, "stop"),
    )
    body = converter.start() + b"".join(converter.feed(r) for r in reads) + converter.close()
    checked = check_stream(body)
    return checked.events, checked.response


# --- the token -------------------------------------------------------------------------------


def test_a_token_opens_to_the_reasoning_it_sealed() -> None:
    text = "Ünïcode reasoning, long enough to compress well. " * 50
    token = seal_reasoning(text, key=KEY.encode(), tenant="alice")

    assert token.startswith("smw1.")
    assert len(token) < len(text), "the payload is compressed"
    assert opened(token) == text


@pytest.mark.parametrize(
    ("change", "tenant", "key"),
    [
        (lambda t: t, "bob", KEY),
        (lambda t: t, "alice", "another key, long enough"),
        (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), "alice", KEY),
        (lambda t: "smw1." + "eJzLSM3JyQcABiwCFQ" + t[t.rindex(".") :], "alice", KEY),
        (lambda t: t.replace("smw1.", "smw2."), "alice", KEY),
        (lambda t: "gAAAAABpM0Yj-opaque-openai-blob", "alice", KEY),
        (lambda t: "smw1.!!!.???", "alice", KEY),
        (lambda t: t.rpartition(".")[0], "alice", KEY),
    ],
    ids=[
        "other tenant",
        "other key",
        "altered tag",
        "swapped payload",
        "other version",
        "not ours",
        "not base64",
        "no tag",
    ],
)
def test_a_token_for_another_tenant_key_or_altered_does_not_open(
    change: Any, tenant: str, key: str
) -> None:
    token = change(seal_reasoning("secret plan", key=KEY.encode(), tenant="alice"))

    with pytest.raises(SealError):
        opened(token, tenant=tenant, key=key)


def test_a_token_that_would_inflate_past_the_limit_does_not_open() -> None:
    token = seal_reasoning("x" * 10_000, key=KEY.encode(), tenant="alice")

    with pytest.raises(SealError, match="larger than 100 bytes"):
        open_reasoning(token, key=KEY.encode(), tenant="alice", max_bytes=100)


def test_without_a_configured_key_one_random_process_key_is_used_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_sealed, "_process_key", None)
    caplog.set_level(logging.WARNING, logger="stream_mw")

    first, second = _sealed.reasoning_key(None), _sealed.reasoning_key(None)

    assert first == second
    assert len(first) == 32
    assert [r.getMessage() for r in caplog.records].count(_sealed._NO_KEY_WARNING) == 1
    assert _sealed.reasoning_key(KEY) == KEY.encode()


def test_the_key_setting_is_checked_read_from_the_environment_and_never_shown() -> None:
    with pytest.raises(ConfigurationError, match="reasoning_key"):
        Settings(reasoning_key="short")
    settings = Settings.from_env({"STREAM_MW_REASONING_KEY": KEY})

    assert settings.reasoning_key == KEY
    assert KEY not in repr(settings)


# --- where the converter puts it ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["text", "summary"])
def test_a_finished_reasoning_item_carries_a_token_in_its_done_event_and_the_response(
    mode: str,
) -> None:
    events, response = converted(INCLUDE, mode)

    [added] = [e["item"] for e in events if e["type"] == "response.output_item.added"][:1]
    done = next(e["item"] for e in events if e["type"] == "response.output_item.done")
    assert "encrypted_content" not in added, "as OpenAI: only the finished item has it"
    assert done == response["output"][0]
    assert opened(done["encrypted_content"]) == "Think hard."


def test_no_token_unless_the_request_includes_it() -> None:
    _, response = converted({"model": "m", "input": "hi", "include": []})

    assert all("encrypted_content" not in i for i in response["output"])


def test_a_non_streamed_response_carries_the_same_token() -> None:
    response = translate_completion(COMPLETION, INCLUDE, SETTINGS, tenant="alice")

    check_response(response)
    assert opened(response["output"][0]["encrypted_content"]) == "Hmm."


# --- the replay -----------------------------------------------------------------------------------


def replay(item: dict[str, Any], settings: Settings = SETTINGS, tenant: str = "alice") -> Any:
    body = {
        "model": "m",
        "store": False,
        "input": [
            {"role": "user", "content": "hi"},
            item,
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "42", "annotations": []}]},
            {"role": "user", "content": "why?"},
        ],
    }  # fmt: skip
    return translate_request(body, settings, tenant=tenant)


def test_a_replayed_token_restores_the_reasoning_on_the_assistant_message() -> None:
    _, response = converted(INCLUDE, "summary")
    item = dict(response["output"][0], summary=[])  # the AI SDK may send no visible text

    chat = replay(item)

    assert chat["messages"][1] == {
        "role": "assistant",
        "content": "42",
        "reasoning_content": "Think hard.",
    }


def test_the_token_wins_over_edited_visible_reasoning() -> None:
    _, response = converted(INCLUDE)
    item = dict(response["output"][0], content=[{"type": "reasoning_text", "text": "Lies."}])

    assert replay(item)["messages"][1]["reasoning_content"] == "Think hard."


def test_a_foreign_token_is_a_400_naming_the_item() -> None:
    _, response = converted(INCLUDE, tenant="bob")
    item = response["output"][0]

    with pytest.raises(InvalidRequestError) as caught:
        replay(item)

    assert caught.value.param == "input[1].encrypted_content"
    assert caught.value.status_code == 400
    assert "another tenant" in caught.value.message


def test_without_passback_a_token_is_dropped_unchecked_with_its_item() -> None:
    """Codex replays every reasoning item it got; after a restart with a new per-process key
    its tokens no longer verify, and that must not break the session when none is used."""
    item = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "smw1.x.y"}

    chat = replay(item, SETTINGS.replace(reasoning_passback=False))

    assert "reasoning_content" not in chat["messages"][1]


def test_a_reasoning_item_without_a_token_replays_as_before() -> None:
    item = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "S"}]}

    assert replay(item)["messages"][1]["reasoning_content"] == "S"
    assert "reasoning_content" not in replay(item, Settings())["messages"][1]
