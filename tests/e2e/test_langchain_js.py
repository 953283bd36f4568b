"""@langchain/openai's ``ChatOpenAI`` on the Responses API against the middleware, streamed.

``tests/e2e/js/langchain_js.mjs`` streams with ``useResponsesApi: true`` on the pinned Node 22;
reasoning is what the streamed chunks' reasoning content blocks show.
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


def test_a_streamed_answer_arrives_as_text(js_clients: JsClients, server: ClientServer) -> None:
    server.reset()
    result = js_clients.run("langchain_js.mjs", server.base_url, "text")
    assert result["text"] == ANSWER
    [checked] = server.streams()
    assert checked.status == "completed"


def test_streamed_reasoning_is_shown_with_the_default_settings(
    js_clients: JsClients, server: ClientServer
) -> None:
    server.reset()
    result = js_clients.run("langchain_js.mjs", server.base_url, "reasoning")
    assert result["reasoning"] == REASONING
    server.streams()  # the stream it received passes the checker
    assert result["text"] == ANSWER
