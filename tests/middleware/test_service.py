"""Running as a service: client keys, request ids and the health and readiness probes.

Through the hand-written harness (every message seen); the same behaviour over real
processes is in ``tests/gateway/test_service_cli.py`` and ``tests/store/test_readiness.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

from stream_mw import ClientKeys, ConfigurationError, ResponsesMiddleware, Settings
from stream_mw._service import READY_CACHE_SECONDS
from tests.checker import check_stream
from tests.e2e.apps import USAGE, chunk, sse
from tests.middleware.harness import END, Exchange, Upstream, drive, http_scope, responses_body

pytestmark = pytest.mark.anyio

TEXT = [
    sse(chunk({"role": "assistant", "content": "Hi"})),
    sse(chunk(finish="stop")),
    sse(chunk(usage=USAGE, choices=False)),
    b"data: [DONE]\n\n",
]
KEYS = ClientKeys({"sk-alice": "alice", "sk-bob": "bob", "sk-anon": None})


def scope_with(
    method: str = "POST",
    path: str = "/v1/responses",
    *,
    key: str | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> Scope:
    scope = http_scope(method, path)
    kept = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
    if key is not None:
        kept.append((b"authorization", f"Bearer {key}".encode()))
    scope["headers"] = [*kept, *headers]
    return scope


def guarded(**settings: Any) -> tuple[ResponsesMiddleware, list[Upstream]]:
    calls: list[Upstream] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        upstream = Upstream([*TEXT, END])
        calls.append(upstream)
        await upstream(scope, receive, send)

    settings.setdefault("keepalive_interval", 0)
    return ResponsesMiddleware(app, client_keys=KEYS, **settings), calls


async def create(mw: ResponsesMiddleware, key: str | None, *, stream: bool = False) -> Exchange:
    return await drive(mw, responses_body(stream=stream), scope=scope_with(key=key))


# --- client keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/responses"),
        ("GET", "/v1/responses/resp_123"),
        ("DELETE", "/v1/responses/resp_123"),
        ("GET", "/v1/responses/resp_123/input_items"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
    ],
)
@pytest.mark.parametrize("key", [None, "sk-wrong", "sk-alice-but-longer", ""])
async def test_every_route_without_a_valid_key_is_a_401_before_the_app_is_called(
    method: str, path: str, key: str | None
) -> None:
    mw, calls = guarded()
    exchange = await drive(mw, responses_body(), scope=scope_with(method, path, key=key))

    exchange.check()
    assert exchange.status == 401
    error = exchange.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    expected = "Incorrect API key provided" if key is not None else "You didn't provide an API key"
    assert error["message"].startswith(expected)
    assert exchange.headers["x-request-id"]
    assert calls == []


async def test_a_valid_key_reaches_every_route() -> None:
    mw, calls = guarded()
    created = await create(mw, "sk-alice", stream=True)
    response_id = check_stream(created.body).response["id"]

    for method, path in [
        ("GET", f"/v1/responses/{response_id}"),
        ("GET", f"/v1/responses/{response_id}/input_items"),
        ("DELETE", f"/v1/responses/{response_id}"),
    ]:
        exchange = await drive(mw, b"", scope=scope_with(method, path, key="sk-alice"))
        assert exchange.status == 200, (method, path, exchange.body)
    assert len(calls) == 1


async def test_the_bearer_scheme_is_case_insensitive_as_in_http() -> None:
    mw, _ = guarded()
    scope = scope_with(headers=[(b"authorization", b"bearer sk-bob")])
    assert (await drive(mw, responses_body(stream=False), scope=scope)).status == 200


async def test_named_keys_are_separate_tenants_of_the_store() -> None:
    mw, _ = guarded()
    response_id = (await create(mw, "sk-alice")).json()["id"]

    for key, status in [("sk-alice", 200), ("sk-bob", 404), ("sk-anon", 404)]:
        scope = scope_with("GET", f"/v1/responses/{response_id}", key=key)
        assert (await drive(mw, b"", scope=scope)).status == status, key


async def test_two_keys_with_one_name_share_that_tenant_for_key_rotation() -> None:
    keys = ClientKeys({"sk-old": "team", "sk-new": "team"})
    mw = ResponsesMiddleware(Upstream([*TEXT, END]), client_keys=keys, keepalive_interval=0)
    response_id = (await create(mw, "sk-old")).json()["id"]

    scope = scope_with("GET", f"/v1/responses/{response_id}", key="sk-new")
    assert (await drive(mw, b"", scope=scope)).status == 200


async def test_probes_need_no_key() -> None:
    mw, _ = guarded()
    for path in ("/health", "/ready"):
        assert (await drive(mw, b"", scope=scope_with("GET", path))).status == 200


async def test_a_websocket_without_a_key_is_closed_before_it_is_accepted() -> None:
    mw, calls = guarded()
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {**scope_with("GET", "/v1/responses"), "type": "websocket"}
    await mw(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert calls == []


async def test_a_refused_create_is_logged_in_one_line_with_its_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mw, _ = guarded()
    with caplog.at_level(logging.INFO, logger="stream_mw"):
        exchange = await create(mw, "sk-wrong")
    [line] = [r.getMessage() for r in caplog.records if r.name == "stream_mw.access"]
    assert line == (
        f"POST /v1/responses 401 error=invalid_api_key "
        f"request_id={exchange.headers['x-request-id']}"
    )
    assert "sk-wrong" not in caplog.text


def test_a_keys_file_holds_keys_names_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# comment\n\n  sk-one   team one  \nsk-two\tci\nsk-three\n")
    keys = ClientKeys.from_file(path)

    assert len(keys) == 3
    bearer = [(b"authorization", b"Bearer sk-one")]
    assert keys.tenant_for(bearer) == "key:team one"
    assert keys.tenant_for([(b"authorization", b"Bearer sk-two")]) == "key:ci"
    unnamed = keys.tenant_for([(b"authorization", b"Bearer sk-three")])
    assert unnamed is not None
    assert unnamed.startswith("key-sha256:")
    assert "sk-three" not in unnamed
    assert "sk-" not in repr(keys)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_a_keys_file_without_keys_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match="holds no key"):
        ClientKeys.from_file(path)


def test_settings_from_env_read_the_keys_file_the_variable_names(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("sk-env ops\n")
    settings = Settings.from_env({"STREAM_MW_CLIENT_KEYS": str(path)})
    assert settings.client_keys is not None
    assert settings.client_keys.tenant_for([(b"authorization", b"Bearer sk-env")]) == "key:ops"
    with pytest.raises(ConfigurationError, match="cannot read client keys file"):
        Settings.from_env({"STREAM_MW_CLIENT_KEYS": str(tmp_path / "missing")})


# --- request ids ----------------------------------------------------------------------------


def request_ids(exchanges: Sequence[Exchange]) -> list[str]:
    return [exchange.headers["x-request-id"] for exchange in exchanges]


async def test_every_answer_carries_a_fresh_request_id() -> None:
    mw = ResponsesMiddleware(Upstream([*TEXT, END]), keepalive_interval=0, max_request_bytes=64)
    streamed = await drive(mw, responses_body(stream=True))
    response_id = check_stream(streamed.body).response["id"]
    answers = [
        streamed,
        await drive(mw, responses_body(stream=False)),
        await drive(mw, b"{not json"),
        await drive(mw, responses_body(input="x" * 100)),
        await drive(mw, b"", scope=http_scope("GET", f"/v1/responses/{response_id}")),
        await drive(mw, b"", scope=http_scope("GET", "/v1/responses/resp_unknown")),
        await drive(mw, b"", scope=http_scope("GET", "/health")),
    ]

    assert [a.status for a in answers] == [200, 200, 400, 413, 200, 404, 200]
    ids = request_ids(answers)
    assert all(rid.startswith("req_") for rid in ids)
    assert len(set(ids)) == len(ids)
    assert all(a.header_names.count("x-request-id") == 1 for a in answers)


async def test_an_upstream_error_carries_our_request_id_and_the_upstreams_separately() -> None:
    upstream = Upstream(
        [b'{"error": {"message": "busy"}}', END],
        status=503,
        headers=[(b"x-request-id", b"upstream-7")],
    )
    exchange = await drive(ResponsesMiddleware(upstream), responses_body())

    assert exchange.status == 503
    assert exchange.headers["x-request-id"].startswith("req_")
    assert exchange.headers["x-upstream-request-id"] == "upstream-7"


@pytest.mark.parametrize("stream", [True, False])
async def test_a_sane_incoming_request_id_is_echoed_and_logged(
    caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    mw = ResponsesMiddleware(Upstream([*TEXT, END]), keepalive_interval=0)
    scope = http_scope(headers=[(b"x-request-id", b"lb-1234 abc/def")])
    with caplog.at_level(logging.INFO, logger="stream_mw"):
        exchange = await drive(mw, responses_body(stream=stream), scope=scope)

    assert exchange.headers["x-request-id"] == "lb-1234 abc/def"
    [record] = [r for r in caplog.records if r.name == "stream_mw.access"]
    assert record.getMessage().endswith(" request_id=lb-1234 abc/def")


@pytest.mark.parametrize(
    "incoming",
    [b"x" * 201, b"tab\there", "caf\u00e9".encode(), b"new\nline", b"", b"   "],
)
async def test_an_insane_incoming_request_id_is_replaced(incoming: bytes) -> None:
    mw = ResponsesMiddleware(Upstream([*TEXT, END]), keepalive_interval=0)
    scope = http_scope(headers=[(b"x-request-id", incoming)])
    exchange = await drive(mw, responses_body(stream=False), scope=scope)

    assert exchange.headers["x-request-id"].startswith("req_")


async def test_the_observer_record_carries_the_request_id() -> None:
    records: list[Any] = []
    mw = ResponsesMiddleware(Upstream([*TEXT, END]), on_response=records.append)
    exchange = await drive(mw, responses_body(stream=False))

    assert records[0].request_id == exchange.headers["x-request-id"]


# --- health and readiness -------------------------------------------------------------------


class CountingApp:
    """A wrapped app whose ``/v1/models`` answers ``status`` (or raises, or hangs)."""

    def __init__(self, status: int = 200, *, hang: bool = False) -> None:
        self.status = status
        self.hang = hang
        self.models_calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["path"] == "/v1/models"
        self.models_calls += 1
        if self.hang:
            await anyio.sleep_forever()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})


async def probe(mw: ResponsesMiddleware, path: str, method: str = "GET") -> Exchange:
    return await drive(mw, b"", scope=http_scope(method, path))


async def test_liveness_and_readiness_answer_200_with_a_working_store() -> None:
    app = CountingApp()
    mw = ResponsesMiddleware(app)
    health = await probe(mw, "/health")
    ready = await probe(mw, "/ready")

    assert (health.status, health.json()) == (200, {"object": "health", "status": "ok"})
    assert (ready.status, ready.json()) == (200, {"object": "readiness", "status": "ready"})
    assert health.headers["cache-control"] == "no-store"
    assert app.models_calls == 0  # the upstream check is off by default


async def test_a_head_probe_gets_the_status_without_a_body() -> None:
    exchange = await probe(ResponsesMiddleware(CountingApp()), "/ready", method="HEAD")
    assert exchange.status == 200
    assert exchange.body == b""


async def test_probe_paths_are_settings_and_none_passes_the_path_to_the_app() -> None:
    upstream = Upstream([END], status=418, content_type=b"text/plain")
    mw = ResponsesMiddleware(upstream, health_path="/livez", ready_path=None)

    assert (await probe(mw, "/livez")).status == 200
    assert (await probe(mw, "/ready")).status == 418
    assert upstream.calls == 1


@pytest.mark.parametrize(
    ("app", "status"),
    [
        (CountingApp(200), 200),
        (CountingApp(404), 200),  # an app without /models still answers
        (CountingApp(502), 503),
        (CountingApp(hang=True), 503),
    ],
)
async def test_readiness_can_check_the_upstream_through_the_wrapped_app(
    app: CountingApp, status: int
) -> None:
    mw = ResponsesMiddleware(app, ready_checks_upstream=True)
    with anyio.fail_after(10):
        exchange = await probe(mw, "/ready")

    assert exchange.status == status
    assert app.models_calls == 1
    if status == 503:
        error = exchange.json()["error"]
        assert error["code"] == "not_ready"
        assert error["message"] == "Not ready: the upstream does not answer."


async def test_a_storm_of_readiness_probes_checks_once_per_second() -> None:
    app = CountingApp()
    mw = ResponsesMiddleware(app, ready_checks_upstream=True)
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(probe, mw, "/ready")
    assert app.models_calls == 1
    await anyio.sleep(READY_CACHE_SECONDS + 0.05)
    await probe(mw, "/ready")
    assert app.models_calls == 2


def test_probe_paths_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="health_path"):
        Settings(health_path="health")
    with pytest.raises(ConfigurationError, match="must differ"):
        Settings(health_path="/probe", ready_path="/probe")
