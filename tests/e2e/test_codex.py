"""Codex CLI against ``stream-mw serve``: the real client, over loopback, with a scripted model.

Codex (the ``@openai/codex`` npm package, pinned) is configured as a custom provider with
``wire_api = "responses"`` pointing at the gateway, with a fresh ``CODEX_HOME`` and no retries
(``stream_max_retries = 0``, ``request_max_retries = 0``) so a failure shows at once. Behind
the gateway a scripted Chat Completions backend plays the model:

(a) it answers with text, and ``codex exec`` prints it;
(b) it calls Codex's shell tool ``exec_command`` with ``echo ran > marker.txt``: Codex runs
    it (``marker.txt`` appears), the second request carries the ``function_call_output``
    (as a Chat ``tool`` message the backend recorded), and the final answer is printed;
(c) it drops the connection in the middle of that call's arguments: Codex reports the failure
    and never runs the truncated command (no ``marker.txt``).

Each scenario runs with the backend inside the gateway (``--script``) and with the gateway's
httpx proxy in front of a separate ``stream-mw scripted`` process; (a) also runs through the
LiteLLM app (``--litellm-model`` with LiteLLM's ``mock_response``).

Codex is installed once into a cache folder (``$CODEX_NPM_PREFIX``, default
``~/.cache/stream-mw/codex-<version>``) with ``npm install``; the tests are skipped only when
node or npm is missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.helpers import running, write_script

pytestmark = pytest.mark.codex

CODEX_VERSION = "0.169.0"
ANSWER = "The scripted answer is 42."
FINAL = "Wrote marker.txt for you."
COMMAND = "echo ran > marker.txt"
CALL_ID = "call_marker_1"

TEXT_TURNS = [{"text": ANSWER}]
TOOL_TURNS = [
    {"tool_call": {"name": "exec_command", "arguments": {"cmd": COMMAND}, "call_id": CALL_ID}},
    {"text": FINAL},
]
# Chunks: role, the call's id and name, then 2 of its 4 argument fragments, then EOF.
DROPPED_TURNS = [
    {
        "tool_call": {"name": "exec_command", "arguments": {"cmd": COMMAND}},
        "fragments": 4,
        "drop_after": 4,
    },
    {"text": "never sent"},
]


def _cache_prefix() -> Path:
    configured = os.environ.get("CODEX_NPM_PREFIX")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "stream-mw" / f"codex-{CODEX_VERSION}"


@pytest.fixture(scope="session")
def codex() -> Path:
    """The pinned Codex CLI, installed with npm into a cache folder on first use."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.skip("Codex CLI tests need node and npm on PATH (not found)")
    prefix = _cache_prefix()
    binary = prefix / "node_modules" / ".bin" / "codex"
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / ".install.lock", "w") as lock:
        # Two test runs installing into one folder at once would corrupt it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            install = subprocess.run(
                [
                    npm,
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                    str(prefix),
                    f"@openai/codex@{CODEX_VERSION}",
                ],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert install.returncode == 0, f"npm install failed:\n{install.stderr}"
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert CODEX_VERSION in version.stdout, version.stdout
    return binary


@dataclass
class Stack:
    """A running gateway, and where its scripted model records the chat requests."""

    gateway_url: str
    recorder_url: str

    def chat_requests(self) -> list[dict[str, Any]]:
        recorded = httpx.get(self.recorder_url + "/_scripted/requests", timeout=10).json()
        return [r["body"] for r in recorded if r["path"].endswith("/chat/completions")]


@contextlib.contextmanager
def stack(mode: str, turns: Sequence[Mapping[str, Any]], tmp_path: Path) -> Iterator[Stack]:
    script = str(write_script(tmp_path / "turns.json", turns))
    if mode == "in-gateway":
        with running("serve", "--script", script, tmp_path=tmp_path) as gateway:
            yield Stack(gateway.url, gateway.url)
    else:
        with (
            running("scripted", "--script", script, tmp_path=tmp_path) as upstream,
            running("serve", "--upstream", upstream.url + "/v1", tmp_path=tmp_path) as gateway,
        ):
            yield Stack(gateway.url, upstream.url)


