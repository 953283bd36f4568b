"""The README's Quickstart works on a fresh machine with only Python and pip.

Its first command (create and activate a virtual environment, install with the ``gateway``
extra, start the gateway) is run verbatim, read from README.md, in a copy of this checkout,
and the gateway it starts must answer a Responses request. ``STREAM_MW_PORT=0`` lets it pick a free port, which its banner names.
The second command (install the test extra, run the suite) is not run from inside the suite;
its presence is checked here and ``tests/test_readme.py`` checks that ``.ci/run`` runs it.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVE_COMMAND = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install ".[gateway]" && stream-mw serve'
)
TEST_COMMAND = 'pip install -e ".[test]" && python -m pytest'


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README's Quickstart has no ```bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_quickstart_is_the_serve_command_then_the_test_command() -> None:
    assert quickstart_commands() == [SERVE_COMMAND, TEST_COMMAND]


@pytest.mark.quickstart
@pytest.mark.timeout(900)
def test_the_quickstart_serve_command_works_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    command = quickstart_commands()[0]
    # A copy, as a fresh clone would be: the command creates .venv where it runs.
    clone = tmp_path / "clone"
    shutil.copytree(
        ROOT,
        clone,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "node_modules", "__pycache__", "*.egg-info", ".mypy_cache"
        ),
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("STREAM_MW_")
    }
    env |= {
        # `python3` is this interpreter (the system one may lack the venv module).
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "STREAM_MW_PORT": "0",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONUNBUFFERED": "1",
    }
    venv = clone / ".venv"
    shell = subprocess.Popen(
        ["bash", "-c", command],
        cwd=clone,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Its own process group: bash and the gateway it starts are stopped together.
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert shell.stdout is not None
        for line in shell.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        port = None
        while port is None:
            line = lines.get(timeout=600)
            assert line is not None, "the quickstart command ended:\n" + "".join(output)
            output.append(line)
            found = re.search(r"Responses API at http://127\.0\.0\.1:(\d+)/v1/responses", line)
            if found:
                port = int(found.group(1))
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/responses",
            json={"model": "demo", "input": "Hello from the quickstart!"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "completed"
        text = body["output"][-1]["content"][0]["text"]
        assert "Hello from the quickstart!" in text
        # The gateway runs from the fresh environment, not from this checkout's.
        assert (venv / "bin" / "stream-mw").exists()
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGTERM)
            try:
                shell.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(shell.pid, signal.SIGKILL)
                shell.wait(10)
