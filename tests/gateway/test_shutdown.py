"""``stream-mw serve`` stopping: every response in flight finishes or gets its terminal event.

Each test runs the real command (uvicorn on loopback) in front of a slow scripted turn,
starts a request, signals the process mid-answer as a process manager would, and reads
the rest of the answer and the exit.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.helpers import Process, running, write_script

STOP_SIGNALS = [
    pytest.param(signal.SIGTERM, id="SIGTERM"),
    pytest.param(signal.SIGINT, id="SIGINT"),
]
WORDS = " ".join(f"w{n}" for n in range(8))


def slow_script(tmp_path: Path, chunk_delay: float, delay: float = 0.0) -> str:
    turn = {"text": WORDS, "chunk_delay": chunk_delay, "delay": delay}
    return str(write_script(tmp_path / "slow.json", [turn]))


def stream_and_signal(server: Process, sig: signal.Signals) -> list[dict[str, Any]]:
    """Stream one response, send ``sig`` after its first text delta, return every event."""
    events: list[dict[str, Any]] = []
    body = {"model": "m", "input": "hi", "stream": True}
    with httpx.stream("POST", server.url + "/v1/responses", json=body, timeout=60) as answer:
        assert answer.status_code == 200
        signalled = False
        for line in answer.iter_lines():
            if not line.startswith("data: {"):
                continue
            events.append(json.loads(line[len("data: ") :]))
            if not signalled and events[-1]["type"] == "response.output_text.delta":
                server.popen.send_signal(sig)
                signalled = True
    return events


def terminal_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        event
        for event in events
        if event["type"] in ("response.completed", "response.incomplete", "response.failed")
    ]


def exit_cleanly(server: Process) -> str:
    status = server.popen.wait(60)
    stderr = server.stderr()
    assert status == 0, stderr
    assert "Traceback" not in stderr
    assert "CancelledError" not in stderr
    assert "Cancel " not in stderr  # uvicorn's "Cancel N running task(s)"
    return stderr


@pytest.mark.parametrize("sig", STOP_SIGNALS)
def test_a_stream_that_finishes_within_the_grace_period_completes_before_the_exit(
    tmp_path: Path, sig: signal.Signals
) -> None:
    script = slow_script(tmp_path, chunk_delay=0.2)
    with running("serve", "--script", script, tmp_path=tmp_path) as server:
        events = stream_and_signal(server, sig)
        stderr = exit_cleanly(server)

    (terminal,) = terminal_events(events)
    assert terminal["type"] == "response.completed"
    assert terminal["response"]["output"][0]["content"][0]["text"] == WORDS
    assert "drained 1 responses, ended 0 at shutdown" in stderr


@pytest.mark.parametrize("sig", STOP_SIGNALS)
def test_a_stream_still_open_after_the_grace_period_ends_with_response_failed(
    tmp_path: Path, sig: signal.Signals
) -> None:
    script = slow_script(tmp_path, chunk_delay=2.0)
    with running(
        "serve", "--script", script, "--graceful-timeout", "0.5", tmp_path=tmp_path
    ) as server:
        events = stream_and_signal(server, sig)
        stderr = exit_cleanly(server)

    (terminal,) = terminal_events(events)
    assert terminal["type"] == "response.failed"
    error = terminal["response"]["error"]
    assert error["code"] == "server_shutting_down"
    assert "shutting down" in error["message"]
    assert "retry" in error["message"]
    # The text sent before the shutdown is kept, marked incomplete.
    (message,) = terminal["response"]["output"]
    assert message["status"] == "incomplete"
    assert WORDS.startswith(message["content"][0]["text"])
    assert "drained 0 responses, ended 1 at shutdown" in stderr


def test_a_json_request_still_open_after_the_grace_period_gets_a_503_to_retry(
    tmp_path: Path,
) -> None:
    script = slow_script(tmp_path, chunk_delay=0.0, delay=30.0)
    with running(
        "serve", "--script", script, "--graceful-timeout", "0.5", tmp_path=tmp_path
    ) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            pending = client.build_request(
                "POST", "/v1/responses", json={"model": "m", "input": "hi"}
            )
            answers: list[httpx.Response] = []
            thread = threading.Thread(target=lambda: answers.append(client.send(pending)))
            thread.start()
            _wait_until_the_backend_has_the_request(server)
            server.popen.send_signal(signal.SIGTERM)
            thread.join(60)
        stderr = exit_cleanly(server)

    (answer,) = answers
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "server_shutting_down"
    assert answer.headers["x-request-id"]
    assert "drained 0 responses, ended 1 at shutdown" in stderr


def _wait_until_the_backend_has_the_request(server: Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if httpx.get(server.url + "/_scripted/requests", timeout=5).json():
            return
        time.sleep(0.05)
    raise AssertionError("the request never reached the scripted backend")


def test_with_workers_the_worker_serving_a_stream_ends_it_at_shutdown(tmp_path: Path) -> None:
    script = slow_script(tmp_path, chunk_delay=2.0)
    store = f"sqlite:///{tmp_path / 'responses.db'}"
    with running(
        "serve",
        "--script",
        script,
        "--workers",
        "2",
        "--graceful-timeout",
        "0.5",
        tmp_path=tmp_path,
        env={"STREAM_MW_STORE_URL": store},
    ) as server:
        events = stream_and_signal(server, signal.SIGTERM)
        stderr = exit_cleanly(server)

    (terminal,) = terminal_events(events)
    assert terminal["response"]["error"]["code"] == "server_shutting_down"
    assert "drained 0 responses, ended 1 at shutdown" in stderr


def test_a_second_sigint_ends_the_streams_at_once_with_response_failed(tmp_path: Path) -> None:
    script = slow_script(tmp_path, chunk_delay=2.0)
    # A grace period no test waits out: only the second Ctrl+C can end this one in time.
    with running(
        "serve", "--script", script, "--graceful-timeout", "600", tmp_path=tmp_path
    ) as server:
        events: list[dict[str, Any]] = []
        body = {"model": "m", "input": "hi", "stream": True}
        with httpx.stream("POST", server.url + "/v1/responses", json=body, timeout=60) as answer:
            for line in answer.iter_lines():
                if not line.startswith("data: {"):
                    continue
                events.append(json.loads(line[len("data: ") :]))
                if len(events) == 1:
                    server.popen.send_signal(signal.SIGINT)
                    _wait_for(server, "waiting up to 600 s")
                    server.popen.send_signal(signal.SIGINT)
        stderr = exit_cleanly(server)

    (terminal,) = terminal_events(events)
    assert terminal["response"]["error"]["code"] == "server_shutting_down"
    assert "drained 0 responses, ended 1 at shutdown" in stderr


def _wait_for(server: Process, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in server.stderr():
        assert time.monotonic() < deadline, server.stderr()
        time.sleep(0.05)


def test_a_passed_through_chat_stream_keeps_the_whole_grace_period(tmp_path: Path) -> None:
    # Longer than uvicorn's own wait after the drain (5 s), well within the grace period.
    script = slow_script(tmp_path, chunk_delay=1.0)
    with running("serve", "--script", script, tmp_path=tmp_path) as server:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        lines: list[str] = []
        url = server.url + "/v1/chat/completions"
        with httpx.stream("POST", url, json=body, timeout=60) as answer:
            for line in answer.iter_lines():
                lines.append(line)
                if len(lines) == 1:
                    server.popen.send_signal(signal.SIGTERM)
        exit_cleanly(server)

    assert "data: [DONE]" in lines
    text = "".join(
        json.loads(line[len("data: ") :])["choices"][0]["delta"].get("content") or ""
        for line in lines
        if line.startswith("data: {") and json.loads(line[len("data: ") :])["choices"]
    )
    assert text == WORDS
