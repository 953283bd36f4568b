"""The ``stream-mw`` command: a ready Responses gateway, and the converter on recorded streams.

``stream-mw serve`` runs uvicorn with ``ResponsesMiddleware`` in front of an upstream app: the
httpx proxy (``--upstream URL``), LiteLLM (``--litellm-model``), scripted turns (``--script``)
or, with none of these, the embedded demo backend. ``stream-mw convert`` runs the
``StreamConverter`` over a recorded Chat Completions stream. ``stream-mw scripted`` serves
the scripted backend alone, as a stand-in Chat Completions server.

Gateway options also come from environment variables, which is how they reach uvicorn's
worker processes with ``--workers N`` (and how ``uvicorn --factory stream_mw.cli:app_from_env``
is configured): ``STREAM_MW_UPSTREAM``, ``STREAM_MW_UPSTREAM_API_KEY``,
``STREAM_MW_LITELLM_MODEL``, ``STREAM_MW_LITELLM_KWARGS`` (a JSON object),
``STREAM_MW_SCRIPT``, ``STREAM_MW_CONFIG``, ``STREAM_MW_CONNECT_TIMEOUT``,
``STREAM_MW_READ_TIMEOUT``, ``STREAM_MW_CA_BUNDLE``, and
``STREAM_MW_HOST`` / ``STREAM_MW_PORT`` for where to listen, and ``STREAM_MW_MAX_HEADER_BYTES``,
``STREAM_MW_MAX_HEADERS``, ``STREAM_MW_HEADER_TIMEOUT`` and ``STREAM_MW_MAX_CONNECTIONS`` for
the bounds on clients (see ``_server_protocol.py``), ``STREAM_MW_GRACEFUL_TIMEOUT`` for the
shutdown (see ``_drain.py``); the middleware's own settings
are the ``STREAM_MW_*`` variables ``Settings.from_env()`` reads.

Errors a user can fix (a bad URL, a taken port, a missing extra, a bad setting) print one
line and exit with status 2; nothing prints a traceback for them.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import importlib.util
import inspect
import ipaddress
import json
import logging
import logging.config
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from . import __version__
from ._auth import ClientKeys
from ._errors import ConfigurationError
from ._observe import JsonFormatter, access_logger
from ._service import REQUEST_ID_HEADER, request_id
from ._settings import ENV_PREFIX, Settings

__all__ = [
    "GatewayConfig",
    "JsonFormatter",
    "app_from_env",
    "build_gateway",
    "gateway_settings",
    "main",
]

logger = logging.getLogger("stream_mw")

EXIT_USAGE = 2

_ENV_UPSTREAM = "STREAM_MW_UPSTREAM"
_ENV_API_KEY = "STREAM_MW_UPSTREAM_API_KEY"
_ENV_LITELLM_MODEL = "STREAM_MW_LITELLM_MODEL"
_ENV_LITELLM_KWARGS = "STREAM_MW_LITELLM_KWARGS"
_ENV_SCRIPT = "STREAM_MW_SCRIPT"
_ENV_CONNECT_TIMEOUT = "STREAM_MW_CONNECT_TIMEOUT"
_ENV_READ_TIMEOUT = "STREAM_MW_READ_TIMEOUT"
_ENV_HOST = "STREAM_MW_HOST"
_ENV_PORT = "STREAM_MW_PORT"
_ENV_MAX_HEADER_BYTES = "STREAM_MW_MAX_HEADER_BYTES"
_ENV_MAX_HEADERS = "STREAM_MW_MAX_HEADERS"
_ENV_HEADER_TIMEOUT = "STREAM_MW_HEADER_TIMEOUT"
_ENV_MAX_CONNECTIONS = "STREAM_MW_MAX_CONNECTIONS"
_ENV_CORS_ORIGINS = "STREAM_MW_CORS_ORIGINS"
_ENV_CLIENT_KEYS = ENV_PREFIX + "CLIENT_KEYS"
_ENV_CA_BUNDLE = "STREAM_MW_CA_BUNDLE"
_ENV_CONFIG = "STREAM_MW_CONFIG"
_ENV_GRACEFUL_TIMEOUT = "STREAM_MW_GRACEFUL_TIMEOUT"
_METRICS_VARIABLE = ENV_PREFIX + "METRICS"
_PROMETHEUS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

#: uvicorn's level words; ``trace`` is uvicorn's level 5, below ``debug``.
LOG_LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10, "trace": 5}


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


@dataclass(frozen=True)
class GatewayConfig:
    """What sits behind the middleware in ``stream-mw serve``. At most one source is set."""

    #: Base URL of an OpenAI-compatible server, for the httpx proxy app.
    upstream: str | None = None
    #: Key sent upstream as ``Authorization: Bearer``; the client's header otherwise.
    api_key: str | None = field(default=None, repr=False)
    #: LiteLLM model, for the LiteLLM app.
    litellm_model: str | None = None
    #: Extra ``litellm.acompletion`` keyword arguments.
    litellm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: JSON file of scripted turns, for the scripted backend.
    script: str | None = None
    #: TOML file of upstreams routed by model, and settings (``_config_file.py``).
    config: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    #: Browser origins allowed by CORS (``*`` for any); empty: no CORS headers.
    cors_origins: tuple[str, ...] = ()
    #: PEM file (or directory) of the authorities trusted for an ``https`` upstream.
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        sources = [
            name
            for name, value in (
                ("--upstream", self.upstream),
                ("--litellm-model", self.litellm_model),
                ("--script", self.script),
                ("--config", self.config),
            )
            if value
        ]
        if len(sources) > 1:
            raise UsageError(f"{' and '.join(sources)} cannot be combined; choose one upstream")
        if self.config and (self.api_key or self.litellm_kwargs):
            # Each upstream of the file has its own key and options; one for all is ambiguous.
            raise UsageError(
                "--api-key (STREAM_MW_UPSTREAM_API_KEY) and --litellm-kwargs do not apply to "
                f"--config {self.config}: set api_key_env and litellm_kwargs in its upstreams"
            )
        if not (0 < self.connect_timeout < math.inf and 0 < self.read_timeout < math.inf):
            raise UsageError("--connect-timeout and --read-timeout must be positive seconds")

    @property
    def description(self) -> str:
        """What the gateway serves from, for the start-up banner (no credentials)."""
        if self.upstream:
            from .upstreams.proxy import parse_base_url

            shown = parse_base_url(self.upstream)
            return f"proxy to {shown.copy_with(username=None, password=None)}"
        if self.litellm_model:
            return f"LiteLLM model {self.litellm_model}"
        if self.script:
            return f"scripted turns from {self.script}"
        if self.config:
            return f"the upstreams of {self.config}"
        return "the embedded demo backend (scripted, no model needed)"

    def to_env(self) -> dict[str, str]:
        """The environment variables that rebuild this configuration (``from_env``)."""
        env = {
            _ENV_UPSTREAM: self.upstream or "",
            _ENV_API_KEY: self.api_key or "",
            _ENV_LITELLM_MODEL: self.litellm_model or "",
            _ENV_LITELLM_KWARGS: json.dumps(dict(self.litellm_kwargs)),
            _ENV_SCRIPT: self.script or "",
            _ENV_CONFIG: self.config or "",
            _ENV_CONNECT_TIMEOUT: repr(self.connect_timeout),
            _ENV_READ_TIMEOUT: repr(self.read_timeout),
            _ENV_CORS_ORIGINS: ",".join(self.cors_origins),
            _ENV_CA_BUNDLE: self.ca_bundle or "",
        }
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewayConfig:
        """Read the ``STREAM_MW_UPSTREAM``... variables (see the module docstring)."""
        env = os.environ if environ is None else environ
        return cls(
            upstream=env.get(_ENV_UPSTREAM) or None,
            api_key=env.get(_ENV_API_KEY) or None,
            litellm_model=env.get(_ENV_LITELLM_MODEL) or None,
            litellm_kwargs=_json_object(env.get(_ENV_LITELLM_KWARGS) or "{}", _ENV_LITELLM_KWARGS),
            script=env.get(_ENV_SCRIPT) or None,
            config=env.get(_ENV_CONFIG) or None,
            connect_timeout=_number(env.get(_ENV_CONNECT_TIMEOUT), 5.0, _ENV_CONNECT_TIMEOUT),
            read_timeout=_number(env.get(_ENV_READ_TIMEOUT), 300.0, _ENV_READ_TIMEOUT),
            cors_origins=_origins(env.get(_ENV_CORS_ORIGINS)),
            ca_bundle=env.get(_ENV_CA_BUNDLE) or None,
        )


def build_gateway(config: GatewayConfig, settings: Settings | None = None) -> Any:
    """The gateway ASGI app: ``ResponsesMiddleware`` in front of the configured upstream.

    Raises:
        UsageError: a needed extra is missing, the URL or the script is invalid.
    """
    from ._middleware import ResponsesMiddleware

    inner: Any
    if config.config:
        _require("httpx", "--config", "gateway")
        from ._config_file import load_gateway_file

        try:
            inner = load_gateway_file(config.config).build_router(
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                ca_bundle=config.ca_bundle,
            )
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
    elif config.upstream:
        _require("httpx", "--upstream", "gateway")
        from .upstreams.proxy import ProxyApp

        try:
            inner = ProxyApp(
                config.upstream,
                api_key=config.api_key,
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                ca_bundle=config.ca_bundle,
            )
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
    elif config.litellm_model:
        _require("litellm", "--litellm-model", "litellm")
        from .upstreams.litellm_app import LiteLLMApp

        kwargs = dict(config.litellm_kwargs)
        if config.api_key:
            kwargs.setdefault("api_key", config.api_key)
        inner = LiteLLMApp(config.litellm_model, **kwargs)
    else:
        from .upstreams.scripted import ScriptedBackend, load_script

        if config.script:
            try:
                inner = ScriptedBackend(load_script(config.script))
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        else:
            inner = ScriptedBackend.demo()
    settings = settings if settings is not None else Settings()
    try:
        app: Any = ResponsesMiddleware(inner, settings=settings)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        # Outside the middleware: a browser's preflight (OPTIONS, no credentials) is
        # answered here, before client keys are checked.
        app = CORSMiddleware(
            app,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-request-id", "openai-beta"],
            expose_headers=["x-request-id"],
        )
    return _RequestLog(app, settings.responses_path)


def app_from_env() -> Any:
    """App factory for uvicorn workers: ``uvicorn --factory stream_mw.cli:app_from_env``.

    Reads ``GatewayConfig.from_env()`` and ``Settings.from_env()`` (over the ``[settings]``
    of the ``STREAM_MW_CONFIG`` file, if any). With ``STREAM_MW_GRACEFUL_TIMEOUT`` set, the
    worker's server drains on shutdown (``_drain``).
    """
    config = GatewayConfig.from_env()
    app = build_gateway(config, gateway_settings(config))
    grace = os.environ.get(_ENV_GRACEFUL_TIMEOUT)
    if grace:
        from ._drain import drain_worker

        drain_worker(app, _number(grace, 0.0, _ENV_GRACEFUL_TIMEOUT))
    return app


def gateway_settings(config: GatewayConfig, **overrides: Any) -> Settings:
    """``Settings.from_env(**overrides)``, over the ``[settings]`` of ``config.config``.

    A ``STREAM_MW_*`` variable wins over the file, as the command line wins over both: the
    environment is what differs between deployments of one file.

    Raises:
        ConfigurationError: the file or a setting is invalid.
    """
    if config.config:
        from ._config_file import load_gateway_file

        from_file = load_gateway_file(config.config).settings
        overrides = {
            **{k: v for k, v in from_file.items() if ENV_PREFIX + k.upper() not in os.environ},
            **overrides,
        }
    return Settings.from_env(**overrides)


class _RequestLog:
    """One log line per request the middleware does not log itself (it logs the Responses
    requests, with model, tokens and duration), and an ``x-request-id`` on every response
    (the middleware sets its own; requests it passes through get one here)."""

    def __init__(self, app: Any, responses_path: str) -> None:
        self.app = app
        self.responses_path = responses_path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"] == self.responses_path:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        rid = request_id(scope)

        async def send_and_watch(message: Any) -> None:
            nonlocal status, rid
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                for name, value in headers:
                    if name.lower() == REQUEST_ID_HEADER:
                        rid = value  # the middleware's own
                        break
                else:
                    headers.append((REQUEST_ID_HEADER, rid))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            access_logger.info(
                "%(method)s %(path)s %(http_status)s duration_ms=%(duration_ms).1f "
                "request_id=%(request_id)s",
                {
                    "method": scope["method"],
                    "path": scope["path"],
                    "http_status": status or "-",
                    "duration_ms": (time.perf_counter() - started) * 1000.0,
                    "request_id": rid.decode("latin-1"),
                },
            )


# --- serve -------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    _require("uvicorn", "stream-mw serve", "gateway")
    _require("httptools", "stream-mw serve", "gateway")
    limits = _client_limits(args)
    # Warnings from the checks are held until the port is bound and logging configured, so
    # they come in the chosen format; a run that stops on an error prints them before it.
    held = _HeldWarnings()
    with held:
        app, config, settings, sock = _prepare_serve(args)
    logging.config.dictConfig(_log_config(args.log_level, args.log_format, args.access_log))
    held.replay()
    port = sock.getsockname()[1]
    _print_banner(config, settings, args.host, port, args.workers)
    if args.client_keys and args.workers > 1:
        # Workers build their own settings from the environment they inherit.
        os.environ[_ENV_CLIENT_KEYS] = args.client_keys
    if args.metrics and args.workers > 1:
        os.environ[_METRICS_VARIABLE] = "true"
    with _metrics_directory(settings.metrics and args.workers > 1):
        return _run_uvicorn(app, config, sock, args, limits)


@contextlib.contextmanager
def _metrics_directory(needed: bool) -> Iterator[None]:
    """Give the workers' metrics a shared directory (prometheus_client's multiprocess mode),
    a fresh one removed on exit unless ``PROMETHEUS_MULTIPROC_DIR`` names one already."""
    if not needed or os.environ.get(_PROMETHEUS_DIR_VARIABLE):
        yield
        return
    directory = tempfile.mkdtemp(prefix="stream-mw-metrics-")
    # Read by prometheus_client when the (spawned) workers first import it.
    os.environ[_PROMETHEUS_DIR_VARIABLE] = directory
    try:
        yield
    finally:
        del os.environ[_PROMETHEUS_DIR_VARIABLE]
        shutil.rmtree(directory, ignore_errors=True)


def _prepare_serve(args: argparse.Namespace) -> tuple[Any, GatewayConfig, Settings, socket.socket]:
    config = _gateway_config(args)
    try:
        overrides: dict[str, Any] = {}
        if args.client_keys:
            overrides["client_keys"] = ClientKeys.from_file(args.client_keys)
        if args.metrics:
            overrides["metrics"] = True
        settings = gateway_settings(config, **overrides)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    if settings.metrics:
        _require("prometheus_client", "metrics", "metrics")
    if settings.traces:
        _require("opentelemetry", "traces", "otel")
    _check_deployment(config, settings, args)
    # Fails early, before the port is taken, on a bad URL, script or missing extra. With
    # several workers each builds its own app (and connection pool); the parent only checks,
    # without importing LiteLLM for nothing.
    app = None
    if args.workers > 1 and config.litellm_model:
        _require("litellm", "--litellm-model", "litellm")
    else:
        app = build_gateway(config, settings)
    return app, config, settings, _bind(args.host, args.port)


class _HeldWarnings(logging.Handler):
    """Holds the ``stream_mw`` logger's records while in use (see ``_serve``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._propagate = True

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> None:
        self._propagate = logger.propagate
        logger.addHandler(self)
        logger.propagate = False

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        logger.removeHandler(self)
        logger.propagate = self._propagate
        if exc_type is not None:
            for record in self.records:
                print(f"stream-mw serve: warning: {record.getMessage()}", file=sys.stderr)

    def replay(self) -> None:
        for record in self.records:
            logging.getLogger(record.name).handle(record)


