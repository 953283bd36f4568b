"""One frozen, validated ``Settings``: from keywords, the environment or a Starlette Config.

Every component takes a ``Settings`` and precomputes what it derives from it once, so nothing
reads configuration per request. ``Settings.from_env()`` and ``Settings.from_config()`` read
the same field names, upper-cased with the ``STREAM_MW_`` prefix
(``STREAM_MW_KEEPALIVE_INTERVAL=5``), through one parser, so all three ways in agree.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import types
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin, get_type_hints

from ._auth import ClientKeys
from ._errors import ConfigurationError
from ._observe import logger

if TYPE_CHECKING:
    from starlette.config import Config
    from starlette.types import Scope

    from ._observe import ResponseRecord

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "STREAM_MW_"

_MiB = 1024 * 1024
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NONE = frozenset({"", "none", "null"})
# A shorter HMAC key could be guessed; 16 characters of a random string are plenty.
_MIN_KEY_CHARS = 16


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Configuration for the middleware, the converter and the gateway.

    All fields have defaults that suit Codex, the openai SDK and the Agents SDK against a
    vLLM/Ollama/llama.cpp/LiteLLM backend. Invalid values raise ``ConfigurationError`` naming
    the field. The README's settings table documents every field.
    """

    # --- routing ---------------------------------------------------------------------------
    #: URL prefix of the Responses routes: ``POST {path_prefix}/responses`` and friends.
    path_prefix: str = "/v1"
    #: Path the translated Chat Completions request is sent to inside the wrapped app.
    chat_completions_path: str = "/v1/chat/completions"

    # --- limits (Guarantee 9: every buffer is bounded) -------------------------------------
    #: Largest accepted Responses request body, in bytes (413 above it). Codex resends the
    #: whole conversation each turn, so this is generous.
    max_request_bytes: int = 32 * _MiB
    #: Largest single upstream SSE event, in bytes; a larger one fails the response.
    max_event_bytes: int = 8 * _MiB
    #: Largest arguments string of one tool call, in bytes; a larger one fails the response.
    max_argument_bytes: int = 8 * _MiB
    #: Largest upstream event stream one response may read, in bytes; a longer one fails
    #: the response. Its whole output is held until the final Response object is sent (a
    #: 300 MB stream took 2.8 GB); a real answer of 100,000 tokens is ~20 MB of events.
    max_response_bytes: int = 64 * _MiB

    # --- the emitted stream ----------------------------------------------------------------
    #: Send ``data: [DONE]`` after the terminal event (Open Responses requires it; harmless
    #: to the openai SDK, the Agents SDK and Codex).
    done_marker: bool = True
    #: How upstream reasoning is streamed: ``"summary"`` (``response.reasoning_summary_text.*``)
    #: or ``"text"`` (``response.reasoning_text.*``). Summary is the default because it is what
    #: clients display: all ten tested show it, while only three show raw reasoning text
    #: (README, "Reasoning events").
    reasoning_events: Literal["text", "summary"] = "summary"
    #: Treat ``<think>...</think>`` inside ``content`` as reasoning (DeepSeek-R1 style models
    #: served without a reasoning parser).
    think_tags: bool = False
    #: Send ``function_call_arguments.done`` and ``output_item.done`` (status ``incomplete``)
    #: for tool calls whose arguments were cut short. Off by default: Codex executes a call
    #: the moment ``output_item.done`` arrives, and other clients build a call from
    #: ``function_call_arguments.done``.
    close_partial_tool_calls: bool = False
    #: Send an ``error`` event (flat and nested fields, see ``_stream``) before
    #: ``response.failed``. Off by default: the openai SDKs raise ``APIError`` on it instead
    #: of reporting the failed response.
    error_event: bool = False
    #: Seconds of upstream silence after which a ``response.in_progress`` keep-alive event is
    #: sent (comments do not reset Codex's idle timer). ``0`` turns keep-alives off.
    keepalive_interval: float = 15.0

    # --- request translation ---------------------------------------------------------------
    #: Role that ``developer`` messages are sent as: ``"system"`` (most backends reject
    #: ``developer``) or ``"developer"`` (OpenAI).
    developer_role: Literal["system", "developer"] = "system"
    #: Pass replayed reasoning items back as ``reasoning_content`` on the next assistant
    #: message, for thinking models that need their own reasoning in the history.
    reasoning_passback: bool = False
    #: Key that signs the ``encrypted_content`` of reasoning items (asked for with
    #: ``include: ["reasoning.encrypted_content"]``) so they can be verified when replayed.
    #: Must be the same in every worker; unset, each process uses a random key (with a
    #: warning) and tokens do not survive a restart or cross workers.
    reasoning_key: str | None = field(default=None, repr=False)
    #: Chat parameter that carries ``max_output_tokens``.
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    #: What to do with hosted tools (``web_search``, ``file_search``, ...), which Chat
    #: backends cannot run: ``"drop"`` them with a log line, or ``"reject"`` with a 400.
    hosted_tools: Literal["drop", "reject"] = "drop"

    # --- stored responses ------------------------------------------------------------------
    #: Where ``store: true`` responses are kept: ``memory://``, ``sqlite:///path/to.db``,
    #: ``redis://host:port/db``, or ``None`` to turn storage (and ``previous_response_id``) off.
    store_url: str | None = "memory://"
    #: Seconds a stored response is kept.
    store_ttl: float = 24 * 3600.0
    #: Most responses the ``memory://`` store keeps (least recently used go first).
    store_max_responses: int = 10_000
    #: Most bytes the ``memory://`` store keeps in all.
    store_max_bytes: int = 256 * _MiB
    #: Largest single stored response (input items + output), in bytes. A larger one is not
    #: stored: a warning is logged and a small tombstone answers later reads with the reason.
    #: Twice ``max_request_bytes``, so every accepted full-history request is storable with
    #: room for a ``previous_response_id`` chain to grow (``tests/benchmarks/store_sizes.py``:
    #: a long Codex session stores at most ~4 MiB of text, screenshots ~1.5 MB each).
    store_max_response_bytes: int = 64 * _MiB
    #: Most items one conversation (the Conversations API) holds; adding more is a 400.
    #: Conversations expire ``store_ttl`` seconds after their last change.
    store_max_conversation_items: int = 1000
    #: Most ``background: true`` responses one process runs at a time; past it, a new one
    #: is a 429. Each holds an upstream request open and writes its event log to the store.
    max_background_responses: int = 64
    #: Maps a request's ASGI scope to a tenant key; stored responses are visible only to the
    #: tenant that created them. Default: a hash of the ``Authorization`` header.
    tenant: Callable[[Scope], str] | None = field(default=None, compare=False)

    # --- observers -------------------------------------------------------------------------
    #: Called with a ``ResponseRecord`` once per finished response (id, model, status, usage,
    #: duration, error), for metering and logging. May be a coroutine function.
    on_response: Callable[[ResponseRecord], Awaitable[None] | None] | None = field(
        default=None, compare=False
    )

    # --- running as a service ---------------------------------------------------------------
    #: Liveness probe: ``GET`` here answers 200 while the process serves requests. Not
    #: behind ``client_keys``. ``None`` turns the route off (passed to the wrapped app).
    health_path: str | None = "/health"
    #: Readiness probe: ``GET`` here answers 200 when the store answers a ping (and, with
    #: ``ready_checks_upstream``, the upstream answers), else 503. Not behind ``client_keys``.
    ready_path: str | None = "/ready"
    #: Readiness also sends ``GET {path_prefix}/models`` through the wrapped app (for the
    #: gateway's proxy: to the upstream) and needs an answer below 500 within 2 seconds.
    ready_checks_upstream: bool = False
    #: Keys clients must send as ``Authorization: Bearer <key>`` on every route but the
    #: probes; a missing or wrong key gets 401. ``STREAM_MW_CLIENT_KEYS`` names a keys file.
    client_keys: ClientKeys | None = None
    #: Serve Prometheus metrics on ``GET {metrics_path}`` (needs ``stream-mw[metrics]``). Not
    #: behind ``client_keys``, like the probes; off, ``prometheus_client`` is not imported.
    metrics: bool = False
    #: Where the metrics are served when ``metrics`` is on.
    metrics_path: str = "/metrics"
    #: Record an OpenTelemetry span per response, with the GenAI semantic conventions'
    #: attributes (needs ``stream-mw[otel]``); off, ``opentelemetry`` is not imported.
    traces: bool = False
    #: Serve the Responses WebSocket mode on ``ws://HOST{path_prefix}/responses``: each
    #: ``response.create`` frame is answered with the stream's events as JSON text frames,
    #: and ``previous_response_id`` may name the connection's own ``store: false``
    #: responses. Off, WebSocket connections pass through to the wrapped app.
    websocket: bool = True
    #: What ``POST {path_prefix}/responses/compact`` asks the model, as the last user message
    #: after the conversation; its answer is the summary a ``compaction`` item carries.
    compaction_prompt: str = (
        "Summarise the conversation so far for your own later use: the goals, facts and "
        "decisions, what was done and what remains."
    )

    # --- remote MCP tools -------------------------------------------------------------------
    #: MCP server URLs a request's ``{"type": "mcp"}`` tools may name: each entry matches a
    #: URL exactly, or, ending in ``/``, every URL under it. Empty (the default) turns remote
    #: MCP tools off: any ``mcp`` tool is a 400. Loopback, link-local and private addresses
    #: are reachable only through an entry that names their host. The environment takes a
    #: comma-separated list.
    mcp_servers: tuple[str, ...] = ()
    #: Seconds one MCP server may take to connect, list its tools or answer one call.
    mcp_timeout: float = 30.0
    #: Most Chat requests one response makes while it runs MCP tool calls; reaching it ends
    #: the response ``incomplete``.
    mcp_max_rounds: int = 8
    #: Largest MCP tool result, in bytes of text; a longer one is cut to it, saying so.
    mcp_max_result_bytes: int = _MiB

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("health_path", "ready_path"):
            path = getattr(self, name)
            if path is not None and not path.startswith("/"):
                raise ConfigurationError(f"{name} must start with '/' or be None, got {path!r}")
        if not self.compaction_prompt.strip():
            raise ConfigurationError("compaction_prompt must not be empty")
        if not self.metrics_path.startswith("/"):
            raise ConfigurationError(f"metrics_path must start with '/', got {self.metrics_path!r}")
        if self.metrics and self.metrics_path in (self.health_path, self.ready_path):
            raise ConfigurationError(
                f"metrics_path must differ from the probes' paths, got {self.metrics_path!r}"
            )
        if self.health_path is not None and self.health_path == self.ready_path:
            raise ConfigurationError(
                f"health_path and ready_path must differ, both are {self.health_path!r}"
            )
        if not self.path_prefix.startswith("/") and self.path_prefix != "":
            raise ConfigurationError(
                f"path_prefix must be empty or start with '/', got {self.path_prefix!r}"
            )
        if self.path_prefix.endswith("/"):
            raise ConfigurationError(
                f"path_prefix must not end with '/', got {self.path_prefix!r} "
                f"(use {self.path_prefix.rstrip('/')!r})"
            )
        if not self.chat_completions_path.startswith("/"):
            raise ConfigurationError(
                f"chat_completions_path must start with '/', got {self.chat_completions_path!r}"
            )
        for name in (
            "max_request_bytes",
            "max_event_bytes",
            "max_argument_bytes",
            "max_response_bytes",
            "store_max_responses",
            "store_max_bytes",
            "store_max_response_bytes",
            "store_max_conversation_items",
            "max_background_responses",
            "mcp_max_rounds",
            "mcp_max_result_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(
                    f"{name} must be a positive integer, got {getattr(self, name)}"
                )
        if self.keepalive_interval < 0:
            raise ConfigurationError(
                "keepalive_interval must be >= 0 seconds (0 turns it off), "
                f"got {self.keepalive_interval}"
            )
        if self.mcp_timeout <= 0:
            raise ConfigurationError(
                f"mcp_timeout must be a positive number of seconds, got {self.mcp_timeout}"
            )
        for entry in self.mcp_servers:
            if not entry.startswith(("http://", "https://")):
                raise ConfigurationError(
                    "mcp_servers entries must be http:// or https:// URLs (a prefix ends in "
                    f"'/'), got {entry!r}"
                )
        if self.store_ttl <= 0:
            raise ConfigurationError(
                f"store_ttl must be a positive number of seconds, got {self.store_ttl}"
            )
        if self.store_url is not None and not self.store_url.startswith(
            ("memory://", "sqlite://", "redis://", "rediss://", "unix://")
        ):
            raise ConfigurationError(
                "store_url must be memory://, sqlite:///path, redis://host:port/db or None, "
                f"got {self.store_url!r}"
            )
        if self.reasoning_key is not None and len(self.reasoning_key) < _MIN_KEY_CHARS:
            raise ConfigurationError(
                f"reasoning_key must be at least {_MIN_KEY_CHARS} characters (a random string, "
                "e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        for name in ("tenant", "on_response"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigurationError(f"{name} must be callable or None, got {value!r}")

    @property
    def responses_path(self) -> str:
        """``POST`` here is translated: ``{path_prefix}/responses``."""
        return f"{self.path_prefix}/responses"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, prefix: str = ENV_PREFIX, **overrides: Any
    ) -> Settings:
        """Build settings from ``STREAM_MW_*`` variables; keywords override them.

        ``STREAM_MW_DONE_MARKER=false``, ``STREAM_MW_STORE_URL=none``,
        ``STREAM_MW_MAX_EVENT_BYTES=1048576``: booleans accept 1/0, true/false, yes/no, on/off.
        """
        environ = os.environ if environ is None else environ
        _warn_unknown_variables(environ, prefix)
        return cls._from_lookup(lambda key: environ.get(key), prefix, overrides)

    @classmethod
    def from_config(cls, config: Config, *, prefix: str = ENV_PREFIX, **overrides: Any) -> Settings:
        """Build settings from a Starlette ``Config`` (``.env`` file plus environment)."""
        return cls._from_lookup(lambda key: config(key, default=None), prefix, overrides)

    @classmethod
    def _from_lookup(
        cls, lookup: Callable[[str], str | None], prefix: str, overrides: Mapping[str, Any]
    ) -> Settings:
        values: dict[str, Any] = {}
        for name, hint in _field_types().items():
            if name in _CALLABLE_FIELDS:
                continue
            raw = lookup(prefix + name.upper())
            if raw is None:
                continue
            if name == "client_keys":
                # The variable names a keys file: keys do not belong in the environment,
                # which other processes of the same user can read.
                path = raw.strip()
                values[name] = ClientKeys.from_file(path) if path.lower() not in _NONE else None
            else:
                values[name] = _parse(name, raw, hint)
        values.update(overrides)
        return cls(**values)


