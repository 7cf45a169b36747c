"""The restore driver: moves each active request as far as it can now.

    requested → retrieving → fetching → restoring → restored   (or failed, with the reason)

Each active state has a step (``RestoreDriver._steps``); a step does what it can now and
returns the state the request is in afterwards. The legal moves, with the reason for each,
are catalog/status.py's ``RESTORE_TRANSITIONS``, which the catalog enforces on every
change; a request that another driver moved on is left alone (``RequestMoved``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from glacierd.catalog import archives as archive_rows
from glacierd.catalog import restores as restore_rows
from glacierd.catalog import status
from glacierd.catalog.locks import BusyError
from glacierd.context import Context
from glacierd.operations.errors import describe_error
from glacierd.operations.fetch import Fetcher
from glacierd.operations.restore.errors import RequestMoved, RestoreFailed
from glacierd.operations.restore.restoring import RestoringStep
from glacierd.operations.retrieval import no_follow_up, request_archive
from glacierd.sources.attachments import sha256_of

log = structlog.get_logger("glacierd.restore")

Step = Callable[[dict[str, Any], Any], Awaitable[str | None]]


class RestoreDriver:
    """Moves restore requests along; ``fetcher`` downloads what they need (None: nothing is
    downloaded, a request waits in "fetching")."""

    def __init__(self, ctx: Context, fetcher: Fetcher | None) -> None:
        self.ctx = ctx
        self.fetcher = fetcher
        self.on_ready = fetcher.enqueue if fetcher is not None else no_follow_up
        self._lock = asyncio.Lock()
        # In the order a request goes through them. One advance runs the steps from the
        # request's state onwards, never back to an earlier one: a request sent back to
        # "retrieving" (a copy expired before it was downloaded) goes on at the next tick.
        self._steps: tuple[tuple[str, Step], ...] = (
            ("requested", self._request),
            ("retrieving", self._retrieving),
            ("fetching", self._fetching),
            ("restoring", self._restoring),
        )

    async def advance_all(self) -> None:
        async with self._lock:
            for row in await restore_rows.active(self.ctx.catalog.pool, self.ctx.catalog):
                await self._advance(row)

    async def _advance(self, r: dict[str, Any]) -> None:
        ctx, rid = self.ctx, r["id"]
        rlog = log.bind(restore_id=rid, backup_id=r["backup_id"], snapshot_id=r["snapshot_id"])
        try:
            state: str | None = r["state"]
            for name, step in self._steps:
                if state == name:
                    state = await step(r, rlog)
        except BusyError as exc:
            rlog.info("restore.waiting_for_lock", reason=str(exc))
        except RequestMoved as exc:
            rlog.info("restore.moved_on", reason=str(exc))
        except asyncio.CancelledError:
            raise  # shutdown: the request stays where it is and resumes at the next start
        except Exception as exc:
            reason = describe_error(exc, "restore")
            if await restore_rows.set_state(
                ctx.catalog.pool, ctx.catalog, rid, "failed", reason, expected=r["state"]
            ):
                rlog.error("restore.failed", error=reason)
            else:
                rlog.error("restore.failure_not_recorded", error=reason, state=r["state"])

    async def _set(self, r: dict[str, Any], state: str, rlog: Any, error: str | None = None) -> str:
        """Move the request along the restore table, from the state this driver saw."""
        if not await restore_rows.set_state(
            self.ctx.catalog.pool, self.ctx.catalog, r["id"], state, error, expected=r["state"]
        ):
            raise RequestMoved(f"restore {r['id']} is no longer {r['state']}; {state} not recorded")
        if state != r["state"]:
            rlog.info("restore.state", state=state)
        r["state"], r["error"] = state, error
        return state

    async def _archives(self, r: dict[str, Any]) -> list[dict[str, Any]]:
        """The request's archives; RestoreFailed if the list is not the one it was made with
        (an empty list must never read as "everything is ready")."""
        rows = await restore_rows.archives(self.ctx.catalog.pool, self.ctx.catalog, r["id"])
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
            digest = await asyncio.to_thread(sha256_of, path)
            if digest != a["sha256"]:
                # The local copy is bad: forget it, so a new request fetches it again.
                await asyncio.to_thread(path.unlink, missing_ok=True)
                await archive_rows.compare_and_set(
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
        """The one step that changes anything (restoring.py)."""
        await RestoringStep(self.ctx, r, rlog, archives=self._archives, set_state=self._set).run()
