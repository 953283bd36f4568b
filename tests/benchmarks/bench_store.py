"""The response store's added latency per response, for every backend, side by side.

Run: ``.venv/bin/python tests/benchmarks/bench_store.py [--n 2000] [--turns 10]``

Per response the middleware pays one ``save`` (put) and, on the next turn, one
``previous_response_id`` load (get); both go through ``StoreGateway`` exactly as in production
(tenant hashing, normalisation, timeouts). With ``conversation`` instead, it pays one read of
the conversation's items (conv read) and one append of the turn (conv add, the new input and
the output). Reported: each one's latency (median and p99, microseconds) for ``memory://``, ``sqlite:///`` on a temporary file and ``redis://`` on a
local ``redis-server`` started for the run (skipped with a note if the binary is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stream_mw import Settings  # noqa: E402
from stream_mw._store import StoredResponse  # noqa: E402
from stream_mw._store_gateway import StoreGateway, normalize_input, tenant_key  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.store.helpers import make_response  # noqa: E402


def conversation(turns: int) -> list[dict[str, Any]]:
    """A Codex-like history: user asks, model calls a tool, tool answers, model replies."""
    items: list[dict[str, Any]] = []
    for t in range(turns):
        items += [
            {"role": "user", "content": f"Please look at file {t} and fix the bug. " * 4},
            {
                "type": "function_call",
                "call_id": f"call_{t}",
                "name": "shell",
                "arguments": f'{{"command":["cat","src/module_{t}.py"]}}',
            },
            {"type": "function_call_output", "call_id": f"call_{t}", "output": "x = 1\n" * 60},
            {"role": "assistant", "content": "I changed the loop bound. " * 8},
        ]
    return normalize_input(items)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(url: str, n: int, items: list[dict[str, Any]]) -> dict[str, list[float]]:
    gateway = StoreGateway(Settings(store_url=url))
    scope = {"type": "http", "headers": [(b"authorization", b"Bearer bench-key")]}
    puts: list[float] = []
    gets: list[float] = []
    try:
        for i in range(n + n // 10):
            response = make_response(f"resp_bench{i:08d}", text="Done. " * 40)
            t0 = time.perf_counter()
            await gateway.save(scope, items, response)
            t1 = time.perf_counter()
            body = {"model": "m", "input": "next", "previous_response_id": response["id"]}
            expanded, _ = await gateway.expand(scope, body)
            t2 = time.perf_counter()
            assert len(expanded["input"]) == len(items) + 2
            if i >= n // 10:  # the first tenth warms connections and caches up
                puts.append(t1 - t0)
                gets.append(t2 - t1)
    finally:
        await gateway.aclose()
    return {"put": puts, "get": gets, "put+get": [p + g for p, g in zip(puts, gets, strict=True)]}


async def measure_conversation(
    url: str, n: int, items: list[dict[str, Any]]
) -> dict[str, list[float]]:
    gateway = StoreGateway(Settings(store_url=url))
    scope = {"type": "http", "headers": [(b"authorization", b"Bearer bench-key")]}
    tenant = tenant_key(scope, gateway.settings)
    reads: list[float] = []
    adds: list[float] = []
    try:
        for i in range(n + n // 10):
            conv = {"id": f"conv_bench{i:08d}", "object": "conversation", "created_at": 0,
                    "metadata": {}}  # fmt: skip
            await gateway.store.create_conversation(tenant, conv, items)
            body = {"model": "m", "input": "next", "conversation": conv["id"]}
            t0 = time.perf_counter()
            expanded, full = await gateway.expand(scope, body)
            t1 = time.perf_counter()
            response = make_response(f"resp_bench{i:08d}", text="Done. " * 40, store=False)
            response["conversation"] = {"id": conv["id"]}
            await gateway.save(scope, full, response, body)
            t2 = time.perf_counter()
            assert len(expanded["input"]) == len(items) + 1
            if i >= n // 10:
                reads.append(t1 - t0)
                adds.append(t2 - t1)
    finally:
        await gateway.aclose()
    return {"conv read": reads, "conv add": adds}


async def measure_all(url: str, n: int, items: list[dict[str, Any]]) -> dict[str, list[float]]:
    return {**await measure(url, n, items), **await measure_conversation(url, n, items)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="responses per backend")
    parser.add_argument("--turns", type=int, default=10, help="conversation turns per response")
    args = parser.parse_args()
    items = conversation(args.turns)
    size = len(StoredResponse(make_response("resp_x", text="Done. " * 40), items).encode())
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["memory"] = await measure_all("memory://", args.n, items)
        results["sqlite"] = await measure_all(f"sqlite:///{tmp}/bench.db", args.n, items)
        if shutil.which("redis-server"):
            with RedisServer() as server:
                results["redis"] = await measure_all(server.url, args.n, items)
        else:
            print("redis: skipped (no redis-server on PATH)")
    print(
        f"store latency per response through StoreGateway: n={args.n}, "
        f"{len(items)} input items, ~{size / 1024:.0f} KiB stored per response"
    )
    header = f"{'':10}" + "".join(f"{name:>22}" for name in results)
    print(header)
    print(f"{'(µs)':10}" + "".join(f"{'median':>11}{'p99':>11}" for _ in results))
    for metric in ("put", "get", "put+get", "conv read", "conv add"):
        row = f"{metric:10}"
        for samples in results.values():
            micro = [s * 1e6 for s in samples[metric]]
            row += f"{statistics.median(micro):11.0f}{percentile(micro, 0.99):11.0f}"
        print(row)


if __name__ == "__main__":
    asyncio.run(main())
