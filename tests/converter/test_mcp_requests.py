"""Remote MCP tools in the request translation: the tools offered, the choice, the history.

The plan (``_mcp/_plan.py``) says which tools the servers listed; the translation offers
them to the Chat backend as functions beside the client's, maps ``tool_choice`` onto them,
and turns replayed MCP items into the tool conversation the backend needs. The Response's
echo of an ``mcp`` tool never carries the server's headers or token.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream_mw import InvalidRequestError, Settings, StreamConverter, translate_request
from stream_mw._mcp._plan import McpPlan, McpServer
from stream_mw._requests import MCP_DECLINED, parse_request_body
from tests.checker import check_response_schema, check_stream
from tests.converter.test_mcp import answering, calling_search
from tests.converter.test_requests import (
    NO_OUTPUT,
    WEATHER,
    WEATHER_CHAT,
    assert_every_call_answered,
    assistant,
    tc,
    tool,
    user,
)

MCP_TOOL = {
    "type": "mcp",
    "server_label": "docs",
    "server_url": "https://mcp.example/docs",
    "headers": {"X-Api-Key": "secret-header"},
    "authorization": "secret-token",
    "require_approval": "never",
}
SEARCH_SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}


def plan(*names: str, label: str = "docs") -> McpPlan:
    server = McpServer(label, "https://mcp.example/docs", approve_all=False)
    mcp = McpPlan([server], taken=["get_weather"])
    mcp.add(server, [{"name": n, "input_schema": SEARCH_SCHEMA} for n in names])
    return mcp


def translate(body: dict[str, Any], mcp: McpPlan | None, **settings: Any) -> dict[str, Any]:
    return translate_request({"model": "m", "input": "hi", **body}, Settings(**settings), mcp=mcp)


def function(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": SEARCH_SCHEMA}}


def test_the_plans_tools_are_offered_as_functions_after_the_clients() -> None:
    chat = translate({"tools": [MCP_TOOL, WEATHER]}, plan("search", "fetch"))
    assert chat["tools"] == [WEATHER_CHAT, function("docs__search"), function("docs__fetch")]


def test_with_a_plan_an_mcp_tool_is_not_a_hosted_tool_even_when_those_are_rejected() -> None:
    chat = translate({"tools": [MCP_TOOL]}, plan("search"), hosted_tools="reject")
    assert chat["tools"] == [function("docs__search")]


def test_without_a_plan_an_mcp_tool_stays_a_hosted_tool() -> None:
    assert "tools" not in translate({"tools": [MCP_TOOL]}, None)
    with pytest.raises(InvalidRequestError) as info:
        translate({"tools": [MCP_TOOL]}, None, hosted_tools="reject")
    assert info.value.param == "tools[0].type"


@pytest.mark.parametrize(
    ("choice", "tools", "expected"),
    [
        pytest.param(
            {"type": "mcp", "server_label": "docs", "name": "fetch"},
            [MCP_TOOL, WEATHER],
            {"type": "function", "function": {"name": "docs__fetch"}},
            id="a named tool is that function",
        ),
        pytest.param(
            {"type": "mcp", "server_label": "docs"},
            [MCP_TOOL],
            "required",
            id="a server whose tools are all the backend has is required",
        ),
        pytest.param(
            {"type": "mcp", "server_label": "docs"},
            [MCP_TOOL, WEATHER],
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [
                        {"type": "function", "function": {"name": "docs__search"}},
                        {"type": "function", "function": {"name": "docs__fetch"}},
                    ],
                },
            },
            id="a server beside other tools allows only its tools, required",
        ),
        pytest.param(
            {"type": "mcp", "server_label": "docs", "name": "gone"},
            [MCP_TOOL, WEATHER],
            None,
            id="a tool the server does not offer leaves the choice to the model",
        ),
        pytest.param(
            {
                "type": "allowed_tools",
                "mode": "auto",
                "tools": [
                    {"type": "function", "name": "get_weather"},
                    {"type": "mcp", "server_label": "docs", "name": "search"},
                ],
            },
            [MCP_TOOL, WEATHER],
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [
                        {"type": "function", "function": {"name": "get_weather"}},
                        {"type": "function", "function": {"name": "docs__search"}},
                    ],
                },
            },
            id="allowed tools may name mcp tools",
        ),
    ],
)
def test_an_mcp_tool_choice_maps_onto_the_servers_functions(
    choice: dict[str, Any], tools: list[dict[str, Any]], expected: Any
) -> None:
    chat = translate({"tools": tools, "tool_choice": choice}, plan("search", "fetch"))
    assert chat.get("tool_choice") == expected


def mcp_call(**extra: Any) -> dict[str, Any]:
    return {
        "type": "mcp_call",
        "id": "mcp_1",
        "server_label": "docs",
        "name": "search",
        "arguments": '{"q":"café"}',
        **extra,
    }


def approval_request(request_id: str = "mcpr_1") -> dict[str, Any]:
    return {
        "type": "mcp_approval_request",
        "id": request_id,
        "server_label": "docs",
        "name": "search",
        "arguments": '{"q":"x"}',
    }


def approval(approve: bool, reason: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "mcp_approval_response",
        "approval_request_id": "mcpr_1",
        "approve": approve,
    }
    if reason is not None:
        item["reason"] = reason
    return item


LISTING = {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "docs", "tools": []}


@pytest.mark.parametrize(
    ("items", "mcp", "expected"),
    [
        pytest.param(
            [user("find it"), LISTING, mcp_call(output="found")],
            plan("search"),
            [
                user("find it"),
                assistant(None, tc("mcp_1", "docs__search", '{"q":"café"}')),
                tool("mcp_1", "found"),
            ],
            id="a replayed call with its output is a tool call and its result",
        ),
        pytest.param(
            [user("find it"), mcp_call(output="found")],
            None,
            [
                user("find it"),
                assistant(None, tc("mcp_1", "docs__search", '{"q":"café"}')),
                tool("mcp_1", "found"),
            ],
            id="without a plan the call keeps the name it would be offered under",
        ),
        pytest.param(
            [
                user("find it"),
                mcp_call(error={"type": "http_error", "code": 502, "message": "bad gateway"}),
            ],
            plan("search"),
            [
                user("find it"),
                assistant(None, tc("mcp_1", "docs__search", '{"q":"café"}')),
                tool("mcp_1", "Error: bad gateway"),
            ],
            id="a replayed call that failed tells the model its error",
        ),
        pytest.param(
            [
                user("find it"),
                mcp_call(
                    error={
                        "type": "mcp_tool_execution_error",
                        "content": [{"type": "text", "text": "no index"}],
                    }
                ),
            ],
            plan("search"),
            [
                user("find it"),
                assistant(None, tc("mcp_1", "docs__search", '{"q":"café"}')),
                tool("mcp_1", "Error: no index"),
            ],
            id="a tool's error result is read from its text blocks",
        ),
        pytest.param(
            [user("find it"), mcp_call()],
            plan("search"),
            [
                user("find it"),
                assistant(None, tc("mcp_1", "docs__search", '{"q":"café"}')),
                tool("mcp_1", NO_OUTPUT),
            ],
            id="a call that never returned is answered as having no output",
        ),
        pytest.param(
            [user("find it"), approval_request(), approval(False, "not now")],
            plan("search"),
            [
                user("find it"),
                assistant(None, tc("mcpr_1", "docs__search", '{"q":"x"}')),
                tool("mcpr_1", f"{MCP_DECLINED} Reason: not now"),
            ],
            id="a declined request tells the model the user said no and why",
        ),
        pytest.param(
            [user("find it"), approval_request(), approval(False)],
            plan("search"),
            [
                user("find it"),
                assistant(None, tc("mcpr_1", "docs__search", '{"q":"x"}')),
                tool("mcpr_1", MCP_DECLINED),
            ],
            id="a declined request without a reason",
        ),
        pytest.param(
            [user("find it"), approval_request(), approval(True)],
            plan("search"),
            [user("find it")],
            id="an approved request reaches the backend as the call the loop runs",
        ),
        pytest.param(
            [user("find it"), approval_request()],
            plan("search"),
            [user("find it")],
            id="an unanswered request is nothing yet",
        ),
    ],
)
def test_replayed_mcp_items_become_the_tool_conversation(
    items: list[dict[str, Any]], mcp: McpPlan | None, expected: list[dict[str, Any]]
) -> None:
    chat = translate({"input": items, "tools": [MCP_TOOL]}, mcp)
    assert chat["messages"] == expected
    assert_every_call_answered(chat["messages"])


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "mcp_call", "name": "s", "arguments": "{}"}, "input[0].server_label"),
        ({"type": "mcp_call", "server_label": "d", "arguments": "{}"}, "input[0].name"),
        ({"type": "mcp_call", "server_label": "d", "name": "s"}, "input[0].arguments"),
        ({**mcp_call(), "error": 5}, "input[0].error"),
        ({"type": "mcp_list_tools", "server_label": "d"}, "input[0].tools"),
        ({**approval_request(), "id": None}, "input[0].id"),
        ({"type": "mcp_approval_response", "approve": True}, "input[0].approval_request_id"),
        (
            {"type": "mcp_approval_response", "approval_request_id": "r", "approve": "yes"},
            "input[0].approve",
        ),
    ],
)
def test_an_mcp_item_without_its_required_fields_is_a_400_naming_the_field(
    item: dict[str, Any], param: str
) -> None:
    raw = orjson.dumps({"model": "m", "input": [item]})
    with pytest.raises(InvalidRequestError) as info:
        parse_request_body(raw, Settings())
    assert info.value.param == param


def test_an_mcp_tool_is_echoed_without_its_headers_or_token() -> None:
    request = {"model": "m", "tools": [MCP_TOOL, WEATHER]}
    converter = StreamConverter(request, response_id="resp_1")
    body = converter.start() + converter.close()
    assert b"secret" not in body
    assert converter.response["tools"][0] == {
        "type": "mcp",
        "server_label": "docs",
        "server_url": "https://mcp.example/docs",
        "require_approval": "never",
    }
    check_stream(body)  # every Response in it passes the schema, which forbids the keys


def test_the_checker_refuses_an_echoed_mcp_tool_with_its_headers() -> None:
    response = StreamConverter({"model": "m"}, response_id="resp_1").response
    response["tools"] = [MCP_TOOL]
    with pytest.raises(AssertionError, match="headers"):
        check_response_schema(response)


def test_the_converters_output_items_replay_as_the_next_rounds_tool_conversation() -> None:
    mcp = plan("search")
    converter = StreamConverter({"model": "m", "tools": [MCP_TOOL]}, response_id="resp_1", mcp=mcp)
    converter.start()
    converter.mcp_list_tools("docs", mcp.tools())
    converter.feed(calling_search())
    ((item_id, _, _),) = converter.pending_mcp_calls()
    converter.mcp_call_result(item_id, output="café found")
    items = [user("find café"), *converter.output_items()]
    chat = translate({"input": items, "tools": [MCP_TOOL]}, mcp)
    assert chat["messages"] == [
        user("find café"),
        assistant(None, tc(item_id, "docs__search", '{"q": "café"}')),
        tool(item_id, "café found"),
    ]
    converter.next_round()
    converter.feed(answering())
    assert converter.finished
