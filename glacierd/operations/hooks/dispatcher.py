"""The daemon's hook dispatcher: new events become deliveries, due deliveries are made.

One pass (``run_once``) queues the events the catalog recorded since the last pass, then
makes the deliveries that are due, one after the other, and records each outcome. The
daemon runs a pass every few seconds (``run``); one-shot commands run none (their events
wait in the catalog for the daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from glacierd.catalog import events as event_rows
from glacierd.context import Context
from glacierd.operations.hooks.delivery import deliver, payload

log = structlog.get_logger("glacierd.hooks")

#: Seconds between passes in the daemon.
PASS_SECONDS = 5.0
#: The longest wait between two attempts at one delivery.
MAX_RETRY_DELAY = timedelta(hours=6)
#: Events are kept this long after their deliveries ended.
KEEP_EVENTS = timedelta(days=90)


def wanted(ctx: Context, event: str) -> tuple[str, ...]:
    """The hooks an event goes to: every configured hook for a failure, and for a success
    only with hooks.on_success."""
    cfg = ctx.config.hooks
    if not event.endswith(".failed") and not cfg.on_success:
        return ()
    return cfg.hooks


def retry_delay(ctx: Context, attempts: int) -> timedelta:
    """retry_seconds before the second attempt, twice that before the third, and so on."""
    seconds = ctx.config.hooks.retry_seconds * 2 ** max(0, attempts - 1)
    return min(MAX_RETRY_DELAY, timedelta(seconds=seconds))


class HookDispatcher:
    def __init__(self, ctx: Context, *, pass_seconds: float = PASS_SECONDS) -> None:
        self.ctx = ctx
        self.pass_seconds = pass_seconds
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, now: datetime | None = None) -> int:
        """Queue new events and make the deliveries due at ``now``; returns how many were
        delivered."""
        ctx = self.ctx
        pool, cat, cfg = ctx.catalog.pool, ctx.catalog, ctx.config.hooks
        now = now or datetime.now(UTC)
        await event_rows.queue_new(pool, cat, lambda event: wanted(ctx, event), now)
        # The lease: a process that dies while sending tries again after it.
        lease = now + timedelta(seconds=cfg.timeout_seconds * 2 + 60)
        delivered = 0
        for row in await event_rows.claim_due(pool, cat, cfg.hooks, now, lease):
            delivered += await self._deliver(row, now)
        await event_rows.prune(pool, cat, now - KEEP_EVENTS, cfg.hooks)
        return delivered

    async def _deliver(self, row: dict[str, Any], now: datetime) -> int:
        ctx = self.ctx
        pool, cat, cfg = ctx.catalog.pool, ctx.catalog, ctx.config.hooks
        event_id, hook, attempts = row["event_id"], row["hook"], row["attempts"]
        hlog = log.bind(event_id=event_id, event=row["event"], hook=hook, attempt=attempts)
        failure = await deliver(cfg, hook, payload(row, ctx.store.name))
        if failure is None:
            await event_rows.record_sent(pool, cat, event_id, hook)
            hlog.info("hook.delivered")
            return 1
        if attempts >= cfg.max_attempts:
            await event_rows.record_failure(pool, cat, event_id, hook, failure, None)
            hlog.error("hook.gave_up", error=failure, attempts=attempts)
        else:
            retry_at = now + retry_delay(ctx, attempts)
            await event_rows.record_failure(pool, cat, event_id, hook, failure, retry_at)
            hlog.warning("hook.failed", error=failure, retry_at=retry_at.isoformat())
        return 0

    # ------------------------------------------------------------------ in the daemon

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hooks")

    async def _run(self) -> None:
        while not self.ctx.stopping:
            try:
                await self.run_once()
            except Exception as exc:  # the catalog away for a moment: try at the next pass
                log.warning("hook.pass_failed", error=str(exc))
            await asyncio.sleep(self.pass_seconds)

    async def stop(self) -> None:
        """Stop passing (shutdown). A delivery cut off here is made again after its lease."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
