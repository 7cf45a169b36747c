"""What every operation needs, opened once: configuration, catalog, store — resources only.

The daemon, the CLI's one-shot commands and the tests all build a Context the same way,
so an operation behaves identically whoever calls it. Workers (the fetcher, the restore
driver) are not reachable from here: an operation that must tell one of them something
takes a callback (``on_ready``, ``on_fetched``), which ``service.py`` wires and a one-shot
command leaves out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from glacierd.catalog import Catalog
from glacierd.catalog.migrations import migrate
from glacierd.config import Config
from glacierd.stores.base import Store
from glacierd.stores.factory import build_store

T = TypeVar("T")


@dataclass
class Context:
    config: Config
    catalog: Catalog
    store: Store
    # Background work the daemon must finish or abandon on shutdown (backups, fetches).
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # Set once the daemon begins to stop: nothing starts new work any more (the control API
    # answers 503, the scheduler is paused, restores are not kicked, fetches not queued).
    stopping: bool = False

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run ``coro`` as tracked work: the daemon's shutdown waits for it (or cancels it
        after shutdown_timeout_seconds)."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(_forget(self.tasks))
        return task


def _forget(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
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
