"""The "restoring" step, the only one that changes anything, under the operation lock
shared with backups:

1. a safety snapshot of the current database (unless restore.snapshot = false);
2. files are made to match the backup (placement.py, which records what it changes);
3. the database is restored in one transaction (sources/database_restore.py);
4. files the restored backup does not reference are moved to the orphan folder.

If step 2 or 3 fails, step 2 is taken back exactly, so the request ends failed with the
database and the files as they were. What must happen once is recorded in the request's
``steps`` before the step that depends on it, so a restart resumes where it stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from glacierd.catalog import backups as backup_rows
from glacierd.catalog import restores as restore_rows
from glacierd.catalog.locks import operation_lock
from glacierd.context import Context
from glacierd.operations.errors import describe_error
from glacierd.operations.restore.errors import RequestMoved, RestoreFailed
from glacierd.operations.restore.moving import move_orphans
from glacierd.operations.restore.placed import ArchivedFile, PlacementResult
from glacierd.operations.restore.placement import FilePlacement, remove_placed
from glacierd.operations.restore.snapshot import take_snapshot
from glacierd.sources import attachments
from glacierd.sources.attachments import sha256_of
from glacierd.sources.database_restore import restore_dump
from glacierd.sources.orphan_dir import OrphanDirProblem, orphan_dir_state

Archives = Callable[[dict[str, Any]], Awaitable[list[dict[str, Any]]]]
SetState = Callable[..., Awaitable[str]]


class RestoringStep:
    """One run of the step for request ``r`` (the driver's row); ``archives`` gives the
    request's archives (checked complete), ``set_state`` moves the request on."""

    def __init__(
        self,
        ctx: Context,
        r: dict[str, Any],
        rlog: Any,
        *,
        archives: Archives,
        set_state: SetState,
    ) -> None:
        self.ctx, self.r, self.rlog = ctx, r, rlog
        self.archives, self.set_state = archives, set_state
        self.pool, self.cat = ctx.catalog.pool, ctx.catalog

    async def run(self) -> None:
        cfg = self.ctx.config
        async with operation_lock(self.cat, "restore"):
            r = self.r = await restore_rows.get(self.pool, self.cat, self.r["id"]) or self.r
            if r["state"] != "restoring":
                raise RequestMoved(f"restore {r['id']} is {r['state']}, no longer restoring")
            steps, options = r["steps"], r["options"]
            rows = await self.archives(r)
            dump = await self._dump_path(rows)
            with_files = options["files"] and cfg.files.root is not None
            if with_files and not {"files", "database"} & set(steps):
                await _check_orphan_dir(cfg.files.orphan_dir)  # before the first change
            if options["database"] and cfg.restore.snapshot and "snapshot" not in steps:
                snap = await take_snapshot(self.ctx, reason=f"before restore {r['id']}")
                await restore_rows.mark_step(self.pool, self.cat, r["id"], "snapshot", snap)
                self.rlog.info("restore.snapshot_taken", **snap)
            await self._files_and_database(rows, dump)
            if with_files and "orphans" not in steps and not await self._orphans():
                return  # noted on the request; retried at the next tick
            await self.set_state(r, "restored", self.rlog)
            self.rlog.info("restore.completed")

    async def _files_and_database(self, rows: list[dict[str, Any]], dump: Path | None) -> None:
        """Steps 2 and 3, all or nothing: a failure of either takes back exactly what this
        request changed in the files root."""
        cfg, r = self.ctx.config, self.r
        steps, options = r["steps"], r["options"]
        placement: FilePlacement | None = None
        if options["files"] and cfg.files.root is not None and "files" not in steps:
            placement = FilePlacement(
                cfg.files.root,
                cfg.files.orphan_dir,
                compare=cfg.restore.compare,
                record=steps.get("files_placed"),
                save=lambda record: restore_rows.mark_step(
                    self.pool, self.cat, r["id"], "files_placed", record
                ),
            )
        placed: PlacementResult | None = None
        info: dict[str, int] | None = None
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
                    psql=cfg.database.psql,
                    catalog_schema=cfg.catalog.schema,
                    work_dir=cfg.state_dir / "work",
                    lock_timeout_seconds=cfg.restore.lock_timeout_seconds,
                    terminate_connections=cfg.restore.terminate_connections,
                )
        except BaseException:
            if placement is not None:
                await asyncio.shield(remove_placed(placement))
            raise
        if info is not None:
            await restore_rows.mark_step(self.pool, self.cat, r["id"], "database", info)
            self.rlog.info("restore.database_restored", **info)
        if placed is not None:
            summary = placed.summary(cfg.files.orphan_dir)
            await restore_rows.mark_step(self.pool, self.cat, r["id"], "files", summary)
            self.rlog.info(
                "restore.files_restored", placed=summary["placed"], replaced=summary["replaced"]
            )

    async def _orphans(self) -> bool:
        """Step 4; False if it failed. The database is already restored then: this is not a
        failed restore but an unfinished one, which stays "restoring" with the reason."""
        try:
            await self._move_orphans()
        except Exception as exc:
            reason = (
                f"the database was restored but moving orphans failed "
                f"({describe_error(exc, 'restore')}); fix files.orphan_dir — glacierd "
                "retries by itself"
            )
            await self.set_state(self.r, "restoring", self.rlog, error=reason)
            self.rlog.error("restore.orphans_failed", error=reason)
            return False
        return True

    async def _move_orphans(self) -> None:
        r, files = self.r, self.ctx.config.files
        orphan_dir, root = files.orphan_dir, files.root
        assert orphan_dir is not None and root is not None and r["backup_id"] is not None
        known = {
            a["path"]
            for a in await backup_rows.backup_archives(self.pool, self.cat, r["backup_id"])
            if a["kind"] == "file"
        }
        walked = await attachments.walk(root)
        moved = await move_orphans(
            root, orphan_dir, [f.path for f in walked.files if f.path not in known]
        )
        await restore_rows.mark_step(
            self.pool, self.cat, r["id"], "orphans", {"moved": len(moved), "to": str(orphan_dir)}
        )
        if moved:
            self.rlog.warning("restore.orphans_moved", count=len(moved), to=str(orphan_dir))

    async def _dump_path(self, rows: list[dict[str, Any]]) -> Path | None:
        """The dump to restore: the snapshot's (verified again here), else the fetched one."""
        snapshot_id = self.r["snapshot_id"]
        if snapshot_id is not None:
            snap = await restore_rows.get_snapshot(self.pool, self.cat, snapshot_id)
            if snap is None:
                raise RestoreFailed(f"snapshot {snapshot_id} is gone; nothing was changed.")
            digest = await asyncio.to_thread(sha256_of, Path(snap["path"]))
            if digest != snap["sha256"]:
                raise RestoreFailed(
                    f"snapshot file {snap['path']} is missing or damaged; nothing was changed."
                )
            return Path(snap["path"])
        db = [a for a in rows if a["kind"] == "database"]
        return Path(db[0]["local_path"]) if db else None


async def _check_orphan_dir(orphan_dir: Path | None) -> None:
    """Before anything changes: orphans must have somewhere to go (the same check as
    ``glacierd doctor``'s); the folder is created if it can be."""
    assert orphan_dir is not None

    def check() -> None:
        orphan_dir_state(orphan_dir)
        try:
            orphan_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OrphanDirProblem(
                f"files.orphan_dir {orphan_dir} cannot be created ({exc.strerror or exc})",
                "create it and make it writable by the glacierd user (and list it in the "
                "unit's ReadWritePaths=)",
            ) from None

    try:
        await asyncio.to_thread(check)
    except OrphanDirProblem as exc:
        raise RestoreFailed(
            f"{exc.detail}; {exc.fix}, then request the restore again — nothing was changed."
        ) from None
