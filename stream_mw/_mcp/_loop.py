"""The MCP tool loop of one response: list, ask the model, call, ask again.

Theory of operation
-------------------
A response whose request names MCP servers runs in rounds, all into ONE converter, so the
client sees one response with one ``sequence_number`` series and one terminal event:

1. Before the first round every server's tools are known: from an ``mcp_list_tools`` item
   already in the input (a stored response's, replayed: no new listing and no new item), or
   listed now (an ``mcp_list_tools`` item streams out). A listing that fails ends the
   response ``failed``: the model cannot be offered tools nobody could list.
2. Calls the client approved in this request (an ``mcp_approval_response`` answering an
   ``mcp_approval_request`` in the input) run next, each becoming an ``mcp_call`` item.
3. Each round translates the whole conversation so far (the input, then this response's
   own output items, calls and results included) to one Chat request, with the MCP tools as
   functions next to the client's, and ``drive`` streams the backend's answer into the
   converter. A round that ends with MCP calls needing no approval leaves the converter
   ``awaiting_mcp``: each call runs, its result (or error) closes its item, and, unless the
   round also produced something only the client can answer (a function call of its own,
   an approval request), the next round asks the model again.
4. ``mcp_max_rounds`` bounds the Chat requests; reaching it ends the response
   ``incomplete``. Anything else that ends the response (the model's answer, a failure, the
   client leaving) is the run's to finish, as for any response.

The loop does no delivery and knows no HTTP: ``drive`` and ``emit`` are the run's, so every
delivery (SSE, JSON, WebSocket, a background log) gets the same events.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from .._errors import UpstreamError
from ._client import McpConnection, McpError, open_mcp
from ._plan import McpPlan, McpServer, McpTool, function_name_for, servers_from_request
from ._policy import AllowList

if TYPE_CHECKING:
    from .._settings import Settings
    from .._stream import StreamConverter

__all__ = ["Drive", "Emit", "McpLoop", "has_mcp_tools"]

logger = logging.getLogger("stream_mw")

#: Runs the app inside once with a Chat request body, feeding the converter; returns when the
#: app's answer ended, ``False`` when the response ended with it (failed, or the client left).
Drive = Callable[[bytes], Awaitable[bool]]
#: Sends event bytes the converter returned to the client (whatever the delivery).
Emit = Callable[[bytes], Awaitable[None]]
#: Translates a Responses request (whole input) to a Chat request, with the plan's tools.
Translate = Callable[[dict[str, Any], McpPlan], dict[str, Any]]


def has_mcp_tools(request: Mapping[str, Any]) -> bool:
    tools = request.get("tools")
    return isinstance(tools, list) and any(
        isinstance(t, Mapping) and t.get("type") == "mcp" for t in tools
    )


class McpLoop:
    """Runs the MCP rounds of one response around the run's ``drive`` and ``emit``."""

    def __init__(self, request: Mapping[str, Any], settings: Settings) -> None:
        #: Checked now, before the response starts: an unlisted URL is the client's 400.
        self.servers = servers_from_request(request, AllowList(settings.mcp_servers))
        self.plan = McpPlan(self.servers, taken=_function_names(request))
        #: ``mcp_max_rounds`` was reached: the run ends the response ``incomplete``.
        self.bound_reached = False
        self._settings = settings
        self._connections: dict[str, McpConnection] = {}
        self._exits = contextlib.AsyncExitStack()

    async def run(
        self,
        request: Mapping[str, Any],
        input_items: Sequence[Mapping[str, Any]],
        converter: StreamConverter,
        drive: Drive,
        emit: Emit,
        translate: Translate,
    ) -> UpstreamError | None:
        """Run the rounds on ``request`` (its whole input is ``input_items``). Returns the
        error that fails the response (a listing that failed), else ``None``; the run ends
        the response (``incomplete`` when ``bound_reached``) unless a round already did."""
        async with self._exits:
            error = await self._list_tools(input_items, converter, emit)
            if error is not None:
                return error
            await self._run_approved(input_items, converter, emit)
            for _ in range(self._settings.mcp_max_rounds):
                body = _chat_body(request, input_items, converter, self.plan, translate)
                if not await drive(body) or converter.finished or not converter.awaiting_mcp:
                    return None
                for item_id, tool, arguments in converter.pending_mcp_calls():
                    await emit(await self._call(converter, item_id, tool, arguments))
                if converter.round_ends_response:
                    return None
                converter.next_round()
            logger.info(
                "%s: mcp_max_rounds (%d) reached; the response ends incomplete",
                converter.response["id"],
                self._settings.mcp_max_rounds,
            )
            self.bound_reached = True
        return None

    # --- before the first round -------------------------------------------------------------

    async def _list_tools(
        self,
        input_items: Sequence[Mapping[str, Any]],
        converter: StreamConverter,
        emit: Emit,
    ) -> UpstreamError | None:
        known = _listings(input_items)
        for server in self.servers:
            listed = known.get(server.label)
            if listed is not None:
                # Listed earlier in this conversation: reused, as OpenAI does, so a turn
                # costs no listing and the model keeps the tools it already saw.
                self.plan.add(server, listed)
                continue
            try:
                tools = await (await self._connection(server)).list_tools()
            except McpError as exc:
                await emit(converter.mcp_list_tools_failed(server.label, exc.message))
                return UpstreamError(
                    f"The MCP server {server.label!r} could not list its tools: {exc.message}",
                    code="server_error",
                )
            offered = self.plan.add(server, tools)
            await emit(converter.mcp_list_tools(server.label, [t.listing() for t in offered]))
        return None

    async def _run_approved(
        self, input_items: Sequence[Mapping[str, Any]], converter: StreamConverter, emit: Emit
    ) -> None:
        """Run each call an ``mcp_approval_response`` approved that has not run yet (the
        input may be a whole conversation, earlier turns' answers included)."""
        requests = {
            item.get("id"): item
            for item in input_items
            if item.get("type") == "mcp_approval_request"
        }
        done = {
            item.get("approval_request_id")
            for item in input_items
            if item.get("type") == "mcp_call"
        }
        for answer in input_items:
            if answer.get("type") != "mcp_approval_response":
                continue
            approval_id = answer.get("approval_request_id")
            asked = requests.get(approval_id)
            if answer.get("approve") is not True or asked is None or approval_id in done:
                # Declined calls reach the model as a refusal (see _request_history); an
                # answer to a request not in the conversation, or already run, runs nothing.
                continue
            done.add(approval_id)
            label, name = str(asked.get("server_label")), str(asked.get("name"))
            arguments = str(asked.get("arguments") or "{}")
            tool = self.plan.find(label, name)
            server = self.plan.servers.get(label)
            if tool is None and server is None:
                logger.info("approved MCP call %s names a server not in this request", approval_id)
                continue
            if tool is None:
                # The server no longer offers it (its allowed_tools changed): the call is
                # not made, and the model hears why rather than nothing.
                assert server is not None
                gone = McpTool(server, name, function_name_for(label, name), {})
                item_id, out = converter.open_mcp_call(gone, arguments, str(approval_id))
                await emit(out)
                await emit(
                    converter.mcp_call_result(
                        item_id,
                        error=f"The tool {name!r} is not offered by {label!r} in this request "
                        "(allowed_tools); the approved call was not made.",
                    )
                )
                continue
            item_id, out = converter.open_mcp_call(tool, arguments, str(approval_id))
            await emit(out)
            await emit(await self._call(converter, item_id, tool, arguments))

    # --- the rounds --------------------------------------------------------------------------

    async def _call(
        self, converter: StreamConverter, item_id: str, tool: McpTool, arguments: str
    ) -> bytes:
        try:
            parsed = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            return converter.mcp_call_result(
                item_id, error="The model's arguments for this tool are not a JSON object."
            )
        try:
            result = await (await self._connection(tool.server)).call_tool(tool.name, parsed)
        except McpError as exc:
            return converter.mcp_call_result(item_id, error=exc.message)
        if result.is_error:
            return converter.mcp_call_result(item_id, error=result.output)
        return converter.mcp_call_result(item_id, output=result.output)

    async def _connection(self, server: McpServer) -> McpConnection:
        connection = self._connections.get(server.label)
        if connection is None:
            connection = await self._exits.enter_async_context(open_mcp(server, self._settings))
            self._connections[server.label] = connection
        return connection


def _chat_body(
    request: Mapping[str, Any],
    input_items: Sequence[Mapping[str, Any]],
    converter: StreamConverter,
    plan: McpPlan,
    translate: Translate,
) -> bytes:
    """The next round's Chat request: the whole conversation so far, this response's own
    output (calls and results included) last."""
    body = dict(request)
    body["input"] = [*input_items, *converter.output_items()]
    body["stream"] = True
    return orjson.dumps(translate(body, plan))


def _function_names(request: Mapping[str, Any]) -> list[str]:
    """The client's own function names, which MCP tools' names must not take."""
    names: list[str] = []
    for tool in request.get("tools") or ():
        if isinstance(tool, Mapping) and isinstance(tool.get("name"), str):
            names.append(tool["name"])
    return names


def _listings(items: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """The latest successful ``mcp_list_tools`` of each server label in ``items``."""
    found: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        if item.get("type") == "mcp_list_tools" and not item.get("error"):
            tools = item.get("tools")
            if isinstance(tools, list):
                found[str(item.get("server_label"))] = tools
    return found
