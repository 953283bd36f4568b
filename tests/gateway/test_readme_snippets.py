"""The README's shell snippets work as written, against a real ``stream-mw serve``.

Each ``bash`` block that talks to a gateway is run by bash exactly as printed, except for the
port (the README says 8000; the test's gateway listens on a free one). The Quickstart is run
by ``test_quickstart.py`` and the banner's snippets by ``test_cli.py``; blocks that need a
model server, Codex or a clone are not run here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.gateway.helpers import ROOT, running
from tests.gateway.test_cli import run_pasted

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(heading: str) -> str:
    return README.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def on_port(snippet: str, port: int) -> str:
    return snippet.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace(
        "localhost:8000", f"localhost:{port}"
    )


def test_the_convert_example_runs_as_written(tmp_path: Path) -> None:
    [snippet] = blocks(section("### Debugging an upstream: `stream-mw convert`"), "bash")
    work = tmp_path / "work"
    work.mkdir()
    with running("serve", tmp_path=tmp_path) as gateway:
        run_pasted(f"cd {work}\n" + on_port(snippet, gateway.port))
    converted = (work / "responses.sse").read_text()
    assert "event: response.output_text.delta" in converted
    assert "event: response.completed" in converted
    assert '"id":"resp_1"' in converted
    request = json.loads((work / "request.json").read_text())
    assert request["input"] == "hi"


def test_the_running_in_production_snippets_run_as_written(tmp_path: Path) -> None:
    production = section("## Running in production")
    [keys] = blocks(production, "text")
    keys_file = tmp_path / "client-keys"
    keys_file.write_text(keys)
    health, create = blocks(production, "bash")
    with running("serve", "--client-keys", str(keys_file), tmp_path=tmp_path) as gateway:
        probes = run_pasted(on_port(health, gateway.port))
        created = json.loads(run_pasted(on_port(create, gateway.port)))
    assert probes.splitlines() == [
        '{"object":"health","status":"ok"}{"object":"readiness","status":"ready"}'
    ]
    assert created["status"] == "completed"
    assert "Hello!" in created["output"][-1]["content"][0]["text"]
