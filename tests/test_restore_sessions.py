"""restore.terminate_connections ends the application's sessions but never glacierd's own
catalog connections (one of them holds the operation lock) — also when the DSN gives every
connection the application's application_name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg

from glacierd.config import config_from_dict
from glacierd.context import open_context
from glacierd.operations.backup import run_backup
from glacierd.operations.restore import start_restore
from tests import pg
from tests.test_restore import bid, drive, options, settle
from tests.wiring import wire


async def live_pids(dbname: str) -> set[int]:
    conn = await asyncpg.connect(pg.dsn_for(dbname))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return {r["pid"] for r in rows}
    finally:
        await conn.close()


async def test_terminate_connections_spares_glacierd_whatever_the_application_name(
    app_db: str, make_settings: Callable[..., dict[str, Any]]
):
    dsn = pg.dsn_for(app_db) + "?application_name=shop"
    settings = make_settings(
        database={"dsn": dsn},  # the catalog uses the same DSN (and database)
        restore={"terminate_connections": True, "snapshot": False},
    )
    async with open_context(config_from_dict(settings)) as ctx:
        workers = wire(ctx)
        try:
            backup_id = bid(await run_backup(ctx, "test"))
            at_backup = pg.table_rows(app_db)
            application = await asyncpg.connect(dsn)  # named like glacierd's connections
            await application.execute("INSERT INTO users (email) VALUES ('late@example.com')")
            # glacierd's pool has several connections open, one of them will hold the lock.
            held = [await ctx.catalog.pool.acquire() for _ in range(3)]
            own = {c.get_server_pid() for c in held}
            for conn in held:
                await ctx.catalog.pool.release(conn)
            assert {application.get_server_pid(), *own} <= await live_pids(app_db)

            started = await start_restore(ctx, backup_id, options(files=False))
            view = await asyncio.wait_for(drive(ctx, started["id"]), 120)

            assert view["state"] == "restored", view["error"]
            assert pg.table_rows(app_db) == at_backup
            alive = await live_pids(app_db)
            assert own <= alive, "glacierd's own catalog connections were ended"
            assert application.get_server_pid() not in alive  # the application's was
            assert await ctx.catalog.pool.fetchval("SELECT 1") == 1
        finally:
            workers.close()
            await settle(ctx)
