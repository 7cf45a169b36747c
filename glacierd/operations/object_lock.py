"""Deleting a backup whose archives the store keeps locked (S3 Object Lock): refused whole,
before anything changes, with the date the lock ends.

The deletion asks the store about every archive it would delete (``Store.retention``, a few
at a time) while its catalog transaction is still open, so a refusal rolls the catalog back:
the backup stays listed, its archives stored, nothing half-deleted.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from glacierd.context import Context
from glacierd.stores.base import ArchiveRef
from glacierd.stores.protection import Retention

#: Store calls at the same time (one HEAD per archive in S3).
CONCURRENCY = 8


async def _retentions(ctx: Context, archives: list[dict[str, Any]]) -> list[Retention]:
    slots = asyncio.Semaphore(CONCURRENCY)

    async def ask(a: dict[str, Any]) -> Retention | None:
        async with slots:
            return await ctx.store.retention(ArchiveRef(a["store_key"], a["size"], a["sha256"]))

    found = await asyncio.gather(*(ask(a) for a in archives))
    return [r for r in found if r is not None]


def _latest(locks: list[Retention]) -> Retention:
    """The lock that ends last (a legal hold has no end)."""
    return max(locks, key=lambda r: (r.until is None, r.until or datetime.min))


async def why_locked(ctx: Context, backup_id: int, archives: list[dict[str, Any]]) -> str | None:
    """Why the backup cannot be deleted now (one sentence), or None if nothing is locked.
    ``archives``: the archives its deletion would remove from the store."""
    locks = await _retentions(ctx, archives)
    if not locks:
        return None
    latest = _latest(locks)
    verb = "is" if len(locks) == 1 else "are"
    when = "after that date" if latest.until else "once the legal hold is lifted"
    return (
        f"backup {backup_id} cannot be deleted: {len(locks)} of the {len(archives)} archives "
        f"only it uses {verb} locked, the last {latest.describe()}; nothing was deleted — "
        f"delete it {when}."
    )
