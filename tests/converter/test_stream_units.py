"""StreamConverter, behaviour by behaviour: the guarantees and each upstream quirk.

The recorded corpus (``test_fixtures.py``) replays whole upstream streams; these tests build
small streams by hand to pin one behaviour each. Every output goes through the shared
invariant checker and is produced three ways (one event per read, one read, byte by byte),
which must agree byte for byte.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from stream_mw import Settings, StreamConverter, UpstreamReportedError
from stream_mw._output import InputDecoder
from stream_mw._stream import State
from tests.checker import CheckedStream, check_stream

RESPONSE_ID = "resp_00112233445566778899aabbccddeeff"
CREATED = 1_700_000_000
DONE = b"data: [DONE]\n\n"


def chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    *,
    index: int = 0,
    logprobs: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """A chat.completion.chunk with one choice."""
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "upstream-model",
        "choices": [
            {"index": index, "delta": delta or {}, "logprobs": logprobs, "finish_reason": finish}
        ],
    }
    body.update(extra)
    return body


def usage_chunk(**usage: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage}


def event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def body_of(*chunks: Any, done: bool = True) -> list[bytes]:
    """One read per upstream event (bytes items are sent verbatim)."""
    reads = [c if isinstance(c, bytes) else event(c) for c in chunks]
    return [*reads, DONE] if done else reads


def make(
    request: dict[str, Any] | None = None, settings: Settings | None = None
) -> StreamConverter:
    return StreamConverter(
        request if request is not None else {"model": "m", "input": "hi"},
        settings,
        response_id=RESPONSE_ID,
        created_at=CREATED,
        clock=lambda: float(CREATED + 5),
    )


def run(
    reads: list[bytes],
    request: dict[str, Any] | None = None,
    settings: Settings | None = None,
    *,
    close_error: BaseException | None = None,
) -> CheckedStream:
    """Convert ``reads`` three ways, require identical bytes, check the invariants."""
    outputs = []
    whole = b"".join(reads)
    for pieces in (reads, [whole], [whole[i : i + 1] for i in range(len(whole))]):
        converter = make(request, settings)
        out = [converter.start()]
        out += [converter.feed(piece) for piece in pieces]
        out.append(converter.close(close_error))
        outputs.append(b"".join(out))
        assert converter.finished
    assert outputs[0] == outputs[1] == outputs[2]
    settings = settings or Settings()
    return check_stream(
        outputs[0],
        done_marker=settings.done_marker,
        partial_calls_done=settings.close_partial_tool_calls,
    )


def events_of(checked: CheckedStream, kind: str) -> list[dict[str, Any]]:
    return [e for e in checked.events if e["type"] == kind]


# --- lifecycle ------------------------------------------------------------------------------


def test_close_before_any_byte_emits_created_then_failed() -> None:
    converter = make()
    checked = check_stream(converter.close(), done_marker=True)
    assert checked.types == ["response.created", "response.in_progress", "response.failed"]
    assert checked.response["error"]["code"] == "server_error"
    assert "before finish_reason" in checked.response["error"]["message"]
    assert checked.response["usage"] is None


def test_close_twice_returns_nothing_the_second_time() -> None:
    converter = make()
    converter.feed(event(chunk({"content": "hi"}, "stop")))
    assert converter.close()
    assert converter.close() == b""
    assert converter.close(RuntimeError("late")) == b""
    assert converter.feed(event(chunk({"content": "more"}))) == b""
    assert converter.keepalive() == b""


def test_start_is_idempotent_and_feed_starts_implicitly() -> None:
    converter = make()
    first = converter.start()
    assert first.startswith(b"event: response.created\n")
    assert converter.start() == b""
    other = make()
    assert other.feed(b"").startswith(b"event: response.created\n")


def test_created_and_in_progress_snapshots_echo_the_request() -> None:
    request = {
        "model": "gpt-x",
        "input": "hi",
        "instructions": "be brief",
        "temperature": 0.2,
        "max_output_tokens": 50,
        "metadata": {"k": "v"},
        "store": False,
        "tools": [{"type": "function", "name": "f", "parameters": {}}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "low"},
        "text": {"verbosity": "low"},
    }
    checked = run(body_of(chunk({"content": "x"}, "stop")), request)
    created = checked.events[0]["response"]
    assert created["status"] == "in_progress"
    assert created["output"] == []
    assert created["id"] == RESPONSE_ID
    assert created["created_at"] == CREATED
    assert created["model"] == "gpt-x"
    assert created["instructions"] == "be brief"
    assert created["temperature"] == 0.2
    assert created["top_p"] == 1.0
    assert created["max_output_tokens"] == 50
    assert created["metadata"] == {"k": "v"}
    assert created["store"] is False
    # Open Responses requires every FunctionTool key; the request's omissions echo as null.
    assert created["tools"] == [
        {"type": "function", "name": "f", "parameters": {}, "description": None, "strict": None}
    ]
    assert created["tool_choice"] == "required"
    assert created["parallel_tool_calls"] is False
    assert created["reasoning"] == {"effort": "low", "summary": None}
    assert created["text"] == {"format": {"type": "text"}, "verbosity": "low"}
    assert checked.response["completed_at"] == CREATED + 5


def test_model_comes_from_the_upstream_when_the_request_has_none() -> None:
    checked = run(body_of(chunk({"content": "x"}, "stop")), request={"input": "hi"})
    assert checked.response["model"] == "upstream-model"


def test_keepalive_repeats_in_progress_with_next_sequence_number() -> None:
    converter = make()
    start = converter.start()
    text = converter.feed(event(chunk({"content": "hi"})))
    keepalive = converter.keepalive()
    rest = converter.feed(event(chunk({}, "stop")) + DONE)
    checked = check_stream(start + text + keepalive + rest, done_marker=True)
    kinds = checked.types
    assert kinds.count("response.in_progress") == 2
    repeated = checked.events[kinds.index("response.output_text.delta") + 1]
    assert repeated["type"] == "response.in_progress"
    assert (
        repeated["sequence_number"]
        == checked.events[kinds.index("response.output_text.delta")]["sequence_number"] + 1
    )
    assert repeated["response"] == checked.events[1]["response"]


def test_bytearray_and_memoryview_reads_are_accepted() -> None:
    reads = body_of(chunk({"content": "a"}), chunk({"content": "b"}, "stop"))
    converter = make()
    out = converter.feed(bytearray(reads[0])) + converter.feed(memoryview(b"".join(reads[1:])))
    assert check_stream(out, done_marker=True).output_text == "ab"


def test_keepalive_before_start_starts_the_stream() -> None:
    converter = make()
    assert converter.keepalive().count(b"event: ") == 2
    assert converter.start() == b""


def test_done_marker_setting_off_ends_with_the_terminal_event() -> None:
    checked = run(body_of(chunk({"content": "x"}, "stop")), settings=Settings(done_marker=False))
    assert not checked.done_marker


def test_finished_is_set_by_upstream_done_and_the_rest_of_the_read_is_ignored() -> None:
    converter = make()
    out = converter.feed(
        event(chunk({"content": "a"}, "stop")) + DONE + event(chunk({"content": "b"}))
    )
    assert converter.finished
    checked = check_stream(converter.start() + out + converter.close(), done_marker=True)
    assert checked.output_text == "a"
    assert out.count(b"data: [DONE]") == 1


def test_response_property_is_a_live_snapshot_then_the_terminal_object() -> None:
    converter = make()
    converter.feed(event(chunk({"content": "Hel"})) + event(chunk({"content": "lo"})))
    snapshot = converter.response
    assert snapshot["status"] == "in_progress"
    assert snapshot["output"][0]["content"][0]["text"] == "Hello"
    converter.feed(event(chunk({}, "stop")) + DONE)
    assert converter.response["status"] == "completed"
    assert converter.response["output"][0]["status"] == "completed"


def test_state_machine_states_follow_the_items() -> None:
    converter = make()
    assert converter._translator.state is State.NEW
    converter.start()
    assert converter._translator.state is State.IDLE
    converter.feed(event(chunk({"reasoning_content": "r"})))
    assert converter._translator.state is State.REASONING
    converter.feed(event(chunk({"content": "t"})))
    assert converter._translator.state is State.MESSAGE
    converter.feed(
        event(chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]}))
    )
    assert converter._translator.state is State.TOOL_CALLS
    converter.close()
    assert converter._translator.state is State.DONE


def test_an_illegal_transition_becomes_a_failed_response() -> None:
    converter = make()
    converter.start()
    # Behind the translator's back: the next open is illegal.
    converter._translator._move(State.MESSAGE)
    converter._translator._message = None
    out = converter.feed(event(chunk({"content": "x"})))
    assert converter.finished
    assert b"response.failed" in out
    assert b"cannot move from MESSAGE to MESSAGE" in out


# --- text, refusal, reasoning ---------------------------------------------------------------


def test_plain_text_stream_follows_the_canonical_order() -> None:
    checked = run(
        body_of(
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            usage_chunk(prompt_tokens=3, completion_tokens=2, total_tokens=5),
        )
    )
    assert checked.types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert checked.output_text == "Hello"
    assert checked.items[0].id == "msg_00112233445566778899aabbccddeeff_0"
    delta = events_of(checked, "response.output_text.delta")[0]
    assert delta["logprobs"] == []
    assert checked.response["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "Hello",
        "annotations": [],
        "logprobs": [],
    }


def test_role_on_every_chunk_is_ignored() -> None:
    checked = run(
        body_of(
            chunk({"role": "assistant", "content": "a"}),
            chunk({"role": "assistant", "content": "b"}),
            chunk({"role": "assistant", "content": None}, "stop"),
        )
    )
    assert checked.output_text == "ab"


def test_first_chunk_with_empty_choices_is_skipped() -> None:
    azure = {"id": "", "object": "", "choices": [], "prompt_filter_results": [{"prompt_index": 0}]}
    checked = run(body_of(azure, chunk({"content": "ok"}, "stop")))
    assert checked.output_text == "ok"
    assert checked.status == "completed"


def test_text_sharing_a_chunk_with_the_finish_reason_and_usage_is_kept() -> None:
    last = chunk({"content": " end"}, "stop", usage={"prompt_tokens": 1, "completion_tokens": 2})
    checked = run(body_of(chunk({"content": "the"}), last))
    assert checked.output_text == "the end"
    assert checked.response["usage"]["total_tokens"] == 3


def test_refusal_streams_as_a_refusal_part() -> None:
    checked = run(body_of(chunk({"refusal": "I can't"}), chunk({"refusal": " help."}, "stop")))
    (item,) = checked.items
    assert item.refusal == "I can't help."
    assert checked.response["output"][0]["content"] == [
        {"type": "refusal", "refusal": "I can't help."}
    ]
    assert events_of(checked, "response.refusal.done")[0]["refusal"] == "I can't help."
    assert checked.status == "completed"


def test_text_then_refusal_are_two_parts_of_one_message() -> None:
    checked = run(body_of(chunk({"content": "Well."}), chunk({"refusal": "No."}, "stop")))
    (item,) = checked.items
    assert [p.type for p in item.parts] == ["output_text", "refusal"]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_fields_become_a_reasoning_item_before_the_message(field: str) -> None:
    checked = run(
        body_of(
            chunk({field: "Let me"}), chunk({field: " think."}), chunk({"content": "42"}, "stop")
        )
    )
    reasoning, message = checked.items
    assert reasoning.type == "reasoning"
    assert reasoning.summary_text == "Let me think."
    assert reasoning.id.startswith("rs_")
    assert message.text == "42"
    assert message.output_index == 1
    done = checked.response["output"][0]
    assert done["summary"] == [{"type": "summary_text", "text": "Let me think."}]
    assert "content" not in done
    # Without include, no token; and never null (Open Responses: a string or no key).
    assert "encrypted_content" not in done
    # The reasoning item is done before the message is announced.
    kinds = checked.types
    first_done = kinds.index("response.output_item.done")
    assert first_done < [i for i, k in enumerate(kinds) if k == "response.output_item.added"][1]


def test_reasoning_duplicated_in_reasoning_details_is_counted_once() -> None:
    delta = {
        "reasoning": "abc",
        "reasoning_content": "abc",
        "reasoning_details": [{"type": "reasoning.text", "text": "abc"}],
    }
    checked = run(body_of(chunk(delta), chunk({"content": "x"}, "stop")))
    assert checked.items[0].summary_text == "abc"


def test_reasoning_details_and_thinking_blocks_are_used_when_alone() -> None:
    details = {"reasoning_details": [{"type": "reasoning.text", "text": "one "}]}
    blocks = {"thinking_blocks": [{"type": "thinking", "thinking": "two", "signature": "s"}]}
    checked = run(body_of(chunk(details), chunk(blocks), chunk({"content": "x"}, "stop")))
    assert checked.items[0].summary_text == "one two"


def test_reasoning_summary_is_the_default_and_streams_summary_events() -> None:
    checked = run(body_of(chunk({"reasoning_content": "hmm"}), chunk({"content": "ok"}, "stop")))
    assert "response.reasoning_summary_part.added" in checked.types
    assert "response.reasoning_summary_text.delta" in checked.types
    assert "response.reasoning_text.delta" not in checked.types
    assert checked.items[0].summary_text == "hmm"
    assert checked.response["output"][0]["summary"] == [{"type": "summary_text", "text": "hmm"}]
    assert "content" not in checked.response["output"][0]


def test_reasoning_text_setting_streams_raw_reasoning_text_events() -> None:
    checked = run(
        body_of(chunk({"reasoning_content": "hmm"}), chunk({"content": "ok"}, "stop")),
        settings=Settings(reasoning_events="text"),
    )
    assert "response.reasoning_text.delta" in checked.types
    assert "response.reasoning_summary_text.delta" not in checked.types
    assert checked.items[0].reasoning_text == "hmm"
    done = checked.response["output"][0]
    assert done["summary"] == []
    assert done["content"] == [{"type": "reasoning_text", "text": "hmm"}]


def test_magistral_content_array_splits_thinking_from_text() -> None:
    content = [
        {"type": "thinking", "thinking": [{"type": "text", "text": "Plan."}]},
        {"type": "text", "text": "Answer."},
    ]
    checked = run(
        body_of(
            chunk({"content": content}), chunk({"content": [{"type": "text", "text": "!"}]}, "stop")
        )
    )
    assert checked.items[0].summary_text == "Plan."
    assert checked.items[1].text == "Answer.!"


def test_reasoning_content_and_a_call_in_one_chunk_keep_both_in_order() -> None:
    delta = {
        "reasoning_content": "need weather",
        "content": "Checking.",
        "tool_calls": [
            {"index": 0, "id": "call_1", "function": {"name": "weather", "arguments": "{}"}}
        ],
    }
    checked = run(body_of(chunk(delta, "tool_calls")))
    assert [i.type for i in checked.items] == ["reasoning", "message", "function_call"]
    assert checked.items[0].summary_text == "need weather"
    assert checked.items[1].text == "Checking."
    assert checked.items[2].arguments == "{}"


def test_reasoning_after_text_opens_a_new_reasoning_item() -> None:
    checked = run(
        body_of(
            chunk({"content": "a"}),
            chunk({"reasoning_content": "b"}),
            chunk({"content": "c"}, "stop"),
        )
    )
    assert [i.type for i in checked.items] == ["message", "reasoning", "message"]


@pytest.mark.parametrize(
    ("pieces", "reasoning", "text"),
    [
        (["<think>plan</think>answer"], "plan", "answer"),
        (["<thi", "nk>\nplan", "</th", "ink>\n\nans", "wer"], "plan", "answer"),
        (["Use <b>bold</b> <", "thin", "g"], "", "Use <b>bold</b> <thing"),
        (["a < b", " and </think> alone"], "", "a < b and </think> alone"),
    ],
)
def test_think_tags_split_across_chunks_when_enabled(
    pieces: list[str], reasoning: str, text: str
) -> None:
    chunks = [chunk({"content": p}) for p in pieces]
    checked = run(body_of(*chunks, chunk({}, "stop")), settings=Settings(think_tags=True))
    got_reasoning = "".join(i.summary_text for i in checked.items if i.type == "reasoning")
    assert got_reasoning == reasoning
    assert checked.output_text == text


def test_think_tags_are_text_when_the_setting_is_off() -> None:
    checked = run(body_of(chunk({"content": "<think>x</think>y"}, "stop")))
    assert checked.output_text == "<think>x</think>y"


def test_logprobs_are_mapped_onto_text_deltas_done_and_the_part() -> None:
    logprobs = {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}],
            }
        ]
    }
    checked = run(body_of(chunk({"content": "Hi"}, logprobs=logprobs), chunk({}, "stop")))
    expected = [
        {
            "token": "Hi",
            "logprob": -0.1,
            "bytes": [72, 105],
            "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}],
        }
    ]
    assert events_of(checked, "response.output_text.delta")[0]["logprobs"] == expected
    assert events_of(checked, "response.output_text.done")[0]["logprobs"] == expected
    assert checked.response["output"][0]["content"][0]["logprobs"] == expected


@pytest.mark.parametrize(
    "annotation",
    [
        {
            "type": "url_citation",
            "url_citation": {"url": "https://x", "title": "X", "start_index": 0, "end_index": 4},
        },
        {
            "type": "url_citation",
            "url": "https://x",
            "title": "X",
            "start_index": 0,
            "end_index": 4,
        },
    ],
)
def test_annotations_become_annotation_added_events_and_part_annotations(
    annotation: dict[str, Any],
) -> None:
    checked = run(
        body_of(
            chunk({"content": "See X"}), chunk({"annotations": [annotation]}), chunk({}, "stop")
        )
    )
    flat = {
        "type": "url_citation",
        "start_index": 0,
        "end_index": 4,
        "title": "X",
        "url": "https://x",
    }
    (added,) = events_of(checked, "response.output_text.annotation.added")
    assert added["annotation"] == flat
    assert added["annotation_index"] == 0
    assert checked.response["output"][0]["content"][0]["annotations"] == [flat]


def test_choices_other_than_index_zero_are_ignored() -> None:
    checked = run(
        body_of(
            chunk({"content": "mine"}),
            chunk({"content": "other"}, index=1),
            chunk({}, "stop"),
            chunk({}, "stop", index=1),
        )
    )
    assert checked.output_text == "mine"


# --- tool calls -----------------------------------------------------------------------------


def call_chunk(*calls: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return chunk({"tool_calls": list(calls)}, finish)


def test_call_fragments_with_id_null_after_the_first_form_one_call() -> None:
    checked = run(
        body_of(
            call_chunk(
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "f", "arguments": ""},
                }
            ),
            call_chunk({"index": 0, "id": None, "function": {"arguments": '{"x"'}}),
            call_chunk({"index": 0, "id": None, "function": {"arguments": ": 1}"}}),
            chunk({}, "tool_calls"),
        )
    )
    (call,) = checked.items
    assert call.arguments == '{"x": 1}'
    assert call.done_item == {
        "id": "fc_00112233445566778899aabbccddeeff_0",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_a",
        "name": "f",
        "arguments": '{"x": 1}',
    }
    (done,) = events_of(checked, "response.function_call_arguments.done")
    assert done["name"] == "f"


def test_several_calls_in_one_delta_and_interleaved_fragments() -> None:
    checked = run(
        body_of(
            call_chunk(
                {"index": 0, "id": "c0", "function": {"name": "a", "arguments": "{"}},
                {"index": 1, "id": "c1", "function": {"name": "b", "arguments": "["}},
            ),
            call_chunk({"index": 1, "function": {"arguments": "]"}}),
            call_chunk({"index": 0, "function": {"arguments": "}"}}),
            chunk({}, "tool_calls"),
        )
    )
    assert [(i.added["call_id"], i.arguments) for i in checked.items] == [
        ("c0", "{}"),
        ("c1", "[]"),
    ]


def test_ollama_calls_all_at_index_zero_with_distinct_ids_are_distinct_calls() -> None:
    checked = run(
        body_of(
            call_chunk(
                {"index": 0, "id": "call_1", "function": {"name": "a", "arguments": '{"n":1}'}}
            ),
            call_chunk(
                {"index": 0, "id": "call_2", "function": {"name": "b", "arguments": '{"n":2}'}}
            ),
            chunk({}, "tool_calls"),
        )
    )
    assert [(i.added["name"], i.arguments) for i in checked.items] == [
        ("a", '{"n":1}'),
        ("b", '{"n":2}'),
    ]


def test_calls_without_index_are_matched_by_id_then_by_position() -> None:
    checked = run(
        body_of(
            call_chunk({"id": "g1", "function": {"name": "a", "arguments": '{"q":'}}),
            call_chunk({"id": "g1", "function": {"arguments": "1}"}}),
            call_chunk(
                {"id": "g2", "function": {"name": "b", "arguments": "{}"}},
                {"id": "g3", "function": {"name": "c", "arguments": "{}"}},
            ),
            chunk({}, "tool_calls"),
        )
    )
    assert [(i.added["call_id"], i.arguments) for i in checked.items] == [
        ("g1", '{"q":1}'),
        ("g2", "{}"),
        ("g3", "{}"),
    ]


def test_calls_without_id_get_a_generated_call_id_that_stays() -> None:
    checked = run(
        body_of(
            call_chunk({"index": 0, "function": {"name": "a", "arguments": "{"}}),
            call_chunk({"index": 0, "function": {"arguments": "}"}}),
            chunk({}, "tool_calls"),
        )
    )
    (call,) = checked.items
    assert (
        call.added["call_id"]
        == call.done_item["call_id"]
        == ("call_00112233445566778899aabbccddeeff_0")
    )


def test_whole_calls_without_ids_or_indexes_one_per_chunk_are_separate() -> None:
    checked = run(
        body_of(
            call_chunk({"function": {"name": "a", "arguments": '{"n":1}'}}),
            call_chunk({"function": {"name": "a", "arguments": '{"n":2}'}}),
            chunk({}, "tool_calls"),
        )
    )
    assert [i.arguments for i in checked.items] == ['{"n":1}', '{"n":2}']


def test_last_arguments_on_the_finish_chunk_are_kept() -> None:
    checked = run(
        body_of(
            call_chunk({"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a":'}}),
            call_chunk({"index": 0, "function": {"arguments": "1}"}}, finish="tool_calls"),
        )
    )
    assert checked.items[0].arguments == '{"a":1}'
    assert checked.items[0].done


def test_arguments_sent_as_an_object_are_serialised() -> None:
    checked = run(
        body_of(
            call_chunk(
                {"index": 0, "id": "c", "function": {"name": "f", "arguments": {"a": 1}}},
                finish="tool_calls",
            )
        )
    )
    assert checked.items[0].arguments == '{"a":1}'


def test_name_arriving_after_the_first_fragment_delays_the_announcement() -> None:
    checked = run(
        body_of(
            call_chunk({"index": 0, "id": "c", "function": {"arguments": '{"a"'}}),
            call_chunk({"index": 0, "function": {"name": "f", "arguments": ":1}"}}),
            chunk({}, "tool_calls"),
        )
    )
    (call,) = checked.items
    assert call.added["name"] == "f"
    assert call.arguments == '{"a":1}'


def test_legacy_function_call_becomes_a_function_call_item() -> None:
    checked = run(
        body_of(
            chunk({"function_call": {"name": "f", "arguments": '{"a"'}}),
            chunk({"function_call": {"arguments": ":1}"}}),
            chunk({}, "function_call"),
        )
    )
    (call,) = checked.items
    assert call.type == "function_call"
    assert call.arguments == '{"a":1}'
    assert checked.status == "completed"


def test_text_then_calls_then_text_makes_a_new_message() -> None:
    checked = run(
        body_of(
            chunk({"content": "Let me look."}),
            call_chunk({"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}),
            chunk({"content": "Done."}),
            chunk({}, "stop"),
        )
    )
    assert [(i.type, i.output_index) for i in checked.items] == [
        ("message", 0),
        ("function_call", 1),
        ("message", 2),
    ]
    assert checked.items[0].id != checked.items[2].id
    assert checked.items[2].text == "Done."
    assert checked.items[1].done  # "stop" after tool calls still makes them final


def test_a_call_cut_by_the_end_of_the_body_gets_neither_arguments_done_nor_item_done() -> None:
    checked = run(
        body_of(
            call_chunk(
                {"index": 0, "id": "c", "function": {"name": "rm", "arguments": '{"path": "/tm'}}
            ),
            done=False,
        )
    )
    (call,) = checked.items
    assert not call.done
    assert not call.arguments_done
    assert checked.status == "failed"
    assert checked.response["output"][0]["status"] == "incomplete"
    assert checked.response["output"][0]["arguments"] == '{"path": "/tm'


def test_call_cut_by_an_exception_never_gets_output_item_done() -> None:
    converter = make()
    out = converter.start() + converter.feed(
        event(call_chunk({"index": 0, "id": "c", "function": {"name": "rm", "arguments": "{"}}))
    )
    out += converter.close(ConnectionResetError("peer reset"))
    checked = check_stream(out, done_marker=True)
    assert not checked.items[0].done
    assert checked.response["error"] == {
        "code": "server_error",
        "message": "upstream request failed: ConnectionResetError: peer reset",
    }


def test_a_call_cut_by_length_gets_no_done_event_and_is_listed_incomplete() -> None:
    checked = run(
        body_of(
            call_chunk(
                {"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a": "lo'}}
            ),
            chunk({}, "length"),
        )
    )
    (call,) = checked.items
    assert not call.done
    assert not call.arguments_done
    assert checked.status == "incomplete"
    assert checked.response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert checked.response["output"][0]["status"] == "incomplete"


def test_close_partial_tool_calls_setting_sends_item_done_as_incomplete() -> None:
    checked = run(
        body_of(
            call_chunk({"index": 0, "id": "c", "function": {"name": "f", "arguments": "{"}}),
            chunk({}, "length"),
        ),
        settings=Settings(close_partial_tool_calls=True),
    )
    assert checked.items[0].done_item is not None
    assert checked.items[0].done_item["status"] == "incomplete"


def test_arguments_over_the_limit_fail_the_response_naming_the_setting() -> None:
    checked = run(
        body_of(
            call_chunk({"index": 0, "id": "c", "function": {"name": "f", "arguments": "x" * 40}}),
            call_chunk({"index": 0, "function": {"arguments": "y" * 40}}),
            chunk({}, "tool_calls"),
        ),
        settings=Settings(max_argument_bytes=64),
    )
    assert checked.status == "failed"
    assert "max_argument_bytes" in checked.response["error"]["message"]
    assert not checked.items[0].done


def test_arguments_crossing_the_limit_inside_a_run_of_fragments_keep_those_before_it() -> None:
    first = {"index": 0, "id": "c", "function": {"name": "f", "arguments": ""}}
    more = [{"index": 0, "function": {"arguments": f"a{i:02}"}} for i in range(40)]
    reads = body_of(call_chunk(first), *[call_chunk(m) for m in more], chunk({}, "tool_calls"))
    settings = Settings(max_argument_bytes=100)
    checked = run(reads, settings=settings)
    # The rest of the body in one read after the first: the fragments are read as one run.
    converter = make(settings=settings)
    together = converter.start() + converter.feed(reads[0])
    together += converter.feed(b"".join(reads[1:])) + converter.close()
    converter = make(settings=settings)
    one_by_one = converter.start() + b"".join(map(converter.feed, reads)) + converter.close()
    assert together == one_by_one
    assert checked.status == "failed"
    # Every fragment within the bound was streamed, none after it.
    deltas = events_of(checked, "response.function_call_arguments.delta")
    assert "".join(d["delta"] for d in deltas) == "".join(f"a{i:02}" for i in range(33))


def test_namespaced_function_gets_its_original_name_and_namespace() -> None:
    request = {
        "model": "m",
        "input": "hi",
        "tools": [
            {"type": "namespace", "name": "files", "tools": [{"type": "function", "name": "read"}]}
        ],
    }
    checked = run(
        body_of(
            call_chunk(
                {"index": 0, "id": "c", "function": {"name": "files__read", "arguments": "{}"}}
            ),
            chunk({}, "tool_calls"),
        ),
        request,
    )
    item = checked.response["output"][0]
    assert item["name"] == "read"
    assert item["namespace"] == "files"


CUSTOM_REQUEST = {
    "model": "m",
    "input": "hi",
    "tools": [{"type": "custom", "name": "apply_patch", "description": "patch"}],
}


def test_a_custom_tool_call_cut_short_gets_no_input_done_and_lists_what_streamed() -> None:
    reads = [
        call_chunk(
            {"index": 0, "id": "c", "function": {"name": "apply_patch", "arguments": '{"in'}}
        ),
        call_chunk({"index": 0, "function": {"arguments": 'put": "*** Begin\\n+x\\u00'}}),
    ]
    checked = run(body_of(*reads, chunk({}, "length")), CUSTOM_REQUEST)
    (call,) = checked.items
    assert not call.done
    assert not call.arguments_done
    assert call.input == "*** Begin\n+x"
    assert checked.types.count("response.custom_tool_call_input.done") == 0
    listed = checked.response["output"][0]
    assert (listed["status"], listed["input"]) == ("incomplete", "*** Begin\n+x")


def test_custom_tool_call_streams_its_decoded_input() -> None:
    arguments = '{"input": "*** Begin\\n+caf\\u00e9 \\"q\\" \\ud83d\\ude00\\n*** End"}'
    fragments = [arguments[i : i + 3] for i in range(0, len(arguments), 3)]
    reads = [
        call_chunk({"index": 0, "id": "c", "function": {"name": "apply_patch", "arguments": ""}})
    ]
    reads += [call_chunk({"index": 0, "function": {"arguments": f}}) for f in fragments]
    checked = run(body_of(*reads, chunk({}, "tool_calls")), CUSTOM_REQUEST)
    (call,) = checked.items
    expected = '*** Begin\n+café "q" 😀\n*** End'
    assert call.type == "custom_tool_call"
    assert call.id.startswith("ctc_")
    assert call.input == expected
    deltas = events_of(checked, "response.custom_tool_call_input.delta")
    assert len(deltas) > 5  # streamed, not sent at the end
    assert events_of(checked, "response.custom_tool_call_input.done")[0]["input"] == expected
    assert call.done_item == {
        "id": call.id,
        "type": "custom_tool_call",
        "status": "completed",
        "call_id": "c",
        "name": "apply_patch",
        "input": expected,
    }


def test_custom_tool_call_with_unusual_arguments_sends_the_input_at_the_end() -> None:
    checked = run(
        body_of(
            call_chunk(
                {
                    "index": 0,
                    "id": "c",
                    "function": {"name": "apply_patch", "arguments": '{"x": 1, '},
                }
            ),
            call_chunk({"index": 0, "function": {"arguments": '"input": "abc"}'}}),
            chunk({}, "tool_calls"),
        ),
        CUSTOM_REQUEST,
    )
    assert checked.items[0].input == "abc"


def test_custom_tool_call_input_written_bare_is_kept() -> None:
    checked = run(
        body_of(
            call_chunk(
                {
                    "index": 0,
                    "id": "c",
                    "function": {"name": "apply_patch", "arguments": "raw text"},
                }
            ),
            chunk({}, "tool_calls"),
        ),
        CUSTOM_REQUEST,
    )
    assert checked.items[0].input == "raw text"


@pytest.mark.parametrize(
    "arguments",
    [
        '{"input": "a\\nb"}',
        '{ "input" : "\\\\u00e9 and \\u00e9"}',
        '{"input": "\\ud83d\\ude00 pair"}',
        '{"input": ""}',
        '{"input": "tail \\\\"}',
    ],
)
def test_input_decoder_deltas_concatenate_to_the_input_at_any_split(arguments: str) -> None:
    expected = orjson.loads(arguments)["input"]
    for size in (1, 2, 5, len(arguments)):
        decoder = InputDecoder()
        streamed = "".join(
            decoder.feed(arguments[i : i + size]) for i in range(0, len(arguments), size)
        )
        assert streamed == expected, size


# --- finish reasons and terminal choice -------------------------------------------------------


@pytest.mark.parametrize(
    ("finish", "status", "reason"),
    [
        ("stop", "completed", None),
        ("tool_calls", "completed", None),
        ("length", "incomplete", "max_output_tokens"),
        ("model_length", "incomplete", "max_output_tokens"),
        ("content_filter", "incomplete", "content_filter"),
    ],
)
def test_finish_reasons_choose_the_terminal_event(
    finish: str, status: str, reason: str | None
) -> None:
    checked = run(body_of(chunk({"content": "x"}), chunk({}, finish)))
    assert checked.status == status
    assert checked.terminal["type"] == f"response.{status}"
    if reason is None:
        assert checked.response["incomplete_details"] is None
        assert checked.items[0].done_item["status"] == "completed"
    else:
        assert checked.response["incomplete_details"] == {"reason": reason}
        assert checked.items[0].done_item["status"] == "incomplete"


def test_finish_reason_error_fails_the_response() -> None:
    checked = run(body_of(chunk({"content": "x"}), chunk({}, "error")))
    assert checked.status == "failed"
    assert "finish_reason 'error'" in checked.response["error"]["message"]


def test_stream_ending_after_finish_reason_without_done_completes_at_close() -> None:
    converter = make()
    out = converter.start() + converter.feed(event(chunk({"content": "x"}, "stop")))
    assert not converter.finished
    out += converter.close()
    assert check_stream(out, done_marker=True).status == "completed"


PROXY_LOST_UPSTREAM = {
    "error": {
        "message": "upstream http://u/v1/chat/completions broke off the response: ReadError",
        "type": "server_error",
        "param": None,
        "code": "upstream_broke_off",
    }
}


@pytest.mark.parametrize(("finish", "status"), [("stop", "completed"), ("length", "incomplete")])
def test_a_proxys_lost_upstream_after_finish_reason_ends_as_that_finish_reason_says(
    finish: str, status: str
) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    checked = run(
        body_of(
            chunk({"content": "x"}),
            chunk({}, finish),
            {"choices": [], "usage": usage},
            PROXY_LOST_UPSTREAM,
            done=False,
        )
    )
    assert checked.status == status
    assert checked.response["usage"]["total_tokens"] == 4


def test_a_proxys_lost_upstream_before_finish_reason_fails_with_its_message() -> None:
    checked = run(body_of(chunk({"content": "x"}), PROXY_LOST_UPSTREAM, done=False))
    assert checked.status == "failed"
    assert "broke off the response" in checked.response["error"]["message"]


def test_an_upstreams_own_error_after_finish_reason_still_fails() -> None:
    error = {"error": {"message": "flagged", "type": "server_error", "code": "server_error"}}
    checked = run(body_of(chunk({"content": "x"}, "stop"), error, done=False))
    assert checked.status == "failed"


def test_stream_ending_before_finish_reason_fails() -> None:
    checked = run(body_of(chunk({"content": "partial"}), done=False))
    assert checked.status == "failed"
    assert checked.response["error"]["message"].startswith(
        "upstream stream ended before finish_reason"
    )
    assert checked.items[0].done_item["status"] == "incomplete"
    assert checked.output_text == "partial"


def test_done_before_any_finish_reason_fails() -> None:
    checked = run(body_of(chunk({"content": "x"})))
    assert checked.status == "failed"


def test_exception_after_finish_reason_still_completes() -> None:
    checked = run(
        body_of(chunk({"content": "x"}, "stop"), done=False), close_error=OSError("reset")
    )
    assert checked.status == "completed"


def test_upstream_error_passed_to_close_keeps_its_code_and_message() -> None:
    error = UpstreamReportedError("Rate limit reached, try again in 2s", code="rate_limit_exceeded")
    checked = run(body_of(chunk({"content": "x"}), done=False), close_error=error)
    assert checked.response["error"] == {
        "code": "rate_limit_exceeded",
        "message": "Rate limit reached, try again in 2s",
    }


def test_finalising_happens_on_done_not_on_finish_reason_so_late_usage_counts() -> None:
    converter = make()
    out = converter.start() + converter.feed(event(chunk({"content": "x"}, "stop")))
    assert b"response.completed" not in out
    out += converter.feed(event(usage_chunk(prompt_tokens=5, completion_tokens=1, total_tokens=6)))
    out += converter.feed(DONE)
    assert converter.finished
    assert check_stream(out, done_marker=True).response["usage"]["total_tokens"] == 6


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("read", "code", "fragment"),
    [
        (
            event(
                {
                    "error": {
                        "message": "This model's maximum context length is 8192 tokens",
                        "type": "invalid_request_error",
                    }
                }
            ),
            "context_length_exceeded",
            "maximum context length",
        ),
        (
            event(
                {"error": {"message": "Rate limit reached. Please try again in 20s.", "code": 429}}
            ),
            "rate_limit_exceeded",
            "try again in 20s",
        ),
        (event({"error": "model crashed"}), "server_error", "model crashed"),
        (
            event(
                {"object": "error", "message": "bad input", "type": "BadRequestError", "code": 400}
            ),
            "invalid_prompt",
            "bad input",
        ),
        (b'event: error\ndata: {"message": "overloaded"}\n\n', "server_error", "overloaded"),
        (b"error: slot unavailable\n\n", "server_error", "slot unavailable"),
    ],
)
def test_in_band_errors_fail_the_response_with_a_classified_code(
    read: bytes, code: str, fragment: str
) -> None:
    checked = run(body_of(chunk({"content": "x"}), read, done=False))
    assert checked.status == "failed"
    assert checked.response["error"]["code"] == code
    assert fragment in checked.response["error"]["message"]
    assert checked.items[0].done_item["status"] == "incomplete"


def test_invalid_json_fails_with_a_message_saying_so() -> None:
    checked = run(body_of(chunk({"content": "x"}), b"data: {not json\n\n", chunk({"content": "y"})))
    assert checked.status == "failed"
    assert checked.response["error"]["message"].startswith("upstream sent invalid JSON")
    assert checked.output_text == "x"


def test_stream_cut_mid_json_fails_at_close() -> None:
    whole = event(chunk({"content": "x"})) + b'data: {"id": "chatcmpl-1", "cho'
    checked = run([whole])
    assert checked.status == "failed"
    assert "invalid JSON" in checked.response["error"]["message"]


def test_non_object_json_fails() -> None:
    checked = run(body_of(b"data: [1, 2]\n\n"))
    assert checked.status == "failed"
    assert "list" in checked.response["error"]["message"]


def test_event_over_limit_fails_response_naming_setting() -> None:
    big = chunk({"content": "x" * 500})
    checked = run(body_of(chunk({"content": "a"}), big), settings=Settings(max_event_bytes=256))
    assert checked.status == "failed"
    assert "max_event_bytes" in checked.response["error"]["message"]
    assert checked.output_text == "a"


def test_error_event_setting_sends_an_error_event_both_flat_and_nested_before_failed() -> None:
    checked = run(
        body_of(event({"error": {"message": "boom"}}), done=False),
        settings=Settings(error_event=True),
    )
    assert checked.types[-2:] == ["error", "response.failed"]
    error = checked.events[-2]
    failure = checked.response["error"]
    assert error == {
        "type": "error",
        "sequence_number": error["sequence_number"],
        "code": failure["code"],
        "message": failure["message"],
        "param": None,
        "error": {
            "type": "server_error",
            "code": failure["code"],
            "message": failure["message"],
            "param": None,
        },
    }


def test_the_nested_error_type_follows_the_code_as_http_errors_name_it() -> None:
    checked = run(
        body_of(event({"error": {"message": "maximum context length is 8192 tokens"}})),
        settings=Settings(error_event=True),
    )
    assert checked.events[-2]["error"]["code"] == "context_length_exceeded"
    assert checked.events[-2]["error"]["type"] == "invalid_request_error"


def test_malformed_chunk_shape_fails_without_escaping_feed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    converter = make()
    with caplog.at_level(logging.WARNING, logger="stream_mw"):
        out = converter.start() + converter.feed(event({"choices": [{"delta": "oops"}]}))
    checked = check_stream(out, done_marker=True)
    assert checked.status == "failed"
    assert "could not translate" in checked.response["error"]["message"]


def test_non_upstream_exception_in_close_becomes_server_error_without_traceback() -> None:
    checked = run(body_of(chunk({"content": "x"}), done=False), close_error=TimeoutError())
    assert checked.response["error"] == {
        "code": "server_error",
        "message": "upstream request failed: TimeoutError",
    }
    assert "Traceback" not in checked.response["error"]["message"]


# --- usage ------------------------------------------------------------------------------------


def test_usage_in_a_trailing_chunk_is_mapped_with_every_detail() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 7,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    checked = run(body_of(chunk({"content": "x"}, "stop"), usage_chunk(**usage)))
    assert checked.response["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 17,
    }


def test_no_usage_reported_gives_null_usage() -> None:
    checked = run(body_of(chunk({"content": "x"}, "stop")))
    assert checked.response["usage"] is None


def test_cumulative_usage_on_every_chunk_keeps_the_last() -> None:
    checked = run(
        body_of(
            chunk({"content": "a"}, usage={"prompt_tokens": 5, "completion_tokens": 1}),
            chunk({"content": "b"}, usage={"prompt_tokens": 5, "completion_tokens": 2}),
            chunk({}, "stop", usage={"prompt_tokens": 5, "completion_tokens": 3}),
        )
    )
    assert checked.response["usage"]["output_tokens"] == 3
    assert checked.response["usage"]["total_tokens"] == 8
    assert checked.output_text == "ab"


def test_groq_usage_and_deepseek_cache_hits_are_read() -> None:
    groq = chunk(
        {},
        "stop",
        x_groq={
            "id": "req",
            "usage": {
                "prompt_tokens": 2,
                "completion_tokens": 3,
                "total_tokens": 5,
                "prompt_cache_hit_tokens": 1,
            },
        },
    )
    checked = run(body_of(chunk({"content": "x"}), groq))
    usage = checked.response["usage"]
    assert usage["total_tokens"] == 5
    assert usage["input_tokens_details"]["cached_tokens"] == 1


# --- ids and determinism --------------------------------------------------------------------


def test_item_ids_are_deterministic_prefixed_and_short() -> None:
    reads = body_of(
        chunk({"reasoning_content": "r"}),
        chunk({"content": "t"}),
        call_chunk({"index": 0, "id": "c", "function": {"name": "apply_patch", "arguments": "{}"}}),
        call_chunk({"index": 1, "id": "d", "function": {"name": "f", "arguments": "{}"}}),
        chunk({}, "tool_calls"),
    )
    checked = run(reads, CUSTOM_REQUEST)
    assert [i.id.split("_")[0] for i in checked.items] == ["rs", "msg", "ctc", "fc"]
    assert all(len(i.id) <= 64 for i in checked.items)
    assert run(reads, CUSTOM_REQUEST).events == checked.events
    long_id = StreamConverter(response_id="resp_" + "z" * 80)
    out = long_id.feed(b"".join(reads))
    assert all(len(i.id) <= 64 for i in check_stream(out).items)


def test_random_response_ids_are_fresh_per_converter() -> None:
    first, second = StreamConverter(), StreamConverter()
    assert first.response["id"] != second.response["id"]
    assert first.response["id"].startswith("resp_")


# --- the shortcut path -------------------------------------------------------------------------


def test_repeated_chunk_layout_takes_the_shortcut_with_identical_output() -> None:
    reads = body_of(*[chunk({"content": f"w{i} "}) for i in range(40)], chunk({}, "stop"))
    checked = run(reads)
    assert checked.output_text == "".join(f"w{i} " for i in range(40))
    converter = make()
    for read in reads[:5]:
        converter.feed(read)
    assert converter._translator.fast_part is not None
    assert converter._text.holder is converter._translator.fast_part
    assert converter._text.shortcut is not None


@pytest.mark.parametrize(
    "tricky",
    [
        # Same layout, but the string is followed by a line break: SSE sees two lines.
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"upstream-model","choices":[{"index":0,"delta":{"content":"x"}\n,"logprobs":null,"finish_reason":null}]}\n\n',
        # Same prefix and suffix, but a raw line break inside the string: two SSE lines.
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"upstream-model","choices":[{"index":0,"delta":{"content":"x\ny"},"logprobs":null,"finish_reason":null}]}\n\n',
        # Same layout, but the "string" is two JSON values.
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"upstream-model","choices":[{"index":0,"delta":{"content":"x","role":"y"},"logprobs":null,"finish_reason":null}]}\n\n',
        # Same layout with a finish reason: the suffix differs.
        event(chunk({"content": "z"}, "stop")),
    ],
)
def test_reads_that_only_look_like_the_shortcut_take_the_full_path(tricky: bytes) -> None:
    reads = body_of(*[chunk({"content": "a"}) for _ in range(5)], tricky, chunk({}, "stop"))
    run(reads)  # the three ways of feeding (shortcut or not) must agree


def obfuscated(body: dict[str, Any], padding: str) -> dict[str, Any]:
    """A chunk as OpenAI streams it: ``usage: null`` and random ``obfuscation`` at the end."""
    return {**body, "usage": None, "obfuscation": padding}


def test_chunks_differing_only_in_obfuscation_take_the_shortcut_with_identical_output() -> None:
    pieces = [f"w{i} " for i in range(30)]
    reads = body_of(
        *[obfuscated(chunk({"content": p}), "x" * (i % 7)) for i, p in enumerate(pieces)],
        obfuscated(chunk({}, "stop"), "q"),
    )
    assert run(reads).output_text == "".join(pieces)
    converter = make()
    out = [converter.feed(read) for read in reads[:10]]
    assert converter._text.holder is converter._translator.fast_part is not None
    shortcut = converter._text.shortcut
    assert shortcut is not None
    assert shortcut.gap.endswith(b'"obfuscation":')
    assert shortcut.hits > 0
    assert b'"delta":"w9 "' in out[-1]


def test_arguments_differing_only_in_obfuscation_take_the_shortcut() -> None:
    first = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}
    more = [{"index": 0, "function": {"arguments": str(i)}} for i in range(10)]
    reads = body_of(
        obfuscated(call_chunk(first), "abc"),
        *[obfuscated(call_chunk(m), "p" * i) for i, m in enumerate(more)],
        obfuscated(chunk({}, "tool_calls"), ""),
    )
    assert [i.arguments for i in run(reads).items] == ["0123456789"]
    converter = make()
    for read in reads[:8]:
        converter.feed(read)
    assert converter._arguments.holder is converter._reader.calls.fast_call is not None
    assert converter._arguments.shortcut is not None
    assert converter._arguments.shortcut.gap
    assert converter._arguments.shortcut.hits > 0


def test_obfuscation_shortcut_reads_text_that_contains_the_bytes_around_it() -> None:
    tricky = '"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"'
    pieces = ["a", tricky, "b", tricky + '\\"', "\\", "c"]
    reads = body_of(*[obfuscated(chunk({"content": p}), "zz") for p in pieces], chunk({}, "stop"))
    assert run(reads).output_text == "".join(pieces)


OBFUSCATED_LAYOUT = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
    b'"model":"upstream-model","choices":[{"index":0,"delta":{"content":"x"},"logprobs":null,'
    b'"finish_reason":null}],"usage":null,"obfuscation":%s}\n\n'
)


@pytest.mark.parametrize(
    "padding",
    [
        # Not JSON strings: the full path fails the stream; so must the shortcut.
        b'"bad\\escape"',
        b'"\xff\xfe"',
        # Valid JSON, but not a string: still the full path (which ignores it).
        b"12",
        b"null",
        # A raw line break: two SSE lines.
        b'"a\nb"',
        # Two values where one string belongs.
        b'"a","b"',
    ],
)
def test_reads_that_only_look_like_the_obfuscation_shortcut_take_the_full_path(
    padding: bytes,
) -> None:
    warmup = [obfuscated(chunk({"content": "a"}), "k" * i) for i in range(5)]
    reads = body_of(*warmup, OBFUSCATED_LAYOUT % padding, chunk({}, "stop"))
    run(reads)  # the three ways of feeding (shortcut or not) must agree


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
@pytest.mark.parametrize("reasoning_events", ["text", "summary"])
def test_repeated_reasoning_layout_takes_the_shortcut_with_identical_output(
    field: str, reasoning_events: Any
) -> None:
    pieces = [f"r{i} " for i in range(30)]
    reads = body_of(
        chunk({"role": "assistant", "content": None, field: ""}),
        *[chunk({"content": None, field: p}) for p in pieces],
        chunk({"content": "done"}, "stop"),
    )
    settings = Settings(reasoning_events=reasoning_events)
    checked = run(reads, settings=settings)
    reasoning = checked.items[0]
    assert reasoning.reasoning_text + reasoning.summary_text == "".join(pieces)
    assert checked.output_text == "done"
    converter = make(settings=settings)
    for read in reads[:10]:
        converter.feed(read)
    assert converter._reasoning.holder is converter._translator.reasoning is not None
    assert converter._reasoning.shortcut is not None
    assert converter._reasoning.shortcut.hits > 0


@pytest.mark.parametrize(
    ("delta", "reasoning", "text"),
    [
        # Both fields: the same text, counted once.
        ({"reasoning_content": "a", "reasoning": "a"}, "a", ""),
        # An empty or null reasoning_content defers to reasoning.
        ({"reasoning_content": "", "reasoning": "b"}, "b", ""),
        ({"reasoning_content": None, "reasoning": "c"}, "c", ""),
        ({"reasoning": None, "reasoning_content": "d"}, "d", ""),
        # Empty: nothing to add.
        ({"reasoning_content": ""}, "", ""),
        ({"reasoning": ""}, "", ""),
        # Reasoning and text in one delta: both are kept.
        ({"reasoning_content": "f", "content": "text"}, "f", "text"),
    ],
)
def test_reasoning_deltas_between_fast_path_chunks_are_read_in_full(
    delta: dict[str, Any], reasoning: str, text: str
) -> None:
    same = [chunk({"content": None, "reasoning_content": "x"}) for _ in range(5)]
    reads = body_of(
        chunk({"reasoning_content": "<"}), *same, chunk(delta), *same, chunk({}, "stop")
    )
    checked = run(reads)
    # Text after reasoning closes the reasoning item; later reasoning opens a new one.
    reasoning_texts = [i.summary_text for i in checked.items if i.type == "reasoning"]
    if text:
        assert reasoning_texts == ["<xxxxx" + reasoning, "xxxxx"]
    else:
        assert reasoning_texts == ["<xxxxx" + reasoning + "xxxxx"]
    assert checked.output_text == text


def test_shortcut_for_arguments_follows_the_call_that_owns_the_index() -> None:
    reads = body_of(
        call_chunk({"index": 0, "id": "c1", "function": {"name": "a", "arguments": ""}}),
        *[call_chunk({"index": 0, "id": None, "function": {"arguments": "1"}}) for _ in range(5)],
        call_chunk({"index": 0, "id": "c2", "function": {"name": "b", "arguments": ""}}),
        *[call_chunk({"index": 0, "id": None, "function": {"arguments": "2"}}) for _ in range(5)],
        chunk({}, "tool_calls"),
    )
    checked = run(reads)
    assert [i.arguments for i in checked.items] == ["11111", "22222"]


def test_a_large_event_arriving_in_small_reads_builds_up_in_the_decoder_not_by_joining() -> None:
    # Joining each read to the unfinished event before it would copy the event once per read
    # (quadratic in its size); past 64 KiB it is the decoder's bytearray that grows.
    converter = make()
    converter.feed(event(chunk({"content": "a"})))
    big = event(chunk({"content": "x" * 1_000_000}))
    for start in range(0, len(big) - 4096, 4096):
        converter.feed(big[start : start + 4096])
        assert len(converter._tail) <= 64 * 1024
    out = converter.feed(big[start + 4096 :]) + converter.feed(event(chunk({}, "stop")) + DONE)
    assert b"x" * 1000 in out
    assert converter.finished
