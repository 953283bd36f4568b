"""Hypothesis strategies: Responses request bodies (valid, near-valid, garbage) and upstream streams.

Request bodies come in three families. ``valid_bodies`` follow the Responses request shape
(every item and tool kind the translator knows). ``near_valid_bodies`` take a valid body and
break one thing: a key removed, a field given the wrong type, an unknown item type, extra
nesting. ``garbage_bodies`` are bytes: random binary, non-object JSON, deep nesting, huge
strings, other encodings, JSON extensions (NaN, big integers, lone surrogates).

Upstream streams are lists of Chat Completions SSE pieces (text, reasoning, refusal, tool-call
fragments, finish reasons, usage, in-band errors, comments, junk lines, ``[DONE]``) with a
line-ending style and an ending (clean EOF, the app raising, the connection dropping).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

__all__ = [
    "any_body",
    "garbage_bodies",
    "near_valid_bodies",
    "split",
    "split_points",
    "upstream_streams",
    "valid_bodies",
]

# --- JSON values -----------------------------------------------------------------------------

short_text = st.text(max_size=24)
# Cheaper to draw than from_regex, which dominated the generation time.
identifiers = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=16
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | short_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=6,
)

# --- valid request bodies --------------------------------------------------------------------

input_parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("input_text"), "text": short_text}),
    st.fixed_dictionaries(
        {
            "type": st.just("input_image"),
            "image_url": st.sampled_from(
                ["https://example.com/cat.png", "data:image/png;base64,iVBORw0KGgo="]
            ),
        },
        optional={"detail": st.sampled_from(["auto", "low", "high"])},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("input_file"),
            "filename": st.just("notes.txt"),
            "file_data": st.just("data:text/plain;base64,aGVsbG8="),
        }
    ),
)
output_parts = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("output_text"), "text": short_text},
        optional={"annotations": st.just([])},
    ),
    st.fixed_dictionaries({"type": st.just("refusal"), "refusal": short_text}),
)
call_ids = st.sampled_from(["call_1", "call_2", "call_3"])
function_args = st.one_of(
    st.just("{}"),
    st.dictionaries(identifiers, json_scalars, max_size=3).map(json.dumps),
    short_text,
)

message_items = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "system", "developer"]),
            "content": short_text | st.lists(input_parts, max_size=2),
        },
        optional={"type": st.just("message")},
    ),
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": short_text | st.lists(output_parts, max_size=2)},
        optional={
            "type": st.just("message"),
            "id": st.just("msg_1"),
            "status": st.just("completed"),
        },
    ),
)
call_items = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("function_call"),
            "call_id": call_ids,
            "name": identifiers,
            "arguments": function_args,
        },
        optional={"id": st.just("fc_1"), "namespace": identifiers},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("function_call_output"),
            "call_id": call_ids,
            "output": short_text
            | st.lists(
                st.fixed_dictionaries({"type": st.just("input_text"), "text": short_text}),
                max_size=2,
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("custom_tool_call"),
            "call_id": call_ids,
            "name": identifiers,
            "input": short_text,
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("custom_tool_call_output"), "call_id": call_ids, "output": short_text}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("reasoning"),
            "summary": st.lists(
                st.fixed_dictionaries({"type": st.just("summary_text"), "text": short_text}),
                max_size=2,
            ),
        },
        optional={
            "id": st.just("rs_1"),
            "encrypted_content": st.none() | short_text,
            "content": st.lists(
                st.fixed_dictionaries({"type": st.just("reasoning_text"), "text": short_text}),
                max_size=1,
            ),
        },
    ),
)
input_items = st.one_of(message_items, call_items)

parameters_schema = st.just({"type": "object", "properties": {"x": {"type": "string"}}})
function_tools = st.fixed_dictionaries(
    {"type": st.just("function"), "name": identifiers},
    optional={
        "description": short_text,
        "parameters": parameters_schema,
        "strict": st.booleans(),
    },
)
tools = st.one_of(
    function_tools,
    st.fixed_dictionaries(
        {"type": st.just("custom"), "name": identifiers},
        optional={"description": short_text, "format": st.just({"type": "text"})},
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("namespace"),
            "name": identifiers,
            "tools": st.lists(function_tools, min_size=1, max_size=2),
        },
        optional={"description": short_text},
    ),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["web_search", "file_search", "code_interpreter", "image_generation", "local_shell"]
            )
        }
    ),
)
tool_choices = st.one_of(
    st.sampled_from(["auto", "none", "required"]),
    st.fixed_dictionaries({"type": st.just("function"), "name": identifiers}),
    st.fixed_dictionaries(
        {
            "type": st.just("allowed_tools"),
            "mode": st.sampled_from(["auto", "required"]),
            "tools": st.lists(
                st.fixed_dictionaries({"type": st.just("function"), "name": identifiers}),
                max_size=2,
            ),
        }
    ),
)
text_formats = st.one_of(
    st.just({"type": "text"}),
    st.just({"type": "json_object"}),
    st.fixed_dictionaries(
        {"type": st.just("json_schema"), "name": identifiers, "schema": parameters_schema},
        optional={"strict": st.booleans()},
    ),
)

valid_bodies: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "model": st.text(min_size=1, max_size=16),
        "input": short_text | st.lists(input_items, max_size=3),
    },
    optional={
        "stream": st.booleans(),
        "instructions": st.none() | short_text,
        "tools": st.lists(tools, max_size=2),
        "tool_choice": tool_choices,
        "parallel_tool_calls": st.booleans(),
        "temperature": st.floats(min_value=0, max_value=2),
        "top_p": st.floats(min_value=0, max_value=1),
        "max_output_tokens": st.integers(min_value=1, max_value=100_000),
        "text": st.fixed_dictionaries({"format": text_formats}),
        "reasoning": st.fixed_dictionaries(
            {},
            optional={
                "effort": st.sampled_from(["minimal", "low", "medium", "high"]),
                "summary": st.sampled_from(["auto", "concise", "detailed"]),
            },
        ),
        "metadata": st.dictionaries(identifiers, short_text, max_size=3),
        "store": st.booleans(),
        "include": st.lists(
            st.sampled_from(
                ["reasoning.encrypted_content", "message.output_text.logprobs", "unknown.include"]
            ),
            max_size=2,
        ),
        "top_logprobs": st.integers(min_value=0, max_value=20),
        "user": short_text,
        "seed": st.integers(min_value=0, max_value=2**31),
        "prompt_cache_key": short_text,
        "safety_identifier": short_text,
        "service_tier": st.sampled_from(["auto", "default", "flex"]),
        "truncation": st.sampled_from(["auto", "disabled"]),
        "previous_response_id": st.just("resp_doesnotexist"),
        "client_metadata": st.dictionaries(identifiers, short_text, max_size=2),
    },
)

# --- near-valid: one thing broken ------------------------------------------------------------

KNOWN_KEYS = [
    "model",
    "input",
    "stream",
    "instructions",
    "tools",
    "tool_choice",
    "temperature",
    "max_output_tokens",
    "text",
    "reasoning",
    "metadata",
    "include",
    "previous_response_id",
    "store",
    "parallel_tool_calls",
    "top_logprobs",
]


@st.composite
def near_valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = dict(draw(valid_bodies))
    how = draw(
        st.sampled_from(["drop", "retype", "unknown_item", "bad_item", "bad_tool", "nest", "extra"])
    )
    if how == "drop":
        body.pop(draw(st.sampled_from(["model", "input"])), None)
    elif how == "retype":
        body[draw(st.sampled_from(KNOWN_KEYS))] = draw(json_values)
    elif how == "unknown_item":
        items = body["input"] if isinstance(body["input"], list) else []
        unknown = {"type": draw(st.sampled_from(["hologram", "", "message2", "function_call_v9"]))}
        unknown.update(draw(st.dictionaries(identifiers, json_scalars, max_size=2)))
        body["input"] = [*items, unknown]
    elif how == "bad_item":
        item = dict(draw(input_items))
        key = draw(st.sampled_from(sorted(item)))
        item[key] = draw(json_values)
        body["input"] = [item]
    elif how == "bad_tool":
        tool = dict(draw(tools))
        tool[draw(st.sampled_from(["name", "type", "parameters", "tools", "format"]))] = draw(
            json_values
        )
        body["tools"] = [tool]
    elif how == "nest":
        body["input"] = [[body["input"]]]
    else:
        body[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    return body


# --- garbage bytes ---------------------------------------------------------------------------


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    depth = draw(st.sampled_from([50, 500, 1_000, 5_000, 50_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = opener * depth + "1" + closer * depth
    where = draw(st.sampled_from(["top", "input", "metadata", "tools"]))
    if where == "top":
        return nested.encode()
    if where == "input":
        return f'{{"model":"m","input":{nested}}}'.encode()
    return f'{{"model":"m","input":"hi","{where}":{nested}}}'.encode()


@st.composite
def huge_strings(draw: st.DrawFn) -> bytes:
    size = draw(st.sampled_from([60_000, 200_000, 300_000, 1_000_000]))
    field = draw(st.sampled_from(["input", "model", "instructions", "key"]))
    filler = draw(st.sampled_from(["x", "é", "\\u00e9", "\\n"]))
    big = filler * (size // len(filler.encode()))
    if field == "key":
        return f'{{"model":"m","input":"hi","{big}":1}}'.encode()
    body = {"model": "m", "input": "hi"}
    return json.dumps(body)[:-1].encode() + f',"{field}":"{big}"}}'.encode()


json_extensions = st.sampled_from(
    [
        b'{"model":"m","input":"hi","temperature":NaN}',
        b'{"model":"m","input":"hi","temperature":Infinity}',
        b'{"model":"m","input":"hi","seed":123456789012345678901234567890}',
        b'{"model":"m","input":"hi","temperature":1e400}',
        b'{"model":"m","input":"\\ud800"}',
        b'{"model":"m","input":"hi",}',
        b'{"model":"m","input":"hi"} trailing',
        b'{"model":"m","model":7,"input":"hi"}',
        b"\xef\xbb\xbf" + b'{"model":"m","input":"hi"}',
        '{"model":"m","input":"hi"}'.encode("utf-16"),
        '{"model":"m","input":"\u00e9t\u00e9"}'.encode("latin-1"),
        b'{"model":"m","input":"a\x00b"}',
        b"",
        b"null",
        b" ",
    ]
)

garbage_bodies: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    deep_nesting(),
    huge_strings(),
    json_extensions,
)

any_body: st.SearchStrategy[bytes] = st.one_of(
    valid_bodies.map(lambda b: json.dumps(b).encode()),
    near_valid_bodies().map(lambda b: json.dumps(b).encode()),
    garbage_bodies,
)


def split_points(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut into 1 to 8 pieces at arbitrary byte offsets."""
    if len(data) < 2:
        return st.just([data])
    return (
        st.lists(st.integers(min_value=1, max_value=len(data) - 1), max_size=7, unique=True)
        .map(sorted)
        .map(lambda cuts: [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=False)])
    )


