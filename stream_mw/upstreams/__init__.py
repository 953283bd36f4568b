"""Ready-made ASGI apps that serve ``/v1/chat/completions``, to put behind the middleware.

- ``ProxyApp`` (``stream_mw.upstreams.proxy``, extra ``stream-mw[gateway]``): a streaming httpx
  reverse proxy to any OpenAI-compatible base URL (vLLM, Ollama, llama.cpp, LM Studio, ...).
- ``LiteLLMApp`` (``stream_mw.upstreams.litellm_app``, extra ``stream-mw[litellm]``): any of
  LiteLLM's providers through ``litellm.acompletion``.
- ``ModelRouter`` (``stream_mw.upstreams.router``, no extra): several of these behind one
  gateway, each request sent to the app its model is routed to.
- ``ScriptedBackend`` and ``Turn`` (``stream_mw.upstreams.scripted``, no extra): replays
  scripted turns as real SSE; the gateway's demo backend and a test double.

Names are loaded on first use, so importing this package imports neither httpx nor litellm.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .litellm_app import LiteLLMApp
    from .proxy import ProxyApp
    from .router import ModelRouter
    from .scripted import RecordedRequest, ScriptedBackend, ToolCall, Turn, demo_reply, load_script

__all__ = [
    "LiteLLMApp",
    "ModelRouter",
    "ProxyApp",
    "RecordedRequest",
    "ScriptedBackend",
    "ToolCall",
    "Turn",
    "demo_reply",
    "load_script",
]

_SUBMODULE = {
    "LiteLLMApp": "litellm_app",
    "ModelRouter": "router",
    "ProxyApp": "proxy",
    "RecordedRequest": "scripted",
    "ScriptedBackend": "scripted",
    "ToolCall": "scripted",
    "Turn": "scripted",
    "demo_reply": "scripted",
    "load_script": "scripted",
}


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{submodule}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
