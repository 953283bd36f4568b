"""The asyncio fast path shared by the middleware and the proxy.

Both run under any anyio backend, but nearly everyone runs them on asyncio (uvicorn,
hypercorn's default), where anyio's general machinery costs more per request than the
work it wraps: ``anyio.CancelScope()`` looks the backend up on every call, and a task
group builds a cancel scope and an event for every task spawned into it. On asyncio a
plain task and the backend's own cancel scope class do the same job.
"""

from __future__ import annotations

import asyncio

import anyio

__all__ = ["current_asyncio_task", "new_asyncio_cancel_scope", "running_asyncio_loop"]

# The asyncio backend's class, learnt from the first scope made on asyncio.
_cancel_scope_class: type[anyio.CancelScope] | None = None


def current_asyncio_task() -> asyncio.Task[object] | None:
    """The running asyncio task; ``None`` under another anyio backend."""
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running asyncio loop: trio, or another backend
        return None


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop; ``None`` under another anyio backend."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # no running asyncio loop: trio, or another backend
        return None


def new_asyncio_cancel_scope() -> anyio.CancelScope:
    """``anyio.CancelScope()``, without the backend lookup. Only call it on asyncio."""
    global _cancel_scope_class
    if _cancel_scope_class is None:
        scope = anyio.CancelScope()
        _cancel_scope_class = type(scope)
        return scope
    return _cancel_scope_class()
