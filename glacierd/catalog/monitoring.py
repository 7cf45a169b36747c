"""What ``/health``, ``glacierd check`` and ``/metrics`` read: small aggregate queries, never
a row per archive (a backup may reference 100,000 files)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from glacierd.catalog.backups import Conn
from glacierd.catalog.pool import Catalog


async def last_finished_backup(db: Conn, catalog: Catalog) -> dict[str, Any] | None:
    """The newest backup that ended, completed or failed."""
    record = await db.fetchrow(
        f"SELECT * FROM {catalog.schema_sql}.backups WHERE status <> 'running' "
        "ORDER BY started_at DESC, id DESC LIMIT 1"
    )
    return dict(record) if record else None


async def newest_dump(db: Conn, catalog: Catalog) -> tuple[int, int] | None:
    """(backup id, size) of the newest completed backup's database dump."""
    record = await db.fetchrow(
        f"SELECT b.id, a.size FROM {catalog.schema_sql}.backups b "
        f"JOIN {catalog.schema_sql}.backup_archives ba ON ba.backup_id = b.id "
        f"JOIN {catalog.schema_sql}.archives a ON a.id = ba.archive_id "
        "WHERE b.status = 'completed' AND a.kind = 'database' AND a.size IS NOT NULL "
        "ORDER BY b.started_at DESC, b.id DESC LIMIT 1"
    )
    return (record["id"], record["size"]) if record else None


async def pending_groups(db: Conn, catalog: Catalog, store_name: str) -> list[dict[str, Any]]:
    """Pending retrievals by (storage class, tier): how many, and the oldest request."""
    records = await db.fetch(
        "SELECT storage_class, retrieval_tier, count(*) AS count, "
        "min(retrieval_requested_at) AS oldest "
        f"FROM {catalog.schema_sql}.archives WHERE store_name = $1 AND state = 'stored' "
        "AND retrieval_status = 'pending' GROUP BY storage_class, retrieval_tier",
        store_name,
    )
    return [dict(r) for r in records]


async def overdue(
    db: Conn,
    catalog: Catalog,
    store_name: str,
    storage_class: str | None,
    tier: str | None,
    requested_before: datetime,
) -> tuple[int, dict[str, Any] | None]:
    """How many pending retrievals of this class and tier were requested before the given
    time, and the oldest of them."""
    where = (
        f"FROM {catalog.schema_sql}.archives WHERE store_name = $1 AND state = 'stored' "
        "AND retrieval_status = 'pending' AND storage_class IS NOT DISTINCT FROM $2 "
        "AND retrieval_tier IS NOT DISTINCT FROM $3 AND retrieval_requested_at < $4"
    )
    args = (store_name, storage_class, tier, requested_before)
    count = await db.fetchval(f"SELECT count(*) {where}", *args)
    oldest = await db.fetchrow(
        f"SELECT id, kind, path, store_key, retrieval_requested_at {where} "
        "ORDER BY retrieval_requested_at, id LIMIT 1",
        *args,
    )
    return count, dict(oldest) if oldest else None


async def restore_classes(
    db: Conn, catalog: Catalog, restore_id: int
) -> list[tuple[str | None, str | None]]:
    """The (storage class, retrieval tier) pairs among a restore's archives."""
    records = await db.fetch(
        "SELECT DISTINCT a.storage_class, a.retrieval_tier "
        f"FROM {catalog.schema_sql}.restore_archives ra "
        f"JOIN {catalog.schema_sql}.archives a ON a.id = ra.archive_id WHERE ra.restore_id = $1",
        restore_id,
    )
    return [(r["storage_class"], r["retrieval_tier"]) for r in records]


async def counters(db: Conn, catalog: Catalog) -> dict[str, float]:
    """The lasting totals the catalog's triggers keep (migration 0008)."""
    records = await db.fetch(f"SELECT name, value FROM {catalog.schema_sql}.counters")
    return {r["name"]: r["value"] for r in records}


async def archive_counts(db: Conn, catalog: Catalog) -> list[dict[str, Any]]:
    """Archives by store, state and retrieval status, with their bytes."""
    records = await db.fetch(
        "SELECT store_name, state, retrieval_status, count(*) AS count, "
        f"coalesce(sum(size), 0)::float8 AS bytes FROM {catalog.schema_sql}.archives "
        "GROUP BY store_name, state, retrieval_status"
    )
    return [dict(r) for r in records]


async def backup_overview(db: Conn, catalog: Catalog) -> dict[str, Any]:
    """Running backups, active restores and the last success, in one round trip."""
    record = await db.fetchrow(
        f"SELECT (SELECT count(*) FROM {catalog.schema_sql}.backups "
        "WHERE status = 'running') AS running_backups, "
        f"(SELECT count(*) FROM {catalog.schema_sql}.restores "
        "WHERE state NOT IN ('restored', 'failed')) AS active_restores, "
        f"(SELECT max(finished_at) FROM {catalog.schema_sql}.backups "
        "WHERE status = 'completed') AS last_success_at, "
        f"(SELECT count(*) FROM {catalog.schema_sql}.backups "
        "WHERE status = 'completed') AS completed_backups"
    )
    return dict(record)
