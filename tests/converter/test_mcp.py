"""Remote MCP tools in the converter: list, call, result and the next round, as one response.

The tool loop itself (``_mcp/_loop.py``) lives elsewhere; here each test plays its part by
hand with the converter's own API (``mcp_list_tools``, ``end_round``, ``pending_mcp_calls``,
``mcp_call_result``, ``next_round``), so every event the loop will send is judged: by the
stream checker (``tests/checker.py``), by the openai SDK's models (strict validation), and
for split invariance (each round fed whole, byte by byte and at random splits).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import Response
from openai.types.responses.response_output_item import McpCall, McpListTools

from stream_mw import StreamConverter
from stream_mw._errors import UpstreamError
from stream_mw._mcp._plan import McpPlan, McpServer, McpTool, _Filter
from tests.checker import CheckedStream, check_stream
from tests.converter.test_layers import calls_between_parts
from tests.converter.test_sdk_models import assert_subset, sdk_client, validate_event

RESPONSE_ID = "resp_0123456789abcdef0123456789abcdef"
CREATED_AT = 1_750_000_000
LISTED = [
    {
        "name": "search",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        "description": "Search the docs.",
        "annotations": {"readOnlyHint": True},
    },
    {"name": "delete", "input_schema": {"type": "object"}, "description": None},
]

Pieces = Callable[[bytes], Iterable[bytes]]


def whole(body: bytes) -> list[bytes]:
    return [body]


def byte_by_byte(body: bytes) -> list[bytes]:
    return [body[i : i + 1] for i in range(len(body))]


def random_splits(seed: int) -> Pieces:
    def split(body: bytes) -> list[bytes]:
        rng = random.Random(seed)
        cuts = sorted(rng.randint(0, len(body)) for _ in range(rng.randint(1, 12)))
        return [body[a:b] for a, b in itertools.pairwise([0, *cuts, len(body)])]

    return split


SPLITS: list[Pieces] = [whole, byte_by_byte, *(random_splits(seed) for seed in range(8))]


def plan(approval: str = "never") -> tuple[McpPlan, dict[str, McpTool]]:
    """A plan with one server, ``docs``, offering ``search`` and ``delete``; ``delete`` needs
    approval unless ``approval`` is ``never``, and ``search`` too when it is ``always``."""
    if approval == "never":
        server = McpServer("docs", "https://mcp.example/docs", approve_all=False)
    elif approval == "always":
        server = McpServer("docs", "https://mcp.example/docs", approve_all=True)
    else:
        server = McpServer(
            "docs",
            "https://mcp.example/docs",
            approve_all=None,
            approve=_Filter(frozenset({"delete"})),
        )
    mcp = McpPlan([server], taken=["lookup"])
    tools = {tool.name: tool for tool in mcp.add(server, LISTED)}
    return mcp, tools


def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def usage(prompt: int, completion: int, cached: int = 0) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def call(index: int, call_id: str, name: str, fragments: list[str]) -> list[bytes]:
    first = {"index": index, "id": call_id, "type": "function", "function": {"name": name}}
    first["function"]["arguments"] = fragments[0]
    rest = [{"index": index, "function": {"arguments": fragment}} for fragment in fragments[1:]]
    return [event({"tool_calls": [first]}), *(event({"tool_calls": [r]}) for r in rest)]


def calling_search(*, done: bool = True) -> bytes:
    """A round whose model calls the MCP tool ``docs__search``."""
    return b"".join(
        [
            event({"role": "assistant", "content": ""}),
            *call(0, "call_1", "docs__search", ['{"q":', ' "caf', 'é"}']),
            event({}, "tool_calls"),
            usage(100, 20, cached=10),
            DONE if done else b"",
        ]
    )


def answering(text: str = "Found it: café.") -> bytes:
    words = [text[: len(text) // 2], text[len(text) // 2 :]]
    return b"".join(
        [
            event({"role": "assistant", "content": ""}),
            *(event({"content": word}) for word in words),
            event({}, "stop"),
            usage(150, 30, cached=50),
            DONE,
        ]
    )


def converter(mcp: McpPlan | None, request: dict[str, Any] | None = None) -> StreamConverter:
    return StreamConverter(
        request or {"model": "m", "tools": [{"type": "mcp", "server_label": "docs"}]},
        response_id=RESPONSE_ID,
        created_at=CREATED_AT,
        clock=lambda: float(CREATED_AT),
        mcp=mcp,
    )


def run(
    rounds: list[bytes],
    *,
    pieces: Pieces = whole,
    approval: str = "never",
    results: Callable[[str, McpTool, str], dict[str, Any]] | None = None,
    bound: int | None = None,
) -> bytes:
    """The tool loop, played by hand: list the tools, then each round's body, each pending
    call's result, and the next round, until the response ends (or the bound is reached)."""
    mcp, tools = plan(approval)
    conv = converter(mcp)
    out = [conv.start(), conv.mcp_list_tools("docs", tools.values())]
    for number, body in enumerate(rounds, 1):
        out.extend(conv.feed(piece) for piece in pieces(body))
        out.append(conv.end_round())
        if not conv.awaiting_mcp:
            break
        for item_id, tool, arguments in conv.pending_mcp_calls():
            answer = (
                results(item_id, tool, arguments)
                if results is not None
                else {"output": f"{tool.name} says {arguments}"}
            )
            out.append(conv.mcp_call_result(item_id, **answer))
        if conv.round_ends_response:
            break
        if bound is not None and number == bound:
            out.append(conv.close(incomplete=True))
            break
        conv.next_round()
    out.append(conv.close())
    return b"".join(out)