def split(strategy: st.SearchStrategy[bytes]) -> st.SearchStrategy[tuple[bytes, list[bytes]]]:
    """(data, data cut into pieces): draws both up front, outside the async test body."""
    return strategy.flatmap(lambda data: split_points(data).map(lambda pieces: (data, pieces)))


# --- upstream chat streams -------------------------------------------------------------------

any_text = st.text(
    st.characters(blacklist_categories=["Cs"]), max_size=12
)  # multi-byte and astral code points; the byte splits cut through them


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-fuzz",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fuzz",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    chunk.update(extra)
    return chunk


@st.composite
def tool_piece(draw: st.DrawFn) -> dict[str, Any]:
    """A tool-call fragment; ``upstream_streams`` gives each call its name on first sight."""
    index = draw(st.integers(min_value=0, max_value=2))
    call: dict[str, Any] = {"index": index}
    if draw(st.booleans()):
        # A repeated header, as some backends send; the id is sometimes missing.
        if draw(st.booleans()):
            call["id"] = f"call_{index}"
        call["type"] = "function"
        call["function"] = {"name": draw(st.sampled_from(["run", "get", "unknown_tool"]))}
    args = draw(st.sampled_from(['{"a"', ": 1", "}", "", '"\u00e9\u4e2d"', "{}"]))
    call.setdefault("function", {})["arguments"] = args
    return _chunk({"tool_calls": [call]})


