"""A real MCP server for the tests, built with the ``mcp`` package (1.x's FastMCP or 2.x's
MCPServer), served by uvicorn on 127.0.0.1::

    python tests/mcp_server.py --port 0 [--transport streamable-http|sse]
        [--certfile CERT --keyfile KEY]

``--page-size N`` serves, instead, a tool list in pages of ``N`` (mcp 2.x only).
``--port 0`` picks a free port; the server prints ``PORT <n>`` once it listens. With a
certificate it serves HTTPS and accepts any ``Host`` (tests reach it under made-up names). The MCP
endpoint is ``/mcp`` (streamable HTTP) or ``/sse`` (SSE). Tools:

- ``add(a, b)``: the sum (annotated read-only);
- ``echo_headers()``: the HTTP headers of the request that carried the call, as JSON;
- ``slow(seconds)``: answers after ``seconds``;
- ``fail()``: a tool error (``isError``);
- ``big(n)``: ``n`` bytes of text;
- ``picture()``: a small PNG image, and no text.

Besides MCP, for the redirect rules of the gateway's client: ``/redirect?to=URL`` answers
``307`` to ``URL``, and ``/slash`` answers ``307`` to ``/slash/``, another name of the MCP
endpoint. ``GET /stats`` answers what the server was asked, for the tool loop's tests:
``{"methods": {"tools/list": n, "tools/call": n, ...}, "headers": {...}}`` (the headers of
the last MCP request, lower-cased).
"""

# No `from __future__ import annotations`: FastMCP (1.x) finds the Context parameter by
# its annotation at runtime.
import argparse
import importlib.metadata
import importlib.util
import json
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

# Run as a script, this file's folder (tests/) is first on sys.path, and tests/mcp/ (the
# client's tests) would shadow the mcp package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import anyio
import uvicorn

MCP_MAJOR = int(importlib.metadata.version("mcp").split(".")[0])

if MCP_MAJOR >= 2:
    from mcp.server.mcpserver import Context, Image
    from mcp.server.mcpserver import MCPServer as Server
    from mcp.types import ToolAnnotations
else:  # pragma: no cover - the 1.x lower bound runs in a venv of its own
    from mcp.server.fastmcp import Context, Image  # type: ignore[no-redef]
    from mcp.server.fastmcp import FastMCP as Server  # type: ignore[no-redef]
    from mcp.types import ToolAnnotations

#: The smallest valid PNG (1x1, transparent).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000105de2b8a0000000049454e44ae426082"
)


def build_server(**options: Any) -> Any:
    server = Server("stream-mw-tests", **options)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True))
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def echo_headers(ctx: Context) -> str:  # type: ignore[type-arg]
        """The HTTP headers this call arrived with."""
        request = ctx.request_context.request
        headers = dict(getattr(request, "headers", {}) or {})
        return json.dumps(headers, sort_keys=True)

    @server.tool()
    async def slow(seconds: float) -> str:
        """Answer after a while."""
        await anyio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool()
    def fail() -> str:
        """Always fails."""
        raise ValueError("this tool always fails")

    @server.tool()
    def big(n: int) -> str:
        """n bytes of text."""
        return "x" * n

    @server.tool()
    def picture() -> Image:
        """A tiny image."""
        return Image(data=PNG, format="png")

    return server


def build_app(transport: str, *, any_host: bool = False) -> Any:
    server_options: dict[str, Any] = {}
    app_options: dict[str, Any] = {}
    if MCP_MAJOR >= 2:
        app_options["host"] = "127.0.0.1"
        if any_host:
            app_options["transport_security"] = open_hosts()
    elif any_host and importlib.util.find_spec("mcp.server.transport_security") is not None:
        # 1.x takes it on the server; before 1.10 there is no Host check to open.
        server_options["transport_security"] = open_hosts()
    server = build_server(**server_options)
    if transport == "sse":
        app = server.sse_app(**app_options)
    else:
        app = server.streamable_http_app(**app_options)
    return AroundMcp(app, "/sse" if transport == "sse" else "/mcp")


def open_hosts() -> Any:
    """Transport security that accepts any ``Host``: tests reach the server under names
    they made up (and resolve to 127.0.0.1 themselves)."""
    from mcp.server.transport_security import TransportSecuritySettings

    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


def build_paged_app(page_size: int) -> Any:
    """A low-level server (mcp 2.x) that lists ``tool_0`` ... ``tool_<2 * page_size>`` in
    pages of ``page_size`` (so three pages), for the client's pagination."""
    from mcp import types
    from mcp.server.lowlevel import Server as LowLevelServer

    names = [f"tool_{i}" for i in range(2 * page_size + 1)]

    async def list_tools(ctx: Any, params: Any) -> Any:
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + page_size
        return types.ListToolsResult.model_validate(
            {
                "tools": [
                    {"name": name, "inputSchema": {"type": "object"}} for name in names[start:end]
                ],
                "nextCursor": str(end) if end < len(names) else None,
            }
        )

    server = LowLevelServer("stream-mw-tests-paged", on_list_tools=list_tools)
    return server.streamable_http_app(host="127.0.0.1")


class AroundMcp:
    """The routes around the MCP app: ``/redirect?to=URL`` answers 307 to ``URL``;
    ``/slash`` answers 307 to ``/slash/``, which serves the MCP endpoint (as 1.x servers
    mounted at ``/mcp/`` do); ``/stats`` says what the MCP app was asked (every POST's
    JSON-RPC methods are counted on the way); everything else goes to the MCP app."""

    def __init__(self, app: Any, endpoint: str) -> None:
        self.app = app
        self.endpoint = endpoint
        self.methods: dict[str, int] = {}
        self.headers: dict[str, str] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/stats":
            body = json.dumps({"methods": self.methods, "headers": self.headers}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            receive = self._counting(scope, receive)
        if scope["type"] == "http" and scope["path"] == "/redirect":
            query = parse_qs(scope.get("query_string", b"").decode())
            target = query.get("to", ["/"])[0]
            await send(
                {
                    "type": "http.response.start",
                    "status": 307,
                    "headers": [(b"location", target.encode()), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["type"] == "http" and scope["path"] == "/slash":
            await send(
                {
                    "type": "http.response.start",
                    "status": 307,
                    "headers": [(b"location", b"/slash/"), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["type"] == "http" and scope["path"] == "/slash/":
            scope = {**scope, "path": self.endpoint, "raw_path": self.endpoint.encode()}
        await self.app(scope, receive, send)

    def _counting(self, scope: Any, receive: Any) -> Any:
        """``receive``, noting each JSON-RPC method the request body carries."""
        parts: list[bytes] = []

        async def counted() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self._note(scope, b"".join(parts))
            return message

        return counted

    def _note(self, scope: Any, body: bytes) -> None:
        try:
            payload = json.loads(body)
        except ValueError:
            return
        for call in payload if isinstance(payload, list) else [payload]:
            method = call.get("method") if isinstance(call, dict) else None
            if isinstance(method, str):
                self.methods[method] = self.methods.get(method, 0) + 1
        self.headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--page-size", type=int, help="serve only a paged tool list (mcp 2.x), N tools a page"
    )
    parser.add_argument("--certfile", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--keyfile", help="and this key (PEM)")
    parser.add_argument(
        "--transport", choices=["streamable-http", "sse"], default="streamable-http"
    )
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    config = uvicorn.Config(
        build_paged_app(args.page_size)
        if args.page_size
        else build_app(args.transport, any_host=bool(args.certfile)),
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
