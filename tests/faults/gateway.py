"""The fault-matrix gateway's configuration: its keys, limits and timeouts, shared by fixtures and tests."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from tests.faults.harness import ServerProcess

__all__ = [
    "CLIENT_KEY",
    "GATEWAY_KEY",
    "MAX_ARGUMENT_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_RESPONSE_BYTES",
    "READ_TIMEOUT",
    "Gateway",
    "GatewayFactory",
]

#: The key the gateway sends upstream; must never reach a client or a log.
GATEWAY_KEY = "sk-gateway-SECRET-" + secrets.token_hex(12)
#: The key clients send the gateway; must never reach a log.
CLIENT_KEY = "sk-client-SECRET-" + secrets.token_hex(12)

MAX_REQUEST_BYTES = 1024 * 1024
MAX_ARGUMENT_BYTES = 64 * 1024
# Above the default max_event_bytes (8 MiB), so that a huge line still fails on that limit.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
READ_TIMEOUT = 1.0


class Gateway(ServerProcess):
    """A gateway process; ``log_file`` holds its DEBUG log."""

    log_file: Path


GatewayFactory = Callable[..., Gateway]
