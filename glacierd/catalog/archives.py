"""Changing an archive's retrieval status: every change goes through one guarded UPDATE.

Who may take which edge is ``catalog.status``'s table; this module turns it into SQL. Store
news (SNS, polling, the answer to our own request) is a compare-and-set: the UPDATE matches
only while the row still has the status, generation and job id the caller saw before it
asked the store, so an answer that was overtaken (a fetch finished, a newer request
started, a newer job replaced the old one) matches no row and changes nothing. Each status
change, and each answer to our own request, moves ``retrieval_generation`` on.
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
    "retrieval_asking",
}


def _assignments(fields: dict[str, Any], first: int) -> list[str]:
    """``name = $n`` for each detail field, numbered from ``first``; unknown names refused."""
    unknown = set(fields) - _FIELDS
    if unknown:
        raise ValueError(f"unknown archive fields {sorted(unknown)}")
    return [f"{name} = ${n}" for n, name in enumerate(fields, start=first)]


async def compare_and_set(
    db: Conn,
    catalog: Catalog,
    seen: dict[str, Any],
    new: status.ArchiveStatus,
    who: str,
    *,
    match_job: bool = True,
    **fields: Any,
) -> dict[str, Any] | None:
    """Move the archive from the status in ``seen`` (the row as the caller read it) to
    ``new``, if ``who`` may take that edge and the row is still as seen; returns the new row.

    "As seen" is the status and the generation, and — unless ``match_job`` is False (the
    answer to our own request, which may learn its job id from SNS first) — the job id.
    ``new`` equal to the seen status refreshes details (a job id, an expiry). None means
    nothing changed: the edge is not this caller's, or the row moved on meanwhile.
    """
    current = seen["retrieval_status"]
    if not status.allowed(current, new, who) or (new == current and not fields):
        return None
    args: list[Any] = [seen["id"], new, current, seen["retrieval_generation"]]
    where = [
        "id = $1",
        "state = 'stored'",
        "retrieval_status = $3",
        "retrieval_generation = $4",
    ]
    if match_job:
        args.append(seen["retrieval_job_id"])
        where.append(f"retrieval_job_id IS NOT DISTINCT FROM ${len(args)}")
    guard = status.guard(current, new, who)
    if guard:
        where.append(guard)
    sets = ["retrieval_status = $2", *_assignments(fields, first=len(args) + 1)]
    if new != current or who == status.REQUEST:
        sets.append("retrieval_generation = retrieval_generation + 1")
    if new != "pending" and "retrieval_asking" not in fields:
        sets.append("retrieval_asking = false")  # a claim means nothing outside "pending"
    row = await db.fetchrow(
        f"UPDATE {catalog.schema_sql}.archives SET {', '.join(sets)} "
        f"WHERE {' AND '.join(where)} RETURNING *",
        *args,
        *fields.values(),
    )
    return dict(row) if row else None


async def claim_retrieval(
    db: Conn, catalog: Catalog, seen: dict[str, Any], **fields: Any
) -> dict[str, Any] | None:
    """Claim an archive for a retrieval request: ``pending`` and "asking" if it is still as
    ``seen``. Only the caller that gets the row back asks the store (no duplicate jobs)."""
    return await compare_and_set(
        db,
        catalog,
        seen,
        "pending",
        status.REQUEST,
        retrieval_asking=True,
        retrieval_job_id=None,
        retrieval_expected_at=None,
        ready_until=None,
        **fields,
    )


async def mark_local(
    db: Conn, catalog: Catalog, archive_id: int, local_path: str
) -> dict[str, Any] | None:
    """A download matched its SHA-256: the archive is local, whatever news came meanwhile."""
    row = await db.fetchrow(
        f"UPDATE {catalog.schema_sql}.archives SET retrieval_status = 'local', local_path = $2, "
        "retrieval_error = NULL, retrieval_asking = false, "
        "retrieval_generation = retrieval_generation + 1 "
        "WHERE id = $1 AND state = 'stored' AND retrieval_status = ANY($3::text[]) RETURNING *",
        archive_id,
        local_path,
        status.sources_for("local", status.FETCH),
    )
    return dict(row) if row else None


async def update_fields(db: Conn, catalog: Catalog, archive_id: int, **fields: Any) -> None:
    """Change details without changing the status (a new expiry, an error note)."""
    if not fields:
        raise ValueError("update_fields needs at least one field")
    sets = _assignments(fields, first=2)
    await db.execute(
        f"UPDATE {catalog.schema_sql}.archives SET {', '.join(sets)} WHERE id = $1",
        archive_id,
        *fields.values(),
    )


async def get(db: Conn, catalog: Catalog, archive_id: int) -> dict[str, Any] | None:
    row = await db.fetchrow(
        f"SELECT * FROM {catalog.schema_sql}.archives WHERE id = $1", archive_id
    )
    return dict(row) if row else None


async def with_status(
    db: Conn, catalog: Catalog, store_name: str, statuses: list[str]
) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"SELECT * FROM {catalog.schema_sql}.archives WHERE state = 'stored' AND store_name = $1 "
        "AND retrieval_status = ANY($2::text[]) ORDER BY id",
        store_name,
        statuses,
    )
    return [dict(r) for r in rows]


async def asking(db: Conn, catalog: Catalog, store_name: str) -> list[dict[str, Any]]:
    """Archives claimed for a retrieval whose request was never answered."""
    rows = await db.fetch(
        f"SELECT * FROM {catalog.schema_sql}.archives WHERE state = 'stored' AND store_name = $1 "
        "AND retrieval_status = 'pending' AND retrieval_asking ORDER BY id",
        store_name,
    )
    return [dict(r) for r in rows]


async def by_job_id(db: Conn, catalog: Catalog, job_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"SELECT * FROM {catalog.schema_sql}.archives "
        "WHERE retrieval_job_id = $1 AND state = 'stored'",
        job_id,
    )
    return [dict(r) for r in rows]


async def by_store_key(
    db: Conn, catalog: Catalog, store_name: str, key: str
) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"SELECT * FROM {catalog.schema_sql}.archives WHERE store_name = $1 AND store_key = $2 "
        "AND state = 'stored'",
        store_name,
        key,
    )
    return [dict(r) for r in rows]


def expired(row: dict[str, Any], now: datetime) -> bool:
    return row["ready_until"] is not None and row["ready_until"] <= now
