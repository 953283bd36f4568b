"""``stream-mw serve`` bounds what a client can make it hold: head size, fields, time, sockets.

Every test runs the real command (uvicorn on loopback) and talks to it over raw sockets, so
it decides exactly which bytes go over the wire and when. A scripted Chat Completions server
behind the gateway records what reached the upstream.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.helpers import Process, run_cli, running

WAIT = 30.0
BODY = json.dumps({"model": "m", "input": "hi"}).encode()


def request_head(*headers: bytes, length: int = len(BODY)) -> bytes:
    lines = [
        b"POST /v1/responses HTTP/1.1",
        b"host: gateway",
        b"content-type: application/json",
        b"content-length: %d" % length,
        *headers,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@contextlib.contextmanager
def connection(gateway: Process) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=WAIT)
    try:
        yield sock
    finally:
        sock.close()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a reset counts as a close."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a ``content-length``, and not a byte more."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(1)
    head = data.lower()
    length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    while len(data) < len(head) + length:
        data += sock.recv(len(head) + length - len(data))
    return data


def upstream_requests(upstream: Process) -> int:
    recorded = httpx.get(f"{upstream.url}/_scripted/requests", timeout=WAIT).json()
    return sum(1 for r in recorded if r["path"].endswith("/chat/completions"))


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Process]:
    with running("scripted", tmp_path=tmp_path) as process:
        yield process


def test_a_request_head_over_max_header_bytes_gets_a_431_and_never_reaches_the_upstream(
    upstream: Process, tmp_path: Path
) -> None:
    # The limit from the environment, as --workers passes it on.
    env = {"STREAM_MW_MAX_HEADER_BYTES": "4096"}
    with running(
        "serve", "--upstream", upstream.url + "/v1", tmp_path=tmp_path, env=env
    ) as gateway:
        with connection(gateway) as sock:
            sock.sendall(request_head(b"x-big: " + b"a" * 2000) + BODY)
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
        assert upstream_requests(upstream) == 1
        with connection(gateway) as sock:
            sock.sendall(request_head(b"x-big: " + b"a" * 5000) + BODY)
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 431 ")
        error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
        assert error["code"] == "request_header_fields_too_large"
        assert "4096 bytes" in error["message"]
        assert upstream_requests(upstream) == 1
    assert "Traceback" not in gateway.stderr()


def test_a_large_body_behind_a_small_head_is_not_counted_against_the_head(
    tmp_path: Path,
) -> None:
    body = json.dumps({"model": "m", "input": "x" * 500_000}).encode()
    with (
        running("serve", "--max-header-bytes", "4096", tmp_path=tmp_path) as gateway,
        connection(gateway) as sock,
    ):
        # Head and body in one write: the server reads them in the same pieces.
        sock.sendall(request_head(length=len(body)) + body)
        assert read_response_head(sock).startswith(b"HTTP/1.1 200")


def read_response_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_an_unfinished_header_is_refused_once_it_outgrows_the_limit_not_held_to_its_end(
    tmp_path: Path,
) -> None:
    with running("serve", "--max-header-bytes", "4096", tmp_path=tmp_path) as gateway:
        with connection(gateway) as sock:
            sock.sendall(b"POST /v1/responses HTTP/1.1\r\nhost: gateway\r\nx-big: ")
            answer = b""
            # Far more than the limit and never ended: the server must not wait for its end.
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                for _ in range(1024):
                    sock.sendall(b"a" * 16384)
            answer = read_until_closed(sock)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
        assert gateway.popen.poll() is None
        # The gateway still serves others.
        assert httpx.get(f"{gateway.url}/v1/models", timeout=WAIT).status_code == 200


def test_a_request_with_more_header_fields_than_max_headers_gets_a_431(tmp_path: Path) -> None:
    with running("serve", "--max-headers", "20", tmp_path=tmp_path) as gateway:
        extra = [b"x-n%d: 1" % n for n in range(20)]
        with connection(gateway) as sock:
            sock.sendall(request_head(*extra) + BODY)
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert b"more than 20 header fields" in answer


def test_a_connection_dribbling_its_head_is_closed_with_a_408_after_the_header_timeout(
    tmp_path: Path,
) -> None:
    with running("serve", "--header-timeout", "1", tmp_path=tmp_path) as gateway:
        with connection(gateway) as sock:
            head = request_head(b"x-slow: " + b"a" * 200)
            sock.settimeout(0.2)
            answer = b""
            # One byte every 0.2 s would take 50 s to finish the head.
            for byte in head:
                try:
                    sock.sendall(bytes([byte]))
                    answer = sock.recv(65536)
                except TimeoutError:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    pass
                break  # an answer, or the connection closed
            else:
                pytest.fail("the server waited for the whole head")
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"request_timeout" in answer


def test_a_connection_that_sends_nothing_is_closed_silently_after_the_header_timeout(
    tmp_path: Path,
) -> None:
    with running("serve", "--header-timeout", "1", tmp_path=tmp_path) as gateway:
        with connection(gateway) as sock:
            assert read_until_closed(sock) == b""
        assert "refused" not in gateway.stderr()


def test_a_kept_alive_connection_gets_the_header_timeout_for_its_next_head(
    tmp_path: Path,
) -> None:
    with running("serve", "--header-timeout", "1", tmp_path=tmp_path) as gateway:
        with connection(gateway) as sock:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: gateway\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            # The next head starts (ending uvicorn's keep-alive wait) and never ends.
            sock.sendall(b"GET /v1/models HTTP/1.1\r\n")
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 ")


def test_connections_beyond_max_connections_get_a_503_and_others_keep_working(
    tmp_path: Path,
) -> None:
    with (
        running("serve", "--max-connections", "3", tmp_path=tmp_path) as gateway,
        contextlib.ExitStack() as held,
    ):
        idle = [held.enter_context(connection(gateway)) for _ in range(3)]
        # The server has taken the three (it answers on one of them).
        idle[0].sendall(b"GET /v1/models HTTP/1.1\r\nhost: gateway\r\n\r\n")
        assert idle[0].recv(65536).startswith(b"HTTP/1.1 200")
        with connection(gateway) as extra:
            answer = read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503 ")
        idle.pop().close()
        # The server notices the close on its next loop turn.
        deadline = time.monotonic() + WAIT
        while True:
            with connection(gateway) as sock:
                sock.sendall(b"GET /v1/models HTTP/1.1\r\nhost: gateway\r\n\r\n")
                if read_until_closed_or_first(sock).startswith(b"HTTP/1.1 200"):
                    break
            assert time.monotonic() < deadline, "the freed slot was never given out"


def read_until_closed_or_first(sock: socket.socket) -> bytes:
    with contextlib.suppress(ConnectionResetError):
        return sock.recv(65536)
    return b""


@pytest.mark.parametrize(
    "option",
    [
        ("--max-header-bytes", "0"),
        ("--max-headers", "-1"),
        ("--header-timeout", "0"),
        ("--max-connections", "0"),
    ],
)
def test_a_bound_that_is_not_positive_is_a_usage_error(option: tuple[str, str]) -> None:
    result = run_cli("serve", *option)
    assert result.returncode == 2
    assert option[0] in result.stderr.decode()