def checked(body: bytes) -> CheckedStream:
    result = check_stream(body)
    for one in result.events:
        validate_event(one)
    return result


def test_a_listing_a_call_its_result_and_the_answer_stream_as_one_response_in_order() -> None:
    result = checked(run([calling_search(), answering()]))
    assert result.types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.output_item.done",
        "response.output_item.added",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    listing, mcp_call, message = result.response["output"]
    assert listing["type"] == "mcp_list_tools"
    assert [tool["name"] for tool in listing["tools"]] == ["search", "delete"]
    assert mcp_call == {
        "id": mcp_call["id"],
        "type": "mcp_call",
        "status": "completed",
        "server_label": "docs",
        "name": "search",
        "arguments": '{"q": "café"}',
        "output": 'search says {"q": "café"}',
        "error": None,
        "approval_request_id": None,
    }
    assert mcp_call["id"].startswith("mcp_")
    assert listing["id"].startswith("mcpl_")
    assert message["content"][0]["text"] == "Found it: café."
    # The terminal object parses as the SDK's Response, its items as the SDK's MCP models.
    response = Response.model_validate(result.response)
    assert isinstance(response.output[0], McpListTools)
    assert isinstance(response.output[1], McpCall)


@pytest.mark.parametrize("pieces", SPLITS, ids=lambda p: getattr(p, "__name__", "random"))
def test_every_round_gives_the_same_bytes_fed_whole_byte_by_byte_or_at_random_splits(
    pieces: Pieces,
) -> None:
    rounds = [calling_search(), calling_search(), answering()]
    assert run(rounds, pieces=pieces) == run(rounds)


def test_usage_is_the_sum_of_every_round() -> None:
    result = checked(run([calling_search(), calling_search(), answering()]))
    assert result.response["usage"] == {
        "input_tokens": 350,
        "input_tokens_details": {"cached_tokens": 70, "cache_write_tokens": 0},
        "output_tokens": 70,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 420,
    }


def fail_every_call(item_id: str, tool: McpTool, arguments: str) -> dict[str, Any]:
    return {"error": {"type": "mcp_protocol_error", "code": -32603, "message": "boom"}}


APPROVAL_ROUND = b"".join(
    [
        *call(0, "call_1", "docs__search", ['{"q":"a"}']),
        *call(1, "call_2", "docs__delete", ['{"path":"/a"}']),
        event({}, "tool_calls"),
        DONE,
    ]
)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(run([calling_search(), answering()]), id="call then answer"),
        pytest.param(
            run([calling_search(), answering()], results=fail_every_call), id="failed call"
        ),
        pytest.param(run([APPROVAL_ROUND], approval="delete"), id="approval request"),
    ],
)
def test_the_sdk_stream_helper_reads_an_mcp_response_and_rebuilds_it(body: bytes) -> None:
    result = checked(body)
    with (
        sdk_client(body, strict=True) as client,
        client.responses.stream(model="m", input="hi") as stream,
    ):
        assert [e.type for e in stream] == result.types
        final = stream.get_final_response()
    assert_subset(result.response["output"], final.to_dict()["output"], "output")


