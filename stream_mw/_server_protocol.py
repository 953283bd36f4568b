"""Bounds on what a client can make ``stream-mw serve`` hold before its request reaches the app.

uvicorn's httptools protocol (what it picks when httptools is installed, and the fastest)
sets no limit on a request head: httptools gathers a header in memory until its end, so one
unfinished 200 MB header grew the gateway by 280 MB, and a 16 MB header was forwarded
upstream. Nor is there a time limit on sending the head: ``timeout_keep_alive`` only runs
between two requests, so a connection that sends nothing, or a byte now and then, stays open
for good (1,500 of them exhausted a 512 file-descriptor limit and real requests failed).
uvicorn's h11 protocol bounds the head's size (``h11_max_incomplete_event_size``) but not
its time, and parses bodies several times slower.

``GuardedHttpToolsProtocol`` is uvicorn's httptools protocol with three bounds, as a reverse
proxy in front of the gateway would set them (nginx's ``client_header_timeout`` and
``large_client_header_buffers``, Apache's ``LimitRequestFields``):

- **Head size and field count.** Past ``max_header_bytes`` (the request target and the
  header fields, with 4 bytes of framing each) or ``max_headers`` fields the client gets a ``431`` and the connection is closed; the app
  never sees the request. An unfinished head is measured by the bytes received while it is
  incomplete, so it is refused as soon as it outgrows the limit.
- **Head time.** A head must arrive whole within ``header_timeout`` seconds of the connection
  opening, or of its first byte on a kept-alive connection; otherwise ``408`` and close (a
  connection that sent nothing is closed without an answer).
- **Connections.** Beyond ``max_connections`` open at once a new connection gets a ``503``
  and is closed, so slow clients cannot take the file descriptors that requests in progress
  need for their upstream connections.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ._errors import error_body

__all__ = ["ClientLimits", "GuardedHttpToolsProtocol"]

logger = logging.getLogger("stream_mw")

# File descriptors kept back from the client-connection cap when it is derived from the
# process's limit: ProxyApp's upstream pool (100 by default), plus stores, logs and spares.
_RESERVED_FDS = 160
_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True)
class ClientLimits:
    """Bounds on client connections and request heads, for ``GuardedHttpToolsProtocol``."""

    #: Bytes a request head may take: the request line and every header.
    max_header_bytes: int = 64 * 1024
    #: Header fields a request may have.
    max_headers: int = 100
    #: Seconds a client has to send a whole request head.
    header_timeout: float = 10.0
    #: Client connections open at once; ``None``: the open-file limit less a reserve.
    max_connections: int | None = None

    def __post_init__(self) -> None:
        if self.max_header_bytes < 1 or self.max_headers < 1:
            raise ValueError("max_header_bytes and max_headers must be at least 1")
        if self.header_timeout <= 0:
            raise ValueError("header_timeout must be a positive number of seconds")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")

    @functools.cached_property
    def connection_cap(self) -> int:
        """``max_connections``, or what the process's open-file limit leaves for clients."""
        if self.max_connections is not None:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return 1 << 20
        return max(16, soft - _RESERVED_FDS)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounding request heads and open connections.

    uvicorn builds one per connection with ``config``, ``server_state`` and ``app_state``;
    pass ``functools.partial(GuardedHttpToolsProtocol, limits=...)`` as ``Config(http=...)``.
    """

    def __init__(self, *args: Any, limits: ClientLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._cap = limits.connection_cap
        # True while the next bytes belong to a request head; they are counted.
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self._cap:
            self.transport = transport
            self._refuse(503, f"the server has {self._cap} connections open, its limit")
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # A head still unfinished is judged by the bytes it took so far (httptools holds
        # an unfinished header whole); one that ended is measured exactly when it ends.
        if (
            self._awaiting_head
            and self._head_bytes > self._limits.max_header_bytes
            and not self._refused
            and not self.transport.is_closing()  # uvicorn answered a parse error itself
        ):
            self._refuse(431, f"the request head is over {self._limits.max_header_bytes} bytes")

    # httptools callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._awaiting_head = False
        self._cancel_head_timer()
        problem = self._head_problem()
        if problem is not None:
            self._refuse(431, problem)
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._awaiting_head = True
        self._head_bytes = 0
        super().on_message_complete()

    # bounds

    def _head_problem(self) -> str | None:
        limits = self._limits
        if len(self.headers) > limits.max_headers:
            return f"the request has more than {limits.max_headers} header fields"
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > limits.max_header_bytes:
            return f"the request head is over {limits.max_header_bytes} bytes"
        return None

    def _arm_head_timer(self) -> None:
        if self._head_timer is None and not self._refused:
            self._head_timer = self.loop.call_later(
                self._limits.header_timeout, self._head_timed_out
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or not self._awaiting_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head dribbling in behind a response still being sent: that
            # response finishes, then the connection closes.
            self.cycle.keep_alive = False
            return
        if self._head_bytes == 0:
            # Nothing sent at all (a browser's speculative pre-connection, say): closed
            # without an answer or a warning, as nginx does.
            self._refused = True
            self.transport.close()
            return
        self._refuse(408, f"the request head did not arrive within {self._limits.header_timeout} s")

    def _refuse(self, status: int, message: str) -> None:
        self._refused = True
        self._cancel_head_timer()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.warning("refused %s with %d: %s", client, status, message)
        code = {408: "request_timeout", 431: "request_header_fields_too_large"}.get(
            status, "server_overloaded"
        )
        error_type = "server_error" if status == 503 else "invalid_request_error"
        body = orjson.dumps(error_body(message, error_type, code=code))
        head = (
            b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))
        )
        self.transport.write(head + body)
        self.transport.close()
