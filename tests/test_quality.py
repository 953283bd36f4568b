"""Static checks are part of the test command: ruff (lint + format) on the tree, mypy --strict on the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install the test extra: pip install -e '.[test]'")
    return found


def test_ruff_finds_no_lint_errors() -> None:
    result = _run(_tool("ruff"), "check", "stream_mw", "tests", "examples")
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_ruff_formatted() -> None:
    result = _run(_tool("ruff"), "format", "--check", "stream_mw", "tests", "examples")
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_passes_mypy_strict() -> None:
    result = _run(sys.executable, "-m", "mypy", "--strict", "stream_mw")
    assert result.returncode == 0, result.stdout + result.stderr
