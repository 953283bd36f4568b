"""StreamingTransport against raw upstreams on real sockets.

Each upstream is a few lines of ``asyncio.start_server`` writing exact bytes, so a test decides
what the wire holds: keep-alive or not, how a body is framed and split, when the server stalls
or hangs up. ``Upstream.accepted`` counts the connections the transport opened, which is how
connection reuse is observed from outside. Every test runs on asyncio's own event loop and
on uvloop's (what uvicorn picks when it is installed): the transport's asyncio protocol
meets two different transport implementations there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from stream_mw.upstreams import ProxyApp
from stream_mw.upstreams._transport import StreamingTransport
from tests.tls import server_context

WAIT = 5.0


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    return ("asyncio", {"use_uvloop": request.param == "uvloop"})


# How late a timeout may fire on a busy test machine and still count as on time (CI shares
# two cores with the servers the suite starts; 0.8 s was seen exceeded under load).
SLACK = 2.0

# (reader, writer, index of the connection on this upstream, from 0)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Upstream:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.url = ""
        self.accepted = 0
        self.errors: list[BaseException] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.handlers: set[asyncio.Future[None]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.accepted
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        # The handler runs as a task of its own, cancelled at the end of the test: asyncio
        # logs an error when the task start_server made for a connection is cancelled.
        handling = asyncio.ensure_future(self.handler(reader, writer, index))
        self.handlers.add(handling)
        try:
            await handling
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception as exc:
            self.errors.append(exc)
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def upstream(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Upstream]:
    up = Upstream(handler)
    server = await asyncio.start_server(up.serve, "127.0.0.1", 0, ssl=tls)
    scheme = "https" if tls else "http"
    up.url = f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    try:
        yield up
    finally:
        server.close()
        for handling in up.handlers:
            handling.cancel()
        await asyncio.gather(*up.tasks, return_exceptions=True)
        await server.wait_closed()
    assert not up.errors


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One whole request as it came over the wire; ``None`` at end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    if b"\r\ntransfer-encoding: chunked\r\n" in head.lower():
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            body += size_line + await reader.readexactly(size + 2)
            if size == 0:
                return head + body
    length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    return head + (await reader.readexactly(int(length.group(1))) if length else b"")


def dechunk(body: bytes) -> bytes:
    data = b""
    while True:
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n"
            return data
        assert body[size : size + 2] == b"\r\n"
        data, body = data + body[:size], body[size + 2 :]


def answer(body: bytes, *headers: bytes) -> bytes:
    lines = [b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(body), *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def keep_alive(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
) -> None:
    """Answers every request on the connection, saying which connection and request it was."""
    count = 0
    while await read_request(reader) is not None:
        writer.write(answer(b"connection %d request %d" % (index, count)))
        await writer.drain()
        count += 1


async def dribble(writer: asyncio.StreamWriter, data: bytes, size: int) -> None:
    """Writes ``data`` a few bytes at a time, so the transport reads it in many pieces."""
    for start in range(0, len(data), size):
        writer.write(data[start : start + size])
        await writer.drain()
        await asyncio.sleep(0.001)


def post(
    url: str,
    content: bytes | AsyncIterator[bytes] = b"{}",
    *,
    headers: dict[str, str] | None = None,
    read: float = WAIT,
    write: float = WAIT,
    pool: float = WAIT,
    method: str = "POST",
) -> httpx.Request:
    timeout = {"connect": WAIT, "read": read, "write": write, "pool": pool}
    return httpx.Request(
        method, url, content=content, headers=headers, extensions={"timeout": timeout}
    )


async def read_into(response: httpx.Response, received: list[bytes]) -> None:
    async for piece in response.aiter_raw():
        received.append(piece)


async def fetch(transport: StreamingTransport, request: httpx.Request) -> tuple[int, bytes]:
    with anyio.fail_after(WAIT):
        response = await transport.handle_async_request(request)
        try:
            body = b"".join([piece async for piece in response.aiter_raw()])
        finally:
            await response.aclose()
    return response.status_code, body


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# Reuse and its limits


@pytest.mark.anyio
async def test_a_response_read_to_its_end_gives_its_connection_back_for_the_next_request() -> None:
    async with upstream(keep_alive) as up, StreamingTransport() as transport:
        assert await fetch(transport, post(up.url)) == (200, b"connection 0 request 0")
        assert await fetch(transport, post(up.url)) == (200, b"connection 0 request 1")
        assert up.accepted == 1


@pytest.mark.anyio
async def test_a_response_closed_before_its_end_takes_its_connection_with_it() -> None:
    first_closed = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        if index == 0:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf:")
            await writer.drain()
            assert await reader.read() == b""
            first_closed.set()
        else:
            await keep_alive(reader, writer, index)

    async with upstream(handler) as up, StreamingTransport() as transport:
        with anyio.fail_after(WAIT):
            response = await transport.handle_async_request(post(up.url))
            await response.aclose()
            await first_closed.wait()
        assert await fetch(transport, post(up.url)) == (200, b"connection 1 request 0")
        assert up.accepted == 2


@pytest.mark.anyio
async def test_a_connection_close_response_is_not_reused() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        # The server says close but keeps the socket open: only the header can stop reuse.
        while await read_request(reader) is not None:
            writer.write(answer(b"connection %d" % index, b"Connection: close"))
            await writer.drain()

    async with upstream(handler) as up, StreamingTransport() as transport:
        assert await fetch(transport, post(up.url)) == (200, b"connection 0")
        assert await fetch(transport, post(up.url)) == (200, b"connection 1")
        assert up.accepted == 2


@pytest.mark.anyio
async def test_an_idle_connection_past_its_keepalive_expiry_is_closed_not_reused() -> None:
    expired = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await keep_alive(reader, writer, index)
        expired.set()

    async with upstream(handler) as up, StreamingTransport(keepalive_expiry=0) as transport:
        assert await fetch(transport, post(up.url)) == (200, b"connection 0 request 0")
        assert await fetch(transport, post(up.url)) == (200, b"connection 1 request 0")
        with anyio.fail_after(WAIT):
            await expired.wait()
        assert up.accepted == 2


@pytest.mark.anyio
async def test_an_expired_idle_connection_is_closed_even_when_newer_ones_serve_every_request() -> (
    None
):
    closed = [asyncio.Event(), asyncio.Event()]

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await keep_alive(reader, writer, index)
        closed[index].set()

    async with upstream(handler) as up, StreamingTransport(keepalive_expiry=0.3) as transport:
        with anyio.fail_after(WAIT):
            first = await transport.handle_async_request(post(up.url))
            second = await transport.handle_async_request(post(up.url))
            await first.aread()
            await anyio.sleep(0.4)
            # Connection 0 has idled past its expiry; the pool now only ever takes the
            # fresher connection 1, yet connection 0 is closed rather than kept forever.
            await second.aread()
            await closed[0].wait()
            assert await fetch(transport, post(up.url)) == (200, b"connection 1 request 1")
        assert not closed[1].is_set()
        assert up.accepted == 2


# Response framing


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
BODY = b"data: " + bytes(range(32, 127)) + b"\n\n"


@pytest.mark.parametrize(
    ("wire", "size"),
    [
        pytest.param(answer(BODY), 3, id="content-length"),
        pytest.param(
            CHUNKED_HEAD + b"%x\r\n%b\r\n" % (len(BODY), BODY) + b"0\r\n\r\n", 3, id="chunked"
        ),
        # Many chunks, a size line with an extension, and every size line cut in two.
        pytest.param(
            CHUNKED_HEAD
            + b"".join(
                b"%x;ext=1\r\n%b\r\n" % (len(BODY[i : i + 20]), BODY[i : i + 20])
                for i in range(0, len(BODY), 20)
            )
            + b"0\r\n\r\n",
            2,
            id="chunked-in-many-chunks",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY, 5, id="close-delimited"
        ),
        pytest.param(b"HTTP/1.0 200 OK\r\n\r\n" + BODY, 5, id="http/1.0-close-delimited"),
    ],
)
@pytest.mark.anyio
async def test_bodies_arrive_byte_exact_whatever_their_framing_and_however_they_are_split(
    wire: bytes, size: int
) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        await dribble(writer, wire, size)

    async with upstream(handler) as up, StreamingTransport() as transport:
        assert await fetch(transport, post(up.url)) == (200, BODY)


@pytest.mark.anyio
async def test_a_close_delimited_body_ends_cleanly_and_its_connection_is_not_reused() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nconnection %d" % index)
        await writer.drain()

    async with upstream(handler) as up, StreamingTransport() as transport:
        assert await fetch(transport, post(up.url)) == (200, b"connection 0")
        assert await fetch(transport, post(up.url)) == (200, b"connection 1")
        assert up.accepted == 2


@pytest.mark.anyio
async def test_interim_responses_before_the_real_one_are_skipped() -> None:
    interim = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    )

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while await read_request(reader) is not None:
            await dribble(writer, interim + answer(b"final", b"X-Real: yes"), 7)

    async with upstream(handler) as up, StreamingTransport() as transport:
        with anyio.fail_after(WAIT):
            response = await transport.handle_async_request(post(up.url))
            assert await response.aread() == b"final"
            await response.aclose()
        assert response.status_code == 200
        assert response.headers["x-real"] == "yes"
        assert "link" not in response.headers
        # The interim answers did not leave the connection out of step.
        assert await fetch(transport, post(up.url)) == (200, b"final")
        assert up.accepted == 1


# Connections the server closed


def hangs_up_after_answering(hung_up: asyncio.Event) -> Handler:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        # Advertises keep-alive (HTTP/1.1, a length, no Connection: close), then hangs up.
        writer.write(answer(b"connection %d" % index))
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        hung_up.set()

    return handler


@pytest.mark.anyio
async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    hung_up = asyncio.Event()
    async with upstream(hangs_up_after_answering(hung_up)) as up, StreamingTransport() as transport:
        assert await fetch(transport, post(up.url)) == (200, b"connection 0")
        with anyio.fail_after(WAIT):
            await hung_up.wait()
        assert await fetch(transport, post(up.url, b"again")) == (200, b"connection 1")
        assert up.accepted == 2


@pytest.mark.anyio
async def test_an_idle_connection_is_checked_before_reuse_so_a_streamed_body_gets_through() -> None:
    hung_up = asyncio.Event()
    async with upstream(hangs_up_after_answering(hung_up)) as up, StreamingTransport() as transport:
        assert await fetch(transport, post(up.url)) == (200, b"connection 0")
        with anyio.fail_after(WAIT):
            await hung_up.wait()
        # A streamed body cannot be sent twice: only the check keeps it off the dead socket.
        assert await fetch(transport, post(up.url, pieces(b"again"))) == (200, b"connection 1")
        assert up.accepted == 2


def closes_on_second_request(seen: list[bytes | None]) -> Handler:
    """Answers the first request, then reads the second and hangs up without answering."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        if index == 0:
            await read_request(reader)
            writer.write(answer(b"first"))
            await writer.drain()
            seen.append(await read_request(reader))
        else:
            await keep_alive(reader, writer, index)

    return handler


