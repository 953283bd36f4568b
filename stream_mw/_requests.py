"""Responses request → Chat Completions request: parsing, validation and translation.

Two pure functions, no I/O:

- ``parse_request_body(raw, settings)``: the raw ``POST /responses`` body → a validated dict.
- ``translate_request(body, settings)``: a Responses request → the Chat Completions body for
  the wrapped app (``responses-protocol.md`` §8, row by row).

Both raise ``InvalidRequestError`` (400) whose ``param`` is the path of the offending field,
such as ``input[2].content[0].type``, and whose message says what was expected, so a client
can fix its request without reading our source. ``translate_request`` validates too: it is
public and may be given a body that never went through ``parse_request_body`` (or one a store
expanded).

Replayed history is repaired rather than rejected (``design.md``), because Codex and the
Agents SDK resend whatever they have and strict backends (vLLM, Mistral, OpenAI itself) answer
400 to a malformed tool conversation:

- Consecutive ``function_call`` / ``custom_tool_call`` items, and the assistant text just
  before them, become one assistant message with ``tool_calls``.
- Every tool call is answered before the next user or assistant turn: a call without an output
  gets a synthetic tool message saying no output was recorded.
- An output whose call is not in the conversation (the client trimmed or compacted its history)
  becomes a ``user`` message quoting it. A bare tool message would be rejected, and dropping it
  would hide from the model what the tool returned.
- System/developer messages and such quoted outputs that arrive while calls still await their
  outputs are held back until those outputs are written, because a ``tool_calls`` message must
  be followed directly by its tool messages.

Request keys: Responses-only keys (``store``, ``include``, ``truncation``, ...) are consumed or
dropped; keys that are not Responses parameters at all (``top_k``, ``min_p``,
``chat_template_kwargs``, ...) are forwarded unchanged, so backend extensions sent through an
SDK's ``extra_body`` keep working.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from ._errors import InvalidRequestError, RequestTooLargeError
from ._mcp._plan import function_name_for
from ._observe import logger
from ._sealed import PREFIX, SealError, compaction_tenant, open_reasoning, reasoning_key
from ._settings import Settings
from ._tools import CUSTOM_TOOL_PARAMETERS, ToolMap

if TYPE_CHECKING:
    from ._mcp._plan import McpPlan

__all__ = ["parse_request_body", "translate_request"]

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
_CHAT_TOOL_TYPES: Final = frozenset({"function", "custom", "namespace"})
_LOGPROBS_INCLUDE: Final = "message.output_text.logprobs"

#: Items that exist only with server-side state or hosted tools; Chat has no way to replay them.
#: What a ``compaction`` item made here becomes for the Chat backend: a user message with
#: this, then the summary.
COMPACTION_PREAMBLE: Final = "Summary of the conversation so far:\n\n"

_DROPPED_ITEMS: Final = frozenset(
    {
        # Only OpenAI's: ours are opened into their summary (see _add_compaction).
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

#: What the backend reads for an MCP call the user declined (then the reason, if given).
MCP_DECLINED: Final = "The user declined this call; it was not run."

#: Logged at INFO the first time a hosted tool type is dropped (hosted_tools="drop").
HOSTED_TOOL_DROPPED: Final = (
    "Dropped hosted tool type %r: a Chat Completions backend cannot run it "
    "(hosted_tools='drop'; logged once per tool type)"
)
# Hosted tool types already logged. Process-wide on purpose: clients such as Codex send the
# same hosted tools with every request, and one line per request would bury everything else.
_HOSTED_LOGGED: set[str] = set()

#: Responses parameters with no same-named Chat parameter: translated below or dropped.
_RESPONSES_ONLY: Final = frozenset(
    {
        "background",
        "client_metadata",
        "context_management",
        "conversation",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "moderation",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_options",
        "reasoning",
        "store",
        "stream",
        "stream_options",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "truncation",
    }
)
#: Parameters both APIs spell the same way.
_PASSTHROUGH: Final = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "user",
    "metadata",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
)
#: Chat keys this module derives itself; a client's own value would contradict ours.
_DERIVED_CHAT_KEYS: Final = frozenset(
    {
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "response_format",
        "verbosity",
        "max_tokens",
        "max_completion_tokens",
        "reasoning_effort",
        "logprobs",
        "stream_options",
    }
)

_NO_OUTPUT: Final = "No output was recorded for this call."
_PART_SEPARATOR: Final = "\n\n"
_EMPTY_PARAMETERS: Final[dict[str, Any]] = {"type": "object", "properties": {}}

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


# --- parsing ---------------------------------------------------------------------------------


def parse_request_body(raw: bytes, settings: Settings) -> dict[str, Any]:
    """Parse and validate a ``POST /responses`` body.

    Args:
        raw: The request body as received.
        settings: Supplies ``max_request_bytes``.

    Returns:
        The request as a dict. ``input`` may be absent only when ``previous_response_id`` or
        ``conversation`` names an earlier conversation.

    Raises:
        RequestTooLargeError: ``raw`` is longer than ``settings.max_request_bytes`` (413).
        InvalidRequestError: not JSON, not an object, or not a valid Responses request (400);
            ``param`` names the field, e.g. ``input[2].content[0].type``.
    """
    limit = settings.max_request_bytes
    if len(raw) > limit:
        raise RequestTooLargeError(
            f"Request body is {len(raw)} bytes, larger than the limit of {limit} bytes. "
            "Send a shorter conversation, or raise the max_request_bytes setting "
            "(STREAM_MW_MAX_REQUEST_BYTES).",
            code="request_too_large",
        )
    if not raw.strip():
        raise InvalidRequestError(
            "Request body is empty; expected a JSON object with 'model' and 'input'."
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(_json_error(raw, exc)) from None
    if not isinstance(body, dict):
        raise InvalidRequestError(
            f"Request body must be a JSON object, but got {_kind_of(body)} instead."
        )
    try:
        # orjson reads 1,024 levels of nesting but writes only 255. Every field is written
        # again (forwarded upstream, echoed in the Response, stored), so a body the encoder
        # cannot write is refused here instead of failing half-way through the response.
        orjson.dumps(body)
    except orjson.JSONEncodeError:
        raise InvalidRequestError(
            "Request body nests JSON objects or arrays more than 255 levels deep; "
            "flatten the deepest value (metadata, tool parameters or a schema).",
            code="invalid_value",
        ) from None
    _validate(body)
    return body


def _json_error(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    # orjson reports any invalid UTF-8 as "surrogates not allowed", which sends the client
    # looking for surrogates; say where the bytes stop being UTF-8 instead.
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return (
            "Request body is not valid UTF-8 JSON: the byte at offset "
            f"{bad.start} (0x{raw[bad.start]:02x}) is not valid UTF-8."
        )
    return f"Request body is not valid JSON: {exc}."


# --- translation -----------------------------------------------------------------------------


def translate_request(
    body: Mapping[str, Any], settings: Settings, *, tenant: str = "", mcp: McpPlan | None = None
) -> dict[str, Any]:
    """Translate a Responses request into a Chat Completions request body.

    Args:
        body: A Responses request (as from ``parse_request_body``), with any
            ``previous_response_id`` already expanded into ``input`` by the middleware.
        settings: Supplies ``developer_role``, ``reasoning_passback``, ``reasoning_key``,
            ``max_tokens_param`` and ``hosted_tools``.
        tenant: Who sends the request: a replayed reasoning item's ``encrypted_content``
            must have been made for this tenant (see ``StreamConverter``).
        mcp: The response's MCP tools, as their servers listed them: offered to the backend
            as functions beside the client's (the request's ``mcp`` tools are then not
            hosted tools); ``tool_choice`` ``{"type": "mcp", ...}`` names them. Without a
            plan an ``mcp`` tool is a hosted tool like any other.

    Returns:
        A new dict; ``body`` is not modified. With ``stream: true`` it always asks for usage
        (``stream_options.include_usage``).

    Raises:
        InvalidRequestError: the request is invalid, still refers to stored state
            (``previous_response_id``, ``conversation``), or uses something a Chat backend
            cannot receive (file_id-only images, file URLs, hosted tools when
            ``hosted_tools="reject"``), or replays a reasoning item whose
            ``encrypted_content`` stream_mw did not make for this tenant with this key.
    """
    return _translate(body, settings, validated=False, tenant=tenant, mcp=mcp)


def _translate(
    body: Mapping[str, Any],
    settings: Settings,
    *,
    validated: bool,
    tenant: str = "",
    mcp: McpPlan | None = None,
) -> dict[str, Any]:
    """``translate_request``; ``validated`` skips the validation ``parse_request_body`` already
    did, for the middleware's hot path. Only for a body that came from ``parse_request_body``
    unmodified: anything changed or added since (a store's expansion) must be validated."""
    if body.get("previous_response_id") is not None:
        raise InvalidRequestError(
            "'previous_response_id' refers to a stored response, which needs a response store "
            "to expand: configure one (the store_url setting) or send the whole conversation "
            "in 'input'.",
            param="previous_response_id",
        )
    if body.get("conversation") is not None:
        raise InvalidRequestError(
            "'conversation' refers to a stored conversation, which needs a store to expand: "
            "configure one (the store_url setting) or send the whole conversation in 'input'.",
            param="conversation",
        )
    if not validated:
        _validate(body)

    tool_map = ToolMap.from_tools(body.get("tools"))
    history = _History(settings, tool_map, tenant, mcp)
    instructions = body.get("instructions")
    if instructions:
        history.messages.append({"role": "system", "content": instructions})
    items = body["input"]
    if isinstance(items, str):
        history.messages.append({"role": "user", "content": items})
    else:
        history.answers = _approval_answers(items)
        for index, item in enumerate(items):
            history.add(item, f"input[{index}]")
    history.finish()

    chat: dict[str, Any] = {"model": body["model"], "messages": history.messages}
    tools = _translate_tools(body.get("tools") or (), tool_map, settings, mcp)
    if tools:
        # Chat backends reject tool_choice and parallel_tool_calls without tools.
        chat["tools"] = tools
        choice = _translate_tool_choice(body.get("tool_choice"), tool_map, mcp, len(tools))
        if choice is not None:
            chat["tool_choice"] = choice
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]

    text = body.get("text") or {}
    response_format = _translate_format(text.get("format"))
    if response_format is not None:
        chat["response_format"] = response_format
    if text.get("verbosity") is not None:
        chat["verbosity"] = text["verbosity"]
    if body.get("max_output_tokens") is not None:
        chat[settings.max_tokens_param] = body["max_output_tokens"]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        chat["reasoning_effort"] = effort
    for key in _PASSTHROUGH:
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("top_logprobs") is not None:
        chat["top_logprobs"] = body["top_logprobs"]
        chat["logprobs"] = True
    if _LOGPROBS_INCLUDE in (body.get("include") or ()):
        chat["logprobs"] = True

    ignored = []
    for key, value in body.items():
        if key in _RESPONSES_ONLY or key in _PASSTHROUGH or key in ("model", "n"):
            continue
        if key in _DERIVED_CHAT_KEYS:
            ignored.append(key)
        else:
            chat[key] = value
    if "n" in body:
        # Responses has a single output; several Chat choices could not be represented.
        chat["n"] = 1
    if ignored:
        logger.debug("Ignored Chat-only keys in a Responses request: %s", ", ".join(ignored))

    if body.get("stream"):
        stream_options: dict[str, Any] = {"include_usage": True}
        obfuscation = (body.get("stream_options") or {}).get("include_obfuscation")
        if obfuscation is not None:
            stream_options["include_obfuscation"] = obfuscation
        chat["stream"] = True
        chat["stream_options"] = stream_options
    return chat


