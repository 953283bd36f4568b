"""Which clients show streamed reasoning, with ``reasoning_events="text"`` and ``"summary"``.

Run ``python -m tests.e2e.reasoning_table`` (after the e2e tests have installed the npm
clients; Codex from tests/e2e/test_codex.py; llama-index needs openai 2, so it runs from the
interpreter named by ``STREAM_MW_LLAMA_INDEX_PYTHON`` when set). For each mode it serves one
scripted turn that streams reasoning then text, asks every client for it the way its users
would, and prints a Markdown table: "yes" when the reasoning reached what the client shows as
reasoning, "no" when the client dropped it, "-" when the client is not installed here.

The README's "Reasoning events" table comes from this script.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.e2e.clients import REASONING, SCENARIOS, ClientServer, client_server

Probe = Callable[[ClientServer], str]

#: llama-index refuses model names it does not know; the server answers this one with reasoning.
LLAMA_INDEX_MODEL = "o4-mini"
#: Streams one chat from ``argv[1]`` and prints the reasoning llama-index shows (a ThinkingBlock).
LLAMA_INDEX_PROBE = f"""
import sys
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai import OpenAIResponses

llm = OpenAIResponses(
    model="{LLAMA_INDEX_MODEL}", api_base=sys.argv[1], api_key="sk-test", max_retries=0
)
shown = ""
for chunk in llm.stream_chat([ChatMessage(role="user", content="Hi")]):
    for block in chunk.message.blocks:
        if type(block).__name__ == "ThinkingBlock":
            shown = block.content or ""
print(shown)
"""


def openai_python(server: ClientServer) -> str:
    from openai import OpenAI
    from openai.types.responses import (
        ResponseReasoningSummaryTextDeltaEvent,
        ResponseReasoningTextDeltaEvent,
    )

    client = OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    # The SDK hands the application every event, typed; either kind can be shown.
    kinds = (ResponseReasoningSummaryTextDeltaEvent, ResponseReasoningTextDeltaEvent)
    with client.responses.stream(model="reasoning", input="Hi") as stream:
        return "".join(e.delta for e in stream if isinstance(e, kinds))


def openai_agents(server: ClientServer) -> str:
    from agents import Agent, OpenAIResponsesModel, RunConfig, Runner
    from openai import AsyncOpenAI

    async def run() -> str:
        client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        agent = Agent(name="probe", model=OpenAIResponsesModel("reasoning", client))
        result = Runner.run_streamed(agent, "Hi", run_config=RunConfig(tracing_disabled=True))
        # As its reasoning example renders reasoning: the summary deltas of the raw stream.
        return "".join(
            [
                event.data.delta
                async for event in result.stream_events()
                if event.type == "raw_response_event"
                and event.data.type == "response.reasoning_summary_text.delta"
            ]
        )

    return asyncio.run(run())


def langchain_openai(server: ClientServer) -> str:
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(
        model="reasoning",
        base_url=server.base_url,
        api_key="sk-test",  # type: ignore[arg-type]
        use_responses_api=True,
        output_version="responses/v1",
    )
    shown = ""
    for chunk in model.stream("Hi"):
        for block in chunk.content:
            if isinstance(block, dict) and block.get("type") == "reasoning":
                shown += "".join(part.get("text", "") for part in block.get("summary", []))
    return shown


def pydantic_ai(server: ClientServer) -> str:
    from pydantic_ai import Agent
    from pydantic_ai.messages import PartDeltaEvent, PartStartEvent, ThinkingPart, ThinkingPartDelta
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    async def run() -> str:
        provider = OpenAIProvider(base_url=server.base_url, api_key="sk-test")
        agent = Agent(OpenAIResponsesModel("reasoning", provider=provider))
        shown = ""
        async with agent.run_stream_events("Hi") as events:
            async for event in events:
                if isinstance(event, PartStartEvent) and isinstance(event.part, ThinkingPart):
                    shown += event.part.content
                elif isinstance(event, PartDeltaEvent) and isinstance(
                    event.delta, ThinkingPartDelta
                ):
                    shown += event.delta.content_delta or ""
        return shown

    return asyncio.run(run())


def llama_index(server: ClientServer) -> str | None:
    python = os.environ.get("STREAM_MW_LLAMA_INDEX_PYTHON")
    if not python:
        return None
    result = subprocess.run(
        [python, "-c", LLAMA_INDEX_PROBE, server.base_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout.strip()


def npm(script: str, field: str | tuple[str, ...]) -> Callable[[ClientServer], str | None]:
    def probe(server: ClientServer) -> str | None:
        from tests.e2e.clients import install_js_clients

        try:
            clients = install_js_clients()
        except BaseException:  # pytest.skip outside pytest
            return None
        out = clients.run(script, server.base_url, "reasoning")
        fields = (field,) if isinstance(field, str) else field
        return "".join(str(out.get(f) or "") for f in fields)

    return probe


def codex(server: ClientServer) -> str | None:
    from tests.e2e.test_codex import _cache_prefix, run_codex

    binary = _cache_prefix() / "node_modules" / ".bin" / "codex"
    if not binary.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        result = run_codex(binary, server.running.url, "Hi", work, Path(tmp) / "home")
    return REASONING if REASONING in result.stdout + result.stderr else ""


CLIENTS: dict[str, Callable[[ClientServer], str | None]] = {
    "openai (Python)": openai_python,
    "openai-node": npm("openai_node.mjs", ("summary", "reasoningText")),
    "openai-agents (Python)": openai_agents,
    "@openai/agents": npm("openai_agents_js.mjs", "reasoning"),
    "langchain-openai": langchain_openai,
    "@langchain/openai": npm("langchain_js.mjs", "reasoning"),
    "pydantic-ai": pydantic_ai,
    "llama-index-llms-openai": llama_index,
    "AI SDK (@ai-sdk/openai)": npm("ai_sdk.mjs", "reasoning"),
    "Codex CLI": codex,
}


def main() -> None:
    # Codex and llama-index name their own models; they get the reasoning turn too.
    SCENARIOS["scripted-model"] = SCENARIOS[LLAMA_INDEX_MODEL] = SCENARIOS["reasoning"]
    modes = ("text", "summary")
    shown: dict[str, dict[str, str]] = {name: {} for name in CLIENTS}
    for mode in modes:
        with client_server(reasoning_events=mode) as server:
            for name, probe in CLIENTS.items():
                try:
                    seen = probe(server)
                except Exception as exc:  # a client that breaks is a finding, not a crash
                    shown[name][mode] = f"error: {type(exc).__name__}"
                    continue
                shown[name][mode] = "-" if seen is None else ("yes" if REASONING in seen else "no")
    print("| client | `text` | `summary` |")
    print("| --- | --- | --- |")
    for name, by_mode in shown.items():
        print(f"| {name} | {by_mode['text']} | {by_mode['summary']} |")
    for mode in modes:
        count = sum(by_mode[mode] == "yes" for by_mode in shown.values())
        print(f"{mode}: reasoning shown in {count} of {len(shown)} clients", file=sys.stderr)


if __name__ == "__main__":
    main()
