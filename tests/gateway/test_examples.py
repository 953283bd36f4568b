"""Every example runs and does what its docstring says (03, LiteLLM's proxy: tests/e2e)."""

from __future__ import annotations

import importlib.util
import re
import socket
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import openai
import pytest

from stream_mw import ConfigurationError
from stream_mw.upstreams import ScriptedBackend, Turn
from tests.e2e.conftest import serve
from tests.gateway.helpers import running

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NUMBERED = sorted(EXAMPLES.glob("[0-9][0-9]_*.py"))


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (a file name that is not a valid module name)."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def sdk(app: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://example/v1",
        api_key="x",
        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)),
        _strict_response_validation=True,
    )


def test_the_examples_are_numbered_and_all_in_the_readme_table() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert [p.name[:2] for p in NUMBERED] == ["01", "02", "03", "04", "05", "06"]
    for path in NUMBERED:
        assert f"[`{path.name}`]({path.name})" in readme, path.name
        source = path.read_text(encoding="utf-8")
        assert re.search(r"curl -sN? http://127\.0\.0\.1:\d+/", source), path.name
        assert 'if __name__ == "__main__":' in source, path.name


@pytest.mark.anyio
async def test_01_the_starlette_app_answers_responses_and_still_serves_chat() -> None:
    app = load_example("01_starlette_app").app
    async with sdk(app) as client:
        stream = await client.responses.create(model="echo", input="Hello there!", stream=True)
        kinds = [event.type async for event in stream]
        answer = await client.responses.create(model="echo", input="Hello there!")
        chat = await client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "direct"}]
        )
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 4
    assert answer.output_text == "You said: Hello there!"
    assert answer.usage is not None
    assert answer.usage.output_tokens == 4
    assert chat.choices[0].message.content == "You said: direct"


@pytest.mark.anyio
async def test_02_the_fastapi_app_streams_reasoning_as_summaries() -> None:
    app = load_example("02_fastapi_app").app
    async with sdk(app) as client:
        answer = await client.responses.create(model="shout", input="make me loud")
        stream = await client.responses.create(model="shout", input="make me loud", stream=True)
        kinds = [event.type async for event in stream]
    assert answer.output_text == "MAKE ME LOUD!"
    reasoning = answer.output[0]
    assert reasoning.type == "reasoning"
    assert [s.text for s in reasoning.summary] == ["Shout it."]
    assert "response.reasoning_summary_text.delta" in kinds
    assert kinds[-1] == "response.completed"


@pytest.mark.anyio
async def test_04_the_programmatic_gateway_proxies_to_a_chat_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = load_example("04_gateway_vllm_ollama")
    backend = ScriptedBackend([Turn.text("The sky scatters blue light.")])
    monkeypatch.setenv("UPSTREAM_API_KEY", "sk-upstream")
    with serve(backend) as upstream:
        app = example.build_app(upstream.url + "/v1")
        # Served by uvicorn with its lifespan, as `python examples/04_...py` runs it.
        with serve(app) as gateway:
            client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="client")
            async with client:
                stream = await client.responses.create(
                    model="llama3.2", input="Why is the sky blue?", stream=True
                )
                text = "".join(
                    [e.delta async for e in stream if e.type == "response.output_text.delta"]
                )
    assert text == "The sky scatters blue light."
    [request] = backend.requests
    assert request.headers["authorization"] == "Bearer sk-upstream"
    assert request.body["model"] == "llama3.2"


@pytest.mark.anyio
async def test_05_settings_come_from_the_environment() -> None:
    example = load_example("05_settings_from_env")
    app = example.build_app({"STREAM_MW_PATH_PREFIX": "/api", "STREAM_MW_DONE_MARKER": "false"})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
        moved = await client.post(
            "/api/responses", json={"model": "demo", "input": "Hello!", "stream": True}
        )
        old_path = await client.post("/v1/responses", json={"model": "demo", "input": "Hello!"})
    assert "event: response.completed" in moved.text
    assert "[DONE]" not in moved.text
    assert old_path.status_code == 404  # now an ordinary path, passed to the app

    with pytest.raises(ConfigurationError, match="STREAM_MW_DONE_MARKER"):
        example.build_app({"STREAM_MW_DONE_MARKER": "maybe"})


def test_the_gateway_config_routes_each_model_to_its_upstream(tmp_path: Path) -> None:
    """``examples/gateway.toml`` as written, but for the ports of its stand-in upstreams."""
    local = ScriptedBackend(lambda request: Turn.text("local"), model="llama-3.1-8b-instruct")
    hosted = ScriptedBackend(lambda request: Turn.text("hosted"), model="gpt-4o")
    text = (EXAMPLES / "gateway.toml").read_text(encoding="utf-8")
    with serve(local) as up_local, serve(hosted) as up_hosted:
        config = tmp_path / "gateway.toml"
        config.write_text(
            text.replace("127.0.0.1:9101", f"127.0.0.1:{up_local.port}").replace(
                "127.0.0.1:9102", f"127.0.0.1:{up_hosted.port}"
            )
        )
        with running(
            "serve", "--config", str(config), tmp_path=tmp_path, env={"HOSTED_API_KEY": "sk-h"}
        ) as gateway:
            client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="client")
            answers = [
                client.responses.create(model=model, input="Hello!").output_text
                for model in ("qwen/qwen3-8b", "llama-3.1-8b-instruct", "gpt-4o-mini")
            ]
            listed = {model.id for model in client.models.list()}
    assert answers == ["local", "local", "hosted"]
    assert listed == {"llama-3.1-8b-instruct", "gpt-4o"}
    assert hosted.requests[0].headers["authorization"] == "Bearer sk-h"
    assert hosted.requests[0].headers["x-team"] == "research"


@pytest.mark.anyio
async def test_06_the_gateway_runs_the_mcp_tool_the_example_serves_itself() -> None:
    pytest.importorskip("mcp.server.mcpserver", reason="the example is written for mcp 2.x")
    example = load_example("06_remote_mcp_tools")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tool = {
        "type": "mcp",
        "server_label": "demo",
        "server_url": f"http://127.0.0.1:{port}/tools/mcp",
        "require_approval": "never",
    }
    # Served by uvicorn with its lifespan (the MCP server's sessions), as `python` runs it.
    with serve(example.build_app(port), port=port) as gateway:
        client = openai.AsyncOpenAI(
            base_url=gateway.url + "/v1", api_key="x", _strict_response_validation=True
        )
        async with client:
            stream = await client.responses.create(
                model="demo",
                input="Use demo__word_count on `the quick brown fox`",
                tools=[tool],  # type: ignore[list-item]
                stream=True,
            )
            events = [event async for event in stream]
    final = events[-1].response
    assert events[-1].type == "response.completed"
    assert [item.type for item in final.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert final.output[1].output == "4"
    assert "4" in final.output_text
