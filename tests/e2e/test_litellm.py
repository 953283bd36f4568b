"""LiteLLM's own proxy app, wrapped by ResponsesMiddleware, driven by today's openai SDK.

The wrapped app is ``examples/03_litellm_proxy.py`` exactly: the proxy configured by
``examples/litellm_config.yaml`` (one offline ``mock_response`` model), served by uvicorn
with its lifespan. ``litellm[proxy]`` installs from the registry only up to 1.106.x, which
needs openai 2, while this suite runs openai 3: so the proxy runs as a separate process from a
virtual environment of its own (made once, in a cache folder), with this checkout's
``stream_mw`` on its path, and the tests drive it over loopback from this one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.venvs import cache_dir, cached_venv

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "03_litellm_proxy.py"
MASTER_KEY = "sk-stream-mw-example"
MOCK_ANSWER = "Hello from LiteLLM's proxy, through stream-mw."
#: The newest LiteLLM whose proxy extra the registry can install (see the module docstring).
PROXY_REQUIREMENTS = ("litellm[proxy]==1.106.2", "uvicorn>=0.30", "orjson>=3.9", "anyio>=4.4")

pytestmark = pytest.mark.separate_venv


def _venv_dir() -> Path:
    configured = os.environ.get("LITELLM_PROXY_VENV")
    if configured:
        return Path(configured)
    tag = PROXY_REQUIREMENTS[0].split("==")[1]
    return cache_dir() / f"litellm-proxy-{tag}-py{sys.version_info[0]}{sys.version_info[1]}"


@pytest.fixture(scope="module")
def proxy_python() -> Path:
    """A Python with ``litellm[proxy]`` installed, in a virtual environment made on first use."""
    return cached_venv(_venv_dir(), PROXY_REQUIREMENTS, "litellm[proxy]")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def gateway(proxy_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        # This checkout's stream_mw, not an installed one.
        "PYTHONPATH": str(ROOT),
        "CONFIG_FILE_PATH": str(EXAMPLE.with_name("litellm_config.yaml")),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    for name in ("LITELLM_MASTER_KEY", "DATABASE_URL"):
        env.pop(name, None)
    log = tmp_path_factory.mktemp("litellm-proxy") / "server.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [
                str(proxy_python),
                "-m",
                "uvicorn",
                "--app-dir",
                str(EXAMPLE.parent),
                f"{EXAMPLE.stem}:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        # Importing litellm.proxy takes several seconds; its liveness route answers once the
        # lifespan (which loads the config) has run.
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(url + "/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def client(gateway: str, key: str = MASTER_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=gateway + "/v1", api_key=key, _strict_response_validation=True
    )


@pytest.mark.anyio
async def test_a_streamed_response_from_litellms_proxy(gateway: str) -> None:
    async with client(gateway) as sdk:
        stream = await sdk.responses.create(model="mock-model", input="Hello!", stream=True)
        events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == MOCK_ANSWER
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.output_text == MOCK_ANSWER
    assert completed.usage is not None
    assert completed.usage.total_tokens > 0


@pytest.mark.anyio
async def test_a_non_streamed_response_from_litellms_proxy(gateway: str) -> None:
    async with client(gateway) as sdk:
        response = await sdk.responses.create(
            model="mock-model", input="Hello!", instructions="Be brief."
        )
    assert response.status == "completed"
    assert response.output_text == MOCK_ANSWER
    assert response.instructions == "Be brief."


@pytest.mark.anyio
async def test_litellms_key_check_still_applies(gateway: str) -> None:
    async with client(gateway, key="sk-wrong") as sdk:
        with pytest.raises(openai.APIStatusError) as refused:
            await sdk.responses.create(model="mock-model", input="Hello!")
    # Without a database LiteLLM cannot look virtual keys up, and says so; either way its
    # refusal reaches the client with LiteLLM's status and message.
    assert refused.value.status_code in (400, 401)
    assert MOCK_ANSWER not in str(refused.value.body)


@pytest.mark.anyio
async def test_litellms_other_routes_pass_through(gateway: str) -> None:
    async with client(gateway) as sdk:
        models = await sdk.models.list()
        chat = await sdk.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert "mock-model" in [m.id for m in models.data]
    assert chat.choices[0].message.content == MOCK_ANSWER
