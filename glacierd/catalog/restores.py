"""Queries on restore requests and safety snapshots.

A request's state changes only along ``catalog.status.RESTORE_TRANSITIONS``: the UPDATE is
guarded by the legal source states (and, when the caller says so, by the state it saw), so
a late or duplicate step matches no row instead of reviving or re-finishing a request.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from glacierd.catalog import status
from glacierd.catalog.backups import Conn
from glacierd.catalog.pool import Catalog

ACTIVE = status.RESTORE_ACTIVE


class AnotherRestoreActive(Exception):
    """The database refused a second active restore (the ``restores_one_active`` index)."""


def _row(record: Any) -> dict[str, Any] | None:
    return dict(record) if record is not None else None


async def create(
    pool: asyncpg.Pool,
    catalog: Catalog,
    *,
    backup_id: int | None,
    snapshot_id: int | None,
    options: dict[str, Any],
    archive_ids: list[int],
) -> int:
    """Store a request and its archive list in one transaction: nobody ever sees the one
    without the other. AnotherRestoreActive if a restore is active already."""
    async with pool.acquire() as conn, conn.transaction():
        try:
            restore_id = await conn.fetchval(
                f"INSERT INTO {catalog.schema_sql}.restores (backup_id, snapshot_id, options, "
                "archive_count) VALUES ($1, $2, $3::jsonb, $4) RETURNING id",
                backup_id,
                snapshot_id,
                options,
                len(archive_ids),
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "restores_one_active":
                raise AnotherRestoreActive(str(exc)) from None
            raise
        if archive_ids:
            await conn.execute(
                f"INSERT INTO {catalog.schema_sql}.restore_archives (restore_id, archive_id) "
                "SELECT $1, unnest($2::bigint[])",
                restore_id,
                archive_ids,
            )
    return restore_id


async def get(db: Conn, catalog: Catalog, restore_id: int) -> dict[str, Any] | None:
    return _row(
        await db.fetchrow(f"SELECT * FROM {catalog.schema_sql}.restores WHERE id = $1", restore_id)
    )


async def list_all(db: Conn, catalog: Catalog, limit: int = 100) -> list[dict[str, Any]]:
    records = await db.fetch(
        f"SELECT * FROM {catalog.schema_sql}.restores ORDER BY id DESC LIMIT $1", limit
    )
    return [r for r in (_row(x) for x in records) if r is not None]


async def active(db: Conn, catalog: Catalog) -> list[dict[str, Any]]:
    records = await db.fetch(
        f"SELECT * FROM {catalog.schema_sql}.restores WHERE state = ANY($1::text[]) ORDER BY id",
        list(ACTIVE),
    )
    return [r for r in (_row(x) for x in records) if r is not None]


async def set_state(
    db: Conn,
    catalog: Catalog,
    restore_id: int,
    state: str,
    error: str | None = None,
    *,
    expected: str | None = None,
) -> bool:
    """Move a request to ``state`` if the table allows it from where it is (and it is still
    in ``expected``, if given); ``error`` becomes its error note (None clears it). False
    means nothing changed."""
    finished = state in status.RESTORE_FINISHED
    result = await db.execute(
        f"UPDATE {catalog.schema_sql}.restores SET state = $2, error = $3, updated_at = now(), "
        "finished_at = CASE WHEN $4 THEN now() ELSE finished_at END "
        "WHERE id = $1 AND state = ANY($5::text[]) AND ($6::text IS NULL OR state = $6)",
        restore_id,
        state,
        error,
        finished,
        status.restore_sources_for(state),
        expected,
    )
    return result != "UPDATE 0"


async def mark_step(db: Conn, catalog: Catalog, restore_id: int, step: str, value: Any) -> None:
    await db.execute(
        f"UPDATE {catalog.schema_sql}.restores "
        "SET steps = steps || jsonb_build_object($2::text, $3::jsonb), updated_at = now() "
        "WHERE id = $1",
        restore_id,
        step,
        value,
    )


async def archives(db: Conn, catalog: Catalog, restore_id: int) -> list[dict[str, Any]]:
    records = await db.fetch(
        f"SELECT a.* FROM {catalog.schema_sql}.restore_archives ra "
        f"JOIN {catalog.schema_sql}.archives a ON a.id = ra.archive_id WHERE ra.restore_id = $1 "
        "ORDER BY a.kind, a.path NULLS FIRST",
        restore_id,
    )
    return [dict(r) for r in records]


async def add_snapshot(
    db: Conn,
    catalog: Catalog,
    path: str,
    size: int,
    sha256: str,
    database: str | None,
    reason: str,
) -> int:
    return await db.fetchval(
        f"INSERT INTO {catalog.schema_sql}.snapshots (path, size, sha256, database_name, reason) "
        "VALUES ($1, $2, $3, $4, $5) RETURNING id",
        path,
        size,
        sha256,
        database,
        reason,
    )


async def snapshots(db: Conn, catalog: Catalog) -> list[dict[str, Any]]:
    records = await db.fetch(f"SELECT * FROM {catalog.schema_sql}.snapshots ORDER BY id DESC")
    return [dict(r) for r in records]


async def get_snapshot(db: Conn, catalog: Catalog, snapshot_id: int) -> dict[str, Any] | None:
    record = await db.fetchrow(
        f"SELECT * FROM {catalog.schema_sql}.snapshots WHERE id = $1", snapshot_id
    )
    return dict(record) if record else None


async def delete_snapshot(db: Conn, catalog: Catalog, snapshot_id: int) -> None:
    await db.execute(f"DELETE FROM {catalog.schema_sql}.snapshots WHERE id = $1", snapshot_id)
