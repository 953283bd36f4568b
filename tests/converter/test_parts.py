"""The converter's parts alone: the reader's facts, the writer's numbering, the shortcut.

``tests/converter/test_layers.py`` checks how the parts are joined; these tests pin what each
part promises on its own (the module docstrings of ``_chat.py``, ``_events.py`` and
``_shortcut.py``).
"""

from __future__ import annotations

from typing import Any

import orjson

from stream_mw._chat import TOOK_TEXT, ChatReader
from stream_mw._events import EventWriter, delta_template
from stream_mw._facts import (
    ANNOTATION,
    ARGUMENTS,
    END,
    FAIL,
    FINISH,
    MODEL,
    NAMED,
    NEW_CALL,
    REASONING,
    REFUSAL,
    TEXT,
    USAGE,
    Fact,
)
from stream_mw._shortcut import learn
from stream_mw._tools import ToolMap


def reader(*, think_tags: bool = False, max_argument_bytes: int = 1 << 20) -> ChatReader:
    return ChatReader(
        "resp_test", ToolMap(), think_tags=think_tags, max_argument_bytes=max_argument_bytes
    )


def chunk(delta: dict[str, Any], finish: str | None = None, **top: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **top,
    }


def kinds(facts: list[Fact]) -> list[int]:
    return [fact[0] for fact in facts]


def test_the_reader_reports_a_chunks_facts_in_the_order_that_keeps_reasoning_first() -> None:
    facts = reader().read(
        chunk(
            {
                "tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f"}}],
                "annotations": [{"type": "url_citation", "url_citation": {"url": "https://a"}}],
                "refusal": "no",
                "content": "text",
                "reasoning_content": "why",
            },
            "tool_calls",
            usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        )
    )
    assert kinds(facts) == [
        MODEL,
        REASONING,
        TEXT,
        REFUSAL,
        ANNOTATION,
        NEW_CALL,
        NAMED,
        FINISH,
        USAGE,
    ]


def test_arguments_before_a_calls_name_wait_for_it_and_later_ones_are_reported() -> None:
    read = reader()
    first = read.read(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}))
    assert kinds(first) == [MODEL, NEW_CALL]
    named = read.read(chunk({"tool_calls": [{"index": 0, "function": {"name": "f"}}]}))
    assert kinds(named) == [NAMED]
    assert named[0][1].arguments() == '{"a"'
    more = read.read(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}))
    assert more == [(ARGUMENTS, named[0][1], ":1}")]


def test_a_new_id_at_a_used_index_is_a_new_call_as_ollama_sends_them() -> None:
    read = reader()
    facts = []
    for call_id in ("a", "b"):
        call = {"index": 0, "id": call_id, "function": {"name": "f", "arguments": "{}"}}
        facts += read.read(chunk({"tool_calls": [call]}))
    calls = [fact[1] for fact in facts if fact[0] == NEW_CALL]
    assert [call.upstream_id for call in calls] == ["a", "b"]


def test_a_fault_inside_a_chunk_is_a_fail_fact_after_what_the_chunk_carried_before() -> None:
    call = {"index": 0, "id": "c", "function": {"name": "f", "arguments": "x" * 50}}
    facts = reader(max_argument_bytes=10).read(chunk({"content": "kept", "tool_calls": [call]}))
    assert kinds(facts) == [MODEL, TEXT, NEW_CALL, FAIL]
    assert "max_argument_bytes" in str(facts[-1][1])


def test_think_tags_are_read_as_reasoning_and_a_held_partial_tag_is_released_at_the_end() -> None:
    read = reader(think_tags=True)
    facts = read.read(chunk({"content": "<think>hm</think>yes <thi"}))
    assert facts[1:] == [(REASONING, "hm"), (TEXT, "yes ", None)]
    assert read.end([]) == [(TEXT, "<thi", None), (END,)]


def test_done_ends_the_stream_and_blank_data_carries_nothing() -> None:
    assert reader().read_payload(b"[DONE]") == [(END,)]
    assert reader().read_payload(b" ") == []


def test_the_common_text_chunk_is_marked_for_the_shortcut() -> None:
    read = reader()
    read.read(chunk({"role": "assistant", "content": ""}))  # notes the model name
    assert read.read(chunk({"content": "more"})) == [(TEXT, "more", None)]
    assert read.took == TOOK_TEXT


def test_the_writer_numbers_every_event_from_zero_and_ends_with_the_done_marker() -> None:
    writer = EventWriter(done_marker=True)
    writer.start({"id": "resp_1", "status": "in_progress"})
    writer.item_added(0, {"id": "msg_1", "type": "message"})
    template = delta_template("response.output_text.delta", "msg_1", 0, "content_index", 0)
    writer.deltas(template, ["a", "b"])
    writer.delta(template, "c")
    writer.terminal("response.completed", {"id": "resp_1", "status": "completed"})
    body = writer.take()
    assert body.endswith(b"data: [DONE]\n\n")
    events = [orjson.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: {")]
    assert [event["sequence_number"] for event in events] == list(range(7))
    assert [event.get("delta") for event in events[3:6]] == ["a", "b", "c"]
    assert writer.take() == b""


def test_a_shortcut_reads_an_event_at_its_place_inside_a_larger_read() -> None:
    def event(text: str) -> bytes:
        return b"data: " + orjson.dumps(chunk({"content": text})) + b"\n\n"

    shortcut = learn(event("a"), b'"content":')
    assert shortcut is not None
    read = event("x") + event('b"\\') + event("y")
    start = len(event("x"))
    assert shortcut.delta_in(read, start, start + len(event('b"\\'))) == 'b"\\'
    # The same bytes but one event longer than the range: not this layout.
    assert shortcut.delta_in(read, start, len(read)) is None


def _obfuscated(text: str, padding: str) -> bytes:
    return b"data: " + orjson.dumps({**chunk({"content": text}), "obfuscation": padding}) + b"\n\n"


def test_a_shortcut_reads_a_run_of_events_up_to_the_first_other_one() -> None:
    shortcut = learn(_obfuscated("a", "x1"), b'"content":')
    assert shortcut is not None
    run = _obfuscated("b", "Zz9") + _obfuscated("", "") + _obfuscated('c"\\é', "q")
    other = b"data: " + orjson.dumps(chunk({}, "stop")) + b"\n\n"
    texts: list[str] = []
    assert shortcut.run(run + other + _obfuscated("d", "y"), 0, 1 << 10, texts) == len(run)
    # The empty delta is read (and counted) but carries nothing.
    assert texts == ["b", 'c"\\é']
    assert shortcut.hits == 3


def test_a_run_stops_before_an_event_it_cannot_vouch_for() -> None:
    shortcut = learn(_obfuscated("a", "x1"), b'"content":')
    assert shortcut is not None
    first = _obfuscated("b", "x2")
    bad_escape = first.replace(b'"b"', b'"\\q"')
    wide_padding = _obfuscated("c", "ü")
    cut = _obfuscated("d", "x3")[:-1]
    for follower in (bad_escape, wide_padding, cut):
        texts: list[str] = []
        assert shortcut.run(first + follower, 0, 1 << 10, texts) == len(first)
        assert texts == ["b"]
    # An event over the bound is left to the decoder, which reports it.
    assert shortcut.run(first, 0, len(first) - 1, []) == 0
    # The per-event check still takes the padding that is not plain ASCII.
    assert shortcut.delta_in(wide_padding, 0, len(wide_padding)) == "c"
