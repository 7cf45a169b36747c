"""Run an action soon after it is asked for, once for any number of asks close together.

Many downloads finishing within moments of each other each ask for the restore requests to
be advanced; advancing them once covers them all (each advance reads every request and
archive afresh). ``Debounced.kick`` therefore only schedules a run: the run waits for
``settle`` (a short pause), and every kick until it starts is served by it. A kick while a
run is under way schedules exactly one more run after it, so no kick goes unserved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


class Debounced:
    def __init__(
        self,
        action: Callable[[], Awaitable[object]],
        *,
        spawn: Spawn,
        settle: Callable[[], Awaitable[object]],
        enabled: Callable[[], bool] = lambda: True,
        name: str,
    ) -> None:
        self._action = action
        self._spawn = spawn
        self._settle = settle
        self._enabled = enabled
        self._name = name
        self._scheduled = False  # a run is scheduled and has not started its action yet
        self._last: asyncio.Task[None] | None = None
        self.runs = 0  # how many times the action ran (for logs and tests)

    def kick(self) -> None:
        """Ask for a run; does nothing when disabled (the daemon is stopping)."""
        if self._scheduled or not self._enabled():
            return
        self._scheduled = True
        self._last = self._spawn(self._run(self._last), self._name)

    async def idle(self) -> None:
        """Wait until every scheduled run has finished (its failure is not raised here)."""
        while self._last is not None and not self._last.done():
            await asyncio.wait([self._last])

    async def _run(self, previous: asyncio.Task[None] | None) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])  # one run at a time
            await self._settle()
        finally:
            self._scheduled = False  # kicks from now on need a run after this one
        self.runs += 1
        await self._action()
