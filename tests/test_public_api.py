"""The public surface: everything public is exported once, sorted, and shown as ``stream_mw.X``."""

from __future__ import annotations

import subprocess
import sys
import types

import stream_mw


def test_all_lists_every_public_name_sorted() -> None:
    # Submodules (stream_mw.upstreams, stream_mw.cli) become attributes once imported.
    public = {
        name
        for name in dir(stream_mw)
        if not name.startswith("_") and not isinstance(getattr(stream_mw, name), types.ModuleType)
    }
    public -= {"annotations"}  # from __future__ import
    assert stream_mw.__all__ == sorted(stream_mw.__all__)
    assert set(stream_mw.__all__) - {"__version__"} == public


def test_public_classes_present_themselves_as_stream_mw() -> None:
    for name in stream_mw.__all__:
        obj = getattr(stream_mw, name)
        if isinstance(obj, type):
            assert obj.__module__ == "stream_mw", name


def test_importing_stream_mw_does_not_import_optional_extras() -> None:
    code = (
        "import sys, stream_mw; "
        "heavy = [m for m in ('httpx', 'uvicorn', 'litellm', 'redis', 'asyncio', "
        "'prometheus_client', 'opentelemetry') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(filter(None, out.stdout.strip().split(",")))
    # starlette itself imports asyncio (via anyio); the optional extras must stay out.
    assert loaded <= {"asyncio"}, loaded


def test_a_middleware_without_metrics_or_traces_imports_neither() -> None:
    code = (
        "import sys, stream_mw; "
        "stream_mw.ResponsesMiddleware(lambda scope, receive, send: None); "
        "heavy = [m for m in ('prometheus_client', 'opentelemetry') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
