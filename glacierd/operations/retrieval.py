"""The retrieve verb and everything that moves archives pending → ready → (fetch) local.

Three paths report a retrieval's progress: the answer to the request itself, SNS
notifications (``notifications/dispatch.py``) and polling (``Poller``). All of them end in
``record_store_answer``, a compare-and-set against the row as the caller saw it before it asked the
store (``catalog.archives.compare_and_set``): an answer that was overtaken — by a fetch that
finished, a newer request, a newer job — changes nothing. Polling and notifications can
therefore race safely: whichever comes second finds nothing left to change.

A request first *claims* the archive (available → pending, "asking"), and only the caller
whose claim succeeds asks the store, so a retrieval is never requested (and billed) twice.
While the request is on its way, "the store knows of no retrieval" is not believed: it may
just not have arrived yet.

An archive found ready is announced through the caller's ``on_ready(archive_id)``: the
daemon hands it to the fetcher; one-shot commands download nothing (``no_follow_up``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from glacierd.catalog import archives as archive_rows
from glacierd.catalog import status
from glacierd.context import Context
from glacierd.operations.inventory import completed_backup, on_disk
from glacierd.stores.base import ArchiveRef, RetrievalState

log = structlog.get_logger("glacierd.retrieval")

# How often to ask the store about a pending retrieval: about a twelfth of the wait the store
# expects for the archive's class and tier (GLACIER Standard, 3–5 h: every 15 min), within
# these bounds, so an archive is fetched soon after it is ready without paying for thousands
# of HEAD/DescribeJob calls.
MIN_POLL_SECONDS, MAX_POLL_SECONDS = 30.0, 1800.0
POLLS_PER_TYPICAL_WAIT = 12
# At most this many store calls per poll tick (the rest wait for the next tick, oldest due
# first), a few at a time: after a restart every pending archive is due at once, and one
# tick must neither take minutes nor fire hundreds of calls together.
POLL_BATCH = 50
POLL_CONCURRENCY = 4

# Told the id of an archive that is ready to download (the daemon: Fetcher.enqueue).
OnReady = Callable[[int], object]


def no_follow_up(archive_id: int) -> None:
    """``on_ready`` for callers that download nothing (one-shot commands, recovery)."""


def archive_ref(row: dict[str, Any]) -> ArchiveRef:
    return ArchiveRef(
        key=row["store_key"],
        size=row["size"],
        sha256=row["sha256"],
        storage_class=row["storage_class"],
        retrieval_job_id=row["retrieval_job_id"],
    )


async def record_store_answer(
    ctx: Context,
    seen: dict[str, Any],
    state: RetrievalState,
    source: str,
    *,
    on_ready: OnReady,
    answer: bool = False,
) -> dict[str, Any] | None:
    """Record what the store says about an archive's retrieval, if the row is still as
    ``seen`` (read before the store was asked); returns the row if its status moved.

    ``answer`` marks the answer to our own request (it ends the claim). If the archive
    already has that status, only the details are refreshed (a job id, an expected time, a
    new expiry). An archive that is ready is announced to ``on_ready``.
    """
    pool, cat = ctx.catalog.pool, ctx.catalog
    if not answer and state.job_id and seen["retrieval_job_id"] not in (None, state.job_id):
        # News about another job than the row's: an older job's late word must not undo
        # (or replace) the newer job a later request started.
        log.info(
            "archive.stale_job",
            archive_id=seen["id"],
            job_id=state.job_id,
            current_job_id=seen["retrieval_job_id"],
            source=source,
        )
        return None
    details: dict[str, Any] = {}
    if state.job_id:
        details["retrieval_job_id"] = state.job_id
    if state.status == "pending" and state.expected_at:
        details["retrieval_expected_at"] = state.expected_at
    if state.status == "ready" and state.ready_until:
        details["ready_until"] = state.ready_until
    if state.status != seen["retrieval_status"]:
        details["retrieval_error"] = state.reason if state.status == "available" else None
    if answer:
        details["retrieval_asking"] = False
    who = status.REQUEST if answer else status.NEWS
    new = await archive_rows.compare_and_set(
        pool, cat, seen, state.status, who, match_job=not answer, **details
    )
    moved = new is not None and new["retrieval_status"] != seen["retrieval_status"]
    if moved:
        log.info(
            "archive.status_changed",
            archive_id=seen["id"],
            key=seen["store_key"],
            old=seen["retrieval_status"],
            new=state.status,
            source=source,
            reason=state.reason,
            job_id=state.job_id,
        )
    elif new is None and state.status != seen["retrieval_status"]:
        log.debug(
            "archive.news_ignored",
            archive_id=seen["id"],
            seen=seen["retrieval_status"],
            news=state.status,
            source=source,
            why="the edge is not the news's to take, or the row changed since it was read",
        )
    current = new if new is not None else await archive_rows.get(pool, cat, seen["id"])
    if current and current["retrieval_status"] == "ready":
        on_ready(current["id"])
    return new if moved else None


async def retrieve_backup(
    ctx: Context, backup_id: int, tier: str | None = None, *, on_ready: OnReady
) -> dict[str, Any]:
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
        state = await request_archive(ctx, row, tier, source="request", on_ready=on_ready)
        if state is None:
            counts["already"] += 1
        else:
            counts["ready" if state.status == "ready" else "requested"] += 1
    log.info("backup.retrieval_requested", backup_id=backup_id, tier=tier, **counts)
    return {"id": backup_id, "tier": tier, **counts}


async def request_archive(
    ctx: Context, row: dict[str, Any], tier: str | None, source: str, *, on_ready: OnReady
) -> RetrievalState | None:
    """Ask the store for one archive unless it is already pending, ready or local, or
    another caller claimed it first (None: the store was not asked).

    Used by the retrieve verb and by restores alike. A ready archive is announced to
    ``on_ready`` again instead of being requested again.
    """
    pool, cat = ctx.catalog.pool, ctx.catalog
    now = datetime.now(UTC)
    seen = await archive_rows.get(pool, cat, row["id"])  # the caller's copy may be old
    if seen is None or seen["state"] != "stored":
        return None
    if seen["retrieval_status"] in ("pending", "local") or (
        seen["retrieval_status"] == "ready" and not archive_rows.expired(seen, now)
    ):
        if seen["retrieval_status"] == "ready":
            on_ready(seen["id"])
        return None
    tier = tier or ctx.store.default_tier
    # Claim it before asking: a store that finishes at once may notify us (SNS) before
    # RestoreObject even returns, and that news must find the archive pending; and only the
    # caller whose claim succeeds asks the store.
    claimed = await archive_rows.claim_retrieval(
        pool, cat, seen, retrieval_tier=tier, retrieval_requested_at=now, retrieval_error=None
    )
    if claimed is None:
        return None  # another caller claimed it (or the row moved on): that caller asks
    log.info(
        "archive.retrieval_requested",
        archive_id=seen["id"],
        key=seen["store_key"],
        tier=tier,
        source=source,
        old=seen["retrieval_status"],
    )
    try:
        # The old row goes to the store: a vault checks whether its last job still runs.
        state = await ctx.store.request_retrieval(archive_ref(seen), tier)
    except BaseException:
        await asyncio.shield(_undo_claim(ctx, claimed, "the retrieval request failed"))
        raise
    await record_store_answer(ctx, claimed, state, source=source, on_ready=on_ready, answer=True)
    return state


async def _undo_claim(ctx: Context, claimed: dict[str, Any], reason: str) -> None:
    await archive_rows.compare_and_set(
        ctx.catalog.pool,
        ctx.catalog,
        claimed,
        "available",
        status.REQUEST,
        match_job=False,
        retrieval_asking=False,
        retrieval_error=reason,
    )


async def resume_interrupted_requests(ctx: Context, *, on_ready: OnReady) -> int:
    """At start-up: ask the store again for archives claimed by a process that died before
    the store answered (the claim is ours now; S3 and the local vault take a repeated
    request as "already in progress"). Returns how many were asked again."""
    pool, cat = ctx.catalog.pool, ctx.catalog
    resumed = 0
    for row in await archive_rows.asking(pool, cat, ctx.store.name):
        try:
            state = await ctx.store.request_retrieval(archive_ref(row), row["retrieval_tier"])
        except Exception as exc:
            await _undo_claim(ctx, row, f"the retrieval request failed after a restart: {exc}")
            log.warning("recovery.retrieval_request_failed", archive_id=row["id"], error=str(exc))
            continue
        await record_store_answer(
            ctx, row, state, source="recovery", on_ready=on_ready, answer=True
        )
        log.warning(
            "recovery.retrieval_requested_again",
            archive_id=row["id"],
            key=row["store_key"],
            status=state.status,
        )
        resumed += 1
    return resumed


class Poller:
    """Asks the store about pending archives, each at the pace its tier warrants."""

    def __init__(
        self, ctx: Context, override_seconds: float | None = None, *, on_ready: OnReady
    ) -> None:
        self.ctx = ctx
        self.override = override_seconds
        self.on_ready = on_ready
        # archive id -> monotonic time of its next check; only archives still polled.
        self.next_check: dict[int, float] = {}

    def interval(self, row: dict[str, Any]) -> float:
        """Seconds until a pending archive is asked about again."""
        if self.override is not None:
            return self.override
        store = self.ctx.store
        expected = store.expected_retrieval(
            row["storage_class"], row["retrieval_tier"] or store.default_tier
        ) or store.expected_retrieval(row["storage_class"], store.default_tier)
        typical = expected.typical if expected is not None else MAX_POLL_SECONDS
        return min(MAX_POLL_SECONDS, max(MIN_POLL_SECONDS, typical / POLLS_PER_TYPICAL_WAIT))

    async def poll_once(self) -> int:
        """Check at most POLL_BATCH due archives; returns how many changed status."""
        ctx = self.ctx
        rows = await archive_rows.with_status(
            ctx.catalog.pool, ctx.catalog, ctx.store.name, ["pending", "ready"]
        )
        clock = time.monotonic()
        now = datetime.now(UTC)
        polled: list[dict[str, Any]] = []
        for row in rows:
            if row["retrieval_status"] == "ready" and not archive_rows.expired(row, now):
                self.on_ready(row["id"])  # a failed fetch is retried (with backoff)
                continue
            polled.append(row)
        # Forget archives that are no longer polled (fetched, expired, deleted).
        keep = {row["id"] for row in polled}
        for archive_id in [a for a in self.next_check if a not in keep]:
            del self.next_check[archive_id]
        due = sorted(
            (r for r in polled if self.next_check.get(r["id"], 0.0) <= clock),
            key=lambda r: (self.next_check.get(r["id"], 0.0), r["id"]),
        )[:POLL_BATCH]
        for row in due:
            # A little early, so a check is never skipped by a tick landing just before it.
            self.next_check[row["id"]] = clock + 0.9 * self.interval(row)
        slots = asyncio.Semaphore(POLL_CONCURRENCY)

        async def check(row: dict[str, Any]) -> bool:
            async with slots:
                try:
                    state = await ctx.store.retrieval_status(archive_ref(row))
                except Exception as exc:
                    log.warning("poll.failed", archive_id=row["id"], error=str(exc))
                    return False
                changed = await record_store_answer(
                    ctx, row, state, source="poll", on_ready=self.on_ready
                )
                return changed is not None

        return sum(await asyncio.gather(*(check(row) for row in due)))
