"""A Chat Completions upstream that misbehaves on command, and records what it went through.

The fault is chosen by the request's ``model``: ``"<fault>;key=value;key=value"``. Because the
middleware passes the model through unchanged, a test picks the fault from the Responses
request it sends, whatever sits in between (the in-process middleware or a real gateway with
``ProxyApp``). Every request may carry ``tag=<name>``; the upstream keeps a record per tag
(outcome, headers received) that tests read back through ``GET /_wait/<tag>``, which waits
until that request has ended (so no test sleeps to synchronise).

Faults (``after`` counts content chunks sent before the fault):

=================  ==========================================================================
``ok``             a normal text stream: ``chunks``, ``interval`` (ms), ``ts=1`` puts the
                   sender's ``time.monotonic_ns()`` in each delta (benchmarks)
``tool``           a complete tool call (``finish_reason: tool_calls``)
``json``           a non-streaming ``chat.completion`` body (whatever ``stream`` says)
``drop``           the ``ok`` stream cut at a seeded random byte (``seed``), then the
                   connection dropped (the app returns without finishing the response);
                   ``past=N`` cuts N bytes past the finish chunk instead (usage, ``[DONE]``)
``stall``          ``after`` chunks, then silence until the client leaves; ``after=-1``
                   stalls before the response starts
``garbage``        ``after`` chunks, then ``kind=json`` (invalid JSON), ``binary`` (invalid
                   UTF-8 and control bytes) or ``nosse`` (lines that are not SSE fields)
``hugeline``       ``after`` chunks, then one ``data:`` line of ``size`` bytes (default
                   100 MB), generated lazily in 64 KiB pieces; ``ctype=json``: one JSON
                   completion body of that size instead
``status``         an HTTP error before any byte: ``code`` (500, 429, ...), ``ctype=json`` or
                   ``text``; with ``echo=1`` the message quotes the ``Authorization`` header
                   it received
``raise``          an exception in the app, ``when=before`` the response starts or ``after``
                   ``after`` chunks
``early_done``     ``after`` chunks, then ``data: [DONE]`` with no ``finish_reason``
``trunc_tool``     a tool call cut inside its arguments; ``end=eof`` (body ends), ``done``
                   (``[DONE]`` without finish_reason) or ``length`` (``finish_reason: length``)
``bigargs``        a tool call whose arguments total ``size`` bytes
``inband_error``   ``after`` chunks, then ``data: {"error": ...}`` (``echo=1`` as for ``status``)
=================  ==========================================================================

Outcomes recorded per request: ``completed`` (the app sent its whole response), ``aborted``
(the fault ended it: a drop or an exception), ``disconnected`` (``http.disconnect`` arrived
before the response was complete) or ``cancelled`` (the app's task was cancelled).
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FaultRaised",
    "FaultyUpstream",
    "RequestRecord",
    "chat_chunk",
    "drop_plan",
    "fault_model",
    "sse",
]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PIECE = 64 * 1024
HUGE_DEFAULT = 100 * 1000 * 1000


class FaultRaised(RuntimeError):
    """The exception the ``raise`` fault throws inside the app."""


def fault_model(fault: str, **params: object) -> str:
    """The ``model`` string that selects ``fault`` with ``params``."""
    return ";".join([fault, *(f"{k}={v}" for k, v in params.items())])


def parse_model(model: str) -> tuple[str, dict[str, str]]:
    name, *pairs = model.split(";")
    params = dict(p.split("=", 1) for p in pairs if "=" in p)
    return name, params


def sse(data: object) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


def chat_chunk(
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    *,
    usage: dict[str, Any] | None = None,
    choices: bool = True,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-faulty",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "faulty",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}]
        if choices
        else [],
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}


@dataclass
class RequestRecord:
    tag: str
    fault: str
    outcome: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks_sent: int = 0
    body_bytes: int = 0

    def finish(self, outcome: str) -> None:
        if self.outcome is None:
            self.outcome = outcome

    def as_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "fault": self.fault,
            "outcome": self.outcome,
            "headers": self.headers,
            "chunks_sent": self.chunks_sent,
            "body_bytes": self.body_bytes,
        }


class _Producer:
    """Sends one request's response; ``self.sent`` counts body chunks for the record."""

    def __init__(self, send: Send, record: RequestRecord) -> None:
        self._send = send
        self.record = record
        self.started = False
        self.complete = False
        #: ``http.disconnect`` arrived: every later send went nowhere.
        self.gone = False

    async def start(
        self, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers
                or [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )

    async def body(self, data: bytes, *, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})
        self.record.chunks_sent += 1
        if not more and not self.gone:
            self.complete = True
        # uvicorn (and the middleware, once its response is complete) swallow sends without
        # yielding; yield so the disconnect watcher runs and cancels us like a real server.
        await asyncio.sleep(0)

    async def end(self) -> None:
        await self.body(b"", more=False)