_CALLABLE_FIELDS = frozenset({"tenant", "on_response"})

#: ``STREAM_MW_*`` variables that are not ``Settings`` fields: the gateway's own, read by
#: ``stream_mw.cli`` (a test keeps this in step with it). Any other ``STREAM_MW_*`` variable
#: is a typo, which would otherwise be silently ignored.
GATEWAY_VARIABLES = frozenset(
    {
        "UPSTREAM",
        "UPSTREAM_API_KEY",
        "LITELLM_MODEL",
        "LITELLM_KWARGS",
        "SCRIPT",
        "CONFIG",
        "CONNECT_TIMEOUT",
        "READ_TIMEOUT",
        "CA_BUNDLE",
        "HOST",
        "PORT",
        "CORS_ORIGINS",
        "MAX_HEADER_BYTES",
        "MAX_HEADERS",
        "HEADER_TIMEOUT",
        "MAX_CONNECTIONS",
        "GRACEFUL_TIMEOUT",
    }
)


def _warn_unknown_variables(environ: Mapping[str, str], prefix: str) -> None:
    known = [name.upper() for name in _field_types()] + sorted(GATEWAY_VARIABLES)
    for name in sorted(environ):
        suffix = name[len(prefix) :]
        if name.startswith(prefix) and suffix not in known:
            # Compared without the prefix, which every candidate shares.
            nearest = difflib.get_close_matches(suffix, known, n=1)
            hint = f"; did you mean {prefix}{nearest[0]}?" if nearest else ""
            logger.warning("unknown environment variable %s is ignored%s", name, hint)


