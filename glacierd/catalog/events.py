"""The hooks' outbox: events (written by the catalog's triggers, migration 0008) and their
deliveries, one per event and hook."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg

from glacierd.catalog.pool import Catalog

#: Events queued, and deliveries claimed, per call: bounded work per pass.
BATCH = 100


async def queue_new(
    pool: asyncpg.Pool,
    catalog: Catalog,
    hooks_for: Callable[[str], tuple[str, ...]],
    now: datetime,
) -> int:
    """Give each new event one pending delivery per hook ``hooks_for(event)`` names, due at
    ``now`` (no hook: the event is only marked queued). Returns how many were made."""
    s = catalog.schema_sql
    async with pool.acquire() as conn, conn.transaction():
        events = await conn.fetch(
            f"SELECT id, event FROM {s}.events WHERE NOT queued ORDER BY id "
            f"LIMIT {BATCH} FOR UPDATE SKIP LOCKED"
        )
        pairs = [(e["id"], hook) for e in events for hook in hooks_for(e["event"])]
        if pairs:
            await conn.execute(
                f"INSERT INTO {s}.hook_deliveries (event_id, hook, next_attempt_at) "
                "SELECT e, h, $3 FROM unnest($1::bigint[], $2::text[]) AS t(e, h) "
                "ON CONFLICT DO NOTHING",
                [p[0] for p in pairs],
                [p[1] for p in pairs],
                now,
            )
        await conn.execute(
            f"UPDATE {s}.events SET queued = true WHERE id = ANY($1::bigint[])",
            [e["id"] for e in events],
        )
    return len(pairs)


async def claim_due(
    pool: asyncpg.Pool, catalog: Catalog, hooks: tuple[str, ...], now: datetime, lease: datetime
) -> list[dict[str, Any]]:
    """Pending deliveries due at ``now`` to the given hooks, with their events; each claimed
    (one more attempt, not due again before ``lease``) so that no other pass sends it
    meanwhile, and a process that dies while sending sends it again after the lease."""
    s = catalog.schema_sql
    records = await pool.fetch(
        f"WITH due AS (SELECT event_id, hook FROM {s}.hook_deliveries "
        "WHERE state = 'pending' AND next_attempt_at <= $1 AND hook = ANY($3::text[]) "
        f"ORDER BY next_attempt_at, event_id LIMIT {BATCH} FOR UPDATE SKIP LOCKED) "
        f"UPDATE {s}.hook_deliveries d SET attempts = d.attempts + 1, next_attempt_at = $2 "
        f"FROM due, {s}.events e WHERE d.event_id = due.event_id AND d.hook = due.hook "
        "AND e.id = d.event_id "
        "RETURNING d.event_id, d.hook, d.attempts, e.event, e.backup_id, e.restore_id, "
        "e.reason, e.details, e.occurred_at",
        now,
        lease,
        list(hooks),
    )
    return sorted((dict(r) for r in records), key=lambda r: (r["event_id"], r["hook"]))


async def record_sent(pool: asyncpg.Pool, catalog: Catalog, event_id: int, hook: str) -> None:
    await pool.execute(
        f"UPDATE {catalog.schema_sql}.hook_deliveries SET state = 'sent', last_error = NULL, "
        "finished_at = now() WHERE event_id = $1 AND hook = $2",
        event_id,
        hook,
    )


async def record_failure(
    pool: asyncpg.Pool,
    catalog: Catalog,
    event_id: int,
    hook: str,
    error: str,
    retry_at: datetime | None,
) -> None:
    """A failed attempt: tried again at ``retry_at``, or (None) given up."""
    await pool.execute(
        f"UPDATE {catalog.schema_sql}.hook_deliveries SET last_error = $3, "
        "state = CASE WHEN $4::timestamptz IS NULL THEN 'failed' ELSE 'pending' END, "
        "next_attempt_at = coalesce($4, next_attempt_at), "
        "finished_at = CASE WHEN $4::timestamptz IS NULL THEN now() END "
        "WHERE event_id = $1 AND hook = $2",
        event_id,
        hook,
        error,
        retry_at,
    )


async def prune(
    pool: asyncpg.Pool, catalog: Catalog, before: datetime, hooks: tuple[str, ...]
) -> int:
    """Forget events older than ``before`` with no delivery pending to one of ``hooks`` (a
    delivery to a hook since removed from the configuration will never be made)."""
    s = catalog.schema_sql
    result = await pool.execute(
        f"DELETE FROM {s}.events e WHERE e.queued AND e.occurred_at < $1 AND NOT EXISTS "
        f"(SELECT 1 FROM {s}.hook_deliveries d WHERE d.event_id = e.id "
        "AND d.state = 'pending' AND d.hook = ANY($2::text[]))",
        before,
        list(hooks),
    )
    return int(result.split()[-1])


async def deliveries(pool: asyncpg.Pool, catalog: Catalog) -> list[dict[str, Any]]:
    """Every delivery with its event's name, oldest first (for tests and inspection)."""
    s = catalog.schema_sql
    records = await pool.fetch(
        f"SELECT d.*, e.event FROM {s}.hook_deliveries d JOIN {s}.events e "
        "ON e.id = d.event_id ORDER BY d.event_id, d.hook"
    )
    return [dict(r) for r in records]