def test_a_tool_that_needs_approval_is_asked_for_whole_and_the_response_completes() -> None:
    mcp, _ = plan("delete")
    conv = converter(mcp)
    round_one = b"".join(
        [
            event({"role": "assistant", "content": "Deleting."}),
            *call(0, "call_9", "docs__delete", ['{"path"', ': "/tmp/x"}']),
            event({}, "tool_calls"),
            DONE,
        ]
    )
    body = conv.start() + conv.feed(round_one) + conv.end_round()
    assert conv.finished
    assert not conv.awaiting_mcp
    result = checked(body + conv.close())
    assert result.status == "completed"
    assert "response.mcp_call_arguments.delta" not in result.types
    message, request = result.response["output"]
    assert message["content"][0]["text"] == "Deleting."
    assert request == {
        "id": request["id"],
        "type": "mcp_approval_request",
        "status": "completed",
        "server_label": "docs",
        "name": "delete",
        "arguments": '{"path": "/tmp/x"}',
    }
    assert request["id"].startswith("mcpr_")


def test_a_call_needing_approval_beside_one_that_runs_ends_the_response_after_its_result() -> None:
    mcp, _ = plan("delete")
    conv = converter(mcp)
    round_one = b"".join(
        [
            *call(0, "call_1", "docs__search", ['{"q":"a"}']),
            *call(1, "call_2", "docs__delete", ['{"path":"/a"}']),
            event({}, "tool_calls"),
            DONE,
        ]
    )
    out = [conv.start(), conv.feed(round_one)]
    assert conv.awaiting_mcp
    assert conv.round_ends_response
    assert not conv.finished
    ((item_id, tool, arguments),) = conv.pending_mcp_calls()
    assert (tool.name, arguments) == ("search", '{"q":"a"}')
    out += [conv.mcp_call_result(item_id, output="a found"), conv.close()]
    result = checked(b"".join(out))
    assert result.status == "completed"
    assert [item["type"] for item in result.response["output"]] == [
        "mcp_call",
        "mcp_approval_request",
    ]


def test_a_failed_call_carries_an_sdk_shaped_error_and_the_model_goes_on() -> None:
    def fail(item_id: str, tool: McpTool, arguments: str) -> dict[str, Any]:
        return {"error": "the server answered 502"}

    result = checked(run([calling_search(), answering()], results=fail))
    assert "response.mcp_call.failed" in result.types
    assert result.status == "completed"
    failed = result.response["output"][1]
    assert failed["status"] == "failed"
    assert failed["output"] is None
    assert failed["error"] == {
        "type": "mcp_tool_execution_error",
        "content": [{"type": "text", "text": "the server answered 502"}],
    }
    assert isinstance(Response.model_validate(result.response).output[1], McpCall)


def test_an_error_already_shaped_as_the_sdk_union_is_kept() -> None:
    def fail(item_id: str, tool: McpTool, arguments: str) -> dict[str, Any]:
        return {"error": {"type": "http_error", "code": 503, "message": "unavailable"}}

    result = checked(run([calling_search(), answering()], results=fail))
    assert result.response["output"][1]["error"] == {
        "type": "http_error",
        "code": 503,
        "message": "unavailable",
    }


def test_a_server_whose_listing_failed_fails_the_response() -> None:
    mcp, _ = plan()
    conv = converter(mcp)
    body = conv.start() + conv.mcp_list_tools_failed("docs", "connection refused")
    body += conv.close(
        UpstreamError("MCP server 'docs' could not list its tools", code="server_error")
    )
    result = checked(body)
    assert result.types[2:] == [
        "response.output_item.added",
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.failed",
        "response.output_item.done",
        "response.failed",
    ]
    listing = result.response["output"][0]
    assert listing["status"] == "failed"
    assert listing["error"] == "connection refused"
    assert result.response["error"]["code"] == "server_error"


