"""The vocabulary the reader speaks to the state machine: fact kinds and the call record.

Theory of operation
-------------------
The reader (``_chat.py``) turns each chunk into a list of facts, tuples whose first element
is one of the kinds below (the table in ``_chat.py`` gives each one's fields); the state
machine (``_state.py``) acts on them in order. Kinds are small integers so that the state
machine's dispatch is a comparison, not a lookup.

A tool call is the one fact that lives on: ``ChatCall`` is created by the reader when a
fragment is first seen (``NEW_CALL``), keeps its name and raw arguments as more fragments
arrive, and is handed to the state machine, which hangs its own item on ``item``. Both sides
import it from here, so neither imports the other.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ANNOTATION",
    "ARGUMENTS",
    "END",
    "FAIL",
    "FINISH",
    "MODEL",
    "NAMED",
    "NEW_CALL",
    "REASONING",
    "REFUSAL",
    "TEXT",
    "USAGE",
    "ChatCall",
    "Fact",
]

TEXT, ARGUMENTS, REASONING, REFUSAL, ANNOTATION = range(5)
NEW_CALL, NAMED, MODEL, FINISH, USAGE, FAIL, END = range(5, 12)
Fact = tuple[Any, ...]


class ChatCall:
    """One upstream tool call as the reader knows it: identity, name and raw arguments."""

    __slots__ = (
        "announced",
        "arg_bytes",
        "args",
        "custom",
        "held",
        "item",
        "name",
        "namespace",
        "raw_input",
        "tool_name",
        "upstream_id",
    )

    def __init__(self, upstream_id: str | None) -> None:
        self.upstream_id = upstream_id
        #: The Chat function name, once a fragment carried one.
        self.name: str | None = None
        #: A native Chat custom-tool call (OpenAI): ``input`` arrives as is, not as JSON.
        self.raw_input = False
        self.args: list[str] = []
        self.arg_bytes = 0
        #: Whether ``NAMED`` was reported (later arguments are reported as they come).
        self.announced = False
        #: Set with ``NAMED``: the Responses name (as declared, without its namespace), the
        #: namespace it was declared in, and whether it is a custom (freeform) tool.
        self.tool_name = ""
        self.namespace: str | None = None
        self.custom = False
        #: The state machine's item for this call; the reader never reads it.
        self.item: Any = None
        #: Set by the state machine: the call's arguments are held back rather than streamed
        #: (an MCP call that needs approval), so no shortcut may write them as deltas.
        self.held = False

    def arguments(self) -> str:
        args = self.args
        if len(args) > 1:
            args[:] = ["".join(args)]
        return args[0] if args else ""
