"""The MCP client against a real MCP server (the ``mcp`` package's, under uvicorn on
loopback), over streamable HTTP and SSE, and its security rules against real sockets."""

from __future__ import annotations

import importlib.metadata
import ipaddress
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from stream_mw import Settings
from stream_mw._mcp._client import McpConnection, McpError, open_mcp
from stream_mw._mcp._plan import McpServer, servers_from_request
from stream_mw._mcp._policy import AllowList, forbidden
from tests.mcp.servers import TLS_NAME, Listener, McpServerProcess, server_mcp_major

pytestmark = pytest.mark.anyio

MCP_MAJOR = int(importlib.metadata.version("mcp").split(".")[0])
SECRET = "s3cret-mcp-header-value"
TOKEN = "tok-mcp-authorization-value"
#: A bound that only a hang reaches: every operation below ends long before it.
HANG = 30


def settings(*allowed: str, **options: Any) -> Settings:
    return Settings(mcp_servers=allowed, **{"mcp_timeout": 10.0, **options})


def server_for(
    url: str, allowed: Sequence[str], headers: Mapping[str, str] | None = None
) -> McpServer:
    """``url`` as a request's ``mcp`` tool names it, checked by the allow-list as the gateway does."""
    tool: dict[str, Any] = {"type": "mcp", "server_label": "tests", "server_url": url}
    if headers is not None:
        tool["headers"] = dict(headers)
    return servers_from_request({"tools": [tool]}, AllowList(tuple(allowed)))[0]


async def tool_names(connection: McpConnection) -> list[str]:
    return [tool["name"] for tool in await connection.list_tools()]


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_tools_are_listed_and_called_over_both_transports(
    transport: str, mcp_server: str, mcp_sse_server: str
) -> None:
    base, path = (
        (mcp_server, "/mcp") if transport == "streamable-http" else (mcp_sse_server, "/sse")
    )
    server = server_for(base + path, [base + "/"])
    with anyio.fail_after(HANG):
        async with open_mcp(server, settings(base + "/")) as connection:
            tools = await connection.list_tools()
            result = await connection.call_tool("add", {"a": 2, "b": 40})
    add = next(tool for tool in tools if tool["name"] == "add")
    assert {tool["name"] for tool in tools} >= {"add", "echo_headers", "slow", "fail", "big"}
    assert add["annotations"] == {"readOnlyHint": True}
    assert add["input_schema"]["properties"]["a"]["type"] == "integer"
    assert add["description"] == "Add two integers."
    assert (result.output, result.is_error) == ("42", False)


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_the_requests_headers_reach_the_mcp_server(
    transport: str, mcp_server: str, mcp_sse_server: str
) -> None:
    base, path = (
        (mcp_server, "/mcp") if transport == "streamable-http" else (mcp_sse_server, "/sse")
    )
    server = server_for(base + path, [base + "/"], headers={"X-Api-Key": SECRET})
    server = McpServer(
        label=server.label,
        url=server.url,
        headers={**server.headers, "Authorization": f"Bearer {TOKEN}"},
        host_listed=server.host_listed,
    )
    async with open_mcp(server, settings(base + "/")) as connection:
        result = await connection.call_tool("echo_headers", {})
    received = json.loads(result.output)
    assert received["x-api-key"] == SECRET
    assert received["authorization"] == f"Bearer {TOKEN}"
    # Sent to the address that was checked, but named as the client named it.
    assert received["host"] == base.removeprefix("http://")


async def test_a_paged_tool_list_is_followed_to_its_last_page() -> None:
    if server_mcp_major() < 2:
        pytest.skip("the paged test server is built on mcp 2.x's low-level server")
    with McpServerProcess("streamable-http", "--page-size", "2") as process:
        url = process.url + "/mcp"
        async with open_mcp(server_for(url, [url]), settings(url)) as connection:
            names = await tool_names(connection)
    assert names == ["tool_0", "tool_1", "tool_2", "tool_3", "tool_4"]


async def test_a_tool_error_is_a_result_marked_as_an_error(mcp_server: str) -> None:
    server = server_for(mcp_server + "/mcp", [mcp_server + "/"])
    async with open_mcp(server, settings(mcp_server + "/")) as connection:
        result = await connection.call_tool("fail", {})
    assert result.is_error
    assert result.output


