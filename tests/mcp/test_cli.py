"""``stream-mw serve --mcp-server URL``: the flag is the ``mcp_servers`` setting."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from stream_mw.cli import main
from stream_mw.cli._parser import _parser
from stream_mw.cli.serve import _prepare_serve


def test_repeated_mcp_server_flags_become_the_mcp_servers_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAM_MW_MCP_SERVERS", "https://from-the-environment.example/")
    args = _parser().parse_args(
        [
            "serve",
            "--port",
            "0",
            "--mcp-server",
            "https://mcp.example/mcp",
            "--mcp-server",
            "http://127.0.0.1:9000/",
        ]
    )
    _, _, settings, sock = _prepare_serve(args)
    sock.close()
    assert settings.mcp_servers == ("https://mcp.example/mcp", "http://127.0.0.1:9000/")


def test_without_the_flag_the_environment_names_the_mcp_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAM_MW_MCP_SERVERS", "https://a.example/mcp,https://b.example/")
    _, _, settings, sock = _prepare_serve(_parser().parse_args(["serve", "--port", "0"]))
    sock.close()
    assert settings.mcp_servers == ("https://a.example/mcp", "https://b.example/")


def test_an_mcp_server_that_is_not_an_http_url_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--port", "0", "--mcp-server", "ftp://files.example/"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "mcp_servers" in err


def test_mcp_servers_without_the_mcp_package_is_a_one_line_error_naming_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry in sys.modules makes the package unimportable, as if not installed.
    monkeypatch.setitem(sys.modules, "mcp", None)
    assert main(["serve", "--port", "0", "--mcp-server", "https://mcp.example/mcp"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "pip install 'stream-mw[mcp]'" in err


def test_require_mcp_extra_names_the_extra_when_mcp_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream_mw._errors import ConfigurationError
    from stream_mw._mcp._client import require_mcp_extra

    require_mcp_extra()
    monkeypatch.setitem(sys.modules, "mcp", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'stream-mw\[mcp\]'"):
        require_mcp_extra()


def test_the_middleware_with_mcp_servers_refuses_to_start_without_the_mcp_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream_mw import ConfigurationError, ResponsesMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    ResponsesMiddleware(app, mcp_servers=("https://mcp.example/mcp",))
    monkeypatch.setitem(sys.modules, "mcp", None)
    ResponsesMiddleware(app)  # without MCP servers the package is not needed
    with pytest.raises(ConfigurationError, match=r"pip install 'stream-mw\[mcp\]'"):
        ResponsesMiddleware(app, mcp_servers=("https://mcp.example/mcp",))
