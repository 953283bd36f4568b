"""Request translation: every row of responses-protocol.md §8, every validation error, and the
real Codex CLI 0.169 / Agents SDK request bodies captured in tests/fixtures/requests/."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_mw import (
    InvalidRequestError,
    RequestTooLargeError,
    Settings,
    _request_tools,
    translate_request,
)
from stream_mw._requests import parse_request_body
from stream_mw._tools import CUSTOM_TOOL_PARAMETERS

FIXTURES = Path(__file__).parent.parent / "fixtures" / "requests"
NO_OUTPUT = "No output was recorded for this call."
ABSENT = object()

# --- builders ------------------------------------------------------------------------------


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def system(content: Any, role: str = "system") -> dict[str, Any]:
    return {"role": role, "content": content}


def assistant(content: Any = None, *calls: dict[str, Any], **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = list(calls)
    message.update(extra)
    return message


def tool(call_id: str, content: str = "21 C") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def tc(call_id: str, name: str = "get_weather", arguments: str = '{"city":"Paris"}') -> Any:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def fc(call_id: str, name: str = "get_weather", arguments: str = '{"city":"Paris"}', **extra: Any):
    return {
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        **extra,
    }


def out(call_id: str, output: Any = "21 C", **extra: Any) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output, **extra}


def msg(role: str, content: Any) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": content}


def text(value: str, kind: str = "input_text") -> dict[str, Any]:
    return {"type": kind, "text": value}


def reasoning(summary: str = "", content: str = "") -> dict[str, Any]:
    item: dict[str, Any] = {"type": "reasoning", "id": "rs_1", "summary": [], "content": None}
    if summary:
        item["summary"] = [{"type": "summary_text", "text": summary}]
    if content:
        item["content"] = [{"type": "reasoning_text", "text": content}]
    return item


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
WEATHER_CHAT = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}
NAMESPACE = {
    "type": "namespace",
    "name": "mcp",
    "description": "MCP tools.",
    "tools": [
        {"type": "function", "name": "search", "parameters": {"type": "object"}},
        {"type": "function", "name": "fetch", "description": "Fetch a URL."},
    ],
}
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Apply a patch.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'},
}


def translate(body: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return translate_request({"model": "m", "input": "hi", **body}, Settings(**settings))


def assert_every_call_answered(messages: list[dict[str, Any]]) -> None:
    """What strict backends (vLLM, Mistral, OpenAI) require of a tool conversation."""
    pending: list[str] = []
    for message in messages:
        if message["role"] == "tool":
            assert message["tool_call_id"] in pending, f"tool message without a call: {message}"
            pending.remove(message["tool_call_id"])
            continue
        assert not pending, f"calls {pending} unanswered before a {message['role']} message"
        if message["role"] == "assistant":
            pending = [call["id"] for call in message.get("tool_calls", [])]
    assert not pending, f"calls {pending} never answered"


# --- §8: input items → messages -------------------------------------------------------------

MESSAGE_ROWS: list[tuple[str, dict[str, Any], dict[str, Any], list[dict[str, Any]]]] = [
    ("string_input_becomes_one_user_message", {"input": "hello"}, {}, [user("hello")]),
    (
        "message_items_without_type_are_messages",
        {"input": [{"role": "user", "content": "hello"}]},
        {},
        [user("hello")],
    ),
    (
        "instructions_become_a_leading_system_message",
        {"instructions": "Be brief.", "input": [msg("developer", "Rules."), user("hi")]},
        {},
        [system("Be brief."), system("Rules."), user("hi")],
    ),
    ("empty_instructions_add_no_system_message", {"instructions": ""}, {}, [user("hi")]),
    (
        "developer_messages_become_system_by_default",
        {"input": [msg("developer", "Rules."), user("hi")]},
        {},
        [system("Rules."), user("hi")],
    ),
    (
        "developer_role_setting_keeps_developer_and_instructions_stay_system",
        {"instructions": "Be brief.", "input": [msg("developer", "Rules."), user("hi")]},
        {"developer_role": "developer"},
        [system("Be brief."), system("Rules.", "developer"), user("hi")],
    ),
    (
        "system_messages_stay_system_under_developer_role",
        {"input": [msg("system", "S."), user("hi")]},
        {"developer_role": "developer"},
        [system("S."), user("hi")],
    ),
    (
        "several_system_messages_keep_their_order_unmerged",
        {"input": [msg("system", "A"), msg("developer", "B"), user("hi"), msg("developer", "C")]},
        {},
        [system("A"), system("B"), user("hi"), system("C")],
    ),
    (
        "empty_system_and_developer_messages_are_dropped",
        {"input": [msg("developer", []), msg("system", ""), user("hi")]},
        {},
        [user("hi")],
    ),
    (
        "input_text_parts_become_a_plain_string",
        {"input": [msg("user", [text("hello")])]},
        {},
        [user("hello")],
    ),
    (
        "several_text_parts_are_joined_by_a_blank_line",
        {"input": [msg("developer", [text("A"), text("B")]), msg("user", [text("C"), text("D")])]},
        {},
        [system("A\n\nB"), user("C\n\nD")],
    ),
    (
        "input_image_url_becomes_image_url_part_with_detail",
        {
            "input": [
                msg(
                    "user",
                    [
                        text("What is this?"),
                        {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
                    ],
                )
            ]
        },
        {},
        [
            user(
                [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://x/cat.png", "detail": "low"},
                    },
                ]
            )
        ],
    ),
    (
        "data_url_image_with_detail_original_becomes_high",
        {
            "input": [
                msg(
                    "user",
                    [
                        {
                            "type": "input_image",
                            "image_url": "data:image/png;base64,AAAA",
                            "detail": "original",
                        }
                    ],
                )
            ]
        },
        {},
        [
            user(
                [
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"},
                    }
                ]
            )
        ],
    ),
    (
        "image_without_detail_has_no_detail",
        {"input": [msg("user", [{"type": "input_image", "image_url": "https://x/a.png"}])]},
        {},
        [user([{"type": "image_url", "image_url": {"url": "https://x/a.png"}}])],
    ),
    (
        "input_file_data_becomes_a_chat_file_part",
        {
            "input": [
                msg(
                    "user",
                    [
                        {
                            "type": "input_file",
                            "file_data": "data:application/pdf;base64,JVBE",
                            "filename": "a.pdf",
                        }
                    ],
                )
            ]
        },
        {},
        [
            user(
                [
                    {
                        "type": "file",
                        "file": {
                            "file_data": "data:application/pdf;base64,JVBE",
                            "filename": "a.pdf",
                        },
                    }
                ]
            )
        ],
    ),
    (
        "input_file_id_becomes_a_chat_file_reference",
        {"input": [msg("user", [{"type": "input_file", "file_id": "file-1"}])]},
        {},
        [user([{"type": "file", "file": {"file_id": "file-1"}}])],
    ),
    (
        "input_audio_passes_through",
        {
            "input": [
                msg(
                    "user",
                    [{"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}],
                )
            ]
        },
        {},
        [user([{"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}])],
    ),
    (
        "assistant_output_text_parts_are_joined",
        {
            "input": [
                user("hi"),
                {
                    "type": "message",
                    "id": "msg_1",
                    "status": "completed",
                    "role": "assistant",
                    "content": [
                        {"type": "output_text", "text": "Hel", "annotations": []},
                        {"type": "output_text", "text": "lo", "annotations": []},
                    ],
                },
            ]
        },
        {},
        [user("hi"), assistant("Hello")],
    ),
    (
        "assistant_refusal_becomes_the_refusal_field",
        {"input": [user("hi"), msg("assistant", [{"type": "refusal", "refusal": "I can't."}])]},
        {},
        [user("hi"), assistant("I can't.", refusal="I can't.")],
    ),
    (
        "assistant_text_and_refusal_keep_both",
        {
            "input": [
                msg(
                    "assistant",
                    [text("Sorry.", "output_text"), {"type": "refusal", "refusal": "No."}],
                )
            ]
        },
        {},
        [assistant("Sorry.", refusal="No.")],
    ),
    (
        "function_call_and_output_become_tool_call_and_tool_message",
        {"input": [user("hi"), fc("c1", id="fc_1", status="completed"), out("c1")]},
        {},
        [user("hi"), assistant(None, tc("c1")), tool("c1")],
    ),
    (
        "consecutive_calls_and_the_text_before_them_form_one_assistant_message",
        {
            "input": [
                user("hi"),
                msg("assistant", [text("Checking.", "output_text")]),
                fc("c1"),
                fc("c2", arguments='{"city":"Rome"}'),
                out("c1"),
                out("c2", "25 C"),
            ]
        },
        {},
        [
            user("hi"),
            assistant("Checking.", tc("c1"), tc("c2", arguments='{"city":"Rome"}')),
            tool("c1"),
            tool("c2", "25 C"),
        ],
    ),
    (
        "empty_assistant_text_before_calls_becomes_null_content",
        {"input": [user("hi"), msg("assistant", []), fc("c1"), out("c1")]},
        {},
        [user("hi"), assistant(None, tc("c1")), tool("c1")],
    ),
    (
        "outputs_in_any_order_answer_their_calls",
        {"input": [fc("c1"), fc("c2"), out("c2", "B"), out("c1", "A")]},
        {},
        [assistant(None, tc("c1"), tc("c2")), tool("c2", "B"), tool("c1", "A")],
    ),
    (
        "sequential_tool_rounds_keep_separate_assistant_messages",
        {"input": [fc("c1"), out("c1"), fc("c2"), out("c2")]},
        {},
        [assistant(None, tc("c1")), tool("c1"), assistant(None, tc("c2")), tool("c2")],
    ),
    (
        "empty_arguments_are_replayed_as_an_empty_object",
        {"input": [fc("c1", arguments=""), out("c1")]},
        {},
        [assistant(None, tc("c1", arguments="{}")), tool("c1")],
    ),
    (
        "array_output_becomes_its_joined_text",
        {"input": [fc("c1"), out("c1", [text("line 1"), text("line 2")])]},
        {},
        [assistant(None, tc("c1")), tool("c1", "line 1\n\nline 2")],
    ),
    (
        "image_in_an_output_keeps_the_text_and_leaves_a_note",
        {
            "input": [
                fc("c1", name="view_image"),
                out(
                    "c1",
                    [
                        text("Here:"),
                        {"type": "input_image", "image_url": "data:image/png;base64,AA"},
                    ],
                ),
            ]
        },
        {},
        [
            assistant(None, tc("c1", name="view_image")),
            tool("c1", "Here:\n\n[image omitted: Chat Completions tool messages carry text only]"),
        ],
    ),
    (
        "call_without_output_is_answered_before_the_next_user_message",
        {"input": [fc("c1"), user("go on")]},
        {},
        [assistant(None, tc("c1")), tool("c1", NO_OUTPUT), user("go on")],
    ),
    (
        "call_without_output_at_the_end_is_answered",
        {"input": [user("hi"), fc("c1")]},
        {},
        [user("hi"), assistant(None, tc("c1")), tool("c1", NO_OUTPUT)],
    ),
    (
        "partly_answered_batch_is_completed_before_an_assistant_message",
        {"input": [fc("c1"), fc("c2"), out("c1"), msg("assistant", "Done.")]},
        {},
        [
            assistant(None, tc("c1"), tc("c2")),
            tool("c1"),
            tool("c2", NO_OUTPUT),
            assistant("Done."),
        ],
    ),
    (
        "call_after_a_partly_answered_batch_closes_that_batch_first",
        {"input": [fc("c1"), fc("c2"), out("c1"), fc("c3"), out("c3")]},
        {},
        [
            assistant(None, tc("c1"), tc("c2")),
            tool("c1"),
            tool("c2", NO_OUTPUT),
            assistant(None, tc("c3")),
            tool("c3"),
        ],
    ),
    (
        "output_without_its_call_becomes_a_user_message",
        {"input": [user("hi"), out("gone")]},
        {},
        [
            user("hi"),
            user("[Output of call_id gone; the call itself is not in this conversation]\n21 C"),
        ],
    ),
    (
        "output_without_its_call_names_the_tool_when_known",
        {"input": [out("gone", "x", name="get_weather")]},
        {},
        [
            user(
                "[Output of tool 'get_weather' (call_id gone); "
                "the call itself is not in this conversation]\nx"
            )
        ],
    ),
    (
        "output_without_its_call_inside_a_batch_waits_until_the_batch_is_answered",
        {"input": [fc("c1"), out("gone", "x"), out("c1")]},
        {},
        [
            assistant(None, tc("c1")),
            tool("c1"),
            user("[Output of call_id gone; the call itself is not in this conversation]\nx"),
        ],
    ),
    (
        "second_output_for_an_answered_call_becomes_a_user_message",
        {"input": [fc("c1"), out("c1"), out("c1", "again")]},
        {},
        [
            assistant(None, tc("c1")),
            tool("c1"),
            user("[Output of call_id c1; the call itself is not in this conversation]\nagain"),
        ],
    ),
    (
        "developer_message_inside_a_batch_moves_after_its_tool_messages",
        {"input": [fc("c1"), msg("developer", "Note."), out("c1"), user("ok")]},
        {},
        [assistant(None, tc("c1")), tool("c1"), system("Note."), user("ok")],
    ),
    (
        "repeated_call_id_in_one_batch_is_sent_once",
        {"input": [fc("c1"), fc("c1"), out("c1")]},
        {},
        [assistant(None, tc("c1")), tool("c1")],
    ),
    (
        "custom_tool_call_replays_as_a_function_call_with_json_input",
        {
            "tools": [APPLY_PATCH],
            "input": [
                {
                    "type": "custom_tool_call",
                    "call_id": "c1",
                    "name": "apply_patch",
                    "input": "*** Begin Patch",
                },
                {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done."},
            ],
        },
        {},
        [
            assistant(None, tc("c1", "apply_patch", '{"input":"*** Begin Patch"}')),
            tool("c1", "Done."),
        ],
    ),
    (
        "namespaced_function_call_replays_under_its_flattened_name",
        {"tools": [NAMESPACE], "input": [fc("c1", name="search", namespace="mcp"), out("c1")]},
        {},
        [assistant(None, tc("c1", "mcp__search")), tool("c1")],
    ),
    (
        "reasoning_items_are_dropped_by_default",
        {"input": [user("hi"), reasoning(summary="Thinking."), msg("assistant", "Hello")]},
        {},
        [user("hi"), assistant("Hello")],
    ),
    (
        "reasoning_passback_puts_the_summary_on_the_next_assistant_message",
        {"input": [user("hi"), reasoning(summary="Thinking."), msg("assistant", "Hello")]},
        {"reasoning_passback": True},
        [user("hi"), assistant("Hello", reasoning_content="Thinking.")],
    ),
    (
        "reasoning_passback_prefers_the_raw_reasoning_text",
        {"input": [reasoning(summary="Short.", content="Long raw."), msg("assistant", "Hello")]},
        {"reasoning_passback": True},
        [assistant("Hello", reasoning_content="Long raw.")],
    ),
    (
        "reasoning_passback_reaches_a_tool_call_message",
        {"input": [user("hi"), reasoning(summary="Need weather."), fc("c1"), out("c1")]},
        {"reasoning_passback": True},
        [user("hi"), assistant(None, tc("c1"), reasoning_content="Need weather."), tool("c1")],
    ),
    (
        "reasoning_passback_drops_reasoning_with_no_assistant_message_after_it",
        {"input": [user("hi"), reasoning(summary="Hm."), user("again")]},
        {"reasoning_passback": True},
        [user("hi"), user("again")],
    ),
    (
        "compaction_and_hosted_tool_items_are_dropped",
        {
            "input": [
                {"type": "compaction", "encrypted_content": "xyz"},
                {"type": "web_search_call", "id": "ws_1", "status": "completed"},
                {"type": "local_shell_call", "id": "ls_1", "call_id": "c9"},
                user("hi"),
            ]
        },
        {},
        [user("hi")],
    ),
]


@pytest.mark.parametrize(
    ("fragment", "settings", "expected"),
    [row[1:] for row in MESSAGE_ROWS],
    ids=[row[0] for row in MESSAGE_ROWS],
)
def test_input_items_become_chat_messages(
    fragment: dict[str, Any], settings: dict[str, Any], expected: list[dict[str, Any]]
) -> None:
    chat = translate(fragment, **settings)
    assert chat["messages"] == expected
    assert_every_call_answered(chat["messages"])


# --- §8: tools, parameters and keys ---------------------------------------------------------

HOSTED = [
    {"type": "web_search", "external_web_access": True},
    {"type": "web_search_preview"},
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {"type": "code_interpreter", "container": {"type": "auto"}},
    {"type": "mcp", "server_label": "deepwiki", "server_url": "https://x"},
    {"type": "local_shell"},
    {"type": "image_generation"},
    {"type": "computer_use_preview", "display_width": 1, "display_height": 1},
    {"type": "computer"},
    {"type": "shell"},
    {"type": "apply_patch"},
]

PARAM_ROWS: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("model_passes_through", {"model": "qwen3-32b"}, {}, {"model": "qwen3-32b"}),
    (
        "function_tools_become_nested_chat_tools",
        {"tools": [WEATHER]},
        {},
        {"tools": [WEATHER_CHAT]},
    ),
    (
        "function_tool_without_parameters_gets_an_empty_object_schema",
        {"tools": [{"type": "function", "name": "now"}]},
        {},
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
                }
            ]
        },
    ),
    (
        "namespace_tools_are_flattened",
        {"tools": [NAMESPACE]},
        {},
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "mcp__search", "parameters": {"type": "object"}},
                },
                {
                    "type": "function",
                    "function": {
                        "name": "mcp__fetch",
                        "description": "Fetch a URL.",
                        "parameters": {"type": "object", "properties": {}},
                    },
                },
            ]
        },
    ),
    (
        "custom_tool_becomes_a_function_whose_description_carries_the_grammar",
        {"tools": [APPLY_PATCH]},
        {},
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "apply_patch",
                        "description": "Apply a patch.\n\nThe `input` argument must match this lark "
                        'grammar:\nstart: "*** Begin Patch"',
                        "parameters": CUSTOM_TOOL_PARAMETERS,
                    },
                }
            ]
        },
    ),
    (
        "custom_tool_with_text_format_keeps_its_description",
        {
            "tools": [
                {
                    "type": "custom",
                    "name": "note",
                    "description": "Take a note.",
                    "format": {"type": "text"},
                }
            ]
        },
        {},
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "note",
                        "description": "Take a note.",
                        "parameters": CUSTOM_TOOL_PARAMETERS,
                    },
                }
            ]
        },
    ),
    (
        "hosted_tools_are_dropped_by_default",
        {"tools": [*HOSTED, WEATHER]},
        {},
        {"tools": [WEATHER_CHAT]},
    ),
    (
        "only_hosted_tools_send_no_tools_tool_choice_or_parallel_tool_calls",
        {"tools": [HOSTED[0]], "tool_choice": "auto", "parallel_tool_calls": True},
        {},
        {"tools": ABSENT, "tool_choice": ABSENT, "parallel_tool_calls": ABSENT},
    ),
    (
        "parallel_tool_calls_is_sent_with_tools",
        {"tools": [WEATHER], "parallel_tool_calls": False},
        {},
        {"parallel_tool_calls": False},
    ),
    (
        "parallel_tool_calls_is_not_sent_without_tools",
        {"parallel_tool_calls": True},
        {},
        {"parallel_tool_calls": ABSENT},
    ),
    (
        "tool_choice_auto_is_kept",
        {"tools": [WEATHER], "tool_choice": "auto"},
        {},
        {"tool_choice": "auto"},
    ),
    (
        "tool_choice_none_is_kept",
        {"tools": [WEATHER], "tool_choice": "none"},
        {},
        {"tool_choice": "none"},
    ),
    (
        "tool_choice_required_is_kept",
        {"tools": [WEATHER], "tool_choice": "required"},
        {},
        {"tool_choice": "required"},
    ),
    (
        "tool_choice_function_becomes_nested",
        {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}},
        {},
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    ),
    (
        "tool_choice_custom_becomes_a_function_choice",
        {"tools": [APPLY_PATCH], "tool_choice": {"type": "custom", "name": "apply_patch"}},
        {},
        {"tool_choice": {"type": "function", "function": {"name": "apply_patch"}}},
    ),
    (
        "tool_choice_in_a_namespace_uses_the_flattened_name",
        {
            "tools": [NAMESPACE],
            "tool_choice": {"type": "function", "name": "search", "namespace": "mcp"},
        },
        {},
        {"tool_choice": {"type": "function", "function": {"name": "mcp__search"}}},
    ),
    (
        "tool_choice_allowed_tools_becomes_the_chat_allowed_tools_shape",
        {
            "tools": [WEATHER, APPLY_PATCH, HOSTED[2]],
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [
                    {"type": "function", "name": "get_weather"},
                    {"type": "custom", "name": "apply_patch"},
                    {"type": "file_search"},
                ],
            },
        },
        {},
        {
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [
                        {"type": "function", "function": {"name": "get_weather"}},
                        {"type": "function", "function": {"name": "apply_patch"}},
                    ],
                },
            }
        },
    ),
    (
        "allowed_tools_naming_only_hosted_tools_becomes_none",
        {
            "tools": [WEATHER],
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "auto",
                "tools": [{"type": "web_search"}],
            },
        },
        {},
        {"tool_choice": "none"},
    ),
    (
        "tool_choice_for_a_hosted_tool_is_dropped",
        {"tools": [WEATHER, HOSTED[1]], "tool_choice": {"type": "web_search_preview"}},
        {},
        {"tools": [WEATHER_CHAT], "tool_choice": ABSENT},
    ),
    (
        "text_format_text_sends_no_response_format",
        {"text": {"format": {"type": "text"}}},
        {},
        {"response_format": ABSENT},
    ),
    (
        "text_format_json_schema_becomes_response_format",
        {
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "answer",
                    "schema": {"type": "object"},
                    "strict": True,
                    "description": "The answer.",
                }
            }
        },
        {},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "answer",
                    "schema": {"type": "object"},
                    "strict": True,
                    "description": "The answer.",
                },
            }
        },
    ),
    (
        "text_format_json_object_becomes_response_format",
        {"text": {"format": {"type": "json_object"}}},
        {},
        {"response_format": {"type": "json_object"}},
    ),
    ("text_verbosity_becomes_verbosity", {"text": {"verbosity": "low"}}, {}, {"verbosity": "low"}),
    (
        "max_output_tokens_becomes_max_tokens_by_default",
        {"max_output_tokens": 256},
        {},
        {"max_tokens": 256, "max_completion_tokens": ABSENT},
    ),
    (
        "max_output_tokens_becomes_max_completion_tokens_by_setting",
        {"max_output_tokens": 256},
        {"max_tokens_param": "max_completion_tokens"},
        {"max_completion_tokens": 256, "max_tokens": ABSENT},
    ),
    (
        "reasoning_effort_becomes_reasoning_effort",
        {"reasoning": {"effort": "high"}},
        {},
        {"reasoning_effort": "high"},
    ),
    (
        "reasoning_summary_alone_sends_nothing",
        {"reasoning": {"summary": "auto"}},
        {},
        {"reasoning_effort": ABSENT, "reasoning": ABSENT},
    ),
    (
        "top_logprobs_also_turns_on_logprobs",
        {"top_logprobs": 3},
        {},
        {"top_logprobs": 3, "logprobs": True},
    ),
    (
        "include_output_text_logprobs_turns_on_logprobs",
        {"include": ["message.output_text.logprobs"]},
        {},
        {"logprobs": True, "include": ABSENT},
    ),
    (
        "include_encrypted_reasoning_sends_nothing",
        {"include": ["reasoning.encrypted_content"]},
        {},
        {"logprobs": ABSENT, "include": ABSENT},
    ),
    ("n_is_forced_to_one", {"n": 3}, {}, {"n": 1}),
    (
        "stream_asks_for_usage",
        {"stream": True},
        {},
        {"stream": True, "stream_options": {"include_usage": True}},
    ),
    (
        "stream_passes_include_obfuscation",
        {"stream": True, "stream_options": {"include_obfuscation": False}},
        {},
        {"stream_options": {"include_usage": True, "include_obfuscation": False}},
    ),
    (
        "non_streaming_request_sends_no_stream_options",
        {"stream": False, "stream_options": {"include_obfuscation": False}},
        {},
        {"stream": ABSENT, "stream_options": ABSENT},
    ),
    (
        "unknown_extension_keys_are_forwarded",
        {"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}},
        {},
        {"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}},
    ),
    (
        "chat_keys_in_a_responses_body_do_not_override_the_translation",
        {"messages": [user("injected")], "max_tokens": 5, "logprobs": True},
        {},
        {"messages": [user("hi")], "max_tokens": ABSENT, "logprobs": ABSENT},
    ),
]

PASSTHROUGH = {
    "temperature": 0.2,
    "top_p": 0.9,
    "user": "u-1",
    "metadata": {"k": "v"},
    "seed": 7,
    "prompt_cache_key": "sess-1",
    "prompt_cache_retention": "24h",
    "safety_identifier": "hash-1",
    "service_tier": "flex",
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "stop": ["END"],
}
PARAM_ROWS += [
    (f"{key}_passes_through", {key: value}, {}, {key: value}) for key, value in PASSTHROUGH.items()
]

NOT_FORWARDED = {
    "store": False,
    "include": ["reasoning.encrypted_content"],
    "truncation": "auto",
    "background": False,
    "prompt": {"id": "pmpt_1"},
    "context_management": [{"type": "compaction"}],
    "max_tool_calls": 3,
    "client_metadata": {"x": "y"},
    "reasoning": {"summary": "auto"},
    "moderation": {"policy": "x"},
}
PARAM_ROWS += [
    (f"{key}_is_not_forwarded", {key: value}, {}, {key: ABSENT})
    for key, value in NOT_FORWARDED.items()
]


@pytest.mark.parametrize(
    ("fragment", "settings", "expected"),
    [row[1:] for row in PARAM_ROWS],
    ids=[row[0] for row in PARAM_ROWS],
)
def test_request_fields_become_chat_fields(
    fragment: dict[str, Any], settings: dict[str, Any], expected: dict[str, Any]
) -> None:
    chat = translate(fragment, **settings)
    for key, value in expected.items():
        if value is ABSENT:
            assert key not in chat, f"{key} should not be sent, got {chat.get(key)!r}"
        else:
            assert chat.get(key, ABSENT) == value, key


def test_translation_does_not_modify_the_request() -> None:
    body = {
        "model": "m",
        "input": [msg("assistant", []), fc("c1", arguments=""), msg("developer", "x")],
        "tools": [APPLY_PATCH, NAMESPACE, HOSTED[0]],
        "stream": True,
    }
    before = copy.deepcopy(body)
    chat = translate_request(body, Settings(reasoning_passback=True))
    assert body == before
    chat["tools"][0]["function"]["parameters"]["properties"].clear()
    assert (
        translate_request(body, Settings())["tools"][0]["function"]["parameters"]
        == CUSTOM_TOOL_PARAMETERS
    )


def test_a_dropped_hosted_tool_type_is_logged_at_info_once_per_process(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_request_tools, "_HOSTED_LOGGED", set())
    caplog.set_level(logging.INFO, logger="stream_mw")
    for _ in range(3):
        translate({"tools": [HOSTED[0], WEATHER, HOSTED[2]], "input": [user("hi")]})
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert info == [
        _request_tools.HOSTED_TOOL_DROPPED % "web_search",
        _request_tools.HOSTED_TOOL_DROPPED % "file_search",
    ]


def test_dropped_input_items_are_logged_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="stream_mw")
    translate({"input": [{"type": "web_search_call", "id": "ws"}, user("hi")]})
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("web_search_call x1" in line for line in debug)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


# --- errors raised by translation -----------------------------------------------------------

TRANSLATE_ERRORS: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    (
        "previous_response_id_needs_a_store",
        {"previous_response_id": "resp_1"},
        {},
        "previous_response_id",
        "store",
    ),
    (
        "conversation_needs_a_store",
        {"conversation": "conv_1"},
        {},
        "conversation",
        "stored conversation, which needs a store to expand",
    ),
    (
        "item_reference_needs_a_store_to_resolve_it",
        {"input": [user("hi"), {"type": "item_reference", "id": "msg_1"}]},
        {},
        "input[1]",
        "item_reference, which only a response store can resolve",
    ),
    (
        "file_id_only_image_is_unsupported",
        {"input": [msg("user", [{"type": "input_image", "file_id": "file-1", "detail": "auto"}])]},
        {},
        "input[0].content[0].file_id",
        "image_url",
    ),
    (
        "file_url_input_file_is_unsupported",
        {
            "input": [
                user("x"),
                msg("user", [{"type": "input_file", "file_url": "https://x/a.pdf"}]),
            ]
        },
        {},
        "input[1].content[0].file_url",
        "file_data",
    ),
    (
        "hosted_tool_is_rejected_by_setting",
        {"tools": [WEATHER, HOSTED[0]]},
        {"hosted_tools": "reject"},
        "tools[1].type",
        "hosted_tools='drop'",
    ),
]


@pytest.mark.parametrize(
    ("fragment", "settings", "param", "message"),
    [row[1:] for row in TRANSLATE_ERRORS],
    ids=[row[0] for row in TRANSLATE_ERRORS],
)
def test_untranslatable_requests_are_rejected_with_400(
    fragment: dict[str, Any], settings: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        translate(fragment, **settings)
    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert message in caught.value.message
    assert caught.value.body()["error"]["param"] == param


def test_previous_response_id_without_input_parses_but_does_not_translate() -> None:
    body = parse_request_body(b'{"model": "m", "previous_response_id": "resp_1"}', Settings())
    assert body == {"model": "m", "previous_response_id": "resp_1"}
    with pytest.raises(InvalidRequestError, match="store") as caught:
        translate_request(body, Settings())
    assert caught.value.param == "previous_response_id"


# --- validation -----------------------------------------------------------------------------


def test_body_over_max_request_bytes_is_413_naming_the_limit_and_setting() -> None:
    raw = orjson.dumps({"model": "m", "input": "x" * 100})
    parse_request_body(raw, Settings(max_request_bytes=len(raw)))
    with pytest.raises(RequestTooLargeError) as caught:
        parse_request_body(raw, Settings(max_request_bytes=len(raw) - 1))
    assert caught.value.status_code == 413
    assert str(len(raw) - 1) in caught.value.message
    assert "max_request_bytes" in caught.value.message


RAW_ERRORS = [
    ("empty_body", b"", "empty"),
    ("invalid_json", b'{"model": "m",', "not valid JSON"),
    (
        "invalid_utf8_says_where_not_surrogates",
        b'{"model": "\xff"}',
        "not valid UTF-8 JSON: the byte at offset 11 (0xff) is not valid UTF-8",
    ),
    (
        "encoded_surrogate_is_invalid_utf8",
        b'{"model": "m", "input": "\xed\xa0\x80"}',
        "not valid UTF-8 JSON: the byte at offset 25 (0xed)",
    ),
    ("json_array", b'[{"model": "m"}]', "must be a JSON object, but got an array"),
    ("json_string", b'"hello"', "must be a JSON object, but got a string"),
]


@pytest.mark.parametrize(
    ("raw", "message"), [r[1:] for r in RAW_ERRORS], ids=[r[0] for r in RAW_ERRORS]
)
def test_unparseable_bodies_are_400(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_request_body(raw, Settings())
    assert caught.value.status_code == 400
    assert message in caught.value.message
    assert "surrogates" not in caught.value.message


def base(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "input": "hi", **fields}


def items(*input_items: Any, **fields: Any) -> dict[str, Any]:
    return {"model": "m", "input": list(input_items), **fields}


VALIDATION_ERRORS: list[tuple[str, dict[str, Any], str, str]] = [
    ("model_missing", {"input": "hi"}, "model", "Missing required parameter"),
    ("model_not_a_string", base(model=4), "model", "expected a string, but got an integer"),
    ("model_empty", base(model=""), "model", "non-empty model name"),
    ("input_missing", {"model": "m"}, "input", "Missing required parameter"),
    ("input_not_string_or_array", base(input={"role": "user"}), "input", "a string or an array"),
    (
        "temperature_not_a_number",
        base(temperature="hot"),
        "temperature",
        "expected a number, but got a string",
    ),
    ("top_p_boolean", base(top_p=True), "top_p", "expected a number, but got a boolean"),
    (
        "max_output_tokens_fraction",
        base(max_output_tokens=1.5),
        "max_output_tokens",
        "expected an integer",
    ),
    ("stream_not_a_boolean", base(stream="yes"), "stream", "expected a boolean"),
    ("store_not_a_boolean", base(store=1), "store", "expected a boolean"),
    (
        "tools_not_a_list",
        base(tools={"type": "function"}),
        "tools",
        "expected an array, but got an object",
    ),
    ("include_not_a_list", base(include="x"), "include", "expected an array"),
    ("include_entry_not_a_string", base(include=[1]), "include[0]", "expected a string"),
    ("metadata_not_an_object", base(metadata=["a"]), "metadata", "expected an object"),
    ("instructions_not_a_string", base(instructions=["a"]), "instructions", "expected a string"),
    ("stop_not_strings", base(stop=[1]), "stop", "a string or an array of strings"),
    ("conversation_wrong_type", base(conversation=1), "conversation", "a string or an object"),
    ("text_not_an_object", base(text="json"), "text", "expected an object"),
    (
        "text_format_unknown_type",
        base(text={"format": {"type": "yaml"}}),
        "text.format.type",
        "'json_schema'",
    ),
    (
        "json_schema_without_schema",
        base(text={"format": {"type": "json_schema", "name": "a"}}),
        "text.format.schema",
        "Missing required parameter",
    ),
    (
        "json_schema_without_name",
        base(text={"format": {"type": "json_schema", "schema": {}}}),
        "text.format.name",
        "Missing required parameter",
    ),
    (
        "text_verbosity_not_a_string",
        base(text={"verbosity": 1}),
        "text.verbosity",
        "expected a string",
    ),
    (
        "reasoning_effort_not_a_string",
        base(reasoning={"effort": 3}),
        "reasoning.effort",
        "expected a string",
    ),
    (
        "include_obfuscation_not_a_boolean",
        base(stream_options={"include_obfuscation": "no"}),
        "stream_options.include_obfuscation",
        "expected a boolean",
    ),
    ("tool_choice_unknown_mode", base(tool_choice="sometimes"), "tool_choice", "'required'"),
    ("tool_choice_wrong_type", base(tool_choice=1), "tool_choice", "but got an integer"),
    (
        "tool_choice_function_without_name",
        base(tool_choice={"type": "function"}),
        "tool_choice.name",
        "Missing",
    ),
    (
        "allowed_tools_bad_mode",
        base(tool_choice={"type": "allowed_tools", "mode": "none", "tools": []}),
        "tool_choice.mode",
        "'auto', 'required'",
    ),
    (
        "allowed_tools_entry_without_type",
        base(tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [{"name": "a"}]}),
        "tool_choice.tools[0].type",
        "Missing",
    ),
    ("tool_not_an_object", base(tools=["get_weather"]), "tools[0]", "a tool object"),
    ("tool_without_type", base(tools=[{"name": "a"}]), "tools[0].type", "Missing"),
    ("function_tool_without_name", base(tools=[{"type": "function"}]), "tools[0].name", "Missing"),
    (
        "function_tool_parameters_not_an_object",
        base(tools=[{"type": "function", "name": "a", "parameters": "{}"}]),
        "tools[0].parameters",
        "expected an object, but got a string",
    ),
    (
        "function_tool_strict_not_a_boolean",
        base(tools=[{"type": "function", "name": "a", "strict": "yes"}]),
        "tools[0].strict",
        "expected a boolean",
    ),
    (
        "namespace_tools_not_a_list",
        base(tools=[{"type": "namespace", "name": "ns", "tools": {}}]),
        "tools[0].tools",
        "expected an array",
    ),
    (
        "namespace_with_a_hosted_tool_inside",
        base(tools=[{"type": "namespace", "name": "ns", "tools": [{"type": "web_search"}]}]),
        "tools[0].tools[0].type",
        "'function' or 'custom'",
    ),
    (
        "namespace_function_without_name",
        base(tools=[{"type": "namespace", "name": "ns", "tools": [{"type": "function"}]}]),
        "tools[0].tools[0].name",
        "Missing",
    ),
    (
        "custom_grammar_without_definition",
        base(
            tools=[{"type": "custom", "name": "a", "format": {"type": "grammar", "syntax": "lark"}}]
        ),
        "tools[0].format.definition",
        "Missing",
    ),
    (
        "custom_format_unknown_type",
        base(tools=[{"type": "custom", "name": "a", "format": {"type": "regex"}}]),
        "tools[0].format.type",
        "'grammar'",
    ),
    ("item_not_an_object", items("hi"), "input[0]", "an input item object, but got a string"),
    ("item_without_type_or_role", items({"content": "hi"}), "input[0].type", "Missing"),
    ("item_type_not_a_string", items({"type": 1}), "input[0].type", "expected a string"),
    (
        "unknown_item_type",
        items(user("a"), user("b"), {"type": "telepathy"}),
        "input[2].type",
        "'function_call'",
    ),
    (
        "message_unknown_role",
        items({"role": "robot", "content": "x"}),
        "input[0].role",
        "'developer'",
    ),
    (
        "message_without_content",
        items({"type": "message", "role": "user"}),
        "input[0].content",
        "Missing",
    ),
    (
        "message_content_wrong_type",
        items({"role": "user", "content": 5}),
        "input[0].content",
        "content parts",
    ),
    (
        "content_part_unknown_type",
        items(user("a"), user("b"), msg("user", [{"type": "input_video", "url": "x"}])),
        "input[2].content[0].type",
        "'input_text'",
    ),
    (
        "content_part_not_an_object",
        items(msg("user", ["hi"])),
        "input[0].content[0]",
        "a content part object",
    ),
    (
        "input_text_without_text",
        items(msg("user", [{"type": "input_text"}])),
        "input[0].content[0].text",
        "Missing",
    ),
    (
        "assistant_message_with_an_image",
        items(msg("assistant", [{"type": "input_image", "image_url": "https://x"}])),
        "input[0].content[0].type",
        "in assistant messages",
    ),
    (
        "refusal_in_a_user_message",
        items(msg("user", [{"type": "refusal", "refusal": "no"}])),
        "input[0].content[0].type",
        "in user messages",
    ),
    (
        "image_without_url_or_file_id",
        items(msg("user", [{"type": "input_image", "detail": "auto"}])),
        "input[0].content[0].image_url",
        "Missing",
    ),
    (
        "image_with_unknown_detail",
        items(msg("user", [{"type": "input_image", "image_url": "https://x", "detail": "max"}])),
        "input[0].content[0].detail",
        "'original'",
    ),
    (
        "file_without_any_source",
        items(msg("user", [{"type": "input_file", "filename": "a.pdf"}])),
        "input[0].content[0].file_data",
        "file_id",
    ),
    (
        "audio_without_data",
        items(msg("user", [{"type": "input_audio", "input_audio": {"format": "wav"}}])),
        "input[0].content[0].input_audio.data",
        "Missing",
    ),
    (
        "function_call_without_call_id",
        items({"type": "function_call", "name": "a", "arguments": "{}"}),
        "input[0].call_id",
        "Missing",
    ),
    (
        "function_call_without_arguments",
        items({"type": "function_call", "call_id": "c", "name": "a"}),
        "input[0].arguments",
        "JSON string",
    ),
    (
        "function_call_arguments_as_an_object",
        items({"type": "function_call", "call_id": "c", "name": "a", "arguments": {}}),
        "input[0].arguments",
        "expected a JSON string, but got an object",
    ),
    (
        "function_call_namespace_not_a_string",
        items(fc("c1", namespace=1)),
        "input[0].namespace",
        "expected a string",
    ),
    (
        "function_call_output_without_output",
        items({"type": "function_call_output", "call_id": "c"}),
        "input[0].output",
        "Missing",
    ),
    ("function_call_output_wrong_type", items(out("c", 5)), "input[0].output", "content parts"),
    (
        "function_call_output_part_unknown_type",
        items(out("c", [{"type": "refusal", "refusal": "x"}])),
        "input[0].output[0].type",
        "in tool outputs",
    ),
    (
        "custom_tool_call_without_input",
        items({"type": "custom_tool_call", "call_id": "c", "name": "a"}),
        "input[0].input",
        "Missing",
    ),
    (
        "reasoning_summary_not_a_list",
        items({"type": "reasoning", "summary": "x"}),
        "input[0].summary",
        "expected an array",
    ),
    (
        "reasoning_summary_part_without_text",
        items({"type": "reasoning", "summary": [{"type": "summary_text"}]}),
        "input[0].summary[0].text",
        "Missing",
    ),
    ("item_reference_without_id", items({"type": "item_reference"}), "input[0].id", "Missing"),
]


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [row[1:] for row in VALIDATION_ERRORS],
    ids=[row[0] for row in VALIDATION_ERRORS],
)
def test_invalid_requests_are_400_naming_the_field(
    body: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(InvalidRequestError) as parsed:
        parse_request_body(orjson.dumps(body), Settings())
    assert parsed.value.status_code == 400
    assert parsed.value.param == param
    assert message in parsed.value.message, parsed.value.message
    assert f"'{param}'" in parsed.value.message
    assert parsed.value.body()["error"]["type"] == "invalid_request_error"
    # translate_request is public too, so it validates the same way.
    with pytest.raises(InvalidRequestError) as translated:
        translate_request(body, Settings())
    assert translated.value.param == param


# --- the real clients -----------------------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    return parse_request_body((FIXTURES / name).read_bytes(), Settings())


FORBIDDEN = {
    "input",
    "instructions",
    "include",
    "store",
    "reasoning",
    "text",
    "client_metadata",
    "truncation",
    "previous_response_id",
    "max_output_tokens",
}


@pytest.mark.parametrize(
    "name", ["codex_turn1.json", "codex_turn2.json", "agents_turn1.json", "agents_turn2.json"]
)
def test_captured_client_requests_translate_to_valid_chat_requests(name: str) -> None:
    chat = translate_request(load(name), Settings())
    assert chat["stream"] is True
    assert chat["stream_options"] == {"include_usage": True}
    assert not FORBIDDEN & chat.keys()
    assert chat["messages"][0]["role"] == "system"
    assert {m["role"] for m in chat["messages"]} <= {"system", "user", "assistant", "tool"}
    assert_every_call_answered(chat["messages"])
    names = [t["function"]["name"] for t in chat["tools"]]
    assert len(names) == len(set(names))
    assert all(t["type"] == "function" for t in chat["tools"])
    orjson.dumps(chat)


def test_codex_request_flattens_namespace_drops_web_search_and_maps_developer() -> None:
    body = load("codex_turn1.json")
    assert [m["role"] for m in body["input"][:2]] == ["developer", "developer"]
    chat = translate_request(body, Settings())
    assert [m["role"] for m in chat["messages"]] == ["system", "system", "user", "user"]
    developer_parts = body["input"][1]["content"]
    assert chat["messages"][1]["content"] == "\n\n".join(p["text"] for p in developer_parts)
    names = [t["function"]["name"] for t in chat["tools"]]
    namespace = next(t for t in body["tools"] if t["type"] == "namespace")
    assert [f"{namespace['name']}__{t['name']}" for t in namespace["tools"]] == [
        n for n in names if n.startswith(namespace["name"] + "__")
    ]
    assert "exec_command" in names
    assert any(t["type"] == "web_search" for t in body["tools"])
    assert len(names) == sum(
        len(t.get("tools", [t])) for t in body["tools"] if t["type"] != "web_search"
    )
    assert chat["tool_choice"] == "auto"
    assert chat["parallel_tool_calls"] is True
    assert chat["prompt_cache_key"] == body["prompt_cache_key"]
    kept = translate_request(body, Settings(developer_role="developer"))
    assert [m["role"] for m in kept["messages"][:2]] == ["developer", "developer"]


def test_codex_second_turn_replays_the_call_and_its_output() -> None:
    body = load("codex_turn2.json")
    call = next(i for i in body["input"] if i["type"] == "function_call")
    output = next(i for i in body["input"] if i["type"] == "function_call_output")
    chat = translate_request(body, Settings())
    assert chat["messages"][-2:] == [
        assistant(None, tc(call["call_id"], "exec_command", '{"cmd":"echo hi"}')),
        tool(call["call_id"], output["output"]),
    ]


def test_agents_sdk_second_turn_keeps_instructions_first_and_replays_the_call() -> None:
    body = load("agents_turn2.json")
    chat = translate_request(body, Settings())
    assert chat["messages"] == [
        system(body["instructions"]),
        user("What is the weather in Paris?"),
        assistant(None, tc("call_0001")),
        tool("call_0001", "Sunny in Paris, 21 C"),
    ]
    assert chat["tools"][0]["function"]["strict"] is True
    assert chat["tools"][0]["function"]["parameters"] == body["tools"][0]["parameters"]
