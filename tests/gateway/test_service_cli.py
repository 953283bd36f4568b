"""``stream-mw serve`` as a service: keys, workers, logs, CORS and start-up checks.

Every test that serves runs the real command in its own process (uvicorn on loopback) and
talks to it over HTTP, as a deployment would.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from stream_mw.cli import main
from stream_mw.upstreams import ScriptedBackend, Turn
from tests.e2e.conftest import serve
from tests.gateway.helpers import cli_env, run_cli, running

KEYS_FILE = """\
# name after the key: the store tenant
sk-gw-alice alice
sk-gw-bob bob
"""


def keys_file(tmp_path: Path) -> str:
    path = tmp_path / "client-keys"
    path.write_text(KEYS_FILE)
    return str(path)


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- client keys ----------------------------------------------------------------------------


def test_client_keys_guard_the_gateway_and_the_upstream_key_replaces_them(
    tmp_path: Path,
) -> None:
    backend = ScriptedBackend([Turn.text("Hello from upstream.")])
    with (
        serve(backend) as upstream,
        running(
            "serve",
            "--upstream",
            upstream.url + "/v1",
            "--client-keys",
            keys_file(tmp_path),
            tmp_path=tmp_path,
            env={"STREAM_MW_UPSTREAM_API_KEY": "sk-upstream-secret"},
        ) as gateway,
    ):
        assert "Bearer YOUR-CLIENT-KEY" in gateway.banner
        base = gateway.url + "/v1"
        for key in (None, "sk-gw-mallory"):
            headers = {"authorization": f"Bearer {key}"} if key else {}
            for method, path in [
                ("POST", "/responses"),
                ("GET", "/responses/resp_1"),
                ("DELETE", "/responses/resp_1"),
                ("GET", "/responses/resp_1/input_items"),
                ("POST", "/chat/completions"),
            ]:
                response = httpx.request(
                    method, base + path, headers=headers, json={"model": "m", "input": "hi"}
                )
                assert response.status_code == 401, (key, method, path)
                assert response.json()["error"]["code"] == "invalid_api_key"
        assert backend.requests == []

        alice = openai.OpenAI(base_url=base, api_key="sk-gw-alice")
        bob = openai.OpenAI(base_url=base, api_key="sk-gw-bob")
        created = alice.responses.create(model="m", input="hi")
        assert created.output_text == "Hello from upstream."
        assert alice.responses.retrieve(created.id).id == created.id
        with pytest.raises(openai.NotFoundError):
            bob.responses.retrieve(created.id)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base, api_key="sk-wrong").responses.create(model="m", input="hi")
        for probe in ("/health", "/ready"):
            assert httpx.get(gateway.url + probe).status_code == 200

    [chat] = [r for r in backend.requests if r.path.endswith("/chat/completions")]
    assert chat.headers["authorization"] == "Bearer sk-upstream-secret"
    log = gateway.stderr()
    assert "sk-gw-" not in log
    assert "POST /v1/responses 401 error=invalid_api_key" in log


def test_listening_beyond_loopback_with_an_upstream_key_and_no_client_keys_warns(
    tmp_path: Path,
) -> None:
    env = {"STREAM_MW_UPSTREAM_API_KEY": "sk-upstream-secret"}
    args = ("serve", "--upstream", "http://127.0.0.1:9/v1", "--host", "0.0.0.0")
    with running(*args, tmp_path=tmp_path, env=env) as gateway:
        pass
    assert (
        "WARNING stream_mw: listening on 0.0.0.0 with an upstream key and no client keys: "
        "anyone who can reach this port uses the upstream with that key; "
        "pass --client-keys FILE" in gateway.stderr()
    )
    with running(*args, "--client-keys", keys_file(tmp_path), tmp_path=tmp_path, env=env) as quiet:
        pass
    with running(*args[:3], tmp_path=tmp_path, env=env) as on_loopback:
        pass
    assert "no client keys" not in quiet.stderr() + on_loopback.stderr()


def test_an_unreadable_keys_file_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_cli("serve", "--client-keys", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert "cannot read client keys file" in one_line(result)


# --- workers --------------------------------------------------------------------------------


def test_several_workers_with_the_memory_store_refuse_to_start() -> None:
    result = run_cli("serve", "--workers", "2")
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("stream-mw serve: error: --workers 2 cannot share the memory://")
    assert "sqlite:///" in line
    assert "redis://" in line
    assert result.stdout == b""  # no banner: nothing started


# --- logs -----------------------------------------------------------------------------------


def test_json_logs_are_one_object_per_line_with_the_request_id(tmp_path: Path) -> None:
    with running("serve", "--log-format", "json", tmp_path=tmp_path) as gateway:
        created = httpx.post(
            gateway.url + "/v1/responses",
            json={"model": "demo", "input": "hi"},
            headers={"x-request-id": "trace-42"},
        )
        models = httpx.get(gateway.url + "/v1/models")
    assert created.headers["x-request-id"] == "trace-42"
    lines = [json.loads(line) for line in gateway.stderr().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    [request_line] = [e for e in lines if e.get("path") == "/v1/responses"]
    assert request_line["request_id"] == "trace-42"
    assert request_line["model"] == "demo"
    assert request_line["input_tokens"] > 0
    [models_line] = [e for e in lines if e.get("path") == "/v1/models"]
    assert models_line["request_id"] == models.headers["x-request-id"]
    assert any(e["logger"].startswith("uvicorn") for e in lines)


def test_the_log_level_sets_uvicorns_loggers_too(tmp_path: Path) -> None:
    with running("serve", "--log-level", "trace", tmp_path=tmp_path) as tracing:
        httpx.get(tracing.url + "/health")
    assert re.search(r"TRACE uvicorn.error: .*HTTP connection made", tracing.stderr())

    with running("serve", "--log-level", "warning", tmp_path=tmp_path) as quiet:
        httpx.post(quiet.url + "/v1/responses", json={"model": "demo", "input": "hi"})
    assert "INFO" not in quiet.stderr()  # neither uvicorn's start-up lines nor request lines


def test_no_access_log_keeps_the_request_lines_out(tmp_path: Path) -> None:
    with running("serve", "--no-access-log", tmp_path=tmp_path) as gateway:
        response = httpx.post(gateway.url + "/v1/responses", json={"model": "demo", "input": "x"})
        assert response.status_code == 200
        httpx.get(gateway.url + "/v1/models")
    log = gateway.stderr()
    assert "/v1/responses" not in log
    assert "/v1/models" not in log
    assert "Application startup complete" in log


@pytest.mark.parametrize("level", ["critical", "error", "warning", "info", "debug", "trace"])
def test_the_log_level_accepts_uvicorns_words(level: str) -> None:
    from stream_mw.cli._parser import _parser

    assert _parser().parse_args(["serve", "--log-level", level]).log_level == level


# --- CORS -----------------------------------------------------------------------------------


def test_cors_origins_let_a_browser_call_the_gateway(tmp_path: Path) -> None:
    origin = "https://app.example"
    preflight_headers = {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    args = ("serve", "--client-keys", keys_file(tmp_path), "--cors-origins", origin)
    with running(*args, tmp_path=tmp_path) as gateway:
        url = gateway.url + "/v1/responses"
        preflight = httpx.options(url, headers=preflight_headers)
        created = httpx.post(
            url,
            json={"model": "demo", "input": "hi"},
            headers={"origin": origin, "authorization": "Bearer sk-gw-alice"},
        )
        other = httpx.options(url, headers={**preflight_headers, "origin": "https://evil.example"})
    # The preflight carries no credentials and still passes: browsers never send them.
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert created.status_code == 200
    assert created.headers["access-control-allow-origin"] == origin
    assert "x-request-id" in created.headers["access-control-expose-headers"]
    assert other.status_code == 400

    with running("serve", tmp_path=tmp_path) as no_cors:
        response = httpx.options(no_cors.url + "/v1/responses", headers=preflight_headers)
    assert "access-control-allow-origin" not in response.headers


# --- mistakes, still one line ---------------------------------------------------------------

# A None entry in sys.modules is how Python spells "this module cannot be imported".
_WITHOUT_REDIS = """
import sys
sys.modules["redis"] = None
from stream_mw.cli import main
sys.exit(main(["serve", "--port", "0"]))
"""


def test_a_redis_store_without_the_redis_package_is_refused_at_start_up() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_REDIS],
        capture_output=True,
        env=cli_env({"STREAM_MW_STORE_URL": "redis://:hunter2@127.0.0.1:6379/0"}),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    line = one_line(result)
    assert line == (
        "stream-mw serve: error: store_url redis://... needs the redis package: "
        "pip install 'stream-mw[redis]'"
    )


def test_an_unknown_variable_is_a_warning_naming_the_nearest_real_one(tmp_path: Path) -> None:
    env = {"STREAM_MW_KEEPALIVE": "5", "STREAM_MW_UPSTREAM_KEY": "sk-x"}
    with running("serve", "--log-format", "json", tmp_path=tmp_path, env=env) as gateway:
        pass
    messages = [json.loads(line)["message"] for line in gateway.stderr().splitlines()]
    assert (
        "unknown environment variable STREAM_MW_KEEPALIVE is ignored; "
        "did you mean STREAM_MW_KEEPALIVE_INTERVAL?" in messages
    )
    assert (
        "unknown environment variable STREAM_MW_UPSTREAM_KEY is ignored; "
        "did you mean STREAM_MW_UPSTREAM_API_KEY?" in messages
    )


def test_a_warning_before_a_start_up_error_is_printed_before_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_MW_STORE_TTLL", "5")
    assert main(["serve", "--upstream", "notaurl"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "stream-mw serve: warning: unknown environment variable STREAM_MW_STORE_TTLL is "
        "ignored; did you mean STREAM_MW_STORE_TTL?",
        "stream-mw serve: error: invalid upstream URL 'notaurl'; expected an http(s) URL such "
        "as http://localhost:8000/v1",
    ]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_timeouts_are_refused(value: str) -> None:
    result = run_cli("serve", f"--read-timeout={value}")
    assert result.returncode == 2
    assert "expected a positive number" in result.stderr.decode()
    env_result = run_cli("serve", env={"STREAM_MW_KEEPALIVE_INTERVAL": value})
    assert env_result.returncode == 2
    assert "STREAM_MW_KEEPALIVE_INTERVAL must be a finite number" in one_line(env_result)


def test_every_gateway_variable_is_known_to_the_unknown_variable_check() -> None:
    from stream_mw._settings import GATEWAY_VARIABLES
    from stream_mw.cli import _common as cli

    names = {
        value.removeprefix("STREAM_MW_")
        for name, value in vars(cli).items()
        if name.startswith("ENV_") and name != "ENV_PREFIX" and isinstance(value, str)
    }
    names.discard("CLIENT_KEYS")  # a Settings field
    assert names == GATEWAY_VARIABLES


def test_readiness_can_follow_the_upstream_of_the_proxy(tmp_path: Path) -> None:
    env = {"STREAM_MW_READY_CHECKS_UPSTREAM": "true"}
    backend = ScriptedBackend([Turn.text("hi")])
    with serve(backend) as upstream:
        url = upstream.url + "/v1"
        with running("serve", "--upstream", url, tmp_path=tmp_path, env=env) as gateway:
            assert httpx.get(gateway.url + "/ready").status_code == 200
    assert [r.path for r in backend.requests] == ["/v1/models"]
    # The upstream is gone now: the same address refuses connections.
    with running("serve", "--upstream", url, tmp_path=tmp_path, env=env) as gateway:
        ready = httpx.get(gateway.url + "/ready", timeout=30)
        assert httpx.get(gateway.url + "/health").status_code == 200
    assert ready.status_code == 503
    assert ready.json()["error"]["message"] == "Not ready: the upstream does not answer."
    assert "not ready: upstream: GET /v1/models answered 502" in gateway.stderr()


def test_workers_require_the_client_keys_too(tmp_path: Path) -> None:
    env = {"STREAM_MW_STORE_URL": f"sqlite:///{tmp_path}/responses.db"}
    args = ("serve", "--workers", "2", "--client-keys", keys_file(tmp_path))
    with running(*args, tmp_path=tmp_path, env=env) as gateway:
        url = gateway.url + "/v1/responses"
        body = {"model": "demo", "input": "hi"}
        for _ in range(4):
            assert httpx.post(url, json=body, timeout=60).status_code == 401
            authorized = {"authorization": "Bearer sk-gw-bob"}
            assert httpx.post(url, json=body, headers=authorized, timeout=60).status_code == 200
    assert "Traceback" not in gateway.stderr()


def test_loopback_is_recognised_in_every_spelling() -> None:
    from stream_mw.cli.serve import _is_loopback

    assert all(map(_is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(_is_loopback, ["0.0.0.0", "::", "192.168.1.5", "example.com"]))
