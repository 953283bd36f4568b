"""Which upstream tool call each fragment belongs to, and the bound on its arguments.

Theory of operation
-------------------
Chat Completions streams a tool call as fragments: the first usually carries an ``id``, an
``index`` and the function ``name``, later ones more ``arguments``. Providers differ in
which of these they repeat, so ``Calls.fragment`` finds a fragment's call in this order:

- by its upstream ``id``, when one was seen before;
- else by its ``index`` (a new ``id`` at a used index is a new call: Ollama puts every call
  at index 0), else by its position in the delta;
- a name repeated on every fragment (Gemini) does not start a new call unless the previous
  call's arguments are already whole JSON.

A call is announced (``NAMED``) once its name is known, mapped back to the tool the request
declared (its namespace, or a custom tool); arguments that came before are reported with the
announcement, later ones as ``ARGUMENTS`` facts. Arguments sent as an object rather than a
JSON string are encoded; native custom-tool calls (``custom`` with ``input``) and the
pre-tools ``function_call`` are read as calls too. Every argument counts against
``max_argument_bytes``, and the fragment that breaks the bound becomes a ``FAIL`` fact.

``fast_call`` is the call the last arguments-only chunk went to: the reader's common-chunk
path and the byte-level shortcut route there, until a new call may take over its index.
This module is part of the reader: it knows nothing of items or events.
"""

from __future__ import annotations

from typing import Any

import orjson

from ._errors import UpstreamProtocolError
from ._facts import ARGUMENTS, FAIL, NAMED, NEW_CALL, ChatCall, Fact
from ._tools import ToolMap

__all__ = ["Calls"]

_dumps = orjson.dumps
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


class Calls:
    """The tool calls of one stream, by upstream id and by index (see the module docstring).

    Args:
        tools: The request's tools, to map a called Chat name back to the declared tool.
        max_argument_bytes: The bound on one call's arguments; more fails the stream.
    """

    __slots__ = ("_by_id", "_max_arguments", "_tools", "by_key", "fast_call")

    def __init__(self, tools: ToolMap, max_argument_bytes: int) -> None:
        self._tools = tools
        self._max_arguments = max_argument_bytes
        #: The calls by index (or position), as the common-chunk path finds them.
        self.by_key: dict[int, ChatCall] = {}
        self._by_id: dict[str, ChatCall] = {}
        #: The call the last arguments-only chunk went to; ``None`` once a new call may have
        #: taken over its index.
        self.fast_call: ChatCall | None = None

    def clear(self) -> None:
        """Forget every call: a new stream numbers its calls from index 0 again."""
        self.by_key = {}
        self._by_id = {}
        self.fast_call = None

    def fragment(self, fragment: dict[str, Any], position: int, facts: list[Fact]) -> bool:
        """Read one tool-call fragment into ``facts``; whether it ended with ``FAIL``."""
        function = fragment.get("function")
        custom = fragment.get("custom")
        raw_input = False
        if not isinstance(function, dict) and isinstance(custom, dict):
            function = {"name": custom.get("name"), "arguments": custom.get("input")}
            raw_input = True
        elif not isinstance(function, dict):
            function = {}
        name = function.get("name")
        arguments = function.get("arguments")
        call = self._find(fragment, position, name, facts)
        if raw_input:
            call.raw_input = True
        if call.name is None and isinstance(name, str) and name:
            call.name = name
        if arguments is not None and not isinstance(arguments, str):
            # Some backends send the arguments as an object rather than a JSON string.
            arguments = _dumps(arguments).decode()
        if arguments and self.add(call, arguments, facts):
            return True
        if not call.announced and call.name is not None:
            target = self._tools.resolve(call.name)
            call.tool_name = target.name
            call.namespace = target.namespace
            call.custom = target.kind == "custom" or call.raw_input
            call.announced = True
            facts.append((NAMED, call))
        return False

    def _find(
        self, fragment: dict[str, Any], position: int, name: object, facts: list[Fact]
    ) -> ChatCall:
        """The call a fragment belongs to: by upstream id, else by index (else position)."""
        upstream_id = fragment.get("id")
        if not (isinstance(upstream_id, str) and upstream_id):
            upstream_id = None
        else:
            known = self._by_id.get(upstream_id)
            if known is not None:
                return known
        index = fragment.get("index")
        indexed = isinstance(index, int) and not isinstance(index, bool)
        key: int = index if isinstance(index, int) and indexed else position
        existing = self.by_key.get(key)
        if existing is not None:
            if upstream_id is None:
                # Without an id, an explicit index is the call's identity (a name may be
                # repeated on every fragment). Without either, a name starts a new call when
                # the previous one has another name or its arguments are already whole.
                if (
                    indexed
                    or not (isinstance(name, str) and name and existing.name)
                    or (name == existing.name and not _complete_json(existing.arguments()))
                ):
                    return existing
            elif existing.upstream_id is None and not existing.announced:
                existing.upstream_id = upstream_id
                self._by_id[upstream_id] = existing
                return existing
            # Otherwise a different id at a known index (Ollama puts every call at index 0):
            # a new call.
        call = ChatCall(upstream_id)
        # The new call may take over an index the common-chunk path routes by.
        self.fast_call = None
        self.by_key[key] = call
        if upstream_id is not None:
            self._by_id[upstream_id] = call
        facts.append((NEW_CALL, call))
        return call

    def add(self, call: ChatCall, text: str, facts: list[Fact]) -> bool:
        """Add ``text`` to ``call``'s arguments; whether that broke the bound (``FAIL``)."""
        call.arg_bytes += len(text) if text.isascii() else len(text.encode())
        if call.arg_bytes > self._max_arguments:
            facts.append((FAIL, self.too_long()))
            return True
        call.args.append(text)
        if call.announced:
            facts.append((ARGUMENTS, call, text))
        # Otherwise the call is announced, with everything so far, once its name arrives.
        return False

    def too_long(self) -> UpstreamProtocolError:
        return UpstreamProtocolError(
            f"upstream tool call arguments exceed max_argument_bytes ({self._max_arguments} "
            "bytes); raise Settings.max_argument_bytes to allow larger calls"
        )

    def extend(self, call: ChatCall, texts: list[str]) -> int:
        """More arguments for the announced ``call``, in order, up to the one that breaks the
        bound; how many were added (fewer than ``len(texts)`` when one broke it)."""
        size = call.arg_bytes
        limit = self._max_arguments
        for n, text in enumerate(texts):
            size += len(text) if text.isascii() else len(text.encode())
            if size > limit:
                call.arg_bytes = size
                call.args += texts[:n]
                return n
        call.arg_bytes = size
        call.args += texts
        return len(texts)

    def more(self, call: ChatCall, text: str) -> None:
        """More arguments for the announced ``call`` (its next fragment, read by a shortcut,
        which stands for ``(ARGUMENTS, call, text)``). Raises when they break the bound."""
        call.arg_bytes += len(text) if text.isascii() else len(text.encode())
        if call.arg_bytes > self._max_arguments:
            raise self.too_long()
        call.args.append(text)


def _complete_json(text: str) -> bool:
    if not text:
        return False
    try:
        _loads(text)
    except _JSONDecodeError:
        return False
    return True
