"""Run the faulty upstream, a gateway (middleware + ProxyApp) or a bare relay (ProxyApp
alone) under uvicorn on 127.0.0.1.

Used as a subprocess by the fault matrix and the benchmarks, so each server has its own
process (its own RSS, file descriptors and event loop)::

    python -m tests.faults.serve upstream
    python -m tests.faults.serve middleware    # ResponsesMiddleware(FaultyUpstream()), no proxy
    FAULTS_UPSTREAM_API_KEY=sk-... python -m tests.faults.serve gateway \
        --upstream http://127.0.0.1:PORT/v1
    FAULTS_UPSTREAM_API_KEY=sk-... python -m tests.faults.serve relay \
        --upstream http://127.0.0.1:PORT/v1

The relay passes the upstream's bytes through unchanged, over the gateway's own transport and
under the same uvicorn options: the load benchmark's baseline for what translation adds.

The server binds port 0 itself and prints ``PORT <n>`` on stdout once it listens. Gateway
settings come from ``STREAM_MW_*`` environment variables (``Settings.from_env``). The gateway
also answers ``GET /_debug/stats`` (test-only): live asyncio tasks, open file descriptors and
RSS of its own process, for the soak benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import uvicorn

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.faults.faulty_upstream import FaultyUpstream, Receive, Scope, Send


def process_stats() -> dict[str, Any]:
    rss_kib = hwm_kib = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm_kib = int(line.split()[1])
    current = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not current]
    return {
        # The debug request's own task is running while it counts; report the others.
        "tasks": len(others),
        "task_coros": sorted(getattr(t.get_coro(), "__qualname__", "?") for t in others),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss_kib": rss_kib,
        "hwm_kib": hwm_kib,
    }


class DebugStats:
    """Answers ``GET /_debug/stats`` and passes everything else to ``app``.

    With ``FAULTS_PROFILE=<path>`` the process runs under cProfile and ``GET /_debug/profile``
    writes the stats so far to that path (uvicorn re-raises SIGTERM after shutting down, so
    an exit hook would never run).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.profile_path = os.environ.get("FAULTS_PROFILE")
        self.profiler: cProfile.Profile | None = None
        if self.profile_path:
            self.profiler = cProfile.Profile(time.process_time)
            self.profiler.enable()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/_debug/profile" and self.profiler:
            self.profiler.dump_stats(str(self.profile_path))
            scope = {**scope, "path": "/_debug/stats"}
        if scope["type"] == "http" and scope["path"] == "/_debug/stats":
            data = orjson.dumps(process_stats())
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": data})
            return
        await self.app(scope, receive, send)


def build_proxy(args: argparse.Namespace) -> Any:
    from stream_mw.upstreams.proxy import ProxyApp

    return ProxyApp(
        args.upstream,
        # From the environment, not argv: /proc/<pid>/cmdline is world-readable.
        api_key=os.environ.get("FAULTS_UPSTREAM_API_KEY"),
        connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout,
        max_connections=args.max_connections,
    )


def build_gateway(args: argparse.Namespace) -> Any:
    from stream_mw import ResponsesMiddleware, Settings

    return DebugStats(ResponsesMiddleware(build_proxy(args), settings=Settings.from_env()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["upstream", "gateway", "relay", "middleware"])
    parser.add_argument("--upstream", help="base URL of the upstream, ending in /v1")
    parser.add_argument("--max-connections", type=int, default=100)
    parser.add_argument("--connect-timeout", type=float, default=5.0)
    parser.add_argument("--read-timeout", type=float, default=60.0)
    parser.add_argument("--log-file", default=None, help="DEBUG log of the gateway goes here")
    parser.add_argument("--http", default="h11", choices=["h11", "httptools"])
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--backlog", type=int, default=2048)
    args = parser.parse_args(argv)

    if args.log_file:
        handler = logging.FileHandler(args.log_file)
        handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
    else:
        logging.basicConfig(level=logging.WARNING)

    if args.role == "upstream":
        app: Any = FaultyUpstream()
    elif args.role == "gateway":
        app = build_gateway(args)
    elif args.role == "relay":
        app = build_proxy(args)
    else:
        # The middleware around the faulty app in the same process: the first way in
        # (an existing app that serves /v1/chat/completions), without the proxy hop.
        from stream_mw import ResponsesMiddleware, Settings

        app = DebugStats(ResponsesMiddleware(FaultyUpstream(), settings=Settings.from_env()))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(args.backlog)
    config = uvicorn.Config(
        app,
        http=args.http,
        loop=args.loop,
        lifespan="off",
        access_log=False,
        log_config=None,
        backlog=args.backlog,
        timeout_graceful_shutdown=1,
        # The load benchmark holds 1,000 idle-between-chunks streams; keep-alive between
        # requests is what the soak's short streams rely on.
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
