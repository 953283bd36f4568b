"""Chat Completions from any LiteLLM provider, as an ASGI app (extra ``stream-mw[litellm]``).

``LiteLLMApp("anthropic/claude-sonnet-4-5")`` serves ``POST /v1/chat/completions`` by calling
``litellm.acompletion`` and writing real ``chat.completion.chunk`` SSE, so any of LiteLLM's
providers can sit behind ``ResponsesMiddleware``::

    app = ResponsesMiddleware(LiteLLMApp("ollama_chat/llama3.1", api_base="http://localhost:11434"))

- The request body is passed to ``litellm.acompletion`` as is (``messages``, ``tools``,
  ``temperature``, ``stream_options``, ...), with ``drop_params=True`` so parameters a
  provider does not support are dropped rather than refused. ``model``, when given here,
  replaces the client's model; keyword arguments given here (``api_key``, ``api_base``,
  ``mock_response``, ...) are added to every call.
- A LiteLLM exception raised before the first chunk becomes an OpenAI-shaped error with the
  exception's HTTP status (``ContextWindowExceededError`` → 400 ``context_length_exceeded``,
  ``RateLimitError`` → 429 ...). One raised mid-stream becomes an in-band
  ``data: {"error": ...}`` event, which the middleware turns into ``response.failed``.
- When the client goes away the LiteLLM stream is closed, which closes the provider request.

``litellm`` is imported when this module is; ``LITELLM_LOCAL_MODEL_COST_MAP`` is set first
(unless already set) so the import does not try to download a cost map.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import orjson
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from .._errors import error_body
from ._asgi import send_json, serve_lifespan

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # after the environment variable above: the import reads it

__all__ = ["LiteLLMApp", "error_from_exception"]

logger = logging.getLogger("stream_mw")

# LiteLLM prints "Give Feedback / Get Help" banners to stdout on every exception.
litellm.suppress_debug_info = True

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
]

# LiteLLM exception class name → (OpenAI error type, code). The HTTP status comes from the
# exception's own ``status_code``.
_ERROR_KINDS: dict[str, tuple[str, str | None]] = {
    "ContextWindowExceededError": ("invalid_request_error", "context_length_exceeded"),
    "ContentPolicyViolationError": ("invalid_request_error", "content_policy_violation"),
    "BadRequestError": ("invalid_request_error", None),
    "UnprocessableEntityError": ("invalid_request_error", None),
    "AuthenticationError": ("authentication_error", "invalid_api_key"),
    "PermissionDeniedError": ("permission_error", None),
    "NotFoundError": ("not_found_error", "model_not_found"),
    "RateLimitError": ("rate_limit_error", "rate_limit_exceeded"),
    "Timeout": ("server_error", "timeout"),
    "APIConnectionError": ("server_error", "upstream_unreachable"),
    "ServiceUnavailableError": ("server_error", "server_is_overloaded"),
    "InternalServerError": ("server_error", None),
}


def error_from_exception(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The HTTP status and OpenAI error body for a LiteLLM (or any) exception."""
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or not 400 <= status <= 599:
        status = 500
    error_type, code = "server_error", None
    for cls in type(exc).__mro__:
        if cls.__name__ in _ERROR_KINDS:
            error_type, code = _ERROR_KINDS[cls.__name__]
            break
    if code == "upstream_unreachable":
        status = 502
    elif code == "timeout":
        status = 504
    message = str(exc).strip() or type(exc).__name__
    return status, error_body(message, error_type, code=code)


class LiteLLMApp:
    """An ASGI app answering Chat Completions requests with ``litellm.acompletion``.

    Args:
        model: The LiteLLM model (``"openai/gpt-4o-mini"``, ``"ollama_chat/llama3.1"``);
            replaces the client's ``model``. ``None`` uses the client's.
        drop_params: Drop parameters the provider does not support instead of failing.
        **completion_kwargs: Passed to every ``litellm.acompletion`` call (``api_key``,
            ``api_base``, ``num_retries``, ``mock_response``, ...).
    """

    def __init__(
        self, model: str | None = None, *, drop_params: bool = True, **completion_kwargs: Any
    ) -> None:
        self._model = model
        self._kwargs: dict[str, Any] = {"drop_params": drop_params, **completion_kwargs}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.endswith("/chat/completions") and method == "POST":
            await self._chat(scope, receive, send)
        elif path.endswith("/models") and method == "GET":
            models = [self._model] if self._model else []
            await send_json(
                send,
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "litellm"}
                        for m in models
                    ],
                },
            )
        else:
            message = f"the LiteLLM app does not serve {method} {path}"
            await send_json(send, 404, error_body(message, "invalid_request_error"))

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await Request(scope, receive).body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            await send_json(send, 400, error_body(f"invalid JSON: {exc}", "invalid_request_error"))
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            message = "the body must be a JSON object with a messages list"
            await send_json(send, 400, error_body(message, "invalid_request_error"))
            return
        kwargs = {**body, **self._kwargs}
        if self._model is not None:
            kwargs["model"] = self._model
        stream = bool(kwargs.get("stream"))
        try:
            result = await litellm.acompletion(**kwargs)
            if not stream:
                await send_json(send, 200, _dump(result))
                return
            # The first chunk is awaited before answering: most provider errors surface only
            # when the stream is first read, and before a byte is sent they keep their status.
            chunks: AsyncIterator[Any] = result.__aiter__()
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = None
        except Exception as exc:
            logger.warning("LiteLLM call failed: %s", exc)
            status, error = error_from_exception(exc)
            await send_json(send, status, error)
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_cancel_on_disconnect, receive, tasks.cancel_scope)
                await self._relay(first, chunks, send)
                tasks.cancel_scope.cancel()
        finally:
            aclose = getattr(result, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def _relay(self, first: Any, chunks: AsyncIterator[Any], send: Send) -> None:
        try:
            if first is not None:
                await _send_event(send, _dump(first))
                async for chunk in chunks:
                    await _send_event(send, _dump(chunk))
        except Exception as exc:
            logger.warning("LiteLLM stream failed: %s", exc)
            _, error = error_from_exception(exc)
            await _send_event(send, error)
        else:
            await send(
                {"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _dump(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    data: dict[str, Any] = obj.model_dump(exclude_none=True, warnings=False)
    return data


async def _send_event(send: Send, data: Mapping[str, Any]) -> None:
    body = b"data: " + orjson.dumps(data, default=str) + b"\n\n"
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
