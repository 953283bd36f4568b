"""A run's remote-MCP tool loop: where ``ResponseRun`` meets ``_mcp/_loop.py``.

The loop itself (``McpLoop``) knows no run and no delivery; this module gives it the run's
``drive`` and ``emit`` and finishes the response it leaves open. It lives beside the run
rather than in ``_mcp`` so that the MCP package never depends on the run.

Strategy: a request naming remote MCP servers is checked and expanded before anything starts
(``prepare``: its 400s are the client's, once the stream began they could only fail it).
``mcp_rounds`` then runs inside the run's one ``guarded`` scope: the stream begins before
the tools are listed, and each round drives the app on the same converter (an upstream's
JSON answer is fed to it as one round's events: ``Answers``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import RequestError, UpstreamError
from ._mcp._loop import McpLoop
from ._mcp._plan import McpPlan
from ._observe import logger
from ._requests import _translate
from ._run_answers import SSE_TO_JSON, STREAM
from ._run_request import expand_request
from ._store_gateway import normalize_input

if TYPE_CHECKING:
    from ._run import ResponseRun

__all__ = ["mcp_rounds", "prepare"]


async def prepare(run: ResponseRun) -> None:
    """Set up the run's tool loop for its request, which names remote MCP servers."""
    request = run.request
    # Before anything is expanded or started: an unlisted server is the client's 400.
    run.mcp = McpLoop(request, run.settings)
    run.expanded, run.input_items = await expand_request(
        request, run.scope, run.gateway, run.history
    )
    # Translated once now, tools not yet listed, for its 400s: once the response began they
    # could only fail it.
    _translate(
        run.expanded,
        run.settings,
        validated=run.input_items is None,
        tenant=run.tenant,
        mcp=McpPlan(run.mcp.servers),
    )


async def mcp_rounds(run: ResponseRun) -> Exception | None:
    """The MCP tool loop, watched as one (run inside ``run.guarded``): a client that leaves
    cancels an MCP call as it cancels the app. Returns what the app raised."""
    loop = run.mcp
    assert loop is not None
    converter = run.converter = run.new_converter()
    base = STREAM if run.stream else SSE_TO_JSON
    if run.stream:
        # The response begins before the tools are listed, so the client sees it at once.
        await run.start_stream()
        run.streaming = False  # until the first round's answer begins
    # What a shutdown or a failure before the first round's answer finds.
    run.mode = base
    app_error: Exception | None = None

    async def drive(chat_body: bytes) -> bool:
        nonlocal app_error
        app_error = await run.call_app(chat_body)
        if not run.complete:
            run.mode = base
        return (
            app_error is None and not run.complete and not run.disconnected and run.stopping is None
        )

    async def emit(data: bytes) -> None:
        if run.stream and data and not run.disconnected:
            await run.emit(data)

    def translate(body: dict[str, Any], plan: McpPlan) -> dict[str, Any]:
        return _translate(body, run.settings, validated=False, tenant=run.tenant, mcp=plan)

    items = run.input_items
    if items is None:
        # Kept on the run, so the response is stored with the very items the rounds read.
        items = run.input_items = normalize_input(run.request.get("input"))
    try:
        error = await loop.run(run.expanded, items, converter, drive, emit, translate)
    except RequestError as exc:
        # A later round's request could not be made from what the rounds produced.
        error = UpstreamError(exc.message, code="invalid_prompt", status_code=400)
    except Exception as exc:
        logger.exception("%s: the MCP tool loop failed", run.response_id)
        error = UpstreamError(f"The MCP tool loop failed ({type(exc).__name__}).", status_code=500)
    if app_error is not None or run.complete or run.disconnected or run.stopping:
        return app_error
    if run.stream:
        await run.end_stream(b"", error, incomplete=loop.bound_reached)
    else:
        converter.close(error, incomplete=loop.bound_reached)
        await run.answers.answer_json(converter.response)
    return None
