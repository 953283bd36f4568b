"""The README never lies: CI runs its test command, and it documents every setting."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from stream_mw import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README's Quickstart has no ```bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quickstart_is_exactly_two_commands_serve_then_test() -> None:
    commands = quickstart_commands()
    assert len(commands) == 2, commands
    assert "stream-mw serve" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci_script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = quickstart_commands()[1]
    run_lines = [
        line.strip() for line in ci_script.splitlines() if not line.lstrip().startswith("#")
    ]
    assert test_command in run_lines


def test_settings_table_documents_every_field() -> None:
    table = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE))
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert documented == fields, (fields - documented, documented - fields)


def test_settings_table_defaults_match_the_code() -> None:
    table = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    for field in dataclasses.fields(Settings):
        row = re.search(
            rf"^\| `{field.name}` \| [^|]*(?:\\\|[^|]*)* \| `([^`]*)`", table, re.MULTILINE
        )
        assert row is not None, field.name
        assert row.group(1) == repr(field.default).replace("'", '"'), field.name
