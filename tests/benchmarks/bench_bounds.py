"""Bounds benchmark: gateway memory and stalls under hostile clients and upstreams.

Run: ``python tests/benchmarks/bench_bounds.py [--no-write]`` (not collected by pytest;
loopback only; every scenario is bounded and takes seconds).

Each scenario starts a fresh ``stream-mw serve`` (one uvicorn worker, the real command) in
front of a hostile upstream, a separate process (``--upstream-server``) that answers each
Chat Completions request according to its ``model``. It prints the gateway's RSS before,
its peak (``VmHWM``) and its RSS after, read from ``/proc/PID/status``, and what the hostile
party got back:

- **slow headers**: 1,000 connections each sending a request head one line per second
  (``--header-timeout 3``); a real request is made while they are open;
- **200 MB request header**: one client sending one header at full speed;
- **200 MB upstream header**: the upstream answering with one endless header;
- **300 MB non-streamed body**: a non-streamed Responses request, the upstream streaming
  300 MB of text events;
- **1 GB gzip bomb**: the upstream answering with ~1 MB of gzip that inflates to 1 GB;
- **TLS vs plain stall**: 20 streams (one event every 10 ms) run through the gateway while
  100 requests open 100 new upstream connections at once, over ``https`` on one gateway and
  ``http`` on another, side by side; the stall is the longest gap the 20 streams saw during
  the burst, minus the longest before it. This one runs ``tests/faults/serve.py gateway``
  (the same middleware and ProxyApp under uvicorn), whose pool can be made large enough.

Results are printed and written to ``tests/benchmarks/RESULTS.md`` (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import certifi
import httpx

from tests.benchmarks.bench_load import write_results
from tests.faults.harness import ServerProcess, fd_count, proc_status_kib
from tests.gateway.helpers import running
from tests.tls import server_context

MiB = 1024 * 1024


# --- the hostile upstream (its own process) -------------------------------------------------


def sse(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class HostileUpstream:
    def __init__(self) -> None:
        # ~1 MB of gzip inflating to 1 GB of zeros, built once.
        compressor = gzip.GzipFile(fileobj=(buffer := _Buffer()), mode="wb", compresslevel=9)
        zeros = b"\0" * MiB
        for _ in range(1024):
            compressor.write(zeros)
        compressor.close()
        self.bomb = buffer.data()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = json.loads(await reader.readexactly(length)) if length else {}
                await self.answer(str(body.get("model", "")), writer)
        writer.close()

    async def answer(self, model: str, writer: asyncio.StreamWriter) -> None:
        if model == "header200m":
            writer.write(b"HTTP/1.1 200 OK\r\nx-huge: ")
            piece = b"a" * MiB
            for _ in range(200):
                writer.write(piece)
                await writer.drain()
            writer.write(b"\r\ncontent-length: 0\r\n\r\n")
        elif model == "body300m":
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            event = chunked(sse("x" * (64 * 1024 - 200)))
            for _ in range(300 * 16):
                writer.write(event)
                await writer.drain()
            writer.write(chunked(sse(finish="stop")) + b"0\r\n\r\n")
        elif model == "gzip1g":
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(self.bomb)
            )
            writer.write(self.bomb)
        elif model.startswith("stream"):
            # stream-N: N events 10 ms apart.
            count = int(model.split("-")[1])
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for _ in range(count):
                writer.write(chunked(sse("tick ")))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(chunked(sse(finish="stop") + b"data: [DONE]\n\n") + b"0\r\n\r\n")
        else:
            # One short answer, held 300 ms so that concurrent requests each need a connection.
            await asyncio.sleep(0.3)
            body = sse("ok") + sse(finish="stop") + b"data: [DONE]\n\n"
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"content-length: %d\r\n\r\n%b" % (len(body), body)
            )
        await writer.drain()


class _Buffer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def data(self) -> bytes:
        return b"".join(self.parts)


async def run_upstream(directory: Path) -> None:
    upstream = HostileUpstream()
    tls, _ = server_context(directory)
    plain = await asyncio.start_server(upstream.serve, "127.0.0.1", 0, backlog=1024)
    secure = await asyncio.start_server(upstream.serve, "127.0.0.1", 0, ssl=tls, backlog=1024)
    ports = (plain.sockets[0].getsockname()[1], secure.sockets[0].getsockname()[1])
    print(f"PORTS {ports[0]} {ports[1]}", flush=True)
    await asyncio.Event().wait()


@contextlib.contextmanager
def hostile_upstream(directory: Path) -> Iterator[tuple[str, str]]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--upstream-server", str(directory)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        _, plain, secure = line.split()
        yield f"http://127.0.0.1:{plain}/v1", f"https://127.0.0.1:{secure}/v1"
    finally:
        process.terminate()
        process.wait(10)


# --- measuring the gateway ------------------------------------------------------------------


class Memory:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = proc_status_kib(pid) / 1024

    def row(self, scenario: str, outcome: str) -> dict[str, Any]:
        return {
            "scenario": scenario,
            "before": self.before,
            "peak": proc_status_kib(self.pid, "VmHWM") / 1024,
            "after": proc_status_kib(self.pid) / 1024,
            "outcome": outcome,
        }


def responses(model: str, *, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "input": "hi", "stream": stream}


async def error_of(response: httpx.Response) -> str:
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:80]
    return f"{response.status_code}: {message.split(' ', 2)[-1][:150]}"


async def slow_headers(port: int, url: str, pid: int, connections: int = 1000) -> str:
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(connections):
        opened.append(await asyncio.open_connection("127.0.0.1", port))
    for _, writer in opened:
        writer.write(b"POST /v1/responses HTTP/1.1\r\nhost: gateway\r\n")
    await asyncio.sleep(0.5)
    fds_open = fd_count(pid)

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        with contextlib.suppress(ConnectionError):
            for n in range(10):
                writer.write(b"x-slow-%d: 1\r\n" % n)
                await writer.drain()
                try:
                    return await asyncio.wait_for(reader.read(64), 1.0)
                except TimeoutError:
                    continue
        return b"(still open)"

    async with httpx.AsyncClient(timeout=30) as client:
        real = asyncio.ensure_future(client.post(f"{url}/v1/responses", json=responses("quick")))
        answers = await asyncio.gather(*(dribble(r, w) for r, w in opened))
        status = (await real).status_code
    fds_after = fd_count(pid)
    for _, writer in opened:
        writer.close()
    timed_out = sum(1 for a in answers if a.startswith(b"HTTP/1.1 408"))
    closed = sum(1 for a in answers if a == b"")
    return (
        f"{timed_out} got a 408 and {closed} were closed within 10 s "
        f"(header timeout 3 s); a real request meanwhile: {status}; gateway file "
        f"descriptors {fds_open} while they were open, {fds_after} after"
    )


async def huge_request_header(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/responses HTTP/1.1\r\nhost: gateway\r\nx-huge: ")
    sent = 0
    piece = b"a" * MiB
    try:
        while sent < 200 * MiB:
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
    except ConnectionError:
        pass
    try:
        answer = await asyncio.wait_for(reader.read(200), 5)
    except (ConnectionError, TimeoutError):
        answer = b""
    writer.close()
    first = answer.split(b"\r\n", 1)[0].decode() or "the connection reset"
    return f"{first} after {sent // MiB} MB sent"


async def upstream_scenario(url: str, model: str, *, stream: bool = False) -> str:
    async with httpx.AsyncClient(timeout=120) as client:
        response = await client.post(f"{url}/v1/responses", json=responses(model, stream=stream))
    if not stream or response.status_code != 200:
        return await error_of(response)
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
    ]
    last = events[-1]["response"]
    return f"200, then {events[-1]['type']}: {str(last.get('error', {}).get('message'))[:90]}"


# --- the TLS stall ----------------------------------------------------------------------------


async def background_stream(client: httpx.AsyncClient, url: str, arrivals: list[float]) -> None:
    body = responses("stream-300", stream=True)
    async with client.stream("POST", f"{url}/v1/responses", json=body) as response:
        async for _ in response.aiter_raw():
            arrivals.append(time.monotonic())


def longest_gap(arrivals: list[list[float]], start: float, end: float) -> float:
    gaps = [
        later - earlier
        for times in arrivals
        for earlier, later in itertools.pairwise(times)
        if start <= later <= end
    ]
    return max(gaps, default=0.0)


async def stall(url: str) -> tuple[float, float]:
    """(longest gap before the burst, longest gap during it), in ms."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        # Warm-up: the gateway's first https connection builds its TLS context.
        await client.post(f"{url}/v1/responses", json=responses("quick"))
        arrivals: list[list[float]] = [[] for _ in range(20)]
        streams = [
            asyncio.ensure_future(background_stream(client, url, times)) for times in arrivals
        ]
        await asyncio.sleep(1.0)
        calm_end = time.monotonic()
        burst = [
            client.post(f"{url}/v1/responses", json=responses(f"quick-{n}")) for n in range(100)
        ]
        answers = await asyncio.gather(*burst)
        burst_end = time.monotonic()
        assert all(a.status_code == 200 for a in answers), [a.status_code for a in answers]
        await asyncio.gather(*streams)
    calm = longest_gap(arrivals, calm_end - 0.9, calm_end)
    during = longest_gap(arrivals, calm_end, burst_end + 0.1)
    return calm * 1000, during * 1000


