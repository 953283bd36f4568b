"""An httpx transport for one upstream serving hundreds of long, concurrent streams.

ProxyApp keeps a response open for as long as the model writes, so a busy gateway holds
hundreds of upstream requests at once, each delivering a small chunk every few tens of
milliseconds. httpx's default transport (httpcore 1.0) spends work proportional to the number
of open connections on every request start and end (it probes each pooled socket with a
system call) and wraps every body read in a timeout scope of its own: at 500 concurrent
streams that made the proxy, not the model, the bottleneck of a one-worker gateway.

This transport does the same job for the one thing ProxyApp needs, HTTP/1.1 to one origin,
with costs that do not grow with the pool:

- **Pool.** Idle connections wait on a stack; a request takes the most recently used one
  (only that socket is checked for having been closed by the server) or opens a new one.
  A semaphore caps requests in flight at ``max_connections``; since a new connection is
  opened only when none is idle, open connections never exceed that cap either. Connections
  idle longer than ``keepalive_expiry`` are closed from the old end of the stack on every
  take and release.
- **Protocol.** httptools parses responses and requests are written directly. Bytes move
  through a plain asyncio protocol on asyncio and anyio streams elsewhere (TCP, or TLS for
  ``https``; see ``_byte_streams.py``), so the transport runs on any anyio backend.
- **Timeouts** come from the request (httpx's ``timeout`` extension): ``connect`` for TCP and
  TLS set-up, ``write`` per piece of request body, ``read`` per wait for response bytes
  (silence, not total time), ``pool`` for waiting on a free connection. They raise httpx's
  own exception types, as do network and protocol errors, so the client code is unchanged.
- **Bounds.** Response headers over ``max_header_bytes`` (an unfinished head is measured by
  the bytes read while it lasts) or more than ``max_headers`` fields fails as a ``RemoteProtocolError`` naming the limit: a
  proxy holds and forwards every header it accepts.
- **Retry.** A request whose body is held in memory is sent once more, on a new connection,
  when a reused connection turns out to be closed before any of the response arrived (the
  server may close an idle keep-alive connection at any moment).
- **Forward proxy.** With ``proxy``, every connection goes to the proxy: an ``http`` request
  is sent to it in absolute form (``POST http://host/v1/... HTTP/1.1``), an ``https`` one
  through a ``CONNECT host:443`` tunnel with TLS inside it (the certificate checked against
  the upstream's name). Either way the proxy, not this process, looks up the upstream host.

A response must be read to its end or closed; closing one early discards its connection,
since the rest of its body is still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TypeVar

import anyio
import anyio.abc
import httptools
import httpx

from .._asyncio_path import running_asyncio_loop
from .._errors import clip
from ._byte_streams import ByteStream, connect
from ._proxies import Proxy

__all__ = ["DEFAULT_MAX_HEADERS", "DEFAULT_MAX_HEADER_BYTES", "StreamingTransport"]

#: A response head larger than this fails. Real upstreams send a few KiB at most (a CDN in
#: front adds a dozen fields); h11 stops at 16 KiB and Go's server at 1 MiB. 64 KiB leaves
#: room for long tracing and rate-limit headers while bounding what one response can make the
#: gateway hold (a 200 MB header used to be read whole, and forwarded).
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
#: A response with more header fields fails: Apache's ``LimitRequestFields`` default.
DEFAULT_MAX_HEADERS = 100

_T = TypeVar("_T")

# RFC 9110 §5.6.2: methods and field names are tokens; a value holds no line break or NUL.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE_IN_VALUE = re.compile(rb"[\r\n\0]")
_UNSAFE_IN_TARGET = re.compile(rb"[\s\0]")
# What a broken socket raises through anyio, whichever backend runs it.
_NETWORK_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


class StreamingTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections to the upstream, as an httpx transport.

    Args:
        max_connections: Connections open (and requests in flight) at most.
        keepalive_expiry: Seconds an idle connection is kept for reuse.
        ssl_context: For ``https`` upstreams. When ``None``, one is built on the first
            ``https`` connection and shared by all, verifying with ``ca_bundle``, else (with
            ``trust_env``) ``SSL_CERT_FILE`` or ``SSL_CERT_DIR``, else certifi's bundle: the
            certificates httpx would trust.
        max_header_bytes: Bytes a response's header fields may take.
        max_headers: Header fields a response may have.
        proxy: The forward proxy every connection goes through; ``None`` connects directly.
        ca_bundle: A PEM file (or a directory of hashed certificates, as ``SSL_CERT_DIR``)
            of the authorities to trust for ``https`` upstreams.
        trust_env: Read ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` (now, not when connecting).
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
        proxy: Proxy | None = None,
        ca_bundle: str | None = None,
        trust_env: bool = True,
    ) -> None:
        self._limits = _HeadLimits(max_header_bytes, max_headers)
        self._proxy = proxy
        self._trusted = _trusted_certificates(ca_bundle, trust_env)
        self._slots = anyio.Semaphore(max_connections)
        # Most recently used last: taken from the right, expired ones pruned from the left.
        self._idle: deque[_Connection] = deque()
        self._busy: set[_Connection] = set()
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._closed = False

    def _tls(self) -> ssl.SSLContext:
        # Loading the CA bundle takes tens of milliseconds of blocked event loop: done once
        # per transport, not per connection (every stream stalled while 100 opened at once).
        if self._ssl_context is None:
            cafile, capath = self._trusted
            self._ssl_context = (
                httpx.create_ssl_context(trust_env=False)
                if cafile is None and capath is None
                else ssl.create_default_context(cafile=cafile, capath=capath)
            )
        return self._ssl_context

    @property
    def is_closed(self) -> bool:
        return self._closed

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"unsupported URL scheme {request.url.scheme!r}", request=request
            )
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            try:
                with anyio.fail_after(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout(
                    "no upstream connection came free", request=request
                ) from None
        try:
            # A body in memory can be sent twice; a streamed one only once.
            replayable = isinstance(request.stream, httpx.ByteStream)
            retried = False
            while True:
                # The one retry goes to a new connection: the other idle ones may be as stale.
                connection = None if retried else await self._take_idle()
                reused = connection is not None
                if connection is None:
                    tls = self._tls() if request.url.scheme == "https" else None
                    connection = await _Connection.open(
                        request, timeouts, tls, self._limits, self._proxy
                    )
                self._busy.add(connection)
                try:
                    status, headers = await connection.exchange(request, timeouts)
                except _StaleConnection as exc:
                    await self._discard(connection)
                    if reused and replayable:
                        retried = True
                        continue
                    raise httpx.RemoteProtocolError(
                        f"the upstream closed the connection without answering{exc}",
                        request=request,
                    ) from None
                except BaseException:
                    await self._discard(connection)
                    raise
                break
        except BaseException:
            self._slots.release()
            raise
        body = _ResponseBody(self, connection, request, timeouts.get("read"))
        return httpx.Response(
            status,
            headers=headers,
            stream=body,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        await self._prune(now)
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < self._keepalive_expiry and connection.is_usable():
                return connection
            await connection.aclose()
        return None

    async def _release(self, connection: _Connection) -> None:
        """A response was read to its end: its connection may serve the next request."""
        self._busy.discard(connection)
        self._slots.release()
        if not self._closed and connection.start_next_cycle():
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
            await self._prune(connection.idle_since)
        else:
            await connection.aclose()

    async def _prune(self, now: float) -> None:
        """Close the connections idle past ``keepalive_expiry``: the oldest are leftmost."""
        idle = self._idle
        while idle and now - idle[0].idle_since >= self._keepalive_expiry:
            await idle.popleft().aclose()

    async def _discard(self, connection: _Connection) -> None:
        """Drop a connection in the middle of an exchange."""
        self._busy.discard(connection)
        # Reset rather than close: a graceful close would let the upstream go on sending (and
        # generating) what nobody will read, until it next notices the connection is gone.
        connection.abort()
        await connection.aclose()

    async def _discard_and_release(self, connection: _Connection) -> None:
        self._slots.release()
        await self._discard(connection)

    async def aclose(self) -> None:
        self._closed = True
        connections = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for connection in connections:
            await connection.aclose()

    async def __aenter__(self) -> StreamingTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()


class _HeadLimits:
    __slots__ = ("max_bytes", "max_fields")

    def __init__(self, max_bytes: int, max_fields: int) -> None:
        if max_bytes < 1 or max_fields < 1:
            raise ValueError("max_header_bytes and max_headers must be at least 1")
        self.max_bytes = max_bytes
        self.max_fields = max_fields


class _HeadTooLarge(Exception):
    """Raised from a parser callback; ``read()`` reports it as a ``RemoteProtocolError``."""


class _StaleConnection(Exception):
    """A reused connection was closed by the server before any of the response arrived."""


class _Connection:
    """One HTTP/1.1 connection: a byte stream and httptools parsing its responses.

    httptools (llhttp, the parser uvicorn uses) reads a streamed body chunk for well under a
    microsecond, h11 for 15 to 25: on a gateway relaying ten thousand chunks a second that
    difference is a fifth of a core. Requests are small and written here directly.
    """

    def __init__(self, stream: ByteStream, limits: _HeadLimits, proxy: Proxy | None = None) -> None:
        self._stream = stream
        self._limits = limits
        # Set for plain http through a proxy: requests go to it in absolute form.
        self._proxy = proxy
        self._parser = httptools.HttpResponseParser(self)
        self._deadline = _IODeadline(stream.abort)
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_done = False
        # Bytes of the response head received so far (interim 1xx heads included).
        self._head_bytes = 0
        self._body: list[bytes] = []
        self.complete = False
        self._keep_alive = False
        self._request_done = False
        self._head_request = False

    # httptools callbacks, run inside feed_data()

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= self._limits.max_fields:
            raise _HeadTooLarge(f"more than {self._limits.max_fields} header fields")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            # 100 Continue, 103 Early Hints: the real answer follows.
            self._headers = []
            return
        self._status = status
        self._keep_alive = self._parser.should_keep_alive()
        self._head_done = True
        if self._head_request:
            # The parser cannot know a HEAD answer has no body whatever its headers say; the
            # connection is not reused, as the parser still expects one.
            self.complete = True
            self._keep_alive = False

    def on_body(self, body: bytes) -> None:
        if body:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._head_done:
            self.complete = True

    @classmethod
    async def open(
        cls,
        request: httpx.Request,
        timeouts: dict[str, float | None],
        ssl_context: ssl.SSLContext | None,
        limits: _HeadLimits,
        proxy: Proxy | None = None,
    ) -> _Connection:
        """Connect to the request's origin, over TLS when ``ssl_context`` is given, and
        through ``proxy`` when one is given (``connect`` bounds the tunnel and TLS too)."""
        url = request.url
        port = url.port or (443 if ssl_context is not None else 80)
        try:
            with anyio.fail_after(timeouts.get("connect")):
                if proxy is None:
                    stream = await connect(url.host, port, ssl_context)
                else:
                    stream = await connect(proxy.host, proxy.port, None)
                    if ssl_context is not None:
                        try:
                            await _open_tunnel(stream, port, proxy, request)
                            stream = await stream.start_tls(ssl_context, url.host)
                        except BaseException:
                            stream.abort()
                            raise
        except TimeoutError:
            where = f" through the proxy {proxy.display}" if proxy is not None else ""
            raise httpx.ConnectTimeout(f"connecting{where} timed out", request=request) from None
        except (*_NETWORK_ERRORS, ssl.SSLError) as exc:
            detail = _describe(exc)
            if proxy is not None:
                detail = f"{detail} (through the proxy {proxy.display})"
            raise httpx.ConnectError(detail, request=request) from None
        return cls(stream, limits, proxy if ssl_context is None else None)

    async def exchange(
        self, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Send ``request`` and read the head of its response."""
        head, chunked = _request_head(request, self._proxy)
        self._head_request = request.method == "HEAD"
        write_timeout = timeouts.get("write")
        try:
            await self._write(head, request, write_timeout)
            async for piece in request.stream:  # type: ignore[union-attr]
                if piece:
                    framed = b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece
                    await self._write(framed, request, write_timeout)
            if chunked:
                await self._write(b"0\r\n\r\n", request, write_timeout)
        except httpx.WriteError as exc:
            # Most often a kept-alive connection the server has just closed.
            raise _StaleConnection(f" ({exc})") from None
        self._request_done = True
        stale = True
        while not self._head_done:
            await self.read(request, timeouts.get("read"), stale=stale)
            stale = False
        return self._status, self._headers

    def take_body(self) -> bytes:
        """The body bytes parsed so far and not yet taken."""
        body = self._body
        if not body:
            return b""
        self._body = []
        return body[0] if len(body) == 1 else b"".join(body)

    async def read(
        self, request: httpx.Request, read_timeout: float | None, *, stale: bool = False
    ) -> None:
        """Read once from the network and parse what came.

        With ``stale``, a connection that ends before any byte arrived raises
        ``_StaleConnection`` (the caller may retry elsewhere) instead of an httpx error.
        """
        try:
            data = await self._bounded(read_timeout, self._stream.receive)
        except anyio.EndOfStream:
            data = b""
        except TimeoutError:
            data = b""
            self._deadline.expired = True
        except _NETWORK_ERRORS as exc:
            if self._deadline.expired:
                data = b""
            elif stale:
                raise _StaleConnection(f" ({_describe(exc)})") from None
            else:
                raise httpx.ReadError(_describe(exc), request=request) from None
        if self._deadline.expired:
            raise httpx.ReadTimeout(
                f"no data from the upstream for {read_timeout} s", request=request
            )
        if not data:
            self._end_of_stream(request, stale)
            return
        head_before = self._head_done
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # httptools re-raises a callback's exception as the context of its own.
            cause = exc.__context__
            if isinstance(cause, _HeadTooLarge):
                raise self._head_too_large(request, str(cause)) from None
            raise httpx.RemoteProtocolError(
                f"the upstream sent invalid HTTP: {exc}", request=request
            ) from None
        if not head_before:
            # httptools gathers a header in memory until its end: the head is bounded by
            # counting what it was fed, a read at a time, before the head ended. Body bytes
            # in the read that ends the head count too, at most one read's worth.
            self._head_bytes += len(data)
            size = self._head_size() if self._head_done else self._head_bytes
            if size > self._limits.max_bytes:
                raise self._head_too_large(request, f"over {self._limits.max_bytes} bytes")

    def _head_size(self) -> int:
        return sum(len(name) + len(value) + 4 for name, value in self._headers)

    def _head_too_large(self, request: httpx.Request, what: str) -> httpx.RemoteProtocolError:
        return httpx.RemoteProtocolError(
            f"the upstream's response headers are too large: {what} (the limits are "
            f"{self._limits.max_bytes} bytes and {self._limits.max_fields} fields)",
            request=request,
        )

    def _end_of_stream(self, request: httpx.Request, stale: bool) -> None:
        if stale and not self._head_done:
            raise _StaleConnection
        if self._head_done and _delimited_by_close(self._status, self._headers):
            # A body without a length or chunked framing ends with the connection.
            self.complete = True
            self._keep_alive = False
            return
        what = "mid-response" if self._head_done else "without a complete answer"
        raise httpx.RemoteProtocolError(
            f"the upstream closed the connection {what}", request=request
        )

    async def _bounded(self, limit: float | None, operation: Callable[[], Awaitable[_T]]) -> _T:
        """``operation()`` within ``limit`` seconds: past it, ``TimeoutError`` is raised
        (other backends) or the stream is aborted and ``_deadline.expired`` set (asyncio)."""
        if limit is None:
            return await operation()
        if self._deadline.loop is None:
            with anyio.fail_after(limit):
                return await operation()
        self._deadline.start(limit)
        try:
            return await operation()
        finally:
            self._deadline.stop()

    async def _write(self, data: bytes, request: httpx.Request, limit: float | None) -> None:
        try:
            await self._bounded(limit, lambda: self._stream.send(data))
        except TimeoutError:
            self._deadline.expired = True
        except _NETWORK_ERRORS as exc:
            if not self._deadline.expired:
                raise httpx.WriteError(_describe(exc), request=request) from None
        if self._deadline.expired:
            raise httpx.WriteTimeout("sending to the upstream timed out", request=request)

    def start_next_cycle(self) -> bool:
        """Ready the connection for another request; ``False`` when it cannot be reused."""
        reusable = self.complete and self._keep_alive and self._request_done and not self._body
        if reusable:
            self._reset()
        return reusable

    def is_usable(self) -> bool:
        """An idle connection the server has neither closed nor sent anything on."""
        return self._stream.is_usable()

    def abort(self) -> None:
        self._deadline.cancel()
        self._stream.abort()

    async def aclose(self) -> None:
        self._deadline.cancel()
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(*_NETWORK_ERRORS):
                await self._stream.aclose()


