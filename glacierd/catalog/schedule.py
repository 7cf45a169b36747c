"""Catalog queries behind the schedule: which cron time a backup ran for, and the latest
scheduled time that completed backups cover."""

from __future__ import annotations

from datetime import datetime

from glacierd.catalog.backups import Conn
from glacierd.catalog.pool import Catalog


async def record_scheduled_for(db: Conn, catalog: Catalog, backup_id: int, when: datetime) -> None:
    await db.execute(
        f"UPDATE {catalog.schema_sql}.backups SET scheduled_for = $2 WHERE id = $1", backup_id, when
    )


async def covered_until(db: Conn, catalog: Catalog) -> datetime | None:
    """The latest moment the completed backups cover: a scheduled (or catch-up) backup
    covers the cron time it ran for, on the daemon's clock; any other backup its start,
    on the database server's clock. None before the first completed backup."""
    return await db.fetchval(
        f"SELECT max(coalesce(scheduled_for, started_at)) FROM {catalog.schema_sql}.backups "
        "WHERE status = 'completed'"
    )
