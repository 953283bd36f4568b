"""Background responses: the run detached from the client, its events delivered from the store.

Strategy: a ``background: true`` request is read and validated by its HTTP run as usual,
which then hands it here (``BackgroundRuns.start``). The background run is the same request
as a streaming one, run by a fresh ``ResponseRun`` in a task the middleware owns, so the
client leaving never reaches it. Its delivery is the event log (``_EventLog``): each event
is appended to the store with its sequence number, and the response, still
``in_progress``, is stored as soon as ``response.created`` comes, so that any process
sharing the store can show it (``GET``), replay and follow its events
(``?stream=true&starting_after=N``) and cancel it.

Every delivery reads the log, the one that answers the creating request included: a
streamed create and a resumed stream are the same code, and a client sees the same events
from whichever process it asks. Cancellation reaches the runner through the store (a flag
it polls every ``CANCEL_POLL_SECONDS``), or directly when the cancel lands in the process
that runs it; the run is then stopped like for a shutdown and the terminal event
rewritten to say ``cancelled``. When a log stays silent longer than a live run's can (four
keep-alive intervals, or ``SILENT_RUN_SECONDS`` with keep-alives off) and its run is not
this process's, the runner died: the follower ends the response ``failed``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import anyio
import orjson
from starlette.types import Message, Receive, Scope, Send

from .._asyncio_path import running_asyncio_loop
from .._delivery import Headers
from .._errors import (
    InvalidRequestError,
    NotFoundError,
    RequestError,
    StoreUnavailableError,
    UpstreamError,
    clip,
    error_body,
)
from .._run import ResponseRun
from .._service import send_with_request_id
from .._sse import encode_event, event_payloads
from .._store import NotStored, Store, StoredResponse
from .._store_gateway import normalize_input, send_json, tenant_key

if TYPE_CHECKING:
    from .._middleware import ResponsesMiddleware

__all__ = ["BackgroundRuns"]

logger = logging.getLogger("stream_mw")

#: Seconds between the runner's looks at the store for a cancellation from another process.
CANCEL_POLL_SECONDS: Final = 0.25
#: Seconds a follower waits on the log before it checks that the run is still alive.
FOLLOW_WAIT_SECONDS: Final = 1.0
#: Seconds of log silence after which a follower takes a run it does not see running in its
#: own process for dead, when keep-alives are off. Without them a live run's log is silent
#: for as long as its upstream is, so only a silence longer than an upstream may keep is taken
#: for a death: twice the proxy app's default ``read_timeout``, past which a live run would
#: have failed its response itself.
SILENT_RUN_SECONDS: Final = 600.0
#: Seconds ``cancel`` waits for the cancelled run's terminal event before answering.
CANCEL_WAIT_SECONDS: Final = 5.0

_TERMINAL_EVENTS: Final = frozenset(
    {"response.completed", "response.incomplete", "response.failed"}
)
_TERMINAL_STATUSES: Final = frozenset({"completed", "incomplete", "failed", "cancelled"})
_DONE: Final = b"data: [DONE]\n\n"
_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


def _cancelled_error() -> UpstreamError:
    return UpstreamError("The response was cancelled.", code="cancelled", status_code=499)


@dataclass(eq=False)
class _Run:
    tenant: str
    response_id: str
    #: Set once the creating request can be answered: the first event logged, or an error.
    started: anyio.Event = field(default_factory=anyio.Event)
    #: The response of ``response.created``.
    first: dict[str, Any] | None = None
    #: ``(status, body)`` when the run answered with an error instead of a stream.
    error: tuple[int, dict[str, Any]] | None = None
    #: A cancel asked in this process.
    cancel: anyio.Event = field(default_factory=anyio.Event)
    cancelled: bool = False
    #: The terminal response, as logged.
    final: dict[str, Any] | None = None
    log_bytes: int = 0


class BackgroundRuns:
    """The background responses one middleware runs, and the routes that deliver them."""

    def __init__(self, mw: ResponsesMiddleware) -> None:
        self._mw = mw
        self._max = mw.settings.max_background_responses
        # Bounds the log: a run whose events outgrow what its upstream may send is failed.
        self._max_log_bytes = 2 * mw.settings.max_response_bytes
        self._runs: dict[tuple[str, str], _Run] = {}
        # Strong references: the event loop keeps only weak ones to tasks.
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._runs)

    # --- creating ----------------------------------------------------------------------------

    async def start(self, creating: ResponseRun, send: Send) -> None:
        """Answer a validated ``background: true`` request (its run, whose answer goes to
        ``send``) and start the background run."""
        request = creating.request
        rid = creating.request_id
        if not self._mw._store_on or request.get("store") is False:
            why = "store is false" if self._mw._store_on else "this server has no store"
            error = InvalidRequestError(
                f"'background' requires a stored response ({why}): background responses "
                "are delivered from the store.",
                param="background",
            )
            await send_json(send, error.status_code, error.body(), (rid,))
            return
        if running_asyncio_loop() is None:
            # The run must outlive the request, and only asyncio lets a task do that
            # without a task group the server hands us.
            error = InvalidRequestError(
                "'background' needs the server to run on asyncio.", param="background"
            )
            await send_json(send, error.status_code, error.body(), (rid,))
            return
        if len(self._runs) >= self._max:
            body = error_body(
                f"This server already runs {self._max} background responses "
                "(max_background_responses); retry later.",
                "rate_limit_error",
                code="too_many_background_responses",
            )
            await send_json(send, 429, body, (rid,))
            return
        run = _Run(creating.tenant, creating.response_id)
        self._runs[(run.tenant, run.response_id)] = run
        data = orjson.dumps({**request, "stream": True})
        task = asyncio.get_running_loop().create_task(self._run(run, creating.scope, data, rid[1]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await run.started.wait()
        if run.error is not None:
            status, payload = run.error
            await send_json(send, status, payload, (rid,))
            return
        if creating.stream and run.first is not None:
            send = send_with_request_id(send, rid[1])
            await self._follow(run.tenant, run.response_id, -1, creating.receive, send)
            return
        if run.first is None:
            # The run ended before its first event was logged: the store failed.
            unavailable = StoreUnavailableError(
                "The background response could not start: the response store is "
                "unavailable; try again later."
            )
            await send_json(send, unavailable.status_code, unavailable.body(), (rid,))
            return
        await send_json(send, 200, run.first, (rid,))

    async def _run(self, run: _Run, scope: Scope, body: bytes, rid: bytes) -> None:
        finished = anyio.Event()

        async def receive() -> Message:
            # Read only to learn of a client leaving: nobody's leaving stops this run.
            await finished.wait()
            return {"type": "http.disconnect"}

        log = _EventLog(self, run)
        # No detach: this is the background run itself.
        route = f"POST {self._mw.settings.responses_path}"
        background = log.run = ResponseRun(self._mw, scope, receive, log, rid, route=route)
        background.response_id = run.response_id
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_cancel, run, background)
                try:
                    await background.respond(body)
                finally:
                    tg.cancel_scope.cancel()
        except Exception:
            logger.exception("background response %s failed", run.response_id)
        finally:
            finished.set()
            self._runs.pop((run.tenant, run.response_id), None)
            run.started.set()

    async def _watch_cancel(self, run: _Run, background: ResponseRun) -> None:
        while True:
            with anyio.move_on_after(CANCEL_POLL_SECONDS):
                await run.cancel.wait()
            if not run.cancel.is_set():
                try:
                    asked = await self._mw.gateway.guard(
                        lambda store: store.cancel_requested(run.tenant, run.response_id)
                    )
                except StoreUnavailableError:
                    continue
                if not asked:
                    continue
            run.cancelled = True
            background.stop(_cancelled_error())
            return

    # --- delivering --------------------------------------------------------------------------

    async def stream(
        self, scope: Scope, receive: Receive, send: Send, response_id: str, after: int
    ) -> None:
        """``GET {prefix}/responses/{id}?stream=true&starting_after=N``: the logged events
        after ``N``, then the live ones to the terminal event."""
        tenant = tenant_key(scope, self._mw.settings)
        try:
            stored = await self._load(tenant, response_id)
            if stored.response.get("background") is not True:
                raise InvalidRequestError(
                    "Only background responses can be streamed again; retrieve this one "
                    "without 'stream'.",
                    param="stream",
                )
        except RequestError as exc:
            await send_json(send, exc.status_code, exc.body())
            return
        await self._follow(tenant, response_id, after, receive, send)

    async def _follow(
        self, tenant: str, response_id: str, after: int, receive: Receive, send: Send
    ) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                # The client leaving ends the delivery only; the run goes on.
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            try:
                await self._deliver(tenant, response_id, after, send)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass
            tg.cancel_scope.cancel()

    async def _deliver(self, tenant: str, response_id: str, after: int, send: Send) -> None:
        gateway = self._mw.gateway
        # A live run logs at least one event per keep-alive interval (the keep-alive itself
        # when the upstream is silent); a log silent for several is a run whose process died.
        # Without keep-alives only a much longer silence says so (SILENT_RUN_SECONDS).
        keepalive = self._mw.settings.keepalive_interval
        silence = 4 * keepalive if keepalive > 0 else SILENT_RUN_SECONDS
        lost_after = silence + FOLLOW_WAIT_SECONDS
        last_event = time.monotonic()
        while True:
            events = await gateway.guard(
                functools.partial(_events_after, tenant, response_id, after)
            )
            if not events:
                if await self._ended_unlogged(tenant, response_id):
                    return
                if (
                    time.monotonic() - last_event > lost_after
                    # A run of this process is alive, however long its upstream is silent.
                    and (tenant, response_id) not in self._runs
                ):
                    events = await self._declare_lost(tenant, response_id, after)
                    if not events:
                        return
                else:
                    ping = {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}
                    await send(ping)
                    continue
            last_event = time.monotonic()
            for seq, data in events:
                kind = orjson.loads(data).get("type", "")
                await send(
                    {
                        "type": "http.response.body",
                        "body": encode_event(kind, data),
                        "more_body": True,
                    }
                )
                after = seq
                if kind in _TERMINAL_EVENTS:
                    if self._mw.settings.done_marker:
                        await send({"type": "http.response.body", "body": _DONE, "more_body": True})
                    return

    async def _declare_lost(
        self, tenant: str, response_id: str, after: int
    ) -> list[tuple[int, bytes]]:
        """End a run whose process died: its record and its log say ``failed`` from now on
        (the event is returned for the caller to deliver), so it is never lost silently."""
        stored = await self._load(tenant, response_id)
        if stored.response.get("status") in _TERMINAL_STATUSES:
            return []
        # server_error: the code clients' schemas know (openai's is a closed list).
        error = {
            "code": "server_error",
            "message": "The process running this background response stopped before it "
            "ended; create the response again.",
        }
        logger.warning("background response %s lost: its log went silent", response_id)
        response = {**stored.response, "status": "failed", "error": error}
        failed = {"type": "response.failed", "sequence_number": after + 1, "response": response}
        event = (after + 1, orjson.dumps(failed))
        final = StoredResponse(response, stored.input_items)
        await self._mw.gateway.guard(lambda store: store.put(tenant, final))
        await self._mw.gateway.guard(
            lambda store: store.append_events(tenant, response_id, [event])
        )
        return [event]

    async def _ended_unlogged(self, tenant: str, response_id: str) -> bool:
        # A log that stopped growing: the run ended without logging its end (its process
        # died) when the stored response no longer says it is running.
        if (tenant, response_id) in self._runs:
            return False
        stored = await self._mw.gateway.guard(lambda store: store.get(tenant, response_id))
        if not isinstance(stored, StoredResponse):
            return True
        return stored.response.get("status") in _TERMINAL_STATUSES

    # --- cancelling --------------------------------------------------------------------------

    async def cancel(self, scope: Scope, send: Send, response_id: str) -> None:
        """``POST {prefix}/responses/{id}/cancel``: stop the run, wherever it runs, and
        answer the response as it ended (``cancelled``, or how it had already ended)."""
        tenant = tenant_key(scope, self._mw.settings)
        gateway = self._mw.gateway
        try:
            stored = await self._load(tenant, response_id)
            if stored.response.get("background") is not True:
                raise InvalidRequestError(
                    "Only background responses can be cancelled.", param="response_id"
                )
            if stored.response.get("status") not in _TERMINAL_STATUSES:
                await gateway.guard(lambda store: store.request_cancel(tenant, response_id))
                run = self._runs.get((tenant, response_id))
                if run is not None:
                    run.cancel.set()
                with anyio.move_on_after(CANCEL_WAIT_SECONDS):
                    await self._until_terminal(tenant, response_id)
                stored = await self._load(tenant, response_id)
        except RequestError as exc:
            await send_json(send, exc.status_code, exc.body())
            return
        await send_json(send, 200, stored.response)

    async def _until_terminal(self, tenant: str, response_id: str) -> None:
        # The log, not the record: the record changes twice at the end (the run
        # stores it as failed, then it is stored as cancelled before the terminal event
        # is logged), so only the terminal event says the record is final.
        after = -1
        while True:
            events = await self._mw.gateway.guard(
                functools.partial(_events_after, tenant, response_id, after)
            )
            for seq, data in events:
                after = seq
                if orjson.loads(data).get("type") in _TERMINAL_EVENTS:
                    return
            if not events and await self._ended_unlogged(tenant, response_id):
                return

    async def _load(self, tenant: str, response_id: str) -> StoredResponse:
        stored = await self._mw.gateway.guard(lambda store: store.get(tenant, response_id))
        if stored is None or isinstance(stored, NotStored):
            raise NotFoundError(
                f"Response with id '{clip(response_id)}' not found.", param="response_id"
            )
        return stored


class _EventLog:
    """A background run's delivery: its events go to the store's event log."""

    def __init__(self, runs: BackgroundRuns, run: _Run) -> None:
        self._runs = runs
        self._run = run
        #: The run delivering here, set once it is made.
        self.run: ResponseRun | None = None
        #: The store failed: the run is being stopped and nothing more is logged.
        self._broken = False

    async def answer(
        self, status: int, body: dict[str, Any], headers: Headers, *, close: bool
    ) -> None:
        # Only errors come here: a background run is always streamed.
        if status != 200:
            self._run.error = (status, body)
            self._run.started.set()

    async def start(self, headers: Headers, events: bytes, *, end: bool) -> None:
        await self._events(events)

    async def end(self, data: bytes) -> None:
        await self._events(data)

    async def events(self, message: Message) -> None:
        await self._events(message["body"])

    async def _events(self, data: bytes) -> None:
        run = self._run
        if self._broken:
            return
        try:
            events = [await self._one(orjson.loads(payload)) for payload in event_payloads(data)]
            if not events:
                return
            gateway = self._runs._mw.gateway
            await gateway.guard(
                lambda store: store.append_events(run.tenant, run.response_id, events)
            )
        except StoreUnavailableError:
            # Nobody could ever see this run's events: it is stopped, not run for nobody.
            self._broken = True
            self._stop(
                UpstreamError(
                    "The response store is unavailable; the background response was stopped.",
                    code="store_unavailable",
                    status_code=503,
                )
            )
        run.started.set()

    def _stop(self, error: UpstreamError) -> None:
        assert self.run is not None
        self.run.stop(error)

    async def _one(self, event: dict[str, Any]) -> tuple[int, bytes]:
        run = self._run
        kind = event.get("type")
        if kind == "response.created":
            # Readable at once from any process: GET shows it running, cancel finds it.
            stored = StoredResponse(event["response"], [])
            await self._runs._mw.gateway.guard(lambda store: store.put(run.tenant, stored))
            run.first = event["response"]
        elif kind in _TERMINAL_EVENTS:
            if run.cancelled and kind == "response.failed":
                # No event type says "cancelled"; the failed event carries the status, and
                # no error (as OpenAI's cancelled responses: nothing went wrong).
                event["response"] = {**event["response"], "status": "cancelled", "error": None}
                # The run stored it as failed just now; stored again before the terminal
                # event is logged, so whoever sees that event reads "cancelled".
                background = self.run
                assert background is not None
                items = background.input_items
                if items is None:
                    items = normalize_input(background.request.get("input"))
                final = StoredResponse(event["response"], items)
                await self._runs._mw.gateway.guard(lambda store: store.put(run.tenant, final))
            run.final = event["response"]
        data = orjson.dumps(event)
        run.log_bytes += len(data)
        if run.log_bytes > self._runs._max_log_bytes and kind not in _TERMINAL_EVENTS:
            self._stop(
                UpstreamError(
                    "The background response's event log outgrew its bound "
                    "(2 x max_response_bytes).",
                    code="event_log_full",
                    status_code=502,
                )
            )
        return int(event.get("sequence_number", 0)), data


async def _events_after(
    tenant: str, response_id: str, after: int, store: Store
) -> list[tuple[int, bytes]]:
    return await store.events_after(tenant, response_id, after, FOLLOW_WAIT_SECONDS)
