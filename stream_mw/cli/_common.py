"""What every ``stream-mw`` command shares: the environment variables, the one-line usage
error, and the argument types that report a bad value in one line."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import logging.config
import math
from typing import Any

from .._settings import ENV_PREFIX

logger = logging.getLogger("stream_mw")

EXIT_USAGE = 2

ENV_UPSTREAM = "STREAM_MW_UPSTREAM"
ENV_API_KEY = "STREAM_MW_UPSTREAM_API_KEY"
ENV_LITELLM_MODEL = "STREAM_MW_LITELLM_MODEL"
ENV_LITELLM_KWARGS = "STREAM_MW_LITELLM_KWARGS"
ENV_SCRIPT = "STREAM_MW_SCRIPT"
ENV_CONNECT_TIMEOUT = "STREAM_MW_CONNECT_TIMEOUT"
ENV_READ_TIMEOUT = "STREAM_MW_READ_TIMEOUT"
ENV_HOST = "STREAM_MW_HOST"
ENV_PORT = "STREAM_MW_PORT"
ENV_MAX_HEADER_BYTES = "STREAM_MW_MAX_HEADER_BYTES"
ENV_MAX_HEADERS = "STREAM_MW_MAX_HEADERS"
ENV_HEADER_TIMEOUT = "STREAM_MW_HEADER_TIMEOUT"
ENV_MAX_CONNECTIONS = "STREAM_MW_MAX_CONNECTIONS"
ENV_CORS_ORIGINS = "STREAM_MW_CORS_ORIGINS"
ENV_CLIENT_KEYS = ENV_PREFIX + "CLIENT_KEYS"
ENV_CA_BUNDLE = "STREAM_MW_CA_BUNDLE"
ENV_CONFIG = "STREAM_MW_CONFIG"
ENV_GRACEFUL_TIMEOUT = "STREAM_MW_GRACEFUL_TIMEOUT"
METRICS_VARIABLE = ENV_PREFIX + "METRICS"
PROMETHEUS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

#: uvicorn's level words; ``trace`` is uvicorn's level 5, below ``debug``.
LOG_LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10, "trace": 5}


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {text!r}")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port between 0 and 65535, got {value}")
    return value


def json_object(text: str | None, name: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{name} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{name} must be a JSON object, got {text!r}")
    return value


def origins(text: str | None) -> tuple[str, ...]:
    return tuple(origin.strip() for origin in (text or "").split(",") if origin.strip())


def env_number(text: str | None, default: float, name: str) -> float:
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name} must be a number of seconds, got {text!r}") from None
    return value


def require_extra(module: str, what: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"{what} needs {module}: pip install 'stream-mw[{extra}]'")