def _name_first_fragments(pieces: list[dict[str, Any] | bytes]) -> None:
    # The first fragment of each call carries its name (responses-protocol.md §9.1); a call
    # announced without one is a different, malformed upstream, tested on its own.
    named: set[int] = set()
    for piece in pieces:
        if isinstance(piece, dict) and piece.get("choices"):
            for call in piece["choices"][0]["delta"].get("tool_calls") or ():
                function = call.setdefault("function", {})
                if call["index"] not in named and not function.get("name"):
                    function["name"] = "run"
                named.add(call["index"])


usage_chunks = st.fixed_dictionaries(
    {
        "prompt_tokens": st.integers(0, 100),
        "completion_tokens": st.integers(0, 100),
        "total_tokens": st.integers(0, 200),
    }
).map(lambda u: _chunk(None, usage=u))

upstream_pieces = st.one_of(
    any_text.map(lambda t: _chunk({"content": t})),
    any_text.map(lambda t: _chunk({"role": "assistant", "content": t})),
    any_text.map(lambda t: _chunk({"reasoning_content": t})),
    any_text.map(lambda t: _chunk({"reasoning": t})),
    any_text.map(lambda t: _chunk({"refusal": t})),
    tool_piece(),
    st.sampled_from(["stop", "length", "tool_calls", "content_filter", "function_call"]).map(
        lambda r: _chunk({}, r)
    ),
    any_text.map(lambda t: _chunk({"content": t}, "stop")),
    usage_chunks,
    st.just(_chunk(None)),
    st.sampled_from(
        [
            {"error": {"message": "boom", "type": "server_error", "code": None}},
            {
                "error": {
                    "message": "maximum context length exceeded",
                    "code": "context_length_exceeded",
                }
            },
            {"error": "a bare string error"},
        ]
    ),
    # Raw SSE lines, not JSON chunks.
    st.sampled_from(
        [
            b": keep-alive comment",
            b"event: ping",
            b"id: 7",
            b"retry: 100",
            b"data: [DONE]",
            b"data: {not json",
            b"data: 42",
            b"data: []",
            b"data:",
            b"no colon line",
            b"data: \xff\xfe",
        ]
    ),
)


def encode_piece(piece: dict[str, Any] | bytes, newline: bytes) -> bytes:
    if isinstance(piece, bytes):
        return piece + newline + newline
    data = json.dumps(piece, ensure_ascii=False).encode()
    return b"data: " + data + newline + newline


@st.composite
def upstream_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes], str]:
    """(upstream SSE body, the same cut into reads, ending: ``eof``, ``raise`` or ``drop``)."""
    newline = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    pieces = draw(st.lists(upstream_pieces, max_size=10))
    _name_first_fragments(pieces)
    if draw(st.booleans()):
        pieces.append(_chunk({}, draw(st.sampled_from(["stop", "tool_calls", "length"]))))
    if draw(st.booleans()):
        pieces.append(b"data: [DONE]")
    data = b"".join(encode_piece(p, newline) for p in pieces)
    ending = draw(st.sampled_from(["eof", "eof", "eof", "raise", "drop"]))
    return data, draw(split_points(data)), ending
