"""Versioned SQL migrations for the catalog schema, applied in order at start-up.

Each file ``migrations/NNNN_name.sql`` runs once, in its own transaction, and is recorded in
``<schema>.schema_migrations``. An advisory lock (one per schema) keeps two glacierd processes
starting at the same time from applying the same migration twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import structlog

from glacierd.catalog.locks import lock_key
from glacierd.catalog.pool import Catalog

log = structlog.get_logger(__name__)


def available_migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("glacierd.catalog") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


@dataclass(frozen=True)
class CatalogState:
    """What a read-only look at the catalog schema found (nothing is created)."""

    exists: bool
    pending: list[str]  # migrations this glacierd brings that are not applied yet
    unknown: list[int]  # applied versions this glacierd does not know (a newer one wrote them)


async def catalog_state(catalog: Catalog) -> CatalogState:
    async with catalog.pool.acquire() as conn:
        table = await conn.fetchval(
            "SELECT to_regclass($1)", f"{catalog.schema_sql}.schema_migrations"
        )
        if table is None:
            return CatalogState(False, [name for _, name, _ in available_migrations()], [])
        applied = {
            r["version"]
            for r in await conn.fetch(f"SELECT version FROM {catalog.schema_sql}.schema_migrations")
        }
    known = available_migrations()
    return CatalogState(
        True,
        [name for version, name, _ in known if version not in applied],
        sorted(applied - {version for version, _, _ in known}),
    )


async def migrate(catalog: Catalog) -> list[str]:
    """Apply every migration not yet applied; returns the names of those applied now."""
    applied_now: list[str] = []
    key = lock_key(catalog.schema, "migrate")
    async with catalog.pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", key)
        try:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {catalog.schema_sql}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {catalog.schema_sql}.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                r["version"]
                for r in await conn.fetch(
                    f"SELECT version FROM {catalog.schema_sql}.schema_migrations"
                )
            }
            for version, name, sql in available_migrations():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql.replace("{schema}", catalog.schema_sql))
                    await conn.execute(
                        f"INSERT INTO {catalog.schema_sql}.schema_migrations (version, name) "
                        "VALUES ($1, $2)",
                        version,
                        name,
                    )
                log.info("catalog.migrated", migration=name, schema=catalog.schema)
                applied_now.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
    return applied_now
