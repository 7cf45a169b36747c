"""Apply verified retrieval events to the catalog.

Messages arrive at least once and in any order. Each event becomes a store state handed to
``operations.retrieval.record_store_answer`` together with the row as read here: a compare-and-set
against that row, so a duplicate is a no-op, a stale event (a "Completed" after the copy was
fetched, a failed old job after a new one started) changes nothing, and a verified local
copy is never moved backwards.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import structlog

from glacierd.catalog import archives as aq
from glacierd.context import Context
from glacierd.notifications.events import (
    IgnoredEvent,
    RetrievalEvent,
    S3RestoreEvent,
    VaultJobEvent,
)
from glacierd.operations.retrieval import record_store_answer
from glacierd.stores.base import RetrievalState

log = structlog.get_logger("glacierd.notifications")

# A vault job's output stays downloadable for at least 24 hours after completion.
VAULT_OUTPUT_LIFETIME = timedelta(hours=24)


async def dispatch(ctx: Context, event: RetrievalEvent, on_ready: Callable[[int], object]) -> int:
    """Apply one event; returns how many archives changed status. An archive found ready
    is announced to ``on_ready`` (the daemon's fetcher)."""
    if isinstance(event, IgnoredEvent):
        log.info("sns.event_ignored", reason=event.reason)
        return 0
    if isinstance(event, VaultJobEvent):
        return await _vault_job(ctx, event, on_ready)
    return await _s3_restore(ctx, event, on_ready)


async def _vault_job(ctx: Context, event: VaultJobEvent, on_ready: Callable[[int], object]) -> int:
    pool, cat = ctx.catalog.pool, ctx.catalog
    rows = await aq.by_job_id(pool, cat, event.job_id)
    if not rows:
        # A job we never recorded (lost during a crash between InitiateJob and the catalog
        # update): match by the archive id it retrieved.
        rows = await aq.by_store_key(pool, cat, ctx.store.name, event.archive_id)
    if not rows:
        log.warning("sns.unknown_job", job_id=event.job_id, archive_id=event.archive_id)
        return 0
    if event.status_code == "Succeeded":
        until = event.completed_at + VAULT_OUTPUT_LIFETIME if event.completed_at else None
        state = RetrievalState("ready", ready_until=until, job_id=event.job_id)
    elif event.status_code == "Failed":
        state = RetrievalState(
            "available",
            job_id=event.job_id,
            reason=f"Glacier retrieval job failed: {event.status_message or 'no reason given'}",
        )
    else:
        state = RetrievalState("pending", job_id=event.job_id)
    changed = 0
    for row in rows:
        # record_store_answer ignores news about another job than the row's (a newer job
        # replaced it).
        changed += bool(await record_store_answer(ctx, row, state, source="sns", on_ready=on_ready))
    return changed


async def _s3_restore(
    ctx: Context, event: S3RestoreEvent, on_ready: Callable[[int], object]
) -> int:
    store = ctx.store
    bucket = getattr(store, "bucket", None)
    if store.type != "s3" or event.bucket != bucket:
        log.warning("sns.foreign_bucket", bucket=event.bucket, key=event.key)
        return 0
    key = store.catalog_key(event.key)  # type: ignore[attr-defined]
    rows = await aq.by_store_key(ctx.catalog.pool, ctx.catalog, store.name, key) if key else []
    if not rows:
        log.warning("sns.unknown_object", bucket=event.bucket, key=event.key)
        return 0
    if event.event == "completed":
        state = RetrievalState("ready", ready_until=event.expiry)
    elif event.event == "deleted":
        state = RetrievalState("available", reason="the restored copy expired")
    else:
        state = RetrievalState("pending")
    changed = 0
    for row in rows:
        if event.event == "deleted" and row["retrieval_status"] != "ready":
            # Only a ready copy can expire; a late Delete must not cancel a newer retrieval.
            continue
        changed += bool(await record_store_answer(ctx, row, state, source="sns", on_ready=on_ready))
    return changed
