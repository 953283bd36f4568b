"""The ``Delivery`` protocol: how one ``ResponseRun`` (``_run``) hands over what it produces.

A run decides; a delivery carries. Four calls are enough for every way a response reaches
its client (``_deliver/``: HTTP SSE or JSON, WebSocket frames, a background event log; a
compaction's collected answer in ``_compact``), and none of them needs to parse what the run
made: errors come as the JSON object they are, events as whole events.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

__all__ = ["Delivery", "Headers"]

#: Response headers, as ASGI lists them: the upstream's, kept for the client.
Headers = list[tuple[bytes, bytes]]


class Delivery(Protocol):
    """Where one run's answer goes: the client's HTTP response, WebSocket frames, an event log.

    A run calls either ``answer`` once, or ``start`` once, then ``events`` any number of
    times and ``end`` once (``start(..., end=True)`` is the whole stream at once); nothing
    after ``answer`` or ``end``. Events are always whole, as ``StreamConverter`` writes
    them. Any method may raise ``OSError``: the client is gone, and the run stops.
    """

    async def answer(
        self, status: int, body: dict[str, Any], headers: Headers, *, close: bool
    ) -> None:
        """The whole answer as one JSON body: an error before anything was delivered, or a
        non-streamed response. ``headers`` are the upstream's kept ones; ``close``: the run
        re-raises the app's exception next and the server drops the connection."""

    async def start(self, headers: Headers, events: bytes, *, end: bool) -> None:
        """The stream begins with ``events`` (``response.created`` first); ``end``: they are
        all of it."""

    def events(self, data: bytes) -> Awaitable[None]:
        """More events of a stream that began. A plain function returning an awaitable, so
        that a delivery can hand back its transport's own (HTTP does): the streaming hot path
        stays one coroutine deep."""

    async def end(self, data: bytes) -> None:
        """The last events; the stream ends."""
