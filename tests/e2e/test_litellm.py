"""LiteLLM's own proxy app, wrapped by ResponsesMiddleware, driven by the openai SDK over HTTP.

This is ``examples/03_litellm_proxy.py`` exactly: the proxy configured by
``examples/litellm_config.yaml`` (one offline ``mock_response`` model), served by uvicorn
with its lifespan. Importing ``litellm.proxy`` takes several seconds, so it happens once,
here, for the whole module.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import openai
import pytest

from tests.e2e.conftest import RunningServer, serve

# Before LiteLLM is first imported: no attempt to download its cost map.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
pytest.importorskip("litellm.proxy.proxy_server", reason="needs litellm[proxy]")

pytestmark = pytest.mark.filterwarnings(
    # LiteLLM's own pydantic models and startup code warn about themselves; not ours to fix.
    "ignore::UserWarning",
    "ignore::DeprecationWarning",
    "ignore::PendingDeprecationWarning",
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "03_litellm_proxy.py"
MASTER_KEY = "sk-stream-mw-example"
MOCK_ANSWER = "Hello from LiteLLM's proxy, through stream-mw."


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_03_litellm_proxy", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gateway() -> Iterator[RunningServer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONFIG_FILE_PATH", str(EXAMPLE.with_name("litellm_config.yaml")))
        patch.delenv("LITELLM_MASTER_KEY", raising=False)
        patch.delenv("DATABASE_URL", raising=False)
        example = load_example()
        with serve(example.app, lifespan="on") as server:
            yield server


def client(gateway: RunningServer, key: str = MASTER_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=gateway.url + "/v1", api_key=key, _strict_response_validation=True
    )


@pytest.mark.anyio
async def test_a_streamed_response_from_litellms_proxy(gateway: RunningServer) -> None:
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
async def test_a_non_streamed_response_from_litellms_proxy(gateway: RunningServer) -> None:
    async with client(gateway) as sdk:
        response = await sdk.responses.create(
            model="mock-model", input="Hello!", instructions="Be brief."
        )
    assert response.status == "completed"
    assert response.output_text == MOCK_ANSWER
    assert response.instructions == "Be brief."


@pytest.mark.anyio
async def test_litellms_key_check_still_applies(gateway: RunningServer) -> None:
    async with client(gateway, key="sk-wrong") as sdk:
        with pytest.raises(openai.APIStatusError) as refused:
            await sdk.responses.create(model="mock-model", input="Hello!")
    # Without a database LiteLLM cannot look virtual keys up, and says so; either way its
    # refusal reaches the client with LiteLLM's status and message.
    assert refused.value.status_code in (400, 401)
    assert MOCK_ANSWER not in str(refused.value.body)


@pytest.mark.anyio
async def test_litellms_other_routes_pass_through(gateway: RunningServer) -> None:
    async with client(gateway) as sdk:
        models = await sdk.models.list()
        chat = await sdk.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert "mock-model" in [m.id for m in models.data]
    assert chat.choices[0].message.content == MOCK_ANSWER
