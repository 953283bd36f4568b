"""The gateway's shutdown: streams in flight finish, or end with a terminal event, never cut.

uvicorn's own shutdown closes its listeners, waits up to ``timeout_graceful_shutdown`` for
connections, cancels the tasks still running (the client's stream is cut without a terminal
event) and only then sends the lifespan ``shutdown`` message. So the middleware's
``shutdown()`` runs before all of that, in place of the server's ``shutdown`` method: stop
accepting, give the requests in flight the grace period, end the rest with
``server_shutting_down``, log one line, and only then let uvicorn's shutdown run (by which
time it finds nothing left to cancel).

``install_drain`` patches one ``uvicorn.Server`` instance rather than subclassing: with
``--workers`` uvicorn (0.51 and later) builds each worker's server itself, and the worker
finds its server through the signal handler uvicorn installed (``find_server``).
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any, Final

from ._middleware import ResponsesMiddleware
from ._observe import logger

__all__ = ["DEFAULT_GRACEFUL_TIMEOUT", "find_middleware", "find_server", "install_drain"]

#: Seconds streams in flight get to finish after SIGTERM/SIGINT. Below the 30 s after which
#: Kubernetes, Docker and systemd send SIGKILL by default, with room for the ending itself.
DEFAULT_GRACEFUL_TIMEOUT = 20.0
#: What uvicorn then waits at least for the other connections (and those whose last bytes
#: were just sent) to close.
UVICORN_GRACEFUL_SECONDS = 5.0
_FORCE_EXIT_POLL_SECONDS = 0.1


def find_middleware(app: Any) -> ResponsesMiddleware | None:
    """The ``ResponsesMiddleware`` inside ``app``'s wrappers (CORS, the request log), if any."""
    for _ in range(16):
        if isinstance(app, ResponsesMiddleware):
            return app
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


# Where uvicorn's WebSocket protocol classes live (websockets, wsproto, sans-I/O).
_WEBSOCKET_PROTOCOLS: Final = "uvicorn.protocols.websockets."


def find_server() -> Any:
    """The ``uvicorn.Server`` running in this process, found through the SIGTERM handler it
    installed (its bound ``handle_exit``), or ``None``: in a worker process nothing else
    leads to it."""
    import uvicorn

    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    return server if isinstance(server, uvicorn.Server) else None


def install_drain(server: Any, middleware: ResponsesMiddleware, grace: float) -> None:
    """Make ``server`` end ``middleware``'s requests (see the module docstring) before its own
    shutdown, which then waits for the other connections for the rest of the grace period,
    ``UVICORN_GRACEFUL_SECONDS`` at least."""
    uvicorn_shutdown = server.shutdown

    async def shutdown(sockets: Any = None) -> None:
        # Stop accepting first, as uvicorn would: the grace period is for the requests
        # already in, and kept-alive connections are told to close after their answer.
        for listener in server.servers:
            listener.close()
        for connection in list(server.server_state.connections):
            # uvicorn's shutdown of a WebSocket closes it at once (1012): a WebSocket-mode
            # response in flight would lose its terminal event. Those close with uvicorn's
            # own shutdown below, after the drain.
            if not type(connection).__module__.startswith(_WEBSOCKET_PROTOCOLS):
                connection.shutdown()
        if middleware._open:
            logger.info(
                "shutting down: waiting up to %g s for %d responses in flight",
                grace,
                len(middleware._open),
            )
        in_flight = len(middleware._open)
        deadline = time.monotonic() + grace
        # A second Ctrl+C (uvicorn's force_exit, a plain attribute its signal handler sets)
        # cuts the grace period short; the requests still open are ended all the same.
        while middleware._open and not server.force_exit and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_FORCE_EXIT_POLL_SECONDS)
        drained = await middleware.shutdown()
        # Requests the middleware passes through (/v1/chat/completions, /v1/models) are
        # uvicorn's to wait for: they keep what is left of the grace period.
        server.config.timeout_graceful_shutdown = max(
            deadline - time.monotonic(), UVICORN_GRACEFUL_SECONDS
        )
        logger.info(
            "drained %d responses, ended %d at shutdown (server_shutting_down)",
            max(in_flight - drained.ended, 0),
            drained.ended,
        )
        for connection in list(server.server_state.connections):
            if type(connection).__module__.startswith(_WEBSOCKET_PROTOCOLS):
                # Closed here rather than by uvicorn: its shutdown of a WebSocket the client
                # is already closing raises (websockets' InvalidState), which would abort the
                # server's own shutdown. Such a connection is on its way out anyway.
                try:
                    connection.shutdown()
                except Exception as exc:
                    logger.debug("closing a WebSocket at shutdown: %r", exc)
                server.server_state.connections.discard(connection)
        await uvicorn_shutdown(sockets=sockets)

    server.shutdown = shutdown


def drain_worker(app: Any, grace: float) -> None:
    """In a ``--workers`` process, as uvicorn loads the app (inside its ``capture_signals``,
    so its handler is in place; true of every uvicorn the gateway extra allows): install the
    drain on this worker's server. Without a server to find, the lifespan ``shutdown`` still
    ends the requests left, after uvicorn's own wait."""
    middleware = find_middleware(app)
    server = find_server()
    if middleware is not None and server is not None:
        install_drain(server, middleware, grace)
