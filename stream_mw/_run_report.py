"""A run's report: one ``ResponseRecord`` per response, to the log line, the metrics, the
trace and the observer.

Each run reports exactly once, whichever way it ended (``run.reported`` guards it), and only
builds the record when someone would see it: with no observer, no metrics, no tracer and the
access log off, a report costs one check.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ._observe import REQUEST_LOG_MESSAGE, ResponseRecord, access_logger, notify_observer

if TYPE_CHECKING:
    from ._run import ResponseRun

__all__ = ["report", "report_response"]


async def report_response(run: ResponseRun, response: dict[str, Any]) -> None:
    """Report a response that reached the client (one that left is reported as such)."""
    if not run.disconnected:
        await report(run, str(response.get("status") or "completed"), response=response)


async def report(
    run: ResponseRun,
    status: str,
    *,
    response: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    """Report the run as ``status``, with its ``response`` or only its ``error``."""
    if run.reported:
        return
    run.reported = True
    mw = run.mw
    observer = mw._on_response
    log = access_logger.isEnabledFor(logging.INFO)
    metrics, tracer = mw.metrics, mw.tracer
    if observer is None and not log and metrics is None and tracer is None:
        return  # nobody would see the record
    usage = None
    model = run.request.get("model")
    if response is not None:
        usage = response.get("usage")
        model = response.get("model") or model
        error = error or response.get("error")
    record = ResponseRecord(
        response_id=run.response_id,
        model=model if isinstance(model, str) else None,
        status=status,
        stream=run.stream,
        usage=usage if isinstance(usage, dict) else None,
        duration=time.perf_counter() - run.started_at,
        http_status=run.http_status,
        error=error,
        request_id=run.request_id[1].decode("ascii"),
    )
    if log:
        access_logger.info(REQUEST_LOG_MESSAGE, record.log_fields("POST", run.scope["path"]))
    if metrics is not None:
        first = run.first_output_at
        metrics.observe(
            record,
            run.route,
            first - run.started_at if first and run.stream else None,
        )
    if tracer is not None:
        ended = time.time_ns()
        tracer.record(record, run.request, ended - int(record.duration * 1e9), ended)
    await notify_observer(observer, record)