@pytest.mark.anyio
async def test_an_in_memory_body_is_sent_again_when_a_reused_connection_closes_unanswered() -> None:
    seen: list[bytes | None] = []
    async with upstream(closes_on_second_request(seen)) as up, StreamingTransport() as transport:
        assert await fetch(transport, post(up.url)) == (200, b"first")
        assert await fetch(transport, post(up.url, b"again")) == (200, b"connection 1 request 0")
        assert up.accepted == 2
    # The first connection really was handed the request: this was the retry, not the check.
    assert len(seen) == 1
    assert seen[0] is not None
    assert seen[0].endswith(b"\r\n\r\nagain")


@pytest.mark.anyio
async def test_a_request_is_sent_again_only_once() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        if index == 0:
            writer.write(answer(b"first"))
            await writer.drain()
            await read_request(reader)

    async with upstream(handler) as up, StreamingTransport() as transport:
        assert await fetch(transport, post(up.url)) == (200, b"first")
        with anyio.fail_after(WAIT), pytest.raises(httpx.RemoteProtocolError):
            await transport.handle_async_request(post(up.url, b"again"))
        assert up.accepted == 2


@pytest.mark.anyio
async def test_a_request_is_sent_again_on_a_new_connection_not_another_idle_one() -> None:
    retried_on: list[int] = []

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        if index < 2:
            await read_request(reader)
            writer.write(answer(b"first"))
            await writer.drain()
            if await read_request(reader) is not None:
                retried_on.append(index)
        else:
            await keep_alive(reader, writer, index)

    async with upstream(handler) as up, StreamingTransport() as transport:
        with anyio.fail_after(WAIT):
            # Two responses open at once: two connections, then both idle.
            one = await transport.handle_async_request(post(up.url))
            two = await transport.handle_async_request(post(up.url))
            for response in (one, two):
                assert await response.aread() == b"first"
                await response.aclose()
        assert await fetch(transport, post(up.url, b"again")) == (200, b"connection 2 request 0")
        assert len(retried_on) == 1


