"""Several upstreams behind one gateway: ``stream-mw serve --config FILE`` and ``ModelRouter``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp, Receive, Scope, Send

from stream_mw import ConfigurationError
from stream_mw._config_file import load_gateway_file
from stream_mw.cli import GatewayConfig, gateway_settings
from stream_mw.upstreams import RecordedRequest, ScriptedBackend, Turn
from stream_mw.upstreams.proxy import ProxyApp
from stream_mw.upstreams.router import ModelRouter
from tests.e2e.conftest import RunningServer, serve
from tests.gateway.helpers import run_cli, running


def says(text: str, model: str) -> ScriptedBackend:
    return ScriptedBackend(lambda request: Turn.text(text), model=model)


def chat_records(backend: ScriptedBackend) -> list[RecordedRequest]:
    return [r for r in backend.requests if r.path.endswith("/chat/completions")]


def recording_queries(app: ASGIApp, queries: list[bytes]) -> ASGIApp:
    async def record(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            queries.append(scope["query_string"])
        await app(scope, receive, send)

    return record


CONFIG = """
[settings]
keepalive_interval = 7.5

[upstreams.local]
url = "{local}/v1"
models = ["llama-3.1-8b", "qwen/"]

[upstreams.hosted]
url = "{hosted}/v1?api-version=2024-10-21"
api_key_env = "HOSTED_KEY"
models = ["gpt-4o*"]
headers = {{ "X-Team" = "research" }}
"""


@contextmanager
def two_upstreams(
    tmp_path: Path,
) -> Iterator[tuple[Path, ScriptedBackend, ScriptedBackend, RunningServer, list[bytes]]]:
    local = says("from local", "llama-3.1-8b")
    hosted = says("from hosted", "gpt-4o-mini")
    queries: list[bytes] = []
    with serve(local) as up_local, serve(recording_queries(hosted, queries)) as up_hosted:
        path = tmp_path / "gateway.toml"
        path.write_text(CONFIG.format(local=up_local.url, hosted=up_hosted.url))
        yield path, local, hosted, up_hosted, queries


def test_two_upstreams_behind_one_gateway_answer_for_their_own_models(tmp_path: Path) -> None:
    with (
        two_upstreams(tmp_path) as (path, local, hosted, _, queries),
        running(
            "serve", "--config", str(path), tmp_path=tmp_path, env={"HOSTED_KEY": "sk-hosted-1"}
        ) as gateway,
    ):
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-client", max_retries=0)
        answers = {
            model: client.responses.create(model=model, input="hi").output_text
            for model in ("llama-3.1-8b", "qwen/qwen3-8b", "gpt-4o", "gpt-4o-mini")
        }
        listed = [model.id for model in client.models.list()]
        with pytest.raises(openai.NotFoundError) as unknown:
            client.responses.create(model="mistral-large", input="hi")
    assert answers == {
        "llama-3.1-8b": "from local",
        "qwen/qwen3-8b": "from local",  # the "qwen/" prefix
        "gpt-4o": "from hosted",  # the "gpt-4o*" prefix
        "gpt-4o-mini": "from hosted",
    }
    # Each upstream's own list (where routed to it), then the configured exact names.
    assert listed == ["llama-3.1-8b", "gpt-4o-mini"]
    error = unknown.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found"
    assert "mistral-large" in error["message"]
    assert "llama-3.1-8b, qwen/*, gpt-4o*" in error["message"]
    # The key from the environment went to its upstream only, with its headers and query.
    assert {r.headers["authorization"] for r in chat_records(hosted)} == {"Bearer sk-hosted-1"}
    assert {r.headers["x-team"] for r in chat_records(hosted)} == {"research"}
    assert {r.headers["authorization"] for r in chat_records(local)} == {"Bearer sk-client"}
    assert all("x-team" not in r.headers for r in local.requests)
    assert set(queries) == {b"api-version=2024-10-21"}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "[upstreams.a]\nurl = 'http://h/v1'\nmodel = ['m']\n",
            "upstreams.a.model: unknown key; did you mean upstreams.a.models?",
        ),
        (
            "[upstreams.a]\nurl = 'http://h/v1'\nmodels = ['m']\napi_key_env = 'NOT_SET_ANYWHERE'\n",
            "upstreams.a.api_key_env: the environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            "[upstreams.a]\nurl = 'ftp://h/v1'\nmodels = ['m']\n",
            "upstreams.a: invalid upstream URL 'ftp://h/v1'",
        ),
        (
            "[upstreams.a]\nurl = 'http://h/v1'\nmodels = ['m']\nread_timeout = -1\n",
            "upstreams.a.read_timeout: expected a positive number of seconds",
        ),
        (
            "[upstreams.a]\nurl = 'http://h/v1'\nmodels = ['m']\n[upstreams.b]\nurl = 'http://h/v1'\nmodels = ['m']\n",
            "upstreams.b.models: 'm' is already routed to upstreams.a",
        ),
        (
            "[settings]\nkeepalive_intervall = 3\n",
            "settings.keepalive_intervall: unknown key; did you mean settings.keepalive_interval?",
        ),
        (
            "[settings]\ndone_marker = 'yes'\n",
            "settings.done_marker: done_marker must be a boolean",
        ),
        ("[settings]\nstore_url = 'memory://'\n", "upstreams: no upstream is configured"),
        ("[upstreams.a\nurl = 'http://h/v1'\n", "not valid TOML"),
        (
            "[upstreams.a]\nlitellm_model = 'openai/gpt-4o'\nmodels = ['m']\nread_timeout = 9\n",
            "upstreams.a.read_timeout: not an option of a litellm_model upstream; put LiteLLM's",
        ),
        (
            "[upstreams.a]\nurl = 'http://h/v1'\nmodels = ['m']\nproxy = 'socks5://p:1'\n",
            "upstreams.a: unsupported proxy URL in proxy= (scheme 'socks5')",
        ),
    ],
)
def test_a_bad_config_file_exits_2_with_one_line_naming_the_file_and_key(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = run_cli("serve", "--config", str(path), "--port", "0")
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"stream-mw serve: error: {path}: ")
    assert named in lines[0]


def test_a_missing_config_file_and_a_second_upstream_option_are_one_line_errors(
    tmp_path: Path,
) -> None:
    missing = run_cli("serve", "--config", str(tmp_path / "nope.toml"))
    both = run_cli("serve", "--config", "x.toml", "--upstream", "http://h/v1")
    one_key = run_cli("serve", "--config", "x.toml", env={"STREAM_MW_UPSTREAM_API_KEY": "sk-1"})
    assert missing.returncode == both.returncode == one_key.returncode == 2
    assert "cannot read the config file" in missing.stderr.decode()
    assert "--upstream and --config cannot be combined" in both.stderr.decode()
    assert "set api_key_env and litellm_kwargs in its upstreams" in one_key.stderr.decode()


def test_settings_come_from_the_file_and_an_environment_variable_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("sk-gw-1 team-a\n")
    path = tmp_path / "gateway.toml"
    path.write_text(
        "[settings]\nkeepalive_interval = 7.5\ndone_marker = false\nclient_keys = 'keys'\n"
        "store_url = 'none'\n"
        "[upstreams.a]\nurl = 'http://h/v1'\nmodels = ['m']\n"
    )
    monkeypatch.setenv("STREAM_MW_DONE_MARKER", "true")
    settings = gateway_settings(GatewayConfig(config=str(path)))
    assert settings.keepalive_interval == 7.5
    assert settings.done_marker is True
    assert settings.client_keys is not None  # read relative to the file
    assert settings.store_url is None  # "none": TOML has no null


# ModelRouter in process


def router(**extra: Any) -> tuple[ModelRouter, dict[str, ScriptedBackend]]:
    apps = {
        "a": says("from a", "a-model"),
        "b": says("from b", "b-model"),
        "c": says("from c", "c-model"),
    }
    models = {"exact": "a", "team/*": "b", "team/special/": "c", "*": "a"}
    return ModelRouter(apps, models, **extra), apps


def test_an_exact_name_wins_then_the_longest_prefix() -> None:
    routes, _ = router()
    assert routes.route("exact") == "a"
    assert routes.route("team/x") == "b"
    assert routes.route("team/special/x") == "c"
    assert routes.route("anything") == "a"  # "*" alone matches every model
    assert ModelRouter(routes.upstreams, {"exact": "a"}).route("exactly") is None


def test_a_pattern_naming_an_unknown_upstream_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'nope', which is not an upstream"):
        ModelRouter({"a": says("x", "m")}, {"m": "nope"})


async def post(app: ASGIApp, body: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        return await client.post(path, content=body)


@pytest.mark.anyio
async def test_the_request_body_is_replayed_whole_to_the_chosen_upstream() -> None:
    routes, apps = router()
    body = {"model": "team/x", "messages": [{"role": "user", "content": "é" * 10_000}]}
    response = await post(routes, json.dumps(body).encode())
    assert response.status_code == 200
    assert apps["b"].chat_requests == [body]
    assert apps["a"].chat_requests == apps["c"].chat_requests == []


@pytest.mark.anyio
async def test_a_body_without_a_model_is_a_400_and_one_over_the_bound_a_413() -> None:
    routes, _ = router(max_body_bytes=1000)
    no_model = await post(routes, b'{"messages": []}')
    too_big = await post(routes, b'{"model": "exact", "pad": "' + b"x" * 2000 + b'"}')
    assert no_model.status_code == 400
    assert no_model.json()["error"]["param"] == "model"
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "request_too_large"


@pytest.mark.anyio
async def test_get_models_by_id_goes_to_the_models_upstream() -> None:
    routes, apps = router()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=routes), base_url="http://gateway"
    ) as client:
        await client.get("/v1/models/team/special/x")
    assert [r.path for r in apps["c"].requests] == ["/v1/models/team/special/x"]
    assert apps["a"].requests == apps["b"].requests == []


@pytest.mark.anyio
async def test_lifespan_reaches_every_upstream() -> None:
    events: list[str] = []

    def lifespan_app(name: str) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            assert scope["type"] == "lifespan"
            while True:
                message = await receive()
                events.append(f"{name} {message['type']}")
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return

        return app

    async def no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("no lifespan here")

    routes = ModelRouter(
        {"a": lifespan_app("a"), "b": lifespan_app("b"), "c": no_lifespan},
        {"x": "a", "y": "b", "z": "c"},
    )
    async with LifespanManager(routes):
        assert events == ["a lifespan.startup", "b lifespan.startup"]
    assert events[2:] == ["a lifespan.shutdown", "b lifespan.shutdown"]


@pytest.mark.anyio
async def test_an_api_key_header_carries_the_key_instead_of_authorization() -> None:
    backend = says("ok", "gpt-4o")
    with serve(backend) as up:
        async with (
            ProxyApp(up.url + "/v1", api_key="azure-key-123", api_key_header="api-key") as app,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway"
            ) as client,
        ):
            await client.get(
                "/v1/models", headers={"authorization": "Bearer sk-gw-client", "api-key": "x"}
            )
    [request] = backend.requests
    assert request.headers["api-key"] == "azure-key-123"
    assert "authorization" not in request.headers


def test_a_config_giving_an_upstream_a_key_warns_when_listening_beyond_loopback(
    tmp_path: Path,
) -> None:
    keyed = tmp_path / "keyed.toml"
    keyed.write_text("[upstreams.a]\nurl = 'http://127.0.0.1:9/v1'\nmodels = ['*']\n")
    keyless = tmp_path / "keyless.toml"
    keyless.write_text(keyed.read_text())
    with keyed.open("a") as file:
        file.write("api_key_env = 'A_KEY'\n")
    env = {"A_KEY": "sk-upstream-secret"}
    with running(
        "serve", "--config", str(keyed), "--host", "0.0.0.0", tmp_path=tmp_path, env=env
    ) as warned:
        pass
    with running(
        "serve", "--config", str(keyless), "--host", "0.0.0.0", tmp_path=tmp_path, env=env
    ) as quiet:
        pass
    assert "with an upstream key and no client keys" in warned.stderr()
    assert "no client keys" not in quiet.stderr()


@pytest.mark.anyio
async def test_models_leave_out_an_upstream_that_fails_and_are_a_502_when_none_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("down")

    def models_of(routes: ModelRouter) -> Any:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=routes), base_url="http://g")

    partly = ModelRouter({"up": says("x", "m1"), "down": broken}, {"m*": "up", "n": "down"})
    nothing = ModelRouter({"down": broken}, {"n": "down"})
    async with models_of(partly) as client:
        listed = (await client.get("/v1/models")).json()
    async with models_of(nothing) as client:
        failed = await client.get("/v1/models")
    assert [m["id"] for m in listed["data"]] == ["m1", "n"]
    assert "upstream 'down' failed (RuntimeError: down)" in caplog.text
    assert failed.status_code == 502
    assert failed.json()["error"]["code"] == "upstream_unreachable"


def test_the_readme_config_example_is_a_valid_config(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    production = readme.split("\n## Running in production\n", 1)[1].split("\n## ", 1)[0]
    [example] = re.findall(r"```toml\n(.*?)```", production, re.DOTALL)
    (tmp_path / "gateway.toml").write_text(example)
    (tmp_path / "client-keys").write_text("sk-gw-1 team-a\n")
    env = {"AZURE_OPENAI_API_KEY": "azure-key", "ANTHROPIC_API_KEY": "sk-ant"}
    loaded = load_gateway_file(str(tmp_path / "gateway.toml"), env)
    assert [spec.name for spec in loaded.upstreams] == ["local", "azure", "claude"]
    assert loaded.upstreams[1].api_key == "azure-key"
    assert loaded.settings["client_keys"] is not None
