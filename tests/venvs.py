"""Virtual environments of their own for tests that need other versions than the suite's
(LiteLLM's proxy, the lowest ``mcp``): made once under ``~/.cache/stream-mw`` and reused."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["cache_dir", "cached_venv"]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/stream-mw`` (``~/.cache/stream-mw``)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "stream-mw"


def cached_venv(venv: Path, requirements: Sequence[str], what: str) -> Path:
    """The Python of ``venv``, with ``requirements`` installed on first use; ``what`` names
    them in the failure message."""
    python = venv / "bin" / "python"
    ready = venv / ".installed"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        # Two test runs installing into one folder at once would corrupt it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            install = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", *requirements],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            assert install.returncode == 0, f"installing {what} failed:\n{install.stderr}"
            ready.touch()
    return python
