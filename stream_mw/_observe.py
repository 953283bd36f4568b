"""What the middleware tells the outside world about each response: observers and the log line.

One ``ResponseRecord`` is built per finished Responses request, streamed or not, whatever the
outcome. It is passed to ``Settings.on_response`` (for metering tokens or custom logging) and
rendered as the one INFO line per request on the ``stream_mw`` logger. Per-event detail is
logged at DEBUG only: an INFO line per chunk would cost more than the translation itself.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["REQUEST_LOG_MESSAGE", "ResponseRecord", "logger", "notify_observer"]

logger = logging.getLogger("stream_mw")

#: The INFO line logged once per Responses request. Tests import it to find the line.
REQUEST_LOG_MESSAGE = (
    "%(method)s %(path)s %(http_status)s response=%(response_id)s model=%(model)s "
    "status=%(status)s stream=%(stream)s input_tokens=%(input_tokens)s "
    "output_tokens=%(output_tokens)s duration_ms=%(duration_ms).1f error=%(error_code)s"
)


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """One finished response, as observers see it."""

    #: The ``resp_...`` id sent to the client.
    response_id: str
    #: The model the client asked for (or the upstream reported).
    model: str | None
    #: ``completed``, ``incomplete`` or ``failed``.
    status: str
    #: Whether the client asked for a stream.
    stream: bool
    #: Usage exactly as the upstream reported it, in Responses shape, or ``None``.
    usage: Mapping[str, Any] | None
    #: Seconds from the request arriving to the last byte sent.
    duration: float
    #: HTTP status sent to the client.
    http_status: int
    #: ``{"code", "message"}`` when the response failed, else ``None``.
    error: Mapping[str, Any] | None = None

    def log_fields(self, method: str, path: str) -> dict[str, Any]:
        """The fields of ``REQUEST_LOG_MESSAGE``; never includes headers or credentials."""
        usage = self.usage or {}
        return {
            "method": method,
            "path": path,
            "http_status": self.http_status,
            "response_id": self.response_id,
            "model": self.model,
            "status": self.status,
            "stream": self.stream,
            "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens"),
            "duration_ms": self.duration * 1000.0,
            "error_code": (self.error or {}).get("code"),
        }


async def notify_observer(observer: Any, record: ResponseRecord) -> None:
    """Call ``Settings.on_response``; an observer's failure is logged, never propagated."""
    if observer is None:
        return
    try:
        result = observer(record)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("on_response observer failed for %s", record.response_id)