@pytest.mark.anyio
async def test_a_streamed_body_is_not_sent_again_when_a_reused_connection_closes() -> None:
    seen: list[bytes | None] = []
    async with upstream(closes_on_second_request(seen)) as up, StreamingTransport() as transport:
        assert await fetch(transport, post(up.url)) == (200, b"first")
        with anyio.fail_after(WAIT), pytest.raises(httpx.RemoteProtocolError):
            await transport.handle_async_request(post(up.url, pieces(b"once")))
        assert up.accepted == 1


# Timeouts and network errors


@pytest.mark.anyio
async def test_a_body_that_stalls_raises_a_read_timeout() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nstart")
        await writer.drain()
        await reader.read()

    async with upstream(handler) as up, StreamingTransport() as transport:
        with anyio.fail_after(WAIT):
            response = await transport.handle_async_request(post(up.url, read=0.2, write=0.2))
            received: list[bytes] = []
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await read_into(response, received)
            await response.aclose()
        assert 0.2 <= time.monotonic() - started < 0.2 + SLACK
        assert b"".join(received) == b"start"


@pytest.mark.anyio
async def test_an_upstream_that_never_answers_raises_a_read_timeout() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await reader.read()

    async with upstream(handler) as up, StreamingTransport() as transport:
        started = time.monotonic()
        with anyio.fail_after(WAIT), pytest.raises(httpx.ReadTimeout):
            await transport.handle_async_request(post(up.url, read=0.2, write=0.2))
        assert 0.2 <= time.monotonic() - started < 0.2 + SLACK


