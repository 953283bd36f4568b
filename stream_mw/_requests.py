"""Responses request → Chat Completions request: the two entry points.

Two pure functions, no I/O:

- ``parse_request_body(raw, settings)``: the raw ``POST /responses`` body → a validated dict.
- ``translate_request(body, settings)``: a Responses request → the Chat Completions body for
  the wrapped app (``responses-protocol.md`` §8, row by row).

Both raise ``InvalidRequestError`` (400) whose ``param`` is the path of the offending field,
such as ``input[2].content[0].type``, and whose message says what was expected, so a client
can fix its request without reading our source. ``translate_request`` validates too: it is
public and may be given a body that never went through ``parse_request_body`` (or one a store
expanded).

This module maps the request's top-level keys and hands each part of the work to the module
whose one job it is:

- ``_request_validation``: every field checked up front, so the rest indexes without checks.
- ``_request_history``: input items → Chat ``messages``. Replayed history is repaired rather
  than rejected (``design.md``): tool calls are grouped and always answered, an output whose
  call is gone is quoted in a user message, and messages that would split a call from its
  outputs are held back.
- ``_request_content``: content parts of those messages and of tool outputs.
- ``_request_tools``: ``tools`` and ``tool_choice``, hosted and MCP tools included.

Request keys: Responses-only keys (``store``, ``include``, ``truncation``, ...) are consumed or
dropped; keys that are not Responses parameters at all (``top_k``, ``min_p``,
``chat_template_kwargs``, ...) are forwarded unchanged, so backend extensions sent through an
SDK's ``extra_body`` keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson

from ._errors import InvalidRequestError, RequestTooLargeError
from ._observe import logger

# Re-exported (``as``) for the modules and tests that import them from here.
from ._request_history import MCP_DECLINED as MCP_DECLINED
from ._request_history import _approval_answers, _History
from ._request_tools import _translate_tool_choice, _translate_tools
from ._request_validation import _check_item as _check_item
from ._request_validation import _kind_of, _validate
from ._settings import Settings
from ._tools import ToolMap

if TYPE_CHECKING:
    from ._mcp._plan import McpPlan

__all__ = ["parse_request_body", "translate_request"]

_LOGPROBS_INCLUDE: Final = "message.output_text.logprobs"

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
