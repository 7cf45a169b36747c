"""Advisory locks are per catalog schema: two glacierd instances with their own schemas in one
database (two applications sharing a server, or staging beside production) never block each
other, while two processes on the same schema still do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from glacierd.catalog import migrations
from glacierd.catalog.locks import BusyError, operation_lock
from glacierd.config import config_from_dict
from glacierd.context import Context, open_context
from glacierd.operations.backup import run_backup, start_backup
from tests import pg

GATE = 7_424_242  # an advisory key the test holds to pause a migration


@pytest.fixture
def settings_for(make_settings: Callable[..., dict], tmp_path: Path) -> Callable[[str], dict]:
    def make(schema: str) -> dict:
        return make_settings(
            state_dir=str(tmp_path / f"state-{schema}"),
            catalog={"schema": schema},
            store={"type": "local", "name": schema, "local": {"path": str(tmp_path / schema)}},
        )

    return make


@pytest.fixture
async def two(settings_for: Callable[[str], dict]) -> AsyncIterator[tuple[Context, Context]]:
    async with (
        open_context(config_from_dict(settings_for("glacierd_a"))) as a,
        open_context(config_from_dict(settings_for("glacierd_b"))) as b,
    ):
        yield a, b


async def test_a_backup_in_one_schema_does_not_block_the_other_schema(
    two: tuple[Context, Context], settings_for: Callable[[str], dict]
) -> None:
    a, b = two
    # Schema a's operation lock is held, exactly as a running backup or restore holds it.
    async with operation_lock(a.catalog, "backup"):
        summary = await asyncio.wait_for(run_backup(b, "cli"), 60)
        assert summary["backup_id"] == 1
        # A second process on schema a is still kept out, with the usual message.
        async with open_context(config_from_dict(settings_for("glacierd_a"))) as a2:
            with pytest.raises(BusyError, match="cannot start a backup"):
                await start_backup(a2, "cli")
    rows = await b.catalog.pool.fetch("SELECT status FROM glacierd_b.backups")
    assert [r["status"] for r in rows] == ["completed"]


async def test_two_schemas_run_backups_at_the_same_time(two: tuple[Context, Context]) -> None:
    a, b = two
    first = await start_backup(a, "api")
    second = await start_backup(b, "api")  # while a's backup runs and holds its lock
    done = await asyncio.wait_for(asyncio.gather(first.task, second.task), 120)
    assert [s["backup_id"] for s in done] == [1, 1]
    for ctx in (a, b):
        rows = await ctx.catalog.pool.fetch(f"SELECT status FROM {ctx.catalog.schema_sql}.backups")
        assert [r["status"] for r in rows] == ["completed"]


async def _waiting_for_gate(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND objid = $1",
            GATE,
        )
    )


async def test_migrations_of_two_schemas_do_not_wait_for_each_other(
    settings_for: Callable[[str], dict], app_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glacierd.catalog import Catalog

    cfg_a = config_from_dict(settings_for("glacierd_a"))
    cfg_b = config_from_dict(settings_for("glacierd_b"))
    # A last migration that, for schema a only, waits until the test opens the gate: schema
    # a's migration is then in progress, holding its migration lock.
    gate_sql = f"SELECT pg_advisory_xact_lock({GATE}) WHERE '{{schema}}' = '\"glacierd_a\"'"
    real = migrations.available_migrations()
    monkeypatch.setattr(
        migrations, "available_migrations", lambda: [*real, (9999, "9999_gate.sql", gate_sql)]
    )
    holder = await asyncpg.connect(pg.dsn_for(app_db))
    cat_a = Catalog(cfg_a.catalog.conninfo, "glacierd_a")
    cat_b = Catalog(cfg_b.catalog.conninfo, "glacierd_b")
    await cat_a.open()
    await cat_b.open()
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", GATE)
        migrating_a = asyncio.create_task(migrations.migrate(cat_a))
        for _ in range(300):
            if await _waiting_for_gate(holder):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("schema a's migration never reached the gate")
        applied_b = await asyncio.wait_for(migrations.migrate(cat_b), 15)
        assert applied_b[-1] == "9999_gate.sql" and not migrating_a.done()
        await holder.execute("SELECT pg_advisory_unlock($1)", GATE)
        applied_a = await asyncio.wait_for(migrating_a, 15)
        assert applied_a == applied_b
    finally:
        await holder.close()
        await cat_a.close()
        await cat_b.close()
