"""The restore verb: a persisted request that drives itself to the end.

    requested → retrieving → fetching → restoring → restored   (or failed, with the reason)

``RestoreDriver.advance`` looks at a request and moves it as far as it can now; it is
called after the request is made, after every poll/notification tick, and at start-up, so
a restart (SIGKILL included) resumes where the catalog says the request is. Each step is
safe to repeat, and what must happen once — the safety snapshot — is recorded in
``steps`` before the step that depends on it.

Nothing changes before every needed archive is local and its SHA-256 verified again from
disk. Inside "restoring", under the operation lock shared with backups:

1. a safety snapshot of the current database (unless restore.snapshot = false);
2. files are made to match the backup: missing ones put back, changed ones moved to the
   orphan folder and replaced (operations/restore_files.py, which records what it changes);
3. the database is restored in one transaction (sources/database_restore.py);
4. files the restored backup does not reference are moved to the orphan folder.

If step 2 or 3 fails, step 2 is taken back exactly (only files this restore wrote are
removed, replaced ones come back), so the request ends failed with the database and the
files as they were.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from glacierd.catalog import archives as aq
from glacierd.catalog import backups as q
from glacierd.catalog import restores as rq
from glacierd.catalog import status
from glacierd.catalog.locks import BusyError, operation_lock
from glacierd.context import Context
from glacierd.operations.errors import OperationError, describe_error
from glacierd.operations.fetch import Fetcher
from glacierd.operations.inventory import NotFoundError, completed_backup, file_states
from glacierd.operations.restore_files import (
    ArchivedFile,
    FilePlacement,
    move_orphans,
    remove_placed,
    unsafe_paths,
)
from glacierd.operations.retrieval import no_follow_up, request_archive
from glacierd.operations.snapshot import take_snapshot
from glacierd.sources import attachments
from glacierd.sources.database_restore import restore_dump

log = structlog.get_logger("glacierd.restore")


class RestoreFailed(OperationError):
    """The request cannot complete; nothing was changed (the message says why)."""


class _Moved(Exception):
    """The request is no longer in the state this driver saw (nothing to do here)."""


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


# ---------------------------------------------------------------- planning


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
        "backup_time": _iso(backup["started_at"]),
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
    snap = await rq.get_snapshot(ctx.catalog.pool, ctx.catalog, snapshot_id)
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
        restore_id = await rq.create(ctx.catalog.pool, ctx.catalog, **request)
    except rq.AnotherRestoreActive:
        active = await rq.active(ctx.catalog.pool, ctx.catalog)
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
    active = await rq.active(ctx.catalog.pool, ctx.catalog)
    if active:
        raise BusyError(_busy_message(active[0]))
    async with operation_lock(ctx.catalog, "restore"):
        pass  # only checks that no backup runs right now


# ---------------------------------------------------------------- the driver


class RestoreDriver:
    """Moves restore requests along; ``fetcher`` downloads what they need (None: nothing is
    downloaded, a request waits in "fetching")."""

    def __init__(self, ctx: Context, fetcher: Fetcher | None) -> None:
        self.ctx = ctx
        self.fetcher = fetcher
        self.on_ready = fetcher.enqueue if fetcher is not None else no_follow_up
        self._lock = asyncio.Lock()

    async def advance_all(self) -> None:
        async with self._lock:
            for row in await rq.active(self.ctx.catalog.pool, self.ctx.catalog):
                await self._advance(row)

    async def _advance(self, r: dict[str, Any]) -> None:
        ctx, rid = self.ctx, r["id"]
        rlog = log.bind(restore_id=rid, backup_id=r["backup_id"], snapshot_id=r["snapshot_id"])
        try:
            state = r["state"]
            if state == "requested":
                state = await self._request(r, rlog)
            if state == "retrieving":
                state = await self._retrieving(r, rlog)
            if state == "fetching":
                state = await self._fetching(r, rlog)
            if state == "restoring":
                await self._restoring(r, rlog)
        except BusyError as exc:
            rlog.info("restore.waiting_for_lock", reason=str(exc))
        except _Moved as exc:
            rlog.info("restore.moved_on", reason=str(exc))
        except asyncio.CancelledError:
            raise  # shutdown: the request stays where it is and resumes at the next start
        except Exception as exc:
            reason = describe_error(exc, "restore")
            if await rq.set_state(
                ctx.catalog.pool, ctx.catalog, rid, "failed", reason, expected=r["state"]
            ):
                rlog.error("restore.failed", error=reason)
            else:
                rlog.error("restore.failure_not_recorded", error=reason, state=r["state"])

    async def _set(self, r: dict[str, Any], state: str, rlog: Any, error: str | None = None) -> str:
        """Move the request along the restore table, from the state this driver saw."""
        if not await rq.set_state(
            self.ctx.catalog.pool, self.ctx.catalog, r["id"], state, error, expected=r["state"]
        ):
            raise _Moved(f"restore {r['id']} is no longer {r['state']}; {state} not recorded")
        if state != r["state"]:
            rlog.info("restore.state", state=state)
        r["state"], r["error"] = state, error
        return state

    async def _archives(self, r: dict[str, Any]) -> list[dict[str, Any]]:
        """The request's archives; RestoreFailed if the list is not the one it was made with
        (an empty list must never read as "everything is ready")."""
        rows = await rq.archives(self.ctx.catalog.pool, self.ctx.catalog, r["id"])
        expected = r.get("archive_count")
        dump_missing = (
            r["backup_id"] is not None
            and r["options"].get("database")
            and not any(a["kind"] == "database" for a in rows)
        )
        if (expected is not None and len(rows) != expected) or dump_missing:
            raise RestoreFailed(
                f"restore {r['id']} lists {len(rows)} of the "
                f"{expected if expected is not None else 'needed'} archives it was created "
                "with; its archive list is damaged — request the restore again; nothing was "
                "changed."
            )
        return rows

    async def _request(self, r: dict[str, Any], rlog: Any) -> str:
        if r["snapshot_id"] is not None:
            return await self._set(r, "restoring", rlog)
        await self._request_missing(r)
        return await self._set(r, "retrieving", rlog)

    async def _request_missing(self, r: dict[str, Any]) -> None:
        """Ask for every needed archive that is neither retrieved nor on its way."""
        ctx = self.ctx
        for a in await self._archives(r):
            await request_archive(
                ctx, a, r["options"].get("tier"), source="restore", on_ready=self.on_ready
            )

    async def _retrieving(self, r: dict[str, Any], rlog: Any) -> str:
        rows = await self._archives(r)
        if any(a["retrieval_status"] == "available" for a in rows):
            await self._request_missing(r)  # a job failed or a copy expired: ask again
            return "retrieving"
        if all(a["retrieval_status"] in ("ready", "local") for a in rows):
            return await self._set(r, "fetching", rlog)
        return "retrieving"

    async def _fetching(self, r: dict[str, Any], rlog: Any) -> str:
        rows = await self._archives(r)
        if any(a["retrieval_status"] in ("available", "pending") for a in rows):
            await self._request_missing(r)
            return await self._set(r, "retrieving", rlog)
        waiting = [a for a in rows if a["retrieval_status"] != "local"]
        fetcher = self.fetcher
        if fetcher is not None:
            for a in waiting:
                why = fetcher.gave_up(a["id"])
                if why:
                    fetcher.forget(a["id"])  # a later request starts counting afresh
                    raise RestoreFailed(
                        f"archive {a['id']} ({a['path'] or 'database dump'}) cannot be "
                        f"fetched: {why}; nothing was changed."
                    )
            # Something an operator can fix (a full disk) is shown on the request while it
            # waits; it continues by itself once the download succeeds.
            notes = [n for n in (fetcher.waiting(a["id"]) for a in waiting) if n]
            note = f"waiting: {notes[0]}" if notes else None
            if note != r["error"]:
                await self._set(r, "fetching", rlog, error=note)
                if note:
                    rlog.warning("restore.waiting", reason=note)
            for a in waiting:
                fetcher.enqueue(a["id"])
        if waiting:
            return "fetching"
        await self._verify(rows, rlog)
        return await self._set(r, "restoring", rlog)

    async def _verify(self, rows: list[dict[str, Any]], rlog: Any) -> None:
        """Every needed archive is on disk with the recorded SHA-256, checked again now."""
        for a in rows:
            path = Path(a["local_path"] or "")
            digest = await asyncio.to_thread(_sha256_file, path)
            if digest != a["sha256"]:
                # The local copy is bad: forget it, so a new request fetches it again.
                await asyncio.to_thread(path.unlink, missing_ok=True)
                await aq.compare_and_set(
                    self.ctx.catalog.pool,
                    self.ctx.catalog,
                    a,
                    "available",
                    status.CLEANUP,
                    local_path=None,
                    retrieval_error="local copy failed verification",
                )
                what = "is missing" if digest is None else f"has SHA-256 {digest}"
                raise RestoreFailed(
                    f"the fetched copy of archive {a['id']} ({a['path'] or 'database dump'}) "
                    f"{what}, not the recorded {a['sha256']}; nothing was changed — request "
                    "the restore again to fetch it anew."
                )
        rlog.info("restore.verified", archives=len(rows))

    async def _restoring(self, r: dict[str, Any], rlog: Any) -> None:
        ctx = self.ctx
        cfg = ctx.config
        pool, cat = ctx.catalog.pool, ctx.catalog
        async with operation_lock(cat, "restore"):
            r = await rq.get(pool, cat, r["id"]) or r
            if r["state"] != "restoring":
                raise _Moved(f"restore {r['id']} is {r['state']}, no longer restoring")
            steps, options = r["steps"], r["options"]
            rows = await self._archives(r)
            dump = await self._dump_path(r, rows)
            root = cfg.files.root
            if options["files"] and root is not None and not {"files", "database"} & set(steps):
                await _check_orphan_dir(cfg.files.orphan_dir)  # before the first change
            if options["database"] and cfg.restore.snapshot and "snapshot" not in steps:
                snap = await take_snapshot(ctx, reason=f"before restore {r['id']}")
                await rq.mark_step(pool, cat, r["id"], "snapshot", snap)
                rlog.info("restore.snapshot_taken", **snap)
            placement: FilePlacement | None = None
            if options["files"] and root is not None and "files" not in steps:
                placement = FilePlacement(
                    root,
                    cfg.files.orphan_dir,
                    compare=cfg.restore.compare,
                    record=steps.get("files_placed"),
                    save=lambda record: rq.mark_step(pool, cat, r["id"], "files_placed", record),
                )
            placed, info = None, None
            try:
                if placement is not None:
                    files = [ArchivedFile.from_row(a) for a in rows if a["kind"] == "file"]
                    placed = await placement.place(files)
                if options["database"] and "database" not in steps:
                    assert dump is not None
                    info = await restore_dump(
                        dump=dump,
                        conninfo=cfg.database.conninfo,
                        pg_restore=cfg.database.pg_restore,
                        pg_dump=cfg.database.pg_dump,
                        psql=cfg.database.psql,
                        catalog_schema=cfg.catalog.schema,
                        work_dir=cfg.state_dir / "work",
                        lock_timeout_seconds=cfg.restore.lock_timeout_seconds,
                        terminate_connections=cfg.restore.terminate_connections,
                    )
            except BaseException:
                # All or nothing: a failed files step or database step takes back exactly
                # what this request changed in the files root (see restore_files.py).
                if placement is not None:
                    await asyncio.shield(remove_placed(placement))
                raise
            if info is not None:
                await rq.mark_step(pool, cat, r["id"], "database", info)
                rlog.info("restore.database_restored", **info)
            if placed is not None:
                summary = placed.summary(cfg.files.orphan_dir)
                await rq.mark_step(pool, cat, r["id"], "files", summary)
                rlog.info(
                    "restore.files_restored", placed=summary["placed"], replaced=summary["replaced"]
                )
            if options["files"] and root is not None and "orphans" not in steps:
                try:
                    await self._move_orphans(r, root, rlog)
                except Exception as exc:
                    # The database is already restored: this is not a failed restore but an
                    # unfinished one. It stays "restoring" and is retried at the next tick.
                    reason = (
                        f"the database was restored but moving orphans failed "
                        f"({describe_error(exc, 'restore')}); fix files.orphan_dir — glacierd "
                        "retries by itself"
                    )
                    await self._set(r, "restoring", rlog, error=reason)
                    rlog.error("restore.orphans_failed", error=reason)
                    return
            await self._set(r, "restored", rlog)
            rlog.info("restore.completed")

    async def _move_orphans(self, r: dict[str, Any], root: Path, rlog: Any) -> None:
        ctx = self.ctx
        pool, cat = ctx.catalog.pool, ctx.catalog
        orphan_dir = ctx.config.files.orphan_dir
        assert orphan_dir is not None and r["backup_id"] is not None
        known = {
            a["path"]
            for a in await q.backup_archives(pool, cat, r["backup_id"])
            if a["kind"] == "file"
        }
        walked = await attachments.walk(root)
        moved = await move_orphans(
            root, orphan_dir, [f.path for f in walked.files if f.path not in known]
        )
        await rq.mark_step(
            pool, cat, r["id"], "orphans", {"moved": len(moved), "to": str(orphan_dir)}
        )
        if moved:
            rlog.warning("restore.orphans_moved", count=len(moved), to=str(orphan_dir))

    async def _dump_path(self, r: dict[str, Any], rows: list[dict[str, Any]]) -> Path | None:
        if r["snapshot_id"] is not None:
            snap = await rq.get_snapshot(self.ctx.catalog.pool, self.ctx.catalog, r["snapshot_id"])
            if snap is None:
                raise RestoreFailed(f"snapshot {r['snapshot_id']} is gone; nothing was changed.")
            digest = await asyncio.to_thread(_sha256_file, Path(snap["path"]))
            if digest != snap["sha256"]:
                raise RestoreFailed(
                    f"snapshot file {snap['path']} is missing or damaged; nothing was changed."
                )
            return Path(snap["path"])
        db = [a for a in rows if a["kind"] == "database"]
        return Path(db[0]["local_path"]) if db else None


async def _check_orphan_dir(orphan_dir: Path | None) -> None:
    """Before anything changes: orphans must have somewhere to go."""
    assert orphan_dir is not None

    def check() -> str | None:
        try:
            orphan_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return exc.strerror or str(exc)
        return None if os.access(orphan_dir, os.W_OK | os.X_OK) else "not writable"

    problem = await asyncio.to_thread(check)
    if problem:
        raise RestoreFailed(
            f"files.orphan_dir {orphan_dir} cannot be used ({problem}); create it, make it "
            "writable by the glacierd user (and list it in the unit's ReadWritePaths=), then "
            "request the restore again — nothing was changed."
        )


def _sha256_file(path: Path) -> str | None:
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                sha.update(chunk)
    except OSError:
        return None
    return sha.hexdigest()


# ---------------------------------------------------------------- views


async def restore_view(ctx: Context, restore_id: int) -> dict[str, Any]:
    pool, cat = ctx.catalog.pool, ctx.catalog
    r = await rq.get(pool, cat, restore_id)
    if r is None:
        raise NotFoundError(f"restore {restore_id} does not exist; GET /restores lists them.")
    rows = await rq.archives(pool, cat, restore_id)
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
            "items": [
                {
                    "id": a["id"],
                    "kind": a["kind"],
                    "path": a["path"],
                    "size": a["size"],
                    "status": a["retrieval_status"],
                    "expected_ready_at": _iso(a["retrieval_expected_at"])
                    if a["retrieval_status"] == "pending"
                    else None,
                    "error": a["retrieval_error"],
                }
                for a in rows[:1000]
            ],
        },
        "expected_ready_at": _iso(max(expected)) if expected else None,
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
        "created_at": _iso(r["created_at"]),
        "updated_at": _iso(r["updated_at"]),
        "finished_at": _iso(r["finished_at"]),
    }


async def list_restores(ctx: Context) -> list[dict[str, Any]]:
    return [restore_summary(r) for r in await rq.list_all(ctx.catalog.pool, ctx.catalog)]
