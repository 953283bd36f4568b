"""The network facts users depend on: forward proxies, CA bundles and upstream query strings.

The proxy is a real one on loopback (``tests/forward_proxy.py``) that alone knows the made-up
host ``upstream.test``: a request that reaches an upstream by that name went through it.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from stream_mw import ConfigurationError
from stream_mw.upstreams import ProxyApp, ScriptedBackend, Turn
from stream_mw.upstreams._proxies import choose_proxy, no_proxy_matches
from tests.e2e.conftest import RunningServer, serve
from tests.forward_proxy import forward_proxy
from tests.gateway.helpers import running
from tests.tls import self_signed

HOSTS = {"upstream.test": "127.0.0.1"}


@pytest.fixture(params=["asyncio", "uvloop", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    # The transport moves bytes one way on asyncio (and uvloop), another on other backends.
    if request.param == "trio":
        return ("trio", {})
    return ("asyncio", {"use_uvloop": request.param == "uvloop"})


def backend() -> ScriptedBackend:
    return ScriptedBackend(lambda request: Turn.text("through the proxy"))


@contextmanager
def tls_upstream(tmp_path: Path, app: ASGIApp) -> Iterator[tuple[RunningServer, list[str]]]:
    """``app`` over TLS with a certificate for ``upstream.test``; yields the server names
    (SNI) clients asked for."""
    certificate, key = self_signed(tmp_path, "upstream.test")
    names: list[str] = []
    with serve(app, ssl_certfile=str(certificate), ssl_keyfile=str(key)) as up:
        deadline = time.monotonic() + 10
        while not up.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        context: ssl.SSLContext = up.server.config.ssl

        def record(_sock: Any, name: str | None, _context: Any) -> None:
            names.append(name or "")

        context.sni_callback = record
        yield up, names


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)


# Over a real `stream-mw serve` process


def test_a_request_reaches_an_upstream_host_only_a_local_forward_proxy_can_resolve(
    tmp_path: Path,
) -> None:
    with (
        forward_proxy(HOSTS) as proxy,
        serve(backend()) as up,
        running(
            "serve",
            "--upstream",
            f"http://upstream.test:{up.port}/v1",
            tmp_path=tmp_path,
            env={"HTTP_PROXY": proxy.url},
        ) as gateway,
    ):
        answer = sdk(gateway.url).responses.create(model="m", input="hi")
    assert answer.output_text == "through the proxy"
    # Absolute form: the proxy, not the gateway, looked the name up.
    assert [(s.method, s.target) for s in proxy.seen] == [
        ("POST", f"http://upstream.test:{up.port}/v1/chat/completions")
    ]


def test_no_proxy_sends_a_request_around_the_proxy(tmp_path: Path) -> None:
    with forward_proxy(HOSTS) as proxy, serve(backend()) as up:
        env = {"HTTP_PROXY": proxy.url, "NO_PROXY": "localhost,127.0.0.1,.test"}
        with running(
            "serve", "--upstream", f"http://127.0.0.1:{up.port}/v1", tmp_path=tmp_path, env=env
        ) as gateway:
            answer = sdk(gateway.url).responses.create(model="m", input="hi")
        assert answer.output_text == "through the proxy"
        # A name only the proxy knows fails to resolve once NO_PROXY routes around it.
        with (
            running(
                "serve",
                "--upstream",
                f"http://upstream.test:{up.port}/v1",
                tmp_path=tmp_path,
                env=env,
            ) as gateway,
            pytest.raises(openai.APIStatusError) as caught,
        ):
            sdk(gateway.url).responses.create(model="m", input="hi")
    assert caught.value.status_code == 502
    assert "upstream.test" in str(caught.value)
    assert proxy.seen == []


def test_an_https_upstream_is_reached_through_a_connect_tunnel_trusting_the_ca_bundle(
    tmp_path: Path,
) -> None:
    with (
        forward_proxy(HOSTS) as proxy,
        tls_upstream(tmp_path, backend()) as (up, server_names),
        running(
            "serve",
            "--upstream",
            f"https://upstream.test:{up.port}/v1",
            "--ca-bundle",
            str(tmp_path / "cert.pem"),
            tmp_path=tmp_path,
            env={"HTTPS_PROXY": proxy.url},
        ) as gateway,
    ):
        answer = sdk(gateway.url).responses.create(model="m", input="hi")
    assert answer.output_text == "through the proxy"
    assert [(s.method, s.target) for s in proxy.seen] == [("CONNECT", f"upstream.test:{up.port}")]
    # TLS inside the tunnel names the upstream, and its certificate was checked for it.
    assert server_names == ["upstream.test"]


# In process: ProxyApp with a real proxy and upstream on loopback


async def post_chat(app: ProxyApp, query: str = "") -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        return await client.post(
            "/v1/chat/completions" + query,
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )


@pytest.mark.anyio
async def test_proxy_credentials_in_the_url_are_sent_as_basic_proxy_authorization() -> None:
    with forward_proxy(HOSTS, credentials=("gw", "p@ss:word")) as proxy, serve(backend()) as up:
        good = f"http://gw:p%40ss%3Aword@{proxy.url.removeprefix('http://')}"
        async with ProxyApp(f"http://upstream.test:{up.port}/v1", proxy=good) as app:
            response = await post_chat(app)
        assert response.status_code == 200
        assert "through the proxy" in response.text
        assert proxy.seen[0].proxy_authorization == "Basic Z3c6cEBzczp3b3Jk"


@pytest.mark.anyio
async def test_an_https_upstream_is_reached_in_a_tunnel_on_every_event_loop(
    tmp_path: Path,
) -> None:
    with (
        forward_proxy(HOSTS, credentials=("gw", "pw")) as proxy,
        tls_upstream(tmp_path, backend()) as (up, server_names),
    ):
        async with ProxyApp(
            f"https://upstream.test:{up.port}/v1",
            proxy=f"http://gw:pw@{proxy.url.removeprefix('http://')}",
            ca_bundle=str(tmp_path / "cert.pem"),
        ) as app:
            first = await post_chat(app)
            second = await post_chat(app)
    assert first.status_code == second.status_code == 200
    assert "through the proxy" in second.text
    assert [s.method for s in proxy.seen] == ["CONNECT"] * len(proxy.seen)
    assert server_names[0] == "upstream.test"


@pytest.mark.anyio
async def test_a_tunnel_the_proxy_refuses_is_a_502_naming_the_proxy_but_not_its_password(
    tmp_path: Path,
) -> None:
    with (
        forward_proxy(HOSTS, credentials=("gw", "right")) as proxy,
        tls_upstream(tmp_path, backend()) as (up, _),
    ):
        wrong = f"http://gw:wrong-secret@{proxy.url.removeprefix('http://')}"
        async with ProxyApp(
            f"https://upstream.test:{up.port}/v1", proxy=wrong, ca_bundle=str(tmp_path / "cert.pem")
        ) as app:
            response = await post_chat(app)
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "407 Proxy Authentication Required" in message
    assert proxy.url in message
    assert "wrong-secret" not in message


@pytest.mark.anyio
async def test_ssl_cert_file_read_when_the_app_is_built_is_trusted_and_without_it_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tls_upstream(tmp_path, backend()) as (up, _):
        url = f"https://localhost:{up.port}/v1"
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        async with ProxyApp(url) as built_before:
            monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
            refused = await post_chat(built_before)
        async with ProxyApp(url) as built_after:
            trusted = await post_chat(built_after)
    assert refused.status_code == 502
    assert "CERTIFICATE_VERIFY_FAILED" in refused.json()["error"]["message"]
    assert trusted.status_code == 200


def certificate_directory(certificate: Path) -> Path:
    directory = certificate.parent / "certs"
    directory.mkdir()
    shutil.copy(certificate, directory / "test-ca.pem")
    # OpenSSL finds a CA in a directory by the hash of its name: `openssl rehash` links it.
    subprocess.run(["openssl", "rehash", str(directory)], check=True, capture_output=True)
    return directory


@pytest.mark.anyio
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to hash a directory")
async def test_a_hashed_certificate_directory_is_trusted_from_ssl_cert_dir_or_ca_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tls_upstream(tmp_path, backend()) as (up, _):
        directory = certificate_directory(tmp_path / "cert.pem")
        url = f"https://localhost:{up.port}/v1"
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.setenv("SSL_CERT_DIR", str(directory))
        async with ProxyApp(url) as app:
            from_env = await post_chat(app)
        monkeypatch.delenv("SSL_CERT_DIR")
        async with ProxyApp(url, ca_bundle=str(directory)) as app:
            from_option = await post_chat(app)
    assert from_env.status_code == from_option.status_code == 200


def query_recorder(app: ASGIApp, queries: list[bytes]) -> ASGIApp:
    async def record(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            queries.append(scope["query_string"])
        await app(scope, receive, send)

    return record


@pytest.mark.anyio
async def test_an_azure_style_query_string_goes_with_every_request_merged_with_the_clients() -> (
    None
):
    queries: list[bytes] = []
    with serve(query_recorder(backend(), queries)) as up:
        async with ProxyApp(
            f"{up.url}/openai/deployments/gpt-4o?api-version=2024-10-21",
            params={"tier": "gold"},
        ) as app:
            plain = await post_chat(app)
            merged = await post_chat(app, "?api-version=1999-01-01&trace=on")
    assert plain.status_code == merged.status_code == 200
    # The configured parameters win over a client's of the same name.
    assert queries == [
        b"api-version=2024-10-21&tier=gold",
        b"api-version=2024-10-21&tier=gold&trace=on",
    ]


@pytest.mark.anyio
async def test_trust_env_false_ignores_the_proxy_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with forward_proxy(HOSTS) as proxy, serve(backend()) as up:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with ProxyApp(f"http://127.0.0.1:{up.port}/v1", trust_env=False) as app:
            response = await post_chat(app)
    assert response.status_code == 200
    assert proxy.seen == []


# Which proxy applies


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [
        ("*", "api.example.com", 443, True),
        ("example.com", "example.com", 443, True),
        ("example.com", "api.example.com", 443, True),
        (".example.com", "api.example.com", 443, True),
        (".example.com", "example.com", 443, True),
        ("*.example.com", "api.example.com", 443, True),
        ("example.com", "notexample.com", 443, False),
        ("example.com", "example.com.evil", 443, False),
        (" other.org , EXAMPLE.com ", "api.example.com", 443, True),
        ("example.com:8443", "example.com", 8443, True),
        ("example.com:8443", "example.com", 443, False),
        ("10.0.0.0/8", "10.1.2.3", 80, True),
        ("10.0.0.0/8", "11.1.2.3", 80, False),
        ("127.0.0.1", "127.0.0.1", 9000, True),
        ("127.0.0.1:9000", "127.0.0.1", 9001, False),
        ("::1", "::1", 80, True),
        ("[::1]:8000", "::1", 8000, True),
        ("localhost", "127.0.0.1", 80, False),  # names are never resolved to compare
        ("", "example.com", 80, False),
    ],
)
def test_no_proxy_entries_match_as_in_curl(
    no_proxy: str, host: str, port: int, bypassed: bool
) -> None:
    assert no_proxy_matches(no_proxy, host, port) is bypassed


def choose(url: str, environ: Mapping[str, str], proxy: str | None = None) -> str | None:
    chosen = choose_proxy(httpx.URL(url), proxy, environ=environ)
    return chosen.display if chosen is not None else None


def test_the_scheme_variable_wins_over_all_proxy_and_lowercase_over_uppercase() -> None:
    env = {
        "https_proxy": "http://lower:1",
        "HTTPS_PROXY": "http://upper:2",
        "ALL_PROXY": "all:3",
    }
    assert choose("https://api.example.com/v1", env) == "http://lower:1"
    assert choose("http://api.example.com/v1", env) == "http://all:3"
    assert choose("http://api.example.com/v1", {"HTTP_PROXY": "p"}) == "http://p:80"
    # httpoxy: in a CGI environment HTTP_PROXY may come from a client's Proxy: header.
    assert choose("http://h/v1", {"HTTP_PROXY": "p:1", "REQUEST_METHOD": "GET"}) is None
    assert choose("http://h/v1", {"NO_PROXY": "*", "HTTP_PROXY": "p:1"}) is None
    # An explicit proxy applies whatever the environment says.
    assert choose("http://h/v1", {"NO_PROXY": "*"}, proxy="http://q:3128") == "http://q:3128"


def test_an_unsupported_proxy_is_refused_naming_the_variable_but_not_the_password() -> None:
    with pytest.raises(ConfigurationError, match="ALL_PROXY") as caught:
        choose("http://h/v1", {"ALL_PROXY": "socks5://user:hunter2@p:1080"})
    assert "socks5" in str(caught.value)
    assert "hunter2" not in str(caught.value)
