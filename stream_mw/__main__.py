"""``python -m stream_mw``: the same as the ``stream-mw`` command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
