"""APScheduler jobs: the daily backup, its catch-up after downtime, and (with Glacier) polling.

Each job is a few lines calling an operation; the operation does the work.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from glacierd.catalog import backups as q
from glacierd.catalog.locks import BusyError
from glacierd.context import Context
from glacierd.operations.backup import start_backup

log = structlog.get_logger("glacierd.scheduler")


async def scheduled_backup(ctx: Context, trigger: str) -> None:
    try:
        handle = await start_backup(ctx, trigger)
    except BusyError as exc:
        log.warning("schedule.backup_skipped", trigger=trigger, reason=str(exc))
        return
    log.info("schedule.backup_started", trigger=trigger, backup_id=handle.backup_id)


async def missed_run(ctx: Context, now: datetime | None = None) -> datetime | None:
    """The scheduled time that passed without a backup, if any.

    The reference is the start of the last completed backup, or the catalog's creation when
    there is none yet. If the schedule fired between then and now, a run was missed.
    """
    now = now or datetime.now(UTC)
    last = await q.last_backup(ctx.catalog.pool, ctx.catalog, "completed")
    if last is not None:
        since = last["started_at"]
    else:
        since = await ctx.catalog.pool.fetchval(
            f"SELECT min(applied_at) FROM {ctx.catalog.q}.schema_migrations"
        )
    due = ctx.config.schedule.trigger().get_next_fire_time(None, since)
    return due if due is not None and due <= now else None


async def start_scheduler(
    ctx: Context, extra_jobs: list[dict[str, Any]] | None = None
) -> AsyncIOScheduler:
    cfg = ctx.config.schedule
    scheduler = AsyncIOScheduler(timezone=cfg.timezone)
    if cfg.enabled:
        scheduler.add_job(
            scheduled_backup,
            cfg.trigger(),
            args=[ctx, "schedule"],
            id="backup",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=3600,
        )
        if cfg.catch_up:
            due = await missed_run(ctx)
            if due is not None:
                run_at = datetime.now(UTC) + timedelta(seconds=cfg.catch_up_delay_seconds)
                log.warning(
                    "schedule.missed_run", due=due.isoformat(), catch_up_at=run_at.isoformat()
                )
                scheduler.add_job(
                    scheduled_backup,
                    "date",
                    run_date=run_at,
                    args=[ctx, "catch-up"],
                    id="catch-up",
                    misfire_grace_time=None,
                )
    for job in extra_jobs or []:
        scheduler.add_job(**job)
    scheduler.start()
    backup_job = scheduler.get_job("backup")
    log.info(
        "schedule.started",
        enabled=cfg.enabled,
        cron=cfg.backup_cron,
        timezone=cfg.timezone,
        next_backup=backup_job.next_run_time.isoformat() if backup_job else None,
    )
    return scheduler
