"""llama-index's ``OpenAIResponses`` against the middleware, streamed.

llama-index-llms-openai 0.8.3 needs openai 2, which the suite's environment (openai 3) cannot
hold, so it runs from the interpreter ``STREAM_MW_LLAMA_INDEX_PYTHON`` names (a virtual
environment with ``llama-index-llms-openai==0.8.3``); skipped with a reason when unset.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.clients import REASONING, SCENARIOS, ClientServer, client_server
from tests.e2e.reasoning_table import LLAMA_INDEX_MODEL, LLAMA_INDEX_PROBE

PYTHON = os.environ.get("STREAM_MW_LLAMA_INDEX_PYTHON")

pytestmark = pytest.mark.skipif(
    not PYTHON,
    reason="set STREAM_MW_LLAMA_INDEX_PYTHON to a Python with llama-index-llms-openai==0.8.3",
)


@pytest.fixture(scope="module")
def server() -> Iterator[ClientServer]:
    # It refuses model names it does not know, so the reasoning turn answers to a known one.
    SCENARIOS[LLAMA_INDEX_MODEL] = SCENARIOS["reasoning"]
    try:
        with client_server() as running:
            yield running
    finally:
        del SCENARIOS[LLAMA_INDEX_MODEL]


def test_streamed_reasoning_is_shown_with_the_default_settings(server: ClientServer) -> None:
    assert PYTHON is not None
    result = subprocess.run(
        [PYTHON, "-c", LLAMA_INDEX_PROBE, server.base_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == REASONING
    [checked] = server.streams()
    assert checked.status == "completed"
