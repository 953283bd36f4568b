"""``stream-mw serve``: checks, the banner, logging, and uvicorn with the client bounds, the
drain on shutdown and, under ``--workers``, its process supervisor."""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import inspect
import ipaddress
import logging
import logging.config
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from .. import __version__
from .._auth import ClientKeys
from .._errors import ConfigurationError
from .._settings import ENV_PREFIX, Settings
from ._common import (
    ENV_CLIENT_KEYS,
    ENV_GRACEFUL_TIMEOUT,
    LOG_LEVELS,
    METRICS_VARIABLE,
    PROMETHEUS_DIR_VARIABLE,
    UsageError,
    json_object,
    logger,
    origins,
    require_extra,
)
from .gateway import GatewayConfig, build_gateway, gateway_settings


def serve_command(args: argparse.Namespace) -> int:
    require_extra("uvicorn", "stream-mw serve", "gateway")
    require_extra("httptools", "stream-mw serve", "gateway")
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
        os.environ[ENV_CLIENT_KEYS] = args.client_keys
    if args.metrics and args.workers > 1:
        os.environ[METRICS_VARIABLE] = "true"
    if args.mcp_servers and args.workers > 1:
        # A Settings field: the workers' Settings.from_env reads it.
        os.environ[ENV_PREFIX + "MCP_SERVERS"] = ",".join(args.mcp_servers)
    with _metrics_directory(settings.metrics and args.workers > 1):
        return _run_uvicorn(app, config, sock, args, limits)


@contextlib.contextmanager
def _metrics_directory(needed: bool) -> Iterator[None]:
    """Give the workers' metrics a shared directory (prometheus_client's multiprocess mode),
    a fresh one removed on exit unless ``PROMETHEUS_MULTIPROC_DIR`` names one already."""
    if not needed or os.environ.get(PROMETHEUS_DIR_VARIABLE):
        yield
        return
    directory = tempfile.mkdtemp(prefix="stream-mw-metrics-")
    # Read by prometheus_client when the (spawned) workers first import it.
    os.environ[PROMETHEUS_DIR_VARIABLE] = directory
    try:
        yield
    finally:
        del os.environ[PROMETHEUS_DIR_VARIABLE]
        shutil.rmtree(directory, ignore_errors=True)


def _prepare_serve(args: argparse.Namespace) -> tuple[Any, GatewayConfig, Settings, socket.socket]:
    config = _gateway_config(args)
    try:
        overrides: dict[str, Any] = {}
        if args.client_keys:
            overrides["client_keys"] = ClientKeys.from_file(args.client_keys)
        if args.metrics:
            overrides["metrics"] = True
        if args.mcp_servers:
            overrides["mcp_servers"] = tuple(args.mcp_servers)
        settings = gateway_settings(config, **overrides)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    if settings.metrics:
        require_extra("prometheus_client", "metrics", "metrics")
    if settings.traces:
        require_extra("opentelemetry", "traces", "otel")
    if settings.mcp_servers:
        require_extra("mcp", "remote MCP tools (mcp_servers)", "mcp")
    _check_deployment(config, settings, args)
    # Fails early, before the port is taken, on a bad URL, script or missing extra. With
    # several workers each builds its own app (and connection pool); the parent only checks,
    # without importing LiteLLM for nothing.
    app = None
    if args.workers > 1 and config.litellm_model:
        require_extra("litellm", "--litellm-model", "litellm")
    else:
        app = build_gateway(config, settings)
    return app, config, settings, _bind(args.host, args.port)


class _HeldWarnings(logging.Handler):
    """Holds the ``stream_mw`` logger's records while in use (see ``serve_command``)."""

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
            from .._store import require_store_extra

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
    from .._config_file import load_gateway_file

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
        kwargs = json_object(args.litellm_kwargs, "--litellm-kwargs")
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
        cors_origins=origins(args.cors_origins) or from_env.cors_origins,
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
    from .._server_protocol import ClientLimits

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

    from .._server_protocol import GuardedHttpToolsProtocol

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
        from .._drain import find_middleware, install_drain

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
    os.environ[ENV_GRACEFUL_TIMEOUT] = repr(args.graceful_timeout)
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