async def test_a_long_result_is_cut_to_mcp_max_result_bytes_and_says_so(mcp_server: str) -> None:
    server = server_for(mcp_server + "/mcp", [mcp_server + "/"])
    async with open_mcp(
        server, settings(mcp_server + "/", mcp_max_result_bytes=1000)
    ) as connection:
        whole = await connection.call_tool("big", {"n": 1000})
        cut = await connection.call_tool("big", {"n": 5000})
    assert whole.output == "x" * 1000
    kept, _, note = cut.output.partition("\n")
    assert kept == "x" * 1000
    assert note.startswith("[The tool's result was cut here")
    assert "5000 bytes" in note
    assert "mcp_max_result_bytes" in note


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
async def test_an_answer_far_larger_than_any_result_passed_on_is_an_error_not_memory(
    transport: str, mcp_server: str, mcp_sse_server: str
) -> None:
    base, path = (
        (mcp_server, "/mcp") if transport == "streamable-http" else (mcp_sse_server, "/sse")
    )
    server = server_for(base + path, [base + "/"])
    options = {"mcp_max_result_bytes": 1000, "mcp_timeout": 5.0}
    with anyio.fail_after(HANG):
        async with open_mcp(server, settings(base + "/", **options)) as connection:
            with pytest.raises(McpError) as caught:
                await connection.call_tool("big", {"n": 3 << 20})
    assert caught.value.kind == "protocol"
    assert f"sent an answer of more than {4 * 1000 + (1 << 20)} bytes" in caught.value.message


async def test_an_image_result_is_described_rather_than_dropped(mcp_server: str) -> None:
    server = server_for(mcp_server + "/mcp", [mcp_server + "/"])
    async with open_mcp(server, settings(mcp_server + "/")) as connection:
        result = await connection.call_tool("picture", {})
    assert "image content" in result.output
    assert "image/png" in result.output


async def test_a_tool_slower_than_mcp_timeout_is_a_timeout_error_and_the_session_goes_on(
    mcp_server: str,
) -> None:
    server = server_for(mcp_server + "/mcp", [mcp_server + "/"])
    with anyio.fail_after(HANG):
        async with open_mcp(server, settings(mcp_server + "/", mcp_timeout=1.0)) as connection:
            with pytest.raises(McpError) as caught:
                await connection.call_tool("slow", {"seconds": 20})
            after = await connection.call_tool("add", {"a": 1, "b": 1})
    assert caught.value.kind == "timeout"
    assert "mcp_timeout" in caught.value.message
    assert after.output == "2"


async def test_a_server_that_is_down_is_an_http_error() -> None:
    # A port that was free a moment ago: nothing listens there.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp"
    server = server_for(url, [url])
    with anyio.fail_after(HANG):
        async with open_mcp(server, settings(url)) as connection:
            with pytest.raises(McpError) as caught:
                await connection.list_tools()
    assert caught.value.kind == "http"
    assert caught.value.status is None
    assert "could not be reached" in caught.value.message


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\nnot json!",
            "protocol",
        ),
        (b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", "http"),
        (None, "http"),
    ],
    ids=["garbage", "http-500", "closed-without-answer"],
)
async def test_a_server_answering_garbage_or_closing_is_an_error_not_a_hang(
    listener: Listener, reply: bytes | None, kind: str
) -> None:
    listener.reply = reply
    url = listener.url + "/mcp"
    with anyio.fail_after(HANG):
        async with open_mcp(server_for(url, [url]), settings(url, mcp_timeout=5.0)) as connection:
            with pytest.raises(McpError) as caught:
                await connection.list_tools()
    if MCP_MAJOR < 2 and kind == "protocol":
        # mcp 1.x logs an answer it cannot read and goes on waiting: mcp_timeout ends that.
        assert caught.value.kind in (kind, "timeout"), caught.value.message
    else:
        assert caught.value.kind == kind, caught.value.message
    if reply is not None and b"500" in reply:
        assert caught.value.status == 500


async def test_a_server_that_goes_away_mid_call_is_an_error_not_a_hang() -> None:
    # A server of its own: this one is stopped half-way. mcp_timeout is far away, so only
    # noticing the broken connection ends the call before HANG.
    with McpServerProcess("streamable-http") as process:
        url = process.url + "/mcp"
        async with open_mcp(server_for(url, [url]), settings(url, mcp_timeout=600.0)) as mcp:
            await mcp.list_tools()
            threading.Timer(0.3, os.kill, (process.pid, signal.SIGKILL)).start()
            with anyio.fail_after(HANG), pytest.raises(McpError) as caught:
                await mcp.call_tool("slow", {"seconds": 600})
    assert caught.value.kind in ("http", "protocol")


