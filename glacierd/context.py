"""What every operation needs, opened once: configuration, catalog, store.

The daemon, the CLI's one-shot commands and the tests all build a Context the same way,
so an operation behaves identically whoever calls it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from glacierd.catalog import Catalog
from glacierd.catalog.migrations import migrate
from glacierd.config import Config
from glacierd.stores.base import Store
from glacierd.stores.factory import build_store

if TYPE_CHECKING:
    from glacierd.operations.fetch import Fetcher
    from glacierd.operations.restore import RestoreDriver


@dataclass
class Context:
    config: Config
    catalog: Catalog
    store: Store
    # Background work the daemon must finish or abandon on shutdown (backups, fetches).
    tasks: set[asyncio.Task[object]] = field(default_factory=set)
    # Downloads archives that became ready; None in one-shot CLI commands.
    fetcher: Fetcher | None = None
    # Moves restore requests along; None in one-shot CLI commands.
    restorer: RestoreDriver | None = None
    # Set once the daemon begins to stop: nothing starts new work any more (the control API
    # answers 503, the scheduler is paused, restores are not kicked, fetches not queued).
    stopping: bool = False

    def kick_restores(self) -> None:
        """Advance restore requests now (instead of at the next tick); never while stopping,
        when a request simply resumes at the next start."""
        if self.restorer is not None and not self.stopping:
            self.spawn(self.restorer.advance_all(), name="restore-advance")

    def spawn(self, coro: object, name: str) -> asyncio.Task[object]:
        """Run ``coro`` as tracked work: the daemon's shutdown waits for it (or cancels it
        after shutdown_timeout_seconds)."""
        task: asyncio.Task[object] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(_forget(self.tasks))
        return task


def _forget(tasks: set[asyncio.Task[object]]) -> Callable[[asyncio.Task[object]], None]:
    def done(task: asyncio.Task[object]) -> None:
        tasks.discard(task)
        # Whoever cares awaits the task (a CLI backup) or recorded the failure itself (a
        # backup, a fetch, a restore); mark it retrieved so asyncio does not log it again.
        if not task.cancelled():
            task.exception()

    return done


@asynccontextmanager
async def open_context(config: Config, *, apply_migrations: bool = True) -> AsyncIterator[Context]:
    catalog = Catalog(config.catalog.conninfo, config.catalog.schema)
    await catalog.open()
    try:
        if apply_migrations:
            await migrate(catalog)
        store = build_store(config.store)
        await store.open()
        try:
            yield Context(config, catalog, store)
        finally:
            await store.close()
    finally:
        await catalog.close()
