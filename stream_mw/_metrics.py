"""Prometheus metrics (``Settings.metrics``), served as text on ``GET {metrics_path}``.

Imported only when the setting is on: with metrics off the middleware holds ``None`` where a
``Metrics`` would be and pays one ``is None`` test per finished request.

Everything is fed from the end of a request (the same ``ResponseRecord`` observers get), plus
three places only the middleware sees: the first output of a stream (time to first token),
streams opening and closing (a gauge), and keep-alives. Under ``--workers`` (uvicorn's
separate processes) ``prometheus_client``'s multiprocess mode shares the values through files
in ``PROMETHEUS_MULTIPROC_DIR``, which must be set before ``prometheus_client`` is first
imported; each scrape then reads every worker's files, and the streams-open gauge counts
live workers only (``livesum``).

Label values are bounded: ``model`` is what clients send, so it is clipped, and ``route`` is a
route template, never a path with an id in it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

from ._errors import ConfigurationError
from ._observe import ResponseRecord

__all__ = ["Metrics"]

_MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# Longer model names are cut: a label value is kept forever by every scraper.
_MAX_MODEL_LABEL: Final = 100
# Seconds. The first token of a local model comes in tens of milliseconds, a long prompt's in
# tens of seconds; whole responses run from under a second to the 300 s read timeout.
_TTFT_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Failures that are not the upstream's: the client left, or the server is stopping.
_NOT_UPSTREAM: Final = frozenset({"client_disconnected", "server_shutting_down"})


class Metrics:
    """The gateway's Prometheus metrics, in a registry of their own (several middlewares in
    one process do not collide in ``prometheus_client``'s global registry)."""

    def __init__(self) -> None:
        try:
            import prometheus_client
        except ImportError:
            raise ConfigurationError(
                "metrics needs prometheus-client: pip install 'stream-mw[metrics]'"
            ) from None
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self._client = prometheus_client
        self.multiprocess = bool(os.environ.get(_MULTIPROC_ENV))
        registry = self._registry = CollectorRegistry()
        self.requests = Counter(
            "stream_mw_requests",
            "Responses API requests answered, by route, HTTP status and model.",
            ("route", "status", "model"),
            registry=registry,
        )
        self.tokens = Counter(
            "stream_mw_tokens",
            "Tokens the upstream reported, by kind (input, output, cached, reasoning) and model.",
            ("kind", "model"),
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "stream_mw_time_to_first_token_seconds",
            "Seconds from a streamed request arriving to its first output event.",
            ("model",),
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "stream_mw_response_duration_seconds",
            "Seconds from a request arriving to the last byte of its answer.",
            ("model", "status"),
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.streams_open = Gauge(
            "stream_mw_streams_open",
            "Response streams being sent to clients now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.upstream_errors = Counter(
            "stream_mw_upstream_errors",
            "Responses that failed because of the upstream, by error code.",
            ("kind",),
            registry=registry,
        )
        self.keepalives = Counter(
            "stream_mw_keepalives",
            "Keep-alive events sent during upstream silence.",
            registry=registry,
        )

    def observe(
        self, record: ResponseRecord, route: str | None, first_output: float | None
    ) -> None:
        """Count one finished response (``first_output``: seconds to the first output event
        of a stream, when there was one) as a request on ``route``, unless it is ``None``
        (the response is part of a request counted on its own route)."""
        model = _model_label(record.model)
        if route is not None:
            self.requests.labels(route, str(record.http_status), model).inc()
        self.duration.labels(model, record.status).observe(record.duration)
        if first_output is not None:
            self.time_to_first_token.labels(model).observe(first_output)
        if record.usage is not None:
            for kind, count in _token_counts(record.usage):
                self.tokens.labels(kind, model).inc(count)
        error = record.error
        if record.status == "failed" and error is not None:
            code = str(error.get("code") or "server_error")
            if code not in _NOT_UPSTREAM:
                self.upstream_errors.labels(code).inc()

    def count_request(self, route: str, status: int) -> None:
        """Count a request on a route that runs no response (stored responses,
        conversations, cancel, a resumed stream, counting tokens, a compaction's answer)."""
        self.requests.labels(route, str(status), "").inc()

    def exposition(self) -> bytes:
        """The current values in Prometheus' text format (every worker's, in multiprocess
        mode)."""
        if not self.multiprocess:
            return bytes(self._client.generate_latest(self._registry))
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return bytes(self._client.generate_latest(registry))

    def close(self) -> None:
        """At shutdown, in multiprocess mode: this process's streams leave the live gauge."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _model_label(model: str | None) -> str:
    return (model or "")[:_MAX_MODEL_LABEL]


def _token_counts(usage: Mapping[str, Any]) -> list[tuple[str, int]]:
    counts = [
        ("input", usage.get("input_tokens")),
        ("output", usage.get("output_tokens")),
        ("cached", _detail(usage, "input_tokens_details", "cached_tokens")),
        ("reasoning", _detail(usage, "output_tokens_details", "reasoning_tokens")),
    ]
    return [
        (kind, n) for kind, n in counts if isinstance(n, int) and not isinstance(n, bool) and n > 0
    ]


def _detail(usage: Mapping[str, Any], section: str, name: str) -> Any:
    details = usage.get(section)
    return details.get(name) if isinstance(details, Mapping) else None
