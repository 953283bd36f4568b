"""Open Responses schema conformance: the checker's rules, and what the converter echoes.

The rules live in ``tests/checker.py`` (``_SCHEMA``, ``_EVENT_KEYS``) and every tier's
``check_stream`` applies them; these tests show that they can fail, and pin the echoes that
used to break them: function tools without ``strict``, a ``json_schema`` format without
``description``/``strict``, an incomplete ``file_search`` tool, ``encrypted_content: null``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stream_mw import translate_completion
from tests.checker import (
    _HANDLERS,
    _SCHEMA,
    check_event_schema,
    check_response,
    check_response_schema,
)
from tests.converter.test_stream_units import body_of, chunk, run

REQUEST: dict[str, Any] = {
    "model": "m",
    "input": "hi",
    "tools": [
        {"type": "function", "name": "bare"},
        {
            "type": "function",
            "name": "full",
            "description": "d",
            "parameters": {"type": "object"},
            "strict": True,
        },
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "web_search"},
    ],
    "tool_choice": {"type": "allowed_tools", "tools": [{"type": "function", "name": "bare"}]},
    "text": {
        "format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}},
        "verbosity": None,
    },
}

COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "upstream-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "{}", "reasoning_content": "Hmm."},
            "finish_reason": "stop",
        }
    ],
}


def terminal() -> dict[str, Any]:
    checked = run(body_of(chunk({"reasoning_content": "Hmm."}), chunk({"content": "x"}, "stop")))
    return copy.deepcopy(checked.response)


def test_every_event_type_the_checker_knows_has_a_schema_rule() -> None:
    from tests.checker import _EVENT_KEYS

    assert set(_HANDLERS) <= set(_EVENT_KEYS)


@pytest.mark.parametrize("key", list(_SCHEMA["Response"]))
def test_the_checker_rejects_a_response_missing_any_required_key(key: str) -> None:
    response = terminal()
    del response[key]

    with pytest.raises(AssertionError, match=f"required key '{key}' is missing"):
        check_response_schema(response)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("output", 0, "encrypted_content"), None, "is null"),
        (("store",), None, "is null"),
        (("temperature",), "1", "must be num"),
        (("tools",), [{"type": "function", "name": "f"}], "'description' is missing"),
        (("output", 1, "content", 0, "annotations"), None, "is null"),
        (("usage",), {"input_tokens": 1}, "'output_tokens' is missing"),
        (("tool_choice",), "sometimes", "is not a choice"),
        (("output", 1, "type"), "video", "not a Item the schema knows"),
    ],
)
def test_the_checker_rejects_nulls_wrong_types_and_unknown_kinds(
    path: tuple[Any, ...], value: Any, message: str
) -> None:
    response = terminal()
    target = response
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value

    with pytest.raises(AssertionError, match=message):
        check_response_schema(response)


def test_the_checker_rejects_an_event_missing_a_required_key() -> None:
    event = {"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_1"}
    event |= {"output_index": 0, "content_index": 0, "delta": "x", "logprobs": []}
    check_event_schema(event)
    del event["content_index"]

    with pytest.raises(AssertionError, match="'content_index' is missing"):
        check_event_schema(event)


def test_echoed_tools_and_formats_carry_every_key_the_schema_requires() -> None:
    checked = run(body_of(chunk({"content": "{}"}, "stop")), REQUEST)

    for event in (checked.events[0], checked.terminal):
        response = event["response"]
        bare, full, file_search, web_search = response["tools"]
        assert bare == {
            "type": "function",
            "name": "bare",
            "description": None,
            "parameters": None,
            "strict": None,
        }
        assert full == REQUEST["tools"][1], "values the request gave are kept"
        assert file_search == {
            "type": "file_search",
            "vector_store_ids": ["vs_1"],
            "max_num_results": 20,
            "ranking_options": {"ranker": "auto", "score_threshold": 0.0},
            "filters": None,
        }
        assert web_search == {"type": "web_search"}
        assert response["tool_choice"]["mode"] == "auto"
        assert response["text"] == {
            "format": {
                "type": "json_schema",
                "name": "answer",
                "schema": {"type": "object"},
                "description": None,
                "strict": False,
            }
        }


def test_a_non_streamed_response_passes_the_same_rules() -> None:
    response = translate_completion(COMPLETION, REQUEST)

    check_response(response)
    assert response["tools"][0]["strict"] is None
    assert "encrypted_content" not in response["output"][0]


def test_check_response_rejects_an_unfinished_or_inconsistent_response() -> None:
    response = translate_completion(COMPLETION, REQUEST)
    response["error"] = {"code": "server_error", "message": "boom"}

    with pytest.raises(AssertionError, match="does not fit status 'completed'"):
        check_response(response)
