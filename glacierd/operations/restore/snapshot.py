"""Safety snapshots: a local pg_dump of the database taken just before a restore changes it.

Restoring a snapshot needs no retrieval (``POST /snapshots/{id}/restore``). The newest
``restore.snapshot_keep`` snapshots are kept; older ones are deleted from disk and catalog.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from glacierd.catalog import restores as restore_rows
from glacierd.context import Context
from glacierd.operations.views import iso
from glacierd.pipeline.files import write_atomically
from glacierd.pipeline.hashing import Digest
from glacierd.sources.database import PgDump

log = structlog.get_logger("glacierd.snapshot")


async def take_snapshot(ctx: Context, reason: str) -> dict[str, Any]:
    cfg = ctx.config
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = cfg.state_dir / "snapshots" / f"snapshot-{stamp}.dump"
    dump = PgDump(
        cfg.database.pg_dump,
        cfg.database.conninfo,
        [f"--exclude-schema={cfg.catalog.schema}"],
        lock_wait_seconds=cfg.restore.lock_timeout_seconds,  # another session's lock: fail
    )
    digest = Digest()
    async with aclosing(dump.chunks()) as chunks:
        await write_atomically(path, digest.wrap(chunks))
    snap_id = await restore_rows.add_snapshot(
        ctx.catalog.pool,
        ctx.catalog,
        str(path),
        digest.size,
        digest.hexdigest,
        cfg.database.conninfo.dbname,
        reason,
    )
    await prune_snapshots(ctx, keep_id=snap_id)
    return {"id": snap_id, "path": str(path), "size": digest.size, "sha256": digest.hexdigest}


async def prune_snapshots(ctx: Context, keep_id: int) -> int:
    """Delete snapshots beyond restore.snapshot_keep, oldest first (never ``keep_id``)."""
    snaps = await restore_rows.snapshots(ctx.catalog.pool, ctx.catalog)  # newest first
    # A snapshot being restored right now is never pruned (restoring it takes a new one).
    in_use = {r["snapshot_id"] for r in await restore_rows.active(ctx.catalog.pool, ctx.catalog)}
    removed = 0
    for snap in snaps[ctx.config.restore.snapshot_keep :]:
        if snap["id"] == keep_id or snap["id"] in in_use:
            continue
        await asyncio.to_thread(Path(snap["path"]).unlink, missing_ok=True)
        await restore_rows.delete_snapshot(ctx.catalog.pool, ctx.catalog, snap["id"])
        log.info("snapshot.pruned", snapshot_id=snap["id"], path=snap["path"])
        removed += 1
    return removed


def snapshot_view(snap: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": snap["id"],
        "created_at": iso(snap["created_at"]),
        "path": snap["path"],
        "size": snap["size"],
        "sha256": snap["sha256"],
        "database": snap["database_name"],
        "reason": snap["reason"],
    }
