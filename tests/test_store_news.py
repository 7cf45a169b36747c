"""Store news (the request's own answer, polling, SNS) against the catalog, with the races
forced: each test pauses one path on an asyncio.Event inside a store call while the other
path runs, so the interleaving is the same on every run.

The store is the local vault with a retrieval delay (it behaves like Glacier); setting its
``delay`` to zero makes every archive readable at once, like a finished retrieval.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from glacierd.catalog import archives as archive_rows
from glacierd.config import VaultStoreConfig, config_from_dict
from glacierd.context import Context, open_context
from glacierd.notifications.dispatch import dispatch
from glacierd.operations.backup import run_backup
from glacierd.operations.retrieval import (
    Poller,
    record_store_answer,
    request_archive,
    retrieve_backup,
)
from glacierd.stores.base import ArchiveRef, RetrievalState
from glacierd.stores.vault import VaultStore
from glacierd.stores.vault.events import VaultJobEvent
from tests.wiring import on_ready_of, wire


async def settle(ctx: Context) -> None:
    while ctx.tasks:
        await asyncio.gather(*list(ctx.tasks), return_exceptions=True)


@pytest.fixture
def open_ctx(make_settings: Callable[..., dict], tmp_path: Path) -> Callable[..., Any]:
    """A Context like the daemon's, on a local vault that takes an hour to retrieve."""

    @asynccontextmanager
    async def opened(fetcher: bool = True) -> AsyncIterator[Context]:
        settings = make_settings(
            store={
                "type": "local",
                "local": {"path": str(tmp_path / "vault"), "retrieval_delay_seconds": 3600},
            }
        )
        async with open_context(config_from_dict(settings)) as context:
            workers = wire(context) if fetcher else None
            try:
                yield context
            finally:
                if workers is not None:
                    workers.close()
                await settle(context)

    return opened


async def dump_row(ctx: Context) -> dict[str, Any]:
    row = await ctx.catalog.pool.fetchrow(
        f"SELECT * FROM {ctx.catalog.schema_sql}.archives WHERE kind = 'database'"
    )
    assert row is not None
    return dict(row)


async def current(ctx: Context, archive_id: int) -> dict[str, Any]:
    row = await archive_rows.get(ctx.catalog.pool, ctx.catalog, archive_id)
    assert row is not None
    return row


def make_ready(ctx: Context) -> None:
    """The store finished every retrieval: every archive is readable from now on."""
    ctx.store.delay = timedelta(0)  # type: ignore[attr-defined]


class Pause:
    """Wraps a store method: its first call signals ``entered`` and waits for ``release``,
    either before calling the real method (``before=True``) or after computing its answer
    (with ``answer`` instead of the real method, if given). Later calls — the store calling
    itself, other paths — go straight to the real method."""

    def __init__(
        self, real: Callable[..., Any], before: bool, answer: Callable[..., Any] | None = None
    ) -> None:
        self.real, self.before, self.answer = real, before, answer or real
        self.entered, self.release = asyncio.Event(), asyncio.Event()
        self.calls = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            return await self.real(*args, **kwargs)
        if self.before:
            self.entered.set()
            await self.release.wait()
            return await self.answer(*args, **kwargs)
        result = await self.answer(*args, **kwargs)
        self.entered.set()
        await self.release.wait()
        return result


class Counting:
    def __init__(self, real: Callable[..., Any]) -> None:
        self.real, self.calls = real, 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return await self.real(*args, **kwargs)


# ------------------------------------------------------------------------------------------
# item 2: pending before asking


