"""Fuzz: any request body through the middleware gets a 2xx or an OpenAI-shaped 4xx.

Bodies are valid, near-valid (one thing broken) and garbage (binary, non-object JSON, deep
nesting, huge strings, other encodings), delivered in 1 to 8 ``http.request`` messages, to
the middleware in process (raw ASGI, no sockets). Never a 5xx, never an exception, and a
rejected request never reaches the wrapped app.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings

from stream_mw import ResponsesMiddleware
from tests.checker import check_stream
from tests.faults.harness import asgi_call, assert_openai_error
from tests.fuzz.apps import EchoChat
from tests.fuzz.strategies import any_body, split

# Small enough that the huge-string bodies cross it cheaply; the 413 path is part of the fuzz.
MAX_REQUEST_BYTES = 256 * 1024

FUZZ = settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    # The explain phase re-runs failures to annotate lines; it adds nothing here and has
    # crashed inside Hypothesis on this suite's composite strategies.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


async def send_body(body: bytes, pieces: list[bytes]) -> int:
    echo = EchoChat()
    app = ResponsesMiddleware(echo, max_request_bytes=MAX_REQUEST_BYTES, keepalive_interval=0)
    result = await asgi_call(app, pieces)
    assert result.error is None, f"unhandled {result.error!r} for {body[:200]!r}"
    assert result.complete, result.messages
    status = result.status
    assert 200 <= status < 300 or 400 <= status < 500, (status, result.body[:500], body[:200])
    if status >= 400:
        error = assert_openai_error(result.body)
        if status == 413:
            assert "max_request_bytes" in error["message"], error
        assert echo.calls == [], "a rejected request reached the wrapped app"
        return status
    assert len(echo.calls) == 1
    chat = echo.calls[0]
    assert isinstance(chat.get("model"), str)
    assert isinstance(chat.get("messages"), list)
    if result.headers["content-type"].startswith("text/event-stream"):
        check_stream(result.body)
    else:
        response = json.loads(result.body)
        assert response["object"] == "response"
        assert response["status"] == "completed"
    return status


@pytest.mark.anyio
@FUZZ
@given(case=split(any_body))
async def test_any_request_body_gets_a_2xx_or_an_openai_shaped_4xx(
    case: tuple[bytes, list[bytes]],
) -> None:
    body, pieces = case
    status = await send_body(body, pieces)
    event(f"HTTP {status}")


@pytest.mark.anyio
@pytest.mark.parametrize("field", ["metadata", "client_metadata", "text", "tools"])
async def test_a_body_nested_deeper_than_the_encoder_allows_gets_a_400_not_an_exception(
    field: str,
) -> None:
    # Found by the property above: orjson parses 1,024 levels but encodes only 255, so a
    # pass-through field nested 400 deep parsed fine and then crashed re-encoding.
    nested = '{"a":' * 400 + "1" + "}" * 400
    if field == "text":
        nested = f'{{"format":{{"type":"json_schema","name":"s","schema":{nested}}}}}'
    elif field == "tools":
        nested = f'[{{"type":"function","name":"f","parameters":{nested}}}]'
    body = f'{{"model":"m","input":"hi","{field}":{nested}}}'.encode()
    assert await send_body(body, [body]) == 400
