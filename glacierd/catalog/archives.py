"""Changing an archive's retrieval status: every change goes through ``transition``.

The UPDATE is guarded by the legal source statuses from ``catalog.status``, so two paths
racing (an SNS notification and a poll, or a duplicate notification) cannot apply the same
edge twice or move an archive backwards: the loser's UPDATE matches no row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from glacierd.catalog import status
from glacierd.catalog.backups import Conn
from glacierd.catalog.pool import Catalog

_FIELDS = {
    "retrieval_tier",
    "retrieval_job_id",
    "retrieval_requested_at",
    "retrieval_expected_at",
    "ready_until",
    "local_path",
    "retrieval_error",
}


def _assignments(fields: dict[str, Any], first: int) -> list[str]:
    """``name = $n`` for each detail field, numbered from ``first``; unknown names refused."""
    unknown = set(fields) - _FIELDS
    if unknown:
        raise ValueError(f"unknown archive fields {sorted(unknown)}")
    return [f"{name} = ${n}" for n, name in enumerate(fields, start=first)]


async def transition(
    db: Conn, catalog: Catalog, archive_id: int, new: str, **fields: Any
) -> dict[str, Any] | None:
    """Move one archive to ``new`` if its current status allows it; returns the new row.

    None means nothing changed: the archive was already there, or the edge is not legal
    from where it is now (a late or duplicate event). Extra ``fields`` are set alongside.
    """
    sets = ["retrieval_status = $2", *_assignments(fields, first=4)]
    args = [archive_id, new, status.sources_for(new), *fields.values()]
    guard = ""
    if new == "pending":
        # ready -> pending only once the readable copy expired: a late "still running"
        # answer must not hide a copy that is ready to download.
        guard = " AND NOT (retrieval_status = 'ready' AND coalesce(ready_until > now(), true))"
    row = await db.fetchrow(
        f"UPDATE {catalog.q}.archives SET {', '.join(sets)} "
        "WHERE id = $1 AND state = 'stored' AND retrieval_status = ANY($3::text[])"
        f"{guard} RETURNING *",
        *args,
    )
    return dict(row) if row else None


async def update_fields(db: Conn, catalog: Catalog, archive_id: int, **fields: Any) -> None:
    """Change details without changing the status (a new expiry, an error note)."""
    if not fields:
        raise ValueError("update_fields needs at least one field")
    sets = _assignments(fields, first=2)
    await db.execute(
        f"UPDATE {catalog.q}.archives SET {', '.join(sets)} WHERE id = $1",
        archive_id,
        *fields.values(),
    )


async def get(db: Conn, catalog: Catalog, archive_id: int) -> dict[str, Any] | None:
    row = await db.fetchrow(f"SELECT * FROM {catalog.q}.archives WHERE id = $1", archive_id)
    return dict(row) if row else None


async def with_status(
    db: Conn, catalog: Catalog, store_name: str, statuses: list[str]
) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"SELECT * FROM {catalog.q}.archives WHERE state = 'stored' AND store_name = $1 "
        "AND retrieval_status = ANY($2::text[]) ORDER BY id",
        store_name,
        statuses,
    )
    return [dict(r) for r in rows]


async def by_job_id(db: Conn, catalog: Catalog, job_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"SELECT * FROM {catalog.q}.archives WHERE retrieval_job_id = $1 AND state = 'stored'",
        job_id,
    )
    return [dict(r) for r in rows]


async def by_store_key(
    db: Conn, catalog: Catalog, store_name: str, key: str
) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"SELECT * FROM {catalog.q}.archives WHERE store_name = $1 AND store_key = $2 "
        "AND state = 'stored'",
        store_name,
        key,
    )
    return [dict(r) for r in rows]


def expired(row: dict[str, Any], now: datetime) -> bool:
    return row["ready_until"] is not None and row["ready_until"] <= now
