"""Validation of a Responses request: every field the translation reads, checked up front.

``_validate(body)`` checks a whole request and ``_check_item(item, path)`` one input item (the
conversations store checks items it is given with it). Each raises ``InvalidRequestError``
(400) whose ``param`` is the path of the offending field, such as
``input[2].content[0].type``, and whose message says what was expected, so a client can fix
its request without reading our source. Because everything is checked here, the translation
(``_request_history``, ``_request_tools``) indexes the body without checks of its own.

The vocabulary of input items and content parts lives here too, as the validator is what
decides which ones a request may hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from ._errors import InvalidRequestError

# --- vocabulary ------------------------------------------------------------------------------

_ROLES: Final = ("user", "assistant", "system", "developer")
_TEXT_PARTS: Final = frozenset({"input_text", "output_text"})
_USER_PARTS: Final = ("input_text", "input_image", "input_file", "input_audio", "output_text")
_ASSISTANT_PARTS: Final = ("output_text", "refusal", "input_text")
_TOOL_OUTPUT_PARTS: Final = ("input_text", "input_image", "input_file", "output_text")
_IMAGE_DETAILS: Final = ("auto", "low", "high", "original")
_TOOL_CHOICE_MODES: Final = ("auto", "none", "required")
_ALLOWED_TOOLS_MODES: Final = ("auto", "required")
_TEXT_FORMATS: Final = ("text", "json_schema", "json_object")
_CUSTOM_FORMATS: Final = ("text", "grammar")

#: Items that exist only with server-side state or hosted tools; Chat has no way to replay them.
_DROPPED_ITEMS: Final = frozenset(
    {
        # Only OpenAI's: ours are opened into their summary (see _request_history).
        "compaction",
        "compaction_trigger",
        "additional_tools",
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "code_interpreter_call",
        "image_generation_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "tool_search_call",
        "tool_search_output",
        "program",
        "program_output",
    }
)

# --- validation ------------------------------------------------------------------------------

_STRING: Final = "a string"
_NUMBER: Final = "a number"
_INTEGER: Final = "an integer"
_BOOLEAN: Final = "a boolean"
_ARRAY: Final = "an array"
_OBJECT: Final = "an object"

_TOP_LEVEL_KINDS: Final = {
    "instructions": _STRING,
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "max_output_tokens": _INTEGER,
    "max_tool_calls": _INTEGER,
    "top_logprobs": _INTEGER,
    "seed": _INTEGER,
    "stream": _BOOLEAN,
    "store": _BOOLEAN,
    "background": _BOOLEAN,
    "parallel_tool_calls": _BOOLEAN,
    "user": _STRING,
    "previous_response_id": _STRING,
    "prompt_cache_key": _STRING,
    "prompt_cache_retention": _STRING,
    "safety_identifier": _STRING,
    "service_tier": _STRING,
    "truncation": _STRING,
    "metadata": _OBJECT,
    "client_metadata": _OBJECT,
    "reasoning": _OBJECT,
    "text": _OBJECT,
    "stream_options": _OBJECT,
    "tools": _ARRAY,
    "include": _ARRAY,
}


def _is(kind: str, value: Any) -> bool:
    if kind == _STRING:
        return isinstance(value, str)
    if kind == _OBJECT:
        # The exact-type test first: parsed JSON objects are dicts, and the ABC check costs
        # several times more.
        return type(value) is dict or isinstance(value, Mapping)
    if kind == _ARRAY:
        return isinstance(value, (list, tuple))
    if kind == _BOOLEAN:
        return isinstance(value, bool)
    if kind == _INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return _BOOLEAN
    if isinstance(value, int):
        return _INTEGER
    if isinstance(value, float):
        return _NUMBER
    if isinstance(value, str):
        return _STRING
    if isinstance(value, Mapping):
        return _OBJECT
    if isinstance(value, (list, tuple)):
        return _ARRAY
    return type(value).__name__


def _show(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _choices(values: Sequence[str]) -> str:
    return "one of " + ", ".join(repr(v) for v in values)


def _missing(param: str, expected: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Missing required parameter: '{param}' (expected {expected}).",
        param=param,
        code="missing_required_parameter",
    )


def _wrong_type(param: str, expected: str, value: Any) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid type for '{param}': expected {expected}, but got {_kind_of(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _wrong_value(param: str, expected: str, value: Any) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid value for '{param}': expected {expected}, but got {_show(value)}.",
        param=param,
        code="invalid_value",
    )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _require(
    obj: Mapping[str, Any], key: str, path: str, kind: str, what: str | None = None
) -> Any:
    """``obj[key]``, which must be present, non-null and of ``kind`` (described as ``what``)."""
    value = obj.get(key)
    if value is None:
        raise _missing(_join(path, key), what or kind)
    if not _is(kind, value):
        raise _wrong_type(_join(path, key), what or kind, value)
    return value


def _optional(obj: Mapping[str, Any], key: str, path: str, kind: str) -> Any:
    value = obj.get(key)
    if value is not None and not _is(kind, value):
        raise _wrong_type(_join(path, key), kind, value)
    return value


def _one_of(obj: Mapping[str, Any], key: str, path: str, values: Sequence[str]) -> Any:
    value = _optional(obj, key, path, _STRING)
    if value is not None and value not in values:
        raise _wrong_value(_join(path, key), _choices(values), value)
    return value


def _object_at(value: Any, path: str, what: str) -> Mapping[str, Any]:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise _wrong_type(path, what, value)
    return value


def _validate(body: Mapping[str, Any]) -> None:
    model = _require(body, "model", "", _STRING)
    if not model:
        raise _wrong_value("model", "a non-empty model name", model)
    get = body.get
    for key, kind in _TOP_LEVEL_KINDS.items():
        # _optional inlined: this loop runs for every request, mostly over absent keys.
        value = get(key)
        if value is not None and not _is(kind, value):
            raise _wrong_type(key, kind, value)
    conversation = body.get("conversation")
    if conversation is not None and not isinstance(conversation, (str, Mapping)):
        raise _wrong_type("conversation", "a string or an object", conversation)

    items = body.get("input")
    if items is None:
        if body.get("previous_response_id") is None and conversation is None:
            raise _missing("input", "a string or an array of input items")
    elif isinstance(items, (list, tuple)):
        for index, item in enumerate(items):
            _check_item(item, f"input[{index}]")
    elif not isinstance(items, str):
        raise _wrong_type("input", "a string or an array of input items", items)

    for index, tool in enumerate(body.get("tools") or ()):
        _check_tool(tool, f"tools[{index}]")
    _check_tool_choice(body.get("tool_choice"))
    for index, entry in enumerate(body.get("include") or ()):
        if not isinstance(entry, str):
            raise _wrong_type(f"include[{index}]", _STRING, entry)
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str)
        or (isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop))
    ):
        raise _wrong_type("stop", "a string or an array of strings", stop)

    text = body.get("text") or {}
    fmt = _optional(text, "format", "text", _OBJECT)
    if fmt is not None:
        kind = _require(fmt, "type", "text.format", _STRING)
        if kind not in _TEXT_FORMATS:
            raise _wrong_value("text.format.type", _choices(_TEXT_FORMATS), kind)
        if kind == "json_schema":
            _require(fmt, "name", "text.format", _STRING)
            _require(fmt, "schema", "text.format", _OBJECT)
            _optional(fmt, "strict", "text.format", _BOOLEAN)
            _optional(fmt, "description", "text.format", _STRING)
    _optional(text, "verbosity", "text", _STRING)
    reasoning = body.get("reasoning") or {}
    _optional(reasoning, "effort", "reasoning", _STRING)
    _optional(reasoning, "summary", "reasoning", _STRING)
    _optional(body.get("stream_options") or {}, "include_obfuscation", "stream_options", _BOOLEAN)


def _check_item(item: Any, path: str) -> None:
    item = _object_at(item, path, "an input item object")
    kind = item.get("type")
    if kind is None:
        if "role" not in item:
            raise _missing(
                f"{path}.type", "an input item type such as 'message' or 'function_call'"
            )
        kind = "message"
    elif not isinstance(kind, str):
        raise _wrong_type(f"{path}.type", _STRING, kind)
    if kind == "message":
        _check_message(item, path)
    elif kind in ("function_call", "custom_tool_call"):
        _require(item, "call_id", path, _STRING)
        _require(item, "name", path, _STRING)
        _optional(item, "namespace", path, _STRING)
        if kind == "function_call":
            # An empty string passes here and is replayed as "{}".
            _require(item, "arguments", path, _STRING, "a JSON string")
        else:
            _require(item, "input", path, _STRING)
    elif kind in ("function_call_output", "custom_tool_call_output"):
        _require(item, "call_id", path, _STRING)
        output = item.get("output")
        if output is None:
            raise _missing(f"{path}.output", "a string or an array of content parts")
        if isinstance(output, (list, tuple)):
            for index, part in enumerate(output):
                _check_part(part, f"{path}.output[{index}]", _TOOL_OUTPUT_PARTS, "tool outputs")
        elif not isinstance(output, str):
            raise _wrong_type(f"{path}.output", "a string or an array of content parts", output)
    elif kind == "reasoning":
        for key in ("summary", "content"):
            for index, part in enumerate(_optional(item, key, path, _ARRAY) or ()):
                part_path = f"{path}.{key}[{index}]"
                _require(_object_at(part, part_path, "an object"), "text", part_path, _STRING)
        _optional(item, "encrypted_content", path, _STRING)
    elif kind == "item_reference":
        _require(item, "id", path, _STRING)
    elif kind == "compaction":
        _optional(item, "encrypted_content", path, _STRING)
    elif kind == "mcp_list_tools":
        _require(item, "server_label", path, _STRING)
        _require(item, "tools", path, _ARRAY)
    elif kind in ("mcp_call", "mcp_approval_request"):
        _require(item, "server_label", path, _STRING)
        _require(item, "name", path, _STRING)
        _require(item, "arguments", path, _STRING, "a JSON string")
        if kind == "mcp_approval_request":
            _require(item, "id", path, _STRING)
        else:
            _optional(item, "id", path, _STRING)
            _optional(item, "output", path, _STRING)
            error = item.get("error")
            if error is not None and not isinstance(error, (str, Mapping)):
                raise _wrong_type(f"{path}.error", "a string or an error object", error)
    elif kind == "mcp_approval_response":
        _require(item, "approval_request_id", path, _STRING)
        _require(item, "approve", path, _BOOLEAN)
        _optional(item, "reason", path, _STRING)
    elif kind not in _DROPPED_ITEMS:
        raise _wrong_value(
            f"{path}.type",
            "an input item type: 'message', 'function_call', 'function_call_output', "
            "'custom_tool_call', 'custom_tool_call_output', 'reasoning', 'item_reference', "
            "an MCP item or a hosted-tool item",
            kind,
        )


def _check_message(item: Mapping[str, Any], path: str) -> None:
    role = _require(item, "role", path, _STRING)
    if role not in _ROLES:
        raise _wrong_value(f"{path}.role", _choices(_ROLES), role)
    content = item.get("content")
    if content is None:
        raise _missing(f"{path}.content", "a string or an array of content parts")
    if isinstance(content, str):
        return
    if not isinstance(content, (list, tuple)):
        raise _wrong_type(f"{path}.content", "a string or an array of content parts", content)
    allowed, where = (
        (_ASSISTANT_PARTS, "assistant messages")
        if role == "assistant"
        else (_USER_PARTS, f"{role} messages")
    )
    for index, part in enumerate(content):
        _check_part(part, f"{path}.content[{index}]", allowed, where)


def _check_part(part: Any, path: str, allowed: Sequence[str], where: str) -> None:
    part = _object_at(part, path, "a content part object")
    kind = _require(part, "type", path, _STRING)
    if kind not in allowed:
        raise _wrong_value(f"{path}.type", f"{_choices(allowed)} in {where}", kind)
    if kind in _TEXT_PARTS:
        _require(part, "text", path, _STRING)
    elif kind == "refusal":
        _require(part, "refusal", path, _STRING)
    elif kind == "input_image":
        _one_of(part, "detail", path, _IMAGE_DETAILS)
        url = _optional(part, "image_url", path, _STRING)
        if url is None and _optional(part, "file_id", path, _STRING) is None:
            raise _missing(f"{path}.image_url", "an image URL or a data: URL")
    elif kind == "input_file":
        present = [_optional(part, key, path, _STRING) for key in ("file_data", "file_id")]
        present.append(_optional(part, "file_url", path, _STRING))
        _optional(part, "filename", path, _STRING)
        if all(value is None for value in present):
            raise _missing(f"{path}.file_data", "file_data (with filename) or file_id")
    elif kind == "input_audio":
        audio = _require(part, "input_audio", path, _OBJECT)
        _require(audio, "data", f"{path}.input_audio", _STRING)
        _require(audio, "format", f"{path}.input_audio", _STRING)


def _check_tool(tool: Any, path: str) -> None:
    tool = _object_at(tool, path, "a tool object")
    kind = _require(tool, "type", path, _STRING)
    if kind == "function":
        _check_function_tool(tool, path)
    elif kind == "custom":
        _check_custom_tool(tool, path)
    elif kind == "namespace":
        _require(tool, "name", path, _STRING)
        _optional(tool, "description", path, _STRING)
        for index, inner in enumerate(_require(tool, "tools", path, _ARRAY)):
            inner_path = f"{path}.tools[{index}]"
            inner = _object_at(inner, inner_path, "a tool object")
            inner_kind = _require(inner, "type", inner_path, _STRING)
            if inner_kind == "function":
                _check_function_tool(inner, inner_path)
            elif inner_kind == "custom":
                _check_custom_tool(inner, inner_path)
            else:
                raise _wrong_value(f"{inner_path}.type", "'function' or 'custom'", inner_kind)
    # Every other type is a hosted tool; translation drops or rejects it per Settings.


def _check_function_tool(tool: Mapping[str, Any], path: str) -> None:
    name = _require(tool, "name", path, _STRING)
    if not name:
        raise _wrong_value(f"{path}.name", "a non-empty function name", name)
    _optional(tool, "description", path, _STRING)
    _optional(tool, "parameters", path, _OBJECT)
    _optional(tool, "strict", path, _BOOLEAN)


def _check_custom_tool(tool: Mapping[str, Any], path: str) -> None:
    name = _require(tool, "name", path, _STRING)
    if not name:
        raise _wrong_value(f"{path}.name", "a non-empty tool name", name)
    _optional(tool, "description", path, _STRING)
    fmt = _optional(tool, "format", path, _OBJECT)
    if fmt is not None:
        kind = _one_of(fmt, "type", f"{path}.format", _CUSTOM_FORMATS)
        if kind == "grammar":
            _require(fmt, "definition", f"{path}.format", _STRING)
            _optional(fmt, "syntax", f"{path}.format", _STRING)


def _check_tool_choice(choice: Any) -> None:
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_MODES:
            raise _wrong_value(
                "tool_choice", _choices(_TOOL_CHOICE_MODES) + " or an object", choice
            )
        return
    if not isinstance(choice, Mapping):
        raise _wrong_type("tool_choice", "'auto', 'none', 'required' or an object", choice)
    kind = _require(choice, "type", "tool_choice", _STRING)
    if kind in ("function", "custom"):
        _require(choice, "name", "tool_choice", _STRING)
    elif kind == "mcp":
        _require(choice, "server_label", "tool_choice", _STRING)
        _optional(choice, "name", "tool_choice", _STRING)
    elif kind == "allowed_tools":
        mode = _require(choice, "mode", "tool_choice", _STRING)
        if mode not in _ALLOWED_TOOLS_MODES:
            raise _wrong_value("tool_choice.mode", _choices(_ALLOWED_TOOLS_MODES), mode)
        for index, tool in enumerate(_require(choice, "tools", "tool_choice", _ARRAY)):
            path = f"tool_choice.tools[{index}]"
            _require(_object_at(tool, path, "a tool object"), "type", path, _STRING)
