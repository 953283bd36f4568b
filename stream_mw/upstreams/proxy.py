"""A streaming reverse proxy to an OpenAI-compatible server, as an ASGI app (needs httpx).

``ProxyApp("http://localhost:8000/v1")`` forwards ``/v1/chat/completions`` and ``/v1/models``
to that base URL. Put ``ResponsesMiddleware`` in front of it and any Chat Completions server
(vLLM, Ollama, llama.cpp, LM Studio, a LiteLLM proxy) speaks the Responses API::

    app = ResponsesMiddleware(ProxyApp("http://localhost:11434/v1"))

How it behaves, and why:

- **Paths.** ``base_url`` is an API root, as the openai SDK's ``base_url`` is: the part of the
  incoming path after ``/v1`` is appended to it (``/v1/chat/completions`` →
  ``{base_url}/chat/completions``). A bare host (``http://host:8000``) gets ``/v1`` added.
- **Query strings.** A query in ``base_url`` (Azure's ``?api-version=2024-10-21``) and the
  ``params`` given here go with every forwarded request, followed by the client's own
  parameters save those of the same names: the configured ones win.
- **Network.** ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` are honoured
  as curl and httpx honour them (read when the app is built; ``trust_env=False`` ignores
  them, ``proxy=`` names one explicitly): see ``_proxies.py``. Through a proxy the upstream's
  host name is resolved by the proxy, never here. ``https`` upstreams are verified against
  ``ca_bundle``, else ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else certifi's bundle.
- **Streaming both ways.** A request body that arrives in several ASGI messages is streamed up
  as it arrives (with the client's ``Content-Length``, so the upstream sees no chunked
  encoding); the response is sent down chunk by chunk as the upstream produces it.
  The upstream is asked for an uncompressed body; a compressed one is refused (``502``),
  as a few kilobytes of it can inflate to gigabytes.
- **One connection pool.** Requests go through one pooled httpx transport (HTTP/1.1
  keep-alive, see ``_transport.py``), opened on ASGI ``lifespan`` startup and closed on
  shutdown; without lifespan (``httpx.ASGITransport``, some test harnesses) it is opened on
  first use and closed by ``aclose()`` / ``async with``. There is no ``httpx.AsyncClient`` on
  top of it on purpose: a client keeps the cookies one upstream response sets and sends them
  with every later request, which in a proxy means with other users' requests, and its
  per-request bookkeeping (cookies, auth, redirects) costs more than the proxying itself.
- **Timeouts.** ``connect_timeout`` bounds reaching the upstream; ``read_timeout`` bounds the
  silence between two reads (a model's time to first token included), not the whole answer.
- **Credentials.** With ``api_key`` set, ``Authorization: Bearer <api_key>`` replaces the
  client's (or, with ``api_key_header="api-key"`` as Azure wants, ``api-key: <api_key>``
  does, and the client's ``Authorization`` is dropped); otherwise the client's
  ``Authorization`` is forwarded. The key is never logged nor
  put in an error message, and an upstream that quotes it back (some echo the request's
  headers in their errors) has it replaced by ``***`` in the headers and body it sends.
- **Headers.** Hop-by-hop headers (RFC 9110 §7.6.1, and any the ``Connection`` header names)
  are dropped in both directions, as are ``Host`` and ``Accept-Encoding`` going up and
  ``Date`` and ``Server`` coming down (the server in front of this app sets its own).
- **Disconnects.** When the client goes away (``http.disconnect``), the upstream response is
  closed at once, so the upstream stops generating.
- **Errors.** An upstream that cannot be reached, or whose response head breaks HTTP or is
  over ``max_header_bytes`` / ``max_headers`` (a proxy would hold and forward it all),
  answers ``502``, a timeout before the response began ``504``, both as OpenAI-shaped JSON
  naming the upstream URL. An upstream that breaks off (or falls silent past
  ``read_timeout``) mid-stream gets a warning log line and, between two events, an in-band
  ``data: {"error": ...}`` event naming it (code ``upstream_broke_off``); then the body ends
  cleanly. The middleware reports it as ``response.failed``, unless the upstream's
  ``finish_reason`` had already arrived: then the answer is whole, and it completes exactly
  as if the body had ended there. Nothing is raised: the response has begun, and an
  exception would only make the server drop the client's keep-alive connection.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from types import TracebackType
from urllib.parse import parse_qsl, urlencode

import anyio
import httpx
import orjson
from starlette.types import Message, Receive, Scope, Send

from .._asyncio_path import current_asyncio_task, new_asyncio_cancel_scope
from .._errors import ConfigurationError, clip, error_body
from ._asgi import send_error
from ._proxies import choose_proxy
from ._transport import DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS, StreamingTransport

__all__ = ["DEFAULT_PATHS", "ProxyApp"]

logger = logging.getLogger("stream_mw")

#: Paths forwarded by default, relative to the API root (``/v1``).
DEFAULT_PATHS = ("/chat/completions", "/models")

# RFC 9110 §7.6.1 connection-specific fields, plus the ones a proxy must set itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED_UP = _HOP_BY_HOP | {"host", "accept-encoding", "expect"}
# The server in front of this app sends its own Date and Server headers; two of each confuse.
_NOT_FORWARDED_DOWN = _HOP_BY_HOP | {"date", "server"}


_MIN_SECRET = 8
_MAX_CACHED_TARGETS = 64
_REDACTED = b"***"


class _Scrubber:
    """Replaces a secret in a body that arrives in pieces, even one split between pieces.

    Only a piece's tail that could begin the secret is held back until the next piece, so an
    SSE chunk (ending in a blank line) always goes through at once.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._held = b""

    def whole(self, data: bytes) -> bytes:
        return data.replace(self._secret, _REDACTED)

    def feed(self, chunk: bytes) -> bytes:
        data = (self._held + chunk).replace(self._secret, _REDACTED)
        keep = _partial_match(data, self._secret)
        self._held = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep]

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held


