"""Fixtures of the servers in ``tests/mcp/servers.py``.

``mcp_server`` and ``mcp_sse_server`` (module-scoped) yield the server's base URL,
``http://127.0.0.1:<port>``; its MCP endpoint is ``/mcp`` or ``/sse``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mcp.servers import TLS_NAME, Listener, McpServerProcess, listening
from tests.tls import self_signed

pytest.importorskip("mcp")


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[str]:
    with McpServerProcess("streamable-http") as server:
        yield server.url


@pytest.fixture(scope="module")
def mcp_sse_server() -> Iterator[str]:
    with McpServerProcess("sse") as server:
        yield server.url


@pytest.fixture(scope="module")
def mcp_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """An HTTPS MCP server on 127.0.0.1 whose certificate names only ``TLS_NAME``: its port,
    and the certificate (its own authority)."""
    cert, key = self_signed(tmp_path_factory.mktemp("mcp-tls"), TLS_NAME, loopback=False)
    options = ("--certfile", str(cert), "--keyfile", str(key))
    with McpServerProcess("streamable-http", *options) as server:
        yield server.port, cert


@pytest.fixture
def listener() -> Iterator[Listener]:
    with listening() as state:
        yield state
