"""One MCP session with one remote server, for one response: ``open_mcp``.

Strategy: the ``mcp`` package's ``ClientSession`` over its streamable HTTP transport, or
over its SSE transport when the server answers the first POST with 404 or 405 (an SSE-only
server). Both majors of the package are supported: 1.x (on httpx) and 2.x (on httpx2,
``streamable_http_client(url, http_client=...)``); the differences stay in ``_transport``
and ``_list_page``.

Every HTTP request the transports send goes through ``_Guard``, a transport wrapped around
the HTTP client's own. It is the one place the security rules of ``_policy`` meet the wire:

- a request leaves only for the server's origin or a URL ``mcp_servers`` allows, and a
  redirect is followed only to a listed URL, or to the same URL with a ``/`` added (each
  hop checked again);
- the host is resolved and its addresses checked before the first connection, and the
  request is sent to the checked address (the URL's host stays in ``Host`` and in TLS SNI),
  so a second DNS answer cannot move it elsewhere;
- the request's MCP headers go to the server's origin only;
- an answer (a JSON body, or one event of a stream) is bounded in size;
- it remembers the first refusal or failure, and ends the operations waiting on the
  session with it: the failure surfaces at once as an ``McpError`` that says what happened,
  instead of whatever the transport made of it, or nothing at all (mcp 1.x logs a failed
  POST and leaves its caller waiting).

The session lives in a task of its own, started on the first operation inside the task
group ``open_mcp`` holds: callers may list and call from any task, and closing the context
(or cancelling it, when the client went away) ends that task and the connection with it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import anyio
import anyio.abc
import orjson

from .._errors import ConfigurationError, StreamMWError
from .._settings import Settings
from ._plan import McpServer
from ._policy import AllowList, Refused, resolve_checked

__all__ = ["McpConnection", "McpError", "McpResult", "open_mcp", "require_mcp_extra"]

logger = logging.getLogger("stream_mw.mcp")

ErrorKind = Literal["protocol", "http", "timeout", "refused"]

#: Pages of ``tools/list`` followed before giving up on a server that never stops paging.
MAX_LIST_PAGES: Final = 64
#: Seconds a closing session may spend telling the server goodbye (a DELETE).
_CLOSE_GRACE: Final = 2.0
#: The read timeout of an idle event stream (these transports want one): just under a day,
#: as mcp 1.9.2 reads a timedelta's ``seconds``, which wrap at a day.
_IDLE: Final = 86399.0
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
#: The one place the setting is named in messages.
_SETTING: Final = "mcp_servers (STREAM_MW_MCP_SERVERS)"


class McpError(StreamMWError):
    """An MCP server could not be used.

    Attributes:
        message: What happened, safe to show the client and to log: it never holds the
            request's MCP headers.
        kind: ``"refused"`` (the security rules kept the gateway from connecting),
            ``"timeout"`` (``mcp_timeout`` passed), ``"http"`` (the server could not be
            reached, or answered with an HTTP error) or ``"protocol"`` (its answer was
            not MCP, or an MCP error).
        status: The HTTP status of an ``"http"`` error, when there was one.
    """

    def __init__(self, message: str, kind: ErrorKind, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind
        self.status = status


@dataclass(frozen=True, slots=True)
class McpResult:
    """A tool's answer, as text for the model."""

    #: The result's text, at most ``mcp_max_result_bytes`` bytes of it, plus a note when cut.
    output: str
    #: The tool reported an error (``isError``): ``output`` is its message.
    is_error: bool = False


def require_mcp_extra() -> None:
    """Fail now, not at the first request, when remote MCP tools are on but ``mcp`` is missing.

    Raises:
        ConfigurationError: names the package and the command that installs it.
    """
    if importlib.util.find_spec("mcp") is None:
        raise ConfigurationError(
            f"{_SETTING} is set, and remote MCP tools need the mcp package: "
            "pip install 'stream-mw[mcp]'"
        )


