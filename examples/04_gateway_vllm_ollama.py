"""The gateway in code: ``ResponsesMiddleware`` + ``ProxyApp`` in front of vLLM or Ollama.

``stream-mw serve --upstream URL`` does the same from the command line; build it yourself to
add your own routes, authentication or settings. ``ProxyApp`` streams both ways through one
pooled httpx client that the server's lifespan opens and closes.

The upstream comes from ``UPSTREAM_URL``: Ollama's ``http://localhost:11434/v1`` by default,
``http://localhost:8000/v1`` for vLLM, ``http://localhost:8080/v1`` for llama.cpp.
``UPSTREAM_API_KEY``, when set, is sent upstream instead of the client's key.

Run it (needs ``pip install "stream-mw[gateway]"``, and a model server)::

    ollama serve & ollama pull llama3.2
    python examples/04_gateway_vllm_ollama.py

Then::

    curl -sN http://127.0.0.1:9000/v1/responses -H 'content-type: application/json' \\
      -d '{"model": "llama3.2", "input": "Why is the sky blue?", "stream": true}'
"""

from __future__ import annotations

import os

from starlette.types import ASGIApp

from stream_mw import ResponsesMiddleware
from stream_mw.upstreams.proxy import ProxyApp


def build_app(upstream: str | None = None, api_key: str | None = None) -> ASGIApp:
    """The gateway app for ``upstream`` (default: ``UPSTREAM_URL`` or Ollama's local URL)."""
    proxy = ProxyApp(
        upstream or os.environ.get("UPSTREAM_URL", "http://localhost:11434/v1"),
        api_key=api_key or os.environ.get("UPSTREAM_API_KEY"),
        connect_timeout=5.0,
        # Local models can think for a long time before their first token.
        read_timeout=600.0,
    )
    # Codex shows reasoning summaries; vLLM and Ollama stream reasoning models' thoughts.
    return ResponsesMiddleware(proxy, reasoning_events="summary")


app = build_app()


if __name__ == "__main__":
    import uvicorn

    # Port 9000: vLLM's own default is 8000.
    uvicorn.run(app, host="127.0.0.1", port=9000)
