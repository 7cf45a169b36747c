"""Reading and deleting backups: the views behind ``GET /backups``, ``glacierd list`` and
``DELETE /backups/{id}``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog

from glacierd.catalog import backups as backup_rows
from glacierd.catalog import status
from glacierd.catalog.locks import operation_lock
from glacierd.context import Context
from glacierd.operations.errors import OperationError
from glacierd.operations.object_lock import why_locked
from glacierd.operations.views import archive_view, iso
from glacierd.sources.attachments import file_state, on_disk_path
from glacierd.stores.base import ArchiveRef

log = structlog.get_logger("glacierd.inventory")


class NotFoundError(OperationError):
    pass


class ConflictError(OperationError):
    pass


def backup_summary(row: dict[str, Any]) -> dict[str, Any]:
    rank = row.get("lowest_rank")
    duration = None
    if row["finished_at"]:
        duration = round((row["finished_at"] - row["started_at"]).total_seconds(), 3)
    return {
        "id": row["id"],
        "status": row["status"],
        "trigger": row["trigger"],
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "duration_s": duration,
        "error": row["error"],
        "database": row["database_name"],
        "file_count": row["file_count"],
        "new_files": row["new_files"],
        "skipped_files": row["skipped_files"],
        "bytes_uploaded": row["bytes_uploaded"],
        "retrieval_status": status.ORDER[rank - 1] if rank else None,
        "store": row.get("store_name"),
    }


async def list_backups(
    ctx: Context, limit: int = 100, before: int | None = None
) -> list[dict[str, Any]]:
    rows = await backup_rows.list_backups(ctx.catalog.pool, ctx.catalog, limit, before)
    return [backup_summary(r) for r in rows]


def file_states(
    root: Path | None, archives: list[dict[str, Any]], compare: str = "size"
) -> dict[int, str]:
    """Blocking: for each file archive, whether its file is ``missing``, the ``same``
    (status exists) or ``differs`` — by size, or also by SHA-256 when ``compare`` says so."""
    if root is None:
        return {}
    return {
        a["id"]: file_state(on_disk_path(root, a["path"]), a["size"], a["sha256"], compare)
        for a in archives
        if a["kind"] == "file"
    }


def on_disk(root: Path | None, archives: list[dict[str, Any]], compare: str = "size") -> set[int]:
    """Ids of file archives whose file is on disk and matches (status exists)."""
    return {i for i, state in file_states(root, archives, compare).items() if state == "same"}


async def completed_backup(
    ctx: Context, backup_id: int, verb: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A completed backup and its archives, or the error that says why it cannot be used."""
    pool, cat = ctx.catalog.pool, ctx.catalog
    backup = await backup_rows.get_backup(pool, cat, backup_id)
    if backup is None:
        raise NotFoundError(f"backup {backup_id} does not exist; GET /backups lists the ids.")
    if backup["status"] != "completed":
        raise ConflictError(
            f"backup {backup_id} is {backup['status']}, not completed; only a completed backup "
            f"can be {verb} — pick another from GET /backups."
        )
    return backup, await backup_rows.backup_archives(pool, cat, backup_id)


async def backup_detail(
    ctx: Context, backup_id: int, limit: int | None = None, offset: int = 0
) -> dict[str, Any]:
    """A backup with its archives: all of them, or ``limit`` from ``offset`` on (then
    ``next_offset`` says where the next page starts, None after the last)."""
    row = await backup_rows.get_backup(ctx.catalog.pool, ctx.catalog, backup_id)
    if row is None:
        raise NotFoundError(f"backup {backup_id} does not exist; GET /backups lists the ids.")
    archives = await backup_rows.backup_archives(ctx.catalog.pool, ctx.catalog, backup_id)
    present = await asyncio.to_thread(on_disk, ctx.config.files.root, archives)
    views = [archive_view(a, a["id"] in present) for a in archives]
    detail = backup_summary(row)
    detail["retrieval_status"] = status.lowest(v["status"] for v in views)
    detail["store"] = next((a["store_name"] for a in archives if a["kind"] == "database"), None)
    end = len(views) if limit is None else offset + limit
    detail["archive_count"] = len(views)
    detail["archives"] = views[offset:end]
    detail["next_offset"] = end if end < len(views) else None
    return detail


async def delete_backup(ctx: Context, backup_id: int) -> dict[str, Any]:
    """Delete a backup; a file archive leaves the store only when no other backup uses it."""
    cat = ctx.catalog
    async with operation_lock(cat, "delete"), cat.pool.acquire() as conn:
        row = await backup_rows.get_backup(conn, cat, backup_id)
        if row is None:
            raise NotFoundError(f"backup {backup_id} does not exist; GET /backups lists the ids.")
        if row["status"] == "running":
            raise ConflictError(f"backup {backup_id} is still running; delete it when it ends.")
        active = await conn.fetchval(
            f"SELECT id FROM {cat.schema_sql}.restores WHERE backup_id = $1 "
            "AND state NOT IN ('restored', 'failed') LIMIT 1",
            backup_id,
        )
        if active:
            raise ConflictError(
                f"backup {backup_id} is being restored (restore {active}); delete it afterwards."
            )
        async with conn.transaction():
            unused = await backup_rows.delete_backup(conn, cat, backup_id)
            if locked := await why_locked(ctx, backup_id, unused):  # S3 Object Lock
                raise ConflictError(locked)  # rolls the transaction back: nothing changed
        deleted = await purge_archives(ctx, unused)
    log.info("backup.deleted", backup_id=backup_id, archives_deleted=deleted)
    return {"id": backup_id, "deleted": True, "archives_deleted": deleted}


async def purge_archives(ctx: Context, archives: list[dict[str, Any]]) -> int:
    """Delete 'deleting' archives from the store, each row only after its object is gone."""
    pool, cat = ctx.catalog.pool, ctx.catalog
    for a in archives:
        # The same key may have been stored again since (a later backup archived the file
        # anew while this deletion waited): then the object is that archive's, keep it.
        reused = await pool.fetchval(
            f"SELECT 1 FROM {cat.schema_sql}.archives WHERE store_name = $1 AND store_key = $2 "
            "AND state <> 'deleting' LIMIT 1",
            a["store_name"],
            a["store_key"],
        )
        if not reused:
            await ctx.store.delete(ArchiveRef(a["store_key"], a["size"], a["sha256"]))
        await backup_rows.drop_archive_rows(pool, cat, [a["id"]])
    return len(archives)
