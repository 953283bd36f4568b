"""The README's systemd unit, run as written: its ``ExecStart=`` with its environment, stopped
with its ``KillSignal=`` within its ``TimeoutStopSec=``.

systemd itself does not run here, so the test does what it would: apply ``Environment=``, then
the ``EnvironmentFile=`` (which wins, as in systemd), start ``ExecStart=`` (the unit's venv path
replaced by this one's), and send the kill signal. The environment file is the deployment's
own: here it points the gateway at a scripted upstream on loopback and a SQLite store in a
temporary folder.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from stream_mw.upstreams import ScriptedBackend, Turn
from tests.e2e.conftest import serve
from tests.gateway.helpers import ROOT, cli_env

README = (ROOT / "README.md").read_text(encoding="utf-8")


def unit_file() -> dict[str, list[str]]:
    block = re.search(r"```ini\n(\[Unit\].*?)```", README, re.DOTALL)
    assert block is not None, "README's production section has no systemd unit"
    keys: dict[str, list[str]] = {}
    for line in block.group(1).splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_readme_systemd_unit_serves_and_stops_within_its_stop_timeout(
    tmp_path: Path,
) -> None:
    unit = unit_file()
    grace = float(
        next(
            v for v in unit["Environment"] if v.startswith("STREAM_MW_GRACEFUL_TIMEOUT=")
        ).partition("=")[2]
    )
    stop_timeout = float(unit["TimeoutStopSec"][0])
    # The unit's own arithmetic: ending the streams still open takes a few seconds more.
    assert stop_timeout >= grace + 10
    assert unit["KillSignal"] == ["SIGTERM"]

    keys = tmp_path / "client-keys"
    keys.write_text("sk-gw-unit team-a\n", encoding="utf-8")
    port = free_port()
    backend = ScriptedBackend([Turn.text("Served by the unit.")])
    with serve(backend) as upstream:
        env_file = {
            "STREAM_MW_UPSTREAM": upstream.url + "/v1",
            "STREAM_MW_HOST": "127.0.0.1",
            "STREAM_MW_PORT": str(port),
            "STREAM_MW_STORE_URL": f"sqlite:///{tmp_path / 'responses.db'}",
            "STREAM_MW_CLIENT_KEYS": str(keys),
            "STREAM_MW_REASONING_KEY": "a-long-random-secret-for-this-test",
        }
        env = cli_env(
            {
                **dict(v.partition("=")[::2] for v in unit["Environment"]),
                **env_file,
            }
        )
        argv = shlex.split(unit["ExecStart"][0])
        assert argv[0] == "/opt/stream-mw/.venv/bin/stream-mw"
        argv[0] = str(Path(sys.executable).with_name("stream-mw"))
        stderr_path = tmp_path / "stderr"
        with open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path
            )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, stderr_path.read_text(errors="replace")
                try:
                    if httpx.get(base + "/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, stderr_path.read_text(errors="replace")
                time.sleep(0.2)
            answer = httpx.post(
                base + "/v1/responses",
                headers={"authorization": "Bearer sk-gw-unit"},
                json={"model": "m", "input": "hi"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["output"][0]["content"][0]["text"] == "Served by the unit."
            refused = httpx.post(base + "/v1/responses", json={"model": "m", "input": "hi"})
            assert refused.status_code == 401
            process.send_signal(getattr(signal, unit["KillSignal"][0]))
            assert process.wait(timeout=stop_timeout) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    log = stderr_path.read_text(errors="replace")
    assert "Traceback" not in log
    # --log-format json: every line the gateway wrote is one JSON object.
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines
    for line in lines:
        json.loads(line)