def test_reaching_the_round_bound_ends_the_response_incomplete() -> None:
    result = checked(run([calling_search(), calling_search(), answering()], bound=2))
    assert result.status == "incomplete"
    assert result.response["incomplete_details"] == {"reason": "max_messages"}
    assert [item["type"] for item in result.response["output"]] == [
        "mcp_list_tools",
        "mcp_call",
        "mcp_call",
    ]
    # The reason is one the SDK's Response model allows.
    assert Response.model_validate(result.response).incomplete_details is not None


def test_close_while_a_call_runs_lists_it_incomplete_and_never_finished() -> None:
    mcp, _ = plan()
    conv = converter(mcp)
    body = conv.start() + conv.feed(calling_search()) + conv.end_round()
    assert conv.awaiting_mcp
    body += conv.close(ConnectionResetError("client went away"))
    result = checked(body)
    assert result.status == "failed"
    assert "response.mcp_call.completed" not in result.types
    assert "response.mcp_call.failed" not in result.types
    (listed,) = result.response["output"]
    assert listed["status"] == "incomplete"
    assert listed["output"] is None


def test_a_response_closed_before_its_call_returned_fails_rather_than_completes() -> None:
    mcp, _ = plan()
    conv = converter(mcp)
    body = conv.start() + conv.feed(calling_search()) + conv.close()
    result = checked(body)
    assert result.status == "failed"
    assert result.response["output"][0]["status"] == "incomplete"


def test_a_stream_cut_inside_an_mcp_call_never_shows_its_arguments_done() -> None:
    mcp, _ = plan()
    conv = converter(mcp)
    cut = b"".join(call(0, "call_1", "docs__search", ['{"q": "ca']))
    body = conv.start() + conv.feed(cut) + conv.end_round()
    result = checked(body + conv.close())
    assert result.status == "failed"
    assert "response.mcp_call_arguments.done" not in result.types
    assert conv.pending_mcp_calls() == []
    assert result.response["output"][0]["arguments"] == '{"q": "ca'


def test_a_body_without_done_ends_its_round_at_end_round() -> None:
    mcp, _ = plan()
    conv = converter(mcp)
    out = conv.start() + conv.feed(calling_search(done=False))
    assert not conv.awaiting_mcp
    out += conv.end_round()
    assert conv.awaiting_mcp
    ((item_id, _, _),) = conv.pending_mcp_calls()
    out += conv.mcp_call_result(item_id, output="ok")
    conv.next_round()
    out += conv.feed(answering()) + conv.end_round() + conv.close()
    assert checked(out).status == "completed"


def test_a_client_function_call_beside_an_mcp_call_ends_the_response_after_the_results() -> None:
    mcp, _ = plan()
    conv = converter(
        mcp,
        {
            "model": "m",
            "tools": [
                {"type": "function", "name": "lookup", "parameters": {"type": "object"}},
                {"type": "mcp", "server_label": "docs"},
            ],
        },
    )
    round_one = b"".join(
        [
            *call(0, "call_1", "docs__search", ['{"q":"a"}']),
            *call(1, "call_2", "lookup", ['{"id":', "7}"]),
            event({}, "tool_calls"),
            DONE,
        ]
    )
    out = [conv.start(), conv.feed(round_one)]
    assert conv.awaiting_mcp
    assert conv.round_ends_response
    ((item_id, _, _),) = conv.pending_mcp_calls()
    out += [conv.mcp_call_result(item_id, output="a"), conv.close()]
    result = checked(b"".join(out))
    assert result.status == "completed"
    function_call = result.response["output"][1]
    assert (function_call["type"], function_call["name"]) == ("function_call", "lookup")
    assert function_call["arguments"] == '{"id":7}'


def test_an_approved_call_from_the_last_turn_runs_before_the_first_round() -> None:
    mcp, tools = plan("always")
    conv = converter(mcp)
    out = [conv.start()]
    item_id, events = conv.open_mcp_call(tools["search"], '{"q":"x"}', "mcpr_earlier_1")
    out += [events]
    assert conv.pending_mcp_calls() == [(item_id, tools["search"], '{"q":"x"}')]
    out += [conv.mcp_call_result(item_id, output="x found")]
    out += [conv.feed(answering()), conv.end_round(), conv.close()]
    result = checked(b"".join(out))
    assert result.types[2:6] == [
        "response.output_item.added",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
    ]
    approved = result.response["output"][0]
    assert approved["approval_request_id"] == "mcpr_earlier_1"
    assert approved["arguments"] == '{"q":"x"}'
    assert approved["output"] == "x found"


