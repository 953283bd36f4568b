"""Servers for MCP tests, to import: the real MCP server of ``tests/mcp_server.py`` as a
subprocess (``McpServerProcess``), and a raw-socket ``Listener`` that counts connections and
records what arrives. ``tests/mcp/conftest.py`` makes fixtures of them; tests elsewhere (the
gateway's tool loop end to end) may use them directly::

    with McpServerProcess("streamable-http") as server:
        url = server.url + "/mcp"
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

from tests.faults.harness import ServerProcess

__all__ = [
    "SERVER",
    "SERVER_PYTHON",
    "TLS_NAME",
    "Listener",
    "McpServerProcess",
    "listening",
    "server_mcp_major",
]

SERVER = Path(__file__).resolve().parents[1] / "mcp_server.py"
#: The Python that runs the server: the client's lower-bound run (``test_lowest_mcp.py``)
#: tests an old client against the server of today's mcp.
SERVER_PYTHON = os.environ.get("MCP_SERVER_PYTHON") or sys.executable
#: The name the HTTPS server's certificate is for, and the only one: not 127.0.0.1.
TLS_NAME = "mcp.pinned.test"


@functools.cache
def server_mcp_major() -> int:
    """The major version of the mcp package the test server runs on."""
    code = "import importlib.metadata as m; print(m.version('mcp'))"
    found = subprocess.run([SERVER_PYTHON, "-c", code], capture_output=True, text=True, check=True)
    return int(found.stdout.split(".")[0])


class McpServerProcess(ServerProcess):
    """``python tests/mcp_server.py --port 0 --transport T [OPTIONS]`` on 127.0.0.1, stopped
    by pid on exit; ``url`` is its base URL (the MCP endpoint is ``/mcp`` or ``/sse``)."""

    def __init__(self, transport: str, *options: str) -> None:
        super().__init__("mcp")
        self._cmd = [SERVER_PYTHON, str(SERVER), "--port", "0", "--transport", transport]
        self._cmd.extend(options)


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


@contextlib.contextmanager
def listening() -> Iterator[Listener]:
    """A ``Listener``, accepting in a thread of its own until the block ends."""
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
