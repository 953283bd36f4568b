"""@openai/agents (the Agents SDK for TypeScript) against the middleware, streamed.

``tests/e2e/js/openai_agents_js.mjs`` runs an agent over ``OpenAIResponsesModel`` with the
pinned Node 22; reasoning is what a run shows as reasoning, the reasoning item's content.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.clients import ANSWER, REASONING, ClientServer, JsClients, client_server

pytestmark = pytest.mark.npm


@pytest.fixture(scope="module")
def server() -> Iterator[ClientServer]:
    with client_server() as running:
        yield running


def test_a_streamed_run_returns_the_text_answer(
    js_clients: JsClients, server: ClientServer
) -> None:
    server.reset()
    result = js_clients.run("openai_agents_js.mjs", server.base_url, "text")
    assert result["text"] == result["finalOutput"] == ANSWER
    [checked] = server.streams()
    assert checked.status == "completed"


def test_streamed_reasoning_is_shown_with_the_default_settings(
    js_clients: JsClients, server: ClientServer
) -> None:
    server.reset()
    result = js_clients.run("openai_agents_js.mjs", server.base_url, "reasoning")
    assert result["reasoning"] == REASONING
    server.streams()  # the stream it received passes the checker
    assert result["finalOutput"] == ANSWER
