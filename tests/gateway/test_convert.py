"""``stream-mw convert``: the library's converter on a recorded stream, byte for byte."""

from __future__ import annotations

import io
import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from stream_mw import Settings, StreamConverter
from stream_mw.cli import main
from tests.checker import Fixture, load_fixtures
from tests.gateway.helpers import ROOT, cli_env

RESPONSE_ID = "resp_cli0123456789abcdef"
CREATED_AT = 1_700_000_000
FIXTURES = load_fixtures()


def library_output(body: bytes, request: Any = None, settings: Settings | None = None) -> bytes:
    converter = StreamConverter(
        request,
        settings,
        response_id=RESPONSE_ID,
        created_at=CREATED_AT,
        clock=lambda: float(CREATED_AT),
    )
    return converter.start() + converter.feed(body) + converter.close()


def run_convert(monkeypatch: pytest.MonkeyPatch, body: bytes, *args: str) -> tuple[int, bytes]:
    stdin = io.TextIOWrapper(io.BytesIO(body))
    stdout = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(sys, "stdout", stdout)
    status = main(["convert", "--response-id", RESPONSE_ID, "--created-at", str(CREATED_AT), *args])
    stdout.flush()
    buffer = stdout.buffer
    assert isinstance(buffer, io.BytesIO)
    return status, buffer.getvalue()


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f.name)
def test_convert_matches_the_library_on_every_recorded_stream(
    fixture: Fixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    args = []
    if fixture.request is not None:
        request_file = tmp_path / "request.json"
        request_file.write_text(json.dumps(fixture.request))
        args += ["--request", str(request_file)]
    if fixture.settings:
        args.append("--settings-from-env")
        for name, value in fixture.settings.items():
            text = json.dumps(value) if not isinstance(value, str) else value
            monkeypatch.setenv(f"STREAM_MW_{name.upper()}", text)
    status, output = run_convert(monkeypatch, fixture.body, *args)
    expected = library_output(fixture.body, fixture.request, Settings(**fixture.settings))
    assert output == expected
    assert status == (1 if b"event: response.failed" in expected else 0)


def test_a_stream_that_ended_failed_exits_1_like_a_filter_that_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = next(f.body for f in FIXTURES if f.name == "openai_plain_text")
    cut = body[: body.index(b'"finish_reason":"stop"')].rpartition(b"\n\n")[0] + b"\n\n"
    status, output = run_convert(monkeypatch, cut)
    assert b"event: response.failed" in output
    assert status == 1
    incomplete = body.replace(b'"finish_reason":"stop"', b'"finish_reason":"length"')
    status, output = run_convert(monkeypatch, incomplete)
    assert b"event: response.incomplete" in output
    assert status == 0


def test_settings_are_read_from_the_environment_only_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = next(f.body for f in FIXTURES if f.name == "openai_plain_text")
    monkeypatch.setenv("STREAM_MW_DONE_MARKER", "false")
    _, default = run_convert(monkeypatch, body)
    _, from_env = run_convert(monkeypatch, body, "--settings-from-env")
    assert default.endswith(b"data: [DONE]\n\n")
    assert not from_env.endswith(b"data: [DONE]\n\n")


def test_a_bad_request_file_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "request.json"
    bad.write_text("[1, 2]")
    status, _ = run_convert(monkeypatch, b"", "--request", str(bad))
    assert status == 2
    assert "must hold a JSON object" in capsys.readouterr().err


def test_convert_streams_each_event_as_it_arrives_through_a_real_pipe() -> None:
    """The output for the first upstream event is read before the rest is even written: the
    command reads its input incrementally (a command that read all of stdin first would never
    answer, and the test fails on its timeout)."""
    fixture = next(f for f in FIXTURES if f.name == "openai_plain_text")
    first_event_end = fixture.body.index(b"\n\n", fixture.body.index(b'"content":"Hello')) + 2
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream_mw",
            "convert",
            "--response-id",
            RESPONSE_ID,
            "--created-at",
            str(CREATED_AT),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd=ROOT,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    received: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        while chunk := process.stdout.read1(65536):
            received.put(chunk)
        received.put(b"")

    threading.Thread(target=pump, daemon=True).start()
    try:
        process.stdin.write(fixture.body[:first_event_end])
        process.stdin.flush()
        output = b""
        while b"response.output_text.delta" not in output:
            output += received.get(timeout=30)
        process.stdin.write(fixture.body[first_event_end:])
        process.stdin.close()
        while chunk := received.get(timeout=30):
            output += chunk
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert output == library_output(fixture.body)
