"""Output items, ids, usage and statuses: everything the stream and non-stream paths share.

The streaming translator (``_stream.py``) and ``translate_completion`` (a whole
``chat.completion`` body) build their items, response objects and usage with the functions
here, so a streamed response's terminal ``output`` and a non-streamed response are the same
shape, item for item. The upstream-reading helpers (where reasoning hides in a delta or a
message, how a finish reason maps onto a response status) live here for the same reason.

Ids: the response id is random (``resp_`` + 48 hex digits); every item id is derived from it
and the item's ``output_index`` (``msg_<hex>_0``, ``fc_<hex>_1``, ``rs_``, ``ctc_``), so a
converter given a ``response_id`` is fully deterministic, ids stay unique across responses
and under 64 characters, and each keeps the prefix the real API uses for its type.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import orjson

from ._errors import (
    GATEWAY_FAILURE_CODES,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamReportedError,
    classify_upstream_error,
)
from ._sealed import reasoning_key, seal_reasoning
from ._settings import Settings
from ._tools import ToolMap

__all__ = [
    "ENCRYPTED_REASONING",
    "Outcome",
    "ThinkSplitter",
    "base_response",
    "content_pieces",
    "custom_input_of",
    "custom_tool_call_item",
    "error_object",
    "finish_outcome",
    "function_call_item",
    "in_band_error",
    "item_id",
    "map_logprobs",
    "map_usage",
    "mcp_approval_request_item",
    "mcp_call_item",
    "mcp_error",
    "mcp_list_tools_item",
    "message_item",
    "new_id",
    "normalise_annotation",
    "output_text_part",
    "preview",
    "random_part",
    "reasoning_item",
    "reasoning_of",
    "reasoning_sealer",
    "refusal_part",
    "sum_usage",
    "translate_completion",
]

#: How a response ends: ``completed``, ``incomplete`` or ``failed``.
Outcome = Literal["completed", "incomplete", "failed"]

_DEFAULT_SETTINGS = Settings()
_HEX_LEN = 48
_ID_SAFE = re.compile(r"[^0-9A-Za-z]")


def new_id(prefix: str) -> str:
    """A fresh random id such as ``resp_<48 hex digits>``."""
    return f"{prefix}_{secrets.token_hex(_HEX_LEN // 2)}"


def random_part(response_id: str) -> str:
    """The random part of a response id, safe to embed in item ids (hashed if unusual)."""
    _, sep, rest = response_id.partition("_")
    part = rest if sep else response_id
    if part and len(part) <= _HEX_LEN and not _ID_SAFE.search(part):
        return part
    return hashlib.sha256(response_id.encode()).hexdigest()[:_HEX_LEN]


def item_id(response_id: str, prefix: str, output_index: int) -> str:
    """The id of the item at ``output_index`` of response ``response_id``: deterministic,
    unique per response, at most 64 characters."""
    return f"{prefix}_{random_part(response_id)}_{output_index}"


# --- the Response object --------------------------------------------------------------------

_NUMBER_DEFAULTS: dict[str, float] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}
_NULLABLE_ECHOES = (
    "previous_response_id",
    "instructions",
    "user",
    "max_output_tokens",
    "max_tool_calls",
    "safety_identifier",
    "prompt_cache_key",
)


def base_response(
    request: Mapping[str, Any] | None,
    response_id: str,
    created_at: int,
    model: str | None,
) -> dict[str, Any]:
    """The Response object in status ``in_progress`` with every field Open Responses requires
    (its 32 required keys), echoed from ``request`` or defaulted as OpenAI does.

    ``model`` is the request's model when it has one, else the given (upstream) model.
    """
    req: Mapping[str, Any] = request if request is not None else {}
    requested_model = req.get("model")
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": None,
        "status": "in_progress",
        "incomplete_details": None,
        "model": requested_model if isinstance(requested_model, str) else (model or ""),
        "previous_response_id": None,
        "instructions": None,
        "output": [],
        "error": None,
        "tools": [],
        "tool_choice": "auto",
        "truncation": "disabled",
        "parallel_tool_calls": True,
        "text": {"format": {"type": "text"}},
        "top_p": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_logprobs": 0,
        "temperature": 1.0,
        "reasoning": {"effort": None, "summary": None},
        "user": None,
        "usage": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "store": True,
        "background": False,
        "service_tier": "auto",
        "metadata": {},
        "safety_identifier": None,
        "prompt_cache_key": None,
    }
    for name in _NULLABLE_ECHOES:
        if name in req:
            response[name] = req[name]
    for name, default in _NUMBER_DEFAULTS.items():
        value = req.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            response[name] = value
        else:
            response[name] = default
    top_logprobs = req.get("top_logprobs")
    if isinstance(top_logprobs, int) and not isinstance(top_logprobs, bool):
        response["top_logprobs"] = top_logprobs
    tools = req.get("tools")
    if isinstance(tools, list):
        response["tools"] = [_echo_tool(tool) for tool in tools]
    choice = req.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") == "allowed_tools":
        response["tool_choice"] = {"mode": "auto", **choice}
    elif choice is not None:
        response["tool_choice"] = choice
    if isinstance(req.get("truncation"), str):
        response["truncation"] = req["truncation"]
    for name in ("parallel_tool_calls", "store", "background"):
        value = req.get(name)
        if isinstance(value, bool):
            response[name] = value
    if isinstance(req.get("service_tier"), str):
        response["service_tier"] = req["service_tier"]
    if isinstance(req.get("metadata"), Mapping):
        response["metadata"] = dict(req["metadata"])
    conversation = req.get("conversation")
    if isinstance(conversation, Mapping):
        conversation = conversation.get("id")
    if isinstance(conversation, str):
        # As OpenAI: the id only, whichever form the request named it in.
        response["conversation"] = {"id": conversation}
    text = req.get("text")
    if isinstance(text, Mapping):
        response["text"] = _echo_text(text)
    reasoning = req.get("reasoning")
    if isinstance(reasoning, Mapping):
        response["reasoning"] = {"effort": None, "summary": None, **reasoning}
    return response


# The keys Open Responses requires on an echoed object that a request may leave out, with the
# value that means "not set" (or the API's default). Each request value is kept as sent.
_FUNCTION_TOOL_KEYS: dict[str, Any] = {"description": None, "parameters": None, "strict": None}
# OpenAI's defaults for file_search; the tool is dropped (Chat backends cannot run it), but the
# echo still has to be a complete file_search tool.
_FILE_SEARCH_KEYS: dict[str, Any] = {"vector_store_ids": [], "max_num_results": 20, "filters": None}
_RANKING_OPTIONS: dict[str, Any] = {"ranker": "auto", "score_threshold": 0.0}
# json_schema's ``strict`` is a boolean there (no null); OpenAI's default is false.
_JSON_SCHEMA_KEYS: dict[str, Any] = {"description": None, "strict": False}


def _echo_tool(tool: object) -> object:
    """A request tool as the Response echoes it: complete for the tool types Open Responses
    defines; other OpenAI tool types (``namespace``, ``custom``, ``mcp``...) are not in its
    schema, so they are echoed as OpenAI defines them (as sent), but for an ``mcp`` tool's
    ``headers`` and ``authorization``."""
    if not isinstance(tool, Mapping):
        return tool
    kind = tool.get("type")
    if kind == "function":
        return _filled(tool, _FUNCTION_TOOL_KEYS)
    if kind == "file_search":
        echoed = _filled(tool, _FILE_SEARCH_KEYS)
        ranking = tool.get("ranking_options")
        echoed["ranking_options"] = _filled(
            ranking if isinstance(ranking, Mapping) else {}, _RANKING_OPTIONS
        )
        return echoed
    if kind == "mcp":
        # The MCP server's credentials go to that server alone: never echoed or stored.
        return {k: v for k, v in tool.items() if k not in _MCP_SECRETS}
    return dict(tool)


_MCP_SECRETS = frozenset({"headers", "authorization"})


def _echo_text(text: Mapping[str, Any]) -> dict[str, Any]:
    echoed = dict(text)
    fmt = text.get("format")
    if not isinstance(fmt, Mapping):
        echoed["format"] = {"type": "text"}
    elif fmt.get("type") == "json_schema":
        echoed["format"] = _filled(fmt, _JSON_SCHEMA_KEYS)
    if echoed.get("verbosity") is None:
        # Open Responses allows the key absent, or one of its values, but not null.
        echoed.pop("verbosity", None)
    return echoed


def _filled(obj: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` with every key of ``defaults`` that it lacks or leaves null set to the default."""
    out = dict(obj)
    for key, default in defaults.items():
        if out.get(key) is None:
            out[key] = default
    return out