async def test_a_poll_answer_from_before_the_request_does_not_lose_the_retrieval(
    open_ctx: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
):
    async with open_ctx() as ctx:
        await run_backup(ctx, "test")
        row = await dump_row(ctx)
        asking = Pause(ctx.store.request_retrieval, before=True)
        polling = Pause(ctx.store.retrieval_status, before=False)
        monkeypatch.setattr(ctx.store, "request_retrieval", asking)
        monkeypatch.setattr(ctx.store, "retrieval_status", polling)

        request = asyncio.create_task(
            request_archive(ctx, row, None, source="request", on_ready=on_ready_of(ctx))
        )
        await asyncio.wait_for(
            asking.entered.wait(), 30
        )  # claimed, but the store has not heard of it yet
        poll = asyncio.create_task(Poller(ctx, 0, on_ready=on_ready_of(ctx)).poll_once())
        await asyncio.wait_for(
            polling.entered.wait(), 30
        )  # the poll's answer: "no retrieval" (true, for now)
        asking.release.set()
        assert (await request).status == "pending"  # the store took the request
        polling.release.set()
        await asyncio.wait_for(poll, 30)  # ... and the poll's older answer arrives last

        after = await current(ctx, row["id"])
        assert after["retrieval_status"] == "pending", after
        assert after["retrieval_error"] is None

        # The retrieval is not lost: when the store finishes, polling finds it and the
        # archive is downloaded and verified.
        monkeypatch.undo()
        make_ready(ctx)
        assert await Poller(ctx, 0, on_ready=on_ready_of(ctx)).poll_once() == 1
        await settle(ctx)
        assert (await current(ctx, row["id"]))["retrieval_status"] == "local"


async def test_a_second_caller_never_asks_the_store_again(
    open_ctx: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
):
    async with open_ctx() as ctx:
        await run_backup(ctx, "test")
        seen = await dump_row(ctx)  # what both callers read: available
        counting = Counting(ctx.store.request_retrieval)
        monkeypatch.setattr(ctx.store, "request_retrieval", counting)

        first = await request_archive(ctx, seen, None, source="request", on_ready=on_ready_of(ctx))
        assert first is not None and first.status == "pending"
        # A second caller (the retrieve verb, a restore) that read the row before the
        # first claimed it: the claim fails, and the store is not asked twice.
        assert (
            await request_archive(ctx, seen, "Bulk", source="restore", on_ready=on_ready_of(ctx))
            is None
        )
        assert counting.calls == 1
        after = await current(ctx, seen["id"])
        assert after["retrieval_status"] == "pending"
        assert after["retrieval_tier"] == "Standard"  # the first caller's, not overwritten

        # Two callers at the same moment: one asks, the other finds it claimed.
        await ctx.catalog.pool.execute(
            f"UPDATE {ctx.catalog.schema_sql}.archives SET retrieval_status = 'available', "
            "retrieval_asking = false WHERE id = $1",
            seen["id"],
        )
        second_seen = await current(ctx, seen["id"])
        results = await asyncio.gather(
            request_archive(ctx, second_seen, None, source="request", on_ready=on_ready_of(ctx)),
            request_archive(ctx, second_seen, None, source="restore", on_ready=on_ready_of(ctx)),
        )
        assert sorted(r is None for r in results) == [False, True]
        assert counting.calls == 2


async def test_a_failed_request_undoes_its_claim(
    open_ctx: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
):
    async with open_ctx() as ctx:
        await run_backup(ctx, "test")
        seen = await dump_row(ctx)

        async def refused(ref: ArchiveRef, tier: str | None = None) -> RetrievalState:
            raise OSError("the store is unreachable")

        monkeypatch.setattr(ctx.store, "request_retrieval", refused)
        with pytest.raises(OSError):
            await request_archive(ctx, seen, None, source="request", on_ready=on_ready_of(ctx))
        after = await current(ctx, seen["id"])
        assert after["retrieval_status"] == "available"
        assert after["retrieval_asking"] is False
        assert after["retrieval_error"] == "the retrieval request failed"
        monkeypatch.undo()
        # ... so it can be requested again.
        assert (
            await request_archive(ctx, after, None, source="request", on_ready=on_ready_of(ctx))
        ) is not None
        assert (await current(ctx, seen["id"]))["retrieval_status"] == "pending"


