"""Soak benchmark: 10,000 streams with random faults through one gateway worker; does it leak?

Run: ``python tests/benchmarks/bench_soak.py [--streams 10000] [--concurrency 100]
[--seed 1]`` (not collected by pytest; loopback only; bounded: the streams are short and the
whole run stops after ``--streams`` streams).

The faulty upstream and the gateway (uvicorn + ResponsesMiddleware + ProxyApp, read timeout
0.5 s) run in their own processes, as in ``bench_load.py``. A load client in another process
sends ``--streams`` streaming Responses requests, ``--concurrency`` at a time, each picking a
fault at random (seeded): normal text and tool-call streams, a connection dropped at a random
byte, garbage, ``[DONE]`` before ``finish_reason``, truncated tool calls, 500/429 answers, an
exception in the upstream app, in-band errors, arguments over ``max_argument_bytes``, a stall
past the read timeout, and clients that hang up after a random number of events. Every body
of a client that stayed is run through ``tests/checker.py``.

Gateway figures are taken after a warm-up of 5,000 streams with the same mix (the allocator
grows for the first few thousand streams, then stays flat: a 30,000-stream run shows it) and
after each quarter of the soak, each time once the gateway has been idle for 6 s (longer than
the proxy pool's 5 s keep-alive expiry) and served one request, so all are measured in the
same resting state: RSS (``/proc``), live asyncio tasks (the quietest of 5 samples over 1 s,
so the tail of the request just served is not counted) and open file descriptors (the
test-only ``GET /_debug/stats`` route of ``tests/faults/serve.py``). Targets: RSS growth <= 5 %, 0 leaked
tasks, 0 leaked descriptors, every stream ends with exactly one terminal event.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_load import default_http, server_args, write_results  # noqa: E402
from tests.faults.faulty_upstream import fault_model  # noqa: E402
from tests.faults.harness import ServerProcess, proc_status_kib  # noqa: E402

MAX_ARGUMENT_BYTES = 64 * 1024

# (weight, fault, params factory)
MIX: list[tuple[int, str, Any]] = [
    (30, "ok", lambda r: {"chunks": r.randrange(1, 12)}),
    (8, "tool", lambda r: {}),
    (8, "drop", lambda r: {"seed": r.randrange(10_000)}),
    (6, "garbage", lambda r: {"kind": r.choice(["json", "binary", "nosse"])}),
    (5, "early_done", lambda r: {}),
    (6, "trunc_tool", lambda r: {"end": r.choice(["eof", "done", "length"])}),
    (
        6,
        "status",
        lambda r: {"code": r.choice([500, 429, 401]), "ctype": r.choice(["json", "text"])},
    ),
    (5, "raise", lambda r: {"when": r.choice(["before", "after"])}),
    (5, "inband_error", lambda r: {}),
    (3, "bigargs", lambda r: {"size": 2 * MAX_ARGUMENT_BYTES}),
    (1, "stall", lambda r: {"after": r.randrange(-1, 3)}),
    (17, "leave", lambda r: {"chunks": 40, "interval": 5, "leave": r.randrange(0, 12)}),
]


def plan(count: int, seed: int) -> list[tuple[str, int | None]]:
    """(model, events after which the client hangs up or None) for ``count`` streams."""
    rng = random.Random(seed)
    weights = [w for w, _, _ in MIX]
    out = []
    for _ in range(count):
        _, fault, params = rng.choices(MIX, weights)[0]
        p = params(rng)
        leave = p.pop("leave", None)
        out.append((fault_model("ok" if fault == "leave" else fault, **p), leave))
    return out


# --- the load client (its own process) -------------------------------------------------------


async def _exchange(port: int, model: str, leave: int | None) -> tuple[int, bytes]:
    body = json.dumps({"model": model, "input": "hi", "stream": True, "store": False}).encode()
    request = (
        "POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            return status, await reader.readexactly(int(headers["content-length"]))
        data = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                return status, bytes(data)
            data += (await reader.readexactly(size + 2))[:-2]
            if leave is not None and data.count(b"\n\n") >= leave:
                return status, b""  # hang up mid-stream
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _client(args: argparse.Namespace) -> dict[str, Any]:
    from tests.checker import check_stream
    from tests.faults.harness import assert_openai_error

    jobs = plan(args.streams, args.seed)
    outcomes: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    next_job = iter(range(len(jobs)))

    async def worker() -> None:
        for i in next_job:
            model, leave = jobs[i]
            try:
                status, body = await asyncio.wait_for(_exchange(args.port, model, leave), 30)
            except Exception as exc:
                outcomes["transport error"] += 1
                problems.append(f"{model}: {type(exc).__name__}: {exc}")
                continue
            if leave is not None:
                outcomes["client left"] += 1
                continue
            try:
                if status == 200:
                    outcomes[check_stream(body).status] += 1
                else:
                    assert_openai_error(body)
                    outcomes[f"HTTP {status}"] += 1
            except (AssertionError, ValueError) as exc:
                outcomes["invalid body"] += 1
                problems.append(f"{model}: {str(exc)[:300]}")

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return {"outcomes": dict(outcomes), "problems": problems, "wall_s": time.monotonic() - started}


def client_main(args: argparse.Namespace) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    Path(args.out).write_text(json.dumps(asyncio.run(_client(args))))


# --- the orchestrator ------------------------------------------------------------------------


def run_client(port: int, streams: int, concurrency: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "soak.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--client", "--port", str(port),
               "--streams", str(streams), "--concurrency", str(concurrency), "--seed", str(seed),
               "--out", str(out)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"soak client failed: {done.stderr[-3000:]}")
        return json.loads(out.read_text())  # type: ignore[no-any-return]


def resting_stats(gateway: ServerProcess) -> dict[str, Any]:
    """Gateway figures after 6 s idle and one request (see the module docstring)."""
    import httpx

    time.sleep(6)
    body = {"model": "ok", "input": "hi", "stream": True, "store": False}
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        client.post("/v1/responses", json=body).raise_for_status()
        # The request just served may still be finishing (its log line, observers); a
        # leaked task is still there a second later, so keep the quietest of 5 samples.
        samples = []
        for _ in range(5):
            time.sleep(0.2)
            samples.append(client.get("/_debug/stats").json())
    for sample in samples:
        if sample["tasks"] > 1:
            print("busy sample:", sample["task_coros"], file=sys.stderr)
    stats: dict[str, Any] = min(samples, key=lambda sample: sample["tasks"])
    stats["rss_kib"] = proc_status_kib(gateway.pid)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--segments", type=int, default=4, help="RSS checkpoints")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--http", default=default_http(), choices=["httptools", "h11"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return

    env = {
        "FAULTS_UPSTREAM_API_KEY": "sk-soak",
        "STREAM_MW_MAX_ARGUMENT_BYTES": str(MAX_ARGUMENT_BYTES),
    }
    with (
        ServerProcess("upstream", *server_args(args.http)) as upstream,
        ServerProcess(
            "gateway",
            "--upstream",
            upstream.url + "/v1",
            "--read-timeout",
            "0.5",
            "--max-connections",
            str(args.concurrency + 50),
            *server_args(args.http),
            env=env,
        ) as gateway,
    ):
        warm = run_client(gateway.port, args.warmup, args.concurrency, args.seed + 1)
        checkpoints = [resting_stats(gateway)]
        soaks = []
        per = args.streams // args.segments
        for segment in range(args.segments):
            soaks.append(run_client(gateway.port, per, args.concurrency, args.seed + 10 + segment))
            checkpoints.append(resting_stats(gateway))

    start, end = checkpoints[0], checkpoints[-1]
    outcomes: collections.Counter[str] = collections.Counter()
    for soak in soaks:
        outcomes.update(soak["outcomes"])
    problems = [p for soak in [warm, *soaks] for p in soak["problems"]]
    wall = sum(soak["wall_s"] for soak in soaks)
    growth = (end["rss_kib"] - start["rss_kib"]) / start["rss_kib"] * 100
    done = [f"{per * i:,}" for i in range(args.segments + 1)]
    out = (
        "| streams done | "
        + " | ".join(done)
        + " | change |\n"
        + "|---" * (len(done) + 2)
        + "|\n"
        + "| gateway RSS (MiB) | "
        + " | ".join(f"{c['rss_kib'] / 1024:.1f}" for c in checkpoints)
        + f" | {growth:+.1f} % |\n"
        + "| asyncio tasks | "
        + " | ".join(str(c["tasks"]) for c in checkpoints)
        + f" | {end['tasks'] - start['tasks']:+d} |\n"
        + "| open file descriptors | "
        + " | ".join(str(c["fds"]) for c in checkpoints)
        + f" | {end['fds'] - start['fds']:+d} |\n"
        + f"\n{args.streams:,} streams after a {args.warmup:,}-stream warm-up, "
        f"{args.concurrency} concurrent, in {wall:.0f} s ({args.streams / wall:,.0f} streams/s); "
        f"uvicorn `--http {args.http} --loop uvloop`, one worker; gateway read timeout 0.5 s. "
        "Each column is measured at rest (6 s idle, then one request).\n"
        "Outcomes: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items()))
        + f". Streams that broke an invariant or the error shape: {len(problems)}.\n"
    )
    print(out)
    for problem in problems[:10]:
        print("  problem:", problem, file=sys.stderr)
    if not args.no_write:
        write_results(f"Soak: {args.streams:,} streams with random faults", out)


if __name__ == "__main__":
    main()
