"""A run's keep-alives: a repeated ``response.in_progress`` while the upstream is silent.

Strategy: nothing in the path of a chunk but the run's ``last_send``. Each check re-arms for
the time of the last send, so a busy stream costs one check per interval. On asyncio the
check is a loop callback and a task is spawned only to send; elsewhere it is a task sleeping
in the run's task group. A keep-alive is an event of the stream, so it goes to the run's
delivery like any other (``Delivery.events``), whichever delivery that is.

Two tasks may then deliver: the app's and this one. A lock would cost more than the rest of
a chunk's path, so while a keep-alive is being sent the run's ``keepalive_sending`` is set
and the app's sends wait for it, and a check that finds the run sending (``sending``) skips
its turn.
"""

from __future__ import annotations

import asyncio
from time import monotonic as _monotonic
from typing import TYPE_CHECKING

import anyio

from ._observe import logger

if TYPE_CHECKING:
    from ._run import ResponseRun

__all__ = ["KeepAlive"]


class KeepAlive:
    """The keep-alives of one run's stream, every ``interval`` seconds of silence."""

    __slots__ = ("interval", "looping", "run", "task", "timer")

    def __init__(self, run: ResponseRun, interval: float) -> None:
        self.run = run
        self.interval = interval
        #: On asyncio: the pending check's loop callback, and the task sending one.
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        #: Off asyncio: the checking task is running.
        self.looping = False

    @property
    def armed(self) -> bool:
        """A check is pending: arming again would send keep-alives twice as often."""
        return self.timer is not None or self.task is not None or self.looping

    def arm(self) -> None:
        """Start checking, ``interval`` seconds from now."""
        run = self.run
        if run.loop is not None:
            self.timer = run.loop.call_later(self.interval, self._keepalive_due)
        elif run.task_group is not None:
            run.task_group.start_soon(self._keepalive_loop)

    def stop(self) -> None:
        """No more checks (the loop's sleeping task ends with the run's task group)."""
        timer, task = self.timer, self.task
        self.timer = self.task = None
        if timer is not None:
            timer.cancel()
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _delay(self) -> float | None:
        """Seconds until a keep-alive is due (``<= 0``: now), ``None`` when no more are."""
        run = self.run
        converter = run.converter
        if run.complete or run.disconnected or converter is None or converter.finished:
            return None
        if run.sending:
            # Blocked on a slow client: that is not upstream silence.
            run.last_send = _monotonic()
        return run.last_send + self.interval - _monotonic()

    def _keepalive_due(self) -> None:
        self.timer = None
        delay = self._delay()
        loop = self.run.loop
        assert loop is not None
        if delay is None:
            return
        if delay > 0:
            self.timer = loop.call_later(delay, self._keepalive_due)
        else:
            self.task = loop.create_task(self._keepalive_now())

    async def _keepalive_now(self) -> None:
        # Checked again: the app may have sent (or ended the stream) since the callback ran.
        delay = self._delay()
        if delay is not None and delay <= 0 and not await self._send():
            delay = None  # the client is gone
        self.task = None
        if delay is not None:
            self._keepalive_due()

    async def _keepalive_loop(self) -> None:
        self.looping = True
        try:
            while (delay := self._delay()) is not None:
                if delay > 0:
                    await anyio.sleep(delay)
                elif not await self._send():
                    return
        finally:
            self.looping = False

    async def _send(self) -> bool:
        """Send one keep-alive event; ``False`` when the client is gone."""
        run = self.run
        converter = run.converter
        assert converter is not None
        done = anyio.Event()
        run.keepalive_sending = done
        try:
            keepalive = converter.keepalive()
            await run.events({"type": "http.response.body", "body": keepalive, "more_body": True})
        except OSError:
            run.client_gone()
            return False
        finally:
            run.keepalive_sending = None
            done.set()
        run.last_send = _monotonic()
        if run.mw.metrics is not None:
            run.mw.metrics.keepalives.inc()
        logger.debug("%s: keep-alive sent", run.response_id)
        return True
