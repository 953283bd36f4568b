"""Remote MCP tools: the gateway lists an MCP server's tools, calls them and feeds the results
back to the model, inside one response.

One process serves both sides, so it runs with no model and no other server: a tiny MCP
server (built with the ``mcp`` package, 2.x) on ``/tools/mcp``, and the Responses API in
front of the embedded demo backend, which calls a tool when your message names it. The MCP
server's URL is the one entry of ``mcp_servers``: without it, the request is refused.

Run it (needs ``pip install "stream-mw[gateway,mcp]"``)::

    python examples/06_remote_mcp_tools.py

Then ask for a word count; the stream shows ``mcp_list_tools``, an ``mcp_call`` with its
output, and the answer::

    curl -sN http://127.0.0.1:8000/v1/responses -H 'content-type: application/json' -d '{
      "model": "demo", "stream": true,
      "input": "Use demo__word_count on `the quick brown fox`",
      "tools": [{"type": "mcp", "server_label": "demo",
                 "server_url": "http://127.0.0.1:8000/tools/mcp", "require_approval": "never"}]}'
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from stream_mw import ResponsesMiddleware
from stream_mw.upstreams import ScriptedBackend


def build_app(port: int = 8000) -> ASGIApp:
    """The demo backend and the MCP server behind the middleware, for a server on ``port``."""
    tools = MCPServer("stream-mw-example")

    @tools.tool()
    def word_count(text: str) -> int:
        """How many words ``text`` has."""
        return len(text.split())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with tools.session_manager.run():
            yield

    inner = Starlette(
        routes=[
            Mount("/tools", tools.streamable_http_app(host="127.0.0.1")),
            Mount("/", ScriptedBackend.demo()),
        ],
        lifespan=lifespan,
    )
    return ResponsesMiddleware(inner, mcp_servers=(f"http://127.0.0.1:{port}/tools/mcp",))


app = build_app()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
