"""A request's remote MCP tools: which servers, which of their tools, under which names.

No IO here. ``servers_from_request`` reads and checks the ``{"type": "mcp"}`` entries of a
request's ``tools`` (against the ``mcp_servers`` allow-list, before anything connects);
``McpPlan`` then holds the tools each server listed, each under a Chat function name that
is unique next to the client's own function tools, so that a Chat tool call maps back to
its server and tool. Headers (and ``authorization``) live only on ``McpServer``, whose
``repr`` hides them: they go to that server and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .._errors import InvalidRequestError
from ._policy import AllowList

__all__ = ["McpPlan", "McpServer", "McpTool", "function_name_for", "servers_from_request"]

# Chat function names: ^[a-zA-Z0-9_-]{1,64}$ on OpenAI and on the backends that check.
_NAME_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")
_MAX_NAME: Final = 64


@dataclass(frozen=True, slots=True)
class _Filter:
    """An ``allowed_tools`` or ``require_approval`` filter: names and/or a read-only hint."""

    names: frozenset[str] | None = None
    read_only: bool | None = None

    def matches(self, tool: str, annotations: Mapping[str, Any] | None) -> bool:
        if self.names is not None and tool not in self.names:
            return False
        if self.read_only is not None:
            hint = bool((annotations or {}).get("readOnlyHint", False))
            return hint == self.read_only
        return self.names is not None


@dataclass(frozen=True, slots=True)
class McpServer:
    """One ``mcp`` tool of a request: a server the gateway may call for this response."""

    label: str
    url: str
    #: Sent to this server only; never logged, stored or echoed.
    headers: Mapping[str, str] = field(repr=False, default_factory=dict)
    #: The allow-list entry names this URL's host, so it may be a private address.
    host_listed: bool = False
    allowed: _Filter | None = None
    #: ``True``: every tool needs approval; ``False``: none does; else the two filters.
    approve_all: bool | None = True
    approve: _Filter | None = None
    skip_approval: _Filter | None = None

    def allows(self, tool: str, annotations: Mapping[str, Any] | None = None) -> bool:
        return self.allowed is None or self.allowed.matches(tool, annotations)

    def needs_approval(self, tool: str, annotations: Mapping[str, Any] | None = None) -> bool:
        if self.approve_all is not None:
            return self.approve_all
        if self.approve is not None and self.approve.matches(tool, annotations):
            return True
        if self.skip_approval is not None and self.skip_approval.matches(tool, annotations):
            return False
        # Only "never" named tools: the rest need approval, OpenAI's default. Only
        # "always" named tools: the rest do not.
        return self.approve is None


@dataclass(frozen=True, slots=True)
class McpTool:
    """One tool a server listed, as offered to the model."""

    server: McpServer
    name: str
    #: The Chat function name the model calls it by.
    function_name: str
    input_schema: Mapping[str, Any]
    description: str | None = None
    annotations: Mapping[str, Any] | None = None

    @property
    def needs_approval(self) -> bool:
        return self.server.needs_approval(self.name, self.annotations)

    def listing(self) -> dict[str, Any]:
        """This tool as an entry of an ``mcp_list_tools`` item's ``tools``."""
        return {
            "name": self.name,
            "input_schema": dict(self.input_schema),
            "description": self.description,
            "annotations": dict(self.annotations) if self.annotations is not None else None,
        }

    def chat_function(self) -> dict[str, Any]:
        """This tool as a Chat Completions function definition."""
        function: dict[str, Any] = {
            "name": self.function_name,
            "parameters": dict(self.input_schema) or {"type": "object", "properties": {}},
        }
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


def function_name_for(label: str, tool: str) -> str:
    """The Chat function name for ``tool`` of server ``label``, before de-duplication."""
    return _NAME_UNSAFE.sub("_", f"{label}__{tool}")[:_MAX_NAME]


class McpPlan:
    """The MCP servers of one response and the tools they offer, by Chat function name."""

    __slots__ = ("_by_function", "_by_tool", "servers")

    def __init__(self, servers: Iterable[McpServer], taken: Iterable[str] = ()) -> None:
        self.servers: dict[str, McpServer] = {s.label: s for s in servers}
        self._by_function: dict[str, McpTool | None] = dict.fromkeys(taken)
        self._by_tool: dict[tuple[str, str], McpTool] = {}

    def add(self, server: McpServer, listed: Iterable[Mapping[str, Any]]) -> list[McpTool]:
        """Offer the tools ``server`` listed (as ``mcp_list_tools`` entries) that its
        ``allowed_tools`` allows; returns them, each with its unique function name."""
        added: list[McpTool] = []
        for entry in listed:
            name = entry.get("name")
            if not isinstance(name, str) or not name:
                continue
            annotations = entry.get("annotations")
            annotations = annotations if isinstance(annotations, Mapping) else None
            if not server.allows(name, annotations) or (server.label, name) in self._by_tool:
                continue
            schema = entry.get("input_schema")
            description = entry.get("description")
            tool = McpTool(
                server=server,
                name=name,
                function_name=self._unique(function_name_for(server.label, name)),
                input_schema=schema if isinstance(schema, Mapping) else {},
                description=description if isinstance(description, str) else None,
                annotations=annotations,
            )
            self._by_function[tool.function_name] = tool
            self._by_tool[server.label, name] = tool
            added.append(tool)
        return added

    def tool(self, function_name: str) -> McpTool | None:
        """The MCP tool the model called by ``function_name``, or ``None`` (a client tool)."""
        return self._by_function.get(function_name)

    def find(self, label: str, name: str) -> McpTool | None:
        """The offered tool ``name`` of server ``label``, if it is offered."""
        return self._by_tool.get((label, name))

    def tools(self) -> list[McpTool]:
        return list(self._by_tool.values())

    def _unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self._by_function:
            n += 1
            suffix = f"_{n}"
            candidate = name[: _MAX_NAME - len(suffix)] + suffix
        return candidate


