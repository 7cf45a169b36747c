"""The attached files of a backup: one walk, one set difference against the catalog, and
the uploads of what is new.

A file already archived (same path, same size) is referenced, never uploaded again. Each new
file gets a key of this attempt's own (``attempt_key``) and is recorded as stored as soon
as its upload completes, so a crash loses at most the records being written at that
instant.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import structlog

from glacierd.catalog import backups as backup_rows
from glacierd.context import Context
from glacierd.operations.backup.progress import Progress
from glacierd.pipeline.files import read_chunks
from glacierd.sources import attachments
from glacierd.sources.attachments import on_disk_path
from glacierd.stores.keys import file_key


@dataclass(frozen=True)
class FilesOutcome:
    referenced: list[int]  # archive ids the backup references: adopted ones and new ones
    file_count: int  # files the backup holds
    new_files: int  # of which uploaded now
    skipped: int  # odd or vanished files, not archived (each logged with its reason)
    bytes_uploaded: int


async def archive_files(
    ctx: Context, backup_id: int, root: Path, progress: Progress, blog: structlog.BoundLogger
) -> FilesOutcome:
    """Walk ``root``, adopt what is archived already, upload the rest."""
    cat, pool, store = ctx.catalog, ctx.catalog.pool, ctx.store
    progress.stage = "walking"
    progress.changed()
    walked = await attachments.walk(root)
    for s in walked.skipped:
        blog.warning("backup.file_skipped", path=s.path, reason=s.reason, detail=s.detail)
    known = await backup_rows.known_files(pool, cat, store.name)
    referenced: list[int] = []
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
        backup_rows.NewArchive("file", key, e.path, e.size, mode=e.mode, mtime_ns=e.mtime_ns)
        for key, e in zip(keys, new, strict=True)
    ]
    ids = await backup_rows.insert_archives(pool, cat, backup_id, store.name, rows)
    progress.stage = "files"
    progress.files_total = len(new)
    progress.bytes_total = sum(e.size for e in new)
    progress.changed()
    stored, lost = await _upload_files(ctx, root, list(zip(ids, rows, strict=True)), progress, blog)
    await backup_rows.drop_archive_rows(pool, cat, lost)
    return FilesOutcome(
        referenced=referenced + stored,
        file_count=len(walked.files) - len(lost),
        new_files=len(stored),
        skipped=len(walked.skipped) + len(lost),
        bytes_uploaded=progress.bytes_done,
    )


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
        taken = set(await backup_rows.keys_in_use(pool, cat, ctx.store.name, chosen))
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
            await asyncio.shield(backup_rows.mark_stored(self.pool, self.cat, batch))
        except BaseException:
            self._queue[:0] = batch  # written again by the next call (the UPDATE is idempotent)
            raise


async def _upload_files(
    ctx: Context,
    root: Path,
    work: list[tuple[int, backup_rows.NewArchive]],
    progress: Progress,
    blog: structlog.BoundLogger,
) -> tuple[list[int], list[int]]:
    """Upload new files with bounded concurrency; returns (stored ids, lost ids)."""
    store = ctx.store
    recorder = _Recorder(ctx)
    stored: list[int] = []
    lost: list[int] = []

    async def one(archive_id: int, row: backup_rows.NewArchive) -> None:
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
        # and a key the store chose itself (res.key) exists nowhere else.
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
