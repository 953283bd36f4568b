"""A run's answers off the streaming hot path: everything but an upstream event stream
converted for a streaming request.

- 2xx SSE for a non-streaming request: the converter runs silently and its terminal response
  is answered as JSON (``answer_json``).
- 2xx JSON: ``translate_completion``; for a streaming request the completion is replayed
  through a converter as a one-chunk stream, so ids, items and events follow the streaming
  rules. In an MCP tool loop it is one round's events instead (``_run_mcp``).
- anything else: the upstream's status with an OpenAI-shaped error carrying its message.
- the app returned or raised before its answer was complete (``finish_after_app``).

None of it is per chunk, so it lives on a helper that takes the run (``Answers(run)``), as
the keep-alives do; the run's ``_on_start`` picks the body handler from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from starlette.types import Message

from ._errors import UpstreamError, UpstreamProtocolError, error_body
from ._items import translate_completion
from ._observe import logger
from ._run_report import report, report_response
from ._upstream_answer import (
    CODE_STATUS,
    completion_as_sse,
    parse_completion,
    status_error_type,
    upstream_error_answer,
)

if TYPE_CHECKING:
    from ._delivery import Headers
    from ._run import ResponseRun

__all__ = ["ERROR", "JSON", "SSE_TO_JSON", "STREAM", "WAITING", "Answers", "stream_too_long"]

# What the wrapped app answered, decided at its http.response.start (``ResponseRun``).
WAITING: Final = "waiting"
STREAM: Final = "stream"
SSE_TO_JSON: Final = "sse-to-json"
JSON: Final = "json"
ERROR: Final = "error"

# Upstream error bodies are only read for their message; the rest is drained and dropped.
_MAX_ERROR_BODY: Final = 64 * 1024


def stream_too_long(run: ResponseRun) -> UpstreamProtocolError:
    """The error that ends a run whose upstream event stream passed ``max_response_bytes``."""
    limit = run.mw._max_upstream_stream
    logger.warning("%s: upstream stream over max_response_bytes, failed", run.response_id)
    return UpstreamProtocolError(
        f"The upstream's event stream is longer than max_response_bytes ({limit} bytes); "
        "raise Settings.max_response_bytes to allow longer responses."
    )


class Answers:
    """The answers of one run that are not the streaming hot path."""

    __slots__ = ("parts", "parts_size", "run")

    def __init__(self, run: ResponseRun) -> None:
        self.run = run
        #: The upstream's JSON or error body, collected up to its bound.
        self.parts: list[bytes] = []
        self.parts_size = 0

    def next_body(self) -> None:
        """Forget the body collected so far: another round's answer begins."""
        if self.parts_size:
            self.parts = []
            self.parts_size = 0

    # --- non-streaming request, streaming upstream ------------------------------------------

    async def body_sse_to_json(self, message: Message) -> None:
        run = self.run
        if run.complete:
            return
        converter = run.converter
        assert converter is not None
        body: bytes = message.get("body", b"")
        if body:
            run.upstream_bytes += len(body)
            if run.upstream_bytes > run.mw._max_upstream_stream:
                # Not through the converter: its done events would copy the output it holds
                # several times over, only for the client to get an error.
                run.converter = None
                run.complete = True
                await self.send_upstream_error(stream_too_long(run))
                run.cancel_app()
                return
            converter.feed(body)
        if (
            not message.get("more_body", False)
            and not converter.finished
            and run.round_end() is None
        ):
            converter.close()
        if converter.finished:
            await self.answer_json(converter.response)

    async def answer_json(self, response: dict[str, Any]) -> None:
        """Answer a non-streaming request with its terminal ``response`` (an HTTP error when
        it failed, as OpenAI's API answers)."""
        run = self.run
        error = response.get("error")
        if response.get("status") == "failed" and isinstance(error, dict):
            code = str(error.get("code") or "server_error")
            status = CODE_STATUS.get(code, 502)
            message = str(error.get("message") or "The upstream failed.")
            body = error_body(message, status_error_type(status), code=code)
            await self.answer(status, body, run.upstream_headers)
            await report(run, "failed", response=response)
            return
        await run.store(response)
        await self.answer(200, response, run.upstream_headers)
        await report_response(run, response)

    # --- upstream JSON ----------------------------------------------------------------------

    async def body_json(self, message: Message) -> None:
        run = self.run
        if run.complete:
            return
        limit = run.mw._max_upstream_json
        self._collect(message.get("body", b""), limit)
        if self.parts_size > limit:
            # The answer is decided (an error): reading the rest of a body that may never end
            # would only keep the upstream busy, so the app is stopped as if the client left.
            await self._finish_json()
            run.cancel_app()
        elif not message.get("more_body", False):
            await self._finish_json()

    def _collect(self, body: bytes, limit: int) -> None:
        if body and self.parts_size <= limit:
            self.parts.append(body)
            self.parts_size += len(body)

    async def _finish_json(self) -> None:
        run = self.run
        limit = run.mw._max_upstream_json
        try:
            if self.parts_size > limit:
                raise UpstreamProtocolError(
                    f"The upstream's JSON body is larger than max_event_bytes ({limit} bytes)."
                )
            completion = parse_completion(b"".join(self.parts), run.upstream_status)
            if run.mcp is not None:
                # A round of the tool loop: the answer goes on in the same converter.
                await self._feed_round(completion_as_sse(completion))
                return
            response = translate_completion(
                completion,
                run.request,
                run.settings,
                response_id=run.response_id,
                created_at=run.created_at,
                tenant=run.tenant,
            )
        except UpstreamError as exc:
            await self.send_upstream_error(exc)
            return
        if not run.stream:
            await self.answer_json(response)
            return
        # The client asked for a stream: replay the completion as a one-chunk stream through
        # a converter, so ids, items and events follow exactly the streaming rules.
        converter = run.converter = run.new_converter()
        data = converter.start() + converter.feed(completion_as_sse(completion))
        data += converter.close()
        run.started = True
        run.complete = True
        run.http_status = 200
        await run.store(converter.response)
        try:
            await run.delivery.start(run.upstream_headers, data, end=True)
        except OSError:
            run.client_gone()
            return
        await report_response(run, converter.response)

    async def _feed_round(self, data: bytes) -> None:
        """A whole round's Chat events at once (an upstream's JSON answer in a tool loop)."""
        run = self.run
        converter = run.converter
        assert converter is not None
        out = converter.feed(data)
        if not converter.finished:
            out += run.round_end() or b""
        if converter.finished:
            if run.stream:
                await run.end_stream(out)
            else:
                await self.answer_json(converter.response)
        elif run.stream and out:
            await run.emit(out)

    # --- upstream HTTP error ----------------------------------------------------------------

    async def body_error(self, message: Message) -> None:
        if self.run.complete:
            return
        self._collect(message.get("body", b""), _MAX_ERROR_BODY)
        if not message.get("more_body", False):
            await self._finish_error()

    async def _finish_error(self) -> None:
        run = self.run
        raw = b"".join(self.parts)[:_MAX_ERROR_BODY]
        status, body, error = upstream_error_answer(run.upstream_status, raw)
        if run.started:
            # A later round of a stream that began: the stream ends with the error.
            await run.end_stream(
                b"", UpstreamError(error["message"], code=error["code"], status_code=status)
            )
            return
        await self.answer(status, body, run.upstream_headers)
        await report(run, "failed", error=error)

    async def send_upstream_error(self, exc: UpstreamError) -> None:
        """End the run with ``exc``: the end of a stream that began, else an HTTP error."""
        run = self.run
        if run.started and run.converter is not None:
            await run.end_stream(b"", exc)
            return
        status = exc.status_code if exc.status_code and exc.status_code >= 400 else None
        status = status or CODE_STATUS.get(exc.code, 502)
        body = error_body(exc.message, status_error_type(status), code=exc.code)
        await self.answer(status, body, run.upstream_headers)
        await report(run, "failed", error={"code": exc.code, "message": exc.message})

    # --- after the app returned or raised ----------------------------------------------------

    async def finish_after_app(self, app_error: Exception | None) -> None:
        """Complete the answer the app left unfinished, with what it raised if anything."""
        run = self.run
        mode = run.mode
        if mode == WAITING:
            if isinstance(app_error, UpstreamError):
                await self.send_upstream_error(app_error)
                return
            if app_error is not None:
                message = (
                    "The server had an error while processing your request "
                    f"({type(app_error).__name__} in the wrapped app)."
                )
            else:
                message = "The wrapped app returned without sending a response."
            await self.answer(500, error_body(message, "server_error", code="server_error"))
            await report(run, "failed", error={"code": "server_error", "message": message})
        elif mode == STREAM:
            await run.end_stream(b"", app_error)
        elif mode == SSE_TO_JSON:
            assert run.converter is not None
            run.converter.close(app_error)
            await self.answer_json(run.converter.response)
        elif isinstance(app_error, UpstreamError):
            await self.send_upstream_error(app_error)
        elif app_error is not None:
            await self.send_upstream_error(
                UpstreamError(
                    f"The wrapped app failed mid-response ({type(app_error).__name__}).",
                    status_code=500,
                )
            )
        elif mode == JSON:
            await self._finish_json()
        else:
            await self._finish_error()

    async def answer(
        self, status: int, payload: dict[str, Any], headers: Headers | None = None
    ) -> None:
        """The whole answer at once (JSON, or an error), through the delivery."""
        run = self.run
        run.started = True
        run.complete = True
        run.http_status = status
        try:
            await run.delivery.answer(status, payload, headers or [], close=run.closing)
        except OSError:
            run.client_gone()