@pytest.mark.anyio
async def test_a_read_timeout_shorter_than_the_write_timeout_still_holds() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await reader.read()

    async with upstream(handler) as up, StreamingTransport() as transport:
        started = time.monotonic()
        with anyio.fail_after(0.2 + SLACK), pytest.raises(httpx.ReadTimeout):
            await transport.handle_async_request(post(up.url, read=0.2, write=60))
        assert time.monotonic() - started < 0.2 + SLACK


@pytest.mark.anyio
async def test_the_read_timeout_bounds_silence_not_the_whole_response() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):
            await asyncio.sleep(0.05)
            writer.write(b"1\r\n.\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async with upstream(handler) as up, StreamingTransport() as transport:
        assert await fetch(transport, post(up.url, read=0.2)) == (200, b"." * 6)


@pytest.mark.anyio
async def test_a_short_read_timeout_holds_on_a_connection_last_read_with_a_long_one() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        writer.write(answer(b"first"))
        await writer.drain()
        await read_request(reader)
        await reader.read()

    async with upstream(handler) as up, StreamingTransport() as transport:
        assert await fetch(transport, post(up.url, read=60)) == (200, b"first")
        started = time.monotonic()
        with anyio.fail_after(0.2 + SLACK), pytest.raises(httpx.ReadTimeout):
            await transport.handle_async_request(post(up.url, read=0.2, write=0.2))
        assert time.monotonic() - started < 0.2 + SLACK


def huge() -> bytes:
    """More than the socket buffers hold: with the server not reading, sending it blocks."""
    return b"x" * (64 * 1024 * 1024)


@pytest.mark.anyio
async def test_a_request_body_the_server_does_not_take_raises_a_write_timeout() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await asyncio.Event().wait()

    async with upstream(handler) as up, StreamingTransport() as transport:
        started = time.monotonic()
        with anyio.fail_after(WAIT), pytest.raises(httpx.WriteTimeout):
            await transport.handle_async_request(post(up.url, huge(), read=0.2, write=0.2))
        assert 0.2 <= time.monotonic() - started < 0.2 + SLACK


@pytest.mark.anyio
async def test_a_write_timeout_holds_on_a_reused_connection() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        # Answered after the write timeout: the response's read timeout is the last one set.
        await asyncio.sleep(0.1)
        writer.write(answer(b"first"))
        await writer.drain()
        await asyncio.Event().wait()

    # As with ProxyApp's defaults, a read timeout (300 s) longer than the write timeout (60 s).
    async with upstream(handler) as up, StreamingTransport() as transport:
        assert await fetch(transport, post(up.url, read=60, write=0.05)) == (200, b"first")
        started = time.monotonic()
        with anyio.fail_after(0.2 + SLACK), pytest.raises(httpx.WriteTimeout):
            await transport.handle_async_request(post(up.url, huge(), read=60, write=0.2))
        assert time.monotonic() - started < 0.2 + SLACK
        assert up.accepted == 1


@pytest.mark.anyio
async def test_a_closed_port_raises_a_connect_error_and_frees_the_slot() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    async with StreamingTransport(max_connections=1) as transport:
        # The second attempt would time out in the pool if the first had kept its slot.
        for _ in range(2):
            with anyio.fail_after(WAIT), pytest.raises(httpx.ConnectError):
                await transport.handle_async_request(post(url, pool=0.2))


@pytest.mark.anyio
async def test_a_url_that_is_not_http_is_refused() -> None:
    async with StreamingTransport() as transport:
        with pytest.raises(httpx.UnsupportedProtocol):
            await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/x"))


# The pool limit


@pytest.mark.anyio
async def test_a_request_beyond_max_connections_times_out_in_the_pool() -> None:
    async with upstream(keep_alive) as up, StreamingTransport(max_connections=1) as transport:
        with anyio.fail_after(WAIT):
            held = await transport.handle_async_request(post(up.url))
            started = time.monotonic()
            with pytest.raises(httpx.PoolTimeout):
                await transport.handle_async_request(post(up.url, pool=0.2))
            assert 0.2 <= time.monotonic() - started < 0.2 + SLACK
            await held.aclose()
        # Closed unread, the held connection went away: a new one serves this request.
        assert await fetch(transport, post(up.url, pool=0.2)) == (200, b"connection 1 request 0")


@pytest.mark.anyio
async def test_a_request_waiting_for_the_pool_goes_ahead_when_a_connection_comes_free() -> None:
    results: list[tuple[int, bytes]] = []
    async with upstream(keep_alive) as up, StreamingTransport(max_connections=1) as transport:

        async def second() -> None:
            results.append(await fetch(transport, post(up.url)))

        with anyio.fail_after(WAIT):
            held = await transport.handle_async_request(post(up.url))
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(second)
                await anyio.sleep(0.05)
                assert results == []
                assert await held.aread() == b"connection 0 request 0"
                await held.aclose()
        assert results == [(200, b"connection 0 request 1")]
        assert up.accepted == 1


# What goes up


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        # A line break or NUL in a header value.
        ("POST", {"x-note": "a\r\nInjected: 1"}),
        ("POST", {"x-note": "a\nb"}),
        ("POST", {"x-note": "a\rb"}),
        ("POST", {"x-note": "a\0b"}),
        # A method or field name that is not a token.
        ("GET / HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET", None),
        ("PO ST", None),
        ("POST", {"x-no\nte": "a"}),
        ("POST", {"x-note: y": "a"}),
        ("POST", {"": "a"}),
    ],
)
@pytest.mark.anyio
async def test_a_request_that_could_smuggle_a_line_upstream_is_refused_before_anything_is_sent(
    method: str, headers: dict[str, str] | None
) -> None:
    received: list[bytes] = []

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while (request := await read_request(reader)) is not None:
            received.append(request)
            writer.write(answer(b"ok"))
            await writer.drain()

    async with upstream(handler) as up, StreamingTransport(max_connections=1) as transport:
        with anyio.fail_after(WAIT), pytest.raises(httpx.LocalProtocolError):
            await transport.handle_async_request(post(up.url, headers=headers, method=method))
        # The refused request gave its slot back, and only the next one reached the server.
        assert await fetch(transport, post(up.url, pool=0.2)) == (200, b"ok")
    assert len(received) == 1
    for fragment in (b"Injected", b"X-Evil", b"x-no", b"x-note"):
        assert fragment not in received[0]


