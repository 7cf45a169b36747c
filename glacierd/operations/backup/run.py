"""Starting, running and failing a backup; its database dump.

``start_backup`` takes the operation lock and records the backup (so the caller gets its id
at once); the returned task does the work and releases the lock when it ends, however it
ends. The dump streams from pg_dump into the store; the files follow (files.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from glacierd.catalog import backups as backup_rows
from glacierd.catalog.locks import operation_lock
from glacierd.context import Context
from glacierd.operations.backup.cleanup import remove_unfinished
from glacierd.operations.backup.files import archive_files
from glacierd.operations.backup.progress import Progress
from glacierd.operations.errors import describe_error
from glacierd.sources.database import PgDump, check_pg_dump, list_tables
from glacierd.stores.base import PutResult

log = structlog.get_logger("glacierd.backup")
_PROGRESS_EVERY = 10.0  # seconds between progress log lines for long backups


@dataclass(frozen=True)
class BackupHandle:
    backup_id: int
    task: asyncio.Task[dict[str, Any]]
    progress: Progress


async def start_backup(
    ctx: Context,
    trigger: str,
    on_progress: Callable[[Progress], None] | None = None,
) -> BackupHandle:
    """Take the lock, record a running backup and start it; BusyError if one is running."""
    stack = AsyncExitStack()
    lock_conn = await stack.enter_async_context(operation_lock(ctx.catalog, "backup"))
    try:
        backup_id = await backup_rows.create_backup(
            lock_conn, ctx.catalog, trigger, ctx.config.database.conninfo.dbname
        )
    except BaseException:
        await stack.aclose()
        raise
    progress = Progress(backup_id, listeners=[on_progress] if on_progress else [])

    async def run() -> dict[str, Any]:
        async with stack:
            return await _run(ctx, backup_id, trigger, progress)

    task = ctx.spawn(run(), name=f"backup-{backup_id}")
    return BackupHandle(backup_id, task, progress)


async def run_backup(
    ctx: Context, trigger: str, on_progress: Callable[[Progress], None] | None = None
) -> dict[str, Any]:
    handle = await start_backup(ctx, trigger, on_progress)
    return await handle.task


async def _run(ctx: Context, backup_id: int, trigger: str, progress: Progress) -> dict[str, Any]:
    blog = log.bind(backup_id=backup_id, trigger=trigger, store=ctx.store.name)
    started = time.monotonic()
    blog.info("backup.started")
    reporter = asyncio.create_task(_report_progress(blog, progress))
    try:
        summary = await _backup(ctx, backup_id, progress, blog)
    except BaseException as exc:
        reason = describe_error(exc, "backup")
        await asyncio.shield(_fail(ctx, backup_id, reason, blog))
        blog.error("backup.failed", error=reason, duration_s=round(time.monotonic() - started, 3))
        raise
    finally:
        reporter.cancel()
    summary["duration_s"] = round(time.monotonic() - started, 3)
    blog.info("backup.completed", **summary)
    return summary


async def _report_progress(blog: structlog.BoundLogger, progress: Progress) -> None:
    while True:
        await asyncio.sleep(_PROGRESS_EVERY)
        blog.info(
            "backup.progress",
            stage=progress.stage,
            database_bytes=progress.database_bytes,
            files_done=progress.files_done,
            files_total=progress.files_total,
            bytes_done=progress.bytes_done,
            bytes_total=progress.bytes_total,
        )


async def _backup(
    ctx: Context, backup_id: int, progress: Progress, blog: structlog.BoundLogger
) -> dict[str, Any]:
    cat, pool = ctx.catalog, ctx.catalog.pool
    # 1. The database dump, streamed from pg_dump into the store.
    db_archive, result = await _dump_database(ctx, backup_id, progress, blog)
    referenced = [db_archive]
    bytes_uploaded = result.size
    file_count = new_count = skipped = 0
    # 2. Attached files: one walk, one set difference against the catalog.
    root = ctx.config.files.root
    if root is not None:
        files = await archive_files(ctx, backup_id, root, progress, blog)
        referenced += files.referenced
        file_count, new_count, skipped = files.file_count, files.new_files, files.skipped
        bytes_uploaded += files.bytes_uploaded

    await backup_rows.link_archives(pool, cat, backup_id, referenced)
    summary: dict[str, Any] = {
        "backup_id": backup_id,
        "database_bytes": result.size,
        "file_count": file_count,
        "new_files": new_count,
        "skipped_files": skipped,
        "bytes_uploaded": bytes_uploaded,
    }
    await backup_rows.complete_backup(
        pool,
        cat,
        backup_id,
        file_count=file_count,
        new_files=new_count,
        skipped_files=skipped,
        bytes_uploaded=bytes_uploaded,
    )
    progress.stage = "done"
    progress.changed()
    return summary


async def _dump_database(
    ctx: Context, backup_id: int, progress: Progress, blog: structlog.BoundLogger
) -> tuple[int, PutResult]:
    """Stream pg_dump's output into the store; (the dump's archive id, what was stored)."""
    cat, pool, store = ctx.catalog, ctx.catalog.pool, ctx.store
    cfg = ctx.config
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    dump_key = f"database/{stamp}-backup{backup_id}.dump"
    [db_archive] = await backup_rows.insert_archives(
        pool, cat, backup_id, store.name, [backup_rows.NewArchive("database", dump_key, None, None)]
    )
    exclude = []
    if cfg.catalog.conninfo.dbname == cfg.database.conninfo.dbname:
        # The catalog lives in the backed-up database: keep it out of the dump so a restore
        # can never roll glacierd's own history back.
        exclude = [f"--exclude-schema={cfg.catalog.schema}"]
    # Refuse early, with both versions named, when pg_dump is older than the server.
    await check_pg_dump(cfg.database.pg_dump, cfg.database.conninfo)
    tables = await list_tables(cfg.database.conninfo, cfg.catalog.schema)
    await pool.execute(
        f"UPDATE {cat.schema_sql}.backups SET tables = $2::jsonb WHERE id = $1",
        backup_id,
        tables,
    )
    dump = PgDump(cfg.database.pg_dump, cfg.database.conninfo, exclude)
    progress.stage = "database"
    progress.changed()

    async def counted() -> AsyncGenerator[bytes, None]:
        async with aclosing(dump.chunks()) as chunks:
            async for chunk in chunks:
                progress.database_bytes += len(chunk)
                progress.changed()
                yield chunk

    result = await store.put(dump_key, counted(), kind="database")
    await backup_rows.mark_stored(
        pool, cat, [(db_archive, result.key, result.size, result.sha256, result.storage_class)]
    )
    blog.info("backup.database_stored", key=result.key, bytes=result.size, sha256=result.sha256)
    return db_archive, result


async def _fail(ctx: Context, backup_id: int, reason: str, blog: structlog.BoundLogger) -> None:
    """Record the failure and remove what only this backup uploaded."""
    cat, pool = ctx.catalog, ctx.catalog.pool
    await backup_rows.fail_backup(pool, cat, backup_id, reason)
    await remove_unfinished(ctx, backup_id, blog)