async def test_an_error_raised_inside_the_session_comes_out_as_itself(mcp_server: str) -> None:
    server = server_for(mcp_server + "/mcp", [mcp_server + "/"])
    with pytest.raises(McpError) as caught:
        async with open_mcp(server, settings(mcp_server + "/", mcp_timeout=1.0)) as connection:
            await connection.call_tool("slow", {"seconds": 20})
    assert caught.value.kind == "timeout"


async def test_a_cancelled_call_returns_at_once_and_closes_the_session(mcp_server: str) -> None:
    server = server_for(mcp_server + "/mcp", [mcp_server + "/"])
    # mcp_timeout is far away: only the cancellation can end the call before HANG.
    with anyio.fail_after(HANG), anyio.CancelScope() as scope:
        async with (
            open_mcp(server, settings(mcp_server + "/", mcp_timeout=600.0)) as connection,
            anyio.create_task_group() as tasks,
        ):
            tasks.start_soon(connection.call_tool, "slow", {"seconds": 600})
            await connection.list_tools()  # connected, and the slow call sent
            await anyio.sleep(0.2)
            scope.cancel()
    assert scope.cancelled_caught
    assert connection._ended.is_set()


# --- refused before connecting -----------------------------------------------------------


async def test_an_unlisted_url_is_refused_before_any_connection(listener: Listener) -> None:
    url = listener.url + "/mcp"
    server = McpServer(label="tests", url=url, host_listed=True)
    with pytest.raises(McpError) as caught:
        async with open_mcp(server, settings("https://elsewhere.example/")):
            pass
    assert caught.value.kind == "refused"
    assert "mcp_servers" in caught.value.message
    assert listener.accepted == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_private_address_is_refused_before_any_connection(
    listener: Listener, host: str
) -> None:
    # A prefix that allows every http URL does not name the host: loopback stays off limits.
    url = f"http://{host}:{listener.port}/mcp"
    server = server_for(url, ["http://"])
    assert not server.host_listed
    with pytest.raises(McpError) as caught:
        async with open_mcp(server, settings("http://")) as connection:
            await connection.list_tools()
    assert caught.value.kind == "refused"
    assert "loopback" in caught.value.message
    assert "mcp_servers" in caught.value.message
    assert listener.accepted == 0


async def test_a_redirect_off_the_list_is_refused_before_connecting_to_its_target(
    mcp_server: str, listener: Listener
) -> None:
    target = listener.url + "/mcp"
    url = f"{mcp_server}/redirect?to={target}"
    server = server_for(url, [mcp_server + "/"])
    with anyio.fail_after(HANG):
        async with open_mcp(server, settings(mcp_server + "/")) as connection:
            with pytest.raises(McpError) as caught:
                await connection.list_tools()
    assert caught.value.kind == "refused"
    assert "redirect" in caught.value.message
    assert "mcp_servers" in caught.value.message
    assert listener.accepted == 0


async def test_a_redirect_within_the_list_is_followed(mcp_server: str) -> None:
    server = server_for(f"{mcp_server}/redirect?to=/mcp", [mcp_server + "/"])
    async with open_mcp(server, settings(mcp_server + "/")) as connection:
        result = await connection.call_tool("add", {"a": 3, "b": 4})
    assert result.output == "7"


async def test_a_redirect_that_only_adds_a_slash_to_a_listed_url_is_followed(
    mcp_server: str,
) -> None:
    url = mcp_server + "/slash"
    async with open_mcp(server_for(url, [url]), settings(url)) as connection:
        result = await connection.call_tool("add", {"a": 5, "b": 6})
    assert result.output == "11"


async def test_a_redirect_to_another_path_of_a_listed_host_is_refused(mcp_server: str) -> None:
    url = f"{mcp_server}/redirect?to=/mcp"
    with pytest.raises(McpError) as caught:
        async with open_mcp(server_for(url, [url]), settings(url)) as connection:
            await connection.list_tools()
    assert caught.value.kind == "refused"


async def test_headers_do_not_follow_a_redirect_to_another_host(listener: Listener) -> None:
    """The guard strips the request's MCP headers from a request to another origin, even a
    listed one (mcp 2.x does not follow such redirects at all; 1.x leaves it to httpx)."""
    from stream_mw._mcp._client import _Guard, _GuardedTransport, _http_module

    http = _http_module()
    listener.reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    origin = f"http://localhost:{listener.port}"
    server = server_for(
        origin + "/mcp", [origin + "/", listener.url + "/"], headers={"X-Api-Key": SECRET}
    )
    guard = _Guard(server, settings(origin + "/", listener.url + "/"))
    async with http.AsyncClient(
        transport=_GuardedTransport(http, guard), headers=dict(server.headers)
    ) as client:
        same = await client.get(origin + "/mcp")
        other = await client.get(listener.url + "/elsewhere")
    assert (same.status_code, other.status_code) == (200, 200)
    first, second = (head.decode().lower() for head in listener.heads)
    assert SECRET.lower() in first
    assert f"host: localhost:{listener.port}" in first
    assert SECRET.lower() not in second