@contextlib.asynccontextmanager
async def open_mcp(server: McpServer, settings: Settings) -> AsyncIterator[McpConnection]:
    """A session with ``server``, connected on its first operation and closed on exit.

    The URL is checked here, before anything connects: against ``mcp_servers`` again, and
    its host's addresses against the private ranges (unless the entry names the host).
    Enter and leave it in one task, as any context holding a task group; its connection's
    methods may be called from any task inside it.

    Raises:
        McpError: ``"refused"``, or ``"timeout"`` / ``"http"`` when the host cannot be resolved.
    """
    require_mcp_extra()
    guard = _Guard(server, settings)
    await guard.check_server()
    error: Exception | None = None
    async with anyio.create_task_group() as tasks:
        connection = McpConnection(server, settings, guard, tasks)
        try:
            yield connection
        except Exception as exc:
            # Raised after the task group, or the caller would get it in an ExceptionGroup.
            error = exc
        finally:
            await connection._close()
    if error is not None:
        raise error


class McpConnection:
    """One MCP session with one server; made by ``open_mcp``."""

    def __init__(
        self,
        server: McpServer,
        settings: Settings,
        guard: _Guard,
        tasks: anyio.abc.TaskGroup,
    ) -> None:
        self._server = server
        self._timeout = settings.mcp_timeout
        self._max_result_bytes = settings.mcp_max_result_bytes
        self._guard = guard
        self._tasks = tasks
        self._session: Any = None
        self._failure: McpError | None = None
        self._ready: anyio.Event | None = None
        self._closing = anyio.Event()
        self._ended = anyio.Event()

    def __repr__(self) -> str:
        return f"<McpConnection {self._server.label!r} {_shown(self._server.url)}>"

    async def list_tools(self) -> list[dict[str, Any]]:
        """Every tool the server offers, as ``mcp_list_tools`` ``tools`` entries.

        Follows ``nextCursor`` for at most ``MAX_LIST_PAGES`` pages, all within one
        ``mcp_timeout``.

        Raises:
            McpError: the server could not be reached, answered an error, or was too slow.
        """
        tools: list[dict[str, Any]] = []
        async with self._operation("list its tools") as session:
            cursor: str | None = None
            for _ in range(MAX_LIST_PAGES):
                page = _wire(await _list_page(session, cursor))
                tools.extend(_listing(entry) for entry in page.get("tools") or ())
                cursor = page.get("nextCursor")
                if not cursor:
                    return tools
        raise McpError(
            f"The MCP server {self._server.label!r} kept paging its tool list past "
            f"{MAX_LIST_PAGES} pages.",
            "protocol",
        )

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> McpResult:
        """Call ``name`` with ``arguments``; the server's tool error is an ``McpResult``
        with ``is_error`` set, not an exception.

        Raises:
            McpError: the call could not be made or answered, or took over ``mcp_timeout``.
        """
        async with self._operation(f"answer a call of {name!r}") as session:
            result = _wire(await session.call_tool(name, arguments))
        return McpResult(
            output=_bounded(_result_text(result), self._max_result_bytes),
            is_error=bool(result.get("isError")),
        )

    @contextlib.asynccontextmanager
    async def _operation(self, what: str) -> AsyncIterator[Any]:
        # One mcp_timeout covers connecting too: the caller waits that long at most.
        label = self._server.label
        try:
            with anyio.fail_after(self._timeout):
                session = await self._connected()
                self._guard.failure = None
                with self._guard.abortable() as abort:
                    yield session
                if abort.cancelled_caught:
                    raise self._guard.explain(None, f"The MCP server {label!r} could not {what}")
        except McpError:
            raise
        except TimeoutError:
            raise McpError(
                f"The MCP server {label!r} did not {what} within {self._timeout:g} s "
                "(mcp_timeout).",
                "timeout",
            ) from None
        except Exception as exc:
            raise self._guard.explain(exc, f"The MCP server {label!r} could not {what}") from None

    async def _connected(self) -> Any:
        if self._ready is None:
            self._ready = anyio.Event()
            self._tasks.start_soon(self._run, name=f"mcp session {self._server.label}")
        await self._ready.wait()
        if self._failure is not None:
            raise self._failure
        if self._session is None:
            raise McpError(f"The MCP session with {self._server.label!r} has ended.", "protocol")
        return self._session

    async def _run(self) -> None:
        """Hold the session open until ``_close``; record, never raise, what went wrong."""
        assert self._ready is not None
        label = self._server.label
        try:
            try:
                async with self._session_over(streamable=True) as session:
                    await self._serve(session)
            except Exception:
                # A server that does not speak streamable HTTP answers its POST 404 or 405.
                status = self._guard.failure_status
                if self._session is not None or self._guard.refusal or status not in (404, 405):
                    raise
                logger.debug("MCP server %r answered %s to a POST: trying SSE", label, status)
                self._guard.failure = None
                async with self._session_over(streamable=False) as session:
                    await self._serve(session)
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:
            # A task group of the transport may end in a group mixing errors and our own
            # cancellation; the session is over either way, and what matters is recorded.
            if self._failure is None and not self._closing.is_set():
                self._failure = self._guard.explain(
                    exc, f"The MCP server {label!r} could not be connected to"
                )
        finally:
            self._session = None
            self._ready.set()
            self._ended.set()

    async def _serve(self, session: Any) -> None:
        await session.initialize()
        self._session = session
        assert self._ready is not None
        self._ready.set()
        await self._closing.wait()

    @contextlib.asynccontextmanager
    async def _session_over(self, *, streamable: bool) -> AsyncIterator[Any]:
        session_module = importlib.import_module("mcp.client.session")
        async with (
            _transport(self._server, self._guard, streamable=streamable) as streams,
            session_module.ClientSession(streams[0], streams[1]) as session,
        ):
            yield session

    async def _close(self) -> None:
        self._closing.set()
        if self._ready is not None:
            # A session that ends by itself says goodbye (a DELETE); one that hangs, or a
            # response that is being cancelled, does not wait for it.
            with anyio.move_on_after(min(_CLOSE_GRACE, self._timeout)):
                await self._ended.wait()
        self._tasks.cancel_scope.cancel()


