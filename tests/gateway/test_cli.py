"""The ``stream-mw`` command: help a newcomer can follow, one-line errors, a working gateway."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from stream_mw import Settings
from stream_mw.cli import GatewayConfig, build_gateway, main
from tests.e2e.conftest import serve
from tests.faults.harness import parse_events
from tests.gateway.helpers import breaking_upstream, cli_env, run_cli, running, write_script

REQUEST_LOG = re.compile(
    r"POST /v1/responses 200 response=resp_\w+ model=(\S+) status=(\w+) stream=(\w+) "
    r"input_tokens=(\d+) output_tokens=(\d+) duration_ms=[\d.]+ error=None"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for word in ("serve", "convert", "scripted", "stream-mw serve"):
        assert word in out


def test_serve_help_shows_examples_for_each_kind_of_upstream(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for example in (
        "stream-mw serve --upstream http://localhost:8000/v1 --port 9000  # vLLM",
        "stream-mw serve --upstream http://localhost:11434/v1   # Ollama",
        "--litellm-model",
        "--script turns.json",
        "STREAM_MW_UPSTREAM_API_KEY",
        'model_providers.mw.wire_api="responses"',
    ):
        assert example in out, example


def test_convert_help_shows_a_pipeline(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "stream-mw convert < chat.sse > responses.sse" in capsys.readouterr().out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().err


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_a_bad_upstream_url_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--upstream", "notaurl"]) == 2
    line = one_line_error(capsys)
    assert line.startswith("stream-mw serve: error: invalid upstream URL 'notaurl'")
    assert "http://localhost:8000/v1" in line


def test_a_taken_port_is_a_one_line_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    assert one_line_error(capsys) == (
        f"stream-mw serve: error: port {port} on 127.0.0.1 is already in use; "
        "pick another with --port"
    )


def test_two_upstreams_at_once_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = write_script(tmp_path / "t.json", [{"text": "hi"}])
    assert main(["serve", "--upstream", "http://h/v1", "--script", str(script)]) == 2
    assert "--upstream and --script cannot be combined" in one_line_error(capsys)


def test_a_missing_script_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["serve", "--script", str(tmp_path / "nope.json")]) == 2
    assert "cannot read script" in one_line_error(capsys)


def test_a_bad_setting_in_the_environment_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_MW_KEEPALIVE_INTERVAL", "soon")
    assert main(["serve"]) == 2
    assert "STREAM_MW_KEEPALIVE_INTERVAL" in one_line_error(capsys)


def test_bad_litellm_kwargs_are_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--litellm-model", "openai/m", "--litellm-kwargs", "{oops"]) == 2
    assert "--litellm-kwargs must be a JSON object" in one_line_error(capsys)


def test_an_impossible_port_is_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", "70000"])
    assert exit_.value.code == 2
    assert "expected a port between 0 and 65535" in capsys.readouterr().err


def test_the_gateway_configuration_round_trips_through_the_environment() -> None:
    config = GatewayConfig(
        upstream="http://h:1/v1",
        api_key="sk-x",
        litellm_kwargs={"a": 1},
        connect_timeout=2.5,
        read_timeout=30.0,
    )
    assert GatewayConfig.from_env(config.to_env()) == config
    assert "sk-x" not in repr(config)
    # What --workers passes to each worker: the config file and the CA bundle too.
    routed = GatewayConfig(config="gateway.toml", ca_bundle="/etc/ssl/internal-ca.pem")
    assert GatewayConfig.from_env(routed.to_env()) == routed


def test_the_installed_entry_point_exits_2_without_a_traceback() -> None:
    result = run_cli("serve", "--upstream", "notaurl")
    assert result.returncode == 2
    assert b"Traceback" not in result.stderr
    assert result.stderr.decode().count("\n") == 1


def banner_snippet(banner: str, first_line: str) -> str:
    """The blank-line-separated block of the banner that starts with ``first_line``."""
    [block] = [b for b in banner.split("\n\n") if b.startswith(first_line)]
    return block + "\n"


def run_pasted(snippet: str, env: dict[str, str] | None = None) -> str:
    """Run ``snippet`` as bash reads a paste, with this interpreter as ``python``; its output.

    A heredoc whose end marker never comes would make bash wait for input: stdin is closed,
    so such a snippet fails (with bash's warning) instead of hanging.
    """
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", snippet],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env({"PATH": path, **(env or {})}),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr
    return result.stdout


def test_the_demo_gateway_answers_the_snippets_it_prints(tmp_path: Path) -> None:
    with running("serve", tmp_path=tmp_path) as gateway:
        banner = gateway.banner
        assert "embedded demo backend" in banner
        assert "pip install openai" in banner

        # Each snippet pasted into a shell as printed.
        curl = run_pasted(banner_snippet(banner, "curl "))
        assert "event: response.output_text.delta" in curl
        assert "event: response.completed" in curl
        python = run_pasted(banner_snippet(banner, "python - <<'EOF'"))
        assert "Hello!" in python
        assert "demo backend" in python

        httpx.get(f"{gateway.url}/v1/models").raise_for_status()
    log = gateway.stderr()
    lines = REQUEST_LOG.findall(log)
    assert [(m, s, st) for m, s, st, _, _ in lines] == [
        ("demo", "completed", "True"),
        ("demo", "completed", "False"),
    ]
    assert re.search(r"GET /v1/models 200 duration_ms=[\d.]+", log)
    assert "Traceback" not in log


def test_an_unreachable_upstream_is_a_502_naming_it_and_the_gateway_keeps_running(
    tmp_path: Path,
) -> None:
    port = free_port()
    upstream = f"http://127.0.0.1:{port}/v1"
    with running(
        "serve",
        "--upstream",
        upstream,
        tmp_path=tmp_path,
        env={"STREAM_MW_UPSTREAM_API_KEY": "sk-hidden"},
    ) as gateway:
        for stream in (False, True, False):
            response = httpx.post(
                f"{gateway.url}/v1/responses",
                json={"model": "m", "input": "hi", "stream": stream},
                timeout=30,
            )
            assert response.status_code == 502, response.text
            assert f"{upstream}/chat/completions" in response.json()["error"]["message"]
            assert gateway.popen.poll() is None
        assert f"proxy to {upstream}" in gateway.banner
    log = gateway.stderr()
    assert "Traceback" not in log
    assert "sk-hidden" not in log
    assert log.count(f"upstream {upstream}/chat/completions could not be reached") == 3


def test_the_gateway_proxies_to_a_separate_chat_server(tmp_path: Path) -> None:
    script = write_script(tmp_path / "turns.json", [{"text": "Proxied answer.", "reasoning": "r"}])
    with (
        running("scripted", "--script", str(script), tmp_path=tmp_path) as upstream,
        running("serve", "--upstream", upstream.url + "/v1", tmp_path=tmp_path) as gateway,
    ):
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key")
        response = client.responses.create(model="m", input="hi", instructions="Be brief.")
        assert response.output_text == "Proxied answer."
        assert [item.type for item in response.output] == ["reasoning", "message"]
        recorded = httpx.get(upstream.url + "/_scripted/requests").json()
    [chat] = recorded
    assert chat["path"] == "/v1/chat/completions"
    assert chat["headers"]["authorization"] == "***"
    assert chat["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


def test_workers_get_their_configuration_from_the_environment(tmp_path: Path) -> None:
    script = write_script(tmp_path / "turns.json", [{"text": "From a worker."}])
    env = {"STREAM_MW_SCRIPT": str(script), "STREAM_MW_STORE_URL": f"sqlite:///{tmp_path}/r.db"}
    with running("serve", "--workers", "2", tmp_path=tmp_path, env=env) as gateway:
        assert "2 workers" in gateway.banner
        for _ in range(3):
            response = httpx.post(
                f"{gateway.url}/v1/responses", json={"model": "m", "input": "hi"}, timeout=60
            )
            assert response.status_code == 200, response.text
            assert response.json()["output"][0]["content"][0]["text"] == "From a worker."
    assert "Traceback" not in gateway.stderr()


def test_the_cli_and_the_upstreams_package_import_no_optional_extra() -> None:
    code = (
        "import sys, stream_mw.cli, stream_mw.upstreams, stream_mw.upstreams.scripted; "
        "from stream_mw.upstreams import ScriptedBackend, Turn; "
        "print(','.join(m for m in ('httpx', 'uvicorn', 'litellm') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True
    )
    assert result.stdout.strip() == ""


@pytest.mark.anyio
async def test_an_upstream_breaking_off_mid_stream_is_one_log_line_not_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hal"}, "finish_reason": None}]}
    breaks_off = breaking_upstream(f"data: {json.dumps(chunk)}\n\n".encode())

    with serve(breaks_off) as upstream:
        app = build_gateway(GatewayConfig(upstream=upstream.url + "/v1"), Settings())
        # raise_app_exceptions stays on: the gateway must not raise (no server traceback).
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.post(
                "/v1/responses", json={"model": "m", "input": "hi", "stream": True}
            )
    assert "event: response.failed" in response.text
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    [warning] = warnings
    # RemoteProtocolError or ReadError, depending on where the read was when the cut came.
    assert warning.startswith(
        f"upstream {upstream.url}/v1/chat/completions broke off the response: "
    )
    # The gateway lost the upstream; the upstream reported nothing.
    failed = [e for e in parse_events(response.content) if e["type"] == "response.failed"]
    error = failed[0]["response"]["error"]
    assert error["message"] == f"the gateway failed to read the upstream's response: {warning}"
    assert error["code"] == "server_error"
