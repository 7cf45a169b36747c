"""The debounced restore kick: many downloads ending close together advance the restore
requests once, not once each — and no kick goes unserved.

The kick's pause is an asyncio.Event the test opens, so which kicks fall into one run is
decided by the test, never by a clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from glacierd.context import Context
from glacierd.debounce import Debounced
from glacierd.operations.backup import run_backup
from glacierd.operations.restore import RestoreDriver
from glacierd.operations.retrieval import retrieve_backup
from glacierd.service import wire_workers


class Gate:
    """The kick's pause: runs wait here until the test opens it."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def wait(self) -> None:
        await self.opened.wait()


def debounced(action: object, gate: Gate, *, enabled: bool = True) -> Debounced:
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: object, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        tasks.add(task)
        return task

    return Debounced(
        action,  # type: ignore[arg-type]
        spawn=spawn,
        settle=gate.wait,
        enabled=lambda: enabled,
        name="test-kick",
    )


async def test_a_burst_of_kicks_runs_the_action_once() -> None:
    runs: list[int] = []

    async def action() -> None:
        runs.append(len(runs))

    gate = Gate()
    kick = debounced(action, gate)
    for _ in range(20):
        kick.kick()
    await asyncio.sleep(0)  # the run has started and waits at the gate
    assert runs == []
    gate.opened.set()
    await kick.idle()
    assert runs == [0]
    assert kick.runs == 1


async def test_kicks_during_a_run_cause_exactly_one_more_run() -> None:
    release = asyncio.Event()
    started: list[int] = []

    async def action() -> None:
        started.append(len(started))
        if len(started) == 1:
            await release.wait()  # the first run is busy while the kicks arrive

    gate = Gate()
    gate.opened.set()
    kick = debounced(action, gate)
    kick.kick()
    while not started:
        await asyncio.sleep(0)
    for _ in range(5):
        kick.kick()  # what the first run may already have read: served by one more run
    release.set()
    await kick.idle()
    assert started == [0, 1]


async def test_no_run_while_disabled() -> None:
    runs: list[int] = []

    async def action() -> None:
        runs.append(1)

    gate = Gate()
    gate.opened.set()
    kick = debounced(action, gate, enabled=False)
    kick.kick()
    await kick.idle()
    assert runs == []


async def test_downloads_ending_together_advance_the_restores_once(
    ctx: Context, files_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's wiring: every finished download kicks the restore requests; four
    downloads that end while the kick pauses cause one advance."""
    advances: list[int] = []
    real_advance = RestoreDriver.advance_all

    async def counted(self: RestoreDriver) -> None:
        advances.append(1)
        await real_advance(self)

    monkeypatch.setattr(RestoreDriver, "advance_all", counted)
    summary = await run_backup(ctx, "test")
    for path in [p for p in files_root.rglob("*") if p.is_file()]:
        path.unlink()  # not on disk: the files are retrieved and downloaded too
    gate = Gate()
    workers = wire_workers(ctx, settle=gate.wait)
    try:
        # The local vault answers "ready" at once: each archive goes straight to the fetcher.
        result = await retrieve_backup(
            ctx, int(summary["backup_id"]), on_ready=workers.fetcher.enqueue
        )
        assert result["ready"] == 4  # the dump and three files
        # Every fetch was started before retrieve_backup returned; some may have ended.
        await asyncio.gather(*[t for t in ctx.tasks if t.get_name().startswith("fetch-")])
        local = await ctx.catalog.pool.fetchval(
            f"SELECT count(*) FROM {ctx.catalog.schema_sql}.archives "
            "WHERE retrieval_status = 'local'"
        )
        assert local == 4  # four downloads ended, each kicked the restores...
        assert advances == []  # ...while the kick still pauses
        gate.opened.set()
        await workers.restore_kick.idle()
        assert advances == [1]
        assert workers.restore_kick.runs == 1
    finally:
        workers.close()
        gate.opened.set()
        await workers.restore_kick.idle()
