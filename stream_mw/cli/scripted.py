"""``stream-mw scripted``: the scripted Chat Completions backend served alone."""

from __future__ import annotations

import argparse
from typing import Any

from .. import __version__
from ._common import LOG_LEVELS, UsageError, require_extra
from .gateway import _RequestLog
from .serve import _bind, _log_config


def scripted_command(args: argparse.Namespace) -> int:
    require_extra("uvicorn", "stream-mw scripted", "gateway")
    import uvicorn

    from ..upstreams.scripted import ScriptedBackend, load_script

    try:
        backend = (
            ScriptedBackend(load_script(args.script), repeat=args.repeat)
            if args.script
            else ScriptedBackend.demo()
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    what = f"turns from {args.script}" if args.script else "the demo script"
    print(
        f"stream-mw {__version__}: scripted Chat Completions backend at "
        f"http://{shown_host}:{port}/v1 ({what}; recorded requests at /scripted_command/requests)\n"
        f"Put the gateway in front of it: stream-mw serve --upstream http://{shown_host}:{port}/v1"
        "\n\nPress Ctrl+C to stop.\n",
        flush=True,
    )
    common: dict[str, Any] = {
        "log_config": _log_config(args.log_level, args.log_format, args.access_log),
        "log_level": LOG_LEVELS[args.log_level],
        "access_log": False,
    }
    server = uvicorn.Server(uvicorn.Config(_RequestLog(backend, ""), **common))
    server.run(sockets=[sock])
    return 0 if server.started else 1
