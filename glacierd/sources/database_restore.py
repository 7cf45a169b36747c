"""Restoring a custom-format dump into the live database: all or nothing.

How it stays atomic: glacierd runs ``psql`` itself and feeds it, on one connection,
``BEGIN``; a drop phase that removes what the database holds now (so that objects created
after the backup disappear too); the schemas of the dump; then the SQL that ``pg_restore``
generates from the dump; and ``COMMIT`` only after pg_restore exited cleanly. Any error — an
object that fails, a killed pg_restore, a lock not granted in time, glacierd itself being
killed — ends the connection without COMMIT, and PostgreSQL rolls everything back.

The parts: dump_contents.py reads the dump (its object list, its schemas), drop_phase.py
writes the script that empties the database first, restore_transaction.py runs psql and
pg_restore as one transaction. The dump's schemas are created with ``CREATE SCHEMA IF NOT
EXISTS`` (the kept ones exist), and pg_restore's script (without ``--clean``: nothing is left
to drop) follows.

glacierd's own catalog schema is never touched: the drop phase skips it (and checks that it
stayed whole), and it is filtered out of pg_restore's object list (``-L``), so a restore to
last week can be followed by a restore to yesterday.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import structlog

from glacierd.catalog.pool import own_backend_pids
from glacierd.pgconnect.conninfo import ConnInfo
from glacierd.sources.database import connect, find_tool
from glacierd.sources.drop_phase import drop_phase
from glacierd.sources.dump_contents import RestorePlan, read_dump, schema_script
from glacierd.sources.restore_transaction import restore_in_one_transaction

log = structlog.get_logger("glacierd.restore.database")


async def terminate_other_sessions(conninfo: ConnInfo) -> int:
    """End other sessions on the database (restore.terminate_connections = true) — never
    glacierd's own: this process's catalog connections (one of them holds the operation
    lock) are recognised by their server process ids, whatever application_name the DSN
    gives them; sessions of other glacierd processes (named glacierd…, the default) are
    spared too."""
    async with connect(conninfo) as conn:
        ended = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND pid <> ALL($1::int[]) "
            "AND coalesce(application_name, '') NOT LIKE 'glacierd%'",
            sorted(own_backend_pids()),
        )
    return len(ended)


async def restore_dump(
    *,
    dump: Path,
    conninfo: ConnInfo,
    pg_restore: str,
    psql: str,
    catalog_schema: str,
    work_dir: Path,
    lock_timeout_seconds: float,
    terminate_connections: bool,
) -> dict[str, int]:
    """Replace the database's contents with the dump's, in one transaction."""
    env = conninfo.libpq_env()
    restore_tool = find_tool(pg_restore, "database.pg_restore")
    psql_tool = find_tool(psql, "database.psql")
    toc = await read_dump([restore_tool, "--list", str(dump)], env)
    plan = RestorePlan.from_toc(toc, catalog_schema)
    await asyncio.to_thread(work_dir.mkdir, parents=True, exist_ok=True)
    list_file = work_dir / f"restore-{os.getpid()}.list"
    schema_list = work_dir / f"restore-{os.getpid()}.schemas.list"
    try:
        await asyncio.to_thread(list_file.write_text, "\n".join(plan.objects) + "\n")
        schemas = await schema_script(restore_tool, dump, plan.schemas, schema_list, env)
        if terminate_connections:
            ended = await terminate_other_sessions(conninfo)
            log.warning("restore.sessions_terminated", count=ended)
        counts = await restore_in_one_transaction(
            psql_tool=psql_tool,
            restore_tool=restore_tool,
            dump=dump,
            list_file=list_file,
            env=env,
            preamble=drop_phase(catalog_schema, plan.extensions) + schemas,
            where=conninfo.describe(),
            lock_timeout_seconds=lock_timeout_seconds,
        )
    finally:
        for path in (list_file, schema_list):
            await asyncio.to_thread(path.unlink, missing_ok=True)
    return {
        "objects": len(plan.objects) + len(plan.schemas),
        "dropped_first": counts.get("dropped", 0),
        "large_objects_dropped": counts.get("large_objects_dropped", 0),
    }