@pytest.mark.anyio
async def test_a_streamed_request_body_goes_up_chunked() -> None:
    received: list[bytes] = []

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        request = await read_request(reader)
        assert request is not None
        received.append(request)
        writer.write(answer(b"ok"))
        await writer.drain()

    # An empty piece must not go up as a chunk: a zero-size chunk ends the body.
    body = pieces(b"hello", b"", b"x" * 300)
    async with upstream(handler) as up, StreamingTransport() as transport:
        assert await fetch(transport, post(up.url, body)) == (200, b"ok")
    head, wire = received[0].split(b"\r\n\r\n", 1)
    assert b"\r\nTransfer-Encoding: chunked" in head
    assert b"content-length" not in head.lower()
    assert wire == b"5\r\nhello\r\n12c\r\n" + b"x" * 300 + b"\r\n0\r\n\r\n"
    assert dechunk(wire) == b"hello" + b"x" * 300


@pytest.mark.anyio
async def test_an_in_memory_request_body_goes_up_with_its_length() -> None:
    received: list[bytes] = []

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        request = await read_request(reader)
        assert request is not None
        received.append(request)
        writer.write(answer(b"ok"))
        await writer.drain()

    async with upstream(handler) as up, StreamingTransport() as transport:
        request = post(up.url + "?stream=1", b'{"a": 1}', headers={"X-Note": "n"})
        assert await fetch(transport, request) == (200, b"ok")
    head, wire = received[0].split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n")[0] == b"POST /v1/chat/completions?stream=1 HTTP/1.1"
    assert b"\r\nContent-Length: 8" in head
    assert b"\r\nX-Note: n" in head
    assert wire == b'{"a": 1}'


