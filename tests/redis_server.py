"""A real ``redis-server`` on a free loopback port, for any test tier that needs Redis.

``RedisServer.start()`` returns once the server logged that it accepts connections (no sleeps,
no polling). Persistence is off, so nothing is written to disk. ``stop()``/``start()`` simulate
an outage and a recovery on the same port; ``pause()``/``resume()`` (SIGSTOP/SIGCONT) simulate a
server that accepts connections but never answers.

Use ``redis_server_or_skip()`` in fixtures: it skips, with the reason, when no ``redis-server``
binary is on PATH (``.ci/run`` installs one).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from types import TracebackType

import pytest

__all__ = ["RedisServer", "free_port", "redis_server_or_skip"]

_READY = b"Ready to accept connections"
_START_TIMEOUT = 20.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1``; a context manager."""

    def __init__(self, binary: str = "redis-server", port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:{port}/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RedisServer:
        """Start the server and wait until it accepts connections."""
        if self.running:
            return self
        proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "notice",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._proc = proc
        assert proc.stdout is not None
        seen: list[bytes] = []
        ready = threading.Event()

        def read_log() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if not ready.is_set():
                    seen.append(line)
                    if _READY in line:
                        ready.set()
            # Keep draining until the process exits, so a full pipe never blocks the server.

        threading.Thread(target=read_log, daemon=True).start()
        if not ready.wait(_START_TIMEOUT) or proc.poll() is not None:
            self.stop()
            log = b"".join(seen).decode(errors="replace")
            raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
        return self

    def stop(self) -> None:
        """Stop the server (an outage). ``start()`` brings it back on the same port."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def pause(self) -> None:
        """Freeze the server: connections are accepted by the kernel but never answered."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def redis_server_or_skip() -> RedisServer:
    """A started server on a free port, or a pytest skip naming what is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary on PATH (install redis-server; .ci/run does)")
    for _ in range(3):
        server = RedisServer(binary)
        try:
            return server.start()
        except RuntimeError:
            # Another process may have taken the port between free_port() and the bind.
            continue
    return RedisServer(binary).start()
