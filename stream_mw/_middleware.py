"""``ResponsesMiddleware``: the Responses API in front of any ASGI app that speaks Chat Completions.

Strategy: the middleware routes; each route's work lives in a module of its own. Every HTTP
request gets its request id (``_service.request_id``); probes (``health_path``,
``ready_path``) and metrics are answered, and with ``client_keys`` a request without a valid
key is answered 401 (``_auth``). Then:

- ``POST {path_prefix}/responses``: one ``ResponseRun`` (``_run``) reads, translates and
  runs the request through the wrapped app, and its HTTP delivery (``_deliver/http``)
  answers it as SSE or JSON; a ``background: true`` one is handed to ``BackgroundRuns``
  (``_deliver/background``), whose run delivers to the store's event log.
- a WebSocket on ``{path_prefix}/responses``: one ``WebSocketSession``
  (``_deliver/websocket``) per connection, which runs each ``response.create`` frame as a
  ``ResponseRun`` whose events it delivers as frames.
- the stored-response and conversation routes: ``StoreGateway`` and ``ConversationsAPI``.
- everything else (and lifespan) passes through to the wrapped app.

The middleware itself is never modified after ``__init__`` (only the store inside
``StoreGateway`` opens lazily, the readiness probe caches its last result, and the set of
requests in flight is kept for ``shutdown()``, which ends them with ``server_shutting_down``
when the server stops). With ``Settings.metrics`` / ``Settings.traces`` each finished
request is also counted (``_metrics``) and recorded as a span (``_traces``); off, neither
module is imported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, TypedDict

import anyio
import orjson
from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._auth import CLIENT_SCOPE_KEY, ClientKeys, unauthorized_body
from ._compact import compact
from ._conversations import ConversationsAPI
from ._deliver.background import BackgroundRuns
from ._deliver.http import respond
from ._deliver.websocket import WebSocketSession
from ._errors import (
    MethodNotAllowedError,
    UpstreamError,
    clip,
)
from ._input_tokens import count_input_tokens
from ._mcp._client import require_mcp_extra
from ._observe import (
    UNAUTHORIZED_LOG_MESSAGE,
    ResponseRecord,
    access_logger,
)
from ._service import (
    Probes,
    reject_unauthorized,
    request_id,
    send_with_request_id,
)
from ._settings import Settings
from ._store_gateway import StoreGateway

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._metrics import Metrics
    from ._run import ResponseRun
    from ._traces import Tracer

__all__ = ["Drained", "ResponsesMiddleware", "SettingsOverrides", "shutdown_error"]

#: Seconds ``shutdown`` waits, after ending the requests still open, for their last bytes
#: to leave (a client too slow to take them is not waited for longer).
_SHUTDOWN_SEND_SECONDS: Final = 5.0

_METRICS_CONTENT_TYPE: Final = b"text/plain; version=0.0.4; charset=utf-8"

_JSON_TYPE: Final = (b"content-type", b"application/json")


def shutdown_error() -> UpstreamError:
    """What a request still open when the server stops is ended with: ``response.failed``
    (a stream) or a 503 (JSON), with a code clients and retry policies can act on."""
    return UpstreamError(
        "The gateway is shutting down and ended this response; retry the request.",
        code="server_shutting_down",
        status_code=503,
    )


@dataclass(frozen=True, slots=True)
class Drained:
    """What ``ResponsesMiddleware.shutdown`` did with the Responses requests in flight."""

    #: Requests that finished on their own within the grace period.
    finished: int
    #: Requests still open after it, ended with ``server_shutting_down``.
    ended: int


class SettingsOverrides(TypedDict, total=False):
    """``Settings`` fields as keyword arguments of ``ResponsesMiddleware``.

    Spelled out (rather than ``**overrides: Any``) so that type checkers validate them and so
    that ``Middleware(ResponsesMiddleware, ...)`` and ``app.add_middleware`` type-check:
    mypy cannot infer Starlette's ``ParamSpec`` from an untyped ``**kwargs``. A test keeps
    this in step with ``Settings``.
    """

    path_prefix: str
    chat_completions_path: str
    max_request_bytes: int
    max_event_bytes: int
    max_argument_bytes: int
    max_response_bytes: int
    done_marker: bool
    reasoning_events: Literal["text", "summary"]
    think_tags: bool
    close_partial_tool_calls: bool
    error_event: bool
    keepalive_interval: float
    developer_role: Literal["system", "developer"]
    reasoning_passback: bool
    reasoning_key: str | None
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"]
    hosted_tools: Literal["drop", "reject"]
    store_url: str | None
    store_ttl: float
    store_max_responses: int
    store_max_bytes: int
    store_max_response_bytes: int
    store_max_conversation_items: int
    max_background_responses: int
    tenant: Callable[[Scope], str] | None
    on_response: Callable[[ResponseRecord], Awaitable[None] | None] | None
    health_path: str | None
    ready_path: str | None
    ready_checks_upstream: bool
    client_keys: ClientKeys | None
    metrics: bool
    metrics_path: str
    traces: bool
    websocket: bool
    compaction_prompt: str
    mcp_servers: tuple[str, ...]
    mcp_timeout: float
    mcp_max_rounds: int
    mcp_max_result_bytes: int


class ResponsesMiddleware:
    """Serve the OpenAI Responses API from an ASGI app that serves Chat Completions.

    ``POST {path_prefix}/responses`` is translated and sent to the wrapped app as
    ``POST {chat_completions_path}``; the stored-response routes (``GET``/``DELETE``
    ``{path_prefix}/responses/{id}``, ``.../input_items``) are served from the store when one
    is configured; ``GET {health_path}`` and ``GET {ready_path}`` are answered as probes;
    every other request, websocket and lifespan message passes through untouched, unless
    ``client_keys`` is set and it carries no valid key (401).

    Args:
        app: The wrapped ASGI app (a Starlette/FastAPI app, LiteLLM's proxy, a proxy app).
        settings: The configuration; defaults to ``Settings()``.
        **overrides: ``Settings`` fields to set or change, e.g. ``keepalive_interval=5``.

    Raises:
        ConfigurationError: a setting is invalid (the message names it).
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings | None = None,
        **overrides: Unpack[SettingsOverrides],
    ) -> None:
        if settings is None:
            settings = Settings(**overrides)
        elif overrides:
            settings = settings.replace(**overrides)
        if settings.mcp_servers:
            # Now, not at the first request that names an MCP server.
            require_mcp_extra()
        self.app = app
        self.settings = settings
        self.gateway = StoreGateway(settings)
        self.conversations = ConversationsAPI(self.gateway)
        self._responses_path = settings.responses_path
        self._response_base = settings.responses_path + "/"
        self._compact_path = settings.responses_path + "/compact"
        self._input_tokens_path = settings.responses_path + "/input_tokens"
        self._chat_path = settings.chat_completions_path
        self._keepalive = settings.keepalive_interval
        self._max_request_bytes = settings.max_request_bytes
        # A whole non-streamed completion is held in memory; it gets the same bound as one
        # upstream SSE event.
        self._max_upstream_json = settings.max_event_bytes
        self._max_upstream_stream = settings.max_response_bytes
        self._on_response = settings.on_response
        self._store_on = self.gateway.enabled
        self._client_keys = settings.client_keys
        self._websocket = settings.websocket
        self.probes = Probes(settings, self.gateway, app)
        # Imported only when asked for: off, they cost one ``is None`` test per request.
        self.metrics: Metrics | None = None
        self._metrics_path: str | None = None
        if settings.metrics:
            from ._metrics import Metrics

            self.metrics = Metrics()
            self._metrics_path = settings.metrics_path
        self.tracer: Tracer | None = None
        if settings.traces:
            from ._traces import Tracer

            self.tracer = Tracer()
        # The Responses requests in flight, for shutdown(); and, once it ended them, why
        # (requests that arrive later are refused with the same error).
        self._open: set[ResponseRun] = set()
        #: The background responses this process runs, and their delivery routes.
        self.background = BackgroundRuns(self)
        self._stopping: UpstreamError | None = None
        self._all_closed: anyio.Event | None = None

    async def shutdown(self, grace: float = 0.0) -> Drained:
        """Finish the Responses requests in flight, for a server that is stopping.

        Waits up to ``grace`` seconds for them to finish on their own, then ends each one
        still open: a stream with ``response.failed`` (code ``server_shutting_down``) and the
        end of its body, a JSON request with a 503 carrying that code; the wrapped app is
        cancelled for them. Requests that arrive afterwards get the 503 too. Call it after
        the server stopped accepting connections and before it cancels its tasks (the
        gateway does; the lifespan ``shutdown`` message also triggers it, with no grace,
        for servers that send it while requests still run). Returns how many requests
        finished and how many were ended.
        """
        at_start = len(self._open)
        await self._wait_for_open(grace)
        error = self._stopping = shutdown_error()
        ending = list(self._open)
        for run in ending:
            run.stop(error)
        await self._wait_for_open(_SHUTDOWN_SEND_SECONDS)
        return Drained(finished=max(at_start - len(ending), 0), ended=len(ending))

    async def _wait_for_open(self, seconds: float) -> None:
        if not self._open:
            return
        # Created here, in the server's event loop; the last request to close sets it.
        closed = self._all_closed = anyio.Event()
        with anyio.move_on_after(seconds):
            await closed.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = _route_path(scope)
            rid = request_id(scope)
            probe = self.probes.handler(scope, path)
            if probe is not None:
                await probe(scope, send_with_request_id(send, rid))
                return
            if path == self._metrics_path and scope["method"] in ("GET", "HEAD"):
                await self._send_metrics(scope, send_with_request_id(send, rid))
                return
            if self._client_keys is not None:
                authorized = self._authorize(scope)
                if authorized is None:
                    await self._unauthorized(scope, receive, send, rid, path)
                    return
                scope = authorized
            if path == self._compact_path and scope["method"] == "POST":
                send = self._counted(send_with_request_id(send, rid), f"POST {path}")
                await compact(self, scope, receive, send)
                return
            if path == self._input_tokens_path and scope["method"] == "POST":
                send = self._counted(send_with_request_id(send, rid), f"POST {path}")
                await count_input_tokens(self, scope, receive, send)
                return
            if path == self._responses_path:
                method = scope["method"]
                if method == "POST":
                    await respond(self, rid, scope, receive, send)
                    return
                # OPTIONS is left to the app: a CORS layer inside may answer the preflight.
                if method != "OPTIONS":
                    await _method_not_allowed(
                        send_with_request_id(send, rid), method, scope["path"], "POST"
                    )
                    return
            if (
                self._store_on
                and path.startswith(self._response_base)
                and await self._background_route(
                    scope, receive, send_with_request_id(send, rid), path
                )
            ):
                return
            if self._store_on and self.gateway.matches(scope):
                tail = "/input_items" if scope["path"].endswith("/input_items") else ""
                route = f"{scope['method']} {self._responses_path}/{{id}}{tail}"
                send = self._counted(send_with_request_id(send, rid), route)
                await self.gateway.handle(scope, receive, send)
                return
            if self._store_on and self.conversations.matches(scope):
                route = self.conversations.route(scope)
                send = self._counted(send_with_request_id(send, rid), route)
                await self.conversations.handle(scope, receive, send)
                return
        elif kind == "websocket":
            if self._client_keys is not None:
                authorized = self._authorize(scope)
                if authorized is None:
                    await reject_unauthorized(scope, receive, send, None)
                    return
                scope = authorized
            if self._websocket and _route_path(scope) == self._responses_path:
                await WebSocketSession(self)(scope, receive, send)
                return
        elif kind == "lifespan":
            await self.app(scope, self._ending_requests(receive), self._closing_store(send))
            return
        await self.app(scope, receive, send)

    async def _background_route(
        self, scope: Scope, receive: Receive, send: Send, path: str
    ) -> bool:
        """Serve ``POST .../{id}/cancel`` and ``GET .../{id}?stream=true``; ``False`` for
        any other request under ``{path_prefix}/responses/``."""
        response_id, _, tail = path[len(self._response_base) :].partition("/")
        method = scope["method"]
        if tail == "cancel" and method == "POST":
            send = self._counted(send, f"POST {self._responses_path}/{{id}}/cancel")
            await self.background.cancel(scope, send, response_id)
            return True
        if tail or method != "GET":
            return False
        params = QueryParams(scope.get("query_string", b""))
        if params.get("stream", "false").lower() in ("false", "0", ""):
            return False
        try:
            after = int(params.get("starting_after", "-1"))
        except ValueError:
            after = -1
        send = self._counted(send, f"GET {self._responses_path}/{{id}}")
        await self.background.stream(scope, receive, send, response_id, after)
        return True

    async def _unauthorized(
        self, scope: Scope, receive: Receive, send: Send, rid: bytes, path: str
    ) -> None:
        body = unauthorized_body(_has_authorization(scope))
        await reject_unauthorized(scope, receive, send_with_request_id(send, rid), body)
        if scope["method"] == "POST" and path == self._responses_path:
            # This route's line is the middleware's to log (the gateway logs the others).
            access_logger.info(
                UNAUTHORIZED_LOG_MESSAGE,
                {"method": "POST", "path": scope["path"], "request_id": rid.decode("ascii")},
            )

    def _authorize(self, scope: Scope) -> Scope | None:
        """The scope with the caller's tenant recorded, or ``None`` without a valid key."""
        assert self._client_keys is not None
        tenant = self._client_keys.tenant_for(scope["headers"])
        if tenant is None:
            return None
        # A copy: the server's scope is not ours to change.
        return {**scope, CLIENT_SCOPE_KEY: tenant}

    async def _send_metrics(self, scope: Scope, send: Send) -> None:
        assert self.metrics is not None
        body = self.metrics.exposition()
        headers = [
            (b"content-type", _METRICS_CONTENT_TYPE),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {
                "type": "http.response.body",
                "body": b"" if scope["method"] == "HEAD" else body,
                "more_body": False,
            }
        )

    def _counted(self, send: Send, route: str) -> Send:
        """``send``, counting the answer in the metrics as one request on ``route`` (a route
        template: ids are never labels), when metrics are on."""
        metrics = self.metrics
        if metrics is None:
            return send

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                metrics.count_request(route, message["status"])
            await send(message)

        return counting_send

    def _ending_requests(self, receive: Receive) -> Receive:
        # The messages pass unchanged; requests still open are ended before the app hears
        # of the shutdown (under uvicorn none are left by then: its graceful wait and
        # cancellation come first, which is why the gateway calls shutdown() earlier).
        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                if self._open:
                    await self.shutdown()
                if self.metrics is not None:
                    self.metrics.close()
            return message

        return lifespan_receive

    def _closing_store(self, send: Send) -> Send:
        # The messages pass unchanged; the store is closed just before shutdown is reported.
        if not self._store_on:
            return send

        async def lifespan_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.gateway.aclose()
            await send(message)

        return lifespan_send


async def _method_not_allowed(send: Send, method: str, path: str, allowed: str) -> None:
    body = orjson.dumps(MethodNotAllowedError(method, clip(path), allowed).body())
    await send(
        {
            "type": "http.response.start",
            "status": 405,
            "headers": [
                _JSON_TYPE,
                (b"content-length", str(len(body)).encode("ascii")),
                (b"allow", allowed.encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _has_authorization(scope: Scope) -> bool:
    return any(name == b"authorization" for name, _ in scope["headers"])


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path