@functools.cache
def _field_types() -> dict[str, Any]:
    # Explicit globals: the package rewrites Settings.__module__ to "stream_mw" for nicer reprs,
    # so the default lookup would search the wrong namespace.
    hints = get_type_hints(
        Settings, globalns=globals(), localns={"Scope": Any, "ResponseRecord": Any}
    )
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings)}


def _parse(name: str, raw: str, hint: Any) -> Any:
    env_name = ENV_PREFIX + name.upper()
    text = raw.strip()
    args = get_args(hint)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType) and type(None) in args:
        if text.lower() in _NONE:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = get_origin(hint), get_args(hint)
    if hint is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigurationError(f"{env_name} must be a boolean (true/false, 1/0), got {raw!r}")
    if hint is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise ConfigurationError(f"{env_name} must be an integer, got {raw!r}") from None
    if hint is float:
        try:
            number = float(text)
        except ValueError:
            raise ConfigurationError(f"{env_name} must be a number, got {raw!r}") from None
        if not math.isfinite(number):
            raise ConfigurationError(f"{env_name} must be a finite number, got {raw!r}")
        return number
    if origin is tuple:
        # A comma-separated list: URLs and names never contain commas unescaped.
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if origin is Literal:
        if text not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigurationError(f"{env_name} must be one of {choices}, got {raw!r}")
        return text
    return text


def _check_types(settings: Settings) -> None:
    for name, hint in _field_types().items():
        if name in _CALLABLE_FIELDS:
            continue
        value = getattr(settings, name)
        if not _matches(value, hint):
            raise ConfigurationError(f"{name} must be {_describe(hint)}, got {value!r}")
        # nan passes every comparison check (nan <= 0 is false), and an infinite timeout or
        # interval is a hang: neither is a usable setting.
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigurationError(f"{name} must be a finite number, got {value!r}")


def _matches(value: Any, hint: Any) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is ClientKeys:
        return isinstance(value, ClientKeys)
    if origin is tuple:
        return isinstance(value, tuple) and all(_matches(v, args[0]) for v in value)
    return True


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if hint is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return f"a tuple of {_describe(args[0])}s"
    return _TYPE_WORDS.get(hint, str(hint))


_TYPE_WORDS: dict[Any, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    ClientKeys: "a ClientKeys",
}
