"""``stream-mw serve --metrics``: Prometheus text on ``/metrics`` after real requests.

Each test runs the real command (uvicorn on loopback), sends requests with the openai SDK's
wire format over httpx, and reads ``/metrics`` with ``prometheus_client``'s own parser.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.helpers import Process, cli_env, running, write_script

parser = pytest.importorskip("prometheus_client.parser")

# The scripted backend reports no cached tokens: tests/middleware/test_metrics.py counts them.
TURN = {
    "text": "Metered words.",
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "reasoning_tokens": 3},
}


def samples(server: Process, **headers: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = httpx.get(server.url + "/metrics", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parser.text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def make_requests(server: Process, count: int) -> None:
    for n in range(count):
        # A connection each, so that under --workers the workers share them.
        body = {"model": "m", "input": "hi", "stream": n % 2 == 0}
        answer = httpx.post(server.url + "/v1/responses", json=body, timeout=60)
        assert answer.status_code == 200, answer.text


def check_counts(found: dict[Any, float], requests: int, streams: int) -> None:
    route = "POST /v1/responses"
    assert value(found, "stream_mw_requests_total", route=route, status="200", model="m") == (
        requests
    )
    for kind, per_request in (("input", 11), ("output", 7), ("reasoning", 3)):
        assert value(found, "stream_mw_tokens_total", kind=kind, model="m") == (
            per_request * requests
        )
    assert (
        value(found, "stream_mw_response_duration_seconds_count", model="m", status="completed")
        == requests
    )
    assert value(found, "stream_mw_time_to_first_token_seconds_count", model="m") == streams
    assert (
        value(
            found,
            "stream_mw_time_to_first_token_seconds_bucket",
            model="m",
            le="+Inf",
        )
        == streams
    )
    assert value(found, "stream_mw_streams_open") == 0


def test_metrics_count_requests_tokens_and_times_after_a_few_requests(tmp_path: Path) -> None:
    script = write_script(tmp_path / "turns.json", [TURN])
    with running("serve", "--script", str(script), "--metrics", tmp_path=tmp_path) as server:
        assert "/metrics" in server.banner
        make_requests(server, 4)
        found = samples(server)

    check_counts(found, requests=4, streams=2)


def test_metrics_under_two_workers_add_up_every_workers_requests(tmp_path: Path) -> None:
    script = write_script(tmp_path / "turns.json", [TURN])
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"STREAM_MW_STORE_URL": f"sqlite:///{tmp_path / 'responses.db'}", "TMPDIR": str(temp)}
    with running(
        "serve", "--script", str(script), "--metrics", "--workers", "2", tmp_path=tmp_path, env=env
    ) as server:
        make_requests(server, 10)
        # Every scrape, whichever worker answers it, has every worker's counts.
        scrapes = [samples(server) for _ in range(4)]
        assert list(temp.iterdir()), "no multiprocess directory was made"
        server.popen.terminate()
        assert server.popen.wait(60) == 0

    for found in scrapes:
        check_counts(found, requests=10, streams=5)
    # The directory the command made for the workers' files is gone with it.
    assert not list(temp.iterdir())


def test_metrics_need_no_client_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("sk-gw-only\n")
    with running("serve", "--metrics", "--client-keys", str(keys), tmp_path=tmp_path) as server:
        found = samples(server)
        refused = httpx.post(server.url + "/v1/responses", json={"model": "m", "input": "hi"})

    assert refused.status_code == 401
    assert value(found, "stream_mw_streams_open") == 0


def test_without_metrics_the_gateway_serves_no_metrics(tmp_path: Path) -> None:
    with running("serve", tmp_path=tmp_path) as server:
        answer = httpx.get(server.url + "/metrics", timeout=30)

    assert answer.status_code == 404


def test_metrics_without_prometheus_client_is_a_one_line_error_at_start_up() -> None:
    # The package hidden as if not installed: None in sys.modules fails its import.
    code = (
        "import sys; sys.modules['prometheus_client'] = None; "
        "from stream_mw.cli import main; sys.exit(main(['serve', '--metrics', '--port', '0']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=cli_env(), timeout=60, check=False
    )

    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        "stream-mw serve: error: metrics needs prometheus_client: pip install 'stream-mw[metrics]'"
    )
