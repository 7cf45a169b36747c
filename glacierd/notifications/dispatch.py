"""Apply verified retrieval events to the catalog, whatever the store.

Messages arrive at least once and in any order. The store says what an event means
(``Store.interpret``: which archive, which state, which job); this module finds the rows
and hands each to ``operations.retrieval.record_store_answer`` together with the row as read here:
a compare-and-set against that row, so a duplicate is a no-op, a stale event (a "Completed"
after the copy was fetched, a failed old job after a new one started) changes nothing, and
a verified local copy is never moved backwards.
"""

from __future__ import annotations

from typing import Any

import structlog

from glacierd.catalog import archives as archive_rows
from glacierd.context import Context
from glacierd.operations.retrieval import OnReady, record_store_answer
from glacierd.stores.base import StoreNews
from glacierd.stores.events import IgnoredEvent
from glacierd.stores.notifications import RetrievalEvent

log = structlog.get_logger("glacierd.notifications")


async def dispatch(ctx: Context, event: RetrievalEvent, on_ready: OnReady) -> int:
    """Apply one event; returns how many archives changed status. An archive found ready
    is announced to ``on_ready`` (the daemon's fetcher)."""
    if isinstance(event, IgnoredEvent):
        log.info("sns.event_ignored", reason=event.reason)
        return 0
    news = ctx.store.interpret(event)
    if not news:
        log.warning("sns.foreign_event", store=ctx.store.name, about=repr(event))
    changed = 0
    for item in news:
        changed += await _record(ctx, item, on_ready)
    return changed


async def _rows(ctx: Context, news: StoreNews) -> list[dict[str, Any]]:
    pool, cat = ctx.catalog.pool, ctx.catalog
    if news.state.job_id:
        rows = await archive_rows.by_job_id(pool, cat, news.state.job_id)
        if rows:
            return rows
        # A job we never recorded (lost during a crash between asking the store and the
        # catalog update): match by the archive it is about.
    return await archive_rows.by_store_key(pool, cat, ctx.store.name, news.key)


async def _record(ctx: Context, news: StoreNews, on_ready: OnReady) -> int:
    rows = await _rows(ctx, news)
    if not rows:
        log.warning("sns.unknown_archive", key=news.key, job_id=news.state.job_id)
        return 0
    changed = 0
    for row in rows:
        if news.only_from is not None and row["retrieval_status"] not in news.only_from:
            continue
        # record_store_answer ignores news about another job than the row's (a newer job
        # replaced it).
        changed += bool(
            await record_store_answer(ctx, row, news.state, source="sns", on_ready=on_ready)
        )
    return changed
