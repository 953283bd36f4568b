"""The converter's parts and the one direction a chunk takes through them.

``_stream.py`` joins a reader of the Chat Completions vocabulary (``_chat.py``, with the
bookkeeping of tool-call fragments in ``_calls.py`` and the facts it reports in
``_facts.py``), the state machine (``_state.py``, with
the records of its output items in ``_output.py``) and the writer of Responses events
(``_events.py``); the byte-level shortcut (``_shortcut.py``) stands beside the reader. A
chunk must visit reader, state machine and writer in that order, so that each can be read
alone: the reader knows nothing of items or events, the writer nothing of chunks or items.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

import stream_mw
from stream_mw import StreamConverter

PACKAGE = Path(stream_mw.__file__).parent
PARTS = ("_chat", "_state", "_events", "_shortcut", "_stream")
# The modules each part is made of besides its own.
PART_OF = {"_calls": "_chat", "_facts": "_chat", "_output": "_state"}
MODULES = (*PARTS, *PART_OF)


def part_imports(module: str) -> set[str]:
    """The other parts that ``module`` (or a module of the same part) imports."""
    part = PART_OF.get(module, module)
    found = {PART_OF.get(name, name) for name in imported_modules(module) if name in MODULES}
    return found - {part}


def imported_modules(module: str) -> set[str]:
    """The ``stream_mw`` modules that ``module`` imports (``from ._x import ...``)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("stream_mw.")
        ):
            found.add(node.module.split(".")[1])
    return found


def test_the_reader_imports_neither_the_state_machine_nor_the_writer() -> None:
    assert part_imports("_chat") == part_imports("_calls") == set()


def test_the_writer_imports_neither_the_reader_nor_the_state_machine() -> None:
    assert part_imports("_events") == set()


def test_the_state_machine_imports_only_the_readers_facts_and_the_writer() -> None:
    # Of the reader, only its vocabulary: the state machine never calls into it.
    assert imported_modules("_state") & set(MODULES) == {"_facts", "_events", "_output"}
    assert imported_modules("_output") & set(MODULES) <= {"_facts", "_events"}


def test_the_vocabulary_imports_no_part() -> None:
    assert imported_modules("_facts") & set(MODULES) == set()


def test_the_shortcut_imports_no_other_part() -> None:
    assert part_imports("_shortcut") == set()


def test_the_converter_modules_import_no_cycle() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    graph = {module: imported_modules(module) & modules for module in modules}

    def reachable(start: str) -> Iterator[str]:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                yield module
                todo.extend(graph.get(module, ()))

    converter = {"_stream", *reachable("_stream")}
    cyclic = sorted(module for module in converter if module in set(reachable(module)))
    assert cyclic == []


def _event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def calls_between_parts(converter: StreamConverter, data: bytes) -> list[tuple[str, str]]:
    """Every call from one part into another while ``converter`` reads ``data``, as
    ``(caller, callee)`` module names, in order."""
    calls: list[tuple[str, str]] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event != "call" or frame.f_back is None:
            return
        callee = frame.f_globals.get("__name__", "").removeprefix("stream_mw.")
        caller = frame.f_back.f_globals.get("__name__", "").removeprefix("stream_mw.")
        callee, caller = PART_OF.get(callee, callee), PART_OF.get(caller, caller)
        if callee != caller and callee in PARTS and caller in PARTS:
            calls.append((caller, callee))

    sys.setprofile(profile)
    try:
        converter.feed(data)
    finally:
        sys.setprofile(None)
    return calls


def test_one_chunk_visits_reader_then_state_machine_then_writer() -> None:
    converter = StreamConverter({"model": "m", "tools": [{"type": "custom", "name": "patch"}]})
    converter.start()
    converter.feed(_event({"role": "assistant", "content": ""}))
    # One chunk that opens reasoning, a message and a call at once: the general path.
    chunk = _event(
        {
            "reasoning_content": "think",
            "content": "text",
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c1",
                    "function": {"name": "patch", "arguments": '{"input":"x'},
                }
            ],
        }
    )
    calls = calls_between_parts(converter, chunk)
    visited = [callee for _, callee in calls]
    assert visited.index("_chat") < visited.index("_state") < visited.index("_events")
    # Once the state machine has the facts, the reader is not asked again, and nothing
    # calls back from the writer or from the state machine into the reader.
    assert "_chat" not in visited[visited.index("_state") :]
    assert set(calls) <= {
        ("_stream", "_chat"),
        ("_stream", "_state"),
        ("_stream", "_events"),
        ("_stream", "_shortcut"),
        ("_state", "_events"),
    }


def test_a_chunk_read_by_the_shortcut_skips_the_reader() -> None:
    converter = StreamConverter({"model": "m"})
    converter.start()
    for word in ["a", "b", "c", "d"]:
        converter.feed(_event({"content": word}))
    calls = calls_between_parts(converter, _event({"content": "e"}))
    assert [callee for _, callee in calls] == ["_shortcut", "_events"]


REQUEST_MODULES = {
    "_requests",
    "_request_validation",
    "_request_history",
    "_request_content",
    "_request_tools",
}


def test_the_request_modules_import_each_other_in_one_direction_only() -> None:
    # No part calls back into the entry points, and the validator, which every part trusts
    # to have checked the body, depends on no translation.
    assert imported_modules("_requests") & REQUEST_MODULES == {
        "_request_validation",
        "_request_history",
        "_request_tools",
    }
    assert imported_modules("_request_validation") & REQUEST_MODULES == set()
    assert imported_modules("_request_content") & REQUEST_MODULES == {"_request_validation"}
    assert imported_modules("_request_history") & REQUEST_MODULES == {"_request_content"}
    assert imported_modules("_request_tools") & REQUEST_MODULES == set()
