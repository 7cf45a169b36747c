"""The health evaluation: one unhealthy state at a time, on real PostgreSQL and real stores.

Time is the evaluation's ``now`` (the daemon passes the clock): "26 hours later" is a later
``now``, never a sleep.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from glacierd.config import config_from_dict
from glacierd.context import Context, open_context
from glacierd.health import evaluate
from glacierd.operations.backup import run_backup
from glacierd.operations.restore import start_restore
from glacierd.operations.retrieval import retrieve_backup
from glacierd.sources.database import DatabaseSourceError
from tests.aws_fixtures import REGION
from tests.wiring import wire

HOUR = timedelta(hours=1)


@pytest.fixture
def open_ctx(make_settings: Callable[..., dict]) -> Callable[..., Any]:
    @asynccontextmanager
    async def opened(**overrides: Any) -> AsyncIterator[Context]:
        async with open_context(config_from_dict(make_settings(**overrides))) as context:
            yield context

    return opened


async def checks(ctx: Context, now: datetime | None = None) -> dict[str, str]:
    """The problems found, as {check: message}."""
    health = await evaluate(ctx, now)
    assert health.healthy == (not health.problems)
    return {p.check: p.message for p in health.problems}


async def test_a_fresh_setup_is_healthy(open_ctx: Callable[..., Any]) -> None:
    async with open_ctx() as ctx:
        health = await evaluate(ctx)
        body = health.as_json()
        assert body["status"] == "ok" and body["problems"] == []
        assert body["last_successful_backup"] is None
        assert body["store"] == {"name": "local", "type": "local"}


async def test_a_failed_last_backup_is_unhealthy_until_one_succeeds(
    open_ctx: Callable[..., Any], make_settings: Callable[..., dict]
) -> None:
    database = make_settings()["database"]
    async with open_ctx(database={**database, "pg_dump": "/nonexistent/pg_dump"}) as ctx:
        with pytest.raises(DatabaseSourceError):
            await run_backup(ctx, "cli")
        found = await checks(ctx)
        failed = await ctx.catalog.pool.fetchval(
            f"SELECT id FROM {ctx.catalog.schema_sql}.backups WHERE status = 'failed'"
        )
    assert list(found) == ["last_backup"]
    assert f"the last backup ({failed}, started by cli) failed at" in found["last_backup"]
    assert "/nonexistent/pg_dump" in found["last_backup"]  # the reason
    async with open_ctx() as ctx:
        await run_backup(ctx, "cli")
        assert await checks(ctx) == {}


async def test_an_old_last_success_is_unhealthy(open_ctx: Callable[..., Any]) -> None:
    async with open_ctx(health={"max_backup_age_hours": 26}) as ctx:
        summary = await run_backup(ctx, "cli")
        finished = await ctx.catalog.pool.fetchval(
            f"SELECT finished_at FROM {ctx.catalog.schema_sql}.backups WHERE id = $1",
            summary["backup_id"],
        )
        assert await checks(ctx, finished + 25 * HOUR) == {}
        found = await checks(ctx, finished + 27 * HOUR)
    assert list(found) == ["backup_age"]
    assert (
        f"the last successful backup ({summary['backup_id']}) finished 1 d 3 h ago"
        in (found["backup_age"])
    )
    assert "health.max_backup_age_hours (26 h)" in found["backup_age"]


def slow_local(tmp_path: Path) -> dict[str, Any]:
    """A local vault that makes every retrieval take an hour, as Glacier would."""
    return {
        "type": "local",
        "local": {"path": str(tmp_path / "vault"), "retrieval_delay_seconds": 3600},
    }


async def test_a_retrieval_pending_past_its_tiers_maximum(
    open_ctx: Callable[..., Any], tmp_path: Path
) -> None:
    store = slow_local(tmp_path)
    async with open_ctx(store=store) as ctx:
        summary = await run_backup(ctx, "cli")
        asked = datetime.now(UTC)
        await retrieve_backup(ctx, summary["backup_id"], on_ready=lambda _: None)
        # The maximum (1 h) plus one poll (1 h / 12 = 5 min): not yet overdue…
        assert "retrieval_overdue" not in await checks(ctx, asked + HOUR)
        found = await checks(ctx, asked + HOUR + timedelta(minutes=6))
    assert "retrieval_overdue" in found
    # The files are on disk: only the dump is retrieved.
    assert found["retrieval_overdue"].startswith(
        "1 retrieval of LOCAL_ARCHIVE archives at the Standard tier has been pending longer "
        "than the tier's 1 h maximum (the oldest, archive 1 (database dump), since "
    )


async def test_a_restore_stuck_past_its_expected_time(
    open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path
) -> None:
    store = slow_local(tmp_path)
    async with open_ctx(store=store, health={"restore_grace_hours": 2}) as ctx:
        summary = await run_backup(ctx, "cli")
        shutil.rmtree(files_root)  # the files must be retrieved too
        files_root.mkdir()
        workers = wire(ctx)
        try:
            result = await start_restore(
                ctx, summary["backup_id"], {"tier": None, "database": True, "files": True}
            )
            await workers.restorer.advance_all()  # requested -> retrieving
        finally:
            workers.close()
        created = await ctx.catalog.pool.fetchval(
            f"SELECT created_at FROM {ctx.catalog.schema_sql}.restores WHERE id = $1",
            result["id"],
        )
        # Its slowest retrieval (1 h) plus the grace (2 h): not stuck yet…
        assert "restore_stuck" not in await checks(ctx, created + 3 * HOUR - timedelta(minutes=1))
        found = await checks(ctx, created + 3 * HOUR + timedelta(minutes=1))
    assert found["restore_stuck"].startswith(
        f"restore {result['id']} of backup {summary['backup_id']} is still retrieving 3 h 1 min "
        "after it was requested, longer than its slowest retrieval (1 h) plus "
        "health.restore_grace_hours (2 h)"
    )


async def test_an_unreachable_store_is_noticed_once_its_last_answer_is_old(
    open_ctx: Callable[..., Any], tmp_path: Path
) -> None:
    async with open_ctx(health={"store_check_interval_seconds": 300}) as ctx:
        now = datetime.now(UTC)
        assert await checks(ctx, now) == {}
        shutil.rmtree(tmp_path / "vault")  # the vault's mount went away
        # The answer from a moment ago is reused: /health polled every second costs nothing.
        assert await checks(ctx, now + timedelta(seconds=299)) == {}
        found = await checks(ctx, now + timedelta(seconds=301))
    assert found == {
        "store": f"local vault directory {tmp_path / 'vault'} is missing or not writable; "
        "restore the directory (or its mount) or correct store.local.path."
    }


async def test_a_missing_bucket_makes_the_s3_store_unreachable(
    open_ctx: Callable[..., Any], moto_server: str
) -> None:
    s3 = {"bucket": "no-such-bucket-here", "endpoint_url": moto_server, "region": REGION}
    async with open_ctx(store={"type": "s3", "s3": s3}) as ctx:
        found = await checks(ctx)
    assert found == {
        "store": "S3 bucket no-such-bucket-here does not exist; create it or correct "
        "store.s3.bucket."
    }


async def test_a_short_disk_for_retrievals(open_ctx: Callable[..., Any], tmp_path: Path) -> None:
    huge = 1024**3  # MiB: a pebibyte no test machine has free
    async with open_ctx(health={"disk_headroom_mib": huge}) as ctx:
        summary = await run_backup(ctx, "cli")
        found = await checks(ctx)
    assert list(found) == ["disk"]
    assert found["disk"].startswith("only ")
    assert (
        f"free for state_dir {tmp_path / 'state'}, less than the newest database dump "
        in (found["disk"])
    )
    assert f"(backup {summary['backup_id']}, " in found["disk"]
    assert found["disk"].endswith(
        "plus health.disk_headroom_mib (1024.0 TiB); free space on that filesystem or move "
        "state_dir to a larger one, or the next fetch will not fit."
    )


async def test_an_unreachable_catalog_is_a_problem_not_a_crash(
    open_ctx: Callable[..., Any],
) -> None:
    async with open_ctx() as ctx:
        await ctx.catalog.close()  # as when the database went away
        found = await checks(ctx)
    assert list(found) == ["catalog"]
    assert found["catalog"].startswith("the catalog check could not run (")
