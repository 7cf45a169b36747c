"""The fetch verb: download a ready archive, verify its SHA-256, mark it local.

The Fetcher runs downloads in the background as soon as an archive becomes ready, a few at
a time, each archive at most once at a time. A verification failure deletes the bad copy,
leaves the archive ready and retries later with a growing delay, logging why.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from glacierd.catalog import archives as aq
from glacierd.operations.errors import describe_error
from glacierd.stores.base import NotRetrievedError, VerificationError

if TYPE_CHECKING:
    from glacierd.context import Context

log = structlog.get_logger("glacierd.fetch")
_BACKOFF_START, _BACKOFF_MAX = 30.0, 3600.0


def fetched_path(state_dir: Path, archive_id: int) -> Path:
    return state_dir / "fetched" / f"archive-{archive_id}"


async def fetch_archive(ctx: Context, archive_id: int) -> dict[str, Any] | None:
    """Download one ready archive; returns its row once local, None if it was not ready."""
    from glacierd.operations.retrieval import apply_state, archive_ref

    pool, cat = ctx.catalog.pool, ctx.catalog
    row = await aq.get(pool, cat, archive_id)
    if row is None or row["retrieval_status"] != "ready":
        return row if row and row["retrieval_status"] == "local" else None
    dest = fetched_path(ctx.config.state_dir, archive_id)
    started = time.monotonic()
    flog = log.bind(archive_id=archive_id, key=row["store_key"], bytes=row["size"])
    flog.info("fetch.started")
    try:
        await ctx.store.get(archive_ref(row), dest)
    except NotRetrievedError:
        # The readable copy expired (or was never there): ask the store where it stands.
        state = await ctx.store.retrieval_status(archive_ref(row))
        await apply_state(ctx, row, state, source="fetch")
        flog.warning("fetch.not_ready", status=state.status, reason=state.reason)
        return None
    new = await aq.transition(
        pool, cat, archive_id, "local", local_path=str(dest), retrieval_error=None
    )
    flog.info(
        "fetch.verified",
        sha256=row["sha256"],
        path=str(dest),
        duration_s=round(time.monotonic() - started, 3),
    )
    return new


class Fetcher:
    def __init__(self, ctx: Context, concurrency: int = 2) -> None:
        self.ctx = ctx
        self.semaphore = asyncio.Semaphore(concurrency)
        self.in_flight: set[int] = set()
        self.failures: dict[int, tuple[int, float]] = {}  # id -> (count, retry after)
        # Downloads that arrived but did not match the recorded SHA-256: after a few, the
        # stored copy itself is damaged and waiting longer will not help (restores give up).
        self.verification_failures: dict[int, int] = {}
        self.closed = False

    def enqueue(self, archive_id: int) -> bool:
        """Start fetching unless it is already running or backing off after a failure."""
        if self.closed or archive_id in self.in_flight:
            return False
        count, after = self.failures.get(archive_id, (0, 0.0))
        if count and time.monotonic() < after:
            return False
        self.in_flight.add(archive_id)
        self.ctx.spawn(self._run(archive_id), name=f"fetch-{archive_id}")
        return True

    async def _run(self, archive_id: int) -> None:
        try:
            async with self.semaphore:
                await fetch_archive(self.ctx, archive_id)
            self.failures.pop(archive_id, None)
            self.verification_failures.pop(archive_id, None)
            self.ctx.kick_restores()  # a restore may be waiting for exactly this archive
        except Exception as exc:
            count = self.failures.get(archive_id, (0, 0.0))[0] + 1
            delay = min(_BACKOFF_MAX, _BACKOFF_START * 2 ** (count - 1))
            self.failures[archive_id] = (count, time.monotonic() + delay)
            reason = describe_error(exc, "fetch")
            await aq.update_fields(
                self.ctx.catalog.pool, self.ctx.catalog, archive_id, retrieval_error=reason
            )
            if isinstance(exc, VerificationError):
                self.verification_failures[archive_id] = (
                    self.verification_failures.get(archive_id, 0) + 1
                )
            event = (
                "fetch.verification_failed"
                if isinstance(exc, VerificationError)
                else "fetch.failed"
            )
            log.error(
                event,
                archive_id=archive_id,
                error=reason,
                attempt=count,
                retry_in_s=delay,
                outcome="bad copy deleted; archive stays ready",
            )
        finally:
            self.in_flight.discard(archive_id)
