"""Removing what only a failed (or interrupted) backup uploaded: its dump and its
unfinished uploads — never an object a stored archive uses."""

from __future__ import annotations

import structlog

from glacierd.catalog import backups as backup_rows
from glacierd.context import Context
from glacierd.stores.base import ArchiveRef


async def remove_unfinished(ctx: Context, backup_id: int, blog: structlog.BoundLogger) -> None:
    """Delete what only this backup uploaded: its dump and its unfinished uploads.

    Each object is its own attempt's (per-attempt keys), and one that another archive row
    names all the same (rows from before per-attempt keys) is never deleted: only its row
    goes. A row whose delete fails stays, and recovery at the next start tries again.
    """
    cat, pool = ctx.catalog, ctx.catalog.pool
    leftovers = await backup_rows.unfinished_archives(pool, cat, backup_id)
    removed = []
    for row in leftovers:
        if row["shared"]:
            blog.warning(
                "backup.cleanup_kept",
                key=row["store_key"],
                reason="another archive uses this key; only this backup's row is removed",
            )
            removed.append(row["id"])
            continue
        # An unfinished upload's row holds the key we asked for; the store says under which
        # key that upload is stored if it completed (None: nothing of it is there).
        key = (
            row["store_key"]
            if row["state"] != "uploading"
            else ctx.store.stored_key(row["store_key"])
        )
        if key is None:
            removed.append(row["id"])  # never completed: nothing of it is in the store
            continue
        try:
            await ctx.store.delete(ArchiveRef(key))
        except Exception as exc:
            # Keep the row: recovery at the next start tries again, so nothing is forgotten.
            blog.warning("backup.cleanup_failed", key=key, error=str(exc))
            continue
        removed.append(row["id"])
    await backup_rows.drop_archive_rows(pool, cat, removed)
    if removed:
        blog.info("backup.cleaned_up", archives_removed=len(removed))
