"""The recorded upstream corpus through the converter: split-invariant, valid, as expected.

Every fixture in ``tests/fixtures/streams`` is fed whole, one byte at a time and at 20 seeded
random split patterns; the outputs must be byte-identical (Guarantee 6), pass every stream
invariant (``tests/checker.py``) and match the fixture's hand-written ``.expect.json``.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
import re
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from stream_mw import Settings, StreamConverter
from stream_mw._sse import SSEDecoder
from tests.checker import (
    FIXTURE_DIR,
    CheckedStream,
    Fixture,
    check_expectation,
    check_stream,
    load_fixtures,
    parse_frames,
)

FIXTURES = load_fixtures()
BY_NAME = {f.name: f for f in FIXTURES}
RESPONSE_ID = "resp_0123456789abcdef0123456789abcdef"
CREATED_AT = 1_750_000_000
RANDOM_SPLITS = 20


def make_converter(fixture: Fixture) -> StreamConverter:
    """A converter for the fixture's request and settings, with fixed ids and clock."""
    return StreamConverter(
        fixture.request,
        Settings(**fixture.settings),
        response_id=RESPONSE_ID,
        created_at=CREATED_AT,
        clock=lambda: float(CREATED_AT),
    )


def convert(fixture: Fixture, pieces: Iterable[bytes]) -> bytes:
    """Start, feed every piece, close: everything the converter emitted, joined."""
    converter = make_converter(fixture)
    out = [converter.start()]
    out.extend(converter.feed(piece) for piece in pieces)
    out.append(converter.close())
    return b"".join(out)


def random_pieces(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut at a random number of random offsets (empty pieces included)."""
    cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(0, 12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def check_fixture_output(fixture: Fixture, body: bytes) -> CheckedStream:
    """Run the checker with the options the fixture's settings imply."""
    settings = Settings(**fixture.settings)
    return check_stream(
        body,
        done_marker=settings.done_marker,
        partial_calls_done=settings.close_partial_tool_calls,
    )


parametrize_fixtures = pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.name)


def test_the_corpus_holds_at_least_forty_streams_each_with_an_expectation() -> None:
    streams = {p.name.removesuffix(".sse") for p in FIXTURE_DIR.glob("*.sse")}
    expectations = {p.name.removesuffix(".expect.json") for p in FIXTURE_DIR.glob("*.expect.json")}
    assert len(streams) >= 40
    assert streams == expectations


@parametrize_fixtures
def test_output_does_not_depend_on_how_the_upstream_body_was_split(fixture: Fixture) -> None:
    whole = convert(fixture, [fixture.body])
    assert convert(fixture, [fixture.body[i : i + 1] for i in range(len(fixture.body))]) == whole
    for seed in range(RANDOM_SPLITS):
        rng = random.Random(f"{fixture.name}/{seed}")
        assert convert(fixture, random_pieces(fixture.body, rng)) == whole, f"seed {seed}"


@parametrize_fixtures
def test_converted_fixture_keeps_every_invariant_and_matches_its_expectation(
    fixture: Fixture,
) -> None:
    checked = check_fixture_output(fixture, convert(fixture, [fixture.body]))
    check_expectation(checked, fixture.expect)


@parametrize_fixtures
def test_terminal_response_equals_the_converters_final_snapshot(fixture: Fixture) -> None:
    converter = make_converter(fixture)
    body = converter.start() + converter.feed(fixture.body) + converter.close()
    assert converter.finished
    assert converter.response == check_fixture_output(fixture, body).response