def _check_deployment(config: GatewayConfig, settings: Settings, args: argparse.Namespace) -> None:
    """Refuse, or warn about, what would go wrong only later, under load or in public."""
    store = settings.store_url
    if args.workers > 1 and store is not None and store.startswith("memory://"):
        raise UsageError(
            f"--workers {args.workers} cannot share the memory:// response store (each worker "
            "would have its own, and a response stored by one is unknown to the others); "
            "set STREAM_MW_STORE_URL to sqlite:///path/to/responses.db or redis://host:6379/0, "
            "or none to turn storage off"
        )
    if store is not None:
        try:
            from ._store import require_store_extra

            require_store_extra(store)
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
    if (
        not _is_loopback(args.host)
        and (config.api_key or (config.upstream and "@" in config.upstream) or _file_keys(config))
        and settings.client_keys is None
    ):
        logger.warning(
            "listening on %s with an upstream key and no client keys: anyone who can reach "
            "this port uses the upstream with that key; pass --client-keys FILE",
            args.host,
        )


def _file_keys(config: GatewayConfig) -> bool:
    """Whether the ``--config`` file gives an upstream a key (already read without error)."""
    if not config.config:
        return False
    from ._config_file import load_gateway_file

    return load_gateway_file(config.config).sends_upstream_keys


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _gateway_config(args: argparse.Namespace) -> GatewayConfig:
    from_env = GatewayConfig.from_env()
    chosen = args.upstream or args.litellm_model or args.script or args.config
    try:
        kwargs = _json_object(args.litellm_kwargs, "--litellm-kwargs")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return GatewayConfig(
        # A source on the command line replaces the one from the environment.
        upstream=args.upstream if chosen else from_env.upstream,
        api_key=args.api_key or from_env.api_key,
        litellm_model=args.litellm_model if chosen else from_env.litellm_model,
        litellm_kwargs=kwargs or from_env.litellm_kwargs,
        script=args.script if chosen else from_env.script,
        config=args.config if chosen else from_env.config,
        connect_timeout=args.connect_timeout or from_env.connect_timeout,
        read_timeout=args.read_timeout or from_env.read_timeout,
        cors_origins=_origins(args.cors_origins) or from_env.cors_origins,
        ca_bundle=args.ca_bundle or from_env.ca_bundle,
    )


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host!r}: {exc.strerror}; check --host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    # As uvicorn does: a port left in TIME_WAIT by a previous run is free to reuse.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is already in use; pick another with --port"
            ) from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _print_banner(
    config: GatewayConfig, settings: Settings, host: str, port: int, workers: int
) -> None:
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"
    base = f"http://{shown_host}:{port}{settings.path_prefix}"
    model = config.litellm_model or ("YOUR-MODEL" if config.upstream or config.config else "demo")
    key = "YOUR-CLIENT-KEY" if settings.client_keys is not None else None
    curl_auth = f" -H 'authorization: Bearer {key}'" if key else ""
    lines = [
        f"stream-mw {__version__}: Responses API at {base}/responses",
        f"  serving from {config.description}" + (f", {workers} workers" if workers > 1 else ""),
    ]
    if not (config.upstream or config.litellm_model or config.script or config.config):
        lines.append("  (use --upstream http://HOST:PORT/v1 to put a real model server behind it)")
    # Printed flush left: these paste into a shell as they are (a heredoc's end marker must
    # start its line, and Python refuses indented top-level code).
    lines += [
        "",
        "Try it with curl:",
        "",
        f"curl -sN {base}/responses -H 'content-type: application/json'{curl_auth} \\",
        f'  -d \'{{"model": "{model}", "input": "Hello!", "stream": true}}\'',
        "",
        "or with the openai package (pip install openai: the gateway does not install it):",
        "",
        "python - <<'EOF'",
        "from openai import OpenAI",
        f'client = OpenAI(base_url="{base}", api_key="{key or "unused"}")',
        f'print(client.responses.create(model="{model}", input="Hello!").output_text)',
        "EOF",
        "",
    ]
    root = base[: len(base) - len(settings.path_prefix)]
    probes = [
        f"{root}{path} ({what})"
        for path, what in ((settings.health_path, "liveness"), (settings.ready_path, "readiness"))
        if path
    ]
    if settings.metrics:
        probes.append(f"{root}{settings.metrics_path} (Prometheus metrics)")
    if probes:
        lines.append("Probes: " + ", ".join(probes))
    lines += ["Press Ctrl+C to stop.", ""]
    print("\n".join(lines), flush=True)


