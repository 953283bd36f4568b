"""Fixtures of the store tier: a session-wide real Redis, and each backend behind one fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from stream_mw import Settings
from stream_mw._store import Store, open_store
from tests.redis_server import RedisServer, redis_server_or_skip

BACKENDS = ["memory", "sqlite", "redis"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = redis_server_or_skip()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A private server, for tests that stop or freeze it."""
    server = redis_server_or_skip()
    try:
        yield server
    finally:
        server.stop()


def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'responses.db'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``store_url`` of each backend in turn (Redis: the session server)."""
    return store_url(request.param, tmp_path, request)


@pytest.fixture
def store_settings(backend_url: str) -> Settings:
    return Settings(store_url=backend_url)


@pytest.fixture
async def store(store_settings: Settings) -> AsyncIterator[Store]:
    opened = open_store(store_settings)
    assert opened is not None
    try:
        yield opened
    finally:
        await opened.aclose()