def _request_head(request: httpx.Request, proxy: Proxy | None = None) -> tuple[bytes, bool]:
    """The request line and headers; and whether the body goes chunked.

    Anything that would let a caller's method, path or header end a line early is refused:
    it would smuggle a header, or a whole second request, to the upstream. With ``proxy``
    (plain http through a forward proxy) the target is in absolute form, and the proxy's
    credentials go along.
    """
    method = request.method.encode("ascii", "replace")
    target = request.url.raw_path
    if not _TOKEN.fullmatch(method) or _UNSAFE_IN_TARGET.search(target):
        raise httpx.LocalProtocolError(
            f"invalid request line {request.method!r} {target!r}", request=request
        )
    if proxy is not None:
        target = b"%b://%b%b" % (request.url.raw_scheme, _authority(request.url), target)
    lines = [b"%b %b HTTP/1.1" % (method, target)]
    if proxy is not None and proxy.authorization is not None:
        lines.append(b"Proxy-Authorization: " + proxy.authorization)
    chunked = False
    for name, value in request.headers.raw:
        if not _TOKEN.fullmatch(name) or _UNSAFE_IN_VALUE.search(value):
            raise httpx.LocalProtocolError(
                f"invalid header {name.decode('latin-1')!r}: a field name must be a token and "
                "a value must hold no line break or NUL",
                request=request,
            )
        if name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n", chunked


