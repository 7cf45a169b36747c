"""Clock skew between the database server and the daemon never looks like a missed backup.

The daemon's cron times come from its own clock; a backup's ``started_at`` comes from the
database server's ``now()``. A server a few milliseconds behind records a scheduled backup as
started *before* its scheduled time, which used to look like a missed run: a catch-up backup
on every restart and ``/health`` reporting stale.

The skew is simulated deterministically: a real scheduled backup runs through the real
daemon, then every time recorded for it is moved two hours back (as if it ran then), with
``started_at`` 5 ms before the scheduled time (the server's clock 5 ms behind). A second
daemon, scheduled for that moment, must see nothing missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from glacierd.config import config_from_dict, cron_trigger
from glacierd.context import open_context
from glacierd.scheduler import last_fire_time, missed_run, scheduled_backup
from tests import pg
from tests.daemon import Daemon

SHIFT = timedelta(hours=2)
SKEW = timedelta(milliseconds=5)


def once_at(when: datetime) -> str:
    """A six-field cron expression (leading seconds) that fires at ``when`` (once a year)."""
    return f"{when.second} {when.minute} {when.hour} {when.day} {when.month} *"


async def shift_backup(dbname: str, fire: datetime, status: str) -> None:
    """Move every time recorded for backup 1 (and the catalog's creation) back by SHIFT;
    started_at 5 ms before the (shifted) scheduled time, as a database clock 5 ms behind
    the daemon's records it."""
    conn = await asyncpg.connect(pg.dsn_for(dbname))
    try:
        columns = [
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "'glacierd' AND table_name = 'backups' AND data_type LIKE 'timestamp%' "
                "AND column_name <> 'started_at'"
            )
        ]
        shifted = ", ".join(f"{c} = {c} - $3::interval" for c in columns)
        await conn.execute(
            f"UPDATE glacierd.backups SET started_at = $1, status = $2, {shifted} WHERE id = 1",
            fire - SHIFT - SKEW,
            status,
            SHIFT,
        )
        # The catalog was created before that backup, so it moves back too.
        await conn.execute(
            "UPDATE glacierd.schema_migrations SET applied_at = applied_at - $1::interval", SHIFT
        )
    finally:
        await conn.close()


def run_scheduled_backup(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict]
) -> tuple[dict, datetime]:
    """A real scheduled backup, fired by the daemon's cron a few seconds from now."""
    fire = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0)
    settings = make_settings(
        schedule={"enabled": True, "backup_cron": once_at(fire), "catch_up": False}
    )
    first = daemon_factory(settings, name="first")
    backup = first.wait_backup(1, timeout=60)
    assert backup["status"] == "completed" and backup["trigger"] == "schedule", backup
    assert first.stop() == 0
    return settings, fire


def restart_scheduled_at(
    daemon_factory: Callable[..., Daemon], settings: dict, fire: datetime
) -> Daemon:
    """A daemon whose schedule's last run was at ``fire - SHIFT`` (the shifted backup's),
    with catch-up on; a catch-up would only be logged (its delay outlasts the test)."""
    schedule = {
        "enabled": True,
        "backup_cron": once_at(fire - SHIFT),
        "catch_up": True,
        "catch_up_delay_seconds": 3600,
    }
    return daemon_factory({**settings, "schedule": schedule}, name="second")


def test_a_server_clock_behind_the_daemon_is_no_missed_run(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict], app_db: str
) -> None:
    settings, fire = run_scheduled_backup(daemon_factory, make_settings)
    asyncio.run(shift_backup(app_db, fire, "completed"))

    second = restart_scheduled_at(daemon_factory, settings, fire)
    events = [e["event"] for e in second.events()]
    assert "schedule.started" in events
    assert "schedule.missed_run" not in events, second.logs()[-3000:]
    health = second.request("GET", "/health")
    assert health.status == 200, health.body
    assert health.json()["status"] == "ok"
    assert second.stop() == 0


def test_a_scheduled_run_that_failed_is_still_caught_up(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict], app_db: str
) -> None:
    """The same history, but that backup failed: the run was missed, and health says so."""
    settings, fire = run_scheduled_backup(daemon_factory, make_settings)
    asyncio.run(shift_backup(app_db, fire, "failed"))

    second = restart_scheduled_at(daemon_factory, settings, fire)
    missed = [e for e in second.events() if e["event"] == "schedule.missed_run"]
    assert len(missed) == 1
    assert datetime.fromisoformat(missed[0]["due"]) == fire - SHIFT
    health = second.request("GET", "/health")
    # (The status was "stale" before /health listed its problems; issue 10.)
    assert health.status == 503 and health.json()["status"] == "unhealthy"
    checks = {p["check"] for p in health.json()["problems"]}
    assert checks == {"missed_run", "last_backup"}, health.json()
    assert second.stop() == 0


def test_last_fire_time() -> None:
    daily = cron_trigger("0 3 * * *", "UTC")
    at = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    assert last_fire_time(daily, at) == at
    assert last_fire_time(daily, at + timedelta(milliseconds=3)) == at
    assert last_fire_time(daily, at - timedelta(microseconds=1)) == at - timedelta(days=1)
    every_3s = cron_trigger("*/3 * * * * *", "UTC")
    assert last_fire_time(every_3s, at + timedelta(seconds=7, milliseconds=1)) == at + timedelta(
        seconds=6
    )
    yearly = cron_trigger("0 0 0 1 1 *", "UTC")
    assert last_fire_time(yearly, at) == datetime(2026, 1, 1, tzinfo=UTC)
    berlin = cron_trigger("30 2 * * *", "Europe/Berlin")
    got = last_fire_time(berlin, datetime(2026, 11, 27, 12, 0, tzinfo=UTC))
    assert got is not None and got.astimezone(UTC) == datetime(2026, 11, 27, 1, 30, tzinfo=UTC)


async def test_a_catch_up_covers_every_run_missed_so_far(
    make_settings: Callable[..., dict],
) -> None:
    """Down for three days: one catch-up backup, and then nothing is missed any more."""
    settings = make_settings(schedule={"enabled": True, "backup_cron": "0 3 * * *"})
    async with open_context(config_from_dict(settings)) as ctx:
        await ctx.catalog.pool.execute(
            f"UPDATE {ctx.catalog.schema_sql}.schema_migrations "
            "SET applied_at = now() - interval '3 days'"
        )
        assert await missed_run(ctx) is not None
        await scheduled_backup(ctx, "catch-up")
        await asyncio.gather(*ctx.tasks)
        row = await ctx.catalog.pool.fetchrow(
            f"SELECT status, trigger, scheduled_for FROM {ctx.catalog.schema_sql}.backups"
        )
        assert (row["status"], row["trigger"]) == ("completed", "catch-up")
        assert row["scheduled_for"] == last_fire_time(
            ctx.config.schedule.trigger(), datetime.now(UTC)
        )
        assert await missed_run(ctx) is None