# --- usage ------------------------------------------------------------------------------------


def _count(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    return 0


def map_usage(chat_usage: object) -> dict[str, Any] | None:
    """Chat Completions ``usage`` → Responses ``usage``, or ``None`` when nothing was reported.

    Counts are passed through as reported; missing details are 0 and ``total_tokens`` is the
    reported total or prompt + completion, so the object is never partial (Codex rejects a
    usage block without ``total_tokens``). DeepSeek's ``prompt_cache_hit_tokens`` and
    Anthropic's ``cache_creation_input_tokens`` (via LiteLLM) fill the cache fields.
    """
    if not isinstance(chat_usage, Mapping):
        return None
    if not any(key in chat_usage for key in ("prompt_tokens", "completion_tokens", "total_tokens")):
        return None
    input_tokens = _count(chat_usage.get("prompt_tokens"))
    output_tokens = _count(chat_usage.get("completion_tokens"))
    total = chat_usage.get("total_tokens")
    prompt_details = chat_usage.get("prompt_tokens_details")
    if not isinstance(prompt_details, Mapping):
        prompt_details = {}
    completion_details = chat_usage.get("completion_tokens_details")
    if not isinstance(completion_details, Mapping):
        completion_details = {}
    cached = prompt_details.get("cached_tokens")
    if cached is None:
        cached = chat_usage.get("prompt_cache_hit_tokens")
    cache_write = prompt_details.get("cache_write_tokens")
    if cache_write is None:
        cache_write = prompt_details.get("cache_creation_tokens")
    if cache_write is None:
        cache_write = chat_usage.get("cache_creation_input_tokens")
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": _count(cached),
            "cache_write_tokens": _count(cache_write),
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": _count(completion_details.get("reasoning_tokens")),
        },
        "total_tokens": (
            _count(total) if isinstance(total, (int, float)) else input_tokens + output_tokens
        ),
    }


