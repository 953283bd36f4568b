"""The two ways the proxy's transport moves bytes: an asyncio protocol, or anyio streams.

Both offer the same small interface to ``_transport._Connection``: ``receive()``, ``send()``,
``aclose()``, ``abort()`` and ``is_usable()``, and raise the same exceptions (``OSError`` or
anyio's ``BrokenResourceError`` when the connection breaks, ``anyio.EndOfStream`` at its end).

- **asyncio** (what nearly everyone runs): an ``asyncio.Protocol`` that keeps reading and
  hands over everything buffered in one piece. anyio's socket stream pauses and resumes the
  transport's reading around every ``receive()``, which on a relay of thousands of small
  chunks a second costs more than parsing them. Reading pauses only when more than
  ``_HIGH_WATER`` bytes wait unread (a slow client), so memory stays bounded. Since it keeps
  reading, an idle connection knows by itself whether the server closed it.
- **any other anyio backend**: anyio's own TCP/TLS streams, wrapped.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
from typing import Protocol, cast

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from .._asyncio_path import running_asyncio_loop

__all__ = ["ByteStream", "connect"]

_HIGH_WATER = 256 * 1024
# receive() yields to the loop on every 8th call (see there).
_YIELD_EVERY_MASK = 7


class ByteStream(Protocol):
    async def receive(self) -> bytes: ...

    async def send(self, data: bytes) -> None: ...

    async def aclose(self) -> None: ...

    def abort(self) -> None:
        """Break the connection now: a pending ``receive()`` or ``send()`` raises."""

    def is_usable(self) -> bool:
        """An idle connection the server has neither closed nor sent anything on."""

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str) -> ByteStream:
        """TLS over this connection (inside a proxy's ``CONNECT`` tunnel); use the result."""


async def connect(host: str, port: int, ssl_context: ssl.SSLContext | None) -> ByteStream:
    """Open a TCP (with ``ssl_context``, TLS) connection on the running backend."""
    loop = running_asyncio_loop()
    if loop is None:
        return await _AnyioStream.connect(host, port, ssl_context)
    _, stream = await loop.create_connection(
        lambda: _AsyncioStream(loop),
        host,
        port,
        ssl=ssl_context,
        server_hostname=host if ssl_context is not None else None,
    )
    return stream


class _AsyncioStream(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._reading_paused = False
        self._ended = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._receives = 0

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport; they do implement it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._reading_paused:
            assert self._transport is not None
            self._transport.pause_reading()
            self._reading_paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._ended = True
        self._wake()
        return False  # close the transport: HTTP/1.1 has no use for a half-open connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._error = exc
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ByteStream

    async def receive(self) -> bytes:
        # A plain yield every few receives. anyio's cancel scopes never cancel a task whose
        # awaited future is already done, and when data streams in without pause the future
        # a receive waits on is done whenever anyio looks: without these yields, cancelling
        # a reader of a fast upstream (a client gone, a response failed) could wait for the
        # whole body. Every few, not every one: a yield per chunk costs a quarter of the
        # relay's CPU, and a paced stream is cancelled at its first wait anyway.
        self._receives += 1
        if not self._receives & _YIELD_EVERY_MASK:
            await asyncio.sleep(0)
        while not self._buffer:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise anyio.EndOfStream
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        buffer = self._buffer
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        self._buffer = []
        self._buffered = 0
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        return data

    async def send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._ended or transport.is_closing():
            raise anyio.BrokenResourceError
        transport.write(data)
        while self._writing_paused and not self._ended:
            self._drained = self._loop.create_future()
            try:
                await self._drained
            finally:
                self._drained = None
        if self._error is not None:
            raise self._error

    async def aclose(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def is_usable(self) -> bool:
        if self._ended or self._buffer or self._transport is None:
            return False
        # The loop may not have read a FIN that already arrived: ask the socket too.
        return not _readable(self._transport.get_extra_info("socket"))

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str) -> ByteStream:
        transport = self._transport
        if transport is None or self._ended:
            raise anyio.BrokenResourceError
        if self._buffer:
            # The tunnel's first bytes must be the server's TLS handshake, read by the TLS layer.
            raise anyio.BrokenResourceError("data arrived before the TLS handshake")
        # The same protocol object goes on receiving, now the decrypted bytes.
        tls = await self._loop.start_tls(
            transport, self, ssl_context, server_hostname=server_hostname
        )
        if tls is None:
            raise anyio.BrokenResourceError("the connection closed during the TLS handshake")
        self._transport = tls
        return self


class _AnyioStream:
    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._socket: socket.socket | None = stream.extra(
            anyio.abc.SocketAttribute.raw_socket, None
        )

    @classmethod
    async def connect(
        cls, host: str, port: int, ssl_context: ssl.SSLContext | None
    ) -> _AnyioStream:
        if ssl_context is None:
            return cls(await anyio.connect_tcp(host, port))
        stream = await anyio.connect_tcp(
            host,
            port,
            ssl_context=ssl_context,
            tls_hostname=host,
            # Closing without a TLS close_notify is common and harmless here: the HTTP
            # framing says whether a body is complete.
            tls_standard_compatible=False,
        )
        return cls(stream)

    async def receive(self) -> bytes:
        return await self._stream.receive()

    async def send(self, data: bytes) -> None:
        await self._stream.send(data)

    async def aclose(self) -> None:
        await self._stream.aclose()

    def abort(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)

    def is_usable(self) -> bool:
        # The socket is not read while idle: a closed one shows as readable (at EOF).
        return not _readable(self._socket)

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str) -> ByteStream:
        stream = await TLSStream.wrap(
            self._stream,
            hostname=server_hostname,
            ssl_context=ssl_context,
            standard_compatible=False,
        )
        return _AnyioStream(stream)


def _readable(sock: socket.socket | None) -> bool:
    """Whether ``sock`` has data or an end of stream waiting (an unusable one counts)."""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