# --- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--upstream-server", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--stall-only", action="store_true", help="only the TLS vs plain stall")
    args = parser.parse_args()
    if args.upstream_server:
        asyncio.run(run_upstream(Path(args.upstream_server)))
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        with hostile_upstream(directory) as (plain, secure):
            # The full public CA bundle plus the test CA: loading it costs what it costs for a
            # real https upstream (~150 certificates), not one certificate's worth.
            bundle = directory / "ca-bundle.pem"
            bundle.write_text(
                Path(certifi.where()).read_text() + (directory / "cert.pem").read_text()
            )
            env = {"SSL_CERT_FILE": str(bundle)}

            def gateway(*options: str, upstream: str = plain) -> Any:
                return running(
                    "serve", "--upstream", upstream, *options, tmp_path=directory, env=env
                )

            scenarios: list[tuple[str, tuple[str, ...], Any]] = [
                (
                    "1,000 connections sending headers slowly",
                    ("--header-timeout", "3"),
                    lambda g: slow_headers(g.port, g.url, g.popen.pid),
                ),
                ("a 200 MB request header", (), lambda g: huge_request_header(g.port)),
                (
                    "a 200 MB upstream header",
                    (),
                    lambda g: upstream_scenario(g.url, "header200m"),
                ),
                (
                    "a 300 MB non-streamed upstream body (event stream)",
                    (),
                    lambda g: upstream_scenario(g.url, "body300m"),
                ),
                (
                    "the same, streamed to the client",
                    (),
                    lambda g: upstream_scenario(g.url, "body300m", stream=True),
                ),
                ("a 1 GB gzip bomb", (), lambda g: upstream_scenario(g.url, "gzip1g")),
            ]
            for name, options, run in [] if args.stall_only else scenarios:
                with gateway(*options) as g:
                    pid = g.popen.pid
                    memory = Memory(pid)
                    outcome = asyncio.run(run(g))
                    rows.append(row := memory.row(name, outcome))
                print(
                    f"{name}: RSS {row['before']:.0f} MiB before, peak {row['peak']:.0f}, "
                    f"after {row['after']:.0f}; {row['outcome']}",
                    flush=True,
                )
            stalls: dict[str, tuple[float, float]] = {}
            for label, upstream in (("https", secure), ("http", plain)):
                # The test gateway (middleware + ProxyApp under uvicorn), for a pool that
                # holds the 20 streams and the 100 new connections at once.
                options = ("--upstream", upstream, "--max-connections", "200")
                with ServerProcess("gateway", *options, "--http", "httptools", env=env) as g:
                    stalls[label] = asyncio.run(stall(g.url))
                calm, during = stalls[label]
                print(
                    f"100 new {label} upstream connections: longest gap of 20 streams "
                    f"{during:.0f} ms during the burst ({calm:.0f} ms before)",
                    flush=True,
                )
    added = {k: max(0.0, during - calm) for k, (calm, during) in stalls.items()}
    ratio = (added["https"] / added["http"]) if added["http"] else float("nan")
    print(f"added stall, https / http: {added['https']:.0f} / {added['http']:.0f} ms = {ratio:.2f}")
    if args.no_write or args.stall_only:
        return
    lines = [
        "Written by `tests/benchmarks/bench_bounds.py`: a fresh `stream-mw serve` (one worker)",
        "per scenario, in front of a hostile upstream process; RSS from `/proc/PID/status`.",
        "",
        "| scenario | RSS before | peak (VmHWM) | RSS after | what the hostile side got |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['scenario']} | {row['before']:.0f} MiB | {row['peak']:.0f} MiB | "
            f"{row['after']:.0f} MiB | {row['outcome']} |"
        )
    lines += [
        "",
        "| 100 new upstream connections while 20 streams run | longest gap before | "
        "longest gap during | added |",
        "| --- | --- | --- | --- |",
    ]
    for label, (calm, during) in stalls.items():
        lines.append(f"| {label} | {calm:.0f} ms | {during:.0f} ms | {added[label]:.0f} ms |")
    lines.append(f"\nAdded stall, https / http: {ratio:.2f}.")
    write_results("Bounds", "\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
