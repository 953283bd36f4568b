"""Tool names across the bridge: Responses tools ⇄ Chat Completions function names.

Chat backends know only flat ``function`` tools whose names match ``^[a-zA-Z0-9_-]{1,64}$``.
Two Responses tool shapes need renaming on the way in and restoring on the way out:

- ``namespace`` tools (Codex) group functions under a namespace; each nested function becomes
  ``<namespace>__<name>``, and a call to it comes back as a ``function_call`` carrying
  ``namespace`` and the original ``name``.
- ``custom`` (freeform) tools take one free-text input; each becomes a function with a single
  string parameter ``input``, and a call to it comes back as a ``custom_tool_call`` item.

The request translator and the stream translator both build a ``ToolMap`` from the same
request ``tools`` list, so the two directions cannot drift apart.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CUSTOM_TOOL_PARAMETERS", "ToolMap", "ToolTarget"]

#: JSON schema of the single-string-argument function a ``custom`` tool becomes.
CUSTOM_TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The raw input for the tool."}},
    "required": ["input"],
    "additionalProperties": False,
}

_INVALID = re.compile(r"[^a-zA-Z0-9_-]")
_MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class ToolTarget:
    """What a Chat function name stands for on the Responses side."""

    #: ``"function"`` → a ``function_call`` item; ``"custom"`` → a ``custom_tool_call`` item.
    kind: Literal["function", "custom"]
    #: The tool's name as the client declared it.
    name: str
    #: The Codex namespace the function was declared in, if any.
    namespace: str | None = None


class ToolMap:
    """Both directions of the name mapping for one request's ``tools``.

    Names that need no change map to themselves, and a name the upstream invents (a tool
    the client never declared) resolves to a plain ``function`` of that name, so nothing the
    model produced is dropped.
    """

    __slots__ = ("_by_chat_name", "_to_chat_name")

    def __init__(self) -> None:
        self._by_chat_name: dict[str, ToolTarget] = {}
        self._to_chat_name: dict[ToolTarget, str] = {}

    @classmethod
    def from_tools(cls, tools: object) -> ToolMap:
        """Build the map from a Responses request's ``tools`` (anything else gives an empty map)."""
        tool_map = cls()
        if not isinstance(tools, list):
            return tool_map
        for tool in tools:
            if not isinstance(tool, Mapping):
                continue
            kind = tool.get("type")
            name = tool.get("name")
            if kind == "function" and isinstance(name, str):
                tool_map._add(ToolTarget("function", name))
            elif kind == "custom" and isinstance(name, str):
                tool_map._add(ToolTarget("custom", name))
            elif kind == "namespace" and isinstance(name, str):
                for inner in _nested_functions(tool.get("tools")):
                    tool_map._add(ToolTarget(inner[0], inner[1], namespace=name))
        return tool_map

    def __bool__(self) -> bool:
        return bool(self._by_chat_name)

    def resolve(self, chat_name: str) -> ToolTarget:
        """The Responses identity of a function name the upstream called."""
        target = self._by_chat_name.get(chat_name)
        return target if target is not None else ToolTarget("function", chat_name)

    def chat_name(
        self,
        name: str,
        *,
        namespace: str | None = None,
        kind: Literal["function", "custom"] = "function",
    ) -> str:
        """The Chat function name for a declared tool (or a replayed call to one)."""
        target = ToolTarget(kind, name, namespace)
        known = self._to_chat_name.get(target)
        if known is not None:
            return known
        # A replayed call to a tool that is no longer declared: derive the name the same way.
        return _flat_name(name, namespace)

    def _add(self, target: ToolTarget) -> None:
        if target in self._to_chat_name:
            return
        chat_name = _flat_name(target.name, target.namespace)
        if chat_name in self._by_chat_name:
            # Two declared tools flatten to one name; keep both reachable.
            chat_name = _shorten(f"{chat_name}_{len(self._by_chat_name)}", target)
        self._by_chat_name[chat_name] = target
        self._to_chat_name[target] = chat_name


def _nested_functions(tools: object) -> Iterable[tuple[Literal["function", "custom"], str]]:
    if not isinstance(tools, list):
        return
    for tool in tools:
        if isinstance(tool, Mapping) and isinstance(tool.get("name"), str):
            kind: Literal["function", "custom"] = (
                "custom" if tool.get("type") == "custom" else "function"
            )
            yield kind, tool["name"]


def _flat_name(name: str, namespace: str | None) -> str:
    if namespace:
        joined = namespace + name if namespace.endswith("__") else f"{namespace}__{name}"
    else:
        joined = name
    return _shorten(joined or "_", ToolTarget("function", name, namespace))


def _shorten(flat: str, target: ToolTarget) -> str:
    flat = _INVALID.sub("_", flat)
    if len(flat) <= _MAX_NAME:
        return flat
    digest = hashlib.sha256(f"{target.namespace}\0{target.name}".encode()).hexdigest()[:8]
    return f"{flat[: _MAX_NAME - 9]}_{digest}"
