"""Start-up recovery: find work a crash interrupted and clean it up.

Backups left ``running`` by a killed process are marked failed (interrupted) and what only
they uploaded is removed (each object is that attempt's own, so nothing another backup
stored is touched); uploads a crash left half-done in the store are aborted; retrieval
requests that were claimed but never answered are asked again.
"""

from __future__ import annotations

import structlog

from glacierd.catalog import backups as backup_rows
from glacierd.catalog.locks import BusyError, operation_lock
from glacierd.context import Context
from glacierd.operations.backup import remove_unfinished
from glacierd.operations.inventory import purge_archives
from glacierd.operations.retrieval import no_follow_up, resume_interrupted_requests
from glacierd.operations.state_sweep import sweep_state_dir
from glacierd.stores.base import StoreError

log = structlog.get_logger("glacierd.recovery")

INTERRUPTED = (
    "interrupted: glacierd stopped during this backup (crash, kill or power loss); its partial "
    "data was removed from the store at the next start"
)


async def recover_interrupted(ctx: Context) -> list[int]:
    """Mark interrupted backups failed; returns their ids. Skips if another process is busy.

    Called by ``serve`` before anything else runs, so a retrieval still claimed ("asking")
    belongs to a process that died while asking: it is asked again here.
    """
    await sweep_state_dir(ctx.config.state_dir)
    try:
        # Nothing is downloaded yet: the first poll, right after start, hands archives that
        # are ready to the fetcher.
        resumed = await resume_interrupted_requests(ctx, on_ready=no_follow_up)
    except StoreError as exc:
        log.warning("recovery.retrievals_not_resumed", error=str(exc))
        resumed = 0
    if resumed:
        log.warning("recovery.retrievals_resumed", count=resumed)
    try:
        async with operation_lock(ctx.catalog, "recovery"):
            ids = await backup_rows.running_backups(ctx.catalog.pool, ctx.catalog)
            for backup_id in ids:
                blog = log.bind(backup_id=backup_id)
                await backup_rows.fail_backup(ctx.catalog.pool, ctx.catalog, backup_id, INTERRUPTED)
                await remove_unfinished(ctx, backup_id, blog)
                blog.warning("recovery.backup_interrupted", outcome="marked failed")
            for backup_id in await backup_rows.failed_with_leftovers(ctx.catalog.pool, ctx.catalog):
                await remove_unfinished(ctx, backup_id, log.bind(backup_id=backup_id))
            leftover = await backup_rows.deleting_archives(ctx.catalog.pool, ctx.catalog)
            if leftover:
                await purge_archives(ctx, leftover)
                log.warning("recovery.deletions_finished", archives=len(leftover))
            try:
                aborted = await ctx.store.abort_incomplete()
            except StoreError as exc:
                # Best effort: a bucket lifecycle rule (AbortIncompleteMultipartUpload) is
                # the safety net, so this must not keep the daemon from starting.
                log.warning("recovery.abort_failed", store=ctx.store.name, error=str(exc))
                aborted = 0
            if aborted:
                log.warning("recovery.uploads_aborted", count=aborted, store=ctx.store.name)
            return ids
    except BusyError:
        # Another glacierd (or a one-shot `glacierd backup`) is working: its running
        # backup is not interrupted, so leave it alone.
        log.info("recovery.skipped", reason="another backup or restore holds the lock")
        return []