# Broken answers


@pytest.mark.anyio
async def test_a_body_cut_short_raises_a_remote_protocol_error() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()

    async with upstream(handler) as up, StreamingTransport() as transport:
        with anyio.fail_after(WAIT):
            response = await transport.handle_async_request(post(up.url))
            received: list[bytes] = []
            with pytest.raises(httpx.RemoteProtocolError):
                await read_into(response, received)
            await response.aclose()
        assert b"".join(received) == b"0123456789"


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n", id="bad-status"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", id="bad-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", id="bad-header"),
    ],
)
@pytest.mark.anyio
async def test_invalid_http_from_the_upstream_raises_a_remote_protocol_error(wire: bytes) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        writer.write(wire)
        await writer.drain()
        # Left open: the error must come from the bytes, not from the connection ending.
        await reader.read()

    async with upstream(handler) as up, StreamingTransport(max_connections=1) as transport:
        for _ in range(2):
            with anyio.fail_after(WAIT), pytest.raises(httpx.RemoteProtocolError):
                await transport.handle_async_request(post(up.url, pool=0.2))
        assert up.accepted == 2


@pytest.mark.anyio
async def test_an_upstream_that_hangs_up_without_answering_raises_a_remote_protocol_error() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)

    async with upstream(handler) as up, StreamingTransport() as transport:
        with anyio.fail_after(WAIT), pytest.raises(httpx.RemoteProtocolError):
            await transport.handle_async_request(post(up.url))


@pytest.mark.anyio
async def test_a_head_response_with_a_content_length_has_no_body() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")
            await writer.drain()

    async with upstream(handler) as up, StreamingTransport() as transport:
        request = post(up.url, b"", method="HEAD", read=0.3, write=0.3)
        assert await fetch(transport, request) == (200, b"")


# Closing


@pytest.mark.anyio
async def test_closing_the_transport_closes_its_idle_connections_and_refuses_new_requests() -> None:
    hung_up = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await keep_alive(reader, writer, index)
        hung_up.set()

    async with upstream(handler) as up:
        transport = StreamingTransport()
        assert await fetch(transport, post(up.url)) == (200, b"connection 0 request 0")
        assert not transport.is_closed
        await transport.aclose()
        assert transport.is_closed
        with anyio.fail_after(WAIT):
            await hung_up.wait()
        with pytest.raises(RuntimeError):
            await transport.handle_async_request(post(up.url))
        assert up.accepted == 1


# TLS


