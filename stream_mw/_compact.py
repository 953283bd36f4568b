"""``POST {path_prefix}/responses/compact``: a conversation summarised into one input item.

Strategy: the conversation (``input``, or a ``previous_response_id`` chain and ``input``) is
sent to the model once more, non-streamed and unstored, with ``Settings.compaction_prompt``
as the last user message, by the same ``ResponseRun`` as ``POST /responses`` (so keys,
tenants, limits and upstream errors are exactly those of that route), delivered to
``_Collected``: an error goes to the client as that route answers it, the response is kept. The answer is the
compact resource OpenAI's SDKs parse: the conversation's user messages, then one
``compaction`` item whose ``encrypted_content`` carries the summary, sealed for the tenant
(``_sealed``, in a domain of its own). Passed back as input, that item becomes a user message
holding the summary (``_request_history``); another server's compaction items are dropped as before.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.types import Message, Receive, Scope, Send

from ._deliver.http import HTTPDelivery
from ._delivery import Headers
from ._errors import InvalidRequestError, RequestError, UpstreamError
from ._items import new_id
from ._run import ResponseRun
from ._run_request import read_json_body
from ._sealed import compaction_tenant, reasoning_key, seal_reasoning
from ._service import request_id
from ._store_gateway import normalize_input, send_json, tenant_key

if TYPE_CHECKING:
    from ._middleware import ResponsesMiddleware

__all__ = ["compact"]

_ZERO_USAGE: Final = {
    "input_tokens": 0,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 0,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 0,
}


async def compact(mw: ResponsesMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one ``POST {path_prefix}/responses/compact``."""
    try:
        body = await read_json_body(scope, receive, mw.settings.max_request_bytes)
        if body is None:
            return  # the client left
        request = _summary_request(body, mw.settings.compaction_prompt)
    except RequestError as exc:
        await send_json(send, exc.status_code, exc.body())
        return
    data = orjson.dumps(request)
    # Logged and counted as the route it runs (the request headers go to the app as they
    # would from that route: the run drops those describing the body).
    inner = {**scope, "path": scope.get("root_path", "") + mw.settings.responses_path}
    rid = request_id(scope)
    answer = _Collected(HTTPDelivery(send, rid))
    # Counted on its own route, by the middleware: the run adds only its tokens and times.
    run = ResponseRun(mw, inner, receive, answer, rid, route=None)
    await run.respond(data)
    response = answer.response
    if response is None:
        return  # the error went to the client
    summary = _output_text(response)
    if not summary:
        error = UpstreamError("The model answered the compaction request with no text.")
        await send_json(send, 502, _error(error))
        return
    items = run.input_items or normalize_input(request.get("input"))
    tenant = tenant_key(scope, mw.settings)
    sealed = seal_reasoning(
        summary,
        key=reasoning_key(mw.settings.reasoning_key),
        tenant=compaction_tenant(tenant),
    )
    # The prompt was the last user message; it is not part of the conversation.
    users = [item for item in items[:-1] if item.get("role") == "user"]
    usage = response.get("usage")
    resource = {
        "id": new_id("resp"),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": [
            *users,
            {"id": new_id("cmp"), "type": "compaction", "encrypted_content": sealed},
        ],
        "usage": usage if isinstance(usage, dict) else dict(_ZERO_USAGE),
    }
    await send_json(send, 200, resource)


class _Collected:
    """The delivery of a compaction's run: keeps the response, passes an error on."""

    __slots__ = ("error", "response")

    def __init__(self, error: HTTPDelivery) -> None:
        #: Answers the client when the run ends with an error.
        self.error = error
        self.response: dict[str, Any] | None = None

    async def answer(
        self, status: int, body: dict[str, Any], headers: Headers, *, close: bool
    ) -> None:
        if status == 200:
            self.response = body
        else:
            await self.error.answer(status, body, headers, close=close)

    # The run is not streamed (``stream: false``): none of these is ever called.

    async def start(self, headers: Headers, events: bytes, *, end: bool) -> None:
        raise RuntimeError("a compaction's run is not streamed")

    async def events(self, message: Message) -> None:
        raise RuntimeError("a compaction's run is not streamed")

    async def end(self, data: bytes) -> None:
        raise RuntimeError("a compaction's run is not streamed")


def _summary_request(body: dict[str, Any], prompt: str) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("Missing required parameter: 'model'.", param="model")
    given = body.get("input")
    if given is None and body.get("previous_response_id") is None:
        raise InvalidRequestError(
            "Give the conversation to compact: 'input', 'previous_response_id' or both.",
            param="input",
        )
    items = [] if given is None else [given] if isinstance(given, str) else list(given)
    if items and isinstance(items[0], str):
        items[0] = {"role": "user", "content": items[0]}
    request: dict[str, Any] = {
        "model": model,
        "input": [*items, {"role": "user", "content": prompt}],
        "stream": False,
        "store": False,
    }
    previous = body.get("previous_response_id")
    if previous is not None:
        request["previous_response_id"] = previous
    return request


def _output_text(response: dict[str, Any]) -> str:
    texts = [
        part.get("text") or ""
        for item in response.get("output") or ()
        if isinstance(item, dict) and item.get("type") == "message"
        for part in item.get("content") or ()
        if isinstance(part, dict) and part.get("type") == "output_text"
    ]
    return "".join(texts).strip()


def _error(exc: UpstreamError) -> dict[str, Any]:
    return {
        "error": {"message": exc.message, "type": "server_error", "param": None, "code": exc.code}
    }
