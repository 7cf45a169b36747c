"""The health checks: each reads the catalog (or asks the store) and returns the problems it
found, each one sentence saying what is wrong and what to do."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from glacierd.catalog import backups as backup_rows
from glacierd.catalog import monitoring as rows
from glacierd.catalog import restores as restore_rows
from glacierd.context import Context
from glacierd.health.model import Health, Problem, duration, when
from glacierd.health.reach import store_problem
from glacierd.operations.retrieval import MAX_POLL_SECONDS, MIN_POLL_SECONDS, POLLS_PER_TYPICAL_WAIT
from glacierd.scheduler import missed_run
from glacierd.sources.orphan_dir import existing_ancestor
from glacierd.units import human_bytes

log = structlog.get_logger("glacierd.health")

MIB = 1024 * 1024
#: A scheduled run counts as missed once it is this late and no backup is running.
MISSED_RUN_GRACE = timedelta(hours=1)
#: Seconds one check may take (the store's own call is bounded more tightly, reach.py).
CHECK_TIMEOUT = 20.0

Check = Callable[[Context, datetime], Awaitable[list[Problem]]]


async def evaluate(
    ctx: Context, now: datetime | None = None, *, skip: Collection[str] = ()
) -> Health:
    """Run every check (but those in ``skip``); a check that cannot run (the catalog is
    down) or does not finish within CHECK_TIMEOUT is itself a problem."""
    health = Health(now or datetime.now(UTC))
    try:
        health.facts = await asyncio.wait_for(_facts(ctx, health.time), CHECK_TIMEOUT)
    except Exception as exc:
        health.problems.append(_could_not_run("catalog", exc))
        return health  # every other check reads the catalog too
    for name, check in CHECKS:
        if name in skip:
            continue
        try:
            health.problems += await asyncio.wait_for(check(ctx, health.time), CHECK_TIMEOUT)
        except Exception as exc:
            health.problems.append(_could_not_run(name, exc))
    if health.problems:
        log.debug("health.unhealthy", problems=[p.message for p in health.problems])
    return health


def _could_not_run(name: str, exc: Exception) -> Problem:
    why = "it took too long" if isinstance(exc, TimeoutError) else str(exc).rstrip(".")
    return Problem(
        name,
        f"the {name} check could not run ({why})",
        "check the catalog database and the store (glacierd doctor)",
    )


async def _facts(ctx: Context, now: datetime) -> dict[str, Any]:
    pool, cat = ctx.catalog.pool, ctx.catalog
    last_ok = await backup_rows.last_backup(pool, cat, "completed")
    last_any = await backup_rows.last_backup(pool, cat)
    running = await backup_rows.running_backups(pool, cat)
    return {
        "store": {"name": ctx.store.name, "type": ctx.store.type},
        "running_backup": running[-1] if running else None,
        "last_successful_backup": last_ok["id"] if last_ok else None,
        "last_success_at": last_ok["finished_at"].isoformat() if last_ok else None,
        "seconds_since_last_success": round((now - last_ok["finished_at"]).total_seconds())
        if last_ok
        else None,
        "last_backup_status": last_any["status"] if last_any else None,
    }


async def last_backup_failed(ctx: Context, now: datetime) -> list[Problem]:
    last = await rows.last_finished_backup(ctx.catalog.pool, ctx.catalog)
    if last is None or last["status"] != "failed":
        return []
    reason = (last["error"] or "no reason recorded").rstrip(".")
    return [
        Problem(
            "last_backup",
            f"the last backup ({last['id']}, started by {last['trigger']}) failed at "
            f"{when(last['finished_at'] or last['started_at'])}: {reason}",
            "fix the cause, then run 'glacierd backup' or wait for the next scheduled one",
        )
    ]


async def last_success_too_old(ctx: Context, now: datetime) -> list[Problem]:
    last = await backup_rows.last_backup(ctx.catalog.pool, ctx.catalog, "completed")
    limit = timedelta(hours=ctx.config.health.max_backup_age_hours)
    if last is None or now - last["finished_at"] <= limit:
        return []
    return [
        Problem(
            "backup_age",
            f"the last successful backup ({last['id']}) finished "
            f"{duration((now - last['finished_at']).total_seconds())} ago, longer than "
            f"health.max_backup_age_hours ({ctx.config.health.max_backup_age_hours:g} h)",
            "check that backups run and succeed (the schedule; journalctl -p err -u glacierd)",
        )
    ]


async def scheduled_run_missed(ctx: Context, now: datetime) -> list[Problem]:
    if not ctx.config.schedule.enabled:
        return []
    due = await missed_run(ctx, now)
    running = await backup_rows.running_backups(ctx.catalog.pool, ctx.catalog)
    if due is None or now - due <= MISSED_RUN_GRACE or running:
        return []
    return [
        Problem(
            "missed_run",
            f"the backup scheduled for {when(due)} has not run",
            "check that the daemon runs (systemctl status glacierd) or run 'glacierd backup'",
        )
    ]


def _poll_grace(ctx: Context, typical: float) -> float:
    """One poll interval: how late glacierd may learn that a retrieval finished."""
    if ctx.config.schedule.poll_interval_seconds is not None:
        return ctx.config.schedule.poll_interval_seconds
    return min(MAX_POLL_SECONDS, max(MIN_POLL_SECONDS, typical / POLLS_PER_TYPICAL_WAIT))


async def retrievals_overdue(ctx: Context, now: datetime) -> list[Problem]:
    pool, cat, store = ctx.catalog.pool, ctx.catalog, ctx.store
    problems = []
    for group in await rows.pending_groups(pool, cat, store.name):
        storage_class, tier = group["storage_class"], group["retrieval_tier"]
        expected = store.expected_retrieval(storage_class, tier or store.default_tier)
        if expected is None or group["oldest"] is None:
            continue
        allowed = expected.maximum + _poll_grace(ctx, expected.typical)
        before = now - timedelta(seconds=allowed)
        if group["oldest"] >= before:
            continue
        count, oldest = await rows.overdue(pool, cat, store.name, storage_class, tier, before)
        if not count or oldest is None:
            continue
        what = f"archive {oldest['id']} ({oldest['path'] or 'database dump'})"
        problems.append(
            Problem(
                "retrieval_overdue",
                f"{count} retrieval{'s' if count > 1 else ''} of "
                f"{storage_class or 'default-class'} archives at the "
                f"{tier or store.default_tier} tier ha{'ve' if count > 1 else 's'} been pending "
                f"longer than the tier's {duration(expected.maximum)} maximum (the oldest, "
                f"{what}, since {when(oldest['retrieval_requested_at'])})",
                "check how finished retrievals reach glacierd (glacierd doctor: SNS, polling) "
                "and the store's console",
            )
        )
    return problems


async def restores_stuck(ctx: Context, now: datetime) -> list[Problem]:
    pool, cat, store = ctx.catalog.pool, ctx.catalog, ctx.store
    grace = timedelta(hours=ctx.config.health.restore_grace_hours)
    problems = []
    for r in await restore_rows.active(pool, cat):
        slowest = 0.0
        for storage_class, tier in await rows.restore_classes(pool, cat, r["id"]):
            chosen = tier or r["options"].get("tier") or store.default_tier
            expected = store.expected_retrieval(storage_class, chosen) or (
                store.expected_retrieval(storage_class, store.default_tier)
            )
            slowest = max(slowest, expected.maximum if expected else 0.0)
        allowed = timedelta(seconds=slowest) + grace
        elapsed = now - r["created_at"]
        if elapsed <= allowed:
            continue
        source = (
            f"of backup {r['backup_id']}"
            if r["backup_id"] is not None
            else f"of snapshot {r['snapshot_id']}"
        )
        note = f" ({r['error'].rstrip('.')})" if r["error"] else ""
        problems.append(
            Problem(
                "restore_stuck",
                f"restore {r['id']} {source} is still {r['state']}{note} "
                f"{duration(elapsed.total_seconds())} after it was requested, longer than its "
                f"slowest retrieval ({duration(slowest)}) plus health.restore_grace_hours "
                f"({ctx.config.health.restore_grace_hours:g} h)",
                f"see GET /restores/{r['id']} and the log (journalctl -u glacierd)",
            )
        )
    return problems


async def store_unreachable(ctx: Context, now: datetime) -> list[Problem]:
    interval = ctx.config.health.store_check_interval_seconds
    problem = await store_problem(ctx.store, now, interval)
    return [Problem("store", problem)] if problem else []


async def disk_short(ctx: Context, now: datetime) -> list[Problem]:
    state_dir = ctx.config.state_dir
    headroom = ctx.config.health.disk_headroom_mib * MIB
    base = await asyncio.to_thread(existing_ancestor, state_dir)
    free = (await asyncio.to_thread(shutil.disk_usage, base)).free
    dump = await rows.newest_dump(ctx.catalog.pool, ctx.catalog)
    need = headroom + (dump[1] if dump else 0)
    if free >= need:
        return []
    why = (
        f"the newest database dump (backup {dump[0]}, {human_bytes(dump[1])}) plus " if dump else ""
    )
    return [
        Problem(
            "disk",
            f"only {human_bytes(free)} free for state_dir {state_dir}, less than {why}"
            f"health.disk_headroom_mib ({human_bytes(headroom)})",
            "free space on that filesystem or move state_dir to a larger one, or the next "
            "fetch will not fit",
        )
    ]


CHECKS: tuple[tuple[str, Check], ...] = (
    ("last_backup", last_backup_failed),
    ("backup_age", last_success_too_old),
    ("missed_run", scheduled_run_missed),
    ("retrieval_overdue", retrievals_overdue),
    ("restore_stuck", restores_stuck),
    ("store", store_unreachable),
    ("disk", disk_short),
)