@pytest.mark.anyio
async def test_the_tls_context_is_built_once_for_all_the_connections_of_a_transport(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_tls, certificate = server_context(tmp_path)
    # The default verification reads its CA bundle from here, as httpx's: the test's own CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
    built: list[ssl.SSLContext] = []
    create_default_context = ssl.create_default_context

    def counting_create_default_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        context = create_default_context(*args, **kwargs)
        built.append(context)
        return context

    monkeypatch.setattr(ssl, "create_default_context", counting_create_default_context)
    held = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        if index == 4:
            held.set()
        await held.wait()
        writer.write(answer(b"connection %d" % index))
        await writer.drain()

    async with upstream(handler, tls=server_tls) as up, StreamingTransport() as transport:
        # No answer before the fifth request arrives: each opens a connection of its own.
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tasks:
                for _ in range(5):
                    tasks.start_soon(fetch, transport, post(up.url))
        assert up.accepted == 5
        assert len(built) == 1


# Bounds on what an upstream can make the transport hold


def endless_header(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
) -> Awaitable[None]:
    async def handler() -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-huge: ")
        # Far more than the limit, and never ended: only counting the bytes can stop it.
        for _ in range(64):
            writer.write(b"a" * 65536)
            await writer.drain()
        await reader.read()

    return handler()


async def head_error(transport: StreamingTransport, url: str) -> str:
    with anyio.fail_after(WAIT), pytest.raises(httpx.RemoteProtocolError) as raised:
        await transport.handle_async_request(post(url))
    return str(raised.value)


@pytest.mark.anyio
async def test_a_response_header_that_never_ends_fails_once_past_max_header_bytes() -> None:
    async with (
        upstream(endless_header) as up,
        StreamingTransport(max_header_bytes=16384) as transport,
    ):
        message = await head_error(transport, up.url)
    assert "headers are too large" in message
    assert "16384 bytes" in message


@pytest.mark.anyio
async def test_a_whole_response_head_in_one_read_is_held_to_max_header_bytes() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while await read_request(reader) is not None:
            size = 900 if index == 0 else 1100
            writer.write(answer(b"ok", b"x-big: " + b"a" * size))
            await writer.drain()

    async with upstream(handler) as up, StreamingTransport(max_header_bytes=1024) as transport:
        assert await fetch(transport, post(up.url)) == (200, b"ok")
        # Another transport, so another connection: its answer has the larger head.
        async with StreamingTransport(max_header_bytes=1024) as other:
            assert "over 1024 bytes" in await head_error(other, up.url)


@pytest.mark.parametrize(("fields", "refused"), [(100, False), (101, True)])
@pytest.mark.anyio
async def test_a_response_with_more_than_max_headers_fields_fails(
    fields: int, refused: bool
) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        # Content-Length is one of the fields.
        extra = [b"x-n: %d" % n for n in range(fields - 1)]
        writer.write(answer(b"ok", *extra))
        await writer.drain()
        await reader.read()

    async with upstream(handler) as up, StreamingTransport(max_headers=100) as transport:
        if refused:
            assert "more than 100 header fields" in await head_error(transport, up.url)
        else:
            assert await fetch(transport, post(up.url)) == (200, b"ok")


@pytest.mark.anyio
async def test_proxyapp_answers_an_oversized_upstream_head_with_a_502_that_says_so() -> None:
    async with upstream(endless_header) as up:
        base = up.url.removesuffix("/chat/completions")
        async with ProxyApp(base, max_header_bytes=16384) as proxy:
            transport = httpx.ASGITransport(app=proxy)
            async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
                with anyio.fail_after(WAIT):
                    response = await client.post("/v1/chat/completions", json={})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_invalid_response"
    assert "headers are too large" in error["message"]
    assert "x-huge" not in response.headers


async def proxy_post(base: str) -> httpx.Response:
    async with ProxyApp(base) as proxy:
        transport = httpx.ASGITransport(app=proxy)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            with anyio.fail_after(WAIT):
                return await client.post("/v1/chat/completions", json={})


@pytest.mark.anyio
async def test_proxyapp_refuses_a_compressed_body_it_did_not_ask_for_with_a_502_naming_it() -> None:
    # 100 MB of zeros in 100 KB: decoded, such a body would grow the gateway by its full size.
    bomb = gzip.compress(b"\0" * (100 * 1024 * 1024), compresslevel=9)

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        request = await read_request(reader)
        assert request is not None
        assert b"\r\naccept-encoding: identity\r\n" in request.lower()
        writer.write(answer(bomb, b"Content-Encoding: gzip"))
        await writer.drain()
        await reader.read()

    async with upstream(handler) as up:
        response = await proxy_post(up.url.removesuffix("/chat/completions"))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_invalid_response"
    assert "'gzip'-encoded body" in error["message"]


@pytest.mark.anyio
async def test_proxyapp_relays_a_body_marked_identity_encoded() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        writer.write(answer(b'{"ok": true}', b"Content-Encoding: identity"))
        await writer.drain()
        await reader.read()

    async with upstream(handler) as up:
        response = await proxy_post(up.url.removesuffix("/chat/completions"))
    assert response.status_code == 200
    assert response.json() == {"ok": True}