# ------------------------------------------------------------------------------------------
# item 3: stale news never regresses


async def test_a_stale_poll_answer_never_moves_a_verified_copy_back(
    open_ctx: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
):
    async with open_ctx() as ctx:
        await run_backup(ctx, "test")
        row = await dump_row(ctx)
        await request_archive(ctx, row, None, source="request", on_ready=on_ready_of(ctx))

        async def vanished(ref: ArchiveRef) -> RetrievalState:
            # What a store answers when it lost track of a job (vault: DescribeJob finds no
            # such job yet) — computed now, delivered late.
            return RetrievalState("available", reason="no such retrieval job")

        polling = Pause(ctx.store.retrieval_status, before=False, answer=vanished)
        monkeypatch.setattr(ctx.store, "retrieval_status", polling)
        slow_poll = asyncio.create_task(Poller(ctx, 0, on_ready=on_ready_of(ctx)).poll_once())
        await asyncio.wait_for(polling.entered.wait(), 30)

        # Meanwhile the retrieval finishes (SNS), the archive is downloaded and verified.
        make_ready(ctx)
        pending = await current(ctx, row["id"])
        assert pending["retrieval_status"] == "pending"
        await record_store_answer(
            ctx, pending, RetrievalState("ready"), source="sns", on_ready=on_ready_of(ctx)
        )
        await settle(ctx)
        local = await current(ctx, row["id"])
        assert local["retrieval_status"] == "local"

        polling.release.set()
        await asyncio.wait_for(
            slow_poll, 30
        )  # its answer was computed while the archive was still pending
        after = await current(ctx, row["id"])
        assert after["retrieval_status"] == "local", after
        assert Path(after["local_path"]).exists()

        # Any news, old or new, leaves a verified local copy alone.
        for news in ("available", "pending", "ready"):
            assert (
                await record_store_answer(
                    ctx, after, RetrievalState(news), source="sns", on_ready=on_ready_of(ctx)
                )
                is None
            )
        assert (await current(ctx, row["id"]))["retrieval_status"] == "local"


async def test_an_old_vault_job_never_replaces_a_newer_one(
    open_ctx: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
):
    async with open_ctx(fetcher=False) as ctx:
        # Glacier's job messages, read as the vault store reads them (no client needed).
        vault = VaultStore("vault", VaultStoreConfig(vault="news"))
        monkeypatch.setattr(ctx.store, "interpret", vault.interpret)
        await run_backup(ctx, "test")
        row = await dump_row(ctx)
        pool, schema = ctx.catalog.pool, ctx.catalog.schema_sql
        await pool.execute(
            f"UPDATE {schema}.archives "
            "SET retrieval_status = 'pending', retrieval_job_id = 'job-1' WHERE id = $1",
            row["id"],
        )
        seen_by_poll = await current(ctx, row["id"])  # a poll reads the row: job-1
        # job-1 failed; a new retrieval started as job-2 (recorded by its own request).
        await pool.execute(
            f"UPDATE {schema}.archives SET retrieval_job_id = 'job-2' WHERE id = $1", row["id"]
        )
        # The poll's answer about job-1 ("still running") arrives now.
        late = RetrievalState("pending", job_id="job-1")
        await record_store_answer(ctx, seen_by_poll, late, source="poll", on_ready=on_ready_of(ctx))
        assert (await current(ctx, row["id"]))["retrieval_job_id"] == "job-2"

        # An SNS message about job-1 failing does not cancel job-2 either.
        failed = VaultJobEvent(
            job_id="job-1",
            archive_id=row["store_key"],
            status_code="Failed",
            status_message="simulated",
            completed_at=None,
        )
        assert await dispatch(ctx, failed, on_ready_of(ctx)) == 0
        after = await current(ctx, row["id"])
        assert (after["retrieval_status"], after["retrieval_job_id"]) == ("pending", "job-2")

        # The same message about job-2 is news: the archive's retrieval failed.
        assert await dispatch(ctx, replace(failed, job_id="job-2"), on_ready_of(ctx)) == 1
        after = await current(ctx, row["id"])
        assert (after["retrieval_status"], after["retrieval_job_id"]) == ("available", "job-2")
        assert after["retrieval_error"] == "Glacier retrieval job failed: simulated"


