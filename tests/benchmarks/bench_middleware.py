"""Benchmark: one 2,000-chunk stream through uvicorn, with and without ``ResponsesMiddleware``.

Run: ``python tests/benchmarks/bench_middleware.py [--runs N] [--chunks N] [--pace-ms MS]``
(not collected by pytest).

Two uvicorn servers run as subprocesses of this script (same settings: uvicorn's defaults,
uvloop and httptools when installed, no access log), both around the same raw ASGI upstream
that streams ``--chunks`` Chat Completions content chunks, one ASGI body message each, then
finish, usage and ``[DONE]``:

- **direct**: the upstream alone; the client POSTs ``/v1/chat/completions``;
- **middleware**: ``ResponsesMiddleware(upstream)`` with default ``Settings`` (keep-alive on,
  memory store on); the client POSTs ``/v1/responses`` and gets the Responses stream.

Runs alternate (direct, middleware, middleware, direct, ...) so that drift in a noisy machine
hits both alike. A raw-socket client (no HTTP library on the client side) times each run:

- **wall**: request written → last byte read;
- **TTFB**: request written → first body byte read (``response.created`` for the middleware,
  the first upstream chunk for direct), and the same inside the server (request in → first
  body message handed to uvicorn), which the client's scheduling noise does not blur;
- **server CPU**: the server process's ``time.process_time()`` before and after the run, read
  from a ``GET /cpu`` route the upstream serves (passed through by the middleware).

With ``--pace-ms 0`` (default) the upstream sends as fast as it can, so wall time is pure CPU
and the ratio is the worst case; ``--pace-ms 1`` spaces chunks like a fast model (~1,000
tokens/s). Targets: <= 1.10x wall time, <= 0.3 ms added TTFB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402


def build_upstream(chunks: int, pace: float) -> Any:
    """The raw ASGI upstream both servers wrap."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "bench"}  # fmt: skip

    def event(body: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps({**head, **body}) + b"\n\n"

    first = event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                "finish_reason": None}]})  # fmt: skip
    token = event({"choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}]})
    finish = event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = event({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": chunks,
                                            "total_tokens": 10 + chunks}})  # fmt: skip
    frames = [first, *([token] * chunks), finish, usage, b"data: [DONE]\n\n"]
    sse_start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/event-stream")],
    }

    timings = {"ttfb": 0.0}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/cpu":
            body = orjson.dumps({"cpu": time.process_time(), "ttfb": timings["ttfb"]})
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send(sse_start)
        for frame in frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            if pace:
                await asyncio.sleep(pace)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app, timings


def timed(app: Any, timings: dict[str, float]) -> Any:
    """The outermost layer of both servers: server-side time to the first body byte."""

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/cpu":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        first = True

        async def timed_send(message: Any) -> None:
            nonlocal first
            if first and message["type"] == "http.response.body" and message.get("body"):
                first = False
                timings["ttfb"] = time.perf_counter() - started
            await send(message)

        await app(scope, receive, timed_send)

    return outer


