"""Checks of the backed-up database, the catalog and the PostgreSQL client tools."""

from __future__ import annotations

import shutil

from glacierd.catalog.migrations import available_migrations
from glacierd.catalog.pool import CatalogError
from glacierd.doctor.model import CheckResult, Doctor, Problem
from glacierd.pgconnect.connect import connection
from glacierd.sources.database import (
    check_pg_dump,
    connect,
    server_version,
    server_version_of,
    tool_version,
)


async def check_database(d: Doctor) -> CheckResult:
    info = d.config.database.conninfo
    async with connect(info) as conn:
        d.server = await server_version_of(conn)
        user = await conn.fetchval("SELECT current_user")
    return CheckResult(
        "database", True, f"connected to {info.describe()} as {user} ({d.server.text})"
    )


async def check_catalog(d: Doctor) -> CheckResult:
    """Reachable, and its schema known to this glacierd; creates nothing."""
    cat = d.config.catalog
    schema = f'"{cat.schema}"'
    known = available_migrations()
    async with connection(cat.conninfo, "catalog", CatalogError) as conn:
        table = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.schema_migrations")
        if table is None:
            may_create = await conn.fetchval(
                "SELECT has_database_privilege(current_user, current_database(), 'CREATE')"
            )
            if not may_create:
                user = await conn.fetchval("SELECT current_user")
                raise Problem(
                    f"schema {cat.schema} does not exist in {cat.conninfo.describe()} and user "
                    f"{user} may not create it",
                    f"run 'glacierd migrate' once as a user who may, or GRANT CREATE ON "
                    f"DATABASE to {user}",
                )
            return CheckResult(
                "catalog",
                True,
                f"connected to {cat.conninfo.describe()}; schema {cat.schema} is not created "
                f"yet ({len(known)} migrations to apply) — 'glacierd migrate' or the daemon's "
                "start creates it",
            )
        applied = {
            r["version"]
            for r in await conn.fetch(f"SELECT version FROM {schema}.schema_migrations")
        }
        unknown = sorted(applied - {v for v, _, _ in known})
        if unknown:
            raise Problem(
                f"schema {cat.schema} has migration {unknown[0]:04d}, which this glacierd does "
                "not know: the catalog was upgraded by a newer glacierd",
                "upgrade glacierd to the version that wrote the catalog",
            )
        pending = [name for v, name, _ in known if v not in applied]
        row = await conn.fetchrow(
            f"SELECT size, created_by FROM {schema}.archives WHERE kind = 'database' "
            "AND state = 'stored' AND size IS NOT NULL ORDER BY created_at DESC, id DESC LIMIT 1"
        )
        backups = await conn.fetchval(f"SELECT count(*) FROM {schema}.backups")
    if row is not None:
        d.last_dump_size, d.last_dump_backup = int(row["size"]), row["created_by"]
    detail = (
        f"schema {cat.schema} in {cat.conninfo.describe()}: {len(applied)} of {len(known)} "
        f"migrations applied, {backups} backups recorded"
    )
    if pending:
        detail += f"; {', '.join(pending)} will be applied at the next start or 'glacierd migrate'"
    return CheckResult("catalog", True, detail)


async def _tool(d: Doctor, name: str, command: str, setting: str) -> CheckResult:
    """pg_dump / pg_restore / psql: installed, and at least as new as the server."""
    if not d.passed("database"):
        found = await tool_version(command, setting)  # a missing tool is still a failure
        return CheckResult(
            name,
            False,
            f"{found.text} found; not compared with the server's version because the "
            "database check failed",
            skipped=True,
        )
    if name == "pg_dump":
        client, server = await check_pg_dump(command, d.config.database.conninfo)
    else:
        client = await tool_version(command, setting)
        server = d.server or await server_version(d.config.database.conninfo)
        if client.major < server.major:
            why = (
                "cannot read the server's dumps"
                if name == "pg_restore"
                else "may not run the restore scripts pg_restore writes for it"
            )
            raise Problem(
                f"{name} is older than the server ({client.text} vs {server.text}), so it {why}",
                f"install postgresql-client-{server.major} and set {setting} to its "
                f"path, for example /usr/lib/postgresql/{server.major}/bin/{name}",
            )
    path = shutil.which(command) or command
    return CheckResult(name, True, f"{path}: {client.text} (server {server.text})")


async def check_pg_dump_tool(d: Doctor) -> CheckResult:
    return await _tool(d, "pg_dump", d.config.database.pg_dump, "database.pg_dump")


async def check_pg_restore_tool(d: Doctor) -> CheckResult:
    return await _tool(d, "pg_restore", d.config.database.pg_restore, "database.pg_restore")


async def check_psql_tool(d: Doctor) -> CheckResult:
    # Restores pipe pg_restore's SQL script into psql: without it every restore fails.
    return await _tool(d, "psql", d.config.database.psql, "database.psql")
