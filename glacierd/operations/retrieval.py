"""The retrieve verb and everything that moves archives pending → ready → (fetch) local.

Three paths report a retrieval's progress: the answer to the request itself, SNS
notifications (``notifications/dispatch.py``) and polling (``poll_once``). All of them end
in ``apply_state``, which turns what the store says into one guarded catalog transition and
hands archives that became ready to the fetcher. Polling and notifications can therefore
race safely: whichever comes second finds nothing left to change.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import structlog

from glacierd.catalog import archives as aq
from glacierd.context import Context
from glacierd.operations.inventory import completed_backup, on_disk
from glacierd.stores.base import ArchiveRef, RetrievalState

log = structlog.get_logger("glacierd.retrieval")

# How often to ask the store about a pending retrieval, by tier: about a tenth of the
# typical wait (Expedited 1–5 min, Standard 3–5 h, Bulk 5–12 h), so an archive is fetched
# soon after it is ready without paying for thousands of HEAD/DescribeJob calls.
POLL_SECONDS = {"Expedited": 30.0, "Standard": 900.0, "Bulk": 1800.0}


def archive_ref(row: dict[str, Any]) -> ArchiveRef:
    return ArchiveRef(
        key=row["store_key"],
        size=row["size"],
        sha256=row["sha256"],
        storage_class=row["storage_class"],
        retrieval_job_id=row["retrieval_job_id"],
    )


async def apply_state(
    ctx: Context, row: dict[str, Any], state: RetrievalState, source: str
) -> dict[str, Any] | None:
    """Record what the store says about an archive's retrieval; returns the row if it moved.

    If the archive already has that status, only the details are refreshed (a job id, an
    expected time, a new expiry). An archive that became ready is handed to the fetcher.
    """
    if row["retrieval_status"] == "local":
        return None  # our verified copy is on disk; the store's copy no longer matters
    pool, cat = ctx.catalog.pool, ctx.catalog
    details: dict[str, Any] = {}
    if state.job_id:
        details["retrieval_job_id"] = state.job_id
    if state.status == "pending" and state.expected_at:
        details["retrieval_expected_at"] = state.expected_at
    if state.status == "ready" and state.ready_until:
        details["ready_until"] = state.ready_until
    errors = (
        {"retrieval_error": state.reason}
        if state.status == "available"
        else {"retrieval_error": None}
    )
    new = await aq.transition(pool, cat, row["id"], state.status, **details, **errors)
    if new is not None:
        log.info(
            "archive.status_changed",
            archive_id=row["id"],
            key=row["store_key"],
            old=row["retrieval_status"],
            new=new["retrieval_status"],
            source=source,
            reason=state.reason,
        )
        current: dict[str, Any] | None = new
    else:
        current = await aq.get(pool, cat, row["id"])
        if current and current["retrieval_status"] == state.status and details:
            await aq.update_fields(pool, cat, row["id"], **details)
    if current and current["retrieval_status"] == "ready" and ctx.fetcher is not None:
        ctx.fetcher.enqueue(current["id"])
    return new


async def retrieve_backup(ctx: Context, backup_id: int, tier: str | None = None) -> dict[str, Any]:
    """Request retrieval of a backup's database archive and of every file not on disk.

    Files already on disk are never retrieved (as in the original engine). Archives already
    pending, ready or local are left as they are, so calling this twice is harmless.
    """
    _, rows = await completed_backup(ctx, backup_id, "retrieved")
    present = await asyncio.to_thread(on_disk, ctx.config.files.root, rows)
    counts = {"requested": 0, "already": 0, "on_disk": len(present), "ready": 0}
    for row in rows:
        if row["id"] in present:
            continue
        state = await request_archive(ctx, row, tier, source="request")
        if state is None:
            counts["already"] += 1
        else:
            counts["ready" if state.status == "ready" else "requested"] += 1
    log.info("backup.retrieval_requested", backup_id=backup_id, tier=tier, **counts)
    return {"id": backup_id, "tier": tier, **counts}


async def request_archive(
    ctx: Context, row: dict[str, Any], tier: str | None, source: str
) -> RetrievalState | None:
    """Ask the store for one archive unless it is already pending, ready or local (None).

    Used by the retrieve verb and by restores alike. A ready archive is (re)handed to the
    fetcher instead of being requested again.
    """
    pool, cat = ctx.catalog.pool, ctx.catalog
    now = datetime.now(UTC)
    if row["retrieval_status"] in ("pending", "local") or (
        row["retrieval_status"] == "ready" and not aq.expired(row, now)
    ):
        if row["retrieval_status"] == "ready" and ctx.fetcher is not None:
            ctx.fetcher.enqueue(row["id"])
        return None
    # Mark it pending before asking: a store that finishes at once may notify us (SNS)
    # before RestoreObject even returns, and that news must find the archive pending.
    marked = await aq.transition(
        pool,
        cat,
        row["id"],
        "pending",
        retrieval_tier=tier or ctx.store.default_tier,
        retrieval_requested_at=now,
        retrieval_error=None,
    )
    try:
        state = await ctx.store.request_retrieval(archive_ref(row), tier)
    except BaseException:
        if marked is not None:
            await aq.transition(
                pool, cat, row["id"], "available", retrieval_error="the retrieval request failed"
            )
        raise
    await apply_state(ctx, marked or row, state, source=source)
    return state


class Poller:
    """Asks the store about pending archives, each at the pace its tier warrants."""

    def __init__(self, ctx: Context, override_seconds: float | None = None) -> None:
        self.ctx = ctx
        self.override = override_seconds
        self.next_check: dict[int, float] = {}

    def interval(self, tier: str | None) -> float:
        if self.override is not None:
            return self.override
        return POLL_SECONDS.get(tier or "Standard", POLL_SECONDS["Standard"])

    async def poll_once(self) -> int:
        """Check every due archive once; returns how many changed status."""
        ctx = self.ctx
        rows = await aq.with_status(
            ctx.catalog.pool, ctx.catalog, ctx.store.name, ["pending", "ready"]
        )
        clock = time.monotonic()
        now = datetime.now(UTC)
        changed = 0
        for row in rows:
            if row["retrieval_status"] == "ready" and not aq.expired(row, now):
                if ctx.fetcher is not None:
                    ctx.fetcher.enqueue(row["id"])  # a failed fetch is retried (with backoff)
                continue
            if self.next_check.get(row["id"], 0.0) > clock:
                continue
            # A little early, so a check is never skipped by a tick landing just before it.
            self.next_check[row["id"]] = clock + 0.9 * self.interval(row["retrieval_tier"])
            try:
                state = await ctx.store.retrieval_status(archive_ref(row))
            except Exception as exc:
                log.warning("poll.failed", archive_id=row["id"], error=str(exc))
                continue
            if await apply_state(ctx, row, state, source="poll"):
                changed += 1
        return changed
