"""Start and stop of the parts of a serving process.

Every part (a listener, a worker, a background loop, the committer) is a
:class:`Component`: ``await start()`` makes it run, ``await stop(deadline)`` ends it by
*deadline* (a :func:`time.monotonic` instant, the same one for every part of a shutdown).
``mss serve`` starts them in order and stops them in reverse order (mss/server.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import structlog

log = structlog.get_logger("mss.lifecycle")
STOP_FLOOR = 1.0  # seconds a part still gets to end once the deadline passed


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self, deadline: float) -> None: ...


def remaining(deadline: float, floor: float = 0.0) -> float:
    """Seconds left until *deadline* (a time.monotonic() instant), at least *floor*."""
    return max(floor, deadline - time.monotonic())


class BackgroundTask:
    """A coroutine run as a component: ``start`` creates its task, ``stop`` cancels it and
    waits for it to end (bounded by the deadline, at least :data:`STOP_FLOOR`)."""

    def __init__(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self.run = run
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.task is not None:
            raise RuntimeError(f"{self.name} already started")
        self.task = asyncio.get_running_loop().create_task(self.run(), name=self.name)

    async def stop(self, deadline: float) -> None:
        task, self.task = self.task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task}, timeout=remaining(deadline, STOP_FLOOR))
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("background task failed", task=self.name, error=repr(task.exception()))
