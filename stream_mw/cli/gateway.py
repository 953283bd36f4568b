"""The gateway as an app: its configuration (from options or the environment), the upstream
app it builds, and the factory uvicorn's workers import."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigurationError
from .._observe import access_logger
from .._service import REQUEST_ID_HEADER, request_id
from .._settings import ENV_PREFIX, Settings
from ._common import (
    ENV_API_KEY,
    ENV_CA_BUNDLE,
    ENV_CONFIG,
    ENV_CONNECT_TIMEOUT,
    ENV_CORS_ORIGINS,
    ENV_GRACEFUL_TIMEOUT,
    ENV_LITELLM_KWARGS,
    ENV_LITELLM_MODEL,
    ENV_READ_TIMEOUT,
    ENV_SCRIPT,
    ENV_UPSTREAM,
    UsageError,
    env_number,
    json_object,
    origins,
    require_extra,
)


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
            from ..upstreams.proxy import parse_base_url

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
            ENV_UPSTREAM: self.upstream or "",
            ENV_API_KEY: self.api_key or "",
            ENV_LITELLM_MODEL: self.litellm_model or "",
            ENV_LITELLM_KWARGS: json.dumps(dict(self.litellm_kwargs)),
            ENV_SCRIPT: self.script or "",
            ENV_CONFIG: self.config or "",
            ENV_CONNECT_TIMEOUT: repr(self.connect_timeout),
            ENV_READ_TIMEOUT: repr(self.read_timeout),
            ENV_CORS_ORIGINS: ",".join(self.cors_origins),
            ENV_CA_BUNDLE: self.ca_bundle or "",
        }
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewayConfig:
        """Read the ``STREAM_MW_UPSTREAM``... variables (see the module docstring)."""
        env = os.environ if environ is None else environ
        return cls(
            upstream=env.get(ENV_UPSTREAM) or None,
            api_key=env.get(ENV_API_KEY) or None,
            litellm_model=env.get(ENV_LITELLM_MODEL) or None,
            litellm_kwargs=json_object(env.get(ENV_LITELLM_KWARGS) or "{}", ENV_LITELLM_KWARGS),
            script=env.get(ENV_SCRIPT) or None,
            config=env.get(ENV_CONFIG) or None,
            connect_timeout=env_number(env.get(ENV_CONNECT_TIMEOUT), 5.0, ENV_CONNECT_TIMEOUT),
            read_timeout=env_number(env.get(ENV_READ_TIMEOUT), 300.0, ENV_READ_TIMEOUT),
            cors_origins=origins(env.get(ENV_CORS_ORIGINS)),
            ca_bundle=env.get(ENV_CA_BUNDLE) or None,
        )


def build_gateway(config: GatewayConfig, settings: Settings | None = None) -> Any:
    """The gateway ASGI app: ``ResponsesMiddleware`` in front of the configured upstream.

    Raises:
        UsageError: a needed extra is missing, the URL or the script is invalid.
    """
    from .._middleware import ResponsesMiddleware

    inner: Any
    if config.config:
        require_extra("httpx", "--config", "gateway")
        from .._config_file import load_gateway_file

        try:
            inner = load_gateway_file(config.config).build_router(
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                ca_bundle=config.ca_bundle,
            )
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
    elif config.upstream:
        require_extra("httpx", "--upstream", "gateway")
        from ..upstreams.proxy import ProxyApp

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
        require_extra("litellm", "--litellm-model", "litellm")
        from ..upstreams.litellm_app import LiteLLMApp

        kwargs = dict(config.litellm_kwargs)
        if config.api_key:
            kwargs.setdefault("api_key", config.api_key)
        inner = LiteLLMApp(config.litellm_model, **kwargs)
    else:
        from ..upstreams.scripted import ScriptedBackend, load_script

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
    grace = os.environ.get(ENV_GRACEFUL_TIMEOUT)
    if grace:
        from .._drain import drain_worker

        drain_worker(app, env_number(grace, 0.0, ENV_GRACEFUL_TIMEOUT))
    return app


def gateway_settings(config: GatewayConfig, **overrides: Any) -> Settings:
    """``Settings.from_env(**overrides)``, over the ``[settings]`` of ``config.config``.

    A ``STREAM_MW_*`` variable wins over the file, as the command line wins over both: the
    environment is what differs between deployments of one file.

    Raises:
        ConfigurationError: the file or a setting is invalid.
    """
    if config.config:
        from .._config_file import load_gateway_file

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
