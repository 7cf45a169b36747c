"""The backup verb: one database dump plus every attached file not archived before.

Called alike by the scheduler, ``POST /backups`` and ``glacierd backup``. ``start_backup``
takes the operation lock and records the backup (so the caller gets its id at once); the
returned task does the work and releases the lock when it ends, however it ends.

A backup is recorded ``completed`` only after its database archive and every file archive
it references are stored; any failure, cancellation included, records it ``failed`` with
the reason, and removes what only it uploaded: its dump and unfinished uploads. File
archives that were fully stored are kept for the next backup to adopt, so a file is still
archived exactly once.

One attempt, one key: every object this backup uploads has a key no other backup uses
(``files/<path>@backup<id>``, ``database/<time>-backup<id>.dump``), and each finished upload
is recorded as stored as soon as it completes. Cleaning up after a failed backup therefore
deletes only its own attempts, never an object a stored archive uses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from glacierd.catalog import backups as q
from glacierd.catalog.locks import operation_lock
from glacierd.context import Context
from glacierd.operations.errors import describe_error
from glacierd.pipeline.files import read_chunks
from glacierd.sources import attachments
from glacierd.sources.attachments import on_disk_path
from glacierd.sources.database import PgDump, check_pg_dump, list_tables
from glacierd.stores.base import ArchiveRef
from glacierd.stores.keys import file_key

log = structlog.get_logger("glacierd.backup")
_PROGRESS_EVERY = 10.0  # seconds between progress log lines for long backups


@dataclass
class Progress:
    backup_id: int
    stage: str = "starting"  # database | walking | files | done
    database_bytes: int = 0
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    listeners: list[Callable[[Progress], None]] = field(default_factory=list)

    def changed(self) -> None:
        for listener in self.listeners:
            listener(self)


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
        backup_id = await q.create_backup(
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
    cat, pool, store = ctx.catalog, ctx.catalog.pool, ctx.store
    cfg = ctx.config

    # 1. The database dump, streamed from pg_dump into the store.
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    dump_key = f"database/{stamp}-backup{backup_id}.dump"
    [db_archive] = await q.insert_archives(
        pool, cat, backup_id, store.name, [q.NewArchive("database", dump_key, None, None)]
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
        f"UPDATE {cat.q}.backups SET tables = $2::jsonb WHERE id = $1",
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
    await q.mark_stored(
        pool, cat, [(db_archive, result.key, result.size, result.sha256, result.storage_class)]
    )
    blog.info("backup.database_stored", key=result.key, bytes=result.size, sha256=result.sha256)
    referenced = [db_archive]
    bytes_uploaded = result.size
    file_count = new_count = skipped = 0

    # 2. Attached files: one walk, one set difference against the catalog.
    root = cfg.files.root
    if root is not None:
        progress.stage = "walking"
        progress.changed()
        walked = await attachments.walk(root)
        for s in walked.skipped:
            blog.warning("backup.file_skipped", path=s.path, reason=s.reason, detail=s.detail)
        skipped = len(walked.skipped)
        known = await q.known_files(pool, cat, store.name)
        new: list[attachments.FileEntry] = []
        for entry in walked.files:
            prior = known.get(entry.path)
            if prior is None:
                new.append(entry)
            elif prior.size != entry.size:
                blog.warning(
                    "backup.file_changed",
                    path=entry.path,
                    archived_size=prior.size,
                    size=entry.size,
                    outcome="archived again as a new archive; uploads should be immutable",
                )
                new.append(entry)
            else:
                referenced.append(prior.archive_id)
        keys = await _free_keys(ctx, [attempt_key(e.path, backup_id) for e in new])
        rows = [
            q.NewArchive("file", key, e.path, e.size, mode=e.mode, mtime_ns=e.mtime_ns)
            for key, e in zip(keys, new, strict=True)
        ]
        ids = await q.insert_archives(pool, cat, backup_id, store.name, rows)
        progress.stage = "files"
        progress.files_total = len(new)
        progress.bytes_total = sum(e.size for e in new)
        progress.changed()
        stored, lost = await _upload_files(
            ctx, root, list(zip(ids, rows, strict=True)), progress, blog
        )
        await q.drop_archive_rows(pool, cat, lost)
        referenced.extend(stored)
        skipped += len(lost)
        new_count = len(stored)
        file_count = len(walked.files) - len(lost)
        bytes_uploaded += progress.bytes_done

    await q.link_archives(pool, cat, backup_id, referenced)
    summary: dict[str, Any] = {
        "backup_id": backup_id,
        "database_bytes": result.size,
        "file_count": file_count,
        "new_files": new_count,
        "skipped_files": skipped,
        "bytes_uploaded": bytes_uploaded,
    }
    await q.complete_backup(
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


def attempt_key(path: str, backup_id: int) -> str:
    """The key of this backup's attempt at archiving ``path``.

    The path stays readable in the key so the store alone tells what it holds, and the
    backup id makes the key this attempt's own: no other backup (and no other path) ever
    gets it — the part after the last "@backup" is digits only, so "X@backupN" archived
    by backup M and X archived by backup N cannot meet. Cleaning up one attempt therefore
    never touches an object another backup stored.
    """
    return file_key(path, f"@backup{backup_id}")


async def _free_keys(ctx: Context, keys: list[str]) -> list[str]:
    """``keys``, each made unique against every key the catalog knows in this store (keys
    from before per-attempt keys were plain ``files/<path>``, and a file may be named like
    one): an upload never overwrites an object another archive uses."""
    pool, cat = ctx.catalog.pool, ctx.catalog
    chosen = list(keys)
    suffix = 1
    while True:
        taken = set(await q.keys_in_use(pool, cat, ctx.store.name, chosen))
        if not taken:
            return chosen
        suffix += 1
        # ".N" after the digits: still this attempt's own, and unlike any plain key.
        chosen = [
            f"{key}.{suffix}" if candidate in taken else candidate
            for key, candidate in zip(keys, chosen, strict=True)
        ]


Mark = tuple[int, str, int, str, str | None]


class _Recorder:
    """Records finished uploads as stored as soon as they complete (group commit: whatever
    finished while the previous write was in flight goes into the next one), so a crash
    loses at most the records being written at that instant — never a backlog."""

    def __init__(self, ctx: Context) -> None:
        self.pool, self.cat = ctx.catalog.pool, ctx.catalog
        self._queue: list[Mark] = []
        self._lock = asyncio.Lock()

    async def record(self, mark: Mark) -> None:
        """Returns once ``mark`` is in the catalog (written by this call or an earlier one)."""
        self._queue.append(mark)
        async with self._lock:
            await self._write()

    async def flush(self) -> None:
        async with self._lock:
            await self._write()

    async def _write(self) -> None:
        batch, self._queue = self._queue, []
        if not batch:
            return
        try:
            # Shielded: a cancelled worker must not cancel the write that records others.
            await asyncio.shield(q.mark_stored(self.pool, self.cat, batch))
        except BaseException:
            self._queue[:0] = batch  # written again by the next call (the UPDATE is idempotent)
            raise


async def _upload_files(
    ctx: Context,
    root: Path,
    work: list[tuple[int, q.NewArchive]],
    progress: Progress,
    blog: structlog.BoundLogger,
) -> tuple[list[int], list[int]]:
    """Upload new files with bounded concurrency; returns (stored ids, lost ids)."""
    store = ctx.store
    recorder = _Recorder(ctx)
    stored: list[int] = []
    lost: list[int] = []

    async def one(archive_id: int, row: q.NewArchive) -> None:
        assert row.path is not None
        try:
            res = await store.put(
                row.store_key,
                read_chunks(on_disk_path(root, row.path)),
                kind="file",
                size_hint=row.size,
            )
        except FileNotFoundError:
            blog.warning(
                "backup.file_skipped",
                path=row.path,
                reason="vanished",
                detail="deleted after the walk; not archived",
            )
            lost.append(archive_id)
            return
        except (IsADirectoryError, PermissionError) as exc:
            blog.warning(
                "backup.file_skipped",
                path=row.path,
                reason="unreadable",
                detail=exc.strerror or str(exc),
            )
            lost.append(archive_id)
            return
        # Recorded now, not at the end: after a crash, recovery would otherwise delete (and
        # the next backup upload again) everything that finished but was not yet recorded —
        # and a vault's archive id exists nowhere else.
        await recorder.record((archive_id, res.key, res.size, res.sha256, res.storage_class))
        stored.append(archive_id)
        progress.files_done += 1
        progress.bytes_done += res.size
        progress.changed()

    # A fixed set of workers pulls from one iterator: memory does not grow with the number
    # of new files (a task per file would hold them all at once).
    queue = iter(work)

    async def worker() -> None:
        for archive_id, row in queue:
            await one(archive_id, row)

    workers = min(ctx.config.files.upload_concurrency, len(work)) or 1
    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Record what did finish so the next backup adopts it instead of uploading again.
        await asyncio.shield(recorder.flush())
        raise
    return stored, lost


async def _fail(ctx: Context, backup_id: int, reason: str, blog: structlog.BoundLogger) -> None:
    """Record the failure and remove what only this backup uploaded."""
    cat, pool = ctx.catalog, ctx.catalog.pool
    await q.fail_backup(pool, cat, backup_id, reason)
    await remove_unfinished(ctx, backup_id, blog)


async def remove_unfinished(ctx: Context, backup_id: int, blog: structlog.BoundLogger) -> None:
    """Delete what only this backup uploaded: its dump and its unfinished uploads.

    Each object is its own attempt's (per-attempt keys), and one that another archive row
    names all the same (rows from before per-attempt keys) is never deleted: only its row
    goes. A row whose delete fails stays, and recovery at the next start tries again.
    """
    cat, pool = ctx.catalog, ctx.catalog.pool
    leftovers = await q.unfinished_archives(pool, cat, backup_id)
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
        # An unfinished upload's row holds the key we asked for; a store that names its
        # archives itself (a vault) says which archive that became, if it completed.
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
    await q.drop_archive_rows(pool, cat, removed)
    if removed:
        blog.info("backup.cleaned_up", archives_removed=len(removed))
