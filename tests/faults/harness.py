"""Shared by the fault matrix, the fuzz tier and the benchmarks: server processes, requests, SSE.

``ServerProcess`` starts ``tests.faults.serve`` in a subprocess and stops exactly that process
(by pid) on exit. The rest are small helpers: the Responses request body for a fault, an SSE
splitter for Responses bodies, and ``/proc`` readers for a process's memory and descriptors.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from tests.faults.faulty_upstream import fault_model

__all__ = [
    "ROOT",
    "AsgiResult",
    "ServerProcess",
    "asgi_call",
    "assert_openai_error",
    "fd_count",
    "parse_events",
    "proc_status_kib",
    "responses_body",
]

ROOT = Path(__file__).resolve().parents[2]

_Server = TypeVar("_Server", bound="ServerProcess")


def responses_body(fault: str, *, stream: bool = True, **params: object) -> dict[str, Any]:
    """A Responses request that selects ``fault`` on the faulty upstream."""
    return {"model": fault_model(fault, **params), "input": "hello", "stream": stream}


def parse_events(body: bytes) -> list[dict[str, Any]]:
    """The JSON ``data`` of every complete event in a Responses SSE body (``[DONE]`` skipped)."""
    events = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:")]
        if data and data != [b"[DONE]"]:
            events.append(json.loads(b"\n".join(data)))
    return events


def proc_status_kib(pid: int, field: str = "VmRSS") -> int:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class ServerProcess:
    """``python -m tests.faults.serve ROLE ARGS...`` on 127.0.0.1, stopped on exit.

    Attributes:
        port: The port the server listens on.
        url: ``http://127.0.0.1:<port>``.
        pid: The server's process id.
    """

    def __init__(
        self,
        role: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self._cmd = [sys.executable, "-m", "tests.faults.serve", role, *args]
        self._env = {**os.environ, **(env or {})}
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self: _Server) -> _Server:
        self._proc = subprocess.Popen(
            self._cmd,
            cwd=ROOT,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        lines: queue.Queue[bytes] = queue.Queue()
        self._stderr: list[bytes] = []
        threading.Thread(target=_pump, args=(self._proc.stdout, lines), daemon=True).start()
        threading.Thread(target=_drain, args=(self._proc.stderr, self._stderr), daemon=True).start()
        try:
            line = lines.get(timeout=self._startup_timeout)
        except queue.Empty:
            line = b""
        if not line.startswith(b"PORT "):
            self._stop()
            raise RuntimeError(
                f"{' '.join(self._cmd)} did not start: {b''.join(self._stderr).decode()[-2000:]}"
            )
        self.port = int(line.split()[1])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _pump(stream: IO[bytes], lines: queue.Queue[bytes]) -> None:
    for line in stream:
        lines.put(line)


def _drain(stream: IO[bytes], sink: list[bytes]) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
        sink.append(chunk)


class AsgiResult:
    """What one ASGI call sent: status, headers, body, every message, and how it ended."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.returned = False
        self.sends_after_disconnect = 0

    @property
    def start(self) -> dict[str, Any]:
        return next(m for m in self.messages if m["type"] == "http.response.start")

    @property
    def status(self) -> int:
        return int(self.start["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.start["headers"]}

    @property
    def header_list(self) -> list[tuple[str, str]]:
        return [
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in self.start["headers"]
        ]

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "http.response.body"]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.bodies)

    @property
    def complete(self) -> bool:
        """The last message ended the body and nothing was sent after it."""
        bodies = self.bodies
        return (
            bool(bodies)
            and not bodies[-1].get("more_body", False)
            and all(m.get("more_body", False) for m in bodies[:-1])
        )


async def asgi_call(
    app: Any,
    body: bytes | list[bytes],
    *,
    method: str = "POST",
    path: str = "/v1/responses",
    headers: list[tuple[bytes, bytes]] | None = None,
    disconnect_after: int | None = None,
) -> AsgiResult:
    """Call ``app`` once as a server would, recording every message it sends.

    ``body`` (one piece or several ``http.request`` messages) is delivered first; then
    ``receive`` blocks until the response is complete, or until ``disconnect_after`` body
    messages were sent (the client leaving), and answers ``http.disconnect``. Like uvicorn,
    ``send`` after a disconnect is a silent no-op (counted). An exception from the app is
    kept in ``.error``, not raised.
    """
    import anyio

    pieces = [body] if isinstance(body, bytes) else list(body) or [b""]
    result = AsgiResult()
    gone = anyio.Event()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers
        if headers is not None
        else [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        if pieces:
            data = pieces.pop(0)
            return {"type": "http.request", "body": data, "more_body": bool(pieces)}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if gone.is_set():
            result.sends_after_disconnect += 1
            return
        result.messages.append(message)
        if message["type"] != "http.response.body":
            return
        last = not message.get("more_body", False)
        if last or (disconnect_after is not None and len(result.bodies) >= disconnect_after):
            gone.set()

    if disconnect_after == 0:
        gone.set()
    try:
        await app(scope, receive, send)
        result.returned = True
    except Exception as exc:
        result.error = exc
    return result


def assert_openai_error(body: bytes) -> dict[str, Any]:
    """``body`` is OpenAI's error envelope ``{"error": {"message", "type", "param", "code"}}``."""
    payload = json.loads(body)
    assert isinstance(payload, dict), payload
    assert set(payload) == {"error"}, payload
    error = payload["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    for key in ("message", "type"):
        assert isinstance(error[key], str), error
        assert error[key], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    return error  # type: ignore[no-any-return]