# --- the transports ----------------------------------------------------------------------


def _http_module() -> ModuleType:
    """httpx2 for mcp 2.x, httpx for 1.x: the HTTP client the installed mcp is built on."""
    major = importlib.metadata.version("mcp").partition(".")[0]
    return importlib.import_module("httpx2" if major.isdigit() and int(major) >= 2 else "httpx")


@contextlib.asynccontextmanager
async def _transport(
    server: McpServer, guard: _Guard, *, streamable: bool
) -> AsyncIterator[tuple[Any, Any]]:
    http = _http_module()
    # No read timeout: a session idles while the model thinks between two calls, and the
    # server's event stream with it. Each operation is bounded by mcp_timeout instead.
    timeout = http.Timeout(guard.timeout, read=None)
    headers = dict(server.headers)

    def client(
        headers: Mapping[str, str] | None = None, timeout: Any = timeout, auth: Any = None
    ) -> Any:
        # The guard refuses redirects off the list before they are followed; mcp 1.x leaves
        # following the rest to the client, 2.x follows them itself and ignores this.
        return http.AsyncClient(
            headers=dict(headers or {}),
            timeout=timeout,
            auth=auth,
            transport=_GuardedTransport(http, guard),
            follow_redirects=True,
        )

    if not streamable:
        sse = importlib.import_module("mcp.client.sse")
        async with sse.sse_client(
            server.url,
            headers=headers,
            timeout=guard.timeout,
            sse_read_timeout=_IDLE,
            httpx_client_factory=client,
        ) as streams:
            yield streams[0], streams[1]
        return
    module = importlib.import_module("mcp.client.streamable_http")
    modern = getattr(module, "streamable_http_client", None)
    if modern is not None and "http_client" in inspect.signature(modern).parameters:
        options: dict[str, Any] = {}
        if "max_sse_event_size" in inspect.signature(modern).parameters:
            # The guard bounds events (and says so): mcp's own bound stays out of its way.
            options["max_sse_event_size"] = guard.max_answer_bytes + 1
        async with (
            client(headers) as http_client,
            modern(server.url, http_client=http_client, **options) as streams,
        ):
            yield streams[0], streams[1]
        return
    async with module.streamablehttp_client(
        server.url,
        headers=headers,
        # 1.9.2 takes timedeltas only; later 1.x take numbers too.
        timeout=timedelta(seconds=guard.timeout),
        sse_read_timeout=timedelta(seconds=_IDLE),
        httpx_client_factory=client,
    ) as streams:
        yield streams[0], streams[1]