def servers_from_request(request: Mapping[str, Any], allow: AllowList) -> list[McpServer]:
    """The request's ``mcp`` tools, checked: shapes, labels, and every URL against the
    allow-list. Raises ``InvalidRequestError`` naming the offending ``tools[i]`` field."""
    tools = request.get("tools")
    servers: list[McpServer] = []
    if not isinstance(tools, list):
        return servers
    labels: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type") != "mcp":
            continue
        path = f"tools[{i}]"
        label = tool.get("server_label")
        if not isinstance(label, str) or not label.strip():
            raise InvalidRequestError(
                "An mcp tool needs a 'server_label' string.", param=f"{path}.server_label"
            )
        if label in labels:
            raise InvalidRequestError(
                f"Two mcp tools share the server_label {label!r}; labels must be unique.",
                param=f"{path}.server_label",
            )
        labels.add(label)
        url = tool.get("server_url")
        if not isinstance(url, str) or not url:
            which = next((k for k in ("connector_id", "tunnel_id") if tool.get(k)), None)
            detail = (
                f"'{which}' names a service of OpenAI's that this server cannot reach"
                if which
                else "it has no 'server_url'"
            )
            raise InvalidRequestError(
                f"The mcp tool {label!r} cannot be used: {detail}. Give the MCP server's URL "
                "as 'server_url'.",
                param=f"{path}.server_url",
            )
        allowed = allow.check(url, f"{path}.server_url")
        servers.append(
            McpServer(
                label=label,
                url=url,
                headers=_headers(tool, path),
                host_listed=allowed.host_listed,
                allowed=_allowed_tools(tool.get("allowed_tools"), f"{path}.allowed_tools"),
                **_approval(tool.get("require_approval"), f"{path}.require_approval"),
            )
        )
    return servers


def _headers(tool: Mapping[str, Any], path: str) -> dict[str, str]:
    raw = tool.get("headers")
    headers: dict[str, str] = {}
    if raw is not None:
        if not isinstance(raw, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise InvalidRequestError(
                "'headers' must be an object of string values.", param=f"{path}.headers"
            )
        headers.update(raw)
    token = tool.get("authorization")
    if token is not None:
        if not isinstance(token, str):
            raise InvalidRequestError(
                "'authorization' must be a string (an access token).",
                param=f"{path}.authorization",
            )
        headers["Authorization"] = f"Bearer {token}"
    for name, value in headers.items():
        if not name or any(c in name + value for c in "\r\n\0"):
            raise InvalidRequestError(
                f"The header {name[:40]!r} is not a valid HTTP header.", param=f"{path}.headers"
            )
    return headers


def _filter(raw: Any, path: str) -> _Filter:
    if isinstance(raw, list):
        raw = {"tool_names": raw}
    if not isinstance(raw, Mapping):
        raise InvalidRequestError(
            "Expected a list of tool names or an object with 'tool_names' and/or 'read_only'.",
            param=path,
        )
    names = raw.get("tool_names")
    read_only = raw.get("read_only")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) for n in names)
    ):
        raise InvalidRequestError("'tool_names' must be a list of strings.", param=path)
    if read_only is not None and not isinstance(read_only, bool):
        raise InvalidRequestError("'read_only' must be a boolean.", param=path)
    return _Filter(frozenset(names) if names is not None else None, read_only)


def _allowed_tools(raw: Any, path: str) -> _Filter | None:
    return None if raw is None else _filter(raw, path)


def _approval(raw: Any, path: str) -> dict[str, Any]:
    if raw is None or raw == "always":
        return {"approve_all": True}
    if raw == "never":
        return {"approve_all": False}
    if not isinstance(raw, Mapping):
        raise InvalidRequestError(
            "'require_approval' must be 'always', 'never' or an object with 'always' and/or "
            "'never' filters.",
            param=path,
        )
    always, never = raw.get("always"), raw.get("never")
    return {
        "approve_all": None,
        "approve": None if always is None else _filter(always, f"{path}.always"),
        "skip_approval": None if never is None else _filter(never, f"{path}.never"),
    }
