"""What the middleware tells the outside world about each response: observers and the log line.

One ``ResponseRecord`` is built per finished Responses request, streamed or not, whatever the
outcome. It is passed to ``Settings.on_response`` (for metering tokens or custom logging) and
rendered as the one INFO line per request on the ``stream_mw`` logger. Per-event detail is
logged at DEBUG only: an INFO line per chunk would cost more than the translation itself.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REQUEST_LOG_MESSAGE",
    "UNAUTHORIZED_LOG_MESSAGE",
    "JsonFormatter",
    "ResponseRecord",
    "access_logger",
    "logger",
    "notify_observer",
]

logger = logging.getLogger("stream_mw")
#: The one line per request, on a logger of its own so that it can be turned off (the
#: gateway's ``--no-access-log``) without silencing warnings.
access_logger = logging.getLogger("stream_mw.access")

#: The INFO line logged once per Responses request. Tests import it to find the line.
REQUEST_LOG_MESSAGE = (
    "%(method)s %(path)s %(http_status)s response=%(response_id)s model=%(model)s "
    "status=%(status)s stream=%(stream)s input_tokens=%(input_tokens)s "
    "output_tokens=%(output_tokens)s duration_ms=%(duration_ms).1f error=%(error_code)s "
    "request_id=%(request_id)s"
)
#: The INFO line for a Responses request refused for a missing or wrong client key.
UNAUTHORIZED_LOG_MESSAGE = "%(method)s %(path)s 401 error=invalid_api_key request_id=%(request_id)s"


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
    #: The ``x-request-id`` sent with the response.
    request_id: str | None = None

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
            "request_id": self.request_id,
        }


class JsonFormatter(logging.Formatter):
    # UTC timestamps: a pipeline joins lines from machines in different time zones.
    converter = time.gmtime  # type: ignore[assignment]

    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, and the fields
    of a record logged with a mapping of arguments (the request line: ``request_id``,
    ``model``, ``input_tokens``...), so a log pipeline needs no parsing rules.

    Use it in a logging configuration as ``{"()": "stream_mw.cli.JsonFormatter"}`` (the
    gateway's ``--log-format json``).
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if isinstance(record.args, Mapping):
            for key, value in record.args.items():
                entry.setdefault(str(key), value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


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
