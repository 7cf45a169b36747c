"""APScheduler jobs: the daily backup, its catch-up after downtime, and (with Glacier) polling.

Each job is a few lines calling an operation; the operation does the work.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

from glacierd.catalog import schedule as schedule_rows
from glacierd.catalog.locks import BusyError
from glacierd.context import Context
from glacierd.operations.backup import start_backup

log = structlog.get_logger("glacierd.scheduler")


def last_fire_time(trigger: BaseTrigger, now: datetime) -> datetime | None:
    """The trigger's latest fire time at or before ``now`` (None if none within ~3 years).

    APScheduler tells a job nothing about the time it was scheduled for; with coalescing and
    a misfire grace time that is the latest fire time up to now. Searched with a window
    doubling from one second back, so a dense cron takes a step or two and a daily one ~17.
    """
    window = timedelta(seconds=1)
    while window < timedelta(days=1100):
        first = trigger.get_next_fire_time(None, now - window)
        if first is not None and first <= now:
            # Every fire in the window lies in its older half (the newer half had none).
            latest = first
            while True:
                following = trigger.get_next_fire_time(latest, latest + _TICK)
                if following is None or following > now:
                    return latest
                latest = following
        window *= 2
    return None


_TICK = timedelta(microseconds=1)


async def scheduled_backup(ctx: Context, trigger: str) -> None:
    """Start the scheduled (or catch-up) backup and record the cron time it runs for.

    That time is what later decides whether a run was missed (``missed_run``): it comes from
    the daemon's clock like the cron times themselves, whereas the backup's started_at comes
    from the database server's clock, which may run a little behind. A catch-up backup runs
    for every run missed so far, so it records the latest cron time up to now.
    """
    due = last_fire_time(ctx.config.schedule.trigger(), datetime.now(UTC))
    try:
        handle = await start_backup(ctx, trigger)
    except BusyError as exc:
        log.warning("schedule.backup_skipped", trigger=trigger, reason=str(exc))
        return
    if due is not None:
        await schedule_rows.record_scheduled_for(
            ctx.catalog.pool, ctx.catalog, handle.backup_id, due
        )
    log.info(
        "schedule.backup_started",
        trigger=trigger,
        backup_id=handle.backup_id,
        scheduled_for=due.isoformat() if due else None,
    )


async def missed_run(ctx: Context, now: datetime | None = None) -> datetime | None:
    """The scheduled time that passed without a backup, if any.

    The reference is what the completed backups cover (the cron time a scheduled backup ran
    for, else a backup's start), or the catalog's creation when there is none yet. If the
    schedule fired between then and now, a run was missed.
    """
    now = now or datetime.now(UTC)
    since = await schedule_rows.covered_until(ctx.catalog.pool, ctx.catalog)
    if since is None:
        since = await ctx.catalog.pool.fetchval(
            f"SELECT min(applied_at) FROM {ctx.catalog.schema_sql}.schema_migrations"
        )
    # A backup that ran for a fire time covers that time itself: look strictly after it.
    due = ctx.config.schedule.trigger().get_next_fire_time(since, since + _TICK)
    return due if due is not None and due <= now else None


def tracked(
    ctx: Context, func: Callable[..., Coroutine[Any, Any, Any]]
) -> Callable[..., Coroutine[Any, Any, None]]:
    """A job function whose every run is tracked work of the context (``ctx.spawn``).

    The daemon's shutdown then gives a running job (a restore tick, a poll) the same grace
    as a backup or a download, instead of APScheduler cancelling it at once. The run is
    awaited without being cancellable through the wrapper, and a run that shutdown had to
    abandon ends quietly.
    """

    @functools.wraps(func)
    async def run(*args: Any, **kwargs: Any) -> None:
        if ctx.stopping:
            return
        task = ctx.spawn(func(*args, **kwargs), name=f"job-{func.__name__}")
        await asyncio.wait([task])
        if not task.cancelled() and (exc := task.exception()) is not None:
            raise exc  # APScheduler logs a failed run, as before

    return run


def add_backup_job(scheduler: AsyncIOScheduler, ctx: Context) -> None:
    """The scheduled backup, on ctx.config.schedule's cron (at start, and when a reload
    enables the schedule)."""
    scheduler.add_job(
        tracked(ctx, scheduled_backup),
        ctx.config.schedule.trigger(),
        args=[ctx, "schedule"],
        id="backup",
        coalesce=True,
        max_instances=1,
        misfire_grace_time=3600,
    )


async def start_scheduler(
    ctx: Context, extra_jobs: list[dict[str, Any]] | None = None
) -> AsyncIOScheduler:
    """Start the jobs; every run of every job is tracked work (see ``tracked``)."""
    cfg = ctx.config.schedule
    scheduler = AsyncIOScheduler(timezone=cfg.timezone)
    if cfg.enabled:
        add_backup_job(scheduler, ctx)
        if cfg.catch_up:
            due = await missed_run(ctx)
            if due is not None:
                run_at = datetime.now(UTC) + timedelta(seconds=cfg.catch_up_delay_seconds)
                log.warning(
                    "schedule.missed_run", due=due.isoformat(), catch_up_at=run_at.isoformat()
                )
                scheduler.add_job(
                    tracked(ctx, scheduled_backup),
                    "date",
                    run_date=run_at,
                    args=[ctx, "catch-up"],
                    id="catch-up",
                    misfire_grace_time=None,
                )
    for job in extra_jobs or []:
        scheduler.add_job(**{**job, "func": tracked(ctx, job["func"])})
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