class FaultyUpstream:
    """The misbehaving Chat Completions ASGI app. One instance keeps every request's record."""

    def __init__(self) -> None:
        self.records: dict[str, RequestRecord] = {}
        self._counter = itertools.count()
        self._waiters: dict[str, asyncio.Event] = {}

    def _event(self, tag: str) -> asyncio.Event:
        return self._waiters.setdefault(tag, asyncio.Event())

    def stats(self) -> dict[str, int]:
        counts = {"requests": len(self.records), "active": 0}
        for rec in self.records.values():
            key = rec.outcome or "active"
            counts[key] = counts.get(key, 0) + 1
        return counts

    async def wait(self, tag: str, timeout: float = 10.0) -> RequestRecord | None:
        """The record of ``tag`` once that request ended (``None`` if it never ended in time)."""
        try:
            await asyncio.wait_for(self._event(tag).wait(), timeout)
        except asyncio.TimeoutError:
            return self.records.get(tag)
        return self.records[tag]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if scope["method"] == "GET" and path == "/_stats":
            await _json(send, 200, self.stats())
        elif scope["method"] == "GET" and path.startswith("/_wait/"):
            rec = await self.wait(path.removeprefix("/_wait/"))
            await _json(send, 200 if rec else 404, rec.as_dict() if rec else {"tag": None})
        elif scope["method"] == "POST" and path.endswith("/chat/completions"):
            await self._chat(scope, receive, send)
        else:
            await _json(send, 404, {"error": {"message": f"no route {path}", "type": "x"}})

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            raw += msg.get("body", b"")
            if not msg.get("more_body", False):
                break
        body = json.loads(raw)
        fault, params = parse_model(str(body.get("model", "ok")))
        tag = params.get("tag") or f"auto-{next(self._counter)}"
        record = RequestRecord(tag=tag, fault=fault)
        record.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        record.body_bytes = len(raw)
        self.records[tag] = record
        producer = _Producer(send, record)
        script = _SCRIPTS.get(fault)
        try:
            if script is None:
                await _json(send, 400, {"error": {"message": f"unknown fault {fault!r}"}})
                record.finish("completed")
                return
            await self._run(script, producer, params, body, receive)
        finally:
            record.finish("aborted")
            self._event(tag).set()

    async def _run(
        self,
        script: Callable[[_Producer, dict[str, str], dict[str, Any]], Awaitable[None]],
        producer: _Producer,
        params: dict[str, str],
        body: dict[str, Any],
        receive: Receive,
    ) -> None:
        record = producer.record
        work = asyncio.ensure_future(script(producer, params, body))
        watcher = asyncio.ensure_future(_until_disconnect(receive, producer))
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            record.finish("cancelled")
            work.cancel()
            watcher.cancel()
            raise
        if work.done():
            watcher.cancel()
            exc = work.exception()
            if exc is not None:
                record.finish("aborted")
                raise exc
            if producer.complete:
                record.finish("completed")
            else:
                record.finish("disconnected" if producer.gone else "aborted")
            return
        # The client left before the response was complete: stop producing.
        record.finish("disconnected")
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)


async def _until_disconnect(receive: Receive, producer: _Producer) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    producer.gone = True


