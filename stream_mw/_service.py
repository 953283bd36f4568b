"""What a deployed middleware answers besides the Responses API: request ids and probes.

- ``request_id(scope)``: every response the middleware sends or passes on carries an
  ``x-request-id``. A sane incoming one (printable ASCII, at most 200 bytes) is echoed
  unchanged, so a load balancer's or a client's id follows the request through; anything
  else is replaced by a fresh ``req_...`` id, because the id goes into log lines.
- ``Probes``: ``GET {health_path}`` (liveness: the process serves requests, 200 always) and
  ``GET {ready_path}`` (readiness: the store answers a ping and, optionally, the wrapped app
  answers ``GET {path_prefix}/models``; else 503). Readiness results are reused for a second,
  so a storm of probes costs the store one ping a second, and concurrent probes share one
  check. The store's address and error go to the log, never into the (unauthenticated)
  answer.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._errors import error_body
from ._items import new_id
from ._observe import logger
from ._settings import Settings
from ._store_gateway import StoreGateway

__all__ = ["Probes", "request_id", "send_with_request_id"]

REQUEST_ID_HEADER: Final = b"x-request-id"
_SANE_REQUEST_ID: Final = re.compile(rb"[\x20-\x7e]{1,200}")
#: Seconds a readiness result is reused.
READY_CACHE_SECONDS: Final = 1.0
#: Seconds the wrapped app has to answer the upstream check.
UPSTREAM_CHECK_SECONDS: Final = 2.0


def request_id(scope: Scope) -> bytes:
    """The request's id: its own ``x-request-id`` if sane, else a new ``req_...`` one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if _SANE_REQUEST_ID.fullmatch(value) and value.strip():
                return bytes(value)
            break
    return new_id("req").encode("ascii")


def send_with_request_id(send: Send, rid: bytes) -> Send:
    """``send`` with ``x-request-id: rid`` on the response head (replacing any other)."""

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (k, v) for k, v in message.get("headers", ()) if k.lower() != REQUEST_ID_HEADER
            ]
            headers.append((REQUEST_ID_HEADER, rid))
            message = {**message, "headers": headers}
        await send(message)

    return sender


class Probes:
    """Liveness and readiness routes (see the module docstring)."""

    def __init__(self, settings: Settings, gateway: StoreGateway, app: ASGIApp) -> None:
        self._paths = {
            path: handler
            for path, handler in (
                (settings.health_path, self._health),
                (settings.ready_path, self._ready),
            )
            if path is not None
        }
        self._gateway = gateway
        self._app = app
        self._models_path = f"{settings.path_prefix}/models"
        self._check_upstream = settings.ready_checks_upstream
        # Mutable on purpose: the cached result of the last readiness check.
        self._checked_at = -math.inf
        self._failures: list[str] = []
        self._lock: anyio.Lock | None = None

    def handler(self, scope: Scope, path: str) -> Callable[[Scope, Send], Awaitable[None]] | None:
        """The probe serving this request, if it is one (``GET`` or ``HEAD`` only)."""
        handler = self._paths.get(path)
        if handler is None or scope["method"] not in ("GET", "HEAD"):
            return None
        return handler

    async def _health(self, scope: Scope, send: Send) -> None:
        await _send_json(scope, send, 200, {"object": "health", "status": "ok"})

    async def _ready(self, scope: Scope, send: Send) -> None:
        failures = await self._readiness(scope)
        if not failures:
            await _send_json(scope, send, 200, {"object": "readiness", "status": "ready"})
            return
        message = "Not ready: " + "; ".join(failures) + "."
        body = error_body(message, "server_error", code="not_ready")
        await _send_json(scope, send, 503, body)

    async def _readiness(self, scope: Scope) -> list[str]:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            # Probes that queued behind a check get its result rather than start another.
            if time.monotonic() - self._checked_at < READY_CACHE_SECONDS:
                return self._failures
            failures = []
            store_error = await self._gateway.ping()
            if store_error is not None:
                failures.append("the response store does not answer")
            upstream_error = await self._ping_app(scope) if self._check_upstream else None
            if upstream_error is not None:
                failures.append("the upstream does not answer")
            if failures != self._failures:
                if failures:
                    details = [
                        f"{what}: {detail}"
                        for what, detail in (("store", store_error), ("upstream", upstream_error))
                        if detail is not None
                    ]
                    logger.warning("not ready: %s", "; ".join(details))
                else:
                    logger.warning("ready again")
            self._failures = failures
            self._checked_at = time.monotonic()
            return failures

    async def _ping_app(self, scope: Scope) -> str | None:
        """Send ``GET {path_prefix}/models`` through the wrapped app; ``None`` when it
        answers below 500 in time, else why not."""
        path = scope.get("root_path", "") + self._models_path
        inner = {
            **scope,
            "method": "GET",
            "path": path,
            "raw_path": path.encode("utf-8"),
            "query_string": b"",
            "headers": [(b"accept", b"application/json")],
        }
        status = 0
        answered = anyio.Event()
        requested = False

        async def receive() -> Message:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()

        try:
            with anyio.move_on_after(UPSTREAM_CHECK_SECONDS) as timer:
                await self._app(inner, receive, send)
        except Exception as exc:
            return f"GET {self._models_path} raised {type(exc).__name__}: {exc}"
        finally:
            answered.set()
        if timer.cancelled_caught and not status:
            return f"GET {self._models_path}: no answer within {UPSTREAM_CHECK_SECONDS:g} s"
        if not 0 < status < 500:
            return f"GET {self._models_path} answered {status}"
        return None


async def _send_json(scope: Scope, send: Send, status: int, payload: dict[str, Any]) -> None:
    body = orjson.dumps(payload)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        # A probe's answer is about now: no cache may keep it.
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send(
        {
            "type": "http.response.body",
            "body": b"" if scope["method"] == "HEAD" else body,
            "more_body": False,
        }
    )


async def reject_unauthorized(scope: Scope, receive: Receive, send: Send, body: Any) -> None:
    """Answer 401 (HTTP) or close with 1008 before accepting (WebSocket)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    await _send_json(scope, send, 401, body)
