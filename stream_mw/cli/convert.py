"""``stream-mw convert``: the library's converter over a recorded stream, stdin to stdout."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import IO, Any

from .._errors import ConfigurationError
from .._settings import Settings
from ._common import UsageError


def convert_command(args: argparse.Namespace) -> int:
    from .._stream import StreamConverter

    request: dict[str, Any] | None = None
    if args.request:
        try:
            with open(args.request, encoding="utf-8") as file:
                loaded = json.load(file)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read --request {args.request}: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--request {args.request} must hold a JSON object")
        request = loaded
    try:
        settings = Settings.from_env() if args.settings_from_env else None
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    created_at: int | None = args.created_at
    if created_at is None:
        converter = StreamConverter(request, settings, response_id=args.response_id)
    else:
        # A fixed creation time fixes completed_at too, so the output is byte-for-byte
        # reproducible.
        converter = StreamConverter(
            request,
            settings,
            response_id=args.response_id,
            created_at=created_at,
            clock=lambda: float(created_at),
        )
    source: IO[bytes] = sys.stdin.buffer
    out: IO[bytes] = sys.stdout.buffer
    if sys.stdin.isatty():
        print(
            "stream-mw convert: reading a Chat Completions SSE stream from stdin "
            "(end it with Ctrl+D)",
            file=sys.stderr,
        )
    read = getattr(source, "read1", source.read)
    try:
        out.write(converter.start())
        out.flush()
        # read1 returns what is available now: each upstream event is converted and written
        # as soon as it arrives, so `curl ... | stream-mw convert` shows a live stream.
        while not converter.finished:
            data = read(65536)
            if not data:
                break
            converted = converter.feed(data)
            if converted:
                out.write(converted)
                out.flush()
        out.write(converter.close())
        out.flush()
    except BrokenPipeError:
        # The reader went away (`| head`); exit quietly like other Unix filters.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    # A filter reports failure in its status, so `convert < chat.sse && next-step` stops.
    return 1 if converter.response.get("status") == "failed" else 0