def _partial_match(data: bytes, secret: bytes) -> int:
    """Length of the longest tail of ``data`` that is a proper prefix of ``secret``."""
    first = secret[:1]
    index = data.find(first, max(0, len(data) - len(secret) + 1))
    while index != -1:
        if secret.startswith(data[index:]):
            return len(data) - index
        index = data.find(first, index + 1)
    return 0


class _ClientGone(Exception):
    """The client disconnected before its request body was read."""


class ProxyApp:
    """An ASGI app forwarding Chat Completions requests to an OpenAI-compatible server.

    Args:
        base_url: The upstream API root, like the openai SDK's ``base_url``:
            ``http://localhost:8000/v1`` (vLLM), ``http://localhost:11434/v1`` (Ollama).
        api_key: Sent as ``Authorization: Bearer <api_key>``; when ``None`` the client's
            ``Authorization`` header is forwarded.
        api_key_header: Send ``api_key`` as this header's whole value instead (Azure
            OpenAI's ``api-key``).
        connect_timeout: Seconds to establish a connection.
        read_timeout: Seconds of upstream silence tolerated while reading a response.
        write_timeout: Seconds to send one piece of the request body.
        pool_timeout: Seconds to wait for a free pooled connection.
        max_connections: Connections kept open to the upstream at most.
        paths: Paths forwarded, relative to the API root; others answer 404.
        headers: Extra headers sent with every upstream request.
        max_header_bytes: Bytes an upstream response's head may take; a larger one is a 502.
        max_headers: Header fields an upstream response may have; more is a 502.
        params: Query parameters added to every upstream request, after ``base_url``'s own.
        proxy: A forward proxy URL (``http://[user:password@]host:port``) for every request;
            ``None`` leaves it to the environment (``trust_env``).
        trust_env: Honour ``HTTP(S)_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` and
            ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, read now.
        ca_bundle: A PEM file (or directory) of the authorities trusted for an ``https``
            upstream, instead of the default ones.

    Raises:
        ConfigurationError: ``base_url`` is not an ``http(s)://host`` URL, or the proxy URL
            is not an ``http://`` one.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        api_key_header: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        write_timeout: float = 60.0,
        pool_timeout: float = 10.0,
        max_connections: int = 100,
        paths: Iterable[str] = DEFAULT_PATHS,
        headers: Mapping[str, str] | None = None,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
        params: Mapping[str, str] | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        ca_bundle: str | None = None,
    ) -> None:
        url = parse_base_url(base_url)
        self._base = url.copy_with(query=None)
        # Encoded once: most requests carry no query of their own and send these bytes as is.
        self._query = _merge_query(url.query, urlencode(list((params or {}).items())).encode())
        self._proxy = choose_proxy(url, proxy, trust_env=trust_env)
        if ca_bundle is not None and not os.path.exists(ca_bundle):
            raise ConfigurationError(f"the CA bundle {ca_bundle} does not exist")
        if ca_bundle is None and trust_env:
            # Read now, with the proxy variables, though the transport comes later.
            ca_bundle = os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR") or None
        self._ca_bundle = ca_bundle
        self._api_key = api_key
        if api_key_header is None or api_key_header.lower() == "authorization":
            self._key_header = (
                (b"authorization", b"Bearer %b" % api_key.encode()) if api_key else None
            )
        else:
            self._key_header = (api_key_header.lower().encode(), (api_key or "").encode())
        # httpx's request extension, read by the transport for each request.
        self._timeouts = {
            "connect": connect_timeout,
            "read": read_timeout,
            "write": write_timeout,
            "pool": pool_timeout,
        }
        self._max_connections = max_connections
        if max_header_bytes < 1 or max_headers < 1:
            raise ConfigurationError("max_header_bytes and max_headers must be at least 1")
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._paths = tuple("/" + p.strip("/") for p in paths)
        self._extra_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self._transport: StreamingTransport | None = None
        self._targets: dict[str, httpx.URL] = {}
        # Placeholder keys ("EMPTY", "ollama") are not secrets, and scrubbing a short string
        # from every body would mangle it.
        self._secret = (
            api_key.encode() if api_key is not None and len(api_key) >= _MIN_SECRET else b""
        )

    @property
    def base_url(self) -> str:
        """The upstream API root, without credentials or query: safe to log and show."""
        return _display(self._base)

    @property
    def proxy(self) -> str | None:
        """The forward proxy in use (``http://host:port``, no credentials), or ``None``."""
        return self._proxy.display if self._proxy is not None else None

    def target_url(self, path: str) -> httpx.URL:
        """The upstream URL for an incoming path (``/v1/models`` → ``{base_url}/models``),
        with the configured query parameters."""
        url = self._targets.get(path)
        if url is None:
            suffix = path[3:] if path == "/v1" or path.startswith("/v1/") else path
            url = self._base.copy_with(
                path=self._base.path.rstrip("/") + suffix, query=self._query or None
            )
            # Building an httpx.URL costs more than relaying a chunk; forwarded paths are few.
            if len(self._targets) < _MAX_CACHED_TARGETS:
                self._targets[path] = url
        return url

    async def aclose(self) -> None:
        """Close the pooled connections. Lifespan shutdown does this for you."""
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.aclose()

    async def __aenter__(self) -> ProxyApp:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _get_transport(self) -> StreamingTransport:
        if self._transport is None:
            self._transport = StreamingTransport(
                max_connections=self._max_connections,
                max_header_bytes=self._max_header_bytes,
                max_headers=self._max_headers,
                proxy=self._proxy,
                ca_bundle=self._ca_bundle,
                trust_env=False,
            )
        return self._transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._forward(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._get_transport()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _allowed(self, path: str) -> bool:
        suffix = path[3:] if path.startswith("/v1/") else path
        return any(suffix == p or suffix.startswith(p + "/") for p in self._paths)

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if not self._allowed(path):
            await send_error(
                send, 404, f"{clip(path)} is not forwarded to the upstream", "not_found"
            )
            return
        url = self.target_url(path)
        query: bytes = scope.get("query_string", b"")
        if query:
            url = url.copy_with(query=_merge_query(self._query, query) or None)
        try:
            content, body_done = await self._request_body(receive)
        except _ClientGone:
            return
        transport = self._get_transport()
        request = httpx.Request(
            scope["method"],
            url,
            headers=self._request_headers(scope),
            content=content,
            extensions={"timeout": self._timeouts},
        )
        # The client may leave at any time once its body is read, also while the upstream
        # is still thinking about the first byte: the watcher cancels the whole exchange.
        task = current_asyncio_task()
        if task is None:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_cancel_on_disconnect, receive, body_done, tasks.cancel_scope)
                await self._exchange(transport, request, url, send)
                tasks.cancel_scope.cancel()
            return
        with new_asyncio_cancel_scope() as cancel_scope:
            watcher = task.get_loop().create_task(
                _cancel_on_disconnect(receive, body_done, cancel_scope)
            )
            try:
                await self._exchange(transport, request, url, send)
            finally:
                watcher.cancel()

    async def _exchange(
        self, transport: StreamingTransport, request: httpx.Request, url: httpx.URL, send: Send
    ) -> None:
        try:
            response = await transport.handle_async_request(request)
        except _ClientGone:
            return
        except httpx.TimeoutException as exc:
            await self._send_failure(send, 504, url, "timed out", exc)
            return
        except httpx.RemoteProtocolError as exc:
            # Reached, but its answer broke HTTP (or a bound: headers too large).
            await self._send_failure(
                send, 502, url, "sent an unusable response", exc, "upstream_invalid_response"
            )
            return
        except httpx.HTTPError as exc:
            await self._send_failure(send, 502, url, "could not be reached", exc)
            return
        logger.debug(
            "upstream request %s %s answered %d",
            request.method,
            _display(url),
            response.status_code,
        )
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            # Asked for none (Accept-Encoding: identity). Decoding one would let a few
            # kilobytes inflate to gigabytes in the gateway: a gzip bomb.
            await response.aclose()
            await self._send_failure(
                send,
                502,
                url,
                "sent an unusable response",
                httpx.DecodingError(f"a {encoding!r}-encoded body, though asked for none"),
                "upstream_invalid_response",
            )
            return
        try:
            await self._relay(response, url, send)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def _relay(self, response: httpx.Response, url: httpx.URL, send: Send) -> None:
        scrub = _Scrubber(self._secret) if self._secret else None
        raw = response.headers.raw
        drop = set(_NOT_FORWARDED_DOWN) | _connection_tokens(raw)
        if "content-encoding" in response.headers or scrub is not None:
            # aiter_bytes() decodes, and scrubbing changes lengths: the upstream's length and
            # encoding no longer describe the body sent.
            drop |= {"content-encoding", "content-length"}
        headers = [
            (k.lower(), scrub.whole(v) if scrub else v)
            for k, v in raw
            if k.decode("latin-1").lower() not in drop
        ]
        event_stream = response.headers.get("content-type", "").startswith("text/event-stream")
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        # aiter_bytes() decodes a compressed body. A plain one is read straight from the
        # transport's body stream: Response's per-chunk wrappers cost more than relaying.
        chunks: AsyncIterable[bytes]
        if "content-encoding" in response.headers:
            chunks = response.aiter_bytes()
        else:
            assert isinstance(response.stream, httpx.AsyncByteStream)
            chunks = response.stream
        tail = b"\n\n"  # the last bytes sent: nothing yet counts as an event boundary
        try:
            async for chunk in chunks:
                if scrub is not None:
                    chunk = scrub.feed(chunk)
                if chunk:
                    tail = chunk[-4:] if len(chunk) >= 4 else (tail + chunk)[-4:]
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:
            message = f"upstream {_display(url)} broke off the response: {_describe(exc)}"
            logger.warning("%s", message)
            last = b""
            if event_stream and tail.endswith((b"\n\n", b"\r\r", b"\r\n\r\n")):
                # Reported in-band, as vLLM and others report their own mid-stream failures:
                # the middleware turns it into response.failed with this message. A cut in the
                # middle of an event is left as it is: the reader drops an unfinished event.
                error = error_body(message, "server_error", code="upstream_broke_off")
                last = b"data: " + orjson.dumps(error) + b"\n\n"
            await send({"type": "http.response.body", "body": last, "more_body": False})
            return
        last = scrub.flush() if scrub is not None else b""
        await send({"type": "http.response.body", "body": last, "more_body": False})

    async def _request_body(
        self, receive: Receive
    ) -> tuple[bytes | AsyncIterator[bytes], anyio.Event]:
        body_done = anyio.Event()
        first = await receive()
        if first["type"] == "http.disconnect":
            raise _ClientGone
        if not first.get("more_body", False):
            body_done.set()
            return first.get("body", b""), body_done

        async def stream() -> AsyncIterator[bytes]:
            message: Message = first
            while True:
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    break
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
            body_done.set()

        return stream(), body_done

    def _request_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        drop = set(_NOT_FORWARDED_UP) | _connection_tokens(raw)
        if self._api_key is not None:
            # The client's own key (often a gateway client key) never goes upstream then.
            drop.add("authorization")
            if self._key_header is not None:
                drop.add(self._key_header[0].decode("latin-1"))
        headers = [(k, v) for k, v in raw if k.decode("latin-1").lower() not in drop]
        # Compressing an event stream holds events back in the compressor; ask for none.
        headers.append((b"accept-encoding", b"identity"))
        headers.extend(self._extra_headers)
        if self._api_key is not None and self._key_header is not None:
            headers.append(self._key_header)
        return headers

    async def _send_failure(
        self,
        send: Send,
        status: int,
        url: httpx.URL,
        what: str,
        exc: Exception,
        code: str | None = None,
    ) -> None:
        message = f"upstream {_display(url)} {what}: {_describe(exc)}"
        logger.warning("%s", message)
        if code is None:
            code = "upstream_timeout" if status == 504 else "upstream_unreachable"
        await send_error(send, status, message, code)


async def _cancel_on_disconnect(
    receive: Receive, body_done: anyio.Event, scope: anyio.CancelScope
) -> None:
    # Only read ``receive`` once the body generator is finished with it: two readers of one
    # ASGI ``receive`` would steal each other's messages.
    await body_done.wait()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def parse_base_url(base_url: str) -> httpx.URL:
    """Validate an upstream base URL; a bare host gets ``/v1``.

    Raises:
        ConfigurationError: not an ``http://`` or ``https://`` URL with a host.
    """
    hint = "expected an http(s) URL such as http://localhost:8000/v1"
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError(f"invalid upstream URL {base_url!r} ({exc}); {hint}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(f"invalid upstream URL {base_url!r}; {hint}")
    if url.fragment:
        raise ConfigurationError(f"upstream URL {base_url!r} must not have a fragment")
    if url.path in ("", "/"):
        url = url.copy_with(path="/v1")
    return url


def _merge_query(configured: bytes, client: bytes) -> bytes:
    """The configured parameters, then the client's whose names they do not set."""
    if not client:
        return configured
    if not configured:
        return client
    names = {name for name, _ in parse_qsl(configured.decode("latin-1"), keep_blank_values=True)}
    kept = [
        (name, value)
        for name, value in parse_qsl(client.decode("latin-1"), keep_blank_values=True)
        if name not in names
    ]
    return configured + (b"&" + urlencode(kept).encode() if kept else b"")


def _display(url: httpx.URL) -> str:
    # Credentials in the URL (http://user:secret@host) must never reach a log or a client,
    # nor a query, which some providers use for keys (?key=...).
    if url.userinfo or url.query:
        url = url.copy_with(username=None, password=None, query=None)
    return str(url)


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[str]:
    tokens: set[str] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.decode("latin-1").split(","))
    return tokens - {""}