# ------------------------------------------------------------------------------------------
# items 10 and 11: polling is bounded and pruned; requests are logged per archive


async def test_polling_is_bounded_per_tick_and_forgets_finished_archives(
    open_ctx: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, files_root: Path
):
    for n in range(30):
        (files_root / "many" / f"{n:02d}.bin").parent.mkdir(exist_ok=True)
        (files_root / "many" / f"{n:02d}.bin").write_bytes(b"x" * (n + 1))
    monkeypatch.setattr("glacierd.operations.retrieval.POLL_BATCH", 8)
    async with open_ctx(fetcher=False) as ctx:
        summary = await run_backup(ctx, "test")
        for path in files_root.rglob("*.bin"):
            path.unlink()
        result = await retrieve_backup(ctx, int(summary["backup_id"]), on_ready=on_ready_of(ctx))  # type: ignore[call-overload]
        assert result["requested"] == 31  # 30 files and the dump
        in_flight = 0
        most = 0
        real = ctx.store.retrieval_status

        async def observed(ref: ArchiveRef) -> RetrievalState:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                await asyncio.sleep(0)  # let other checks start, if any run at once
                return await real(ref)
            finally:
                in_flight -= 1

        monkeypatch.setattr(ctx.store, "retrieval_status", observed)
        poller = Poller(ctx, 3600, on_ready=on_ready_of(ctx))
        checked: list[int] = []
        for _ in range(4):
            before = len(poller.next_check)
            await poller.poll_once()
            checked.append(len(poller.next_check) - before)
        # At most POLL_BATCH store calls per tick; every archive gets its turn.
        assert checked == [8, 8, 8, 7]
        assert most <= 4
        # Archives that left "pending" are forgotten by the poller.
        make_ready(ctx)
        poller.next_check.clear()
        while await poller.poll_once():
            pass
        assert poller.next_check == {}


async def test_each_request_and_each_vault_job_is_logged_per_archive(
    open_ctx: Callable[..., Any],
):
    async with open_ctx(fetcher=False) as ctx:
        await run_backup(ctx, "test")
        row = await dump_row(ctx)
        with capture_logs() as logs:
            await request_archive(ctx, row, "Bulk", source="restore", on_ready=on_ready_of(ctx))
        [claimed] = [e for e in logs if e["event"] == "archive.retrieval_requested"]
        assert claimed["archive_id"] == row["id"] and claimed["key"] == row["store_key"]
        assert claimed["tier"] == "Bulk" and claimed["source"] == "restore"


async def test_a_vault_job_start_is_logged(vault_moto: str):
    name = f"news-{uuid.uuid4().hex[:8]}"
    store = VaultStore(
        "vault",
        VaultStoreConfig(
            vault=name, region="us-east-1", endpoint_url=vault_moto, default_tier="Expedited"
        ),
    )
    await store.open()
    try:
        await store._client.create_vault(accountId="-", vaultName=name)

        async def data() -> AsyncIterator[bytes]:
            yield b"an archive"

        put = await store.put("files/a@backup1", data(), kind="file", size_hint=10)
        with capture_logs() as logs:
            state = await store.request_retrieval(ArchiveRef(put.key), "Bulk")
        [started] = [e for e in logs if e["event"] == "vault.job_started"]
        assert started["job_id"] == state.job_id and started["archive_id"] == put.key
        assert started["tier"] == "Bulk" and started["vault"] == name
    finally:
        await store.close()
