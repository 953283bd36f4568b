"""Benchmark: one 2,000-chunk stream through uvicorn, with and without ``ResponsesMiddleware``.

Run: ``python tests/benchmarks/bench_middleware.py [--scenario PACE_MS[:CHUNKS] ...] [--runs N]``
(not collected by pytest). The default scenarios are ``0`` (unpaced, 2,000 chunks), ``1``
(1 ms per chunk, 2,000 chunks) and ``20:200`` (20 ms per chunk, 200 chunks: a 2,000-chunk
stream at that pace takes 40 s).

For each scenario two uvicorn servers run as subprocesses of this script, configured alike
(uvicorn's defaults, uvloop and httptools when installed, no access log), both around the same
raw ASGI upstream that streams the scenario's Chat Completions content chunks, one ASGI body
message each, sleeping the pace between chunks, then finish, usage and ``[DONE]``:

- **direct**: the upstream alone; the client POSTs ``/v1/chat/completions``;
- **middleware**: ``ResponsesMiddleware(upstream)`` with default ``Settings`` (keep-alive on,
  memory store on); the client POSTs ``/v1/responses`` and gets the Responses stream.

Runs alternate (direct, middleware, middleware, direct, ...) and each direct run is paired with
the middleware run next to it, so that drift on a noisy machine hits both alike. A raw-socket
client (no HTTP library) times each run:

- **wall**: request written → last byte read (the server closes the connection at the end of
  the body). The ratio printed is the honest per-stream wall-time ratio, middleware / direct,
  over the pairs (median, p90, min, max), and the ratio of the medians.
- **TTFB**: request written → first body byte read (``response.created`` for the middleware,
  the first upstream chunk for direct), and the same inside the server (request in → first
  body message handed to uvicorn), which the client's scheduling noise does not blur. Added
  TTFB is the per-pair difference (median and p90).
- **server CPU**: the server process's CPU time (``time.process_time()``) before and after
  the run, read from a ``GET /cpu`` route the upstream serves (passed through by the
  middleware): the client's CPU is not in it. The "system" column is the kernel's share of
  it (``getrusage``, which samples user/system at each clock tick, so it is summed over all
  runs): mostly socket writes, which on one machine include waking the local client. The added
  CPU per chunk is the difference of the medians divided by the chunks, so the per-request
  work (reading and translating the request, the first byte, storing the response) is spread
  over them. Paced, the process sleeps between chunks and each chunk runs with cold caches,
  which multiplies every chunk's cost, more so for the server that runs more code per chunk.
- **client CPU**: this process's CPU time per stream, to show whether the client itself was
  busy enough to matter (it competes with the server for the cores).

Unpaced, the upstream sends as fast as it can, so wall time is pure CPU (both servers' and the
client's) and the ratio is the worst case; paced, chunks come as a model produces them (1 ms:
~1,000 tokens/s, a fast model; 20 ms: ~50 tokens/s, a typical one) and the ratio is what a
client sees. Targets: <= 1.10x wall time, <= 0.3 ms added TTFB. The load average is printed
before and after: other work on the machine inflates every figure, the middleware's most.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

KINDS = ("direct", "middleware")
DEFAULT_SCENARIOS = ("0", "1", "20:200")


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

    timings = {"ttfb": 0.0, "wall": 0.0}

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
            usage = resource.getrusage(resource.RUSAGE_SELF)
            body = orjson.dumps({"cpu": time.process_time(), "user": usage.ru_utime,
                                 "system": usage.ru_stime, **timings})  # fmt: skip
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
    """The outermost layer of both servers: server-side time to the first body byte and to
    the last."""

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/cpu":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        first = True

        async def timed_send(message: Any) -> None:
            nonlocal first
            if message["type"] == "http.response.body":
                if first and message.get("body"):
                    first = False
                    timings["ttfb"] = time.perf_counter() - started
                if not message.get("more_body", False):
                    timings["wall"] = time.perf_counter() - started
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
RAWS = {
    "direct": http_post("/v1/chat/completions", {"model": "bench", "stream": True,
                        "messages": [{"role": "user", "content": "hi"}]}),
    "middleware": http_post("/v1/responses", {"model": "bench", "input": "hi", "stream": True}),
}  # fmt: skip
TERMINAL = {"direct": b"data: [DONE]", "middleware": b"response.completed"}


async def server_stats(port: int) -> dict[str, float]:
    """``{"cpu", "user", "system": process CPU seconds, "ttfb": the last request's server
    TTFB}``."""
    _, _, body = await request(port, CPU_REQUEST)
    # The body is chunked: "<size>\r\n<json>\r\n0\r\n\r\n".
    return orjson.loads(body.split(b"\r\n")[1])  # type: ignore[no-any-return]


async def measure(
    ports: dict[str, int], runs: int, warmup: int
) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    for i in range(warmup + runs):
        order = KINDS if i % 2 == 0 else KINDS[::-1]
        for kind in order:
            port = ports[kind]
            before = await server_stats(port)
            client_cpu = time.process_time()
            wall, ttfb, body = await request(port, RAWS[kind])
            client_cpu = time.process_time() - client_cpu
            after = await server_stats(port)
            assert TERMINAL[kind] in body, body[-300:]
            if i >= warmup:
                results[kind].append(
                    {
                        "wall": wall,
                        "ttfb": ttfb,
                        "server_ttfb": after["ttfb"],
                        "server_wall": after["wall"],
                        "cpu": after["cpu"] - before["cpu"],
                        "user": after["user"] - before["user"],
                        "system": after["system"] - before["system"],
                        "client_cpu": client_cpu,
                    }
                )
    return results


def p90(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def run_scenario(pace_ms: float, chunks: int, runs: int, warmup: int) -> None:
    processes: dict[str, subprocess.Popen[str]] = {}
    ports: dict[str, int] = {}
    try:
        for kind in KINDS:
            process = subprocess.Popen(
                [sys.executable, __file__, "--serve", kind, "--chunks", str(chunks),
                 "--pace-ms", str(pace_ms)],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
            processes[kind] = process
            assert process.stdout is not None
            ports[kind] = int(process.stdout.readline())
        results = asyncio.run(measure(ports, runs, warmup))
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(10)
    report(results, pace_ms, chunks, runs, warmup)


def report(
    results: dict[str, list[dict[str, float]]], pace_ms: float, chunks: int, runs: int, warmup: int
) -> None:
    def column(kind: str, key: str) -> list[float]:
        return [r[key] for r in results[kind]]

    def med(kind: str, key: str) -> float:
        return statistics.median(column(kind, key))

    def ms(kind: str, key: str, digits: int) -> str:
        return f"{med(kind, key) * 1e3:.{digits}f} / {p90(column(kind, key)) * 1e3:.{digits}f}"

    def system_share(kind: str) -> float:
        user, system = sum(column(kind, "user")), sum(column(kind, "system"))
        return system / (user + system) if user + system else 0.0

    pairs = list(zip(results["direct"], results["middleware"], strict=True))
    pace = f"upstream pace {pace_ms:g} ms/chunk" if pace_ms else "unpaced (worst case)"
    print(f"\n== {pace}: {chunks} chunks per stream, {runs} runs each "
          f"(after {warmup} warm-up), load average {os.getloadavg()[0]:.2f} ==")  # fmt: skip
    print(f"{'ms, median / p90:':>30}{'median:':>65}")
    print(f"{'':12}{'wall':>20}{'server wall':>20}{'TTFB':>16}{'server TTFB':>16}"
          f"{'server CPU ms':>15}{'system':>8}{'client CPU ms':>15}")  # fmt: skip
    for kind in KINDS:
        print(
            f"{kind:12}{ms(kind, 'wall', 2):>20}{ms(kind, 'server_wall', 2):>20}"
            f"{ms(kind, 'ttfb', 3):>16}{ms(kind, 'server_ttfb', 3):>16}"
            f"{med(kind, 'cpu') * 1e3:15.2f}{system_share(kind):8.0%}"
            f"{med(kind, 'client_cpu') * 1e3:15.2f}"
        )
    for key, what in (
        ("wall", "wall-time ratio per stream (at the client)"),
        ("server_wall", "server-side ratio (request in -> last body message to uvicorn)"),
    ):
        ratios = [m[key] / d[key] for d, m in pairs]
        print(
            f"{what}, middleware / direct: median {statistics.median(ratios):.3f}x, "
            f"p90 {p90(ratios):.3f}x, min {min(ratios):.3f}x, max {max(ratios):.3f}x; "
            f"ratio of medians {med('middleware', key) / med('direct', key):.3f}x"
            + ("   (target <= 1.10x)" if key == "wall" else "")
        )
    added = med("middleware", "cpu") - med("direct", "cpu")
    print(
        f"added server CPU: {added / chunks * 1e6:.2f} us per chunk "
        f"({added * 1e3:.2f} ms per stream, first byte and end included)"
    )
    for key, where in (("ttfb", "at the client"), ("server_ttfb", "inside the server")):
        diffs = [m[key] - d[key] for d, m in pairs]
        print(
            f"added time to first byte {where}: median {statistics.median(diffs) * 1e3:.3f} ms, "
            f"p90 {p90(diffs) * 1e3:.3f} ms   (target <= 0.3 ms)"
        )


def parse_scenario(text: str) -> tuple[float, int | None]:
    pace, _, chunks = text.partition(":")
    return float(pace), int(chunks) if chunks else None


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--scenario",
        action="append",
        type=parse_scenario,
        help="PACE_MS[:CHUNKS], repeatable (default: 0, 1 and 20:200)",
    )
    parser.add_argument(
        "--runs", type=int, help="runs per server and scenario (default: 30 unpaced, 10 paced)"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=2000, help="when a scenario gives none")
    parser.add_argument("--pace-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.chunks, args.pace_ms / 1000)
        return
    scenarios = args.scenario or [parse_scenario(text) for text in DEFAULT_SCENARIOS]
    print(f"load average before: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    for pace_ms, chunks in scenarios:
        runs = args.runs or (10 if pace_ms else 30)
        run_scenario(pace_ms, chunks or args.chunks, runs, args.warmup)
    print(f"\nload average after: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
