"""The store as the middleware uses it: expansion before a run, saving after, and the routes.

``StoreGateway`` is the one object the middleware holds. It expands ``previous_response_id``
and ``conversation`` and resolves ``item_reference`` input items before translation, saves
finished responses and appends them to their conversation (never raising: a store failure must
not break generation), and serves ``GET``/``DELETE {prefix}/responses/{id}`` and ``GET
{prefix}/responses/{id}/input_items``. The Conversations API's routes are in
``_conversations.py``, on top of it. The stores themselves are in the ``_store`` package.

Isolation: every operation takes a tenant key (``tenant_key``: ``Settings.tenant(scope)`` or a
hash of the ``Authorization`` header), so another tenant's id answers 404 like an unknown one.

Items: every backend also indexes the ids of a stored response's input and output items, so
``item_reference`` resolves an item with one indexed lookup, never a scan. An id maps to the
newest response holding it (a ``previous_response_id`` chain repeats its history's ids in each
turn, and the newest turn expires last).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import orjson
from starlette.datastructures import QueryParams

from ._auth import CLIENT_SCOPE_KEY
from ._errors import (
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    RequestError,
    StoreUnavailableError,
    clip,
)
from ._items import new_id
from ._observe import logger
from ._settings import Settings
from ._store import (
    ConversationFullError,
    NotStored,
    Store,
    StoredResponse,
    open_store,
    require_store_extra,
)
from ._store._protocol import fresh_item_id

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

__all__ = [
    "STORE_TIMEOUT",
    "StoreGateway",
    "conversation_id",
    "conversation_not_found",
    "has_item_references",
    "is_stored_id",
    "list_page",
    "normalize_input",
    "send_json",
    "tenant_key",
    "unique_ids",
]

#: Seconds the gateway waits for the store before answering 503 (reads) or giving up with a
#: log line (writes). The backends' own timeouts are shorter; this bounds everything else.
STORE_TIMEOUT = 5.0

_T = TypeVar("_T")

# --- tenants and input items -----------------------------------------------------------------

_ANONYMOUS = hashlib.sha256(b"anonymous").hexdigest()


def tenant_key(scope: Scope, settings: Settings) -> str:
    """The tenant a request acts for: ``settings.tenant(scope)``, or its client key's tenant,
    or a hash of its credential.

    With ``client_keys`` the middleware records the key's tenant in the scope (a named key:
    ``key:<name>``). Otherwise the default is the SHA-256 of the ``Authorization`` header, so
    the credential itself is never stored; requests without one share the ``anonymous``
    tenant.
    """
    if settings.tenant is not None:
        return settings.tenant(scope)
    client = scope.get(CLIENT_SCOPE_KEY)
    if isinstance(client, str):
        # Set by the middleware once the request's client key checked out.
        return client
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return hashlib.sha256(b"authorization\x00" + value).hexdigest()
    return _ANONYMOUS


# Items the SDK's strict models require a ``status`` on when listed back as input items.
_NEEDS_STATUS = frozenset(
    {"function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output"}
)


def normalize_input(value: object) -> list[dict[str, Any]]:
    """A request's ``input`` as stored items, each with an ``id`` (and the shape the SDK's
    strict ``ResponseItem`` models accept).

    A string becomes one user message with an ``input_text`` part; a message's string content
    becomes one ``input_text`` (or, for the assistant, ``output_text``) part; items without an
    id get a fresh prefixed one. Items that need no change are returned as they are, so
    normalising twice costs almost nothing. ``None`` is an empty input.

    Raises:
        InvalidRequestError: ``input`` is not a string or a list of objects.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [
            {
                "type": "message",
                "id": new_id("msg"),
                "role": "user",
                "content": [{"type": "input_text", "text": value}],
                "status": "completed",
            }
        ]
    if not isinstance(value, list):
        raise InvalidRequestError(
            "Invalid 'input': expected a string or an array of input items.", param="input"
        )
    return [_normalize_item(item, index) for index, item in enumerate(value)]


