"""What the API shows of restore requests: one request with its archives, the list."""

from __future__ import annotations

from typing import Any

from glacierd.catalog import restores as restore_rows
from glacierd.context import Context
from glacierd.operations.inventory import NotFoundError
from glacierd.operations.views import archive_view, iso


async def restore_view(ctx: Context, restore_id: int) -> dict[str, Any]:
    pool, cat = ctx.catalog.pool, ctx.catalog
    r = await restore_rows.get(pool, cat, restore_id)
    if r is None:
        raise NotFoundError(f"restore {restore_id} does not exist; GET /restores lists them.")
    rows = await restore_rows.archives(pool, cat, restore_id)
    counts: dict[str, int] = {}
    for a in rows:
        counts[a["retrieval_status"]] = counts.get(a["retrieval_status"], 0) + 1
    expected = [
        a["retrieval_expected_at"]
        for a in rows
        if a["retrieval_status"] == "pending" and a["retrieval_expected_at"]
    ]
    return {
        **restore_summary(r),
        "archives": {
            "total": len(rows),
            "by_status": counts,
            "items": [archive_view(a) for a in rows[:1000]],
        },
        "expected_ready_at": iso(max(expected)) if expected else None,
    }


def restore_summary(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "backup_id": r["backup_id"],
        "snapshot_id": r["snapshot_id"],
        "state": r["state"],
        "options": r["options"],
        "steps": {k: v for k, v in r["steps"].items() if k != "files_placed"},
        "error": r["error"],
        "created_at": iso(r["created_at"]),
        "updated_at": iso(r["updated_at"]),
        "finished_at": iso(r["finished_at"]),
    }


async def list_restores(ctx: Context) -> list[dict[str, Any]]:
    return [restore_summary(r) for r in await restore_rows.list_all(ctx.catalog.pool, ctx.catalog)]
