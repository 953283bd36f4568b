"""Load benchmark: N concurrent streams through ONE uvicorn worker running the gateway.

Run: ``python tests/benchmarks/bench_load.py [--streams 100,500,1000] [--chunks 40]
[--interval-ms 50] [--http httptools|h11]`` (not collected by pytest; loopback only, every
run bounded: N streams of ``chunks`` x ``interval`` each, then it stops).

Three kinds of process, so none steals the others' event loop:

- **upstream**: the faulty upstream's ``ok`` script (``tests/faults/faulty_upstream.py``), one
  Chat Completions content chunk every ``interval`` ms per stream, each carrying the
  sender's ``time.monotonic_ns()`` (CLOCK_MONOTONIC is one clock for every process here);
- **gateway**: uvicorn + ``ResponsesMiddleware`` + ``ProxyApp`` (``tests/faults/serve.py``),
  one worker, started fresh for each N;
- **load client**: this script in ``--client`` mode, raw asyncio streams (HTTP/1.1 and
  chunked decoding by hand, no HTTP library), one connection per stream, all N streams
  started within the first ``interval``.

For each N the same load runs three times, side by side: **direct** against the upstream's
``/v1/chat/completions``; **relay** against a minimal relay's ``/v1/chat/completions``
(``python -m tests.faults.serve relay``: uvicorn + the gateway's own upstream transport,
``ProxyApp``, bytes passed through without conversion; proxy shape only); then **gateway**
against ``/v1/responses``. Per chunk, delivery
latency = client receive time - upstream send time; *added* latency is gateway minus direct
at the same percentile. Inter-event gap = time between consecutive content events of one
stream (the upstream paces them 50 ms apart); *added* gap is again gateway minus direct.
Server CPU per chunk: the upstream process's during the direct run, the relay's during the
relay run, the gateway process's during the gateway run; the gateway's over the relay's is
what translating costs users, as a ratio measured side by side. Cores busy: the CPU time of every process of the run (upstream,
gateway, load client) over its wall time; on a 2-core machine, near 2 means every process
waits for a core and latency measures the queue, not the software. RSS per open stream = (gateway peak RSS during the run - its RSS
after a warm-up) / N. Errors = non-200 answers, transport errors, streams without exactly
``chunks`` deltas or without their terminal event.

Targets: 0 errors, RSS per open stream <= 64 KiB, added p99 inter-event latency <= 5 ms at
500 streams, reported both ways: the added delivery latency (the stricter reading: every
chunk's trip through the gateway) and the added inter-event gap (what a client sees between
two events).
Results are printed and written to ``tests/benchmarks/RESULTS.md`` (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.faults.faulty_upstream import fault_model  # noqa: E402
from tests.faults.harness import ServerProcess, proc_status_kib  # noqa: E402

RESULTS = ROOT / "tests" / "benchmarks" / "RESULTS.md"
GATEWAY_STAMP = re.compile(rb'"type":"response\.output_text\.delta"[^\n]*?"delta":"(\d+) "')
DIRECT_STAMP = re.compile(rb'"content":"(\d+) "')


# --- the load client (its own process) -------------------------------------------------------


async def _read_head(reader: asyncio.StreamReader) -> int:
    status = int((await reader.readline()).split()[1])
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    return status


async def _one_stream(
    port: int, path: str, body: bytes, stamp: re.Pattern[bytes], done: bytes, out: dict[str, Any]
) -> None:
    request = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body
    latencies: list[int] = out["latency_ns"]
    gaps: list[int] = out["gap_ns"]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        out["errors"].append(f"connect: {exc}")
        return
    try:
        writer.write(request)
        status = await _read_head(reader)
        if status != 200:
            out["errors"].append(f"HTTP {status}")
            return
        seen = 0
        last = 0
        tail = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                break
            data = (await reader.readexactly(size + 2))[:-2]
            now = time.monotonic_ns()
            # A delta never spans two chunks here: each is one body message of its own.
            for match in stamp.finditer(data):
                latencies.append(now - int(match.group(1)))
                if last:
                    gaps.append(now - last)
                last = now
                seen += 1
            tail = (tail + data)[-4096:]
        out["chunks"] += seen
        if seen != out["expect_chunks"]:
            out["errors"].append(f"{seen} chunks")
        elif done not in tail:
            out["errors"].append("no terminal event")
        else:
            out["streams_ok"] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        out["errors"].append(f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _client(args: argparse.Namespace) -> dict[str, Any]:
    model = fault_model("ok", chunks=args.chunks, interval=args.interval_ms, ts=1)
    if args.target == "gateway":
        path = "/v1/responses"
        body = json.dumps({"model": model, "input": "hi", "stream": True, "store": False})
        stamp, done = GATEWAY_STAMP, b"response.completed"
    else:
        path = "/v1/chat/completions"
        messages = [{"role": "user", "content": "hi"}]
        body = json.dumps({"model": model, "messages": messages, "stream": True})
        stamp, done = DIRECT_STAMP, b"[DONE]"
    out: dict[str, Any] = {
        "latency_ns": [],
        "gap_ns": [],
        "errors": [],
        "chunks": 0,
        "streams_ok": 0,
        "expect_chunks": args.chunks,
    }
    spread = args.interval_ms / 1000.0
    started = time.monotonic()
    cpu_started = time.process_time()

    async def staggered(i: int) -> None:
        await asyncio.sleep(spread * i / args.streams)
        await _one_stream(args.port, path, body.encode(), stamp, done, out)

    await asyncio.gather(*(staggered(i) for i in range(args.streams)))
    out["wall_s"] = time.monotonic() - started
    out["client_cpu_s"] = time.process_time() - cpu_started
    return out


def client_main(args: argparse.Namespace) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    # A file, not stdout: the arrays are large.
    Path(args.out).write_text(json.dumps(asyncio.run(_client(args))))


# --- the orchestrator ------------------------------------------------------------------------


def run_client(
    port: int, target: str, streams: int, chunks: int, interval_ms: int
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--client",
        "--port",
        str(port),
        "--target",
        target,
        "--streams",
        str(streams),
        "--chunks",
        str(chunks),
        "--interval-ms",
        str(interval_ms),
    ]
    limit = 120 + chunks * interval_ms / 1000.0 * 10
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "client.json"
        cmd += ["--out", str(out)]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=limit, check=False, cwd=ROOT
        )
        if done.returncode != 0:
            raise RuntimeError(f"load client failed: {done.stderr[-3000:]}")
        return json.loads(out.read_text())  # type: ignore[no-any-return]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread; ``peak_kib`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid))

    def __enter__(self) -> PeakRss:
        self.peak_kib = proc_status_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid))


def pct(values: list[int], q: float) -> float:
    """The q-quantile in milliseconds (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def default_http() -> str:
    """httptools when installed (uvicorn's fast parser; ``pip install httptools``), else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def server_args(http: str) -> list[str]:
    return ["--http", http, "--loop", "uvloop", "--backlog", "4096"]


@contextlib.contextmanager
def servers(
    http: str, max_connections: int, shape: str = "proxy"
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """(upstream, gateway). ``shape="inprocess"``: the gateway is ResponsesMiddleware around
    the faulty app in its own process (no proxy hop), to tell the middleware's cost from
    ProxyApp's."""
    with ServerProcess("upstream", *server_args(http)) as upstream:
        if shape == "inprocess":
            gateway = ServerProcess("middleware", *server_args(http))
        else:
            gateway = ServerProcess(
                "gateway",
                "--upstream",
                upstream.url + "/v1",
                "--max-connections",
                str(max_connections),
                *server_args(http),
                env={"FAULTS_UPSTREAM_API_KEY": "sk-bench"},
            )
        with gateway:
            yield upstream, gateway


class RelayProcess(ServerProcess):
    """``tests.faults.serve relay`` (uvicorn + ``ProxyApp``, no middleware) in front of
    ``upstream``."""

    def __init__(self, upstream: str, max_connections: int, http: str) -> None:
        super().__init__("relay", env={"FAULTS_UPSTREAM_API_KEY": "sk-bench"})
        self._cmd = [
            sys.executable,
            "-m",
            "tests.faults.serve",
            "relay",
            "--upstream",
            upstream,
            "--max-connections",
            str(max_connections),
            *server_args(http),
        ]


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    shape = (args.http, max(n, 100) + 50, args.shape)
    best: dict[str, dict[str, Any]] = {}
    errors: dict[str, list[str]] = {"direct": [], "relay": [], "gateway": []}
    # Server CPU per chunk of every round: the least is the one least disturbed by the
    # other load on the machine.
    cpu_us: dict[str, list[float]] = {"direct": [], "relay": [], "gateway": []}
    relay: ServerProcess | None = None
    with contextlib.ExitStack() as stack:
        upstream, gateway = stack.enter_context(servers(*shape))
        if args.shape == "proxy":
            relay = stack.enter_context(RelayProcess(upstream.url + "/v1", shape[1], args.http))
            run_client(relay.port, "direct", min(n, 50), 4, args.interval_ms)
        # Warm-up: imports, the proxy's connection pool and the allocator's arenas exist
        # before the baseline is taken.
        run_client(gateway.port, "gateway", min(n, 50), 4, args.interval_ms)
        base_kib = proc_status_kib(gateway.pid)
        for round_ in range(args.rounds):
            # Alternating rounds, best p99 of each path: other load on the machine comes and
            # goes, and a quiet round is the one that shows what the software costs.
            up0 = cpu_seconds(upstream.pid)
            direct = run_client(upstream.port, "direct", n, args.chunks, args.interval_ms)
            direct["cpu_s"] = cpu_seconds(upstream.pid) - up0
            direct["all_cpu_s"] = direct["cpu_s"] + direct["client_cpu_s"]
            runs = [("direct", direct)]
            if relay is not None:
                cpu0, up0 = cpu_seconds(relay.pid), cpu_seconds(upstream.pid)
                relayed = run_client(relay.port, "direct", n, args.chunks, args.interval_ms)
                relayed["cpu_s"] = cpu_seconds(relay.pid) - cpu0
                relayed["all_cpu_s"] = (
                    relayed["cpu_s"] + cpu_seconds(upstream.pid) - up0 + relayed["client_cpu_s"]
                )
                runs.append(("relay", relayed))
            cpu0, up0 = cpu_seconds(gateway.pid), cpu_seconds(upstream.pid)
            with PeakRss(gateway.pid) as peak:
                via = run_client(gateway.port, "gateway", n, args.chunks, args.interval_ms)
            via["cpu_s"] = cpu_seconds(gateway.pid) - cpu0
            via["all_cpu_s"] = via["cpu_s"] + cpu_seconds(upstream.pid) - up0 + via["client_cpu_s"]
            if round_ == 0:
                # Memory from the first round: later rounds reuse what the first one grew.
                peak_kib = peak.peak_kib
            runs.append(("gateway", via))
            for name, run in runs:
                errors[name] += run["errors"]
                cpu_us[name].append(cpu_per_chunk_us(run))
                if name not in best or pct(run["latency_ns"], 0.99) < pct(
                    best[name]["latency_ns"], 0.99
                ):
                    best[name] = run
    return {"n": n, "direct": best["direct"], "relay": best.get("relay"),
            "gateway": best["gateway"], "errors": errors,
            "cpu_us": {k: min(v) for k, v in cpu_us.items() if v},
            "base_kib": base_kib, "peak_kib": peak_kib}  # fmt: skip


def cpu_per_chunk_us(run: dict[str, Any]) -> float:
    return float(run["cpu_s"]) / max(1, run["chunks"]) * 1e6


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (
        "| streams | path | errors | chunks/s | streams/s | latency p50 / p99 (ms) "
        "| added latency p50 / p99 (ms) | gap p50 / p99 (ms) | added gap p50 / p99 (ms) "
        "| server CPU per chunk (µs) | CPU per chunk / relay's | cores busy, all processes "
        "| RSS per open stream (KiB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in rows:
        d = row["direct"]
        label = "gateway" if args.shape == "proxy" else "middleware"
        paths = [("direct", "direct", d)]
        if row["relay"] is not None:
            paths.append(("relay", "relay", row["relay"]))
        paths.append(("gateway", label, row["gateway"]))
        relay_cpu = row["cpu_us"].get("relay")
        for key, name, r in paths:
            lat = f"{pct(r['latency_ns'], 0.5):.2f} / {pct(r['latency_ns'], 0.99):.2f}"
            gap = f"{pct(r['gap_ns'], 0.5):.1f} / {pct(r['gap_ns'], 0.99):.1f}"
            added = added_gap = rss = vs_relay = "—"
            cpu = f"{row['cpu_us'][key]:.0f}"
            if relay_cpu and key != "direct":
                vs_relay = f"{row['cpu_us'][key] / relay_cpu:.2f}x"
            if key != "direct":
                a50 = pct(r["latency_ns"], 0.5) - pct(d["latency_ns"], 0.5)
                a99 = pct(r["latency_ns"], 0.99) - pct(d["latency_ns"], 0.99)
                added = f"{a50:.2f} / {a99:.2f}"
                g50 = pct(r["gap_ns"], 0.5) - pct(d["gap_ns"], 0.5)
                g99 = pct(r["gap_ns"], 0.99) - pct(d["gap_ns"], 0.99)
                added_gap = f"{g50:.1f} / {g99:.1f}"
            if key == "gateway":
                rss = f"{(row['peak_kib'] - row['base_kib']) / row['n']:.1f}"
            lines.append(
                f"| {row['n']} | {name} | {len(row['errors'][key])} "
                f"| {r['chunks'] / r['wall_s']:,.0f} "
                f"| {row['n'] / r['wall_s']:,.1f} | {lat} | {added} | {gap} | {added_gap} "
                f"| {cpu} | {vs_relay} | {r['all_cpu_s'] / r['wall_s']:.2f} | {rss} |"
            )
    shape = (
        "gateway = uvicorn + ResponsesMiddleware + ProxyApp, upstream in its own process"
        if args.shape == "proxy"
        else "middleware = uvicorn + ResponsesMiddleware around the same app in one process "
        "(no proxy hop). Here the app stamps its chunks in the middleware's own event loop, "
        "so a busy loop delays stamp and send alike and latency cannot show it: read the gap "
        "and CPU columns (the middleware's cost = its CPU per chunk minus the upstream's)"
    )
    pool = (
        "relay = uvicorn + ProxyApp passing the upstream's bytes through (no middleware), "
        "the gateway's transport without translation; ProxyApp `max_connections` = N + 50; "
        if args.shape == "proxy"
        else ""
    )
    notes = (
        f"\n{shape}. {args.chunks} chunks per "
        f"stream, one every {args.interval_ms} ms; uvicorn `--http {args.http} --loop uvloop "
        f"--backlog 4096`, one worker; {pool}load client: raw "
        f"asyncio streams in its own process, one connection per stream, starts spread over "
        f"{args.interval_ms} ms. Latency and gap: best p99 of {args.rounds} alternating rounds "
        "per path (the machine is shared); server CPU per chunk: least of the rounds; "
        "errors: all rounds; RSS: first round. "
        f"Machine: {os.cpu_count()} cores shared by all processes.\n"
    )
    return head + "\n".join(lines) + "\n" + notes


def write_results(section: str, body: str) -> None:
    """Replace (or add) ``## section`` in RESULTS.md, keeping the other sections."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Load and soak results\n"
    marker = f"## {section}\n"
    start = text.find(marker)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + marker + "\n" + body
    else:
        end = text.find("\n## ", start + len(marker))
        rest = "" if end == -1 else text[end:]
        text = text[:start] + marker + "\n" + body + rest
    RESULTS.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target", choices=["direct", "gateway"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--streams", default="100,500,1000")
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--interval-ms", type=int, default=50)
    parser.add_argument("--http", default=default_http(), choices=["httptools", "h11"])
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per N")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--shape",
        default="proxy",
        choices=["proxy", "inprocess"],
        help="proxy: middleware + ProxyApp in front of the upstream process (the gateway); "
        "inprocess: the middleware around the same app in one process (no proxy hop)",
    )
    args = parser.parse_args()
    if args.client:
        args.streams = int(args.streams)
        client_main(args)
        return
    rows = []
    for n in (int(x) for x in args.streams.split(",")):
        row = measure(n, args)
        rows.append(row)
        for name in ("direct", "gateway"):
            if row["errors"][name]:
                print(f"N={n} {name} errors (first 5): {row['errors'][name][:5]}", file=sys.stderr)
    out = table(rows, args)
    print(out)
    if not args.no_write:
        flags = " ".join(["--http", args.http, "--shape", args.shape])
        write_results(f"Load: concurrent streams ({flags})", out)
    lat500 = [r for r in rows if r["n"] == 500]
    if lat500:
        r = lat500[0]
        added = pct(r["gateway"]["latency_ns"], 0.99) - pct(r["direct"]["latency_ns"], 0.99)
        gap = pct(r["gateway"]["gap_ns"], 0.99) - pct(r["direct"]["gap_ns"], 0.99)
        print(
            f"at 500 streams, added p99 delivery latency: {added:.2f} ms, added p99 "
            f"inter-event gap: {gap:.2f} ms (target <= 5 ms)"
        )
    for r in rows:
        relay_cpu = r["cpu_us"].get("relay")
        if relay_cpu:
            gateway_cpu = r["cpu_us"]["gateway"]
            print(
                f"at {r['n']} streams, gateway CPU per chunk {gateway_cpu:.0f} µs, relay "
                f"{relay_cpu:.0f} µs: translation costs {gateway_cpu / relay_cpu:.2f}x the relay "
                f"({gateway_cpu - relay_cpu:.0f} µs per chunk)"
            )
    print(
        "RSS per open stream (KiB): "
        + ", ".join(f"{r['n']}: {(r['peak_kib'] - r['base_kib']) / r['n']:.1f}" for r in rows)
        + " (target <= 64)"
    )


if __name__ == "__main__":
    main()
