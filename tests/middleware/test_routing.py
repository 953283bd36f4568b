"""What reaches the wrapped app: rejected requests, the rewritten request, pass-through."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from stream_mw import ConfigurationError, ResponsesMiddleware, Settings
from stream_mw._middleware import SettingsOverrides
from tests.e2e.apps import USAGE, chunk, sse
from tests.middleware.harness import END, Upstream, drive, http_scope, middleware, responses_body

pytestmark = pytest.mark.anyio

TEXT = [
    sse(chunk({"content": "ok"})),
    sse(chunk(finish="stop")),
    sse(chunk(usage=USAGE, choices=False)),
    b"data: [DONE]\n\n",
]


def text_upstream() -> Upstream:
    return Upstream([*TEXT, END])


# --- rejected before the app is called ----------------------------------------------------------


async def test_a_declared_content_length_over_the_limit_is_413_without_reading_the_body() -> None:
    upstream = text_upstream()
    scope = http_scope(headers=[(b"content-length", b"5000")])
    exchange = await drive(middleware(upstream, max_request_bytes=1000), [b"x" * 5000], scope=scope)

    exchange.check()
    assert exchange.status == 413
    assert exchange.receive_calls == 0
    assert upstream.calls == 0
    error = exchange.json()["error"]
    assert "1000 bytes" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "request_too_large"


async def test_a_chunked_body_over_the_limit_is_413_as_soon_as_it_crosses_it() -> None:
    upstream = text_upstream()
    chunks = [b"x" * 400] * 10
    exchange = await drive(middleware(upstream, max_request_bytes=1000), chunks)

    assert exchange.status == 413
    assert exchange.receive_calls == 3
    assert upstream.calls == 0
    assert exchange.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (orjson.dumps({"input": "hi"}), "model"),
        (orjson.dumps({"model": "m", "input": [{"type": "no_such_item"}]}), "input[0].type"),
        (orjson.dumps({"model": "m", "input": "hi", "temperature": "hot"}), "temperature"),
    ],
)
async def test_an_invalid_request_is_400_and_the_app_is_never_called(
    body: bytes, param: str | None
) -> None:
    upstream = text_upstream()
    exchange = await drive(middleware(upstream), body)

    exchange.check()
    assert exchange.status == 400
    assert upstream.calls == 0
    error = exchange.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


async def test_previous_response_id_without_a_store_is_400() -> None:
    upstream = text_upstream()
    body = responses_body(previous_response_id="resp_" + "0" * 48)
    exchange = await drive(middleware(upstream, store_url=None), body)

    assert exchange.status == 400
    assert exchange.json()["error"]["param"] == "previous_response_id"
    assert upstream.calls == 0


async def test_an_unknown_previous_response_id_is_404() -> None:
    upstream = text_upstream()
    body = responses_body(previous_response_id="resp_" + "0" * 48)
    exchange = await drive(middleware(upstream), body)

    assert exchange.status == 404
    assert exchange.json()["error"]["param"] == "previous_response_id"
    assert upstream.calls == 0


async def test_an_unknown_conversation_is_404_naming_it() -> None:
    upstream = text_upstream()
    body = responses_body(conversation="conv_1")
    exchange = await drive(middleware(upstream, store_url="memory://"), body)

    assert exchange.status == 404
    error = exchange.json()["error"]
    assert error["param"] == "conversation"
    assert "Conversation with id 'conv_1' not found" in error["message"]
    assert upstream.calls == 0


async def test_conversation_without_a_store_is_a_400_that_says_a_store_is_needed() -> None:
    upstream = text_upstream()
    body = responses_body(conversation={"id": "conv_1"})
    exchange = await drive(middleware(upstream, store_url=None), body)

    assert exchange.status == 400
    error = exchange.json()["error"]
    assert error["param"] == "conversation"
    assert "needs a store" in error["message"]
    assert "store_url is None" in error["message"]
    assert upstream.calls == 0


async def test_conversation_with_previous_response_id_is_a_400_naming_both() -> None:
    upstream = text_upstream()
    body = responses_body(conversation="conv_1", previous_response_id="resp_1")
    exchange = await drive(middleware(upstream, store_url="memory://"), body)

    assert exchange.status == 400
    message = exchange.json()["error"]["message"]
    assert "'previous_response_id' and 'conversation'" in message
    assert upstream.calls == 0


async def test_a_client_leaving_while_sending_the_body_never_calls_the_app() -> None:
    upstream = text_upstream()

    async def app_receive_disconnect(scope: Scope, receive: Receive, send: Send) -> None:
        async def gone() -> Message:
            return {"type": "http.disconnect"}

        await middleware(upstream)(scope, gone, send)

    exchange = await drive(app_receive_disconnect, responses_body())
    assert exchange.messages == []
    assert upstream.calls == 0


# --- the request the app receives ---------------------------------------------------------------


async def test_the_app_receives_a_chat_completions_request_with_rewritten_headers() -> None:
    upstream = text_upstream()
    scope = http_scope(
        headers=[
            (b"content-length", b"123"),
            (b"accept", b"*/*"),
            (b"accept-encoding", b"gzip, br"),
            (b"x-custom", b"kept"),
        ],
        query_string=b"api-version=1",
    )
    await drive(middleware(upstream), responses_body(stream=True), scope=scope)

    inner = upstream.scope
    assert inner["method"] == "POST"
    assert inner["path"] == "/v1/chat/completions"
    assert inner["raw_path"] == b"/v1/chat/completions"
    assert inner["query_string"] == b"api-version=1"
    headers = dict(inner["headers"])
    assert len(headers) == len(inner["headers"]), "a header appears twice"
    assert headers[b"authorization"] == b"Bearer sk-secret-token"
    assert headers[b"x-custom"] == b"kept"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"accept"] == b"text/event-stream"
    assert b"accept-encoding" not in headers
    assert int(headers[b"content-length"]) == len(upstream.request_body)
    chat = upstream.chat_request
    assert chat["model"] == "text"
    assert chat["messages"] == [{"role": "user", "content": "hello"}]
    assert chat["stream"] is True
    assert chat["stream_options"] == {"include_usage": True}
    assert "input" not in chat


async def test_a_non_streaming_request_asks_the_app_for_json() -> None:
    upstream = text_upstream()
    await drive(middleware(upstream), responses_body(stream=False))

    assert dict(upstream.scope["headers"])[b"accept"] == b"application/json"
    assert "stream" not in upstream.chat_request


async def test_file_and_trailer_extensions_are_hidden_from_the_app() -> None:
    upstream = text_upstream()
    extensions = {"http.response.pathsend": {}, "http.response.trailers": {}, "tls": {"x": 1}}
    await drive(middleware(upstream), responses_body(), scope=http_scope(extensions=extensions))

    assert upstream.scope["extensions"] == {"tls": {"x": 1}}


async def test_the_path_prefix_and_chat_path_are_settings() -> None:
    upstream = text_upstream()
    mw = middleware(upstream, path_prefix="/api/openai", chat_completions_path="/chat")

    exchange = await drive(mw, responses_body(), scope=http_scope(path="/api/openai/responses"))
    assert exchange.status == 200
    assert upstream.scope["path"] == "/chat"

    other = text_upstream()
    mw = middleware(other, path_prefix="/api/openai")
    exchange = await drive(mw, responses_body(), scope=http_scope(path="/v1/responses"))
    assert other.scope["path"] == "/v1/responses", "the default path must pass through"


async def test_a_root_path_is_kept_on_the_rewritten_path() -> None:
    upstream = text_upstream()
    scope = http_scope(path="/gw/v1/responses", root_path="/gw")
    exchange = await drive(middleware(upstream), responses_body(), scope=scope)

    assert exchange.status == 200
    assert upstream.scope["path"] == "/gw/v1/chat/completions"
    assert upstream.scope["root_path"] == "/gw"


# --- pass-through ------------------------------------------------------------------------------


class Recorder:
    """An app that records the exact objects it was called with and echoes messages."""

    def __init__(self, replies: list[Message]) -> None:
        self.replies = replies
        self.calls: list[tuple[Scope, Receive, Send]] = []
        self.received: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append((scope, receive, send))
        if scope["type"] == "lifespan":
            self.received.append(await receive())
            await send(self.replies[0])
            self.received.append(await receive())
            await send(self.replies[1])
            return
        self.received.append(await receive())
        for reply in self.replies:
            await send(reply)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("OPTIONS", "/v1/responses"),
        ("POST", "/v1/responses/resp_1/archive"),
        ("OPTIONS", "/v1/responses/resp_1"),
        ("GET", "/v2/responses"),
    ],
)
async def test_other_http_requests_pass_through_untouched(method: str, path: str) -> None:
    replies: list[Message] = [
        {"type": "http.response.start", "status": 200,
         "headers": [(b"content-length", b"3"), (b"content-type", b"text/plain")]},
        {"type": "http.response.body", "body": b"abc", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]  # fmt: skip
    app = Recorder(replies)
    scope = http_scope(method=method, path=path)
    exchange = await drive(middleware(app), b'{"model": "m"}', scope=scope)

    [(seen_scope, _, _)] = app.calls
    assert seen_scope is scope
    assert app.received == [{"type": "http.request", "body": b'{"model": "m"}', "more_body": False}]
    assert exchange.messages == replies
    assert all(a is b for a, b in zip(exchange.messages, replies, strict=True))


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/responses", "POST"),
        ("PUT", "/v1/responses", "POST"),
        ("PUT", "/v1/responses/resp_1", "GET, DELETE"),
        ("PATCH", "/v1/responses/resp_1", "GET, DELETE"),
        ("DELETE", "/v1/responses/resp_1/input_items", "GET"),
    ],
)
async def test_a_wrong_method_on_a_responses_route_is_405_with_allow(
    method: str, path: str, allow: str
) -> None:
    """Issue 11: these reached the wrapped app, and `stream-mw serve` answered 404
    "not forwarded"."""
    app = Recorder([])
    exchange = await drive(middleware(app), b"", scope=http_scope(method=method, path=path))

    exchange.check()
    assert app.calls == []
    assert exchange.status == 405
    assert exchange.headers["allow"] == allow
    error = exchange.json()["error"]
    assert error["code"] == "method_not_allowed"
    assert error["type"] == "invalid_request_error"
    assert f"Method {method} is not allowed on {path}" in error["message"]


async def test_a_405_quotes_a_long_path_clipped() -> None:
    path = "/v1/responses/" + "r" * 100_000
    exchange = await drive(middleware(Recorder([])), b"", scope=http_scope("PUT", path))

    assert exchange.status == 405
    assert len(exchange.body) < 500


@pytest.mark.parametrize(("path", "websocket"), [("/v1/realtime", True), ("/v1/responses", False)])
async def test_websockets_pass_through_with_the_servers_receive_and_send(
    path: str, websocket: bool
) -> None:
    """Other paths always; the Responses path too when the WebSocket mode is off."""
    app = Recorder([{"type": "websocket.accept"}, {"type": "websocket.close", "code": 1000}])
    scope: Scope = {"type": "websocket", "path": path, "headers": [], "query_string": b""}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(app, websocket=websocket)(scope, receive, send)

    assert app.calls == [(scope, receive, send)]
    assert sent == [{"type": "websocket.accept"}, {"type": "websocket.close", "code": 1000}]


@pytest.mark.parametrize("store_url", [None, "memory://"])
async def test_lifespan_messages_pass_through_unchanged(store_url: str | None) -> None:
    replies: list[Message] = [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]
    app = Recorder(replies)
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    await middleware(app, store_url=store_url)(scope, receive, send)

    assert app.calls[0][0] is scope
    assert app.received == [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    assert sent == replies
    assert all(a is b for a, b in zip(sent, replies, strict=True))


# --- configuration ------------------------------------------------------------------------------


def test_the_typed_keyword_arguments_list_every_settings_field() -> None:
    fields = [f.name for f in dataclasses.fields(Settings)]
    assert list(SettingsOverrides.__annotations__) == fields


def test_keyword_arguments_override_a_settings_object() -> None:
    base = Settings(keepalive_interval=3, done_marker=False)
    mw = ResponsesMiddleware(text_upstream(), base, keepalive_interval=7)

    assert mw.settings == base.replace(keepalive_interval=7)
    assert ResponsesMiddleware(text_upstream()).settings == Settings()


def test_an_invalid_setting_fails_at_construction_naming_the_field() -> None:
    with pytest.raises(ConfigurationError, match="keepalive_interval"):
        ResponsesMiddleware(text_upstream(), keepalive_interval=-1)


async def test_a_conversation_object_without_an_id_is_a_400() -> None:
    upstream = text_upstream()
    body = responses_body(conversation={"name": "chat"})
    exchange = await drive(middleware(upstream, store_url="memory://"), body)

    assert exchange.status == 400
    assert exchange.json()["error"]["param"] == "conversation"
    assert upstream.calls == 0
