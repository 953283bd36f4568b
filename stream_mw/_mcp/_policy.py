"""Which MCP server URLs the gateway may reach: the ``mcp_servers`` allow-list.

An MCP tool makes the gateway send requests to a URL the *client* chose, so every URL is
checked against the operator's list before anything connects: an entry matches a URL
exactly, or, ending in ``/``, every URL under it. Loopback, link-local and private
addresses (what a server-side request forgery would aim at) are reachable only through an
entry that names their host; a prefix such as ``https://`` never reaches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from .._errors import InvalidRequestError

__all__ = ["AllowList", "Allowed"]

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
