"""stream_mw: the OpenAI Responses API, streaming included, for any Chat Completions backend.

Add ``ResponsesMiddleware`` to a Starlette/FastAPI app (or wrap any ASGI app) that serves
``/v1/chat/completions``, and Responses clients (Codex CLI, the OpenAI Agents SDK, the
``openai`` SDK's ``client.responses``) work against it. ``StreamConverter`` is the sans-IO
translator underneath, usable on its own.
"""

from __future__ import annotations

from ._auth import ClientKeys
from ._errors import (
    ConfigurationError,
    InvalidRequestError,
    NotFoundError,
    RequestError,
    RequestTooLargeError,
    StoreUnavailableError,
    StreamMWError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamReportedError,
)
from ._items import translate_completion
from ._middleware import ResponsesMiddleware
from ._observe import ResponseRecord
from ._requests import translate_request
from ._settings import Settings
from ._stream import StreamConverter

__version__ = "0.1.0"

__all__ = [
    "ClientKeys",
    "ConfigurationError",
    "InvalidRequestError",
    "NotFoundError",
    "RequestError",
    "RequestTooLargeError",
    "ResponseRecord",
    "ResponsesMiddleware",
    "Settings",
    "StoreUnavailableError",
    "StreamConverter",
    "StreamMWError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamReportedError",
    "__version__",
    "translate_completion",
    "translate_request",
]

# Show public names as ``stream_mw.X`` in reprs and tracebacks, not ``stream_mw._module.X``.
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, str):
        _obj.__module__ = __name__
del _name, _obj
