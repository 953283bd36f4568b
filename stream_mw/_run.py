"""``ResponseRun``: one response, from its request body to its delivery's last call.

Theory of operation
-------------------
A run is written once and delivered four ways. It reads the request (bounded), validates
it, expands it from the store and translates it into a Chat Completions request that the
wrapped app receives on ``chat_completions_path``; it converts what the app answers, stores
the response and reports it (log line, metrics, span). What it produces goes to a
``Delivery``: HTTP (``_deliver/http``: SSE or JSON), WebSocket frames
(``_deliver/websocket``), a background response's event log (``_deliver/background``) or a
compaction's collected answer (``_compact``). A delivery only carries: it never decides.

Everything the app sends back is judged at ``http.response.start``: a 2xx
``text/event-stream`` for a streaming request is converted here, chunk by chunk, and is the
only answer this module delivers itself: ``Delivery.start`` with ``response.created`` at
once, then each upstream body message is fed to the ``StreamConverter`` and whatever it
returns goes to ``Delivery.events``, before the app can produce the next one. When the
converter finishes, ``Delivery.end`` ends the stream then and there; the app's later sends
are swallowed. Every other answer (2xx JSON, 2xx SSE for a non-streaming request, an
upstream error, an app that returned or raised before its answer was complete) is
``_run_answers``.

The run's other jobs each have a module that takes the run: the request side (reading,
expanding, translating, the app's scope) is ``_run_request``; keep-alives (a repeated
``response.in_progress`` while the upstream is silent: events of the stream, which every
streaming delivery carries) are ``_run_keepalive``; the report (log line, metrics, span,
observer) is ``_run_report``.

Rounds: a request naming remote MCP servers is one response over several Chat requests
(``_run_mcp`` binds the run to ``_mcp/_loop.py``): the stream begins before the first,
``drive`` runs the app once per round on the same converter and delivery, and the loop
``emit``s its own events between rounds, all inside one ``guarded`` scope, so a client that
leaves cancels an MCP call as it cancels the app. When the app's body ends before the
converter finished, ``round_end()`` is consulted: ``None`` (no loop) ends the stream as
always; otherwise the round's last events go out and, when the converter waits for tool
results, the stream stays open for the next ``drive``, whose ``http.response.start``
continues it.

The hot path: one upstream chunk is ``converter.feed`` and one ``Delivery.events`` call with
the body message HTTP sends (HTTP's ``events`` is the server's ``send`` itself), all in
``_send_from_app``, one coroutine deep: a delivery adds no call to it.

Deliberate behaviour, do not "fix":

- An exception from the wrapped app is answered cleanly (a 500 error before anything was
  sent, ``response.failed`` and the end of the stream after) and then re-raised, as
  Starlette's ``ServerErrorMiddleware`` does, so the server logs it. uvicorn logs it and
  then closes the connection, so an error answered before any byte also says
  ``Connection: close``; after a stream began, a client reusing that connection may see one
  connection error (the SDKs retry). In-process test clients surface the exception unless
  told not to (``raise_app_exceptions=False`` / ``raise_server_exceptions=False``).
- A client that goes away (``http.disconnect`` from ``receive``, or a delivery raising
  ``OSError``) cancels the wrapped app at once; it sees ``http.disconnect`` if it was
  listening. Nothing is re-raised for that: the client leaving is not a server error.
- A failed non-streaming response becomes an HTTP error (as OpenAI's API answers), not a
  200 with ``status: "failed"``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any, Final

import anyio
import orjson
from anyio.abc import TaskGroup
from starlette.types import ASGIApp, Message, Receive, Scope

from ._asyncio_path import current_asyncio_task, new_asyncio_cancel_scope
from ._continuation import LocalHistory
from ._delivery import Delivery, Headers
from ._errors import RequestError, UpstreamError
from ._items import new_id
from ._mcp._loop import McpLoop, has_mcp_tools
from ._observe import logger
from ._requests import parse_request_body
from ._run_answers import ERROR, JSON, SSE_TO_JSON, STREAM, WAITING, Answers, stream_too_long
from ._run_keepalive import KeepAlive
from ._run_mcp import mcp_rounds
from ._run_mcp import prepare as prepare_mcp
from ._run_report import report, report_response
from ._run_request import chat_scope, read_body, translate_request
from ._service import REQUEST_ID_HEADER
from ._store_gateway import normalize_input, tenant_key
from ._stream import StreamConverter

if TYPE_CHECKING:
    from ._middleware import ResponsesMiddleware


__all__ = ["Detach", "ResponseRun"]

# Upstream response headers that describe the upstream body, which we replace.
_DROP_RESPONSE_HEADERS: Final = frozenset(
    {
        b"content-length",
        b"content-type",
        b"content-encoding",
        b"transfer-encoding",
        b"content-md5",
        b"content-range",
        b"accept-ranges",
        b"etag",
        b"last-modified",
        b"cache-control",
        b"x-accel-buffering",
        b"connection",
        b"keep-alive",
    }
)
_EVENT_STREAM: Final = b"text/event-stream"

_CLIENT_GONE: Final = {
    "code": "client_disconnected",
    "message": "The client disconnected before the response finished.",
}


#: Takes over a validated ``background: true`` request (``BackgroundRuns.start``).
Detach = Callable[["ResponseRun"], Awaitable[None]]


class ResponseRun:
    """One response: reads and translates the request, runs the app, converts, stores and
    reports, and hands what it produces to its ``Delivery``.

    Args:
        mw: The middleware (settings, store, metrics, the wrapped app).
        scope: The HTTP scope of the request (a WebSocket's upgrade request made one).
        receive: Gives the request body (unless ``respond`` is given it), then reports the
            client leaving with ``http.disconnect``.
        delivery: Where the answer goes.
        rid: The request id (``x-request-id``).
        history: A WebSocket connection's own responses, which ``previous_response_id``
            may name.
        detach: Takes over a ``background: true`` request; without it such a request runs
            here (it is the background run itself).
        route: The metrics' route label for the run (``POST {path_prefix}/responses``);
            ``None``: the run is part of a request counted on its own route (a compaction),
            and adds only its tokens and times.
    """

    __slots__ = (
        "answers",
        "app",
        "cancel_scope",
        "chat_body",
        "closing",
        "complete",
        "converter",
        "created_at",
        "delivery",
        "detach",
        "disconnect_event",
        "disconnected",
        "events",
        "expanded",
        "first_output_at",
        "gateway",
        "history",
        "http_status",
        "input_items",
        "keepalive",
        "keepalive_sending",
        "keepalives",
        "last_send",
        "loop",
        "mcp",
        "mode",
        "mw",
        "on_body",
        "prepared",
        "receive",
        "receive_closed",
        "replayed",
        "reported",
        "request",
        "request_id",
        "response_id",
        "route",
        "scope",
        "sending",
        "settings",
        "started",
        "started_at",
        "stopping",
        "storing",
        "stream",
        "stream_counted",
        "streaming",
        "task_group",
        "tenant",
        "upstream_bytes",
        "upstream_headers",
        "upstream_status",
        "watch_error",
        "watcher",
    )

    def __init__(
        self,
        mw: ResponsesMiddleware,
        scope: Scope,
        receive: Receive,
        delivery: Delivery,
        rid: bytes,
        *,
        history: LocalHistory | None = None,
        detach: Detach | None = None,
        route: str | None,
    ) -> None:
        self.mw = mw
        self.history = history
        self.delivery = delivery
        #: Bound once: the hot path calls it for every upstream chunk.
        self.events = delivery.events
        self.detach = detach
        self.route = route
        #: The ``x-request-id`` header every answer carries.
        self.request_id = (REQUEST_ID_HEADER, rid)
        #: The Chat Completions app driven; a WebSocket warm-up replaces it.
        self.app: ASGIApp = mw.app
        self.settings = mw.settings
        self.gateway = mw.gateway
        self.keepalive = mw._keepalive
        self.receive: Receive = receive
        self.scope: Scope = scope
        self.started_at = time.perf_counter()
        self.response_id = new_id("resp")
        self.created_at = int(time.time())
        self.request: dict[str, Any] = {}
        self.tenant = ""
        self.stream = False
        #: The request is to be stored (a store is configured and ``store`` is not false).
        self.storing = False
        #: The full input, when ``previous_response_id`` expanded it (or a tool loop needed it).
        self.input_items: list[dict[str, Any]] | None = None
        self.chat_body = b""
        #: The request with its whole input, for an MCP tool loop's rounds.
        self.expanded: dict[str, Any] = {}
        #: The MCP tool loop, when the request names remote MCP servers.
        self.mcp: McpLoop | None = None
        self.converter: StreamConverter | None = None
        #: On asyncio: a converter built while the app waited for its upstream.
        self.prepared: StreamConverter | None = None
        #: What the app's answer turned out to be (``WAITING`` until its start message).
        self.mode = WAITING
        #: Handles the app's body messages (except on the streaming hot path).
        self.on_body = self._body_before_start
        #: The answers off the streaming hot path (JSON, errors, the app's unfinished ones).
        self.answers = Answers(self)
        #: Converting the app's stream to the client: bodies take the hot path.
        self.streaming = False
        #: Bytes of upstream event stream read so far (``max_response_bytes``).
        self.upstream_bytes = 0
        self.upstream_status = 0
        self.upstream_headers: Headers = []
        self.http_status = 0
        #: The delivery was given the answer's start (``answer`` or ``start``).
        self.started = False
        #: The answer's last part went (or is going) to the delivery; nothing more is sent.
        self.complete = False
        self.disconnected = False
        #: The app raised: the answer asks the client to close the connection.
        self.closing = False
        self.replayed = False
        self.reported = False
        #: The real receive has nothing more for the app: it may only report a disconnect.
        self.receive_closed = False
        #: Created when the app first waits for a disconnect (most apps never do).
        self.disconnect_event: asyncio.Event | anyio.Event | None = None
        #: Cancels the app when the client leaves; set while the app runs.
        self.cancel_scope: anyio.CancelScope | None = None
        #: The running asyncio loop (the fast path), else ``None`` (any other anyio backend).
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Off asyncio only: the task group running the app and its helpers.
        self.task_group: TaskGroup | None = None
        #: On asyncio: the keep-alive check's pending loop callback, and its sending task.
        self.keepalives: KeepAlive | None = None
        #: Set while a keep-alive is being sent; ``_emit`` waits for it.
        self.keepalive_sending: anyio.Event | None = None
        #: True while ``_emit`` is sending; the keep-alive check skips its turn.
        self.sending = False
        self.last_send = 0.0
        #: On asyncio: the task reading the real receive for a disconnect, once spawned.
        self.watcher: asyncio.Task[None] | None = None
        #: What the server's receive raised, re-raised once the app is cancelled.
        self.watch_error: Exception | None = None
        #: Set by ``stop()``: the server is stopping and this request is ended with it.
        self.stopping: UpstreamError | None = None
        #: ``perf_counter()`` when the first output event went out, for the metrics.
        self.first_output_at = 0.0
        #: The stream is counted in the streams-open gauge.
        self.stream_counted = False

    async def respond(self, body: bytes | None = None) -> None:
        """Run the response to its end: from ``body`` (read from ``receive`` when ``None``)
        to the delivery's last call. Re-raises what the wrapped app raised, once answered."""
        registry = self.mw._open
        registry.add(self)
        try:
            await self._respond(body)
        finally:
            registry.discard(self)
            if not registry and self.mw._all_closed is not None:
                self.mw._all_closed.set()
            if self.stream_counted:
                assert self.mw.metrics is not None
                self.mw.metrics.streams_open.dec()

    def stop(self, error: UpstreamError) -> None:
        """End this response for a server shutdown (or a cancel, or a bound its delivery
        reached): the app is cancelled and ``error`` ends the answer, unless its last bytes
        are already on their way."""
        self.stopping = error
        if not self.complete:
            # Nothing more of the app's is taken: its cancellation lands at its next
            # suspension, which an app sending without one does not reach before it ends.
            self.streaming = False
            if self.mode != WAITING:
                self.on_body = self._body_ignored
            self._stop_keepalive()
            self.cancel_app()

    async def _respond(self, body: bytes | None) -> None:
        try:
            body = await self._prepare(body)
        except RequestError as exc:
            await self.answers.answer(exc.status_code, exc.body())
            error = {"code": exc.code or exc.error_type, "message": exc.message}
            await report(self, "failed", error=error)
            return
        if body is None:
            self.http_status = 499
            await report(self, "failed", error=_CLIENT_GONE)
            return
        if self.detach is not None and self.request.get("background") is True:
            await self.detach(self)
            return
        stopping = self.stopping or self.mw._stopping
        if stopping is not None:
            # The server stopped while the request was read: the app is not started.
            await self.answers.send_upstream_error(stopping)
            return

        app_error = await self.rounds(body)
        if self.watch_error is not None:
            self.http_status = self.http_status or 500
            message = f"The server's receive failed ({type(self.watch_error).__name__})."
            await report(self, "failed", error={"code": "server_error", "message": message})
            raise self.watch_error
        if self.disconnected:
            logger.debug("%s: the client disconnected; the app was cancelled", self.response_id)
            self.http_status = self.http_status or 499
            await report(self, "failed", error=_CLIENT_GONE)
            return
        if self.stopping is not None:
            # The app was cancelled for the shutdown: whatever it raised on the way out is
            # that cancellation, not a server error to log.
            if not self.complete:
                await self.answers.finish_after_app(self.stopping)
            return
        if not self.complete:
            self.closing = app_error is not None
            await self.answers.finish_after_app(app_error)
        if app_error is not None:
            raise app_error

    # --- the request ----------------------------------------------------------------------

    async def _prepare(self, body: bytes | None) -> bytes | None:
        """The first Chat request body (empty for an MCP tool loop, which makes its own
        each round), or ``None`` when the client left before its request arrived."""
        if body is None:
            body = await read_body(self.scope, self.receive, self.mw._max_request_bytes)
            if body is None:
                return None
        request = parse_request_body(body, self.settings)
        self.request = request
        self.stream = request.get("stream") is True
        # A conversation takes the turn even with store: false (see StoreGateway.save).
        self.storing = self.mw._store_on and (
            request.get("store") is not False or request.get("conversation") is not None
        )
        # Sealed reasoning is bound to the tenant both ways: issued for it, accepted from it.
        self.tenant = tenant_key(self.scope, self.settings)
        if has_mcp_tools(request):
            await prepare_mcp(self)
            return b""
        chat, self.input_items = await translate_request(
            request, self.scope, self.settings, self.gateway, self.history, self.tenant
        )
        return orjson.dumps(chat)

    def _inner_scope(self) -> Scope:
        # MCP rounds always stream: a JSON answer would hold a whole round back.
        stream = self.stream or self.mcp is not None
        return chat_scope(self.scope, self.mw._chat_path, len(self.chat_body), stream=stream)

    # --- running the app --------------------------------------------------------------------

    async def rounds(self, chat_body: bytes) -> Exception | None:
        """Drive the app for the response: one round, or the MCP tool loop's (see the
        module docstring). Returns what the app raised."""
        if self.mcp is None:
            return await self.drive(chat_body)
        return await self.guarded(functools.partial(mcp_rounds, self))

    async def drive(self, chat_body: bytes) -> Exception | None:
        """Run the wrapped app on one Chat Completions request body, cancelled if the client
        leaves; returns what it raised.

        May be called again once it returned (a round, see the module docstring): the same
        converter and delivery go on, and ``emit`` may deliver events between rounds.
        """
        if self.cancel_scope is not None:
            # Inside guarded(): the rounds are watched and cancelled as one.
            return await self.call_app(chat_body)
        return await self.guarded(functools.partial(self.call_app, chat_body))

    async def guarded(self, work: Callable[[], Awaitable[Exception | None]]) -> Exception | None:
        """Run ``work`` (the app, or rounds of it) cancelled if the client leaves."""
        task = current_asyncio_task()
        if task is None:
            return await self._guarded_in_task_group(work)
        # On asyncio, a plain task and a cancel scope do what a task group does here for a
        # fraction of its cost: entering, spawning into and leaving an anyio task group costs
        # more than everything else on the way to the first byte. The watcher cannot run
        # before this task first yields, so it is spawned only then: usually while the app
        # waits for its upstream, off the way to the first byte.
        self.loop = task.get_loop()
        spawn = self.loop.call_soon(self._spawn_watcher)
        app_error: Exception | None = None
        try:
            with new_asyncio_cancel_scope() as scope:
                self.cancel_scope = scope
                app_error = await work()
        finally:
            # The helpers end with the app, as a task group would end them.
            self.cancel_scope = None
            spawn.cancel()
            if self.watcher is not None:
                self.watcher.cancel()
            self._stop_keepalive()
        return app_error

    async def call_app(self, chat_body: bytes) -> Exception | None:
        """Run the app once on ``chat_body`` inside a ``guarded`` scope; returns what it
        raised."""
        self.chat_body = chat_body
        self.replayed = False
        self.upstream_status = 0
        self.answers.next_body()
        self.mode, self.on_body = WAITING, self._body_before_start
        try:
            await self.app(self._inner_scope(), self._receive_for_app, self._send_from_app)
        except Exception as exc:
            return exc
        return None

    def _spawn_watcher(self) -> None:
        if self.cancel_scope is not None and self.loop is not None:
            self.watcher = self.loop.create_task(self._watch_disconnect())
            if self.stream and self.mode == WAITING and self.converter is None:
                # The app is waiting for its upstream: build the converter now rather than
                # on the way to the first byte once the upstream answers.
                self.prepared = self.new_converter()

    def new_converter(self) -> StreamConverter:
        """A converter for this run's response (its id, tenant and MCP plan)."""
        return StreamConverter(
            self.request,
            self.settings,
            response_id=self.response_id,
            created_at=self.created_at,
            tenant=self.tenant,
            mcp=self.mcp.plan if self.mcp is not None else None,
        )

    async def _guarded_in_task_group(
        self, work: Callable[[], Awaitable[Exception | None]]
    ) -> Exception | None:
        app_error: Exception | None = None
        async with anyio.create_task_group() as tg:
            self.task_group = tg
            self.cancel_scope = tg.cancel_scope
            tg.start_soon(self._watch_disconnect)
            app_error = await work()
            tg.cancel_scope.cancel()
        self.task_group = self.cancel_scope = None
        return app_error

    async def _receive_for_app(self) -> Message:
        if not self.replayed:
            self.replayed = True
            return {"type": "http.request", "body": self.chat_body, "more_body": False}
        if not self.receive_closed:
            event = self.disconnect_event
            if event is None:
                event = asyncio.Event() if self.loop is not None else anyio.Event()
                self.disconnect_event = event
            await event.wait()
        return {"type": "http.disconnect"}

    def _close_receive(self) -> None:
        self.receive_closed = True
        if self.disconnect_event is not None:
            self.disconnect_event.set()

    async def _watch_disconnect(self) -> None:
        # The only reader of the real receive once the body is in: the app's own receive
        # calls wait on disconnect_event instead, so two readers never race.
        receive = self.receive
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except OSError:
            pass
        except Exception as exc:
            # A broken receive cannot report the client leaving: stop the app rather than
            # let it generate for nobody, and re-raise this once it stopped.
            self.watch_error = exc
            self.client_gone()
            return
        self._close_receive()
        # Servers also report http.disconnect once the response is complete; only a
        # disconnect before that means the client left.
        if not self.complete:
            self.client_gone()

    def _stop_keepalive(self) -> None:
        if self.keepalives is not None:
            self.keepalives.stop()

    def client_gone(self) -> None:
        """The client left: the app is cancelled and nothing more is delivered."""
        self.disconnected = True
        self.streaming = False
        self.on_body = self._body_ignored
        self._close_receive()
        self._stop_keepalive()
        self.cancel_app()

    def cancel_app(self) -> None:
        """Cancel the app (and an MCP call) now; a no-op outside a ``guarded`` scope."""
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()

    # --- what the app sends -----------------------------------------------------------------

    async def _send_from_app(self, message: Message) -> None:
        if self.streaming and message["type"] == "http.response.body":
            # The hot path, one call per upstream chunk, kept in one coroutine on purpose:
            # each extra level of await costs a sixth of what the converter does per chunk.
            converter = self.converter
            assert converter is not None
            body: bytes = message.get("body", b"")
            if body:
                self.upstream_bytes += len(body)
                if self.upstream_bytes > self.mw._max_upstream_stream:
                    await self.end_stream(b"", stream_too_long(self))
                    self.cancel_app()
                    return
                out = converter.feed(body)
            else:
                out = b""
            if converter.finished or not message.get("more_body", False):
                if not converter.finished:
                    tail = self.round_end()
                    if tail is not None:
                        out += tail
                        if not converter.finished:
                            # Only the round ended: its events go out, and the next
                            # drive() continues the stream.
                            self.streaming = False
                            if out:
                                await self.emit(out)
                            return
                await self.end_stream(out)
                if message.get("more_body", False) and converter.response["status"] == "failed":
                    # Failed mid-body (a limit, an in-band error): the rest of a body that
                    # may never end would only keep the upstream generating for nobody.
                    self.cancel_app()
            elif out:
                if not self.first_output_at:
                    self.first_output_at = time.perf_counter()
                # See _run_keepalive for why this is not a lock.
                while self.keepalive_sending is not None:
                    await self.keepalive_sending.wait()
                self.sending = True
                try:
                    await self.events(
                        {"type": "http.response.body", "body": out, "more_body": True}
                    )
                except OSError:
                    self.client_gone()
                self.sending = False
                self.last_send = _monotonic()
            return
        kind = message["type"]
        if kind == "http.response.body":
            await self.on_body(message)
        elif kind == "http.response.start":
            if not self.disconnected:
                await self._on_start(message)
        else:
            logger.debug("dropped %s from the wrapped app", kind)

    async def _body_ignored(self, message: Message) -> None:
        # The client left: cancellation reaches the app at its next suspension; until then
        # its sends go nowhere.
        pass

    async def _body_before_start(self, message: Message) -> None:
        raise RuntimeError("Expected ASGI message 'http.response.start', but got a body first.")

    async def _on_start(self, message: Message) -> None:
        if self.upstream_status:
            raise RuntimeError("Unexpected ASGI message 'http.response.start' sent twice.")
        status: int = message["status"]
        content_type = b""
        kept: list[tuple[bytes, bytes]] = []
        for name, value in message.get("headers", ()):
            lower = name.lower()
            if lower == b"content-type":
                content_type = value
            elif lower == REQUEST_ID_HEADER:
                # Ours is the request's id (the one in our log line); the upstream's is kept
                # under another name for tracing a request into the upstream's logs.
                kept.append((b"x-upstream-request-id", value))
            elif lower not in _DROP_RESPONSE_HEADERS:
                kept.append((name, value))
        self.upstream_status = status
        self.upstream_headers = kept
        is_sse = content_type.partition(b";")[0].strip().lower() == _EVENT_STREAM
        if not 200 <= status < 300:
            self.mode, self.on_body = ERROR, self.answers.body_error
        elif not is_sse:
            self.mode, self.on_body = JSON, self.answers.body_json
        elif self.started and self.stream:
            # A later round of a stream that began: its chunks feed the same converter.
            self.mode, self.on_body = STREAM, self._body_ignored
            self.streaming = not self.disconnected
            if self.keepalives is not None and self.streaming and not self.keepalives.armed:
                self.keepalives.arm()
        else:
            if self.converter is None:
                # (An MCP tool loop's converter exists before the first round.)
                self.converter = self.prepared or self.new_converter()
            self.prepared = None
            if self.stream:
                # Bodies take the hot path in _send_from_app while self.streaming.
                self.mode, self.on_body = STREAM, self._body_ignored
                await self.start_stream()
            else:
                self.mode, self.on_body = SSE_TO_JSON, self.answers.body_sse_to_json
        logger.debug(
            "%s: upstream answered %d %s", self.response_id, status, content_type.decode("latin-1")
        )

    # --- streaming: upstream SSE to Responses SSE -------------------------------------------

    async def start_stream(self) -> None:
        """Begin the stream: ``response.created`` goes out, then the hot path takes over."""
        assert self.converter is not None
        # Built before the head is sent, so that the head and the first events leave back to
        # back: a client woken by the head alone would have to be woken again for them.
        first = self.converter.start()
        self.started = True
        self.http_status = 200
        try:
            await self.delivery.start(self.upstream_headers, first, end=False)
        except OSError:
            self.client_gone()
            return
        self.last_send = _monotonic()
        self.streaming = not self.disconnected
        metrics = self.mw.metrics
        if metrics is not None and self.streaming:
            metrics.streams_open.inc()
            self.stream_counted = True
        # Armed after the first byte, which it must not delay.
        if self.keepalive > 0 and not self.disconnected:
            self.keepalives = KeepAlive(self, self.keepalive)
            self.keepalives.arm()

    async def end_stream(
        self, out: bytes, error: BaseException | None = None, *, incomplete: bool = False
    ) -> None:
        """End a stream that began: ``out``, then the converter's terminal events, stored
        before they go and reported after."""
        converter = self.converter
        assert converter is not None
        self.streaming = False
        self.complete = True
        final = out + converter.close(error, incomplete=incomplete)
        await self.store(converter.response)
        await self._emit(final, more_body=False)
        await report_response(self, converter.response)

    def round_end(self) -> bytes | None:
        """Consulted when the app's body ended before the converter finished: ``None`` ends
        the response as always; bytes end the round (the events to deliver), and a
        converter that is then still unfinished waits for another ``drive()``."""
        if self.mcp is None:
            return None
        assert self.converter is not None
        return self.converter.end_round()

    async def emit(self, data: bytes) -> None:
        """Deliver events of a stream that began, between or within rounds."""
        await self._emit(data, more_body=True)

    async def _emit(self, data: bytes, *, more_body: bool) -> None:
        # A keep-alive being sent is waited for (see _run_keepalive for why not a lock). No
        # await lies between the checks and the flags they guard, so they cannot interleave.
        while self.keepalive_sending is not None:
            await self.keepalive_sending.wait()
        self.sending = True
        try:
            if more_body:
                await self.events({"type": "http.response.body", "body": data, "more_body": True})
            else:
                await self.delivery.end(data)
        except OSError:
            self.client_gone()
        self.sending = False
        self.last_send = _monotonic()

    async def store(self, response: dict[str, Any]) -> None:
        """Save ``response`` (unless the client left or the request is not stored)."""
        # Runs just before the last byte: a client that sees the terminal event may continue
        # with previous_response_id at once, through any gateway process sharing the store,
        # so the response must be readable by then. save() is bounded by the store timeout
        # and never raises, so a slow or broken store delays the end, never breaks it.
        if self.disconnected or not self.storing:
            return
        items = self.input_items
        if items is None:
            # Without previous_response_id the input items are only needed here, at the end,
            # so they are not built on the way to the first byte.
            items = normalize_input(self.request.get("input"))
        await self.gateway.save(self.scope, items, response, self.request)
