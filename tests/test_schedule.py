"""The schedule fires on its own, and a run missed while the daemon was down is caught up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from glacierd.config import config_from_dict
from glacierd.context import open_context
from glacierd.scheduler import missed_run


def backups(d):
    return d.request("GET", "/backups").json()["backups"]


def test_schedule_fires_with_a_short_cron(daemon_factory, make_settings):
    # Six fields: a leading seconds field, every 3 seconds.
    d = daemon_factory(
        make_settings(schedule={"enabled": True, "backup_cron": "*/3 * * * * *", "catch_up": False})
    )
    got = d.wait_for(
        lambda: [b for b in backups(d) if b["status"] == "completed"],
        timeout=30,
        what="a scheduled backup",
    )
    assert got[0]["trigger"] == "schedule"
    d.stop()


def test_missed_run_is_caught_up_after_start(daemon_factory, make_settings, app_db):
    settings = make_settings(
        schedule={"enabled": True, "backup_cron": "0 3 * * *", "catch_up_delay_seconds": 0.5}
    )
    # Install glacierd (creates the catalog), then pretend it was installed two days ago
    # and the daemon was down since: the 03:00 backups were missed.
    d = daemon_factory(settings, start=False)
    d.start()
    d.stop()

    async def age_catalog() -> None:
        async with open_context(config_from_dict(settings)) as ctx:
            await ctx.catalog.pool.execute(
                f"UPDATE {ctx.catalog.schema_sql}.schema_migrations "
                "SET applied_at = now() - interval '2 days'"
            )

    asyncio.run(age_catalog())
    d.start()
    got = d.wait_for(
        lambda: [b for b in backups(d) if b["status"] == "completed"],
        timeout=30,
        what="the catch-up backup",
    )
    assert [b["trigger"] for b in got] == ["catch-up"]
    assert any(e.get("event") == "schedule.missed_run" for e in d.events())
    d.stop()


async def test_missed_run_logic(ctx):
    """No catch-up when a backup completed after the last scheduled time; catch-up otherwise."""
    pool, schema = ctx.catalog.pool, ctx.catalog.schema_sql
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    await pool.execute(
        f"UPDATE {schema}.schema_migrations SET applied_at = $1", now - timedelta(days=3)
    )
    # Never backed up since install three days ago: the 03:00 run today (and before) was missed.
    assert await missed_run(ctx, now) == datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    # A completed backup at 03:05 today: nothing missed at noon.
    await pool.execute(
        f"INSERT INTO {schema}.backups (status, started_at, finished_at) "
        "VALUES ('completed', $1, $1)",
        now.replace(hour=3, minute=5),
    )
    assert await missed_run(ctx, now) is None
    # A failed backup later does not count as a backup; a later day's 03:00 is missed.
    assert await missed_run(ctx, now + timedelta(days=1)) == datetime(
        2026, 11, 27, 3, 0, tzinfo=UTC
    )
