"""Wrap LiteLLM's own proxy app, an ASGI app we do not own, with the middleware.

LiteLLM's proxy serves ``/v1/chat/completions`` for 100+ providers, with virtual keys,
budgets and routing. ``ResponsesMiddleware(app)`` adds the Responses API in front of it;
every other LiteLLM route (``/v1/models``, ``/key/generate``, the admin UI) passes through.

``litellm_config.yaml`` next to this file declares one model, ``mock-model``, that answers
with LiteLLM's ``mock_response``, so this runs offline. Put your real ``model_list`` there
(or point ``CONFIG_FILE_PATH`` at your own config) and change the master key.

Run it (needs ``pip install "stream-mw[gateway]" "litellm[proxy]==1.106.2"``)::

    python examples/03_litellm_proxy.py

Then::

    curl -sN http://127.0.0.1:4000/v1/responses -H 'content-type: application/json' \\
      -H 'authorization: Bearer sk-stream-mw-example' \\
      -d '{"model": "mock-model", "input": "Hello!", "stream": true}'
"""

from __future__ import annotations

import os
from pathlib import Path

# Both must be set before LiteLLM is imported: it reads them at import and at start-up.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download
os.environ.setdefault("CONFIG_FILE_PATH", str(Path(__file__).with_name("litellm_config.yaml")))

from litellm.proxy.proxy_server import app as litellm_proxy

from stream_mw import ResponsesMiddleware

#: The proxy's lifespan (which loads the config) passes through the middleware.
app = ResponsesMiddleware(litellm_proxy)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=4000)
