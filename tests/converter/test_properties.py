"""Hypothesis: whatever the upstream sends, however it is split, cut or closed, the emitted
stream keeps every invariant of ``tests/checker.py`` and loses nothing.

Four properties:

- any fixture, truncated at any byte, fed in any split: a valid stream (Guarantee 1);
- any fixture, with ``close(error)`` and keep-alives at arbitrary points and ``close()``
  called again afterwards: a valid stream, exactly one terminal event, a failure that names
  the error that caused it;
- generated upstream streams (random mixes of text, refusal, reasoning, tool-call fragments,
  comments, finish reasons, usage, in-band errors, invalid JSON, line endings): a valid
  stream whose text, reasoning, refusal and arguments equal what the upstream sent before it
  stopped, whose status follows the finish reason, and whose bytes do not depend on the
  split (Guarantees 5 and 6);
- generated streams with a finish reason, cut anywhere after the event carrying it (inside
  the usage chunk, inside ``[DONE]``, or a proxy's report that it lost the upstream): the
  status that finish reason gives (Guarantee 9).

The profile is derandomised and database-less, so CI runs the same examples every time.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_mw import Settings, StreamConverter, UpstreamError
from tests.checker import check_stream, load_fixtures
from tests.converter.test_fixtures import (
    CREATED_AT,
    RESPONSE_ID,
    check_fixture_output,
    convert,
    make_converter,
)

FIXTURES = load_fixtures()

PROFILE = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def draw_pieces(data: st.DataObject, body: bytes) -> list[bytes]:
    """``body`` cut at drawn offsets."""
    if not body:
        return [b""]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=10), label="cuts"))
    bounds = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds)]


@PROFILE
@given(fixture=st.sampled_from(FIXTURES), data=st.data())
def test_a_fixture_cut_at_any_byte_still_ends_in_exactly_one_terminal_event(
    fixture: Any, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(fixture.body)), label="cut")
    out = convert(fixture, draw_pieces(data, fixture.body[:cut]))
    check_fixture_output(fixture, out)


ERRORS: list[BaseException | None] = [
    None,
    UpstreamError("upstream says slow down, try again in 3s", code="rate_limit_exceeded"),
    UpstreamError("prompt is too long", code="context_length_exceeded"),
    ConnectionResetError("connection reset by peer"),
    TimeoutError("read timed out"),
]


@PROFILE
@given(fixture=st.sampled_from(FIXTURES), data=st.data())
def test_close_and_keepalive_at_any_point_keep_the_stream_valid(
    fixture: Any, data: st.DataObject
) -> None:
    pieces = draw_pieces(data, fixture.body)
    close_at = data.draw(st.integers(0, len(pieces)), label="close_at")
    error = data.draw(st.sampled_from(ERRORS), label="error")
    keepalives = set(data.draw(st.lists(st.integers(0, len(pieces))), label="keepalives"))
    converter = make_converter(fixture)
    out = [converter.start()]
    finished_before_close = False
    for index in range(len(pieces) + 1):
        if index in keepalives:
            out.append(converter.keepalive())
        if index == close_at:
            finished_before_close = converter.finished
            out.append(converter.close(error))
            assert converter.finished
        if index < len(pieces):
            out.append(converter.feed(pieces[index]))
    out.append(converter.close())
    assert converter.close(error) == b""
    assert converter.keepalive() == b""

    checked = check_fixture_output(fixture, b"".join(out))
    if error is not None and not finished_before_close and checked.status == "failed":
        failure = checked.response["error"]
        if isinstance(error, UpstreamError):
            assert failure == {"code": error.code, "message": error.message}
        else:
            assert failure["code"] == "server_error"
            assert str(error) in failure["message"]


# --------------------------------------------------------------------------------------------
# Generated upstream streams
# --------------------------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=6)
SLOTS = 3
FINISH_STATUS = {
    None: ("failed", None),
    "stop": ("completed", None),
    "tool_calls": ("completed", None),
    "function_call": ("completed", None),
    "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
}


@dataclass
class Upstream:
    """A generated upstream body and what the converter must make of it."""

    body: bytes
    status: str
    reason: str | None = None
    text: str = ""
    refusal: str = ""
    reasoning: str = ""
    calls: dict[str, tuple[str, str]] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    failure_contains: str | None = None
    #: How the body ends after the finish reason and usage: "done", "eof", "error",
    #: "garbage" or "lost" (a proxy's in-band report that it lost the upstream).
    ending: str = "eof"
    #: The offset just past the event carrying the finish reason, if one was sent.
    finish_end: int | None = None


def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-gen", "object": "chat.completion.chunk", "choices": choices, **extra}


action = st.one_of(
    st.tuples(st.just("text"), TEXT),
    st.tuples(st.just("refusal"), TEXT),
    st.tuples(st.sampled_from(["reasoning_content", "reasoning"]), TEXT),
    st.tuples(st.just("call"), st.integers(0, SLOTS - 1), TEXT),
    st.tuples(st.just("combo"), TEXT, TEXT, st.integers(0, SLOTS - 1), TEXT),
    st.tuples(st.just("comment"), st.just("")),
)


@st.composite
def upstreams(draw: st.DrawFn) -> Upstream:
    actions = draw(st.lists(action, max_size=14), label="actions")
    finish = draw(st.sampled_from(list(FINISH_STATUS)), label="finish")
    usage = draw(st.none() | st.tuples(st.integers(0, 5000), st.integers(0, 5000)), label="usage")
    usage_on_finish_chunk = draw(st.booleans(), label="usage_on_finish_chunk")
    # Weighted so that about half the streams end normally.
    ending = draw(st.sampled_from(["done", "done", "eof", "eof", "error", "garbage", "lost"]))
    interrupt = draw(st.sampled_from([False, False, False, True]), label="interrupt")
    interrupt_at = draw(st.integers(0, len(actions)), label="interrupt_at") if interrupt else None
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]), label="eol")
    space = draw(st.sampled_from(["data: ", "data:"]), label="space")
    spaced = draw(st.booleans(), label="spaced_json")

    frames: list[Any] = []  # chunk dicts, or ("comment" | "error" | "garbage" | "done")
    started: set[int] = set()
    for act in actions:
        kind = act[0]
        if kind == "text":
            frames.append(chunk({"content": act[1]}))
        elif kind == "refusal":
            frames.append(chunk({"refusal": act[1]}))
        elif kind in ("reasoning_content", "reasoning"):
            frames.append(chunk({kind: act[1]}))
        elif kind == "call":
            frames.append(chunk({"tool_calls": [call_fragment(started, act[1], act[2])]}))
        elif kind == "combo":
            _, thought, text, slot, args = act
            fragment = call_fragment(started, slot, args)
            frames.append(
                chunk({"reasoning_content": thought, "content": text, "tool_calls": [fragment]})
            )
        else:
            frames.append("comment")
    if interrupt_at is not None:
        frames.insert(interrupt_at, draw(st.sampled_from(["error", "garbage"])))
    usage_body = None
    if usage is not None:
        usage_body = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
        usage_body["total_tokens"] = usage[0] + usage[1]
    finish_end = None
    if finish is not None:
        extra = {"usage": usage_body} if usage_on_finish_chunk and usage_body else {}
        frames.append(chunk({}, finish, **extra))
        finish_end = len(encode(frames, eol, space, spaced))
    if usage_body is not None and not (finish is not None and usage_on_finish_chunk):
        frames.append(chunk(None, usage=usage_body))
    if ending != "eof":
        frames.append(ending)

    result = expected_outcome(frames, usage_body, encode(frames, eol, space, spaced))
    result.ending = ending
    result.finish_end = finish_end
    return result


def call_fragment(started: set[int], slot: int, args: str) -> dict[str, Any]:
    if slot in started:
        return {"index": slot, "function": {"arguments": args}}
    started.add(slot)
    return {
        "index": slot,
        "id": f"call_{slot}",
        "type": "function",
        "function": {"name": f"tool_{slot}", "arguments": args},
    }


def encode(frames: list[Any], eol: str, space: str, spaced: bool) -> bytes:
    out = []
    for frame in frames:
        if frame == "comment":
            line = ": keep-alive"
        elif frame == "error":
            line = space + json.dumps({"error": {"message": "boom", "type": "server_error"}})
        elif frame == "garbage":
            line = space + "{not json"
        elif frame == "done":
            line = space + "[DONE]"
        elif frame == "lost":
            error = {"message": "upstream broke off the response", "code": "upstream_broke_off"}
            line = space + json.dumps({"error": error})
        else:
            separators = (", ", ": ") if spaced else (",", ":")
            line = space + json.dumps(frame, separators=separators, ensure_ascii=spaced)
        out.append(line + eol + eol)
    return "".join(out).encode()


def expected_outcome(frames: list[Any], usage: dict[str, Any] | None, body: bytes) -> Upstream:
    """Replay the frames the way the protocol says they must be read."""
    result = Upstream(body=body, status="failed")
    finish: str | None = None
    saw_usage = False
    for frame in frames:
        if frame in ("error", "garbage"):
            result.failure_contains = "boom" if frame == "error" else None
            return result
        if frame == "lost":
            if finish is None:
                result.failure_contains = "broke off"
                return result
            break  # the reply arrived whole: losing the upstream now changes nothing
        if frame == "done":
            break
        if frame == "comment":
            continue
        for choice in frame["choices"]:
            delta = choice["delta"]
            result.text += delta.get("content", "")
            result.refusal += delta.get("refusal", "")
            result.reasoning += delta.get("reasoning_content", "") + delta.get("reasoning", "")
            for fragment in delta.get("tool_calls", []):
                call_id = f"call_{fragment['index']}"
                name, args = result.calls.get(call_id, (f"tool_{fragment['index']}", ""))
                result.calls[call_id] = (name, args + fragment["function"]["arguments"])
            finish = choice["finish_reason"] or finish
        saw_usage = saw_usage or "usage" in frame
    result.status, result.reason = FINISH_STATUS[finish]
    if result.status != "failed" and saw_usage and usage is not None:
        result.usage = {
            "input_tokens": usage["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["total_tokens"],
        }
    return result


def run(pieces: list[bytes], settings: Settings | None = None) -> bytes:
    """Convert a generated body (fixed ids and clock, so equal input gives equal bytes)."""
    converter = StreamConverter(
        None,
        settings,
        response_id=RESPONSE_ID,
        created_at=CREATED_AT,
        clock=lambda: float(CREATED_AT),
    )
    out = [converter.start()]
    out.extend(converter.feed(piece) for piece in pieces)
    out.append(converter.close())
    return b"".join(out)


@settings(PROFILE, max_examples=400)
@given(upstream=upstreams(), data=st.data())
def test_generated_upstream_streams_convert_to_valid_streams_that_lose_nothing(
    upstream: Upstream, data: st.DataObject
) -> None:
    whole = run([upstream.body])
    assert run(draw_pieces(data, upstream.body)) == whole

    checked = check_stream(whole, done_marker=True)
    assert checked.status == upstream.status, checked.response.get("error")
    assert (checked.response.get("incomplete_details") or {}).get("reason") == upstream.reason
    if upstream.status == "failed" and upstream.failure_contains:
        assert upstream.failure_contains in checked.response["error"]["message"]
    assert checked.output_text == upstream.text
    assert "".join(i.refusal for i in checked.items) == upstream.refusal
    assert "".join(i.summary_text for i in checked.items) == upstream.reasoning
    calls = {
        item.added["call_id"]: (item.added["name"], item.arguments)
        for item in checked.items
        if item.type == "function_call"
    }
    assert calls == upstream.calls
    if upstream.status != "failed":
        assert checked.response["usage"] == upstream.usage
    for item in checked.items:
        if item.type == "function_call":
            assert item.done == (upstream.status == "completed")


@PROFILE
@given(
    upstream=upstreams().filter(
        lambda u: u.finish_end is not None and u.ending in ("done", "eof", "lost")
    ),
    data=st.data(),
)
def test_a_stream_cut_anywhere_after_its_finish_reason_ends_with_the_status_it_gives(
    upstream: Upstream, data: st.DataObject
) -> None:
    """Issue 11.3: a cut inside the usage chunk or ``[DONE]`` failed a finished answer."""
    assert upstream.finish_end is not None
    cut = data.draw(st.integers(upstream.finish_end, len(upstream.body)), label="cut")
    checked = check_stream(run(draw_pieces(data, upstream.body[:cut])), done_marker=True)
    assert checked.status == upstream.status, checked.response.get("error")
    assert (checked.response.get("incomplete_details") or {}).get("reason") == upstream.reason
    assert checked.output_text == upstream.text
    assert [i.arguments for i in checked.items if i.type == "function_call"] == [
        args for _, args in upstream.calls.values()
    ]


PLAIN = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="<"),
    max_size=8,
)
# Whitespace right after a tag is dropped by design (models put newlines there).
AFTER_TAG = PLAIN.filter(lambda s: not s[:1].isspace())


@PROFILE
@given(
    before=PLAIN,
    thought=AFTER_TAG,
    after=AFTER_TAG,
    tail=st.sampled_from(["", "<", "<thi", "<b>", "</think"]),
    data=st.data(),
)
def test_think_tags_split_anywhere_still_separate_reasoning_from_text(
    before: str, thought: str, after: str, tail: str, data: st.DataObject
) -> None:
    content = f"{before}<think>{thought}</think>{after}{tail}"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(content)), max_size=8), label="cuts"))
    bounds = [0, *cuts, len(content)]
    frames = [chunk({"content": content[a:b]}) for a, b in itertools.pairwise(bounds)]
    frames.append(chunk({}, "stop"))
    body = encode(frames, "\n", "data: ", spaced=False) + b"data: [DONE]\n\n"
    think = Settings(think_tags=True)

    whole = run([body], think)
    assert run(draw_pieces(data, body), think) == whole
    checked = check_stream(whole, done_marker=True)
    assert checked.status == "completed"
    assert "".join(i.summary_text for i in checked.items) == thought
    assert checked.output_text == before + after + tail