class _History:
    """Builds Chat ``messages`` from Responses input items, repairing the tool conversation."""

    __slots__ = (
        "_dropped",
        "_held",
        "_mcp",
        "_open",
        "_reasoning",
        "_settings",
        "_tenant",
        "_tool_map",
        "answers",
        "messages",
    )

    def __init__(
        self, settings: Settings, tool_map: ToolMap, tenant: str, mcp: McpPlan | None = None
    ) -> None:
        self._settings = settings
        self._tool_map = tool_map
        self._tenant = tenant
        self._mcp = mcp
        #: The input's answers to MCP approval requests: ``approve`` and ``reason`` by
        #: request id.
        self.answers: dict[str, tuple[bool, str | None]] = {}
        self.messages: list[dict[str, Any]] = []
        # Call ids of the last assistant message that still await an output (a dict keeps order).
        self._open: dict[str, None] = {}
        # Messages that must wait until every open call is answered.
        self._held: list[dict[str, Any]] = []
        # Replayed reasoning waiting for the assistant message it belongs to.
        self._reasoning: list[str] = []
        self._dropped: Counter[str] = Counter()

    def add(self, item: Mapping[str, Any], path: str) -> None:
        kind = item.get("type") or "message"
        if kind == "message":
            self._add_message(item, path)
        elif kind == "function_call":
            name = self._tool_map.chat_name(item["name"], namespace=item.get("namespace"))
            self._add_call(item["call_id"], name, item["arguments"] or "{}")
        elif kind == "custom_tool_call":
            name = self._tool_map.chat_name(
                item["name"], namespace=item.get("namespace"), kind="custom"
            )
            arguments = orjson.dumps({"input": item["input"]}).decode()
            self._add_call(item["call_id"], name, arguments)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self._add_output(item, _tool_output_text(item["output"]))
        elif kind == "reasoning":
            self._add_reasoning(item, path)
        elif kind == "compaction":
            self._add_compaction(item, path)
        elif kind == "mcp_call":
            self._add_mcp_call(item, path)
        elif kind == "mcp_approval_request":
            answer = self.answers.get(item["id"])
            if answer is not None and not answer[0]:
                # The model asked and was refused: it must learn so, or it asks again.
                call_id = item["id"]
                self._add_call(call_id, self._mcp_function(item), item["arguments"] or "{}")
                reason = answer[1]
                text = f"{MCP_DECLINED} Reason: {reason}" if reason else MCP_DECLINED
                self._add_output({"call_id": call_id}, text)
            # Approved: the MCP tool loop runs the call and records it as an mcp_call item;
            # unanswered: nothing happened yet, so the backend sees nothing.
        elif kind in ("mcp_list_tools", "mcp_approval_response"):
            pass  # what the listing offered reaches the backend as its tools
        elif kind == "item_reference":
            # The middleware's store resolves references before translation; one still here
            # names an item nobody looked up, and dropping it would cut the conversation.
            raise InvalidRequestError(
                f"'{path}' is an item_reference, which only a response store can resolve; "
                "send the item itself.",
                param=path,
            )
        else:
            self._dropped[kind] += 1

    def finish(self) -> None:
        self._close_batch()
        if self._reasoning:
            self._dropped["reasoning (no assistant message after it)"] += len(self._reasoning)
            self._reasoning.clear()
        if self._dropped:
            logger.debug(
                "Dropped input items with no Chat Completions equivalent: %s",
                ", ".join(f"{kind} x{count}" for kind, count in self._dropped.items()),
            )

    def _add_message(self, item: Mapping[str, Any], path: str) -> None:
        role = item["role"]
        content = item["content"]
        if role == "assistant":
            self._close_batch()
            text, refusal = _assistant_content(content)
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if refusal is not None:
                message["refusal"] = refusal
            self._attach_reasoning(message)
            self.messages.append(message)
        elif role == "user":
            self._close_batch()
            if self._reasoning:
                self._dropped["reasoning (no assistant message after it)"] += len(self._reasoning)
                self._reasoning.clear()
            self.messages.append({"role": "user", "content": _user_content(content, path)})
        else:
            converted = _user_content(content, path)
            if not converted:
                self._dropped[f"empty {role} message"] += 1
                return
            chat_role = "system" if role == "system" else self._settings.developer_role
            self._emit({"role": chat_role, "content": converted})

    def _mcp_function(self, item: Mapping[str, Any]) -> str:
        """The Chat function name of an MCP tool named by a replayed item: the one it is
        offered under now, or the name it would have (a tool no longer offered)."""
        label, name = item["server_label"], item["name"]
        tool = self._mcp.find(label, name) if self._mcp is not None else None
        return tool.function_name if tool is not None else function_name_for(label, name)

    def _add_mcp_call(self, item: Mapping[str, Any], path: str) -> None:
        # (An item replayed without its id still needs one to pair the call with its result.)
        call_id = item.get("id") or "mcp_" + path.replace("[", "_").rstrip("]")
        self._add_call(call_id, self._mcp_function(item), item["arguments"] or "{}")
        output, error = item.get("output"), item.get("error")
        if error is not None:
            self._add_output({"call_id": call_id}, f"Error: {_mcp_error_text(error)}")
        elif output is not None:
            self._add_output({"call_id": call_id}, output)
        # Neither: the call never returned; the batch's end answers it as having no output.

    def _add_call(self, call_id: str, name: str, arguments: str) -> None:
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant":
            self._close_batch()
            last = {"role": "assistant", "content": None}
            self.messages.append(last)
        elif last["content"] == "":
            last["content"] = None
        self._attach_reasoning(last)
        calls: list[dict[str, Any]] = last.setdefault("tool_calls", [])
        if call_id in self._open or any(call["id"] == call_id for call in calls):
            self._dropped["function_call (repeated call_id)"] += 1
            return
        calls.append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        )
        self._open[call_id] = None

    def _add_output(self, item: Mapping[str, Any], text: str) -> None:
        call_id = item["call_id"]
        if call_id in self._open:
            del self._open[call_id]
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
            if not self._open:
                self._flush_held()
            return
        logger.debug("Tool output for call_id %s has no open call; sent as a user message", call_id)
        tool = item.get("name")
        label = (
            f"tool '{tool}' (call_id {call_id})" if isinstance(tool, str) else f"call_id {call_id}"
        )
        self._emit(
            {
                "role": "user",
                "content": f"[Output of {label}; the call itself is not in this conversation]\n{text}",
            }
        )

    def _add_reasoning(self, item: Mapping[str, Any], path: str) -> None:
        if not self._settings.reasoning_passback:
            # Nothing of the item reaches the model, so its token is not checked either: Codex
            # replays every reasoning item it ever got, and a session must not break with a 400
            # because the gateway restarted with a new per-process key.
            self._dropped["reasoning"] += 1
            return
        sealed = item.get("encrypted_content")
        restored = None if sealed is None else self._unseal(sealed, path)
        if restored:
            # The token holds exactly what the model wrote, whatever the visible parts say.
            self._reasoning.append(restored)
            return
        # Raw reasoning is what the model wrote; the summary is the fallback.
        for key in ("content", "summary"):
            parts = [part["text"] for part in item.get(key) or () if part["text"]]
            if parts:
                self._reasoning.append(_PART_SEPARATOR.join(parts))
                return

    def _add_compaction(self, item: Mapping[str, Any], path: str) -> None:
        sealed = item.get("encrypted_content")
        if not isinstance(sealed, str) or not sealed.startswith(PREFIX):
            # Another server's compaction (OpenAI's) holds nothing a Chat backend can read.
            self._dropped["compaction"] += 1
            return
        summary = self._unseal(sealed, path, tenant=compaction_tenant(self._tenant))
        self._close_batch()
        self.messages.append({"role": "user", "content": COMPACTION_PREAMBLE + summary})

    def _unseal(self, token: str, path: str, *, tenant: str | None = None) -> str:
        settings = self._settings
        try:
            return open_reasoning(
                token,
                key=reasoning_key(settings.reasoning_key),
                tenant=self._tenant if tenant is None else tenant,
                max_bytes=settings.max_request_bytes,
            )
        except SealError as exc:
            raise InvalidRequestError(
                f"The item's encrypted_content cannot be used: {exc}. Send back the reasoning "
                "and compaction items of this server and credential unchanged, or leave "
                "encrypted_content out.",
                param=f"{path}.encrypted_content",
                code="invalid_encrypted_content",
            ) from None

    def _attach_reasoning(self, message: dict[str, Any]) -> None:
        if not self._reasoning:
            return
        joined = _PART_SEPARATOR.join(self._reasoning)
        self._reasoning.clear()
        earlier = message.get("reasoning_content")
        message["reasoning_content"] = f"{earlier}{_PART_SEPARATOR}{joined}" if earlier else joined

    def _emit(self, message: dict[str, Any]) -> None:
        if self._open:
            self._held.append(message)
        else:
            self.messages.append(message)

    def _close_batch(self) -> None:
        for call_id in self._open:
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": _NO_OUTPUT})
        self._open.clear()
        self._flush_held()

    def _flush_held(self) -> None:
        if self._held:
            self.messages.extend(self._held)
            self._held.clear()


