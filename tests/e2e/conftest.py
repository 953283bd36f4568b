"""A real uvicorn server on 127.0.0.1, reusable by every tier.

``serve(app)`` runs uvicorn in a background thread with its own event loop, on a socket bound
to a free port before the thread starts: the socket already listens, so clients may connect at
once (the kernel queues them until uvicorn accepts) and nothing has to poll for "started".
Other tiers use it as ``from tests.e2e.conftest import serve`` or through the ``uvicorn_server``
fixture.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import uvicorn
from starlette.types import ASGIApp

__all__ = ["RunningServer", "js_clients", "serve", "uvicorn_server"]

T = TypeVar("T")


@dataclass
class RunningServer:
    """A uvicorn server running in a thread."""

    #: ``http://127.0.0.1:<port>``
    url: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread
    #: The server's event loop, once it started (see ``call``).
    loop_ready: threading.Event
    loop: asyncio.AbstractEventLoop | None = None

    def call(self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10.0) -> T:
        """Run a coroutine on the server's event loop (e.g. to inspect its tasks)."""
        assert self.loop_ready.wait(timeout), "the server loop never started"
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(factory(), self.loop).result(timeout)


@contextmanager
def serve(
    app: ASGIApp, *, lifespan: str = "auto", port: int = 0, **config: Any
) -> Iterator[RunningServer]:
    """Serve ``app`` with uvicorn on 127.0.0.1 at ``port`` (default: a free one) for the
    ``with`` block.

    ``config`` goes to ``uvicorn.Config`` (defaults: asyncio loop, warnings only, no access
    log; ``log_config=None`` lets pytest's caplog see uvicorn's records).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    port = sock.getsockname()[1]
    options: dict[str, Any] = {"log_level": "warning", "access_log": False, "loop": "asyncio"}
    options.update(config)
    server_config = uvicorn.Config(app, lifespan=lifespan, **options)
    server = uvicorn.Server(server_config)
    loop_ready = threading.Event()

    async def main() -> None:
        running.loop = asyncio.get_running_loop()
        loop_ready.set()
        await server.serve(sockets=[sock])

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True, name="uvicorn")
    running = RunningServer(f"http://127.0.0.1:{port}", port, server, thread, loop_ready)
    thread.start()
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not shut down"


@pytest.fixture
def uvicorn_server() -> Callable[..., Any]:
    """``with uvicorn_server(app) as server: ... server.url``"""
    return serve


@pytest.fixture(scope="session")
def js_clients() -> Any:
    """The pinned npm clients and a Node 22 (``tests.e2e.clients.JsClients``), installed once."""
    # Imported here: tests.e2e.clients imports this module for ``serve``.
    from tests.e2e.clients import install_js_clients

    return install_js_clients()
