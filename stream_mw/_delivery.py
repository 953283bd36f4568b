"""The ``Delivery`` protocol: how one ``ResponseRun`` (``_run``) hands over what it produces.

A run decides; a delivery carries. Four calls are enough for every way a response reaches
its client (``_deliver/``: HTTP SSE or JSON, WebSocket frames, a background event log; a
compaction's collected answer in ``_compact``), and none of them needs to parse what the run
made: errors come as the JSON object they are, events as whole events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.types import Message

__all__ = ["Delivery", "Headers"]

#: Response headers, as ASGI lists them: the upstream's, kept for the client.
Headers = list[tuple[bytes, bytes]]


class Delivery(Protocol):
    """Where one run's answer goes: the client's HTTP response, WebSocket frames, an event log.

    A run calls either ``answer`` once, or ``start`` once, then ``events`` any number of
    times and ``end`` once (``start(..., end=True)`` is the whole stream at once); nothing
    after ``answer`` or ``end``. Events are always whole, as ``StreamConverter`` writes
    them. Any call may raise ``OSError``: the client is gone, and the run stops.
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

    @property
    def events(self) -> Callable[[Message], Awaitable[None]]:
        """Sends more events of a stream that began, given as the ``http.response.body``
        message (``more_body`` true) that carries them over HTTP; the others read its
        ``body``. The streaming hot path calls this once per upstream chunk: HTTP's is the
        server's own ``send``, so a delivery adds no call, let alone a coroutine, to it."""
        ...

    async def end(self, data: bytes) -> None:
        """The last events; the stream ends."""
