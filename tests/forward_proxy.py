"""A small HTTP forward proxy on loopback, as corporate networks put between a gateway and
the internet: absolute-form requests for ``http`` targets, ``CONNECT`` tunnels for the rest.

It resolves host names itself, from ``hosts`` first (so a made-up name such as
``upstream.test`` reaches a local server only through it), and records what it was asked.
With ``credentials`` it requires ``Proxy-Authorization: Basic`` and answers 407 without.
Each forwarded request gets ``Connection: close``: one request per proxied connection keeps
the relay a plain byte pipe.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Seen:
    """One request the proxy received."""

    method: str
    target: str
    proxy_authorization: str | None


@dataclass
class ForwardProxy:
    url: str
    seen: list[Seen] = field(default_factory=list)


@contextlib.contextmanager
def forward_proxy(
    hosts: Mapping[str, str] | None = None, credentials: tuple[str, str] | None = None
) -> Iterator[ForwardProxy]:
    """Run the proxy on ``127.0.0.1`` in a thread of its own for the ``with`` block."""
    names = dict(hosts or {})
    expected = (
        "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        if credentials is not None
        else None
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    proxy = ForwardProxy(f"http://127.0.0.1:{sock.getsockname()[1]}")
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stopping = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _serve_one(reader, writer, names, expected, proxy.seen)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=sock)
        started.set()
        await stopping.wait()
        server.close()
        # Connections still open (a pooled upstream connection) are ended, and waited for.
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield proxy
    finally:
        loop.call_soon_threadsafe(stopping.set)
        thread.join(10)
        loop.close()


async def _serve_one(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    hosts: Mapping[str, str],
    expected: str | None,
    seen: list[Seen],
) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
    method, target, version = request_line.split(" ")
    headers = [line.split(":", 1) for line in header_lines]
    found = [value.strip() for name, value in headers if name.lower() == "proxy-authorization"]
    authorization = found[0] if found else None
    seen.append(Seen(method, target, authorization))
    if expected is not None and authorization != expected:
        writer.write(
            b"HTTP/1.1 407 Proxy Authentication Required\r\n"
            b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n'
            b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        return
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        upstream = await _open(host.strip("[]"), int(port), hosts, writer)
        if upstream is None:
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _pipe(reader, writer, *upstream)
        return
    parts = urlsplit(target)
    if parts.scheme != "http" or not parts.hostname:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return
    upstream = await _open(parts.hostname, parts.port or 80, hosts, writer)
    if upstream is None:
        return
    origin_form = parts.path + (f"?{parts.query}" if parts.query else "")
    kept = [
        f"{name}:{value}"
        for name, value in headers
        if name.lower() not in ("proxy-authorization", "proxy-connection", "connection")
    ]
    rewritten = "\r\n".join([f"{method} {origin_form} {version}", *kept, "Connection: close"])
    upstream[1].write(rewritten.encode("latin-1") + b"\r\n\r\n")
    await _pipe(reader, writer, *upstream)


async def _open(
    host: str, port: int, hosts: Mapping[str, str], writer: asyncio.StreamWriter
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        return await asyncio.open_connection(hosts.get(host, host), port)
    except OSError:
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return None


async def _pipe(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            with contextlib.suppress(OSError):
                sink.write_eof()

    try:
        await asyncio.gather(
            copy(client_reader, upstream_writer), copy(upstream_reader, client_writer)
        )
    finally:
        upstream_writer.close()