def _approval_answers(items: Sequence[Any]) -> dict[str, tuple[bool, str | None]]:
    """The ``mcp_approval_response`` items of an input: ``(approve, reason)`` by request id."""
    return {
        item["approval_request_id"]: (item["approve"], item.get("reason"))
        for item in items
        if isinstance(item, Mapping) and item.get("type") == "mcp_approval_response"
    }


def _mcp_error_text(error: str | Mapping[str, Any]) -> str:
    """An ``mcp_call``'s ``error`` as text for the model: a message, the text blocks of a
    tool's error result, or the object as JSON."""
    if isinstance(error, str):
        return error
    message = error.get("message")
    if isinstance(message, str) and message:
        return message
    content = error.get("content")
    if isinstance(content, list):
        texts = [
            block["text"]
            for block in content
            if isinstance(block, Mapping) and isinstance(block.get("text"), str)
        ]
        if texts:
            return _PART_SEPARATOR.join(texts)
    return orjson.dumps(error).decode()


def _user_content(content: str | Sequence[Mapping[str, Any]], path: str) -> Any:
    if isinstance(content, str):
        return content
    parts = [_content_part(part, f"{path}.content[{index}]") for index, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):
        # A plain string is the one content shape every Chat backend accepts.
        return _PART_SEPARATOR.join(part["text"] for part in parts)
    return parts


