"""The gateway's configuration file (``stream-mw serve --config FILE``): several upstreams
routed by model, and the middleware's settings, in TOML.

::

    [settings]                      # Settings fields, by their names
    store_url = "sqlite:///var/lib/stream-mw/responses.db"
    client_keys = "client-keys"     # a keys file, relative to this file

    [upstreams.local]               # a name of your choosing, used in logs and errors
    url = "http://localhost:8000/v1"
    models = ["llama-3.1-8b", "qwen/"]
    read_timeout = 600

    [upstreams.hosted]
    url = "https://my-resource.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-10-21"
    api_key_env = "AZURE_OPENAI_API_KEY"  # the key is read from this variable, not the file
    api_key_header = "api-key"      # Azure's; the default is Authorization: Bearer
    models = ["gpt-4o*"]
    headers = { "X-Team" = "research" }

    [upstreams.claude]
    litellm_model = "anthropic/claude-sonnet-4-5"
    api_key_env = "ANTHROPIC_API_KEY"
    models = ["claude"]

Model patterns are those of ``ModelRouter``: exact names, ``prefix*``, or ``prefix/``. Every
mistake is a ``ConfigurationError`` naming the file and the key, found when the file is read,
so the gateway refuses to start rather than failing its first request.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._auth import ClientKeys
from ._errors import ConfigurationError
from ._settings import Settings, _field_types

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["GatewayFile", "UpstreamSpec", "load_gateway_file"]

_TOP_KEYS = ("settings", "upstreams")
_UPSTREAM_KEYS = (
    "url",
    "litellm_model",
    "litellm_kwargs",
    "models",
    "api_key_env",
    "api_key_header",
    "connect_timeout",
    "read_timeout",
    "headers",
    "params",
    "ca_bundle",
    "proxy",
)
_URL_ONLY = (
    "api_key_header",
    "connect_timeout",
    "read_timeout",
    "headers",
    "params",
    "ca_bundle",
    "proxy",
)
_LITELLM_ONLY = ("litellm_kwargs",)
# Functions cannot be written in TOML.
_CODE_ONLY_SETTINGS = frozenset({"tenant", "on_response"})


@dataclass(frozen=True)
class UpstreamSpec:
    """One ``[upstreams.NAME]`` table."""

    name: str
    models: tuple[str, ...]
    url: str | None = None
    litellm_model: str | None = None
    litellm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)
    api_key_header: str | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    ca_bundle: str | None = None
    proxy: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GatewayFile:
    """A configuration file, read and checked."""

    path: str
    #: ``Settings`` keyword arguments (``client_keys`` already read from its file).
    settings: Mapping[str, Any]
    upstreams: tuple[UpstreamSpec, ...]

    @property
    def sends_upstream_keys(self) -> bool:
        return any(spec.api_key for spec in self.upstreams)

    def build_router(
        self,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        ca_bundle: str | None = None,
    ) -> Any:
        """The ``ModelRouter`` over these upstreams; the keywords are the defaults for the
        upstreams that do not set their own.

        Raises:
            ConfigurationError: an upstream cannot be built (a missing extra, a bad URL).
        """
        from .upstreams.router import ModelRouter

        apps: dict[str, Any] = {}
        models: dict[str, str] = {}
        for spec in self.upstreams:
            where = f"{self.path}: upstreams.{spec.name}"
            try:
                apps[spec.name] = _build_upstream(spec, connect_timeout, read_timeout, ca_bundle)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{where}: {exc}") from None
            for pattern in spec.models:
                models[pattern] = spec.name
        return ModelRouter(apps, models)


def _build_upstream(
    spec: UpstreamSpec, connect_timeout: float, read_timeout: float, ca_bundle: str | None
) -> Any:
    if spec.url is not None:
        try:
            from .upstreams.proxy import ProxyApp
        except ImportError:
            raise ConfigurationError(
                "a url upstream needs httpx: pip install 'stream-mw[gateway]'"
            ) from None
        return ProxyApp(
            spec.url,
            api_key=spec.api_key,
            api_key_header=spec.api_key_header,
            connect_timeout=spec.connect_timeout or connect_timeout,
            read_timeout=spec.read_timeout or read_timeout,
            headers=spec.headers,
            params=spec.params,
            proxy=spec.proxy,
            ca_bundle=spec.ca_bundle or ca_bundle,
        )
    try:
        from .upstreams.litellm_app import LiteLLMApp
    except ImportError:
        raise ConfigurationError(
            "a litellm_model upstream needs litellm: pip install 'stream-mw[litellm]'"
        ) from None
    kwargs = dict(spec.litellm_kwargs)
    if spec.api_key:
        kwargs.setdefault("api_key", spec.api_key)
    return LiteLLMApp(spec.litellm_model, **kwargs)


def load_gateway_file(path: str, environ: Mapping[str, str] | None = None) -> GatewayFile:
    """Read and check a configuration file; keys come from ``environ`` (``os.environ``).

    Raises:
        ConfigurationError: the file cannot be read, is not TOML, or a key is wrong; the
            message names the file and the key.
    """
    env = os.environ if environ is None else environ
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigurationError(f"cannot read the config file {path}: {reason}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    _unknown_keys(path, "", document, _TOP_KEYS)
    base = Path(path).resolve().parent
    settings = _settings(path, _table(path, "settings", document.get("settings", {})), base)
    tables = _table(path, "upstreams", document.get("upstreams"))
    if not tables:
        raise ConfigurationError(
            f"{path}: upstreams: no upstream is configured; add an [upstreams.NAME] table "
            'with url = "http://host:8000/v1" and models = ["model-name"]'
        )
    upstreams = []
    routed: dict[str, str] = {}
    for name, raw in tables.items():
        spec = _upstream(path, name, _table(path, f"upstreams.{name}", raw), env, base)
        for pattern in spec.models:
            if pattern in routed:
                raise ConfigurationError(
                    f"{path}: upstreams.{name}.models: {pattern!r} is already routed to "
                    f"upstreams.{routed[pattern]}"
                )
            routed[pattern] = name
        upstreams.append(spec)
    return GatewayFile(path, settings, tuple(upstreams))


def _settings(path: str, table: Mapping[str, Any], base: Path) -> dict[str, Any]:
    names = [f.name for f in dataclasses.fields(Settings) if f.name not in _CODE_ONLY_SETTINGS]
    _unknown_keys(path, "settings.", table, names)
    optional = {
        name for name, hint in _field_types().items() if type(None) in typing.get_args(hint)
    }
    values: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{path}: settings.{name}"
        if isinstance(value, str) and value.lower() == "none" and name in optional:
            # TOML has no null: "none" turns an optional setting off, as in STREAM_MW_*.
            values[name] = None
            continue
        if name == "client_keys":
            keys_file = _relative(base, _string(key, value))
            try:
                value = ClientKeys.from_file(keys_file)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{key}: {exc}") from None
        try:
            # One at a time, so the error names the key that is wrong.
            Settings(**{name: value})
        except ConfigurationError as exc:
            raise ConfigurationError(f"{key}: {exc}") from None
        values[name] = value
    try:
        Settings(**values)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: settings: {exc}") from None
    return values


def _upstream(
    path: str, name: str, table: Mapping[str, Any], env: Mapping[str, str], base: Path
) -> UpstreamSpec:
    where = f"{path}: upstreams.{name}"
    _unknown_keys(path, f"upstreams.{name}.", table, _UPSTREAM_KEYS)
    url = table.get("url")
    litellm_model = table.get("litellm_model")
    if (url is None) == (litellm_model is None):
        raise ConfigurationError(
            f"{where}: set exactly one of url (an OpenAI-compatible server) and "
            "litellm_model (a LiteLLM model)"
        )
    kind, other_keys = ("url", _LITELLM_ONLY) if url is not None else ("litellm_model", _URL_ONLY)
    for key in other_keys:
        if key in table:
            # LiteLLM takes its own options (timeout, headers, api_base) in litellm_kwargs.
            raise ConfigurationError(
                f"{where}.{key}: not an option of a {kind} upstream"
                + (
                    "; put LiteLLM's own options in litellm_kwargs"
                    if kind == "litellm_model"
                    else ""
                )
            )
    models = table.get("models")
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and m for m in models)
    ):
        raise ConfigurationError(
            f"{where}.models: expected a list of model names or prefixes, such as "
            '["llama-3.1-8b", "qwen/", "gpt-4o*"]'
        )
    api_key = None
    if "api_key_env" in table:
        variable = _string(f"{where}.api_key_env", table["api_key_env"])
        api_key = env.get(variable) or None
        if api_key is None:
            raise ConfigurationError(
                f"{where}.api_key_env: the environment variable {variable} is not set"
            )
    spec = UpstreamSpec(
        name=name,
        models=tuple(models),
        url=_string(f"{where}.url", url) if url is not None else None,
        litellm_model=(
            _string(f"{where}.litellm_model", litellm_model) if litellm_model is not None else None
        ),
        litellm_kwargs=_table(
            path, f"upstreams.{name}.litellm_kwargs", table.get("litellm_kwargs", {})
        ),
        api_key=api_key,
        api_key_header=(
            _string(f"{where}.api_key_header", table["api_key_header"])
            if "api_key_header" in table
            else None
        ),
        connect_timeout=_seconds(f"{where}.connect_timeout", table.get("connect_timeout")),
        read_timeout=_seconds(f"{where}.read_timeout", table.get("read_timeout")),
        headers=_strings(f"{where}.headers", table.get("headers", {})),
        params=_strings(f"{where}.params", table.get("params", {})),
        ca_bundle=(
            _relative(base, _string(f"{where}.ca_bundle", table["ca_bundle"]))
            if "ca_bundle" in table
            else None
        ),
        proxy=_string(f"{where}.proxy", table["proxy"]) if "proxy" in table else None,
    )
    if spec.url is not None:
        # The URL and proxy are checked now, not when the first request needs them.
        from .upstreams._proxies import choose_proxy
        from .upstreams.proxy import parse_base_url

        try:
            choose_proxy(parse_base_url(spec.url), spec.proxy, trust_env=False)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
    return spec


def _unknown_keys(path: str, prefix: str, table: Mapping[str, Any], known: Any) -> None:
    for key in table:
        if key not in known:
            nearest = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean {prefix}{nearest[0]}?" if nearest else ""
            raise ConfigurationError(f"{path}: {prefix}{key}: unknown key{hint}")


def _table(path: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigurationError(f"{path}: {key}: expected a table, got {value!r}")
    return value


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{key}: expected a non-empty string, got {value!r}")
    return value


def _strings(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigurationError(f'{key}: expected a table of strings, such as {{ "x" = "1" }}')
    return value


def _seconds(key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{key}: expected a number of seconds, got {value!r}")
    if not 0 < value < math.inf:
        raise ConfigurationError(f"{key}: expected a positive number of seconds, got {value!r}")
    return float(value)


def _relative(base: Path, name: str) -> str:
    return str(base / os.path.expanduser(name))
