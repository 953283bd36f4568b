"""Shared test configuration: the anyio backend used by every async test, offline LiteLLM."""

from __future__ import annotations

import os

import pytest

# LiteLLM downloads a model cost map at import time unless told to use its bundled copy;
# offline that stalls every test module that imports it.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
