"""Servers for the fault matrix: the faulty upstream and a gateway in front of it, each a process.

The gateway is the real shape: uvicorn + ``ResponsesMiddleware`` + ``ProxyApp`` on 127.0.0.1,
configured with a distinctive upstream key and logging everything at DEBUG to a file the
security tests read. Both live for the whole module; tests that need a clean process (memory
measurements) start their own gateway with ``start_gateway``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.gateway import (
    GATEWAY_KEY,
    MAX_ARGUMENT_BYTES,
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    READ_TIMEOUT,
    Gateway,
    GatewayFactory,
)
from tests.faults.harness import ServerProcess


@pytest.fixture(scope="module")
def upstream() -> Iterator[ServerProcess]:
    with ServerProcess("upstream") as server:
        yield server


@pytest.fixture(scope="module")
def start_gateway(
    upstream: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> GatewayFactory:
    def start(upstream_url: str | None = None, **env: str) -> Gateway:
        log_file = tmp_path_factory.mktemp("gateway") / "gateway.log"
        gateway = Gateway(
            "gateway",
            "--upstream",
            upstream_url or upstream.url + "/v1",
            "--read-timeout",
            str(READ_TIMEOUT),
            "--connect-timeout",
            "2",
            "--log-file",
            str(log_file),
            env={
                "FAULTS_UPSTREAM_API_KEY": GATEWAY_KEY,
                "STREAM_MW_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
                "STREAM_MW_MAX_ARGUMENT_BYTES": str(MAX_ARGUMENT_BYTES),
                "STREAM_MW_MAX_RESPONSE_BYTES": str(MAX_RESPONSE_BYTES),
                **env,
            },
        )
        gateway.log_file = log_file
        return gateway

    return start


@pytest.fixture(scope="module")
def gateway(start_gateway: GatewayFactory) -> Iterator[Gateway]:
    with start_gateway() as server:
        yield server