# --- items ------------------------------------------------------------------------------------


def output_text_part(
    text: str,
    annotations: list[dict[str, Any]] | None = None,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An ``output_text`` content part."""
    return {
        "type": "output_text",
        "text": text,
        "annotations": annotations if annotations is not None else [],
        "logprobs": logprobs if logprobs is not None else [],
    }


def refusal_part(refusal: str) -> dict[str, Any]:
    """A ``refusal`` content part."""
    return {"type": "refusal", "refusal": refusal}


def message_item(item_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    """An assistant ``message`` item."""
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def reasoning_item(
    item_id: str,
    status: str,
    text: str | None,
    mode: Literal["text", "summary"],
    encrypted_content: str | None = None,
) -> dict[str, Any]:
    """A ``reasoning`` item. ``text=None`` gives the empty item of ``output_item.added``.

    ``mode="text"`` carries the reasoning as ``content`` (``reasoning_text``) with an empty
    ``summary``; ``mode="summary"`` carries it as one ``summary_text`` entry.
    ``encrypted_content`` is present only when given: Open Responses allows a string or no key,
    never null.
    """
    item: dict[str, Any] = {"id": item_id, "type": "reasoning", "status": status, "summary": []}
    if mode == "text":
        item["content"] = [] if text is None else [{"type": "reasoning_text", "text": text}]
    elif text is not None:
        item["summary"] = [{"type": "summary_text", "text": text}]
    if encrypted_content is not None:
        item["encrypted_content"] = encrypted_content
    return item


ENCRYPTED_REASONING = "reasoning.encrypted_content"


def reasoning_sealer(
    request: Mapping[str, Any] | None, settings: Settings, tenant: str
) -> Callable[[str], str] | None:
    """What makes a reasoning item's ``encrypted_content`` for this request: ``None`` unless
    its ``include`` asks for ``reasoning.encrypted_content``."""
    include = request.get("include") if request is not None else None
    if not isinstance(include, list) or ENCRYPTED_REASONING not in include:
        return None
    key = reasoning_key(settings.reasoning_key)
    return functools.partial(seal_reasoning, key=key, tenant=tenant)


def function_call_item(
    item_id: str,
    status: str,
    call_id: str,
    name: str,
    arguments: str,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A ``function_call`` item; ``namespace`` only when the function was declared in one."""
    item: dict[str, Any] = {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }
    if namespace is not None:
        item["namespace"] = namespace
    return item


def custom_tool_call_item(
    item_id: str, status: str, call_id: str, name: str, tool_input: str
) -> dict[str, Any]:
    """A ``custom_tool_call`` (freeform tool) item."""
    return {
        "id": item_id,
        "type": "custom_tool_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "input": tool_input,
    }


def mcp_call_item(
    item_id: str,
    status: str,
    server_label: str,
    name: str,
    arguments: str,
    *,
    output: str | None = None,
    error: dict[str, Any] | None = None,
    approval_request_id: str | None = None,
) -> dict[str, Any]:
    """An ``mcp_call`` item: a call the gateway makes to a remote MCP server itself."""
    return {
        "id": item_id,
        "type": "mcp_call",
        "status": status,
        "server_label": server_label,
        "name": name,
        "arguments": arguments,
        "output": output,
        "error": error,
        "approval_request_id": approval_request_id,
    }


def mcp_list_tools_item(
    item_id: str,
    status: str,
    server_label: str,
    tools: list[dict[str, Any]],
    error: str | None = None,
) -> dict[str, Any]:
    """An ``mcp_list_tools`` item. OpenAI's has no ``status``; it is sent anyway, as every
    item carries one in Open Responses (clients ignore a key they do not know)."""
    item: dict[str, Any] = {
        "id": item_id,
        "type": "mcp_list_tools",
        "status": status,
        "server_label": server_label,
        "tools": tools,
    }
    if error is not None:
        item["error"] = error
    return item


def mcp_approval_request_item(
    item_id: str, server_label: str, name: str, arguments: str
) -> dict[str, Any]:
    """An ``mcp_approval_request`` item (whole when announced; ``status`` as for the list)."""
    return {
        "id": item_id,
        "type": "mcp_approval_request",
        "status": "completed",
        "server_label": server_label,
        "name": name,
        "arguments": arguments,
    }


def mcp_error(error: str | Mapping[str, Any]) -> dict[str, Any]:
    """An ``mcp_call``'s ``error`` in the shape of the openai SDK's ``McpToolCallError``
    union: a message becomes an ``mcp_tool_execution_error`` whose ``content`` is one text
    block (what an MCP server's ``isError`` result holds); an object already tagged with one
    of the union's types is kept as given."""
    if isinstance(error, Mapping) and error.get("type") in _MCP_ERROR_TYPES:
        return dict(error)
    text = error if isinstance(error, str) else orjson.dumps(error).decode()
    return {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": text}]}


_MCP_ERROR_TYPES = frozenset({"mcp_protocol_error", "mcp_tool_execution_error", "http_error"})


def sum_usage(
    earlier: dict[str, Any] | None, usage: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Two mapped ``usage`` objects added field by field (``None`` when neither was reported):
    a response that asked the backend several times used the tokens of every round."""
    if earlier is None or usage is None:
        return usage if earlier is None else earlier
    return {
        key: (
            {name: earlier[key][name] + count for name, count in value.items()}
            if isinstance(value, dict)
            else earlier[key] + value
        )
        for key, value in usage.items()
    }


def custom_input_of(arguments: str) -> str:
    """The ``input`` of a custom tool call from the arguments of the function it became.

    The function has one string parameter ``input``; a model that ignored the schema and
    wrote the input bare (or as a JSON string) still gets its text through.
    """
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    if isinstance(value, dict):
        inner = value.get("input")
        if isinstance(inner, str):
            return inner
        return arguments
    if isinstance(value, str):
        return value
    return arguments


# --- reading upstream messages and deltas ------------------------------------------------


def reasoning_of(source: Mapping[str, Any]) -> str | None:
    """The reasoning text of a delta or message, counted once.

    ``reasoning_content`` (DeepSeek, Qwen, vLLM) or ``reasoning`` (OpenRouter, newer vLLM);
    backends that send both send the same text twice. ``reasoning_details`` (OpenRouter) and
    ``thinking_blocks`` (LiteLLM) usually duplicate those, so they are read only when neither
    is present.
    """
    text = source.get("reasoning_content")
    if isinstance(text, str) and text:
        return text
    text = source.get("reasoning")
    if isinstance(text, str) and text:
        return text
    if isinstance(source.get("reasoning_content"), str) or isinstance(source.get("reasoning"), str):
        return None
    pieces: list[str] = []
    details = source.get("reasoning_details")
    if isinstance(details, list):
        for detail in details:
            if isinstance(detail, Mapping):
                value = detail.get("text")
                if not isinstance(value, str):
                    value = detail.get("summary")
                if isinstance(value, str):
                    pieces.append(value)
    if not pieces:
        blocks = source.get("thinking_blocks")
        if isinstance(blocks, list):
            for block in blocks:
                if isinstance(block, Mapping) and isinstance(block.get("thinking"), str):
                    pieces.append(block["thinking"])
    return "".join(pieces) or None


def content_pieces(content: list[Any]) -> Iterator[tuple[bool, str]]:
    """``(is_reasoning, text)`` for each typed part of an array ``content`` (Mistral
    Magistral: ``{"type": "thinking", "thinking": [{"type": "text", "text": ...}]}`` is
    reasoning, ``{"type": "text", "text": ...}`` is text)."""
    for part in content:
        if isinstance(part, str):
            yield False, part
            continue
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            yield False, part["text"]
        elif kind == "thinking":
            thinking = part.get("thinking")
            if isinstance(thinking, str):
                yield True, thinking
            elif isinstance(thinking, list):
                for inner in thinking:
                    if isinstance(inner, str):
                        yield True, inner
                    elif isinstance(inner, Mapping) and isinstance(inner.get("text"), str):
                        yield True, inner["text"]


class ThinkSplitter:
    """Splits ``content`` into text and reasoning at ``<think>``/``</think>`` tags.

    Tags may be split across chunks: only a tail that could be the start of the tag now
    expected is held back. Whitespace right after a tag is dropped (the models put a newline
    or two there), so a reply does not start with blank lines.
    """

    __slots__ = ("_held", "_inside", "_strip")

    def __init__(self) -> None:
        self._inside = False
        self._held = ""
        self._strip = False

    def feed(self, text: str) -> list[tuple[bool, str]]:
        """``(is_reasoning, text)`` pieces of ``text`` that are certain now."""
        if self._held:
            text = self._held + text
            self._held = ""
        out: list[tuple[bool, str]] = []
        while text:
            tag = "</think>" if self._inside else "<think>"
            at = text.find(tag)
            if at >= 0:
                self._piece(out, text[:at])
                text = text[at + len(tag) :]
                self._inside = not self._inside
                self._strip = True
                continue
            keep = _partial_tag(text, tag)
            if keep:
                self._held = text[-keep:]
                text = text[:-keep]
            self._piece(out, text)
            break
        return out

    def flush(self) -> list[tuple[bool, str]]:
        """What is left at the end of the stream (a held-back partial tag is just text)."""
        out: list[tuple[bool, str]] = []
        self._piece(out, self._held)
        self._held = ""
        return out

    def _piece(self, out: list[tuple[bool, str]], text: str) -> None:
        if self._strip and text:
            text = text.lstrip()
            if text:
                self._strip = False
        if text:
            out.append((self._inside, text))


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of ``tag``."""
    start = text.rfind("<", max(0, len(text) - len(tag) + 1))
    while start >= 0:
        tail = text[start:]
        if tag.startswith(tail):
            return len(tail)
        start = text.rfind("<", max(0, len(text) - len(tag) + 1), start)
    return 0


def map_logprobs(entries: object) -> list[dict[str, Any]]:
    """Chat ``logprobs.content`` entries → Responses logprob entries."""
    if not isinstance(entries, list):
        return []
    out: list[dict[str, Any]] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        top = entry.get("top_logprobs")
        out.append(
            {
                "token": entry.get("token", ""),
                "logprob": entry.get("logprob", 0.0),
                "bytes": entry.get("bytes") or [],
                "top_logprobs": [
                    {
                        "token": alt.get("token", ""),
                        "logprob": alt.get("logprob", 0.0),
                        "bytes": alt.get("bytes") or [],
                    }
                    for alt in (top if isinstance(top, list) else [])
                    if isinstance(alt, Mapping)
                ],
            }
        )
    return out


_ANNOTATION_TYPES = frozenset(
    {"url_citation", "file_citation", "container_file_citation", "file_path"}
)


def normalise_annotation(annotation: object) -> dict[str, Any] | None:
    """A Chat annotation → the flat Responses shape (``None`` for unknown kinds).

    Chat nests a URL citation (``{"type": "url_citation", "url_citation": {...}}``); some
    backends send it flat already.
    """
    if not isinstance(annotation, Mapping):
        return None
    kind = annotation.get("type")
    if kind == "url_citation":
        inner = annotation.get("url_citation")
        source = inner if isinstance(inner, Mapping) else annotation
        return {
            "type": "url_citation",
            "start_index": _count(source.get("start_index")),
            "end_index": _count(source.get("end_index")),
            "title": str(source.get("title") or ""),
            "url": str(source.get("url") or ""),
        }
    if kind in _ANNOTATION_TYPES:
        return dict(annotation)
    return None


_FINISH_COMPLETED = frozenset(
    {"stop", "tool_calls", "function_call", "eos", "eos_token", "end_turn", "stop_sequence"}
)
_FINISH_LENGTH = frozenset({"length", "model_length", "max_tokens"})
_FINISH_FILTER = frozenset({"content_filter", "safety", "recitation"})


def finish_outcome(finish_reason: str | None) -> tuple[Outcome, str | None]:
    """``(outcome, incomplete reason)`` for an upstream ``finish_reason``.

    ``None`` (the upstream never said it finished) is a failure. Unknown reasons count as a
    normal stop: a backend's private vocabulary must not fail a reply that arrived whole.
    """
    if finish_reason is None:
        return "failed", None
    reason = finish_reason.lower()
    if reason in _FINISH_LENGTH:
        return "incomplete", "max_output_tokens"
    if reason in _FINISH_FILTER:
        return "incomplete", "content_filter"
    if reason == "error":
        return "failed", None
    return "completed", None


def in_band_error(payload: object) -> UpstreamError:
    """The error an upstream reported inside a 2xx body: ``{"error": {...}}``,
    ``{"error": "text"}``, vLLM's ``{"object": "error", "message", "code"}``, or the data of
    an ``event: error``. The upstream's message is kept word for word (Codex reads
    "try again in N s" from it). ``ProxyApp``'s own report of losing the upstream mid-stream
    is labelled as the gateway's failure."""
    if isinstance(payload, Mapping) and "error" in payload and payload["error"]:
        payload = payload["error"]
    if isinstance(payload, Mapping):
        raw_message = payload.get("message")
        message = raw_message if isinstance(raw_message, str) and raw_message else ""
        code = payload.get("code")
        if code in GATEWAY_FAILURE_CODES:
            return UpstreamError(
                f"the gateway failed to read the upstream's response: {message}",
                code="server_error",
            )
        status = payload.get("status_code", payload.get("status"))
        if not isinstance(status, int) and isinstance(code, int):
            status = code
        elif not isinstance(status, int) and isinstance(code, str) and code.isdigit():
            status = int(code)
        if not message:
            message = orjson.dumps(payload).decode()
        status_code = status if isinstance(status, int) and not isinstance(status, bool) else None
        return UpstreamReportedError(
            f"upstream reported an error: {message}",
            code=classify_upstream_error(
                status_code=status_code,
                code=code,
                error_type=payload.get("type"),
                message=message,
            ),
            status_code=status_code,
        )
    message = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    message = message or "no details given"
    return UpstreamReportedError(
        f"upstream reported an error: {message}",
        code=classify_upstream_error(message=message),
    )


# --- non-streaming ----------------------------------------------------------------------------


def translate_completion(
    body: Mapping[str, Any],
    request: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    *,
    response_id: str | None = None,
    created_at: int | None = None,
    clock: Callable[[], float] = time.time,
    tenant: str = "",
) -> dict[str, Any]:
    """Translate a whole ``chat.completion`` body into the Response object.

    The items, ids, statuses and usage are built exactly as the stream converter builds its
    terminal response. ``length`` gives ``incomplete`` (``max_output_tokens``) and leaves tool
    calls ``incomplete``; ``content_filter`` gives ``incomplete``; ``error`` gives ``failed``.
    ``tenant`` is bound into the reasoning items' ``encrypted_content`` when the request's
    ``include`` asks for it (see ``StreamConverter``).

    Raises:
        UpstreamReportedError: The body is an error (``{"error": ...}`` or vLLM's
            ``{"object": "error", ...}``).
        UpstreamProtocolError: The body is not a ``chat.completion``.
    """
    settings = settings if settings is not None else _DEFAULT_SETTINGS
    if not isinstance(body, Mapping):
        raise UpstreamProtocolError(
            f"upstream reply is not a JSON object but {type(body).__name__}"
        )
    if body.get("error") or body.get("object") == "error":
        raise in_band_error(body)
    choices = body.get("choices")
    if not isinstance(choices, list):
        raise UpstreamProtocolError(
            "upstream reply is not a chat.completion (no 'choices' list): "
            + preview(orjson.dumps(body))
        )
    choice: Mapping[str, Any] = {}
    for candidate in choices:
        if isinstance(candidate, Mapping) and candidate.get("index", 0) == 0:
            choice = candidate
            break
    message = choice.get("message")
    if not isinstance(message, Mapping):
        message = {}
    finish = choice.get("finish_reason")
    finish_reason = finish if isinstance(finish, str) else None
    # A whole body that just forgot finish_reason arrived complete; only a stream can be cut.
    outcome, reason = finish_outcome(finish_reason) if finish_reason else ("completed", None)
    response_id = response_id if response_id is not None else new_id("resp")
    created = created_at if created_at is not None else int(clock())
    upstream_model = body.get("model")
    response = base_response(
        request,
        response_id,
        created,
        upstream_model if isinstance(upstream_model, str) else None,
    )
    mode = settings.reasoning_events
    cut = outcome != "completed"
    item_status = "incomplete" if cut else "completed"
    output: list[dict[str, Any]] = []

    # Reasoning and text, in the order the message gives them.
    reasoning_parts: list[str] = []
    text_parts: list[str] = []
    top = reasoning_of(message)
    if top:
        reasoning_parts.append(top)
    content = message.get("content")
    if isinstance(content, list):
        for is_reasoning, piece in content_pieces(content):
            (reasoning_parts if is_reasoning else text_parts).append(piece)
    elif isinstance(content, str):
        if settings.think_tags:
            splitter = ThinkSplitter()
            for is_reasoning, piece in [*splitter.feed(content), *splitter.flush()]:
                (reasoning_parts if is_reasoning else text_parts).append(piece)
        else:
            text_parts.append(content)
    text = "".join(text_parts)
    refusal = message.get("refusal")
    tool_calls = message.get("tool_calls")
    calls = (
        [c for c in tool_calls if isinstance(c, Mapping)] if isinstance(tool_calls, list) else []
    )
    legacy = message.get("function_call")
    if isinstance(legacy, Mapping) and not calls:
        calls = [{"function": legacy}]
    annotations = [
        a for a in map(normalise_annotation, message.get("annotations") or []) if a is not None
    ]

    if reasoning_parts:
        reasoning = "".join(reasoning_parts)
        seal = reasoning_sealer(request, settings, tenant)
        output.append(
            reasoning_item(
                item_id(response_id, "rs", len(output)),
                "incomplete" if cut and not (text or refusal or calls) else "completed",
                reasoning,
                mode,
                seal(reasoning) if seal is not None else None,
            )
        )
    parts: list[dict[str, Any]] = []
    if text or annotations:
        logprobs = choice.get("logprobs")
        parts.append(
            output_text_part(
                text,
                annotations,
                map_logprobs(logprobs.get("content")) if isinstance(logprobs, Mapping) else [],
            )
        )
    if isinstance(refusal, str) and refusal:
        parts.append(refusal_part(refusal))
    if parts:
        output.append(
            message_item(
                item_id(response_id, "msg", len(output)),
                "incomplete" if cut and not calls else "completed",
                parts,
            )
        )
    tool_map = ToolMap.from_tools(request.get("tools")) if request else ToolMap()
    failure: UpstreamError | None = None
    for call in calls:
        function = call.get("function")
        custom = call.get("custom")
        raw_input = False
        if not isinstance(function, Mapping) and isinstance(custom, Mapping):
            # A native Chat custom-tool call (OpenAI): the input is not JSON-wrapped.
            function = {"name": custom.get("name"), "arguments": custom.get("input")}
            raw_input = True
        elif not isinstance(function, Mapping):
            function = {}
        chat_name = function.get("name")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = "" if arguments is None else orjson.dumps(arguments).decode()
        if len(arguments.encode()) > settings.max_argument_bytes:
            raise UpstreamProtocolError(
                f"upstream tool call arguments exceed max_argument_bytes "
                f"({settings.max_argument_bytes} bytes); raise Settings.max_argument_bytes "
                "to allow larger calls"
            )
        upstream_id = call.get("id")
        if not (isinstance(chat_name, str) and chat_name):
            # As in the stream: a call without a name cannot be executed, so it is not
            # emitted, and the response fails saying why.
            failure = UpstreamProtocolError(
                "upstream sent a tool call without a function name "
                f"(call id {upstream_id or 'none'}, arguments "
                f"{preview(arguments.encode(), 80)})"
            )
            continue
        index = len(output)
        call_id = (
            upstream_id
            if isinstance(upstream_id, str) and upstream_id
            else f"call_{random_part(response_id)}_{index}"
        )
        target = tool_map.resolve(chat_name)
        if target.kind == "custom" or raw_input:
            output.append(
                custom_tool_call_item(
                    item_id(response_id, "ctc", index),
                    item_status,
                    call_id,
                    target.name,
                    arguments if raw_input else custom_input_of(arguments),
                )
            )
        else:
            output.append(
                function_call_item(
                    item_id(response_id, "fc", index),
                    item_status,
                    call_id,
                    target.name,
                    arguments,
                    target.namespace,
                )
            )

    if failure is not None:
        outcome, reason = "failed", None
        for item in output:
            if item["type"] in ("function_call", "custom_tool_call"):
                item["status"] = "incomplete"
    elif outcome == "failed":
        failure = UpstreamReportedError(f"upstream finished with finish_reason {finish_reason!r}")
    response["output"] = output
    response["usage"] = map_usage(body.get("usage"))
    response["status"] = outcome
    if outcome == "completed":
        response["completed_at"] = int(clock())
    elif outcome == "incomplete":
        response["incomplete_details"] = {"reason": reason}
    else:
        assert failure is not None
        response["error"] = error_object(failure)
    return response


def error_object(error: UpstreamError) -> dict[str, Any]:
    """``response.error``: ``{code, message}``."""
    return {"code": error.code, "message": error.message}


def preview(data: bytes, limit: int = 200) -> str:
    """The start of some upstream bytes, for an error message."""
    text = data[:limit].decode("utf-8", "replace")
    return text + ("..." if len(data) > limit else "")