class _Guard:
    """The security rules for one server's session, and what it saw go wrong."""

    def __init__(self, server: McpServer, settings: Settings) -> None:
        self.server = server
        self.timeout = settings.mcp_timeout
        self.max_result_bytes = settings.mcp_max_result_bytes
        self._allow = AllowList(settings.mcp_servers)
        url = urlsplit(server.url)
        self._origin = _origin(url.scheme, url.hostname or "", url.port)
        #: host -> the address checked for it, used for every connection to that host.
        self._pinned: dict[str, str] = {}
        #: The first refusal of this session; it outranks whatever error follows from it.
        self.refusal: str | None = None
        self._operations: set[anyio.CancelScope] = set()
        #: The first failure below the current operation: (message, status, kind).
        self.failure: tuple[str, int | None, ErrorKind] | None = None
        #: Bytes one answer to a POST may take: a result may be cut to mcp_max_result_bytes,
        #: so a larger one is taken whole, JSON escaping included, but not without end.
        self.max_answer_bytes = 4 * settings.mcp_max_result_bytes + (1 << 20)

    @property
    def failure_status(self) -> int | None:
        return self.failure[1] if self.failure is not None else None

    async def check_server(self) -> None:
        url = urlsplit(self.server.url)
        if self._allow.match(self.server.url) is None:
            raise McpError(
                f"The MCP server URL {_shown(self.server.url)} is not in {_SETTING}.", "refused"
            )
        await self.address(url.hostname or "", _port(url.scheme, url.port), self.server.host_listed)

    async def address(self, host: str, port: int, host_listed: bool) -> str:
        """The checked address to connect to for ``host``. Raises ``McpError``."""
        key = host.lower()
        if key in self._pinned:
            return self._pinned[key]
        try:
            with anyio.fail_after(self.timeout):
                address = await resolve_checked(host, port, host_listed=host_listed)
        except Refused as exc:
            raise self.refuse(str(exc)) from None
        except TimeoutError:
            raise McpError(
                f"Resolving the MCP server host {host!r} took over {self.timeout:g} s (mcp_timeout).",
                "timeout",
            ) from None
        except OSError as exc:
            raise McpError(
                f"The MCP server host {host!r} could not be resolved ({exc.strerror or exc}).",
                "http",
            ) from None
        self._pinned[key] = address
        return address

    def refuse(self, message: str) -> McpError:
        if self.refusal is None:
            self.refusal = message
            logger.warning("MCP server %r refused: %s", self.server.label, message)
        for scope in self._operations:
            scope.cancel()
        return McpError(message, "refused")

    def is_server_origin(self, scheme: str, host: str, port: int | None) -> bool:
        return _origin(scheme, host, port) == self._origin

    def allowed(self, url: str) -> bool | None:
        """``None`` when ``url`` is off the list, else whether its entry names its host."""
        allowed = self._allow.match(url)
        return None if allowed is None else allowed.host_listed

    @contextlib.contextmanager
    def abortable(self) -> Iterator[anyio.CancelScope]:
        """A scope for one operation that a failure seen below it cancels: some transports
        (mcp 1.x's) log a failed POST and leave its caller waiting for an answer."""
        scope = anyio.CancelScope()
        self._operations.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._operations.discard(scope)

    def saw_failure(self, message: str, status: int | None, kind: ErrorKind = "http") -> None:
        if self.failure is None:
            self.failure = (message, status, kind)
        for scope in self._operations:
            scope.cancel()

    def explain(self, exc: BaseException | None, doing: str) -> McpError:
        """The ``McpError`` for ``exc``, a failure somewhere below a session operation
        (``None``: the operation was aborted by one the guard saw)."""
        if isinstance(exc, McpError):
            return exc
        if self.refusal is not None:
            return McpError(self.refusal, "refused")
        if self.failure is not None:
            message, status, kind = self.failure
            return McpError(f"{doing}: {message}", kind, status)
        if exc is None:
            return McpError(f"{doing}: the connection failed.", "http")
        error = _mcp_error_message(exc)
        if error is not None:
            return McpError(f"{doing}: the server answered an error: {error}", "protocol")
        return McpError(f"{doing}: its answer could not be read ({_kind_of(exc)}).", "protocol")


