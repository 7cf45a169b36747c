"""Planning a restore: what it would do (the dry run), and the checks before a request is
accepted and persisted."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from glacierd.catalog import restores as restore_rows
from glacierd.catalog.locks import BusyError, operation_lock
from glacierd.context import Context
from glacierd.operations.inventory import NotFoundError, completed_backup, file_states
from glacierd.operations.restore.errors import RestoreFailed
from glacierd.operations.restore.paths import unsafe_paths
from glacierd.operations.views import iso
from glacierd.sources import attachments

log = structlog.get_logger("glacierd.restore")


async def plan_restore(ctx: Context, backup_id: int, options: dict[str, Any]) -> dict[str, Any]:
    """What a restore of this backup would do (the dry run, and the check before a real one)."""
    backup, rows = await completed_backup(ctx, backup_id, "restored")
    root = ctx.config.files.root
    files = [a for a in rows if a["kind"] == "file"]
    # Hashing every file (compare = "sha256") only when the files are to be restored.
    compare = ctx.config.restore.compare if options["files"] else "size"
    states = await asyncio.to_thread(file_states, root, files, compare)
    present = {i for i, state in states.items() if state == "same"}
    needed = [a for a in rows if a["kind"] == "database"] if options["database"] else []
    refused: list[str] = []
    to_replace: list[str] = []
    if options["files"] and root is not None:
        # Every path is checked, even where something lies already: "../x" must not pass
        # as "exists" because a file outside the root happens to have the archived size.
        refused = await asyncio.to_thread(unsafe_paths, root, [a["path"] for a in files])
        # Missing files and files that differ from their archive (moved aside, replaced).
        needed += [a for a in files if a["id"] not in present]
        to_replace = [a["path"] for a in files if states.get(a["id"]) == "differs"]
    orphans: list[str] = []
    if options["files"] and root is not None:
        walked = await attachments.walk(root)
        known = {a["path"] for a in files}
        orphans = [f.path for f in walked.files if f.path not in known]
    to_retrieve = [a for a in needed if a["retrieval_status"] != "local"]
    estimates: dict[str, float] = {}
    for a in to_retrieve:
        for tier, seconds in ctx.store.retrieval_estimates(a["storage_class"]).items():
            estimates[tier] = max(estimates.get(tier, 0.0), seconds)
    return {
        "backup_id": backup_id,
        "backup_time": iso(backup["started_at"]),
        "database": options["database"],
        "files": options["files"],
        "tables": backup.get("tables") or [],
        "files_to_retrieve": {
            "count": sum(1 for a in to_retrieve if a["kind"] == "file"),
            "bytes": sum(a["size"] or 0 for a in to_retrieve if a["kind"] == "file"),
        },
        "database_bytes": sum(a["size"] or 0 for a in needed if a["kind"] == "database"),
        "files_on_disk": len(present),
        "files_to_replace": {
            "count": len(to_replace),
            "paths": to_replace[:1000],
            "compare": compare,
        },
        "orphans": {
            "count": len(orphans),
            "paths": orphans[:1000],
            "moved_to": str(ctx.config.files.orphan_dir),
        },
        "refused_paths": refused,
        "estimated_retrieval_seconds": estimates,
        "snapshot": ctx.config.restore.snapshot and options["database"],
        "_needed_ids": [a["id"] for a in needed],
    }


async def start_restore(ctx: Context, backup_id: int, options: dict[str, Any]) -> dict[str, Any]:
    """Validate, then persist a restore request (or return the plan for a dry run)."""
    if not (options["database"] or options["files"]):
        raise RestoreFailed("nothing to restore: database and files are both false.")
    if options["files"] and ctx.config.files.root is None:
        raise RestoreFailed("files: true needs files.root in the configuration.")
    plan = await plan_restore(ctx, backup_id, options)
    needed = plan.pop("_needed_ids")
    if plan["refused_paths"]:
        raise RestoreFailed(
            f"backup {backup_id} lists unsafe paths, nothing was changed: "
            + "; ".join(plan["refused_paths"][:3])
        )
    if options.get("dry_run"):
        return {"dry_run": True, **plan}
    kept = {k: options[k] for k in ("tier", "database", "files")}
    return await _request(
        ctx, backup_id=backup_id, snapshot_id=None, options=kept, archive_ids=needed
    )


async def start_snapshot_restore(ctx: Context, snapshot_id: int) -> dict[str, Any]:
    snap = await restore_rows.get_snapshot(ctx.catalog.pool, ctx.catalog, snapshot_id)
    if snap is None:
        raise NotFoundError(f"snapshot {snapshot_id} does not exist; GET /snapshots lists them.")
    return await _request(
        ctx,
        backup_id=None,
        snapshot_id=snapshot_id,
        options={"tier": None, "database": True, "files": False},
        archive_ids=[],
    )


async def _request(ctx: Context, **request: Any) -> dict[str, Any]:
    """Persist a restore request once nothing else is running; the driver takes it on.

    The request and its archive list are one transaction, and the database itself refuses
    a second active restore (a unique index), so two requests at the same moment cannot
    both be accepted, whatever each of them checked before.
    """
    await _check_not_busy(ctx)
    try:
        restore_id = await restore_rows.create(ctx.catalog.pool, ctx.catalog, **request)
    except restore_rows.AnotherRestoreActive:
        active = await restore_rows.active(ctx.catalog.pool, ctx.catalog)
        if not active:  # it ended in the meantime: the caller may simply try again
            raise BusyError(
                "cannot start a restore: another restore was active a moment ago; try again."
            ) from None
        raise BusyError(_busy_message(active[0])) from None
    log.info(
        "restore.requested",
        restore_id=restore_id,
        backup_id=request["backup_id"],
        snapshot_id=request["snapshot_id"],
        archives=len(request["archive_ids"]),
        **request["options"],
    )
    return {"id": restore_id, "state": "requested", "url": f"/restores/{restore_id}"}


def _busy_message(active: dict[str, Any]) -> str:
    return (
        f"cannot start a restore: restore {active['id']} is {active['state']}; wait "
        "for it to finish (GET /restores/{id})."
    )


async def _check_not_busy(ctx: Context) -> None:
    active = await restore_rows.active(ctx.catalog.pool, ctx.catalog)
    if active:
        raise BusyError(_busy_message(active[0]))
    async with operation_lock(ctx.catalog, "restore"):
        pass  # only checks that no backup runs right now