def _content_part(part: Mapping[str, Any], path: str) -> dict[str, Any]:
    kind = part["type"]
    if kind in _TEXT_PARTS:
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        url = part.get("image_url")
        if url is None:
            raise InvalidRequestError(
                "input_image with only a file_id is not supported: Chat Completions backends "
                "have no Files API. Send the image as image_url (an https: or data: URL).",
                param=f"{path}.file_id",
            )
        image: dict[str, Any] = {"url": url}
        detail = part.get("detail")
        if detail is not None:
            image["detail"] = "high" if detail == "original" else detail
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file: dict[str, Any]
        if part.get("file_data") is not None:
            file = {"file_data": part["file_data"]}
            if part.get("filename") is not None:
                file["filename"] = part["filename"]
        elif part.get("file_id") is not None:
            file = {"file_id": part["file_id"]}
        else:
            raise InvalidRequestError(
                "input_file with a file_url is not supported: Chat Completions accepts files "
                "only inline. Send the file as file_data (base64) with a filename.",
                param=f"{path}.file_url",
            )
        return {"type": "file", "file": file}
    audio = part["input_audio"]
    return {
        "type": "input_audio",
        "input_audio": {"data": audio["data"], "format": audio["format"]},
    }


def _assistant_content(content: str | Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    if isinstance(content, str):
        return content, None
    # Parts of one assistant message are fragments of one reply: join them without a gap.
    text = "".join(part["text"] for part in content if part["type"] in _TEXT_PARTS)
    refusal = "".join(part["refusal"] for part in content if part["type"] == "refusal")
    if not refusal:
        return text, None
    # Keep what the model said visible to backends that ignore the refusal field.
    return text or refusal, refusal


def _tool_output_text(output: str | Sequence[Mapping[str, Any]]) -> str:
    if isinstance(output, str):
        return output
    pieces = []
    for part in output:
        kind = part["type"]
        if kind in _TEXT_PARTS:
            pieces.append(part["text"])
        elif kind == "input_image":
            pieces.append("[image omitted: Chat Completions tool messages carry text only]")
        else:
            name = part.get("filename") or "file"
            pieces.append(f"[{name} omitted: Chat Completions tool messages carry text only]")
    if len(pieces) < len(output):
        logger.debug("Non-text parts of a tool output were replaced by a note")
    return _PART_SEPARATOR.join(pieces)


def _translate_tools(
    tools: Sequence[Mapping[str, Any]],
    tool_map: ToolMap,
    settings: Settings,
    mcp: McpPlan | None = None,
) -> list[dict[str, Any]]:
    chat_tools: list[dict[str, Any]] = []
    seen: set[str] = set()
    hosted: list[str] = []

    def add(tool: Mapping[str, Any], namespace: str | None) -> None:
        if tool["type"] == "custom":
            name = tool_map.chat_name(tool["name"], namespace=namespace, kind="custom")
            function = _custom_function(tool, name)
        else:
            name = tool_map.chat_name(tool["name"], namespace=namespace)
            function = _function(tool, name)
        if name in seen:
            logger.debug("Dropped a second declaration of tool %s", name)
            return
        seen.add(name)
        chat_tools.append({"type": "function", "function": function})

    for index, tool in enumerate(tools):
        kind = tool["type"]
        if kind == "namespace":
            for inner in tool["tools"]:
                add(inner, tool["name"])
        elif kind in _CHAT_TOOL_TYPES:
            add(tool, None)
        elif kind == "mcp" and mcp is not None:
            continue  # its server's tools follow, as the plan offers them
        elif settings.hosted_tools == "reject":
            raise InvalidRequestError(
                f"Tool type '{kind}' is a hosted tool, which a Chat Completions backend cannot "
                "run. Remove it from 'tools', or set hosted_tools='drop' to ignore such tools.",
                param=f"tools[{index}].type",
            )
        else:
            hosted.append(kind)
    for kind in hosted:
        if kind not in _HOSTED_LOGGED:
            _HOSTED_LOGGED.add(kind)
            logger.info(HOSTED_TOOL_DROPPED, kind)
    if mcp is not None:
        # Their names were made unique next to the client's (McpPlan's ``taken``).
        chat_tools.extend(tool.chat_function() for tool in mcp.tools())
    return chat_tools


def _function(tool: Mapping[str, Any], name: str) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    parameters = tool.get("parameters")
    function["parameters"] = parameters if parameters is not None else dict(_EMPTY_PARAMETERS)
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return function


def _custom_function(tool: Mapping[str, Any], name: str) -> dict[str, Any]:
    description = tool.get("description") or ""
    fmt = tool.get("format") or {}
    if fmt.get("type") == "grammar":
        syntax = fmt.get("syntax") or "grammar"
        rule = f"The `input` argument must match this {syntax} grammar:\n{fmt['definition']}"
        description = f"{description}\n\n{rule}" if description else rule
    function: dict[str, Any] = {"name": name}
    if description:
        function["description"] = description
    function["parameters"] = copy.deepcopy(CUSTOM_TOOL_PARAMETERS)
    return function


def _translate_tool_choice(
    choice: Any, tool_map: ToolMap, mcp: McpPlan | None = None, offered: int = 0
) -> Any:
    if choice is None or isinstance(choice, str):
        return choice
    kind = choice["type"]
    if kind in ("function", "custom"):
        return {"type": "function", "function": {"name": _choice_name(choice, tool_map)}}
    if kind == "mcp" and mcp is not None:
        names = _mcp_choice_names(choice, mcp)
        if not names:
            logger.debug("Dropped tool_choice for an MCP tool its server does not offer")
            return None
        if len(names) == 1:
            return {"type": "function", "function": {"name": names[0]}}
        if len(names) == offered:
            return "required"  # the server's tools are all the backend has
        # Several tools of one server among others: only they may be called.
        return {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "required",
                "tools": [{"type": "function", "function": {"name": n}} for n in names],
            },
        }
    if kind == "allowed_tools":
        allowed = [
            {"type": "function", "function": {"name": _choice_name(tool, tool_map)}}
            for tool in choice["tools"]
            if tool["type"] in ("function", "custom") and isinstance(tool.get("name"), str)
        ]
        if mcp is not None:
            allowed += [
                {"type": "function", "function": {"name": name}}
                for tool in choice["tools"]
                if tool["type"] == "mcp"
                for name in _mcp_choice_names(tool, mcp)
            ]
        if not allowed:
            # Only hosted tools were allowed, and none of them reached the backend.
            return "none"
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": choice["mode"], "tools": allowed},
        }
    logger.debug("Dropped tool_choice for hosted tool type %s", kind)
    return None


def _mcp_choice_names(choice: Mapping[str, Any], mcp: McpPlan) -> list[str]:
    """The Chat function names an ``mcp`` tool choice names: its one tool, or every tool
    its server offers when it names none."""
    label, name = choice.get("server_label"), choice.get("name")
    if isinstance(name, str):
        tool = mcp.find(label, name) if isinstance(label, str) else None
        return [tool.function_name] if tool is not None else []
    return [tool.function_name for tool in mcp.tools() if tool.server.label == label]


def _choice_name(choice: Mapping[str, Any], tool_map: ToolMap) -> str:
    namespace = choice.get("namespace")
    return tool_map.chat_name(
        choice["name"],
        namespace=namespace if isinstance(namespace, str) else None,
        kind="custom" if choice["type"] == "custom" else "function",
    )


def _translate_format(fmt: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if fmt is None or fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    schema: dict[str, Any] = {"name": fmt["name"], "schema": fmt["schema"]}
    for key in ("strict", "description"):
        if fmt.get(key) is not None:
            schema[key] = fmt[key]
    return {"type": "json_schema", "json_schema": schema}
