"""The request side of a run: the client's body read, expanded and translated, and the scope
the wrapped app is called with.

Strategy: the body is read within ``max_request_bytes`` (a ``Content-Length`` over it is
refused before a byte is read). A request that names nothing stored is translated as parsed
(``parse_request_body`` validated exactly it); one with ``previous_response_id``, a
``conversation`` or item references is first expanded, from a WebSocket connection's own
history when the id is there, else from the store, and a continuation's tool outputs are
checked against the calls they answer.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from starlette.types import Receive, Scope

from ._continuation import LocalHistory, check_tool_outputs
from ._errors import InvalidRequestError
from ._requests import _translate
from ._settings import Settings
from ._store_gateway import StoreGateway, has_item_references, normalize_input
from ._upstream_answer import too_large

__all__ = [
    "chat_scope",
    "expand_request",
    "json_object",
    "read_body",
    "read_json_body",
    "translate_request",
]

# Request headers the wrapped app must not see: they describe the client's body, not ours.
_DROP_REQUEST_HEADERS: Final = frozenset(
    {
        b"content-length",
        b"content-type",
        b"content-encoding",
        b"transfer-encoding",
        b"accept",
        # Ask for an identity body: we must be able to read the upstream's JSON and SSE.
        b"accept-encoding",
        b"expect",
    }
)
# The wrapped app must answer with body messages we can read, never a file or trailers.
_DROP_EXTENSIONS: Final = (
    "http.response.pathsend",
    "http.response.zerocopysend",
    "http.response.trailers",
)
_JSON_TYPE: Final = (b"content-type", b"application/json")
_EVENT_STREAM: Final = b"text/event-stream"


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The request body, at most ``limit`` bytes; ``None`` when the client left first.

    Raises:
        RequestError: the body is larger than ``limit`` (413).
    """
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                break
            if declared > limit:
                raise too_large(limit)
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body: bytes = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise too_large(limit)
        chunks.append(body)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def read_json_body(scope: Scope, receive: Receive, limit: int) -> dict[str, Any] | None:
    """The request's JSON object body (``read_body``'s bounds); ``None`` when the client left.

    Raises:
        RequestError: too large (413), or not a JSON object (400).
    """
    raw = await read_body(scope, receive, limit)
    return None if raw is None else json_object(raw)


def json_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object.

    Raises:
        InvalidRequestError: it is not JSON, or not an object.
    """
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequestError("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    return body


async def translate_request(
    request: dict[str, Any],
    scope: Scope,
    settings: Settings,
    gateway: StoreGateway,
    history: LocalHistory | None,
    tenant: str,
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """The Chat Completions request for a parsed Responses ``request``, and its full input
    when it was expanded (``None`` otherwise: the request's own input is all of it).

    Raises:
        RequestError: what was named is not stored, or the continuation does not fit it.
    """
    expanded, input_items = await expand_request(request, scope, gateway, history)
    # parse_request_body validated an unexpanded body: it is not validated twice.
    validated = input_items is None
    return _translate(expanded, settings, validated=validated, tenant=tenant), input_items


async def expand_request(
    request: dict[str, Any],
    scope: Scope,
    gateway: StoreGateway,
    history: LocalHistory | None,
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """``request`` with what it names (a previous response, a conversation, item
    references) expanded into its input, and that whole input; ``(request, None)`` when it
    names nothing stored.

    Raises:
        RequestError: what was named is not stored, or the continuation does not fit it.
    """
    if (
        request.get("previous_response_id") is None
        and request.get("conversation") is None
        and not has_item_references(request.get("input"))
    ):
        return request, None
    previous = request.get("previous_response_id")
    earlier = history.items(previous) if history is not None else None
    input_items: list[dict[str, Any]]
    if earlier is not None:
        new_items = normalize_input(request.get("input"))
        items = input_items = [*earlier, *new_items]
        expanded = {k: v for k, v in request.items() if k != "previous_response_id"}
        expanded["input"] = items
        if has_item_references(request.get("input")):
            expanded, input_items = await gateway.expand(scope, expanded)
    else:
        expanded, input_items = await gateway.expand(scope, request)
    if previous is not None:
        check_tool_outputs(input_items, request.get("input"))
    return expanded, input_items


def chat_scope(scope: Scope, chat_path: str, length: int, *, stream: bool) -> Scope:
    """The scope the wrapped app is called with: ``POST {chat_path}`` with a JSON body of
    ``length`` bytes, the client's other headers and the server's extensions it can use."""
    headers = [(k, v) for k, v in scope["headers"] if k not in _DROP_REQUEST_HEADERS]
    headers.append(_JSON_TYPE)
    headers.append((b"content-length", str(length).encode("ascii")))
    headers.append((b"accept", _EVENT_STREAM if stream else b"application/json"))
    path = scope.get("root_path", "") + chat_path
    inner = dict(scope)
    inner["method"] = "POST"
    inner["path"] = path
    inner["raw_path"] = path.encode("utf-8")
    inner["headers"] = headers
    extensions = scope.get("extensions")
    if extensions and any(name in extensions for name in _DROP_EXTENSIONS):
        inner["extensions"] = {k: v for k, v in extensions.items() if k not in _DROP_EXTENSIONS}
    return inner
