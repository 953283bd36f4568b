"""The ``stream-mw`` command line: commands, options and their help."""

from __future__ import annotations

import argparse
import os

from .. import __version__
from ._common import (
    ENV_GRACEFUL_TIMEOUT,
    ENV_HEADER_TIMEOUT,
    ENV_HOST,
    ENV_MAX_CONNECTIONS,
    ENV_MAX_HEADER_BYTES,
    ENV_MAX_HEADERS,
    ENV_PORT,
    LOG_LEVELS,
    port_number,
    positive_float,
    positive_int,
    seconds,
)
from .convert import convert_command
from .scripted import scripted_command
from .serve import serve_command

_DESCRIPTION = """\
Put the OpenAI Responses API (what Codex CLI, the OpenAI Agents SDK and
client.responses.* speak) in front of any Chat Completions server."""

_MAIN_EPILOG = """\
start here:
  stream-mw serve    # a Responses gateway on a demo backend, no model needed

Run `stream-mw COMMAND --help` for the options and examples of each command."""

_SERVE_EPILOG = """\
examples:
  stream-mw serve                                        # demo backend, no model needed
  stream-mw serve --upstream http://localhost:8000/v1 --port 9000  # vLLM (on 8000)
  stream-mw serve --upstream http://localhost:11434/v1   # Ollama
  stream-mw serve --upstream http://localhost:8080/v1    # llama.cpp server
  stream-mw serve --upstream http://localhost:1234/v1    # LM Studio
  STREAM_MW_UPSTREAM_API_KEY=sk-... stream-mw serve --upstream https://api.example.com/v1
  stream-mw serve --litellm-model ollama_chat/llama3.1   # any LiteLLM provider
  stream-mw serve --script turns.json                    # replay scripted turns
  stream-mw serve --config gateway.toml                  # several upstreams, by model
  STREAM_MW_KEEPALIVE_INTERVAL=5 stream-mw serve --port 9000 --workers 4

Then point a Responses client at http://127.0.0.1:8000/v1, for example Codex CLI:
  codex -c model_provider=mw -c 'model_providers.mw.name="mw"' \\
    -c 'model_providers.mw.base_url="http://127.0.0.1:8000/v1"' \\
    -c 'model_providers.mw.wire_api="responses"' -m YOUR-MODEL

Middleware settings come from STREAM_MW_* environment variables (see the README's
settings table); the options above also have one: STREAM_MW_UPSTREAM,
STREAM_MW_UPSTREAM_API_KEY, STREAM_MW_LITELLM_MODEL, STREAM_MW_LITELLM_KWARGS,
STREAM_MW_SCRIPT, STREAM_MW_CONFIG, STREAM_MW_CONNECT_TIMEOUT, STREAM_MW_READ_TIMEOUT,
STREAM_MW_CA_BUNDLE, STREAM_MW_HOST, STREAM_MW_PORT, STREAM_MW_MAX_HEADER_BYTES,
STREAM_MW_MAX_HEADERS, STREAM_MW_HEADER_TIMEOUT, STREAM_MW_MAX_CONNECTIONS,
STREAM_MW_GRACEFUL_TIMEOUT.

A --script file is a JSON list of turns, one per model request, for example:
  [{"tool_call": {"name": "exec_command", "arguments": {"cmd": "ls"}}},
   {"text": "Listed the files.", "reasoning": "The user wants a listing."}]
Turn keys: text, reasoning, tool_call(s), finish_reason, usage, fragments, error,
status, delay, chunk_delay, drop_after, model."""

_CONVERT_EPILOG = """\
examples:
  stream-mw convert < chat.sse > responses.sse
  stream-mw convert --request request.json --response-id resp_1 --created-at 0 < chat.sse
  curl -sN http://localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}' \\
    | stream-mw convert

The input is the raw SSE body of a streamed /v1/chat/completions response
("data: {...}" lines); the output is what ResponsesMiddleware would send a client.
The exit status is 1 when the stream ended with response.failed, else 0."""

