"""The Conversations API: ``{prefix}/conversations`` and its items, OpenAI's shapes.

A conversation is an id (``conv_...``), ``created_at``, ``metadata`` and an ordered list of
items. Clients create one (optionally with up to 20 items), add items, list them (``desc`` by
default, paged by ``after``), read and delete single items, update the metadata and delete the
conversation. A response created with ``conversation`` adds its turn to it
(``StoreGateway.save``). Everything is kept in the configured store, scoped by tenant exactly
like stored responses: another credential's conversation answers 404.

Routes (``{c}`` is ``{prefix}/conversations``)::

    POST   {c}                          create
    GET    {c}/{id}                     retrieve
    POST   {c}/{id}                     update (metadata)
    DELETE {c}/{id}                     delete
    POST   {c}/{id}/items               add items
    GET    {c}/{id}/items               list items
    GET    {c}/{id}/items/{item_id}     retrieve an item
    DELETE {c}/{id}/items/{item_id}     delete an item (answers the conversation)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from starlette.datastructures import QueryParams

from ._errors import (
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    RequestError,
    clip,
)
from ._items import new_id
from ._requests import _check_item
from ._run_request import json_object, read_body
from ._store_gateway import (
    StoreGateway,
    conversation_not_found,
    is_stored_id,
    list_page,
    normalize_input,
    send_json,
    tenant_key,
)

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

__all__ = ["ConversationsAPI"]

# OpenAI's limits: items per create request, and metadata's size.
_MAX_ITEMS_PER_REQUEST = 20
_MAX_METADATA_KEYS = 16
_MAX_METADATA_KEY_CHARS = 64
_MAX_METADATA_VALUE_CHARS = 512

# Methods each route serves; any other is a 405 whose Allow header lists them.
_TEMPLATES: Final = {
    "collection": "",
    "conversation": "/{id}",
    "items": "/{id}/items",
    "item": "/{id}/items/{item_id}",
}
_ALLOWED = {
    "collection": "POST",
    "conversation": "GET, POST, DELETE",
    "items": "GET, POST",
    "item": "GET, DELETE",
}


class ConversationsAPI:
    """The Conversations API routes, on the store ``gateway`` holds.

    Args:
        gateway: The middleware's store gateway (the store, its timeout and its settings).
    """

    def __init__(self, gateway: StoreGateway) -> None:
        self._gateway = gateway
        self._settings = gateway.settings
        self._base = self._settings.path_prefix + "/conversations"

    def matches(self, scope: Scope) -> bool:
        """Whether ``handle`` serves this request: any method but ``OPTIONS`` (a CORS layer
        inside may answer the preflight) on a conversations route, when a store is on."""
        return (
            self._gateway.enabled
            and scope["type"] == "http"
            and scope["method"] != "OPTIONS"
            and self._route(scope) is not None
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a request ``matches`` accepted, with OpenAI-shaped JSON and errors."""
        headers: list[tuple[bytes, bytes]] = []
        try:
            route = self._route(scope)
            if route is None:  # pragma: no cover - matches() checked it
                raise NotFoundError(f"No route for {scope['method']} {clip(scope['path'])}.")
            kind, conv_id, item_id = route
            method = scope["method"]
            allowed = _ALLOWED[kind]
            if method not in allowed.split(", "):
                headers.append((b"allow", allowed.encode("ascii")))
                raise MethodNotAllowedError(method, clip(scope["path"]), allowed)
            if conv_id and not is_stored_id(conv_id):
                raise conversation_not_found(conv_id)
            if item_id and not is_stored_id(item_id):
                raise _item_not_found(item_id, conv_id)
            tenant = tenant_key(scope, self._settings)
            body = await self._serve(scope, receive, tenant, kind, method, conv_id, item_id)
            status = 200
        except RequestError as exc:
            status, body = exc.status_code, exc.body()
        except _ClientGone:
            return
        await send_json(send, status, body, headers)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        tenant: str,
        kind: str,
        method: str,
        conv_id: str,
        item_id: str,
    ) -> Any:
        params = QueryParams(scope.get("query_string", b""))
        if kind == "collection":
            return await self._create(tenant, await self._read_body(receive, scope))
        if kind == "conversation":
            if method == "GET":
                return await self._get(tenant, conv_id)
            if method == "DELETE":
                if not await self._gateway.guard(
                    lambda store: store.delete_conversation(tenant, conv_id)
                ):
                    raise conversation_not_found(conv_id)
                return {"id": conv_id, "object": "conversation.deleted", "deleted": True}
            return await self._update(tenant, conv_id, await self._read_body(receive, scope))
        if kind == "items":
            if method == "GET":
                items = await self._gateway.conversation_items(tenant, conv_id)
                return list_page(
                    items, params, "item with id {after} in conversation " + f"'{conv_id}'"
                )
            return await self._add(tenant, conv_id, await self._read_body(receive, scope))
        if method == "GET":
            items = await self._gateway.conversation_items(tenant, conv_id)
            found = next((item for item in items if item.get("id") == item_id), None)
            if found is None:
                raise _item_not_found(item_id, conv_id)
            return found
        deleted = await self._gateway.guard(
            lambda store: store.delete_conversation_item(tenant, conv_id, item_id)
        )
        if deleted is None:
            raise conversation_not_found(conv_id)
        if not deleted:
            raise _item_not_found(item_id, conv_id)
        return await self._get(tenant, conv_id)

    async def _create(self, tenant: str, body: dict[str, Any]) -> dict[str, Any]:
        conversation = {
            "id": new_id("conv"),
            "object": "conversation",
            "created_at": int(time.time()),
            "metadata": _metadata(body.get("metadata")),
        }
        items = _items(body.get("items"), required=False)
        await self._gateway.guard(
            lambda store: store.create_conversation(tenant, conversation, items)
        )
        return conversation

    async def _get(self, tenant: str, conv_id: str) -> dict[str, Any]:
        conversation = await self._gateway.guard(
            lambda store: store.get_conversation(tenant, conv_id)
        )
        if conversation is None:
            raise conversation_not_found(conv_id)
        return conversation

    async def _update(self, tenant: str, conv_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if "metadata" not in body:
            raise InvalidRequestError("Missing required parameter: 'metadata'.", param="metadata")
        conversation = {**await self._get(tenant, conv_id), "metadata": _metadata(body["metadata"])}
        if not await self._gateway.guard(
            lambda store: store.update_conversation(tenant, conversation)
        ):
            raise conversation_not_found(conv_id)
        return conversation

    async def _add(self, tenant: str, conv_id: str, body: dict[str, Any]) -> dict[str, Any]:
        items = _items(body.get("items"), required=True)
        added = await self._gateway.guard(
            lambda store: store.add_conversation_items(tenant, conv_id, items)
        )
        if added is None:
            raise conversation_not_found(conv_id)
        return {
            "object": "list",
            "data": added,
            "first_id": added[0]["id"] if added else None,
            "last_id": added[-1]["id"] if added else None,
            "has_more": False,
        }

    async def _read_body(self, receive: Receive, scope: Scope) -> dict[str, Any]:
        raw = await read_body(scope, receive, self._settings.max_request_bytes)
        if raw is None:
            # Nobody would read the answer: change nothing.
            raise _ClientGone
        # An empty body is an empty object: ``POST /conversations`` needs no fields.
        return json_object(raw) if raw.strip() else {}

    def route(self, scope: Scope) -> str:
        """The route template of a request ``matches`` accepted, for the metrics."""
        found = self._route(scope)
        kind = found[0] if found is not None else "collection"
        return f"{scope['method']} {self._base}{_TEMPLATES[kind]}"

    def _route(self, scope: Scope) -> tuple[str, str, str] | None:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path == self._base:
            return "collection", "", ""
        if not path.startswith(self._base + "/"):
            return None
        parts = path[len(self._base) + 1 :].split("/")
        if not all(parts):
            return None
        if len(parts) == 1:
            return "conversation", parts[0], ""
        if parts[1] != "items" or len(parts) > 3:
            return None
        if len(parts) == 2:
            return "items", parts[0], ""
        return "item", parts[0], parts[2]


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def _item_not_found(item_id: str, conv_id: str) -> NotFoundError:
    return NotFoundError(
        f"Item with id '{clip(item_id)}' not found in conversation '{clip(conv_id)}'."
    )


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequestError(
            "Invalid 'metadata': expected an object of string keys and values.",
            param="metadata",
        )
    if len(value) > _MAX_METADATA_KEYS:
        raise InvalidRequestError(
            f"Invalid 'metadata': at most {_MAX_METADATA_KEYS} keys, got {len(value)}.",
            param="metadata",
        )
    for key, item in value.items():
        if not isinstance(item, str):
            raise InvalidRequestError(
                f"Invalid 'metadata.{clip(key)}': expected a string.",
                param=f"metadata.{clip(key)}",
            )
        if len(key) > _MAX_METADATA_KEY_CHARS or len(item) > _MAX_METADATA_VALUE_CHARS:
            raise InvalidRequestError(
                f"Invalid 'metadata.{clip(key)}': keys hold at most "
                f"{_MAX_METADATA_KEY_CHARS} characters, values {_MAX_METADATA_VALUE_CHARS}.",
                param=f"metadata.{clip(key)}",
            )
    return dict(value)


def _items(value: object, *, required: bool) -> list[dict[str, Any]]:
    """Validated items, normalised as stored responses' input items are (each with an id)."""
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise InvalidRequestError("Invalid 'items': expected an array of items.", param="items")
    if len(value) > _MAX_ITEMS_PER_REQUEST:
        raise InvalidRequestError(
            f"Invalid 'items': at most {_MAX_ITEMS_PER_REQUEST} items per request, "
            f"got {len(value)}.",
            param="items",
        )
    for index, item in enumerate(value):
        _check_item(item, f"items[{index}]")
        if item.get("type") == "item_reference":
            raise InvalidRequestError(
                f"Invalid 'items[{index}]': an item_reference cannot be added to a "
                "conversation; add the item itself.",
                param=f"items[{index}]",
            )
    return normalize_input(value)