def run_codex(
    codex: Path,
    gateway_url: str,
    prompt: str,
    workdir: Path,
    home: Path,
    options: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "CODEX_"))
        and k.lower() not in ("http_proxy", "https_proxy")
    }
    env |= {"CODEX_HOME": str(home), "OPENAI_API_KEY": "x"}
    provider = "model_providers.mw"
    command = [
        str(codex),
        "exec",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        "-c",
        "model_provider=mw",
        "-c",
        f'{provider}.name="mw"',
        "-c",
        f'{provider}.base_url="{gateway_url}/v1"',
        "-c",
        f'{provider}.wire_api="responses"',
        "-c",
        f"{provider}.stream_max_retries=0",
        "-c",
        f"{provider}.request_max_retries=0",
        "-c",
        "model=scripted-model",
        *options,
        prompt,
    ]
    return subprocess.run(
        command,
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


MODES = ["in-gateway", "behind-proxy"]


@pytest.mark.parametrize("mode", MODES)
def test_a_codex_exec_prints_the_scripted_answer(codex: Path, tmp_path: Path, mode: str) -> None:
    with stack(mode, TEXT_TURNS, tmp_path) as running_stack:
        result = run_codex(
            codex,
            running_stack.gateway_url,
            "What is the answer?",
            workdir(tmp_path),
            tmp_path / "h",
        )
        [request] = running_stack.chat_requests()
    assert result.returncode == 0, result.stderr
    assert ANSWER in result.stdout
    # It was Codex talking: its shell tool is among the tools the backend was offered.
    assert "exec_command" in [t["function"]["name"] for t in request["tools"]]


@pytest.mark.parametrize("mode", MODES)
def test_b_codex_runs_the_shell_call_and_sends_its_output_back(
    codex: Path, tmp_path: Path, mode: str
) -> None:
    work = workdir(tmp_path)
    with stack(mode, TOOL_TURNS, tmp_path) as running_stack:
        result = run_codex(
            codex, running_stack.gateway_url, "Write the marker file.", work, tmp_path / "h"
        )
        requests = running_stack.chat_requests()
    assert result.returncode == 0, result.stderr
    assert (work / "marker.txt").read_text().strip() == "ran"
    assert FINAL in result.stdout
    assert len(requests) == 2
    replayed, output = requests[1]["messages"][-2:]
    assert replayed["role"] == "assistant"
    [call] = replayed["tool_calls"]
    assert call["id"] == CALL_ID
    assert call["function"]["name"] == "exec_command"
    assert json.loads(call["function"]["arguments"]) == {"cmd": COMMAND}
    assert output["role"] == "tool"
    assert output["tool_call_id"] == CALL_ID
    assert "exited with code 0" in output["content"]


@pytest.mark.parametrize("mode", MODES)
def test_c_codex_never_runs_a_call_cut_off_mid_arguments(
    codex: Path, tmp_path: Path, mode: str
) -> None:
    work = workdir(tmp_path)
    with stack(mode, DROPPED_TURNS, tmp_path) as running_stack:
        result = run_codex(
            codex, running_stack.gateway_url, "Write the marker file.", work, tmp_path / "h"
        )
        requests = running_stack.chat_requests()
    assert result.returncode != 0
    assert "ERROR" in result.stdout + result.stderr
    assert "stream disconnected before completion" in result.stdout + result.stderr
    assert not (work / "marker.txt").exists()
    assert list(work.iterdir()) == []
    assert len(requests) == 1  # no retry, and no second turn


def test_a_codex_exec_prints_the_answer_through_the_litellm_app(
    codex: Path, tmp_path: Path
) -> None:
    if importlib.util.find_spec("litellm") is None:
        pytest.skip("needs LiteLLM: pip install 'stream-mw[litellm]'")
    kwargs = json.dumps({"mock_response": ANSWER, "api_key": "unused"})
    with running(
        "serve",
        "--litellm-model",
        "openai/scripted-model",
        "--litellm-kwargs",
        kwargs,
        tmp_path=tmp_path,
    ) as gateway:
        result = run_codex(
            codex, gateway.url, "What is the answer?", workdir(tmp_path), tmp_path / "h"
        )
    assert result.returncode == 0, result.stderr
    assert ANSWER in result.stdout
    assert "LiteLLM model openai/scripted-model" in gateway.banner


# --- The rest of the client table's scenarios (in the gateway; the path is the same) ----------

REASONING = "Thinking about the answer."


def test_codex_shows_the_streamed_reasoning_with_the_default_settings(
    codex: Path, tmp_path: Path
) -> None:
    turns = [{"text": ANSWER, "reasoning": REASONING}]
    with stack("in-gateway", turns, tmp_path) as running_stack:
        result = run_codex(
            codex, running_stack.gateway_url, "Hi", workdir(tmp_path), tmp_path / "h"
        )
    assert result.returncode == 0, result.stderr
    assert REASONING in result.stderr
    assert ANSWER in result.stdout


def test_codex_runs_parallel_calls_and_answers_after_both(codex: Path, tmp_path: Path) -> None:
    calls = [
        {
            "name": "exec_command",
            "arguments": {"cmd": f"echo {n} > {n}.txt"},
            "call_id": f"call_{n}",
        }
        for n in ("a", "b")
    ]
    work = workdir(tmp_path)
    with stack("in-gateway", [{"tool_calls": calls}, {"text": FINAL}], tmp_path) as running_stack:
        result = run_codex(codex, running_stack.gateway_url, "Write both.", work, tmp_path / "h")
        requests = running_stack.chat_requests()
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in work.iterdir()) == ["a.txt", "b.txt"]
    assert FINAL in result.stdout
    outputs = [m["tool_call_id"] for m in requests[1]["messages"] if m["role"] == "tool"]
    assert sorted(outputs) == ["call_a", "call_b"]


