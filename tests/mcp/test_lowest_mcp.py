"""The lower bound of the ``mcp`` extra is a tested claim: the client's tests, run with the
oldest mcp that pyproject.toml allows, in a virtual environment of its own (made once, in a
cache folder) with this checkout's ``stream_mw`` on its path.

The MCP server of those tests stays this environment's (today's mcp): what is tested is the
old *client*. mcp 1.9.2 is the first release whose transports take an HTTP client factory,
which is how the gateway's guard gets between the transports and the network.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.venvs import cache_dir, cached_venv

ROOT = Path(__file__).resolve().parents[2]
LOWEST = "1.9.2"
REQUIREMENTS = (
    f"mcp=={LOWEST}",
    # mcp 1.9.2 imports a pydantic internal that pydantic 2.12 removed: whoever runs that mcp
    # has an older pydantic.
    "pydantic<2.12",
    "orjson>=3.9",
    "anyio>=4.10",
    "pytest>=8",
    "pytest-timeout>=2.3",
    # The HTTPS server's certificate (tests/tls.py).
    "cryptography>=42",
)

pytestmark = pytest.mark.separate_venv


def _venv_dir() -> Path:
    # Named after what it holds, so that changing the requirements makes a new one.
    digest = hashlib.sha256("\n".join(REQUIREMENTS).encode()).hexdigest()[:8]
    python = f"py{sys.version_info[0]}{sys.version_info[1]}"
    return cache_dir() / f"mcp-{LOWEST}-{python}-{digest}"


@pytest.fixture(scope="module")
def lowest_python() -> Path:
    """A Python with the lowest supported mcp, in a virtual environment made on first use."""
    return cached_venv(_venv_dir(), REQUIREMENTS, f"mcp=={LOWEST}")


def test_the_mcp_extra_names_the_lowest_tested_version() -> None:
    assert f'"mcp>={LOWEST}"' in (ROOT / "pyproject.toml").read_text()


def test_the_client_passes_its_tests_with_the_lowest_mcp(lowest_python: Path) -> None:
    version = subprocess.run(
        [str(lowest_python), "-c", "import importlib.metadata as m; print(m.version('mcp'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == LOWEST
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MCP_SERVER_PYTHON": sys.executable}
    run = subprocess.run(
        [
            str(lowest_python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "mcp" / "test_client.py"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
    assert "skipped" not in run.stdout
