"""``POST /v1/responses/input_tokens`` with the openai SDK over uvicorn: counted by the
wrapped app's ``/tokenize`` when it has one, a clear 501 when it has not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from stream_mw import ResponsesMiddleware
from tests.e2e.conftest import serve
from tests.gateway.helpers import running, write_script


class CountingBackend:
    """A backend whose ``POST /tokenize`` counts one token per word of the messages."""

    def __init__(self) -> None:
        self.questions: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if scope["path"] != "/tokenize":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        question = orjson.loads(body)
        self.questions.append(question)
        words = sum(len(str(m["content"]).split()) for m in question["messages"])
        answer = orjson.dumps({"count": words, "max_model_len": 4096, "tokens": []})
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


def test_the_input_is_counted_by_the_backends_tokenizer() -> None:
    backend = CountingBackend()
    with serve(ResponsesMiddleware(backend)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
        counted = client.responses.input_tokens.count(
            model="m", instructions="Be brief.", input="one two three"
        )
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == 5
    [question] = backend.questions
    assert question["model"] == "m"
    assert [m["role"] for m in question["messages"]] == ["system", "user"]


def test_a_backend_that_cannot_count_gets_a_clear_501(tmp_path: Path) -> None:
    script = write_script(tmp_path / "script.json", [{"text": "x"}])
    with running("serve", "--script", str(script), tmp_path=tmp_path) as process:
        client = openai.OpenAI(base_url=process.url + "/v1", api_key="k", max_retries=0)
        with pytest.raises(openai.APIStatusError) as refused:
            client.responses.input_tokens.count(model="m", input="hi")
    assert refused.value.status_code == 501
    assert refused.value.code == "input_tokens_unsupported"
    assert "/tokenize" in refused.value.message
