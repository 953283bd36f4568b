"""OpenTelemetry traces (``Settings.traces``): one span per response.

Imported only when the setting is on. It needs only ``opentelemetry-api``; where the spans go
is the application's choice (a ``TracerProvider`` set up by the OpenTelemetry SDK or
``opentelemetry-instrument``); without one, the API's no-op tracer costs next to nothing.

The span follows the GenAI semantic conventions for a model call: kind ``CLIENT``, named
``chat {model}``, with ``gen_ai.operation.name``, ``gen_ai.request.model``, the request's
sampling parameters, ``gen_ai.response.id``, ``gen_ai.response.model``,
``gen_ai.response.finish_reasons`` and ``gen_ai.usage.*``; a failed response sets
``error.type`` to its error code and the span's status to error. It is recorded when the
response ends, with the request's arrival as its start, in the request's context, so a
span of the server's own instrumentation (the OpenTelemetry ASGI middleware) is its parent.
No prompt or output text is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ._errors import ConfigurationError
from ._observe import ResponseRecord

__all__ = ["Tracer"]

_OPERATION: Final = "chat"
#: Responses request fields recorded, with their attribute names.
_REQUEST_ATTRIBUTES: Final = (
    ("max_output_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
)
#: A response's status as the finish reason the conventions name (OpenAI's words).
_FINISH_REASONS: Final = {"completed": "stop", "incomplete": "length", "failed": "error"}


class Tracer:
    """Records one span per response on the ``stream_mw`` tracer."""

    def __init__(self) -> None:
        try:
            from opentelemetry import trace
        except ImportError:
            raise ConfigurationError(
                "traces needs opentelemetry-api: pip install 'stream-mw[otel]'"
            ) from None
        from . import __version__

        self._trace = trace
        self._kind = trace.SpanKind.CLIENT
        self._tracer = trace.get_tracer("stream_mw", __version__)

    def record(
        self, record: ResponseRecord, request: Mapping[str, Any], started_ns: int, ended_ns: int
    ) -> None:
        """Record the span of one finished response (times in ``time.time_ns()``)."""
        model = record.model or request.get("model")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": _OPERATION,
            "gen_ai.response.id": record.response_id,
            "http.response.status_code": record.http_status,
        }
        requested = request.get("model")
        if isinstance(requested, str):
            attributes["gen_ai.request.model"] = requested
        if isinstance(model, str):
            attributes["gen_ai.response.model"] = model
        for field, name in _REQUEST_ATTRIBUTES:
            value = request.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attributes[name] = value
        reason = _FINISH_REASONS.get(record.status)
        if reason is not None:
            attributes["gen_ai.response.finish_reasons"] = (reason,)
        usage = record.usage or {}
        for name in ("input_tokens", "output_tokens"):
            count = usage.get(name)
            if isinstance(count, int):
                attributes[f"gen_ai.usage.{name}"] = count
        if record.request_id is not None:
            attributes["stream_mw.request_id"] = record.request_id
        failed = record.status == "failed"
        if failed:
            attributes["error.type"] = str((record.error or {}).get("code") or "server_error")
        name = f"{_OPERATION} {requested}" if isinstance(requested, str) else _OPERATION
        span = self._tracer.start_span(
            name, kind=self._kind, attributes=attributes, start_time=started_ns
        )
        if failed:
            message = (record.error or {}).get("message")
            span.set_status(
                self._trace.Status(self._trace.StatusCode.ERROR, str(message or "failed"))
            )
        span.end(end_time=ended_ns)
