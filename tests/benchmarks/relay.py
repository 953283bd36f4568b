"""A minimal relay for the load benchmark: uvicorn + ``ProxyApp``, no ``ResponsesMiddleware``.

``python -m tests.benchmarks.relay --upstream http://127.0.0.1:PORT/v1`` serves
``/v1/chat/completions`` by passing the upstream's bytes through unchanged, over the same
transport the gateway uses (``ProxyApp``: its connection pool, header handling and body
relay), under the same uvicorn options. Its CPU per relayed chunk is what any gateway in
front of that upstream pays; the gateway's CPU per chunk beside it shows what translation
adds. Binds port 0 and prints ``PORT <n>`` once it listens (as ``tests.faults.serve`` does).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import uvicorn

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stream_mw.upstreams.proxy import ProxyApp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="base URL of the upstream, ending in /v1")
    parser.add_argument("--max-connections", type=int, default=100)
    parser.add_argument("--http", default="h11", choices=["h11", "httptools"])
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--backlog", type=int, default=2048)
    args = parser.parse_args()
    app = ProxyApp(
        args.upstream,
        api_key=os.environ.get("FAULTS_UPSTREAM_API_KEY"),
        read_timeout=60.0,
        max_connections=args.max_connections,
    )
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
        timeout_keep_alive=30,
    )
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
