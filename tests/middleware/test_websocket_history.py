"""A WebSocket connection's memory of its responses: bounded in count and bytes, oldest first
out, and every continuation gets items of its own."""

from __future__ import annotations

from typing import Any

from stream_mw._continuation import LocalHistory


def _response(text: str) -> dict[str, Any]:
    return {"output": [{"type": "message", "role": "assistant", "content": text}]}


def _user(text: str) -> list[dict[str, Any]]:
    return [{"type": "message", "role": "user", "content": text}]


def test_the_oldest_response_is_forgotten_past_the_count_bound() -> None:
    history = LocalHistory(max_responses=2, max_bytes=1 << 20)
    for n in range(3):
        history.keep(f"resp_{n}", _user(f"q{n}"), _response(f"a{n}"))
    assert "resp_0" not in history
    assert [item["content"] for item in history.items("resp_2") or ()] == ["q2", "a2"]


def test_the_oldest_responses_are_forgotten_past_the_byte_bound() -> None:
    history = LocalHistory(max_responses=100, max_bytes=300)
    for n in range(5):
        history.keep(f"resp_{n}", _user("x" * 50), _response("y" * 50))
    assert len(history) < 5
    assert "resp_4" in history
    assert "resp_0" not in history


def test_a_response_larger_than_the_byte_bound_is_not_kept() -> None:
    history = LocalHistory(max_responses=10, max_bytes=100)
    history.keep("resp_big", _user("x" * 500), _response("y"))
    assert history.items("resp_big") is None


def test_each_continuation_gets_items_of_its_own() -> None:
    history = LocalHistory(max_responses=10, max_bytes=1 << 20)
    history.keep("resp_1", _user("q"), _response("a"))
    first = history.items("resp_1")
    assert first is not None
    first[0]["content"] = "changed by a translation"
    assert (history.items("resp_1") or [{}])[0]["content"] == "q"


def test_an_evicted_response_is_gone() -> None:
    history = LocalHistory(max_responses=10, max_bytes=1 << 20)
    history.keep("resp_1", _user("q"), _response("a"))
    history.evict("resp_1")
    assert history.items("resp_1") is None
    assert len(history) == 0