def test_output_items_give_each_finished_item_in_its_done_form_for_the_next_round() -> None:
    mcp, tools = plan()
    conv = converter(mcp)
    conv.start()
    conv.mcp_list_tools("docs", tools.values())
    conv.feed(calling_search())
    ((item_id, _, _),) = conv.pending_mcp_calls()
    conv.mcp_call_result(item_id, output="café found")
    listing, mcp_call = conv.output_items()
    assert listing["status"] == "completed"
    assert len(listing["tools"]) == 2
    assert (mcp_call["status"], mcp_call["output"]) == ("completed", "café found")


def test_next_round_before_every_result_is_refused() -> None:
    mcp, _ = plan()
    conv = converter(mcp)
    conv.start()
    conv.feed(calling_search())
    with pytest.raises(RuntimeError, match="result"):
        conv.next_round()


def test_a_round_without_mcp_calls_ends_the_response_at_its_done() -> None:
    result = checked(run([answering()]))
    assert result.status == "completed"
    assert [item["type"] for item in result.response["output"]] == ["mcp_list_tools", "message"]


def events_of(body: bytes) -> list[bytes]:
    return [piece + b"\n\n" for piece in body.split(b"\n\n") if piece]


def loop_steps(conv: StreamConverter, tools: dict[str, McpTool]) -> list[Callable[[], bytes]]:
    """The tool loop as single steps, each returning what it wrote."""

    def result() -> bytes:
        return b"".join(
            conv.mcp_call_result(item_id, output="ok") for item_id, _, _ in conv.pending_mcp_calls()
        )

    def next_round() -> bytes:
        conv.next_round()
        return b""

    round_one = b"".join(
        [
            *call(0, "call_1", "docs__search", ['{"q":', '"a"}']),
            *call(1, "call_2", "docs__delete", ['{"p":1}']),
            event({"content": "between"}),
            event({}, "tool_calls"),
            usage(10, 2),
            DONE,
        ]
    )
    return [
        conv.start,
        lambda: conv.mcp_list_tools("docs", tools.values()),
        *(lambda piece=piece: conv.feed(piece) for piece in events_of(round_one)),
        conv.end_round,
        result,
        *(lambda piece=piece: conv.feed(piece) for piece in events_of(answering())),
    ]


@pytest.mark.parametrize("error", [None, ConnectionResetError("gone")], ids=["close", "error"])
def test_close_after_any_step_of_the_loop_ends_everything_it_opened(
    error: BaseException | None,
) -> None:
    mcp, tools = plan("delete")
    steps = len(loop_steps(converter(mcp), tools))
    for cut in range(steps + 1):
        conv = converter(mcp)
        out = [step() for step in loop_steps(conv, tools)[:cut]]
        out.append(conv.close(error))
        result = checked(b"".join(out))
        assert result.status in ("failed", "completed"), cut
        for item in result.response["output"]:
            if item["type"] == "mcp_call" and item["output"] is None:
                assert item["status"] == "incomplete", (cut, item)


def test_a_keepalive_between_rounds_repeats_in_progress_with_the_next_number() -> None:
    mcp, _ = plan()
    conv = converter(mcp)
    out = conv.start() + conv.feed(calling_search())
    assert conv.awaiting_mcp
    out += conv.keepalive()
    ((item_id, _, _),) = conv.pending_mcp_calls()
    out += conv.mcp_call_result(item_id, output="ok")
    conv.next_round()
    out += conv.feed(answering()) + conv.close()
    result = checked(out)
    assert result.types.count("response.in_progress") == 2


@pytest.mark.parametrize("pieces", SPLITS, ids=lambda p: getattr(p, "__name__", "random"))
def test_an_approval_request_is_the_same_whatever_the_splits(pieces: Pieces) -> None:
    rounds = [
        b"".join(
            [
                *call(0, "call_1", "docs__search", ['{"q":', '"a"}']),
                *call(1, "call_2", "docs__delete", ['{"p', 'ath":', '"/x"}']),
                event({}, "tool_calls"),
                DONE,
            ]
        )
    ]
    body = run(rounds, pieces=pieces, approval="delete")
    assert body == run(rounds, approval="delete")
    request = checked(body).response["output"][-1]
    assert (request["type"], request["arguments"]) == ("mcp_approval_request", '{"path":"/x"}')


