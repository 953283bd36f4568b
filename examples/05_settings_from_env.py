"""Settings from the environment: ``Settings.from_env()`` reads ``STREAM_MW_*`` variables.

Every ``Settings`` field has a variable: the field name upper-cased with the ``STREAM_MW_``
prefix. Booleans accept true/false, 1/0, yes/no, on/off; ``none`` clears an optional field.
``Settings.from_config(starlette.config.Config(".env"))`` reads the same names from a
``.env`` file. This app serves the embedded demo backend, so it runs with no model.

Run it (needs ``pip install "stream-mw[gateway]"``)::

    STREAM_MW_PATH_PREFIX=/api STREAM_MW_DONE_MARKER=false STREAM_MW_KEEPALIVE_INTERVAL=5 \\
      python examples/05_settings_from_env.py

Then::

    curl -sN http://127.0.0.1:8000/api/responses -H 'content-type: application/json' \\
      -d '{"model": "demo", "input": "Hello!", "stream": true}'
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp

from stream_mw import ResponsesMiddleware, Settings
from stream_mw.upstreams import ScriptedBackend


def build_app(environ: Mapping[str, str] | None = None) -> ASGIApp:
    """The demo backend behind the middleware, configured from ``environ`` (default:
    ``os.environ``). A bad value raises ``ConfigurationError`` naming the variable."""
    settings = Settings.from_env(environ)
    return ResponsesMiddleware(ScriptedBackend.demo(), settings=settings)


app = build_app()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
