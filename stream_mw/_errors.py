"""The exception hierarchy and OpenAI-shaped error bodies.

::

    StreamMWError
     ├── ConfigurationError            a Settings field is invalid (also a ValueError)
     ├── RequestError                  the request cannot be served; carries the HTTP status
     │    ├── InvalidRequestError      400: bad JSON, wrong types, unknown items, ...
     │    ├── NotFoundError            404: unknown, expired or foreign response id
     │    ├── MethodNotAllowedError    405: a Responses route asked with the wrong method
     │    ├── RequestTooLargeError     413: body over ``max_request_bytes``
     │    └── StoreUnavailableError    503: the response store could not be read
     └── UpstreamError                 the app behind the middleware failed or reported an error
          ├── UpstreamProtocolError    malformed SSE or JSON, an event or argument over its limit
          └── UpstreamReportedError    the upstream said so (in-band error, non-2xx status)

Inside the package only these types are raised on purpose. The one place that turns them
into wire bytes is the boundary: ``RequestError.body()`` for an HTTP error reply before a
stream began, and the converter's ``close(error)`` (``response.failed``) after it began.
Every ``UpstreamError`` carries ``code``, the Responses error code clients act on
(``responses-protocol.md`` §9.2): Codex stops retrying on ``context_length_exceeded`` and
``invalid_prompt``, and backs off on ``rate_limit_exceeded`` when the message says
"try again in N s".
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "GATEWAY_FAILURE_CODES",
    "ConfigurationError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "NotFoundError",
    "RequestError",
    "RequestTooLargeError",
    "StoreUnavailableError",
    "StreamMWError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamReportedError",
    "classify_upstream_error",
    "clip",
    "error_body",
]


class StreamMWError(Exception):
    """Base class of every error stream_mw raises on purpose."""


class ConfigurationError(StreamMWError, ValueError):
    """A setting is invalid. The message names the field and what it accepts."""


class RequestError(StreamMWError):
    """The client's request cannot be served. Rendered as an OpenAI-shaped JSON error.

    Args:
        message: What went wrong and, where possible, what to do about it.
        param: The request field at fault (a dotted path such as ``input[2].content``), if any.
        code: A machine-readable code, if any.
    """

    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` body OpenAI clients parse."""
        return error_body(self.message, self.error_type, param=self.param, code=self.code)


class InvalidRequestError(RequestError):
    """400: the request body is not a valid Responses request."""


class NotFoundError(RequestError):
    """404: the response id is unknown, expired or belongs to another tenant."""

    status_code = 404
    error_type = "not_found_error"


class MethodNotAllowedError(RequestError):
    """405: a Responses route was asked with a method it does not serve.

    Args:
        method: The method used.
        path: The path, as it may be quoted (clipped).
        allowed: The ``Allow`` header value: the methods the route serves.
    """

    status_code = 405

    def __init__(self, method: str, path: str, allowed: str) -> None:
        super().__init__(
            f"Method {method} is not allowed on {path}; it serves {allowed}.",
            code="method_not_allowed",
        )
        self.allowed = allowed


class RequestTooLargeError(RequestError):
    """413: the request body is larger than ``Settings.max_request_bytes``."""

    status_code = 413


class StoreUnavailableError(RequestError):
    """503: the response store could not be read. Retrying later may succeed."""

    status_code = 503
    error_type = "server_error"


class UpstreamError(StreamMWError):
    """The app behind the middleware failed.

    Args:
        message: Human-readable description, passed to the client in ``response.error``.
        code: The Responses error code to report (see the module docstring).
        status_code: The HTTP status the upstream answered with, when there was one.
    """

    def __init__(self, message: str, *, code: str = "server_error", status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code


class UpstreamProtocolError(UpstreamError):
    """The upstream's body broke the Chat Completions streaming protocol."""


class UpstreamReportedError(UpstreamError):
    """The upstream reported an error itself, in-band or as a non-2xx status."""


#: Error codes the gateway's own transport (``ProxyApp``) answers with when it fails to reach
#: or read the upstream; an in-band error carrying one is the gateway's failure, not a report
#: from the upstream.
GATEWAY_FAILURE_CODES = frozenset(
    {"upstream_unreachable", "upstream_timeout", "upstream_broke_off"}
)

#: Longest client-supplied value (an id, a path) quoted whole in an error message.
_MAX_QUOTED: int = 64


def clip(value: str, limit: int = _MAX_QUOTED) -> str:
    """``value`` as quoted in an error message: cut to ``limit`` characters and marked so.

    Ids come from the client; quoting a 100 KB one back whole makes every error as large as
    the request that caused it.
    """
    return value if len(value) <= limit else value[:limit] + "…"


def error_body(
    message: str,
    error_type: str,
    *,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """Build OpenAI's error envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


# Phrases backends use for "the prompt does not fit". vLLM: "maximum context length";
# llama.cpp: "exceeds the available context size"; Ollama/others: "context window",
# "context length"; Anthropic via LiteLLM: "prompt is too long".
_CONTEXT_LENGTH = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|prompt is too long|too many tokens",
    re.IGNORECASE,
)
_RATE_LIMIT = re.compile(r"rate[ _-]?limit|too many requests|quota", re.IGNORECASE)


def classify_upstream_error(
    *,
    status_code: int | None = None,
    code: object = None,
    error_type: object = None,
    message: str = "",
) -> str:
    """Choose the Responses error code for an upstream failure.

    Precedence: an explicit context-length signal, then rate limiting, then a rejected key
    (401), then the status class (other 4xx are the client's fault and must not be retried),
    then ``server_error``.
    """
    hints = " ".join(str(x) for x in (code, error_type) if x)
    if "context_length_exceeded" in hints or _CONTEXT_LENGTH.search(message):
        return "context_length_exceeded"
    if status_code == 429 or _RATE_LIMIT.search(hints) or _RATE_LIMIT.search(message):
        return "rate_limit_exceeded"
    if status_code == 401:
        # OpenAI's code for a rejected key; a client shows it as an authentication problem
        # instead of blaming the prompt.
        return "invalid_api_key"
    if status_code is not None and 400 <= status_code < 500:
        return "invalid_prompt"
    if "invalid_request" in hints:
        return "invalid_prompt"
    return "server_error"