@pytest.mark.parametrize(
    ("turn", "reported"),
    [
        (
            {"error": {"message": "Rate limit reached; try again in 2s.",
                       "type": "requests", "code": "rate_limit_exceeded"}, "status": 429},
            "429 Too Many Requests",
        ),
        (
            {"text": "Partial answer", "error": "The model crashed mid-generation."},
            "The model crashed mid-generation.",
        ),
        (
            {"text": "This answer is cut", "finish_reason": "length"},
            "Incomplete response returned, reason: max_output_tokens",
        ),
    ],
    ids=["upstream-429", "error-mid-stream", "max-tokens"],
)  # fmt: skip
def test_codex_reports_an_answer_that_did_not_complete(
    codex: Path, tmp_path: Path, turn: dict[str, Any], reported: str
) -> None:
    with stack("in-gateway", [turn], tmp_path) as running_stack:
        result = run_codex(
            codex, running_stack.gateway_url, "Hi", workdir(tmp_path), tmp_path / "h"
        )
        requests = running_stack.chat_requests()
    assert result.returncode != 0
    assert reported in result.stderr
    assert len(requests) == 1  # no retry


def test_codex_replays_its_reasoning_statelessly_and_the_model_gets_it_back(
    codex: Path, tmp_path: Path
) -> None:
    # Codex runs stateless (store: false, never previous_response_id) and replays the
    # reasoning item it was given; with reasoning_passback the model sees it on the next turn.
    turns = [{"reasoning": REASONING, **TOOL_TURNS[0]}, TOOL_TURNS[1]]
    script = str(write_script(tmp_path / "turns.json", turns))
    work = workdir(tmp_path)
    passback = {"STREAM_MW_REASONING_PASSBACK": "true"}
    with running("serve", "--script", script, tmp_path=tmp_path, env=passback) as gateway:
        result = run_codex(codex, gateway.url, "Write the marker file.", work, tmp_path / "h")
        recorded = httpx.get(gateway.url + "/_scripted/requests", timeout=10).json()
    assert result.returncode == 0, result.stderr
    assert (work / "marker.txt").exists()
    second = [r["body"] for r in recorded if r["path"].endswith("/chat/completions")][1]
    [replayed] = [m for m in second["messages"] if m.get("tool_calls")]
    assert replayed["reasoning_content"] == REASONING


# Codex uses the WebSocket mode when the provider says it supports it; the feature flags
# turned it on in releases before it became the default (unknown ones are ignored).
WEBSOCKET_OPTIONS = ["-c", "model_providers.mw.supports_websockets=true"]


def test_codex_runs_the_tool_loop_over_the_websocket_mode(codex: Path, tmp_path: Path) -> None:
    work = workdir(tmp_path)
    with stack("in-gateway", TOOL_TURNS, tmp_path) as running_stack:
        result = run_codex(
            codex,
            running_stack.gateway_url,
            "Write the marker file.",
            work,
            tmp_path / "h",
            WEBSOCKET_OPTIONS,
        )
        requests = running_stack.chat_requests()
    assert result.returncode == 0, result.stderr
    assert "Falling back from WebSockets" not in result.stderr
    assert (work / "marker.txt").read_text().strip() == "ran"
    assert FINAL in result.stdout
    assert len(requests) == 2
    replayed, output = requests[1]["messages"][-2:]
    assert replayed["tool_calls"][0]["id"] == CALL_ID
    assert output["role"] == "tool"
    assert output["tool_call_id"] == CALL_ID