def reframed(events: list[dict[str, Any]]) -> bytes:
    """Events as an SSE body again, numbered afresh (for doctored streams)."""
    frames = []
    for number, one in enumerate(events):
        one = {**one, "sequence_number": number}
        frames.append(b"event: %s\ndata: %s\n\n" % (one["type"].encode(), orjson.dumps(one)))
    return b"".join(frames) + DONE


def doctored(change: Callable[[list[dict[str, Any]]], None]) -> bytes:
    events = check_stream(run([calling_search(), answering()])).events
    change(events)
    return reframed(events)


def drop_arguments_done(events: list[dict[str, Any]]) -> None:
    events[:] = [e for e in events if e["type"] != "response.mcp_call_arguments.done"]


def completed_with_an_error(events: list[dict[str, Any]]) -> None:
    for one in events:
        item = one.get("item") or {}
        if one["type"] == "response.output_item.done" and item.get("type") == "mcp_call":
            item["error"] = {"type": "http_error", "code": 500, "message": "x"}


def result_twice(events: list[dict[str, Any]]) -> None:
    at = next(i for i, e in enumerate(events) if e["type"] == "response.mcp_call.completed")
    events.insert(at, dict(events[at]))


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (drop_arguments_done, "ended before its arguments"),
        (completed_with_an_error, "a completed mcp_call has error"),
        (result_twice, "mcp_call completed after"),
    ],
)
def test_the_checker_refuses_an_mcp_call_out_of_order_or_inconsistent(
    change: Callable[[list[dict[str, Any]]], None], complaint: str
) -> None:
    check_stream(doctored(lambda events: None))  # undoctored, it passes
    with pytest.raises(AssertionError, match=complaint):
        check_stream(doctored(change))


def test_an_mcp_calls_argument_fragments_take_the_same_shortcut_as_a_function_calls() -> None:
    """MCP is decided once per call, when it is named: its fragments cost what a function
    call's do."""
    visited = {}
    for name, mcp in (("docs__search", plan()[0]), ("lookup", None)):
        conv = converter(mcp, {"model": "m", "tools": [{"type": "function", "name": "lookup"}]})
        conv.start()
        for piece in events_of(b"".join(call(0, "c", name, ["{", '"a', '":', " 1", ", "]))):
            conv.feed(piece)
        fragment = event({"tool_calls": [{"index": 0, "function": {"arguments": '"b"'}}]})
        visited[name] = [callee for _, callee in calls_between_parts(conv, fragment)]
    assert visited["docs__search"] == visited["lookup"]
    assert visited["lookup"][0] == "_shortcut"


@settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_the_loop_cut_at_any_byte_of_either_round_ends_in_one_terminal_event(
    data: st.DataObject,
) -> None:
    mcp, tools = plan("delete")
    rounds = [
        b"".join(
            [
                event({"reasoning_content": "think"}),
                *call(0, "call_1", "docs__search", ['{"q":', '"a"}']),
                *call(1, "call_2", "docs__delete", ['{"p":1}']),
                event({}, "tool_calls"),
                usage(10, 2),
                DONE,
            ]
        ),
        answering(),
    ]
    broken = data.draw(st.integers(0, 1), label="round")
    cut = data.draw(st.integers(0, len(rounds[broken])), label="cut")
    error = data.draw(st.sampled_from([None, ConnectionResetError("reset")]), label="error")
    conv = converter(mcp)
    out = [conv.start(), conv.mcp_list_tools("docs", tools.values())]
    for number, body in enumerate(rounds):
        if number == broken:
            body = body[:cut]
        out.extend(conv.feed(piece) for piece in random_splits(cut)(body))
        if number == broken:
            break
        out.append(conv.end_round())
        for item_id, _, _ in conv.pending_mcp_calls():
            out.append(conv.mcp_call_result(item_id, output="ok"))
        conv.next_round()
    out.append(conv.close(error))
    result = checked(b"".join(out))
    for item in result.response["output"]:
        if item["type"] == "mcp_call" and item["output"] is None:
            assert item["status"] == "incomplete"
            assert result.status == "failed"
