"""Which MCP server URLs the gateway may reach: the ``mcp_servers`` allow-list.

An MCP tool makes the gateway send requests to a URL the *client* chose, so every URL is
checked against the operator's list before anything connects: an entry matches a URL
exactly, or, ending in ``/``, every URL under it. Loopback, link-local and private
addresses (what a server-side request forgery would aim at) are reachable only through an
entry that names their host; a prefix such as ``https://`` never reaches them.

Two checks, at two times: ``AllowList`` judges the URL when the request arrives (a 400),
``resolve_checked`` judges the addresses its host resolves to, right before connecting
(``_client`` applies it to every host a session reaches, and connects to the address it
returned).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from .._errors import InvalidRequestError

__all__ = ["AllowList", "Allowed", "Refused", "forbidden", "literal_address", "resolve_checked"]

_SETTING: Final = "mcp_servers (STREAM_MW_MCP_SERVERS)"


@dataclass(frozen=True, slots=True)
class Allowed:
    """A URL the list allows, and whether its entry names the URL's host."""

    url: str
    #: The matching entry names this host: it may resolve to a private address.
    host_listed: bool


class AllowList:
    """The ``mcp_servers`` setting, parsed once."""

    __slots__ = ("_entries",)

    def __init__(self, entries: tuple[str, ...]) -> None:
        self._entries = entries

    def __bool__(self) -> bool:
        return bool(self._entries)

    def match(self, url: str) -> Allowed | None:
        """The verdict for ``url``, or ``None`` when no entry allows it."""
        target = urlsplit(url)
        if target.scheme not in ("http", "https") or not target.hostname:
            return None
        if target.username is not None or target.password is not None:
            # Credentials in the URL would be sent to the server and end up in logs.
            return None
        for entry in self._entries:
            if url == entry or (entry.endswith("/") and url.startswith(entry)):
                listed = urlsplit(entry).hostname
                return Allowed(url, host_listed=listed is not None and listed == target.hostname)
        return None

    def check(self, url: str, param: str) -> Allowed:
        """``match``, or the 400 that names the setting to change."""
        if not self._entries:
            raise InvalidRequestError(
                "Remote MCP tools are turned off on this server: set "
                f"{_SETTING} to the MCP server URLs the gateway may reach.",
                param=param,
                code="mcp_server_not_allowed",
            )
        allowed = self.match(url)
        if allowed is None:
            raise InvalidRequestError(
                f"The MCP server URL {url[:200]!r} is not in {_SETTING}; ask the operator "
                "to add it (an exact URL, or a prefix ending in '/').",
                param=param,
                code="mcp_server_not_allowed",
            )
        return allowed


# --- connect time ------------------------------------------------------------------------
# The allow-list checks the URL a client wrote; what the gateway actually reaches is the
# address its host resolves to. A public name can resolve to 127.0.0.1 or to a cloud
# metadata address (169.254.169.254), so the addresses are checked too, right before
# connecting, and the connection goes to the address that was checked: a second lookup by
# the HTTP client could answer differently (DNS rebinding).

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The gateway will not connect: ``str(refused)`` says why and names the setting."""


def forbidden(address: Address) -> str | None:
    """Why ``address`` is off limits without an allow-list entry naming its host, or ``None``."""
    # ::ffff:10.0.0.1 reaches 10.0.0.1 on a dual-stack socket.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("loopback", "link_local", "private", "unspecified", "multicast", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    # Shared (100.64/10), documentation and other special ranges: none is a public server.
    if not address.is_global:
        return "non-global"
    return None


def literal_address(host: str) -> Address | None:
    """``host`` as an IP address when it is one (brackets of an IPv6 literal allowed)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def resolve_checked(host: str, port: int, *, host_listed: bool) -> str:
    """The address to connect to for ``host``: resolved off the event loop, every address
    checked. Raises ``Refused`` or ``OSError``; the caller bounds the time it takes."""
    literal = literal_address(host)
    if literal is not None:
        addresses: list[Address] = [literal]
    else:
        infos = await anyio.to_thread.run_sync(
            # A stuck resolver keeps its thread; abandon_on_cancel lets a timeout or a
            # cancellation return at once instead of waiting for it.
            functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM),
            abandon_on_cancel=True,
        )
        # Scope ids (fe80::1%eth0) are not part of the address.
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addresses:
            raise OSError(f"{host} has no address")
    if not host_listed:
        for address in addresses:
            why = forbidden(address)
            if why is not None:
                shown = host if literal is not None else f"{host} ({address})"
                raise Refused(
                    f"The MCP server host {shown} is a {why} address, which the gateway "
                    f"reaches only when an entry of {_SETTING} names that host."
                )
    return str(addresses[0])