async def _json(
    send: Send, status: int, payload: object, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": data})


# --- scripts ---------------------------------------------------------------------------------


def _int(params: dict[str, str], key: str, default: int) -> int:
    return int(params.get(key, default))


def text_stream(chunks: int) -> Iterator[bytes]:
    yield sse(chat_chunk({"role": "assistant", "content": ""}))
    for i in range(chunks):
        yield sse(chat_chunk({"content": f"w{i} "}))
    yield sse(chat_chunk({}, "stop"))
    yield sse(chat_chunk(usage=USAGE, choices=False))
    yield sse("[DONE]")


async def _ok(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    chunks = _int(params, "chunks", 5)
    interval = _int(params, "interval", 0) / 1000.0
    stamp = params.get("ts") == "1"
    await p.start()
    await p.body(sse(chat_chunk({"role": "assistant", "content": ""})))
    for i in range(chunks):
        if interval:
            await asyncio.sleep(interval)
        content = f"{time.monotonic_ns()} " if stamp else f"w{i} "
        await p.body(sse(chat_chunk({"content": content})))
    await p.body(sse(chat_chunk({}, "stop")) + sse(chat_chunk(usage=USAGE, choices=False)))
    await p.body(sse("[DONE]"), more=False)


def tool_stream(arguments: str, pieces: int = 3) -> Iterator[bytes]:
    yield sse(chat_chunk({"role": "assistant", "content": None}))
    yield sse(
        chat_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_faulty",
                        "type": "function",
                        "function": {"name": "run", "arguments": ""},
                    }
                ]
            }
        )
    )
    step = max(1, -(-len(arguments) // pieces))
    for i in range(0, len(arguments), step):
        yield sse(
            chat_chunk(
                {"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + step]}}]}
            )
        )


async def _tool(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    await p.start()
    for data in tool_stream('{"cmd": "echo hi"}'):
        await p.body(data)
    await p.body(sse(chat_chunk({}, "tool_calls")) + sse(chat_chunk(usage=USAGE, choices=False)))
    await p.body(sse("[DONE]"), more=False)


async def _json_completion(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    payload = {
        "id": "chatcmpl-faulty",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "faulty",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "a complete non-streamed answer"},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
    data = json.dumps(payload).encode()
    await p.start(
        200,
        [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            # Hop-by-hop headers a proxy must not forward; a marker that it may.
            (b"keep-alive", b"timeout=5, max=1000"),
            (b"proxy-authenticate", b"Basic realm=upstream"),
            (b"x-upstream-marker", b"faulty"),
        ],
    )
    await p.body(data, more=False)


def drop_plan(
    seed: int, chunks: int = 20, *, past: int | None = None
) -> tuple[list[bytes], int, int]:
    """The ``drop`` fault's stream pieces, its cut offset, and where the finish chunk ends.

    With ``past`` the cut lies that many bytes past the finish chunk (in the usage chunk,
    between it and ``[DONE]``, or in ``[DONE]``) instead of at a seeded random byte."""
    pieces = list(text_stream(chunks))
    total = sum(map(len, pieces))
    finish_end = sum(map(len, pieces[: chunks + 2]))
    cut = random.Random(seed).randrange(1, total) if past is None else finish_end + past
    return pieces, cut, finish_end


def after_finish_cuts(chunks: int = 20) -> dict[str, int]:
    """Values of the ``drop`` fault's ``past``: named places after the finish chunk."""
    usage = len(list(text_stream(chunks))[chunks + 2])
    return {"in-usage": usage // 2, "before-done": usage, "in-done": usage + 7}


async def _drop(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    past = params.get("past")
    pieces, cut, _ = drop_plan(
        _int(params, "seed", 0),
        _int(params, "chunks", 20),
        past=None if past is None else int(past),
    )
    await p.start()
    sent = 0
    for piece in pieces:
        take = piece[: cut - sent]
        if take:
            await p.body(take)
        sent += len(take)
        if sent >= cut:
            break
    # Returning without ``more_body: False``: uvicorn closes the connection mid-body.


async def _stall(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    after = _int(params, "after", 2)
    if after >= 0:
        await p.start()
        await p.body(sse(chat_chunk({"role": "assistant", "content": ""})))
        for i in range(after):
            await p.body(sse(chat_chunk({"content": f"w{i} "})))
    await asyncio.Event().wait()


async def _prefix(p: _Producer, params: dict[str, str]) -> None:
    await p.start()
    await p.body(sse(chat_chunk({"role": "assistant", "content": ""})))
    for i in range(_int(params, "after", 2)):
        await p.body(sse(chat_chunk({"content": f"w{i} "})))


GARBAGE = {
    "json": b'data: {"choices": [{"index": 0, "delta": {"content": "x"\n\n',
    "binary": b"data: \xff\xfe\x00\x01\x80 {\x1b[31m \xc3\x28\n\n",
    "nosse": b"<html>502 Bad Gateway</html>\nthis is not an event stream\n\n",
}


async def _garbage(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    await _prefix(p, params)
    await p.body(GARBAGE[params.get("kind", "json")])
    await p.end()


async def _hugeline(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    size = _int(params, "size", HUGE_DEFAULT)
    if params.get("ctype") == "json":
        # A non-streamed completion that never ends: one 100 MB JSON document.
        await p.start(200, [(b"content-type", b"application/json")])
        head = b'{"object":"chat.completion","choices":[{"index":0,"message":{"content":"'
    else:
        await _prefix(p, params)
        head = b'data: {"choices":[{"index":0,"delta":{"content":"'
    await p.body(head)
    filler = b"a" * PIECE
    remaining = size - len(head)
    while remaining > 0:
        await p.body(filler[:remaining])
        remaining -= PIECE
    await p.body(b'"},"finish_reason":null}]}\n\n')
    await p.end()


def _echo(p: _Producer, params: dict[str, str]) -> str:
    # A careless upstream that quotes the credentials it received in its error message.
    if params.get("echo") != "1":
        return ""
    return f" (it saw Authorization: {p.record.headers.get('authorization', '<none>')})"


async def _status(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    code = _int(params, "code", 500)
    message = "upstream refused the request" + _echo(p, params)
    if code == 429:
        message = "Rate limit reached; try again in 2s" + _echo(p, params)
    if params.get("ctype", "json") == "text":
        data = message.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
    else:
        error = {"message": message, "type": "upstream_error", "param": None, "code": None}
        data = json.dumps({"error": error}).encode()
        headers = [(b"content-type", b"application/json")]
    headers.append((b"content-length", str(len(data)).encode()))
    await p.start(code, headers)
    await p.body(data, more=False)


async def _raise(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    if params.get("when", "after") == "after":
        await _prefix(p, params)
    raise FaultRaised("the faulty upstream raised on command")


async def _early_done(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    await _prefix(p, params)
    await p.body(sse("[DONE]"), more=False)


TRUNCATED_ARGUMENTS = '{"cmd": "rm -rf /tmp/sandb'


async def _trunc_tool(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    await p.start()
    for data in tool_stream(TRUNCATED_ARGUMENTS):
        await p.body(data)
    end = params.get("end", "eof")
    if end == "done":
        await p.body(sse("[DONE]"), more=False)
    elif end == "length":
        await p.body(sse(chat_chunk({}, "length")) + sse("[DONE]"), more=False)
    else:
        await p.end()


async def _bigargs(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    size = _int(params, "size", 1024 * 1024)
    await p.start()
    for data in itertools.islice(tool_stream('{"data": "'), 2):
        await p.body(data)
    piece = sse(chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "b" * 16384}}]}))
    for _ in range(size // 16384 + 1):
        await p.body(piece)
    tail = sse(chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"}'}}]}))
    await p.body(tail + sse(chat_chunk({}, "tool_calls")) + sse("[DONE]"), more=False)


async def _inband_error(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    await _prefix(p, params)
    error = {"message": "model crashed" + _echo(p, params), "type": "server_error"}
    await p.body(sse({"error": error}))
    await p.end()


async def _longtext(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    # A well-formed stream too long to hold: 16 KB of text per event.
    size = _int(params, "size", 1024 * 1024)
    await _prefix(p, params)
    piece = sse(chat_chunk({"content": "t" * 16384}))
    for _ in range(size // len(piece) + 1):
        await p.body(piece)
    await p.body(sse(chat_chunk({}, "stop")) + sse("[DONE]"), more=False)


async def _encoded(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    # Compressed although the gateway asks for identity; inflates to 64 MB of zeros.
    data = gzip.compress(b"\0" * (64 * 1024 * 1024))
    await p.start(
        200,
        [
            (b"content-type", b"application/json"),
            (b"content-encoding", b"gzip"),
            (b"content-length", str(len(data)).encode()),
        ],
    )
    await p.body(data, more=False)


async def _headers(p: _Producer, params: dict[str, str], body: dict[str, Any]) -> None:
    # An ordinary stream behind a response head with ``count`` extra fields.
    extra = [(b"x-extra-%d" % n, b"1") for n in range(_int(params, "count", 10))]
    await p.start(200, [(b"content-type", b"text/event-stream"), *extra])
    await p.body(sse(chat_chunk({"role": "assistant", "content": "fine"})))
    await p.body(sse(chat_chunk({}, "stop")) + sse("[DONE]"), more=False)


_SCRIPTS: dict[str, Callable[[_Producer, dict[str, str], dict[str, Any]], Awaitable[None]]] = {
    "ok": _ok,
    "tool": _tool,
    "json": _json_completion,
    "drop": _drop,
    "stall": _stall,
    "garbage": _garbage,
    "hugeline": _hugeline,
    "status": _status,
    "raise": _raise,
    "early_done": _early_done,
    "trunc_tool": _trunc_tool,
    "bigargs": _bigargs,
    "inband_error": _inband_error,
    "longtext": _longtext,
    "encoded": _encoded,
    "headers": _headers,
}