class _GuardedTransport:
    """An httpx / httpx2 transport that applies ``_Guard``'s rules to every request."""

    def __init__(self, http: ModuleType, guard: _Guard) -> None:
        self._http = http
        self._guard = guard
        #: One connection pool per host name. Requests go to addresses, and a pool keys its
        #: connections by address: shared, a TLS connection made (and its certificate
        #: checked) for one name would carry requests for another name on that address.
        self._pools: dict[str, Any] = {}

    async def __aenter__(self) -> _GuardedTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.aclose()

    def _pool(self, host: str) -> Any:
        pool = self._pools.get(host)
        if pool is None:
            pool = self._pools[host] = self._http.AsyncHTTPTransport()
        return pool

    async def handle_async_request(self, request: Any) -> Any:
        http, guard = self._http, self._guard
        url = request.url
        shown = _shown(str(url))
        if guard.refusal is not None:
            raise http.ConnectError(guard.refusal, request=request)
        # The ASCII (IDNA) form: what DNS, TLS and the Host header see.
        host = url.raw_host.decode("ascii")
        same_origin = guard.is_server_origin(url.scheme, host, url.port)
        host_listed = guard.server.host_listed
        headers = request.headers.copy()
        if not same_origin:
            # Only a redirect leads elsewhere: its target passed the list (below), but the
            # request's MCP headers belong to the server the client named, not to this one.
            listed = guard.allowed(str(url))
            if listed is None:
                message = f"The MCP server sent the gateway to {shown}, which is not in {_SETTING}."
                raise http.ConnectError(guard.refuse(message).message, request=request)
            host_listed = listed
            for name in guard.server.headers:
                headers.pop(name, None)
        try:
            address = await guard.address(host, _port(url.scheme, url.port), host_listed)
        except McpError as exc:
            guard.saw_failure(exc.message, None)
            raise http.ConnectError(exc.message, request=request) from None
        extensions = dict(request.extensions)
        if url.scheme == "https":
            extensions["sni_hostname"] = host
        pinned = http.Request(
            request.method,
            url.copy_with(host=address),
            headers=headers,
            stream=request.stream,
            extensions=extensions,
        )
        try:
            response = await self._pool(host).handle_async_request(pinned)
        except http.TransportError as exc:
            guard.saw_failure(f"{shown} could not be reached ({_kind_of(exc)})", None)
            raise
        status = response.status_code
        if status in _REDIRECTS and "location" in response.headers:
            target = url.join(response.headers["location"])
            if guard.allowed(str(target)) is None and not _adds_a_slash(url, target):
                await response.aclose()
                message = (
                    f"The MCP server at {shown} redirected to {_shown(str(target))}, which is "
                    f"not in {_SETTING}; the redirect was not followed."
                )
                raise http.ConnectError(guard.refuse(message).message, request=request)
        elif status >= 400 and not (request.method in ("GET", "DELETE") and status == 405):
            # 405 to the optional GET stream or the goodbye DELETE is a server's right.
            guard.saw_failure(f"{shown} answered HTTP {status}", status)
        events = response.headers.get("content-type", "").startswith("text/event-stream")
        return http.Response(
            status_code=status,
            headers=response.headers,
            stream=_bounded_stream(http)(response.stream, guard, shown, events),
            extensions=response.extensions,
        )


#: What ends an SSE event: a blank line, in any of the three line endings.
_EVENT_ENDS: Final = (b"\n\n", b"\r\n\r\n", b"\r\r")


def _after_last_event_end(data: bytes) -> int:
    """Where the bytes after the last event end in ``data`` begin, or 0 when none ends."""
    ends = (data.rfind(mark) + len(mark) for mark in _EVENT_ENDS if mark in data)
    return max(ends, default=0)


@functools.cache
def _bounded_stream(http: ModuleType) -> Any:
    """The ``AsyncByteStream`` of ``http`` (httpx or httpx2, which check the class) that
    ends a JSON answer, or one event of an event stream, longer than
    ``_Guard.max_answer_bytes``. An event stream itself may live as long as its session."""

    class BoundedStream(http.AsyncByteStream):  # type: ignore[misc, name-defined]
        def __init__(self, inner: Any, guard: _Guard, shown: str, events: bool) -> None:
            self._inner = inner
            self._guard = guard
            self._shown = shown
            self._events = events

        async def __aiter__(self) -> AsyncIterator[bytes]:
            limit, seen, tail = self._guard.max_answer_bytes, 0, b""
            async for chunk in self._read():
                seen += len(chunk)
                if self._events:
                    # Count from the last event end; one may straddle two chunks.
                    window = tail + chunk
                    end = _after_last_event_end(window)
                    if end:
                        seen = len(window) - end
                    tail = window[-3:]
                if seen > limit:
                    message = f"{self._shown} sent an answer of more than {limit} bytes"
                    self._guard.saw_failure(message, None, "protocol")
                    raise http.ReadError(message)
                yield chunk

        async def _read(self) -> AsyncIterator[bytes]:
            try:
                async for chunk in self._inner:
                    yield chunk
            except http.TransportError as exc:
                # The server went away mid-answer: the operation waiting for it is over.
                self._guard.saw_failure(f"{self._shown} broke off ({_kind_of(exc)})", None)
                raise

        async def aclose(self) -> None:
            await self._inner.aclose()

    return BoundedStream