def _log_config(level: str, log_format: str = "text", access_log: bool = True) -> dict[str, Any]:
    number = LOG_LEVELS[level]
    handler = {
        "class": "logging.StreamHandler",
        "formatter": log_format,
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "json": {"()": "stream_mw.cli.JsonFormatter"},
        },
        "handlers": {"stderr": handler},
        "loggers": {
            "stream_mw": {"handlers": ["stderr"], "level": number, "propagate": False},
            # The one line per request; --no-access-log keeps only its warnings.
            "stream_mw.access": {"level": number if access_log else max(number, 30)},
            "uvicorn": {"handlers": ["stderr"], "level": number, "propagate": False},
            "uvicorn.error": {"level": number},
            # stream_mw logs every request itself, with the model, tokens, duration and id.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "LiteLLM": {"level": "WARNING"},
            "LiteLLM Proxy": {"level": "WARNING"},
            "LiteLLM Router": {"level": "WARNING"},
        },
    }


def _client_limits(args: argparse.Namespace) -> Any:
    from ._server_protocol import ClientLimits

    try:
        return ClientLimits(
            max_header_bytes=args.max_header_bytes,
            max_headers=args.max_headers,
            header_timeout=args.header_timeout,
            max_connections=args.max_connections,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _run_uvicorn(
    app: Any, config: GatewayConfig, sock: socket.socket, args: Any, limits: Any
) -> int:
    import uvicorn

    from ._server_protocol import GuardedHttpToolsProtocol

    log_config = _log_config(args.log_level, args.log_format, args.access_log)
    common: dict[str, Any] = {
        "log_config": log_config,
        # uvicorn sets its own loggers' levels from this, after applying log_config.
        "log_level": LOG_LEVELS[args.log_level],
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        "server_header": False,
        # uvicorn's own protocols set no time limit on a request head, and its httptools
        # one no size limit either (see _server_protocol.py). A partial, not a closure:
        # with --workers it is pickled into each worker process.
        "http": functools.partial(GuardedHttpToolsProtocol, limits=limits),
    }
    if args.workers == 1:
        from ._drain import find_middleware, install_drain

        server = uvicorn.Server(uvicorn.Config(app, **common))
        middleware = find_middleware(app)
        if middleware is not None:
            install_drain(server, middleware, args.graceful_timeout)
        with _signals_end_quietly(server):
            server.run(sockets=[sock])
        return 0 if server.started else 1
    from uvicorn.supervisors import Multiprocess

    # Workers are separate processes that import the app by name: the configuration travels
    # in the environment they inherit.
    os.environ.update(config.to_env())
    os.environ[_ENV_GRACEFUL_TIMEOUT] = repr(args.graceful_timeout)
    uv_config = uvicorn.Config(
        "stream_mw.cli:app_from_env", factory=True, workers=args.workers, **common
    )
    # uvicorn 0.51 made the supervisor build each worker's server itself; before it, the
    # supervisor took the function every worker runs. The gateway extra allows both.
    options: dict[str, Any] = {"sockets": [sock]}
    if "target" in inspect.signature(Multiprocess).parameters:
        options["target"] = uvicorn.Server(uv_config).run
    Multiprocess(uv_config, **options).run()
    return 0


@contextlib.contextmanager
def _signals_end_quietly(server: Any) -> Iterator[None]:
    """Let SIGTERM and SIGINT end the command with status 0 once the server has drained.

    uvicorn raises the signal that stopped it again once it is done, with the handler that was
    in place before it started: Python's default, which would end a drained, orderly
    shutdown with a KeyboardInterrupt (status 130) or death by SIGTERM. The server's own
    handler is put in place instead, where the repeated signal only asks it to stop again.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# --- scripted ----------------------------------------------------------------------------------


def _scripted(args: argparse.Namespace) -> int:
    _require("uvicorn", "stream-mw scripted", "gateway")
    import uvicorn

    from .upstreams.scripted import ScriptedBackend, load_script

    try:
        backend = (
            ScriptedBackend(load_script(args.script), repeat=args.repeat)
            if args.script
            else ScriptedBackend.demo()
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    what = f"turns from {args.script}" if args.script else "the demo script"
    print(
        f"stream-mw {__version__}: scripted Chat Completions backend at "
        f"http://{shown_host}:{port}/v1 ({what}; recorded requests at /_scripted/requests)\n"
        f"Put the gateway in front of it: stream-mw serve --upstream http://{shown_host}:{port}/v1"
        "\n\nPress Ctrl+C to stop.\n",
        flush=True,
    )
    common: dict[str, Any] = {
        "log_config": _log_config(args.log_level, args.log_format, args.access_log),
        "log_level": LOG_LEVELS[args.log_level],
        "access_log": False,
    }
    server = uvicorn.Server(uvicorn.Config(_RequestLog(backend, ""), **common))
    server.run(sockets=[sock])
    return 0 if server.started else 1


# --- convert -----------------------------------------------------------------------------------


def _convert(args: argparse.Namespace) -> int:
    from ._stream import StreamConverter

    request: dict[str, Any] | None = None
    if args.request:
        try:
            with open(args.request, encoding="utf-8") as file:
                loaded = json.load(file)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read --request {args.request}: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--request {args.request} must hold a JSON object")
        request = loaded
    try:
        settings = Settings.from_env() if args.settings_from_env else None
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    created_at: int | None = args.created_at
    if created_at is None:
        converter = StreamConverter(request, settings, response_id=args.response_id)
    else:
        # A fixed creation time fixes completed_at too, so the output is byte-for-byte
        # reproducible.
        converter = StreamConverter(
            request,
            settings,
            response_id=args.response_id,
            created_at=created_at,
            clock=lambda: float(created_at),
        )
    source: IO[bytes] = sys.stdin.buffer
    out: IO[bytes] = sys.stdout.buffer
    if sys.stdin.isatty():
        print(
            "stream-mw convert: reading a Chat Completions SSE stream from stdin "
            "(end it with Ctrl+D)",
            file=sys.stderr,
        )
    read = getattr(source, "read1", source.read)
    try:
        out.write(converter.start())
        out.flush()
        # read1 returns what is available now: each upstream event is converted and written
        # as soon as it arrives, so `curl ... | stream-mw convert` shows a live stream.
        while not converter.finished:
            data = read(65536)
            if not data:
                break
            converted = converter.feed(data)
            if converted:
                out.write(converted)
                out.flush()
        out.write(converter.close())
        out.flush()
    except BrokenPipeError:
        # The reader went away (`| head`); exit quietly like other Unix filters.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    # A filter reports failure in its status, so `convert < chat.sse && next-step` stops.
    return 1 if converter.response.get("status") == "failed" else 0


# --- the parser --------------------------------------------------------------------------------

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

GET /_scripted/requests lists the Chat Completions requests received (credentials
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
        type=_positive_float,
        metavar="SECONDS",
        help="seconds to connect to the upstream (default 5)",
    )
    upstream.add_argument(
        "--read-timeout",
        type=_positive_float,
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
        type=_positive_int,
        default=1,
        metavar="N",
        help="worker processes (default 1; more need a sqlite:// or redis:// store_url)",
    )
    server.add_argument(
        "--graceful-timeout",
        type=_seconds,
        default=os.environ.get(_ENV_GRACEFUL_TIMEOUT) or "20",
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
        "--cors-origins",
        metavar="ORIGINS",
        help="comma-separated browser origins allowed by CORS, or '*' [STREAM_MW_CORS_ORIGINS]",
    )
    clients = serve.add_argument_group("client limits (per worker)")
    clients.add_argument(
        "--max-header-bytes",
        type=_positive_int,
        default=os.environ.get(_ENV_MAX_HEADER_BYTES) or "65536",
        metavar="N",
        help="bytes a request head may take; larger gets a 431 (default 65536) "
        "[STREAM_MW_MAX_HEADER_BYTES]",
    )
    clients.add_argument(
        "--max-headers",
        type=_positive_int,
        default=os.environ.get(_ENV_MAX_HEADERS) or "100",
        metavar="N",
        help="header fields a request may have; more gets a 431 (default 100) "
        "[STREAM_MW_MAX_HEADERS]",
    )
    clients.add_argument(
        "--header-timeout",
        type=_positive_float,
        default=os.environ.get(_ENV_HEADER_TIMEOUT) or "10",
        metavar="SECONDS",
        help="seconds a client has to send a request head; later gets a 408 (default 10) "
        "[STREAM_MW_HEADER_TIMEOUT]",
    )
    clients.add_argument(
        "--max-connections",
        type=_positive_int,
        default=os.environ.get(_ENV_MAX_CONNECTIONS) or None,
        metavar="N",
        help="client connections open at once; more get a 503 (default: the open-file "
        "limit less 160) [STREAM_MW_MAX_CONNECTIONS]",
    )
    serve.set_defaults(handler=_serve)

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
    convert.set_defaults(handler=_convert)

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
    scripted.set_defaults(handler=_scripted)
    return parser


def _add_server_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    server = parser.add_argument_group("server")
    server.add_argument(
        "--host",
        default=os.environ.get(_ENV_HOST) or "127.0.0.1",
        help="interface to listen on (default 127.0.0.1) [STREAM_MW_HOST]",
    )
    # argparse converts a string default with ``type``, so a bad STREAM_MW_PORT is reported
    # like a bad --port.
    server.add_argument(
        "--port",
        type=_port,
        default=os.environ.get(_ENV_PORT) or "8000",
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port between 0 and 65535, got {value}")
    return value


def _json_object(text: str | None, name: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{name} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{name} must be a JSON object, got {text!r}")
    return value


def _origins(text: str | None) -> tuple[str, ...]:
    return tuple(origin.strip() for origin in (text or "").split(",") if origin.strip())


def _number(text: str | None, default: float, name: str) -> float:
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name} must be a number of seconds, got {text!r}") from None
    return value


def _require(module: str, what: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"{what} needs {module}: pip install 'stream-mw[{extra}]'")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stream-mw`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        status: int = args.handler(args)
    except UsageError as exc:
        print(f"stream-mw {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return status