def serve(kind: str, chunks: int, pace: float) -> None:
    import uvicorn

    from stream_mw import ResponsesMiddleware

    app, timings = build_upstream(chunks, pace)
    if kind == "middleware":
        app = ResponsesMiddleware(app)
    app = timed(app, timings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


async def request(port: int, raw: bytes) -> tuple[float, float, bytes]:
    """Send one HTTP/1.1 request (Connection: close); ``(wall, ttfb, body)`` in seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    writer.write(raw)
    data = bytearray()
    ttfb = 0.0
    while True:
        block = await reader.read(262_144)
        if not block:
            break
        data += block
        if not ttfb:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0 and len(data) > head_end + 4:
                ttfb = time.perf_counter() - started
    wall = time.perf_counter() - started
    writer.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return wall, ttfb, body


def http_post(path: str, payload: dict[str, Any]) -> bytes:
    body = orjson.dumps(payload)
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer sk-bench\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body


CPU_REQUEST = b"GET /cpu HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"


async def server_stats(port: int) -> dict[str, float]:
    """``{"cpu": process seconds, "ttfb": the last request's server-side TTFB}``."""
    _, _, body = await request(port, CPU_REQUEST)
    # The body is chunked: "<size>\r\n<json>\r\n0\r\n\r\n".
    return orjson.loads(body.split(b"\r\n")[1])  # type: ignore[no-any-return]


async def measure(
    ports: dict[str, int], runs: int, warmup: int
) -> dict[str, list[dict[str, float]]]:
    raws = {
        "direct": http_post("/v1/chat/completions", {"model": "bench", "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}),
        "middleware": http_post("/v1/responses", {"model": "bench", "input": "hi",
                                "stream": True}),
    }  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {"direct": [], "middleware": []}
    for i in range(warmup + runs):
        order = ["direct", "middleware"] if i % 2 == 0 else ["middleware", "direct"]
        for kind in order:
            port = ports[kind]
            before = await server_stats(port)
            wall, ttfb, body = await request(port, raws[kind])
            after = await server_stats(port)
            terminal = b"response.completed" if kind == "middleware" else b"data: [DONE]"
            assert terminal in body, body[-300:]
            if i >= warmup:
                results[kind].append(
                    {
                        "wall": wall,
                        "ttfb": ttfb,
                        "server_ttfb": after["ttfb"],
                        "cpu": after["cpu"] - before["cpu"],
                    }
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--pace-ms", type=float, default=0.0)
    parser.add_argument("--serve", choices=["direct", "middleware"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.chunks, args.pace_ms / 1000)
        return

    processes: dict[str, subprocess.Popen[str]] = {}
    ports: dict[str, int] = {}
    try:
        for kind in ("direct", "middleware"):
            process = subprocess.Popen(
                [sys.executable, __file__, "--serve", kind, "--chunks", str(args.chunks),
                 "--pace-ms", str(args.pace_ms)],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
            processes[kind] = process
            assert process.stdout is not None
            ports[kind] = int(process.stdout.readline())
        results = asyncio.run(measure(ports, args.runs, args.warmup))
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(10)

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    ratios = [
        m["wall"] / d["wall"] for d, m in zip(results["direct"], results["middleware"], strict=True)
    ]
    print(f"{args.chunks} chunks per stream, {args.runs} runs each (after {args.warmup} warm-up),"
          f" upstream pace {args.pace_ms} ms/chunk")  # fmt: skip
    print(f"{'':12}{'wall ms':>10}{'TTFB ms':>10}{'server TTFB ms':>16}{'server CPU ms':>15}")
    for kind in ("direct", "middleware"):
        print(f"{kind:12}{med(kind, 'wall') * 1e3:10.2f}{med(kind, 'ttfb') * 1e3:10.3f}"
              f"{med(kind, 'server_ttfb') * 1e3:16.3f}{med(kind, 'cpu') * 1e3:15.2f}")  # fmt: skip
    wall_ratio = med("middleware", "wall") / med("direct", "wall")
    added_cpu = (med("middleware", "cpu") - med("direct", "cpu")) / args.chunks
    added_ttfb = med("middleware", "ttfb") - med("direct", "ttfb")
    added_server_ttfb = med("middleware", "server_ttfb") - med("direct", "server_ttfb")
    print(f"wall-time ratio (median of medians): {wall_ratio:.3f}x   "
          f"per-stream ratios: median {statistics.median(ratios):.3f}x, "
          f"min {min(ratios):.3f}x, max {max(ratios):.3f}x   (target <= 1.10x)")  # fmt: skip
    print(f"added server CPU per chunk: {added_cpu * 1e6:.2f} us")
    print(f"added time to first byte: {added_ttfb * 1e3:.3f} ms at the client, "
          f"{added_server_ttfb * 1e3:.3f} ms inside the server   (target <= 0.3 ms)")  # fmt: skip


if __name__ == "__main__":
    main()