async def test_a_host_is_resolved_once_and_the_checked_address_is_the_one_connected_to(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers a different address on its second lookup; the gateway
    never looks twice. (A resolver stands in for a DNS server this test cannot run.)"""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "mcp.rebinding.test":
            lookups.append(host)
            address = "127.0.0.1" if len(lookups) == 1 else "127.0.0.2"
            return real(address, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    listener.reply = b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    url = f"http://mcp.rebinding.test:{listener.port}/mcp"
    server = server_for(url, [url])
    async with open_mcp(server, settings(url, mcp_timeout=5.0)) as connection:
        with pytest.raises(McpError):
            await connection.list_tools()
        with pytest.raises(McpError):
            await connection.list_tools()
    assert lookups == ["mcp.rebinding.test"]
    assert listener.accepted >= 1
    assert all(b"host: mcp.rebinding.test" in head.lower() for head in listener.heads)


async def test_an_https_server_is_reached_at_its_checked_address_under_its_own_name(
    mcp_tls_server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection goes to the address, but TLS (SNI, the certificate check) and Host
    see the name: the certificate names only the name, not 127.0.0.1."""
    port, certificate = mcp_tls_server
    real = socket.getaddrinfo

    def resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == TLS_NAME else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
    url = f"https://{TLS_NAME}:{port}/mcp"
    async with open_mcp(server_for(url, [url]), settings(url)) as connection:
        result = await connection.call_tool("echo_headers", {})
    assert json.loads(result.output)["host"] == f"{TLS_NAME}:{port}"


async def test_a_connection_made_for_one_name_never_carries_a_request_for_another(
    mcp_tls_server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both names resolve to one address; the certificate names only the first. A request
    for the second name needs a connection of its own, whose certificate check fails."""
    from stream_mw._mcp._client import _Guard, _GuardedTransport, _http_module

    port, certificate = mcp_tls_server
    other = "other.pinned.test"
    real = socket.getaddrinfo

    def resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host in (TLS_NAME, other) else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
    first, second = f"https://{TLS_NAME}:{port}/", f"https://{other}:{port}/"
    server = server_for(first + "mcp", [first, second])
    http = _http_module()
    async with http.AsyncClient(
        transport=_GuardedTransport(http, _Guard(server, settings(first, second)))
    ) as client:
        answered = await client.get(first + "mcp")
        with pytest.raises(http.ConnectError):
            await client.get(second + "mcp")
    assert answered.status_code < 500


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "100.64.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "ff02::1",
    ],
)
def test_addresses_a_forged_request_would_aim_at_are_forbidden(address: str) -> None:
    assert forbidden(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    ("mapped", "why"), [("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local")]
)
def test_an_ipv4_mapped_address_is_judged_as_the_ipv4_address_it_reaches(
    mapped: str, why: str
) -> None:
    assert forbidden(ipaddress.ip_address(mapped)) == why


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_not_forbidden(address: str) -> None:
    assert forbidden(ipaddress.ip_address(address)) is None


# --- logs ----------------------------------------------------------------------------------


async def test_mcp_headers_never_appear_in_log_records(
    mcp_server: str, listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"X-Api-Key": SECRET, "Authorization": f"Bearer {TOKEN}"}
    listed = server_for(mcp_server + "/mcp", [mcp_server + "/"], headers=headers)
    redirect = server_for(
        f"{mcp_server}/redirect?to={listener.url}/mcp", [mcp_server + "/"], headers=headers
    )
    with anyio.fail_after(HANG):
        async with open_mcp(listed, settings(mcp_server + "/", mcp_timeout=1.0)) as connection:
            await connection.list_tools()
            await connection.call_tool("add", {"a": 1, "b": 2})
            await connection.call_tool("fail", {})
            with pytest.raises(McpError):
                await connection.call_tool("slow", {"seconds": 20})
        async with open_mcp(redirect, settings(mcp_server + "/")) as connection:
            with pytest.raises(McpError):
                await connection.list_tools()
    names = {record.name.split(".")[0] for record in caplog.records}
    assert {"mcp", "httpx2" if "httpx2" in names else "httpx", "stream_mw"} <= names
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + repr(record.__dict__.get("exc_text"))
        assert SECRET not in text, record.name
        assert TOKEN not in text, record.name
