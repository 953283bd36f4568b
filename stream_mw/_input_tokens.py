"""``POST {path_prefix}/responses/input_tokens``: how many tokens a request's input is.

Only the model's own tokenizer can say, so the question goes to the wrapped app: the
request is translated exactly as for ``POST /responses`` (store expansion included) and its
Chat ``messages`` and ``tools`` are sent to ``POST /tokenize``, vLLM's (and SGLang's)
tokenizer endpoint, which answers ``{"count": N, ...}``. An app that cannot count (any other
answer) gets a 501 that says so, never an estimate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.types import Message, Receive, Scope, Send

from ._errors import RequestError
from ._requests import _translate, parse_request_body
from ._run_request import read_json_body
from ._store_gateway import send_json, tenant_key

if TYPE_CHECKING:
    from ._middleware import ResponsesMiddleware

__all__ = ["TOKENIZE_PATH", "count_input_tokens"]

#: Where the wrapped app is asked to count (vLLM and SGLang serve it at the root).
TOKENIZE_PATH: Final = "/tokenize"
_JSON_TYPE: Final = (b"content-type", b"application/json")
_DROP: Final = frozenset({b"content-length", b"content-type", b"accept-encoding", b"accept"})


async def count_input_tokens(
    mw: ResponsesMiddleware, scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer one ``POST {path_prefix}/responses/input_tokens``."""
    settings = mw.settings
    try:
        body = await read_json_body(scope, receive, settings.max_request_bytes)
        if body is None:
            return  # the client left
        # The SDK's count() takes no stream or store; the request is otherwise a create's.
        body = {k: v for k, v in body.items() if k not in ("stream", "store", "background")}
        request = parse_request_body(orjson.dumps(body), settings)
        tenant = tenant_key(scope, settings)
        expanded, _ = await mw.gateway.expand(scope, request)
        chat = _translate(expanded, settings, validated=False, tenant=tenant)
    except RequestError as exc:
        await send_json(send, exc.status_code, exc.body())
        return
    question = {"model": chat.get("model"), "messages": chat["messages"]}
    if chat.get("tools"):
        question["tools"] = chat["tools"]
    data = orjson.dumps(question)
    path = scope.get("root_path", "") + TOKENIZE_PATH
    inner = dict(scope)
    inner["path"] = path
    inner["raw_path"] = path.encode("utf-8")
    inner["query_string"] = b""
    inner["headers"] = [
        *((k, v) for k, v in scope["headers"] if k not in _DROP),
        _JSON_TYPE,
        (b"content-length", str(len(data)).encode("ascii")),
    ]
    delivered = False

    async def inner_receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": data, "more_body": False}
        return await receive()

    answer = _Captured()
    await mw.app(inner, inner_receive, answer.send)
    count = _count(answer)
    if count is None:
        message = (
            f"The backend cannot count tokens: POST {TOKENIZE_PATH} answered HTTP "
            f"{answer.status or 'nothing'}. Counting needs a backend with a tokenizer "
            "endpoint there (vLLM, SGLang)."
        )
        error = {
            "message": message,
            "type": "server_error",
            "param": None,
            "code": "input_tokens_unsupported",
        }
        await send_json(send, 501, {"error": error})
        return
    await send_json(send, 200, {"object": "response.input_tokens", "input_tokens": count})


def _count(answer: _Captured) -> int | None:
    if answer.status != 200:
        return None
    try:
        body: Any = orjson.loads(answer.body())
    except orjson.JSONDecodeError:
        return None
    count = body.get("count") if isinstance(body, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


class _Captured:
    """An HTTP ``send`` that keeps what the wrapped app answered."""

    __slots__ = ("parts", "status")

    def __init__(self) -> None:
        self.status = 0
        self.parts: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.parts.append(message.get("body", b""))

    def body(self) -> bytes:
        return b"".join(self.parts)