_SCRIPTED_EPILOG = """\
examples:
  stream-mw scripted --port 9000                     # the demo script
  stream-mw scripted --port 9000 --script turns.json
  stream-mw serve --upstream http://127.0.0.1:9000/v1  # the gateway in front of it

GET /scripted_command/requests lists the Chat Completions requests received (credentials
redacted). See `stream-mw serve --help` for the script format."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-mw",
        description=_DESCRIPTION,
        epilog=_MAIN_EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"stream-mw {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the Responses gateway",
        description="Run a Responses API gateway: uvicorn + ResponsesMiddleware + an upstream.\n"
        "With no upstream option it serves an embedded demo backend.",
        epilog=_SERVE_EPILOG,
        formatter_class=_Formatter,
    )
    source = serve.add_argument_group("upstream (choose at most one)")
    source.add_argument(
        "--upstream",
        metavar="URL",
        help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1 [STREAM_MW_UPSTREAM]",
    )
    source.add_argument(
        "--litellm-model",
        metavar="MODEL",
        help="serve a LiteLLM model, e.g. anthropic/claude-sonnet-4-5 (needs stream-mw[litellm])",
    )
    source.add_argument(
        "--script", metavar="FILE", help="replay scripted turns from a JSON file (see below)"
    )
    source.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file of upstreams routed by model, and settings (see the README's "
        "Running in production) [STREAM_MW_CONFIG]",
    )
    upstream = serve.add_argument_group("upstream options")
    upstream.add_argument(
        "--api-key",
        metavar="KEY",
        help="key sent upstream; prefer STREAM_MW_UPSTREAM_API_KEY (the client's "
        "Authorization header is forwarded when no key is set)",
    )
    upstream.add_argument(
        "--litellm-kwargs",
        metavar="JSON",
        help='extra litellm.acompletion arguments, e.g. \'{"api_base": "http://host:4000"}\'',
    )
    upstream.add_argument(
        "--connect-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="seconds to connect to the upstream (default 5)",
    )
    upstream.add_argument(
        "--read-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="seconds of upstream silence tolerated (default 300)",
    )
    upstream.add_argument(
        "--ca-bundle",
        metavar="FILE",
        help="PEM file of the authorities trusted for an https upstream (default: "
        "SSL_CERT_FILE, SSL_CERT_DIR, else certifi's) [STREAM_MW_CA_BUNDLE]",
    )
    server = _add_server_options(serve)
    server.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="worker processes (default 1; more need a sqlite:// or redis:// store_url)",
    )
    server.add_argument(
        "--graceful-timeout",
        type=seconds,
        default=os.environ.get(ENV_GRACEFUL_TIMEOUT) or "20",
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, seconds responses in flight get to finish before they are "
        "ended with response.failed (default 20) [STREAM_MW_GRACEFUL_TIMEOUT]",
    )
    server.add_argument(
        "--metrics",
        action="store_true",
        help="serve Prometheus metrics on GET /metrics (needs stream-mw[metrics]) "
        "[STREAM_MW_METRICS]",
    )
    server.add_argument(
        "--client-keys",
        metavar="FILE",
        help="require Authorization: Bearer <key> with a key from FILE (one per line, "
        "optionally followed by a name) [STREAM_MW_CLIENT_KEYS]",
    )
    server.add_argument(
        "--mcp-server",
        action="append",
        dest="mcp_servers",
        metavar="URL",
        help="an MCP server URL requests' mcp tools may name (exact, or a prefix ending in "
        "'/'); repeat for more; loopback and private hosts only when named (needs "
        "stream-mw[mcp]) [STREAM_MW_MCP_SERVERS]",
    )
    server.add_argument(
        "--cors-origins",
        metavar="ORIGINS",
        help="comma-separated browser origins allowed by CORS, or '*' [STREAM_MW_CORS_ORIGINS]",
    )
    clients = serve.add_argument_group("client limits (per worker)")
    clients.add_argument(
        "--max-header-bytes",
        type=positive_int,
        default=os.environ.get(ENV_MAX_HEADER_BYTES) or "65536",
        metavar="N",
        help="bytes a request head may take; larger gets a 431 (default 65536) "
        "[STREAM_MW_MAX_HEADER_BYTES]",
    )
    clients.add_argument(
        "--max-headers",
        type=positive_int,
        default=os.environ.get(ENV_MAX_HEADERS) or "100",
        metavar="N",
        help="header fields a request may have; more gets a 431 (default 100) "
        "[STREAM_MW_MAX_HEADERS]",
    )
    clients.add_argument(
        "--header-timeout",
        type=positive_float,
        default=os.environ.get(ENV_HEADER_TIMEOUT) or "10",
        metavar="SECONDS",
        help="seconds a client has to send a request head; later gets a 408 (default 10) "
        "[STREAM_MW_HEADER_TIMEOUT]",
    )
    clients.add_argument(
        "--max-connections",
        type=positive_int,
        default=os.environ.get(ENV_MAX_CONNECTIONS) or None,
        metavar="N",
        help="client connections open at once; more get a 503 (default: the open-file "
        "limit less 160) [STREAM_MW_MAX_CONNECTIONS]",
    )
    serve.set_defaults(handler=serve_command)

    convert = commands.add_parser(
        "convert",
        help="convert a recorded Chat Completions stream (stdin) to Responses events (stdout)",
        description="Run the stream converter over a recorded Chat Completions SSE stream read\n"
        "from stdin, and write the Responses API SSE stream to stdout.",
        epilog=_CONVERT_EPILOG,
        formatter_class=_Formatter,
    )
    convert.add_argument(
        "--request",
        metavar="FILE",
        help="the Responses request (JSON) the stream answers: its parameters are echoed and "
        "its tools name the calls",
    )
    convert.add_argument(
        "--settings-from-env",
        action="store_true",
        help="read STREAM_MW_* settings from the environment (default: built-in defaults)",
    )
    convert.add_argument(
        "--response-id", metavar="ID", help="use this response id (reproducible output)"
    )
    convert.add_argument(
        "--created-at",
        type=int,
        metavar="UNIX_TIME",
        help="use this created_at, and completed_at (reproducible output)",
    )
    convert.set_defaults(handler=convert_command)

    scripted = commands.add_parser(
        "scripted",
        help="serve the scripted Chat Completions backend alone",
        description="Serve the scripted Chat Completions backend on its own: a stand-in\n"
        "OpenAI-compatible server for demos and tests (no Responses translation).",
        epilog=_SCRIPTED_EPILOG,
        formatter_class=_Formatter,
    )
    scripted.add_argument("--script", metavar="FILE", help="JSON file of turns (default: demo)")
    scripted.add_argument(
        "--repeat",
        choices=("last", "cycle"),
        default="last",
        help="after the last turn: repeat it, or start over (default last)",
    )
    _add_server_options(scripted)
    scripted.set_defaults(handler=scripted_command)
    return parser


def _add_server_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    server = parser.add_argument_group("server")
    server.add_argument(
        "--host",
        default=os.environ.get(ENV_HOST) or "127.0.0.1",
        help="interface to listen on (default 127.0.0.1) [STREAM_MW_HOST]",
    )
    # argparse converts a string default with ``type``, so a bad STREAM_MW_PORT is reported
    # like a bad --port.
    server.add_argument(
        "--port",
        type=port_number,
        default=os.environ.get(ENV_PORT) or "8000",
        help="port to listen on; 0 picks a free one (default 8000) [STREAM_MW_PORT]",
    )
    server.add_argument(
        "--log-level",
        choices=tuple(LOG_LEVELS),
        default="info",
        help="level of stream_mw's and uvicorn's logs (default info: one line per request)",
    )
    server.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per line (default text)",
    )
    server.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log one line per request (default on)",
    )
    return server