# --- results -----------------------------------------------------------------------------


def _wire(model: Any) -> dict[str, Any]:
    """A result of either mcp major as its JSON-RPC wire form (camelCase keys)."""
    dumped = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert isinstance(dumped, dict)
    return dumped


async def _list_page(session: Any, cursor: str | None) -> Any:
    if cursor is None:
        return await session.list_tools()
    if "params" in inspect.signature(session.list_tools).parameters:
        types = importlib.import_module("mcp.types")
        return await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
    return await session.list_tools(cursor)


def _listing(tool: Mapping[str, Any]) -> dict[str, Any]:
    annotations = tool.get("annotations")
    return {
        "name": tool.get("name"),
        "input_schema": tool.get("inputSchema") or {"type": "object", "properties": {}},
        "description": tool.get("description"),
        "annotations": annotations if isinstance(annotations, dict) and annotations else None,
    }


def _result_text(result: Mapping[str, Any]) -> str:
    parts: list[str] = []
    has_text = False
    for block in result.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            has_text = True
            parts.append(str(block.get("text", "")))
        else:
            parts.append(_describe(block))
    structured = result.get("structuredContent")
    if not has_text and structured is not None:
        parts.insert(0, orjson.dumps(structured).decode())
    return "\n".join(parts)


def _describe(block: Mapping[str, Any]) -> str:
    """A short note standing in for a content block the model cannot read as text."""
    kind = str(block.get("type", "unknown"))
    if kind in ("image", "audio"):
        size = len(str(block.get("data", ""))) * 3 // 4
        return f"[{kind} content: {block.get('mimeType', 'unknown type')}, about {size} bytes, not shown]"
    if kind == "resource":
        resource = block.get("resource") or {}
        uri = resource.get("uri", "")
        if "text" in resource:
            return f"[resource {uri}]\n{resource['text']}"
        size = len(str(resource.get("blob", ""))) * 3 // 4
        mime = resource.get("mimeType", "unknown type")
        return f"[resource {uri}: {mime}, about {size} bytes, not shown]"
    if kind == "resource_link":
        name = block.get("name")
        return f"[resource link {block.get('uri', '')}{f' ({name})' if name else ''}]"
    return f"[{kind} content, not shown]"


def _bounded(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    kept = data[:limit].decode(errors="ignore")
    return (
        f"{kept}\n[The tool's result was cut here: it was {len(data)} bytes, and "
        f"mcp_max_result_bytes is {limit}.]"
    )


# --- small helpers -----------------------------------------------------------------------


def _adds_a_slash(url: Any, target: Any) -> bool:
    """``target`` is ``url`` with a ``/`` after its path: the redirect a server mounted at
    ``/mcp/`` answers to ``/mcp`` (mcp 1.x's own servers do), as good as the listed URL."""
    return bool(
        (target.scheme, target.host, target.port, target.query)
        == (url.scheme, url.host, url.port, url.query)
        and target.path == url.path + "/"
    )


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)


def _origin(scheme: str, host: str, port: int | None) -> tuple[str, str, int]:
    return scheme, host.lower().strip("[]"), _port(scheme, port)


def _shown(url: str) -> str:
    """``url`` for a message: without query or fragment, which may carry tokens."""
    parts = urlsplit(url)
    return repr(parts._replace(query="", fragment="").geturl()[:200])


def _kind_of(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, tuple) and inner:
        return ", ".join(sorted({_kind_of(e) for e in inner}))
    return type(exc).__name__


def _mcp_error_message(exc: BaseException) -> str | None:
    """The server's message of an MCP (JSON-RPC) error of either mcp major, else ``None``."""
    error = getattr(exc, "error", None)
    message = getattr(error, "message", None)
    if isinstance(message, str) and type(exc).__name__ in ("McpError", "MCPError"):
        return message[:300]
    return None