@parametrize_fixtures
def test_nothing_is_emitted_after_the_terminal_event(fixture: Fixture) -> None:
    converter = make_converter(fixture)
    converter.start()
    converter.feed(fixture.body)
    converter.close()
    assert converter.close() == b""
    assert converter.close(RuntimeError("late")) == b""
    assert converter.feed(b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n') == b""
    assert converter.keepalive() == b""


def finish_reason_end(body: bytes) -> int | None:
    """The offset just past the upstream event that carries the first ``finish_reason``."""
    decoder = SSEDecoder()
    for offset in range(len(body)):
        for message in decoder.feed(body[offset : offset + 1]):
            try:
                chunk = json.loads(message.data)
            except ValueError:
                continue
            if isinstance(chunk, dict) and any(
                isinstance(choice, dict) and choice.get("finish_reason")
                for choice in chunk.get("choices") or []
            ):
                return offset + 1
    return None


FINISHED_FIXTURES = [f for f in FIXTURES if finish_reason_end(f.body) is not None]


@pytest.mark.parametrize("fixture", FINISHED_FIXTURES, ids=lambda f: f.name)
def test_a_body_cut_anywhere_after_its_finish_reason_keeps_the_status_it_gives(
    fixture: Fixture,
) -> None:
    """Issue 11.1: a cut inside the usage chunk or ``[DONE]`` failed a finished answer."""
    whole = check_fixture_output(fixture, convert(fixture, [fixture.body])).response
    end = finish_reason_end(fixture.body)
    assert end is not None
    for cut in range(end, len(fixture.body) + 1):
        response = check_fixture_output(fixture, convert(fixture, [fixture.body[:cut]])).response
        where = f"cut at {cut}: {response.get('error')}"
        assert response["status"] == whole["status"], where
        assert response.get("incomplete_details") == whole.get("incomplete_details"), where
        assert response["output"] == whole["output"], where


def upstream_text(frame: bytes) -> str | None:
    """The text one plain ``data: {...}`` frame carries; None if it is an error or not JSON,
    ``""`` if it carries no text (or is a comment, ``[DONE]``, ...)."""
    data = [line[len(b"data: ") :] for line in frame.split(b"\n") if line.startswith(b"data: ")]
    if not data or not data[0].startswith(b"{"):
        return ""
    try:
        chunk = json.loads(b"\n".join(data))
    except ValueError:
        return None
    if chunk.get("error") or chunk.get("object") == "error" or frame.startswith(b"event: error"):
        return None
    text = ""
    for choice in chunk.get("choices") or []:
        content = (choice.get("delta") or {}).get("content")
        if isinstance(content, str):
            text += content
        elif isinstance(content, list):
            text += "".join(p["text"] for p in content if p.get("type") == "text")
    return text


TEXT_FIXTURES = [
    f
    for f in FIXTURES
    if not f.settings.get("think_tags") and b"\r" not in f.body and b"data: {" in f.body
]


@pytest.mark.parametrize("fixture", TEXT_FIXTURES, ids=lambda f: f.name)
def test_each_upstream_chunk_is_translated_before_the_next_one_is_read(fixture: Fixture) -> None:
    converter = make_converter(fixture)
    emitted = converter.start()
    sent = ""
    for frame in fixture.body.split(b"\n\n"):
        text = upstream_text(frame)
        if text is None:
            break  # an error or invalid frame ends the stream here
        emitted += converter.feed(frame + b"\n\n")
        sent += text
        streamed = "".join(
            json.loads(data)["delta"]
            for name, data in parse_frames(emitted)[0]
            if name == "response.output_text.delta"
        )
        assert streamed == sent


def test_item_ids_follow_the_response_id_so_a_fixed_id_gives_fixed_bytes() -> None:
    fixture = BY_NAME["openai_text_then_calls_then_text"]
    first = convert(fixture, [fixture.body])
    assert convert(fixture, [fixture.body]) == first
    ids = [item.id for item in check_stream(first).items]
    assert len(set(ids)) == 4
    other = StreamConverter(fixture.request, response_id="resp_ffffffffffffffffffffffffffffffff")
    other_ids = [item.id for item in check_stream(other.feed(fixture.body) + other.close()).items]
    assert not set(ids) & set(other_ids)


# --------------------------------------------------------------------------------------------
# The checker itself: each broken variant of a valid stream is rejected, precisely.
# --------------------------------------------------------------------------------------------


def encode(events: list[dict[str, Any]], *, renumber: bool = True, done: bool = True) -> bytes:
    out = []
    for seq, event in enumerate(events):
        if renumber:
            event = {**event, "sequence_number": seq}
        data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        out.append(f"event: {event['type']}\ndata: {data}\n\n".encode())
    return b"".join(out) + (b"data: [DONE]\n\n" if done else b"")


def first(events: list[dict[str, Any]], event_type: str) -> int:
    return next(i for i, e in enumerate(events) if e["type"] == event_type)


def drop_first(event_type: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    def mutate(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        del events[first(events, event_type)]
        return events

    return mutate


def swap_first(a: str, b: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    def mutate(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        i, j = first(events, a), first(events, b)
        events[i], events[j] = events[j], events[i]
        return events

    return mutate


def edit_terminal(change: Callable[[dict[str, Any]], None]) -> Any:
    def mutate(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        change(events[-1]["response"])
        return events

    return mutate


def done_the_truncated_call(
    events: list[dict[str, Any]], *, item_done: bool = True
) -> list[dict[str, Any]]:
    terminal = events.pop()
    call = terminal["response"]["output"][-1]
    events.append(
        {
            "type": "response.function_call_arguments.done",
            "item_id": call["id"],
            "output_index": 1,
            "name": call["name"],
            "arguments": call["arguments"],
        }
    )
    if item_done:
        events.append({"type": "response.output_item.done", "output_index": 1, "item": call})
    events.append(terminal)
    return events


def clear_usage_field(response: dict[str, Any]) -> None:
    del response["usage"]["input_tokens_details"]["cache_write_tokens"]


BROKEN_STREAMS = [
    ("a dropped text delta", drop_first("response.output_text.delta"), "concatenated deltas"),
    (
        "a delta before its content part",
        swap_first("response.content_part.added", "response.output_text.delta"),
        "was never added",
    ),
    (
        "the part closed before its text",
        swap_first("response.output_text.done", "response.content_part.done"),
        "before its text done event",
    ),
    (
        "an item closed before its part",
        swap_first("response.content_part.done", "response.output_item.done"),
        "part is open",
    ),
    ("a missing in_progress event", drop_first("response.in_progress"), "second event"),
    (
        "a call without its arguments done event",
        drop_first("response.function_call_arguments.done"),
        "arguments/input done",
    ),
    (
        "the terminal output missing an item",
        edit_terminal(lambda r: r["output"].pop()),
        "terminal output lists",
    ),
    (
        "a terminal output item that differs from its done item",
        edit_terminal(lambda r: r["output"][0]["content"][0].update(text="other")),
        "differs from its output_item.done item",
    ),
    ("a partial usage object", edit_terminal(clear_usage_field), "cache_write_tokens"),
    (
        "a changed response id",
        edit_terminal(lambda r: r.update(id="resp_other")),
        "response id changed",
    ),
    (
        "an event after the terminal event",
        lambda events: [*events, events[1]],
        "after the terminal event",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [pytest.param(m, msg, id=name) for name, m, msg in BROKEN_STREAMS],
)
def test_checker_rejects_a_broken_variant_of_a_valid_stream(mutate: Any, message: str) -> None:
    fixture = BY_NAME["openai_text_then_calls_then_text"]
    events = check_stream(convert(fixture, [fixture.body])).events
    check_stream(encode(copy.deepcopy(events)))  # the re-encoding itself is valid
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_stream(encode(mutate(copy.deepcopy(events))))


def test_checker_rejects_output_item_done_for_a_call_cut_by_length() -> None:
    fixture = BY_NAME["vllm_length_mid_tool_call"]
    events = check_stream(convert(fixture, [fixture.body])).events
    with pytest.raises(
        AssertionError, match=re.escape("got output_item.done but the response is incomplete")
    ):
        check_stream(encode(done_the_truncated_call(copy.deepcopy(events))))
    check_stream(encode(done_the_truncated_call(copy.deepcopy(events))), partial_calls_done=True)


def test_checker_rejects_arguments_done_for_a_call_cut_by_length() -> None:
    fixture = BY_NAME["vllm_length_mid_tool_call"]
    events = check_stream(convert(fixture, [fixture.body])).events
    broken = encode(done_the_truncated_call(copy.deepcopy(events), item_done=False))
    with pytest.raises(AssertionError, match=re.escape("got only its arguments/input done")):
        check_stream(broken)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(lambda b: b.replace(b"\n", b"\r\n"), "CR", id="crlf"),
        pytest.param(
            lambda b: b.replace(b'"sequence_number":3', b'"sequence_number":4'),
            "sequence_number must be 3",
            id="sequence-gap",
        ),
        pytest.param(
            lambda b: b.replace(b"event: response.in_progress", b"event: response.progress", 1),
            "JSON type is",
            id="event-name-differs-from-type",
        ),
        pytest.param(
            lambda b: b.replace(
                b'{"type":"response.created",', b'{"type": "response.created", ', 1
            ),
            "not compact",
            id="not-compact",
        ),
        pytest.param(lambda b: b.removesuffix(b"data: [DONE]\n\n"), "[DONE]", id="no-done"),
        pytest.param(lambda b: b + b"data: [DONE]\n\n", "after data: [DONE]", id="done-twice"),
        pytest.param(lambda b: b[:-1], "not terminated by a blank line", id="unterminated"),
        pytest.param(lambda b: b"", "[DONE]", id="empty"),
    ],
)
def test_checker_rejects_broken_framing(body: Callable[[bytes], bytes], message: str) -> None:
    fixture = BY_NAME["openai_plain_text"]
    valid = convert(fixture, [fixture.body])
    check_stream(valid, done_marker=True)
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_stream(body(valid), done_marker=True)


def test_checker_rejects_a_body_without_events() -> None:
    with pytest.raises(AssertionError, match="no events at all"):
        check_stream(b"")


# --------------------------------------------------------------------------------------------
# Regressions for converter bugs found while building the corpus.
# --------------------------------------------------------------------------------------------


def sse(*chunks: dict[str, Any]) -> bytes:
    frames = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return frames + b"data: [DONE]\n\n"


def tool_chunk(finish: str | None = None, **fragment: Any) -> dict[str, Any]:
    delta = {"tool_calls": [{"index": 0, **fragment}]} if fragment else {}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_a_name_repeated_at_the_same_index_continues_the_call() -> None:
    """Regression: a repeated name at an explicit, unchanged index (no id) after the arguments
    formed complete JSON used to open a phantom call with empty arguments."""
    body = sse(
        tool_chunk(id="c1", function={"name": "get_weather", "arguments": '{"city":"Rome"}'}),
        tool_chunk(function={"name": "get_weather", "arguments": ""}),
        tool_chunk("tool_calls"),
    )
    converter = StreamConverter(response_id=RESPONSE_ID, created_at=CREATED_AT)
    checked = check_stream(converter.feed(body) + converter.close())
    calls = [(o["call_id"], o["arguments"]) for o in checked.response["output"]]
    assert calls == [("c1", '{"city":"Rome"}')]


def test_a_call_whose_name_never_arrives_fails_the_response_instead_of_going_nameless() -> None:
    """Regression: such a call used to be emitted with name '' (which Codex would run)."""
    body = sse(tool_chunk(id="c1", function={"arguments": "{}"}), tool_chunk("tool_calls"))
    converter = StreamConverter(response_id=RESPONSE_ID, created_at=CREATED_AT)
    checked = check_stream(converter.feed(body) + converter.close())
    assert checked.status == "failed"
    assert "without a function name" in checked.response["error"]["message"]
    assert all(item.added.get("name") for item in checked.items)