def _normalize_item(item: object, index: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidRequestError(
            f"Invalid 'input[{index}]': expected an object.", param=f"input[{index}]"
        )
    kind = item.get("type")
    is_message = kind == "message" or (kind is None and "role" in item)
    changes: dict[str, Any] = {}
    if is_message:
        if kind is None:
            changes["type"] = kind = "message"
        content = _message_content(item, index)
        if content is not item.get("content"):
            changes["content"] = content
        if "status" not in item:
            changes["status"] = "completed"
    elif kind in _NEEDS_STATUS and "status" not in item:
        changes["status"] = "completed"
    if not item.get("id"):
        changes["id"] = fresh_item_id(kind)
    return {**item, **changes} if changes else item


def _message_content(item: dict[str, Any], index: int) -> Any:
    content = item.get("content")
    assistant = item.get("role") == "assistant"
    if isinstance(content, str):
        if assistant:
            return [{"type": "output_text", "text": content, "annotations": []}]
        return [{"type": "input_text", "text": content}]
    if not isinstance(content, list):
        raise InvalidRequestError(
            f"Invalid 'input[{index}].content': expected a string or an array of parts.",
            param=f"input[{index}].content",
        )
    if assistant and any(
        isinstance(p, dict) and p.get("type") == "output_text" and "annotations" not in p
        for p in content
    ):
        return [
            {**p, "annotations": []}
            if isinstance(p, dict) and p.get("type") == "output_text" and "annotations" not in p
            else p
            for p in content
        ]
    return content


# --- the gateway the middleware holds --------------------------------------------------------

# Response ids are ours (resp_<hex>) or OpenAI's; anything else cannot be stored here.
_RESPONSE_ID = re.compile(r"[A-Za-z0-9_\-]{1,128}")
# Methods the stored-response routes leave to the wrapped app (see StoreGateway.matches).
_PASSED_METHODS = frozenset({"POST", "OPTIONS"})
_DEFAULT_LIMIT = 20
_MAX_LIMIT = 100


def _not_found(response_id: str, *, param: str | None = None) -> NotFoundError:
    what = "Previous response" if param == "previous_response_id" else "Response"
    return NotFoundError(f"{what} with id '{clip(response_id)}' not found.", param=param)


def has_item_references(value: object) -> bool:
    """Whether a request's ``input`` holds an ``item_reference`` (which the store resolves)."""
    return isinstance(value, list) and any(
        isinstance(item, dict) and item.get("type") == "item_reference" for item in value
    )


def unique_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` with every repeated id after the first replaced by a fresh one.

    Listing input items pages by id (``after`` is the last id of the previous page), so two
    items with one id would send a client round the same page forever. Clients do send
    repeats: an item replayed both from a ``previous_response_id`` chain and in ``input``.
    """
    seen: set[Any] = set()
    out: list[dict[str, Any]] | None = None
    for index, item in enumerate(items):
        item_id = item.get("id")
        if item_id not in seen:
            seen.add(item_id)
            continue
        if out is None:
            out = list(items)
        fresh = fresh_item_id(item.get("type"))
        seen.add(fresh)
        out[index] = {**item, "id": fresh}
    return items if out is None else out


class StoreGateway:
    """Everything the middleware needs from the store, behind four calls.

    One per middleware instance. The store is opened on first use (inside the server's event
    loop), so constructing the middleware never connects anywhere.

    Args:
        settings: ``store_url`` picks the backend (``None``: storage off), ``store_*`` bound it,
            ``tenant`` scopes it, ``path_prefix`` places the routes.
        timeout: Seconds before a store that does not answer counts as unavailable.
    """

    def __init__(self, settings: Settings, *, timeout: float = STORE_TIMEOUT) -> None:
        self._settings = settings
        self._timeout = timeout
        self._base = settings.responses_path + "/"
        self._store: Store | None = None
        #: The settings it was made with (the Conversations API reads its limits there).
        self.settings = settings
        #: Whether a store is configured (``store_url`` is not ``None``).
        self.enabled: bool = settings.store_url is not None
        if settings.store_url is not None:
            require_store_extra(settings.store_url)

    @property
    def store(self) -> Store:
        """The store, opened on first access.

        Raises:
            InvalidRequestError: storage is off (``store_url`` is ``None``).
        """
        if self._store is None:
            store = open_store(self._settings)
            if store is None:
                raise InvalidRequestError(
                    "Stored responses are turned off on this server (store_url is None)."
                )
            self._store = store
        return self._store

    def matches(self, scope: Scope) -> bool:
        """Whether ``handle`` serves this request (always ``False`` when storage is off, so
        the wrapped app keeps any routes of its own).

        Every method on the stored-response routes is served (a wrong one with 405), except
        ``POST``, which OpenAI uses for routes of its own beside them
        (``/responses/input_tokens``, ``/responses/compact``), and ``OPTIONS`` (CORS
        preflight): those reach the wrapped app.
        """
        return (
            self.enabled
            and scope["type"] == "http"
            and scope["method"] not in _PASSED_METHODS
            and self._route(scope) is not None
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a request ``matches`` accepted, with OpenAI-shaped JSON and errors."""
        route = self._route(scope)
        headers: list[tuple[bytes, bytes]] = []
        try:
            if route is None:
                raise NotFoundError(f"No route for {scope['method']} {clip(scope['path'])}.")
            response_id, input_items = route
            allowed = "GET" if input_items else "GET, DELETE"
            if scope["method"] not in allowed.split(", "):
                headers.append((b"allow", allowed.encode("ascii")))
                raise MethodNotAllowedError(scope["method"], clip(scope["path"]), allowed)
            params = QueryParams(scope.get("query_string", b""))
            tenant = tenant_key(scope, self._settings)
            if input_items:
                body = await self._list_input_items(tenant, response_id, params)
            elif scope["method"] == "DELETE":
                body = await self._delete(tenant, response_id)
            else:
                if params.get("stream", "false").lower() not in ("false", "0", ""):
                    raise InvalidRequestError(
                        "Streaming a stored response again is not supported; retrieve it "
                        "without 'stream'.",
                        param="stream",
                    )
                body = (await self._load(tenant, response_id)).response
            status = 200
        except RequestError as exc:
            status, body = exc.status_code, exc.body()
        await send_json(send, status, body, headers)

    async def expand(
        self, scope: Scope, body: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Resolve ``previous_response_id`` or ``conversation`` before translation.

        Returns ``(body, input_items)``. Without either the body is returned unchanged. With
        ``previous_response_id``, the returned body is a copy whose ``input`` is the stored
        input, then the stored output, then the new input; with ``conversation``, the
        conversation's items, then the new input. Either key is removed from the copy (the
        caller echoes it from the original body). ``input_items`` is always the full
        normalised input to pass to ``save`` later. ``instructions`` are not carried over, as
        with OpenAI.

        Every ``item_reference`` in ``input`` is replaced by the stored item it names (an input
        or output item of any of the tenant's stored responses), in both the returned body and
        ``input_items``.

        Raises:
            InvalidRequestError: 400, no store is configured, an id is not a string, both
                ``previous_response_id`` and ``conversation`` are given, the conversation is
                full, or an ``item_reference`` names no item of this tenant's (``param`` is
                ``input[i]``).
            NotFoundError: 404, the id is unknown, expired or another tenant's.
            StoreUnavailableError: 503, the store failed or did not answer in time.
        """
        previous = body.get("previous_response_id")
        conversation = body.get("conversation")
        if previous is not None and conversation is not None:
            raise InvalidRequestError(
                "'previous_response_id' and 'conversation' cannot be used together: a "
                "conversation already holds the earlier turns. Send one of them.",
                param="conversation",
            )
        new_items = normalize_input(body.get("input"))
        if has_item_references(body.get("input")):
            new_items = await self._resolve_references(scope, new_items)
            body = {**body, "input": new_items}
        if conversation is not None:
            return await self._expand_conversation(scope, body, conversation, new_items)
        if previous is None:
            return body, new_items
        if not isinstance(previous, str) or not previous:
            raise InvalidRequestError(
                "Invalid 'previous_response_id': expected a response id string.",
                param="previous_response_id",
            )
        if not self.enabled:
            raise InvalidRequestError(
                "'previous_response_id' needs a response store, and this server has none "
                "(store_url is None). Send the whole conversation in 'input' instead.",
                param="previous_response_id",
            )
        stored = await self._load(
            tenant_key(scope, self._settings), previous, param="previous_response_id"
        )
        items = [*stored.items(), *new_items]
        expanded = {k: v for k, v in body.items() if k != "previous_response_id"}
        expanded["input"] = items
        return expanded, items

    async def _expand_conversation(
        self,
        scope: Scope,
        body: dict[str, Any],
        conversation: object,
        new_items: list[dict[str, Any]],
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        conv_id = conversation_id(conversation)
        if not self.enabled:
            raise InvalidRequestError(
                "'conversation' needs a store to keep the conversation in, and this server has "
                "none (store_url is None). Send the whole conversation in 'input' instead.",
                param="conversation",
            )
        tenant = tenant_key(scope, self._settings)
        history = await self.conversation_items(tenant, conv_id, param="conversation")
        limit = self._settings.store_max_conversation_items
        if len(history) + len(new_items) > limit:
            # Refused before generating: the turn could not be added to the conversation.
            raise ConversationFullError(conv_id, limit)
        items = [*history, *new_items]
        expanded = {k: v for k, v in body.items() if k != "conversation"}
        expanded["input"] = items
        return expanded, items

    async def conversation_items(
        self, tenant: str, conv_id: str, *, param: str | None = None
    ) -> list[dict[str, Any]]:
        """Every item of the tenant's conversation, oldest first.

        Raises:
            NotFoundError: 404, the conversation is unknown, expired or another tenant's.
            StoreUnavailableError: 503, the store failed or did not answer in time.
        """
        items = None
        if is_stored_id(conv_id):
            items = await self.guard(lambda store: store.conversation_items(tenant, conv_id))
        if items is None:
            raise conversation_not_found(conv_id, param=param)
        return items

    async def _resolve_references(
        self, scope: Scope, items: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        references = [
            (index, item)
            for index, item in enumerate(items)
            if item.get("type") == "item_reference"
        ]
        if not self.enabled:
            index = references[0][0]
            raise InvalidRequestError(
                f"'input[{index}]' is an item_reference, which needs a response store to "
                "resolve, and this server has none (store_url is None). Send the item itself "
                "instead of a reference to it.",
                param=f"input[{index}]",
            )
        tenant = tenant_key(scope, self._settings)
        ids = [item["id"] for _, item in references]
        found = await self.guard(lambda store: store.get_items(tenant, ids))
        resolved = list(items)
        for index, item in references:
            target = found.get(item["id"])
            if target is None:
                raise InvalidRequestError(
                    f"Item with id '{clip(item['id'])}' not found (input[{index}] is an "
                    "item_reference). It is unknown, expired, belongs to another API key, or "
                    "was in a response sent with store set to false; send the item itself.",
                    param=f"input[{index}]",
                )
            resolved[index] = target
        return resolved

    async def save(
        self,
        scope: Scope,
        input_items: list[dict[str, Any]],
        response: dict[str, Any],
        request: dict[str, Any] | None = None,
    ) -> None:
        """Store a finished response unless ``response["store"]`` is false or storage is off,
        and add its turn to its conversation, if it has one.

        A response with ``conversation`` adds its new input (the tail of ``input_items``
        that ``request["input"]`` contributed) and its output items to the conversation once
        it is ``completed`` or ``incomplete`` (OpenAI's reference: "after this response
        completes"), whatever ``store`` says: the conversation is state the client asked to
        keep, ``store`` is about the response object. A failed one adds nothing, so the
        client can send the turn again.

        Never raises: a failing, slow or full store is logged as a warning and generation goes
        on. The write is shielded from cancellation (bounded by the timeout), so a response
        the client received is stored even if the surrounding task is being cancelled.
        """
        if not self.enabled:
            return
        if response.get("store") is not False:
            await self._write(
                "response %s was not stored: %s",
                response.get("id"),
                lambda store, tenant: store.put(
                    tenant,
                    StoredResponse(
                        response=response, input_items=unique_ids(normalize_input(input_items))
                    ),
                ),
                scope,
            )
        conversation = response.get("conversation")
        if (
            request is not None
            and isinstance(conversation, dict)
            and response.get("status") in ("completed", "incomplete")
        ):
            conv_id = conversation.get("id")
            count = _input_count(request.get("input"))
            output = response.get("output")
            turn = [
                *(input_items[len(input_items) - count :] if count else ()),
                *(output if isinstance(output, list) else ()),
            ]
            await self._write(
                "response %s was not added to its conversation: %s",
                response.get("id"),
                lambda store, tenant: store.add_conversation_items(tenant, str(conv_id), turn),
                scope,
            )

    async def _write(
        self,
        failure: str,
        response_id: object,
        call: Callable[[Store, str], Awaitable[object]],
        scope: Scope,
    ) -> None:
        try:
            tenant = tenant_key(scope, self._settings)
            # Shielded: the caller may sit in a scope that is cancelled as soon as the last
            # byte went out (Starlette's StreamingResponse cancels its sender when the server
            # reports the finished request's disconnect). The timeout still bounds the write.
            with anyio.CancelScope(shield=True), anyio.fail_after(self._timeout):
                await call(self.store, tenant)
        except Exception as exc:
            logger.warning(
                failure,
                response_id,
                _describe(exc, self._timeout),
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )

    async def ping(self) -> str | None:
        """``None`` when the store answers a ping in time, else why not (for readiness).
        Always ``None`` when storage is off."""
        if not self.enabled:
            return None
        try:
            with anyio.fail_after(self._timeout):
                await self.store.ping()
        except Exception as exc:
            return _describe(exc, self._timeout)
        return None

    async def aclose(self) -> None:
        """Close the store if it was opened. A later call opens it again."""
        store, self._store = self._store, None
        if store is not None:
            await store.aclose()

    def _route(self, scope: Scope) -> tuple[str, bool] | None:
        path: str = scope["path"]
        # Under a mount, Starlette's ``path`` includes ``root_path``; routes are relative to it.
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if not path.startswith(self._base):
            return None
        response_id, slash, tail = path[len(self._base) :].partition("/")
        if not response_id:
            return None
        if not slash:
            return response_id, False
        if tail == "input_items":
            return response_id, True
        return None

    async def _load(
        self, tenant: str, response_id: str, *, param: str | None = None
    ) -> StoredResponse:
        if not _RESPONSE_ID.fullmatch(response_id):
            raise _not_found(response_id, param=param)
        stored = await self.guard(lambda store: store.get(tenant, response_id))
        if stored is None:
            raise _not_found(response_id, param=param)
        if isinstance(stored, NotStored):
            raise NotFoundError(stored.reason, param=param, code="response_not_stored")
        return stored

    async def _delete(self, tenant: str, response_id: str) -> dict[str, Any]:
        if not _RESPONSE_ID.fullmatch(response_id) or not await self.guard(
            lambda store: store.delete(tenant, response_id)
        ):
            raise _not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def _list_input_items(
        self, tenant: str, response_id: str, params: QueryParams
    ) -> dict[str, Any]:
        items = (await self._load(tenant, response_id)).input_items
        return list_page(
            items, params, "input item with id {after} in response " + f"'{clip(response_id)}'"
        )

    async def guard(self, call: Callable[[Store], Awaitable[_T]]) -> _T:
        """``call(store)``, bounded by the timeout; a failure is a 503 that does not say
        where the store lives or how it failed (the log does)."""
        try:
            with anyio.fail_after(self._timeout):
                return await call(self.store)
        except StoreUnavailableError as exc:
            failure: Exception = exc
            detail = exc.message
        except RequestError:
            raise
        except Exception as exc:
            failure, detail = exc, _describe(exc, self._timeout)
        logger.warning("response store read failed: %s", detail)
        # The client learns that the store is down, not where it lives or how it failed.
        reason = "did not answer in time" if isinstance(failure, TimeoutError) else "is unavailable"
        raise StoreUnavailableError(f"The response store {reason}; try again later.") from failure


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    return str(exc) or type(exc).__name__


def _parse_limit(raw: str | None) -> int:
    if raw is None:
        return _DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= _MAX_LIMIT:
        raise InvalidRequestError(
            f"Invalid 'limit': expected an integer between 1 and {_MAX_LIMIT}, got {raw!r}.",
            param="limit",
        )
    return limit


def is_stored_id(value: str) -> bool:
    """Whether ``value`` can be an id of something stored here (ours, ``resp_<hex>``,
    ``conv_<hex>``..., or OpenAI's); anything else is not found without asking the store."""
    return _RESPONSE_ID.fullmatch(value) is not None


def _input_count(value: object) -> int:
    # How many items ``normalize_input(value)`` makes, without making them again.
    if value is None:
        return 0
    return len(value) if isinstance(value, list) else 1


def conversation_id(value: object) -> str:
    """The id a request's ``conversation`` names: the string itself, or ``{"id": ...}``.

    Raises:
        InvalidRequestError: 400, it is neither.
    """
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(
            "Invalid 'conversation': expected a conversation id string or an object with an 'id'.",
            param="conversation",
        )
    return value


def conversation_not_found(conv_id: str, *, param: str | None = None) -> NotFoundError:
    """The 404 for a conversation that is unknown, expired or another tenant's."""
    return NotFoundError(f"Conversation with id '{clip(conv_id)}' not found.", param=param)


def list_page(items: list[dict[str, Any]], params: QueryParams, missing: str) -> dict[str, Any]:
    """One page of ``items`` (oldest first) as OpenAI lists them: ``limit`` (1-100, default
    20), ``order`` (``desc``, the default, or ``asc``) and ``after`` (the last id of the page
    before). ``missing`` says what an unknown ``after`` names, with ``{after}`` in it.

    Raises:
        InvalidRequestError: 400, a parameter is invalid or ``after`` is not in ``items``.
    """
    limit = _parse_limit(params.get("limit"))
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequestError(
            f"Invalid 'order': expected 'asc' or 'desc', got {order!r}.", param="order"
        )
    after = params.get("after")
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if after is not None:
        start = next((i + 1 for i, item in enumerate(ordered) if item.get("id") == after), -1)
        if start < 0:
            raise InvalidRequestError(
                "Invalid 'after': no " + missing.replace("{after}", f"'{clip(after)}'") + ".",
                param="after",
            )
    page = ordered[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": start + limit < len(ordered),
    }


async def send_json(
    send: Send, status: int, body: object, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with ``body`` as JSON, whole, in one body message."""
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode("ascii")),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})