def _authority(url: httpx.URL) -> bytes:
    host = url.raw_host
    if b":" in host:
        host = b"[" + host + b"]"
    return host if url.port is None else b"%b:%d" % (host, url.port)


#: A proxy's answer to ``CONNECT`` is a status line and a few headers.
_MAX_TUNNEL_HEAD = 16 * 1024


async def _open_tunnel(stream: ByteStream, port: int, proxy: Proxy, request: httpx.Request) -> None:
    """Ask ``proxy`` for a ``CONNECT`` tunnel to the request's host and read its answer.

    The answer is read up to its blank line and no further: what follows is the upstream's
    TLS handshake. The proxy resolves the host; this process never looks it up.
    """
    host = request.url.raw_host
    authority = b"[%b]:%d" % (host, port) if b":" in host else b"%b:%d" % (host, port)
    lines = [b"CONNECT %b HTTP/1.1" % authority, b"Host: " + authority]
    if proxy.authorization is not None:
        lines.append(b"Proxy-Authorization: " + proxy.authorization)
    await stream.send(b"\r\n".join(lines) + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        if len(head) > _MAX_TUNNEL_HEAD:
            raise httpx.ProxyError(
                f"the proxy {proxy.display} answered CONNECT with over {_MAX_TUNNEL_HEAD} "
                "bytes of headers",
                request=request,
            )
        try:
            data = await stream.receive()
        except anyio.EndOfStream:
            data = b""
        if not data:
            raise httpx.ProxyError(
                f"the proxy {proxy.display} closed the connection instead of answering CONNECT",
                request=request,
            )
        head += data
    head, _, rest = head.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    if not parts[0].startswith("HTTP/") or not 200 <= status < 300:
        # 407 (credentials refused or missing), 403 (host not allowed), 502 (the proxy could
        # not resolve or reach the upstream): its status line says which.
        raise httpx.ProxyError(
            f"the proxy {proxy.display} refused CONNECT {authority.decode('ascii')}: "
            f"{clip(status_line)}",
            request=request,
        )
    if rest:
        raise httpx.ProxyError(
            f"the proxy {proxy.display} sent data before the upstream's TLS handshake",
            request=request,
        )


def _delimited_by_close(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    if status in (204, 304):
        return False
    names = {name.lower() for name, _ in headers}
    return b"content-length" not in names and b"transfer-encoding" not in names


class _IODeadline:
    """The read and write timeouts of one connection, without a cancel scope each (asyncio).

    A response body is read in thousands of small pieces; entering and leaving an anyio
    timeout scope for each one cost more than parsing it. Instead each read or write only
    records its deadline, and one timer per connection, re-armed when it fires early,
    checks it. An operation past its deadline is ended by aborting the connection, and
    reported as a timeout (the connection cannot be reused after that anyway). Under other
    anyio backends ``loop`` is ``None`` and operations use ``anyio.fail_after``.
    """

    def __init__(self, on_expiry: Callable[[], None]) -> None:
        self.loop = running_asyncio_loop()
        self._on_expiry = on_expiry
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self.expired = False

    def start(self, timeout: float) -> None:
        assert self.loop is not None
        self._deadline = self.loop.time() + timeout
        # Usually the armed timer fires before the new deadline and re-arms itself then; a
        # shorter timeout than the last one (a write's, then a read's) needs an earlier one.
        if self._timer is None or self._timer.when() > self._deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(self._deadline, self._check)

    def stop(self) -> None:
        self._deadline = math.inf

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        assert self.loop is not None
        self._timer = None
        if self._deadline == math.inf:
            return  # no read is waiting; the next one re-arms the timer
        if self.loop.time() >= self._deadline:
            self.expired = True
            self._on_expiry()
        else:
            self._timer = self.loop.call_at(self._deadline, self._check)


class _ResponseBody(httpx.AsyncByteStream):
    """The body of one response; gives its connection back to the pool when done."""

    def __init__(
        self,
        transport: StreamingTransport,
        connection: _Connection,
        request: httpx.Request,
        read_timeout: float | None,
    ) -> None:
        self._transport = transport
        self._connection: _Connection | None = connection
        self._request = request
        self._read_timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            return
        while True:
            body = connection.take_body()
            if body:
                yield body
            if connection.complete:
                self._connection = None
                await self._transport._release(connection)
                return
            await connection.read(self._request, self._read_timeout)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            # The rest of the body is still on its way: this connection cannot be reused.
            await self._transport._discard_and_release(connection)


def _trusted_certificates(ca_bundle: str | None, trust_env: bool) -> tuple[str | None, str | None]:
    """``(cafile, capath)`` for the TLS context, or ``(None, None)`` for certifi's bundle."""
    if ca_bundle is not None:
        return (None, ca_bundle) if os.path.isdir(ca_bundle) else (ca_bundle, None)
    if trust_env:
        # As httpx does: the file wins over the directory.
        if os.environ.get("SSL_CERT_FILE"):
            return os.environ["SSL_CERT_FILE"], None
        if os.environ.get("SSL_CERT_DIR"):
            return None, os.environ["SSL_CERT_DIR"]
    return None, None


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
