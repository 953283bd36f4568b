"""What the wrapped app answered, read: its error bodies, its status codes, a completion as a stream.

Pure functions over bytes and dicts, used by the run (``_run``) and its callers.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from starlette.types import Receive, Scope, Send

from ._errors import (
    RequestTooLargeError,
    UpstreamProtocolError,
    classify_upstream_error,
    error_body,
)

__all__ = [
    "CODE_STATUS",
    "completion_as_sse",
    "no_generation",
    "parse_completion",
    "parse_error_body",
    "status_error_type",
    "too_large",
    "upstream_error_answer",
]

_MAX_ERROR_MESSAGE: Final = 2000

CODE_STATUS: Final = {
    "context_length_exceeded": 400,
    "invalid_prompt": 400,
    "invalid_api_key": 401,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_shutting_down": 503,
}
_STATUS_TYPE: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


def too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"The request body is larger than the server's limit of {limit} bytes (max_request_bytes).",
        code="request_too_large",
    )


def status_error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return _STATUS_TYPE.get(status, "invalid_request_error")


def parse_error_body(raw: bytes, status: int) -> tuple[str, Any, Any, str | None]:
    """``(message, type, code, param)`` from an upstream error body in any common shape:
    OpenAI ``{"error": {...}}``, ``{"error": "..."}``, FastAPI ``{"detail": ...}``, vLLM's
    flat ``{"message", "type", "code"}``, or plain text."""
    text = raw.decode("utf-8", "replace").strip()
    message: Any = None
    error_type: Any = None
    code: Any = None
    param: Any = None
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        source = error if isinstance(error, dict) else data
        message = source.get("message")
        if message is None and isinstance(error, str):
            message = error
        if message is None and "detail" in data:
            message = data["detail"]
        error_type, code, param = source.get("type"), source.get("code"), source.get("param")
    elif isinstance(data, str):
        message = data
    if message is not None and not isinstance(message, str):
        message = orjson.dumps(message).decode()
    if not message:
        message = text or f"The upstream answered HTTP {status} with an empty body."
    if len(message) > _MAX_ERROR_MESSAGE:
        message = message[:_MAX_ERROR_MESSAGE] + "..."
    return message, error_type, code, param if isinstance(param, str) else None


async def no_generation(scope: Scope, receive: Receive, send: Send) -> None:
    """A Chat backend that answers every request with an empty, finished stream."""
    chunk = {"object": "chat.completion.chunk", "choices": [_EMPTY_CHOICE]}
    body = b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


_EMPTY_CHOICE: Final = {"index": 0, "delta": {"role": "assistant"}, "finish_reason": "stop"}


def completion_as_sse(completion: dict[str, Any]) -> bytes:
    """A ``chat.completion`` as the equivalent one-chunk Chat Completions stream."""
    choices = []
    for position, choice in enumerate(completion.get("choices") or ()):
        if not isinstance(choice, dict):
            continue
        delta = dict(choice.get("message") or {})
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            delta["tool_calls"] = [
                {**call, "index": index} if isinstance(call, dict) else call
                for index, call in enumerate(calls)
            ]
        choices.append(
            {
                "index": choice.get("index", position),
                "delta": delta,
                "finish_reason": choice.get("finish_reason"),
                "logprobs": choice.get("logprobs"),
            }
        )
    chunk = {**completion, "object": "chat.completion.chunk", "choices": choices}
    return b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"


def parse_completion(body: bytes, status: int) -> Any:
    """The upstream's JSON answer (HTTP ``status``), parsed.

    Raises:
        UpstreamProtocolError: the body was cut off, or is not JSON.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if body.lstrip()[:1] in (b"{", b"[") and exc.pos >= len(body):
            # Valid up to its last byte: the body was cut off (a lost connection), not
            # something other than JSON.
            raise UpstreamProtocolError(
                f"The upstream answered HTTP {status} with a JSON body "
                f"that ended before it was complete (after {len(body)} bytes)."
            ) from None
        raise UpstreamProtocolError(
            f"The upstream answered HTTP {status} with a body that is "
            "neither JSON nor an event stream."
        ) from None


def upstream_error_answer(status: int, raw: bytes) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """What the client is answered for an upstream's HTTP error: ``(status, body, error)``,
    the upstream's status (502 for a non-error one) and an OpenAI-shaped body keeping its
    message, with ``error`` (its code and message) for the report."""
    message, error_type, code, param = parse_error_body(raw, status)
    classified = classify_upstream_error(
        status_code=status, code=code, error_type=error_type, message=message
    )
    if classified == "context_length_exceeded" or not isinstance(code, str) or not code:
        code = classified
    out_status = status if status >= 400 else 502
    if not isinstance(error_type, str) or not error_type:
        error_type = status_error_type(out_status)
    body = error_body(message, error_type, param=param, code=code)
    return out_status, body, {"code": code, "message": message}
