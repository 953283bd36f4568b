"""Run ``stream-mw`` as a real subprocess, as a user would, and talk to it.

``running("serve", "--script", path)`` starts ``python -m stream_mw serve ... --port 0`` and
returns once the start-up banner names the port: the command prints it after its socket is
bound and listening, so clients may connect at once (the kernel queues them until uvicorn
accepts). The process is stopped with SIGTERM (uvicorn's graceful shutdown) on exit.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

ROOT = Path(__file__).resolve().parents[2]
_PORT = re.compile(r"http://127\.0\.0\.1:(\d+)")


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a ``python -m stream_mw`` subprocess: this checkout importable,
    no stray gateway or proxy configuration inherited from the developer's shell."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STREAM_MW_") and not k.lower().endswith("_proxy")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, stdin: bytes = b"", timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m stream_mw ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "stream_mw", *args],
        input=stdin,
        capture_output=True,
        env=cli_env(env),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


@dataclass
class Process:
    """A running ``stream-mw`` server."""

    popen: subprocess.Popen[str]
    port: int
    #: What the command printed on start-up.
    banner: str
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def running(
    *args: str,
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 90,
) -> Iterator[Process]:
    """Start ``python -m stream_mw ARGS --port 0`` and yield it once it is listening."""
    stderr_path = tmp_path / f"stream-mw-{os.urandom(4).hex()}.stderr"
    with open(stderr_path, "w", encoding="utf-8") as stderr:
        popen = subprocess.Popen(
            [sys.executable, "-m", "stream_mw", *args, "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=cli_env(env),
            cwd=ROOT,
            text=True,
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        # Keeps reading after the banner, so the server never blocks on a full pipe.
        assert popen.stdout is not None
        for line in popen.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    banner: list[str] = []
    port = None
    try:
        # The banner names the URL first and ends with "Press Ctrl+C to stop.".
        while not banner or "Press Ctrl+C" not in banner[-1]:
            try:
                line = lines.get(timeout=startup_timeout)
            except queue.Empty:
                raise AssertionError(f"stream-mw {args} printed no banner") from None
            if line is None:
                popen.wait(10)
                raise AssertionError(
                    f"stream-mw {args} exited with {popen.returncode} before listening:\n"
                    + stderr_path.read_text()
                )
            banner.append(line)
            found = _PORT.search(line)
            if found and port is None:
                port = int(found.group(1))
        assert port is not None, banner
        yield Process(popen, port, "".join(banner), stderr_path)
    finally:
        stop(popen)


def stop(popen: subprocess.Popen[Any]) -> None:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(15)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)


def write_script(path: Path, turns: Sequence[Mapping[str, Any]]) -> Path:
    """Write a ``--script`` file."""
    import json

    path.write_text(json.dumps(list(turns)), encoding="utf-8")
    return path


def breaking_upstream(*pieces: bytes) -> ASGIApp:
    """Sends ``pieces`` as an event stream, then dies: uvicorn cuts the connection mid-body."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        # Read the request first: a socket closed with unread input is reset, and a reset
        # may destroy the pieces still in flight.
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        raise RuntimeError("the upstream died")

    return app


@contextmanager
def resetting_upstream(*pieces: bytes) -> Iterator[str]:
    """A raw-socket upstream on 127.0.0.1 that answers each request with ``pieces`` as a
    chunked event stream, then resets the connection (RST, not FIN) before the last chunk.

    The reset is sent only once the peer has acknowledged every byte (the send queue is
    empty), so the pieces are in the peer's receive buffer, not destroyed in flight. Yields
    the base URL (``http://127.0.0.1:<port>``).
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(65536)
        head, _, body = request.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        while length is not None and len(body) < int(length.group(1)):
            body += conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
        )
        unacked = array.array("i", [1])
        deadline = time.monotonic() + 10
        while unacked[0] and time.monotonic() < deadline:
            fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ, unacked)
            time.sleep(0.001)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    def serve_forever() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError):
                answer(conn)

    thread = threading.Thread(target=serve_forever, daemon=True, name="resetting-upstream")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(10)
        server.close()
