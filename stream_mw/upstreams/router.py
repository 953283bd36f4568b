"""Several upstreams behind one gateway: an ASGI app that routes each request by its model.

``ModelRouter`` sits where a single upstream app would, behind ``ResponsesMiddleware``::

    router = ModelRouter(
        {"local": ProxyApp("http://localhost:8000/v1"), "claude": LiteLLMApp("anthropic/...")},
        {"llama-3.1-8b": "local", "qwen/": "local", "claude*": "claude"},
    )
    app = ResponsesMiddleware(router)

- **Patterns.** A model pattern is an exact name, or a prefix: one ending in ``*`` matches
  every name starting with what comes before the ``*`` (``claude*``, and ``*`` alone matches
  every model); one ending in ``/`` matches every name under it (``qwen/`` matches
  ``qwen/qwen3-8b``). An exact name wins over prefixes, and a longer prefix over a shorter.
- **Requests.** A request with a body (``POST /v1/chat/completions``, or anything else but
  ``GET``) is read whole, up to ``max_body_bytes`` (beyond: 413), its JSON ``model`` picks the
  upstream, and the same bytes are replayed to it. ``GET /v1/models/{model}`` goes to that
  model's upstream. A model no pattern matches is OpenAI's 404 ``model_not_found``, naming
  the models and prefixes served.
- **``GET /v1/models``** asks every upstream at once (each within ``models_timeout``) and
  answers the union: each upstream's models that are routed to it, then the exact names of
  the patterns not listed yet. An upstream that fails to answer is left out, with a warning;
  when none answers, the answer is a 502 (so readiness that checks the upstream fails).
- **Lifespan** is passed to every upstream: startup completes once all have started (and
  fails if one fails), shutdown once all have stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.abc
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._errors import ConfigurationError, clip
from ._asgi import send_error, send_json

__all__ = ["ModelRouter"]

logger = logging.getLogger("stream_mw")

#: Twice the middleware's default ``max_request_bytes``: a translated Responses request the
#: middleware accepted is a little larger as Chat Completions, and must still get through.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


class ModelRouter:
    """An ASGI app sending each request to the upstream app its model is routed to.

    Args:
        upstreams: Upstream apps by name (``ProxyApp``, ``LiteLLMApp``, any ASGI app).
        models: Model patterns (see the module docstring) to upstream names.
        max_body_bytes: Bytes of request body read to find the model; more gets a 413.
        models_timeout: Seconds each upstream has to answer ``GET /v1/models``.

    Raises:
        ConfigurationError: a pattern is empty or names an unknown upstream.
    """

    def __init__(
        self,
        upstreams: Mapping[str, ASGIApp],
        models: Mapping[str, str],
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        models_timeout: float = 10.0,
    ) -> None:
        self._upstreams = dict(upstreams)
        self._exact: dict[str, str] = {}
        prefixes: list[tuple[str, str]] = []
        for pattern, name in models.items():
            if name not in self._upstreams:
                raise ConfigurationError(
                    f"model {pattern!r} is routed to {name!r}, which is not an upstream "
                    f"(the upstreams are {', '.join(self._upstreams) or 'none'})"
                )
            if pattern.endswith("*"):
                prefixes.append((pattern[:-1], name))
            elif pattern.endswith("/") and len(pattern) > 1:
                prefixes.append((pattern, name))
            elif pattern:
                self._exact[pattern] = name
            else:
                raise ConfigurationError("an empty model pattern matches nothing")
        # Longest first: the most specific prefix wins.
        self._prefixes = sorted(prefixes, key=lambda item: len(item[0]), reverse=True)
        self._max_body_bytes = max_body_bytes
        self._models_timeout = models_timeout

    @property
    def upstreams(self) -> Mapping[str, ASGIApp]:
        return self._upstreams

    def route(self, model: str) -> str | None:
        """The name of the upstream serving ``model``, or ``None``."""
        name = self._exact.get(model)
        if name is not None:
            return name
        for prefix, name in self._prefixes:
            if model.startswith(prefix):
                return name
        return None

    def known_models(self) -> str:
        """The models and prefixes served, for an error message."""
        names = [*self._exact, *(f"{prefix}*" for prefix, _ in reversed(self._prefixes))]
        return ", ".join(names) if names else "none"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        suffix = path[3:] if path.startswith("/v1/") else path
        if method in ("GET", "HEAD") and suffix == "/models":
            await self._list_models(scope, send)
        elif method in ("GET", "HEAD") and suffix.startswith("/models/"):
            await self._dispatch(suffix[len("/models/") :], scope, receive, send)
        elif method in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await send_error(
                send, 404, f"{clip(path)} names no model, so no upstream serves it", "not_found"
            )
        else:
            await self._route_body(scope, receive, send)

    async def _route_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body_bytes:
                await send_error(
                    send,
                    413,
                    f"the request body is over {self._max_body_bytes} bytes",
                    "request_too_large",
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            model = orjson.loads(body).get("model")
        except (orjson.JSONDecodeError, AttributeError):
            model = None
        if not isinstance(model, str):
            await send_json(
                send,
                400,
                _error(
                    "The request names no model (a JSON body with a string `model`); "
                    f"the models served are: {self.known_models()}.",
                    code="missing_model",
                ),
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self._dispatch(model, scope, replay, send)

    async def _dispatch(self, model: str, scope: Scope, receive: Receive, send: Send) -> None:
        name = self.route(model)
        if name is None:
            await send_json(
                send,
                404,
                _error(
                    f"The model `{clip(model)}` does not exist or you do not have access to "
                    f"it. The models served are: {self.known_models()}.",
                    code="model_not_found",
                ),
            )
            return
        await self._upstreams[name](scope, receive, send)

    async def _list_models(self, scope: Scope, send: Send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        lists: dict[str, list[Any] | None] = {}

        async def ask(name: str, app: ASGIApp) -> None:
            lists[name] = await self._models_of(name, app, {**scope, "headers": headers})

        async with anyio.create_task_group() as tasks:
            for name, app in self._upstreams.items():
                tasks.start_soon(ask, name, app)
        if self._upstreams and all(listed is None for listed in lists.values()):
            # Readiness (ready_checks_upstream) asks this route: with no upstream answering,
            # the gateway serves nothing.
            await send_error(
                send, 502, "no upstream answered GET /v1/models", "upstream_unreachable"
            )
            return
        data: list[Any] = []
        seen: set[str] = set()
        for name in self._upstreams:
            for model in lists.get(name) or []:
                model_id = model.get("id") if isinstance(model, dict) else None
                # Listed only where it is routed: a model the router sends elsewhere (or
                # nowhere) would be a name that fails when used.
                if (
                    isinstance(model_id, str)
                    and model_id not in seen
                    and self.route(model_id) == name
                ):
                    seen.add(model_id)
                    data.append(model)
        for model_id, name in self._exact.items():
            if model_id not in seen:
                seen.add(model_id)
                data.append({"id": model_id, "object": "model", "created": 0, "owned_by": name})
        await send_json(send, 200, {"object": "list", "data": data})

    async def _models_of(self, name: str, app: ASGIApp, scope: Scope) -> list[Any] | None:
        status = 0
        body: list[bytes] = []
        never = anyio.Event()
        asked = False

        async def receive() -> Message:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await never.wait()  # the client stays: a disconnect would cancel the request
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        what = "did not answer"
        with anyio.move_on_after(self._models_timeout):
            try:
                await app({**scope, "method": "GET"}, receive, send)
            except Exception as exc:  # an upstream's failure must not fail the whole list
                what = f"failed ({type(exc).__name__}: {exc})"
            else:
                try:
                    listed = orjson.loads(b"".join(body)).get("data") if status == 200 else None
                except (orjson.JSONDecodeError, AttributeError):
                    listed = None
                if isinstance(listed, list):
                    return listed
                what = f"answered {status or 'nothing'}"
        logger.warning(
            "GET /v1/models: upstream %r %s; its models are left out of the list", name, what
        )
        return None

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tasks:
            children = [
                await tasks.start(_run_lifespan, name, app, scope)
                for name, app in self._upstreams.items()
            ]
            started = await _fan_out(await receive(), children)
            if started is not None:
                await send({"type": "lifespan.startup.failed", "message": started})
                tasks.cancel_scope.cancel()
                return
            await send({"type": "lifespan.startup.complete"})
            stopped = await _fan_out(await receive(), children)
            if stopped is not None:
                await send({"type": "lifespan.shutdown.failed", "message": stopped})
            else:
                await send({"type": "lifespan.shutdown.complete"})
            # Every upstream has answered; one still running its lifespan has nothing left.
            tasks.cancel_scope.cancel()


_Child = tuple[
    str, anyio.abc.ObjectSendStream[Message], anyio.abc.ObjectReceiveStream[Message | None]
]


async def _run_lifespan(
    name: str,
    app: ASGIApp,
    scope: Scope,
    *,
    task_status: anyio.abc.TaskStatus[_Child] = anyio.TASK_STATUS_IGNORED,
) -> None:
    # Room for startup and shutdown: an app without lifespan support reads neither.
    to_app, app_inbox = anyio.create_memory_object_stream[Message](2)
    app_outbox, from_app = anyio.create_memory_object_stream[Message | None](1)
    task_status.started((name, to_app, from_app))
    try:
        await app(scope, app_inbox.receive, app_outbox.send)
    except Exception as exc:
        # As uvicorn's "auto" lifespan: an app that raises does not do lifespan.
        logger.debug("upstream %r does not handle lifespan: %r", name, exc)
    # An app that returned without answering (no lifespan support) is done whenever asked;
    # the router cancels this loop once shutdown is over.
    while True:
        await app_outbox.send(None)


async def _fan_out(message: Message, children: list[_Child]) -> str | None:
    """Send ``message`` to every child; the first failure's text, or ``None``."""
    for name, to_app, from_app in children:
        await to_app.send(message)
        reply = await from_app.receive()
        if reply is not None and reply["type"].endswith(".failed"):
            return f"upstream {name!r}: {reply.get('message', '')}"
    return None


def _error(message: str, *, code: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "model",
            "code": code,
        }
    }
