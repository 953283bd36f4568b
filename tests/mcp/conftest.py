"""Servers for the MCP client tests: the real MCP server of ``tests/mcp_server.py`` as a
subprocess, and a raw-socket listener that counts connections and records what arrives.

``mcp_server`` and ``mcp_sse_server`` (module-scoped) yield the server's base URL,
``http://127.0.0.1:<port>``; its MCP endpoint is ``/mcp`` or ``/sse``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.faults.harness import ServerProcess
from tests.tls import self_signed

pytest.importorskip("mcp")

SERVER = Path(__file__).resolve().parents[1] / "mcp_server.py"
#: The Python that runs the server: the client's lower-bound run (``test_lowest_mcp.py``)
#: tests an old client against the server of today's mcp.
SERVER_PYTHON = os.environ.get("MCP_SERVER_PYTHON") or sys.executable


@functools.cache
def server_mcp_major() -> int:
    """The major version of the mcp package the test server runs on."""
    code = "import importlib.metadata as m; print(m.version('mcp'))"
    found = subprocess.run([SERVER_PYTHON, "-c", code], capture_output=True, text=True, check=True)
    return int(found.stdout.split(".")[0])


class McpServerProcess(ServerProcess):
    """``python tests/mcp_server.py --port 0 --transport T``, stopped by pid on exit."""

    def __init__(self, transport: str, *options: str) -> None:
        super().__init__("mcp")
        self._cmd = [SERVER_PYTHON, str(SERVER), "--port", "0", "--transport", transport]
        self._cmd.extend(options)


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[str]:
    with McpServerProcess("streamable-http") as server:
        yield server.url


@pytest.fixture(scope="module")
def mcp_sse_server() -> Iterator[str]:
    with McpServerProcess("sse") as server:
        yield server.url


#: The name the HTTPS server's certificate is for, and the only one: not 127.0.0.1.
TLS_NAME = "mcp.pinned.test"


@pytest.fixture(scope="module")
def mcp_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """An HTTPS MCP server on 127.0.0.1 whose certificate names only ``TLS_NAME``: its port,
    and the certificate (its own authority)."""
    cert, key = self_signed(tmp_path_factory.mktemp("mcp-tls"), TLS_NAME, loopback=False)
    options = ("--certfile", str(cert), "--keyfile", str(key))
    with McpServerProcess("streamable-http", *options) as server:
        yield server.port, cert


@dataclass
class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts and records each
    request head; it answers with ``reply`` (raw bytes) or, when that is ``None``, closes
    the connection without a word."""

    reply: bytes | None = None
    accepted: int = 0
    heads: list[bytes] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    state = Listener(port=server.getsockname()[1])
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                request += chunk
            head, _, body = request.partition(b"\r\n\r\n")
            state.heads.append(head)
            length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            while length is not None and len(body) < int(length.group(1)):
                body += conn.recv(65536)
            if state.reply is not None:
                conn.sendall(state.reply)

    def serve_forever() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            state.accepted += 1
            with contextlib.suppress(OSError):
                answer(conn)

    thread = threading.Thread(target=serve_forever, daemon=True, name="mcp-test-listener")
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(10)
        server.close()
