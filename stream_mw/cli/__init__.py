"""The ``stream-mw`` command: a ready Responses gateway, and the converter on recorded streams.

``stream-mw serve`` runs uvicorn with ``ResponsesMiddleware`` in front of an upstream app: the
httpx proxy (``--upstream URL``), LiteLLM (``--litellm-model``), scripted turns (``--script``)
or, with none of these, the embedded demo backend. ``stream-mw convert`` runs the
``StreamConverter`` over a recorded Chat Completions stream. ``stream-mw scripted`` serves
the scripted backend alone, as a stand-in Chat Completions server.

Gateway options also come from environment variables, which is how they reach uvicorn's
worker processes with ``--workers N`` (and how ``uvicorn --factory stream_mw.cli:app_from_env``
is configured): ``STREAM_MW_UPSTREAM``, ``STREAM_MW_UPSTREAM_API_KEY``,
``STREAM_MW_LITELLM_MODEL``, ``STREAM_MW_LITELLM_KWARGS`` (a JSON object),
``STREAM_MW_SCRIPT``, ``STREAM_MW_CONFIG``, ``STREAM_MW_CONNECT_TIMEOUT``,
``STREAM_MW_READ_TIMEOUT``, ``STREAM_MW_CA_BUNDLE``, and
``STREAM_MW_HOST`` / ``STREAM_MW_PORT`` for where to listen, and ``STREAM_MW_MAX_HEADER_BYTES``,
``STREAM_MW_MAX_HEADERS``, ``STREAM_MW_HEADER_TIMEOUT`` and ``STREAM_MW_MAX_CONNECTIONS`` for
the bounds on clients (see ``_server_protocol.py``), ``STREAM_MW_GRACEFUL_TIMEOUT`` for the
shutdown (see ``_drain.py``); the middleware's own settings
are the ``STREAM_MW_*`` variables ``Settings.from_env()`` reads.

Errors a user can fix (a bad URL, a taken port, a missing extra, a bad setting) print one
line and exit with status 2; nothing prints a traceback for them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .._observe import JsonFormatter
from ._common import EXIT_USAGE, UsageError
from ._parser import _parser
from .gateway import GatewayConfig, app_from_env, build_gateway, gateway_settings

__all__ = [
    "GatewayConfig",
    "JsonFormatter",
    "app_from_env",
    "build_gateway",
    "gateway_settings",
    "main",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stream-mw`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        status: int = args.handler(args)
    except UsageError as exc:
        print(f"stream-mw {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return status
