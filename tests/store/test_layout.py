"""The store package's shape: backends side by side on one protocol, and no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import stream_mw

PACKAGE = Path(stream_mw.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The ``stream_mw`` modules ``path`` imports, anywhere in it (lazy imports count: a cycle
    through a function-level import is still a cycle)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("stream_mw"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if not target.startswith("stream_mw"):
                continue
            # ``from . import x`` names a submodule; ``from .m import f`` names module m.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
    found.discard(module)
    return found


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (
        PACKAGE / relative / "__init__.py"
    ).exists()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path from ``start`` back to itself, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


STORE_MODULES = sorted(
    name for name in _graph() if name.startswith(("stream_mw._store", "stream_mw._conversations"))
)


@pytest.mark.parametrize("module", STORE_MODULES)
def test_no_store_module_is_part_of_an_import_cycle(module: str) -> None:
    assert _cycle_through(_graph(), module) is None


def test_the_backends_import_only_the_protocol_of_the_store_package() -> None:
    graph = _graph()
    for backend in ("memory", "sqlite", "redis"):
        inside = {m for m in graph[f"stream_mw._store.{backend}"] if m.startswith("stream_mw._")}
        store_deps = {m for m in inside if m.startswith("stream_mw._store")}
        assert store_deps == {"stream_mw._store._protocol"}, backend


@pytest.mark.parametrize("module", STORE_MODULES)
def test_each_store_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    # A cycle that matters shows up as an ImportError when its modules load in another order.
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)


def test_the_old_store_cycle_is_gone_and_the_check_would_see_one() -> None:
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycle_through(graph, "a") == ["a", "b", "a"]
    assert _cycle_through(graph, "c") is None
