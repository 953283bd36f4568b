"""Responses ``tools`` and ``tool_choice`` → Chat ``tools`` and ``tool_choice``.

Function and custom tools (also inside a ``namespace``) become Chat functions under the names
the request's ``ToolMap`` gives them; a custom tool's grammar goes into its description, as
Chat has no place for it. The tools of the response's MCP servers are offered as functions
beside them. Hosted tools, which a Chat backend cannot run, are dropped or rejected as
``Settings.hosted_tools`` says. A ``tool_choice`` is translated to the names the backend was
offered, or dropped when what it names did not reach the backend.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from ._errors import InvalidRequestError
from ._observe import logger
from ._settings import Settings
from ._tools import CUSTOM_TOOL_PARAMETERS, ToolMap

if TYPE_CHECKING:
    from ._mcp._plan import McpPlan

_CHAT_TOOL_TYPES: Final = frozenset({"function", "custom", "namespace"})
_EMPTY_PARAMETERS: Final[dict[str, Any]] = {"type": "object", "properties": {}}

#: Logged at INFO the first time a hosted tool type is dropped (hosted_tools="drop").
HOSTED_TOOL_DROPPED: Final = (
    "Dropped hosted tool type %r: a Chat Completions backend cannot run it "
    "(hosted_tools='drop'; logged once per tool type)"
)
# Hosted tool types already logged. Process-wide on purpose: clients such as Codex send the
# same hosted tools with every request, and one line per request would bury everything else.
_HOSTED_LOGGED: set[str] = set()


def _translate_tools(
    tools: Sequence[Mapping[str, Any]],
    tool_map: ToolMap,
    settings: Settings,
    mcp: McpPlan | None = None,
) -> list[dict[str, Any]]:
    chat_tools: list[dict[str, Any]] = []
    seen: set[str] = set()
    hosted: list[str] = []

    def add(tool: Mapping[str, Any], namespace: str | None) -> None:
        if tool["type"] == "custom":
            name = tool_map.chat_name(tool["name"], namespace=namespace, kind="custom")
            function = _custom_function(tool, name)
        else:
            name = tool_map.chat_name(tool["name"], namespace=namespace)
            function = _function(tool, name)
        if name in seen:
            logger.debug("Dropped a second declaration of tool %s", name)
            return
        seen.add(name)
        chat_tools.append({"type": "function", "function": function})

    for index, tool in enumerate(tools):
        kind = tool["type"]
        if kind == "namespace":
            for inner in tool["tools"]:
                add(inner, tool["name"])
        elif kind in _CHAT_TOOL_TYPES:
            add(tool, None)
        elif kind == "mcp" and mcp is not None:
            continue  # its server's tools follow, as the plan offers them
        elif settings.hosted_tools == "reject":
            raise InvalidRequestError(
                f"Tool type '{kind}' is a hosted tool, which a Chat Completions backend cannot "
                "run. Remove it from 'tools', or set hosted_tools='drop' to ignore such tools.",
                param=f"tools[{index}].type",
            )
        else:
            hosted.append(kind)
    for kind in hosted:
        if kind not in _HOSTED_LOGGED:
            _HOSTED_LOGGED.add(kind)
            logger.info(HOSTED_TOOL_DROPPED, kind)
    if mcp is not None:
        # Their names were made unique next to the client's (McpPlan's ``taken``).
        chat_tools.extend(tool.chat_function() for tool in mcp.tools())
    return chat_tools


def _function(tool: Mapping[str, Any], name: str) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    parameters = tool.get("parameters")
    function["parameters"] = parameters if parameters is not None else dict(_EMPTY_PARAMETERS)
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return function


def _custom_function(tool: Mapping[str, Any], name: str) -> dict[str, Any]:
    description = tool.get("description") or ""
    fmt = tool.get("format") or {}
    if fmt.get("type") == "grammar":
        syntax = fmt.get("syntax") or "grammar"
        rule = f"The `input` argument must match this {syntax} grammar:\n{fmt['definition']}"
        description = f"{description}\n\n{rule}" if description else rule
    function: dict[str, Any] = {"name": name}
    if description:
        function["description"] = description
    function["parameters"] = copy.deepcopy(CUSTOM_TOOL_PARAMETERS)
    return function


def _translate_tool_choice(
    choice: Any, tool_map: ToolMap, mcp: McpPlan | None = None, offered: int = 0
) -> Any:
    if choice is None or isinstance(choice, str):
        return choice
    kind = choice["type"]
    if kind in ("function", "custom"):
        return {"type": "function", "function": {"name": _choice_name(choice, tool_map)}}
    if kind == "mcp" and mcp is not None:
        names = _mcp_choice_names(choice, mcp)
        if not names:
            logger.debug("Dropped tool_choice for an MCP tool its server does not offer")
            return None
        if len(names) == 1:
            return {"type": "function", "function": {"name": names[0]}}
        if len(names) == offered:
            return "required"  # the server's tools are all the backend has
        # Several tools of one server among others: only they may be called.
        return {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "required",
                "tools": [{"type": "function", "function": {"name": n}} for n in names],
            },
        }
    if kind == "allowed_tools":
        allowed = [
            {"type": "function", "function": {"name": _choice_name(tool, tool_map)}}
            for tool in choice["tools"]
            if tool["type"] in ("function", "custom") and isinstance(tool.get("name"), str)
        ]
        if mcp is not None:
            allowed += [
                {"type": "function", "function": {"name": name}}
                for tool in choice["tools"]
                if tool["type"] == "mcp"
                for name in _mcp_choice_names(tool, mcp)
            ]
        if not allowed:
            # Only hosted tools were allowed, and none of them reached the backend.
            return "none"
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": choice["mode"], "tools": allowed},
        }
    logger.debug("Dropped tool_choice for hosted tool type %s", kind)
    return None


def _mcp_choice_names(choice: Mapping[str, Any], mcp: McpPlan) -> list[str]:
    """The Chat function names an ``mcp`` tool choice names: its one tool, or every tool
    its server offers when it names none."""
    label, name = choice.get("server_label"), choice.get("name")
    if isinstance(name, str):
        tool = mcp.find(label, name) if isinstance(label, str) else None
        return [tool.function_name] if tool is not None else []
    return [tool.function_name for tool in mcp.tools() if tool.server.label == label]


def _choice_name(choice: Mapping[str, Any], tool_map: ToolMap) -> str:
    namespace = choice.get("namespace")
    return tool_map.chat_name(
        choice["name"],
        namespace=namespace if isinstance(namespace, str) else None,
        kind="custom" if choice["type"] == "custom" else "function",
    )
