"""The fetch verb: download a ready archive, verify its SHA-256, mark it local.

The Fetcher runs downloads in the background as soon as an archive becomes ready, a few at
a time, each archive at most once at a time. A failed download is retried later with a
growing delay, logging why; what the failures mean for a restore waiting on the archive is
the Fetcher's verdict (``gave_up`` / ``waiting``):

- the stored object no longer exists, or the store denies access: waiting will not help,
  the restore fails with the store's reason;
- a download that never matches the recorded SHA-256 (3 times), or any other error 5 times
  in a row: the restore fails with the last reason;
- no space (or no permission) to write the download locally: an operator can fix that, so
  the restore waits, showing which directory is full, and continues once the download
  succeeds.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from glacierd.catalog import archives as archive_rows
from glacierd.context import Context
from glacierd.operations.errors import OperationError, describe_error
from glacierd.operations.retrieval import archive_ref, no_follow_up, record_store_answer
from glacierd.stores.base import ArchiveNotFoundError, NotRetrievedError, VerificationError
from glacierd.units import human_bytes

log = structlog.get_logger("glacierd.fetch")
_BACKOFF_START, _BACKOFF_MAX = 30.0, 3600.0
MAX_FAILURES = 5  # consecutive failures of one archive before a restore gives up on it
MAX_VERIFICATION_FAILURES = 3
# Error codes with which a store says "you may not": retrying does not change that.
_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "403", "AllAccessDisabled", "AccountProblem"}
)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class LocalFetchError(OperationError):
    """The download cannot be written on this machine (disk full, no permission): an
    operator can fix that; the download is retried meanwhile."""


def fetched_path(state_dir: Path, archive_id: int) -> Path:
    return state_dir / "fetched" / f"archive-{archive_id}"


async def fetch_archive(ctx: Context, archive_id: int) -> dict[str, Any] | None:
    """Download one ready archive; returns its row once local, None if it was not ready."""
    pool, cat = ctx.catalog.pool, ctx.catalog
    row = await archive_rows.get(pool, cat, archive_id)
    if row is None or row["retrieval_status"] != "ready":
        return row if row and row["retrieval_status"] == "local" else None
    dest = fetched_path(ctx.config.state_dir, archive_id)
    started = time.monotonic()
    flog = log.bind(archive_id=archive_id, key=row["store_key"], bytes=row["size"])
    flog.info("fetch.started")
    try:
        await ctx.store.get(archive_ref(row), dest)
    except NotRetrievedError:
        # The readable copy expired (or was never there): ask the store where it stands,
        # and apply its answer only if the row is still as it was read above.
        state = await ctx.store.retrieval_status(archive_ref(row))
        # (Ready again: the next poll hands it back; this very fetch is still running.)
        await record_store_answer(ctx, row, state, source="fetch", on_ready=no_follow_up)
        flog.warning("fetch.not_ready", status=state.status, reason=state.reason)
        return None
    except OSError as exc:
        local = await _local_problem(exc, dest, row)
        if local is None:
            raise
        raise LocalFetchError(local) from exc
    new = await archive_rows.mark_local(pool, cat, archive_id, str(dest))
    flog.info(
        "fetch.verified",
        sha256=row["sha256"],
        path=str(dest),
        duration_s=round(time.monotonic() - started, 3),
    )
    return new


async def _local_problem(exc: OSError, dest: Path, row: dict[str, Any]) -> str | None:
    """The operator's sentence if ``exc`` is about writing the download here, else None."""
    folder = dest.parent
    if exc.errno in _NO_SPACE:
        try:
            free = (await asyncio.to_thread(shutil.disk_usage, folder)).free
        except OSError:
            free = None
        room = f"; {human_bytes(free)} free there" if free is not None else ""
        return (
            f"no space left in {folder} for archive {row['id']} "
            f"({human_bytes(row['size'] or 0)}{room}): free space there (or move state_dir) "
            "— the download is retried by itself."
        )
    ours = exc.filename is not None and Path(str(exc.filename)).parent == folder
    if exc.errno == errno.EROFS or (isinstance(exc, PermissionError) and ours):
        return (
            f"cannot write the download of archive {row['id']} to {folder} "
            f"({exc.strerror or exc}): make it writable by the glacierd user (and list it in "
            "the unit's ReadWritePaths=) — the download is retried by itself."
        )
    return None


def _denied(exc: BaseException) -> bool:
    """True if the store refused access (an AWS AccessDenied anywhere in the cause chain)."""
    seen: BaseException | None = exc
    for _ in range(10):  # a cause chain is short; never follow a cycle for ever
        if seen is None:
            break
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _DENIED_CODES or status == "403":
                return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class _Failure:
    count: int  # consecutive failures
    retry_after: float  # monotonic time
    reason: str
    kind: str  # "permanent" | "local" | "verification" | "transient"


def _kind(exc: BaseException) -> str:
    if isinstance(exc, VerificationError):
        return "verification"
    if isinstance(exc, LocalFetchError):
        return "local"
    if isinstance(exc, ArchiveNotFoundError | PermissionError) or _denied(exc):
        # Gone from the store, or the store (or the local vault's file) refuses us.
        return "permanent"
    return "transient"


# Told an archive's id when its download ended in a way a waiting restore must hear of: it
# is local now, or it failed for good (or in a way an operator must fix). The daemon
# advances the restore requests (debounced: many downloads ending together, one advance).
OnFetched = Callable[[int], object]


class Fetcher:
    def __init__(self, ctx: Context, *, on_fetched: OnFetched, concurrency: int = 2) -> None:
        self.ctx = ctx
        self.on_fetched = on_fetched
        self.semaphore = asyncio.Semaphore(concurrency)
        self.in_flight: set[int] = set()
        self.failures: dict[int, _Failure] = {}
        # Downloads that arrived but did not match the recorded SHA-256: after a few, the
        # stored copy itself is damaged and waiting longer will not help (restores give up).
        self.verification_failures: dict[int, int] = {}
        self.closed = False

    def enqueue(self, archive_id: int) -> bool:
        """Start fetching unless it is already running or backing off after a failure."""
        if self.closed or archive_id in self.in_flight:
            return False
        failure = self.failures.get(archive_id)
        if failure and time.monotonic() < failure.retry_after:
            return False
        self.in_flight.add(archive_id)
        self.ctx.spawn(self._run(archive_id), name=f"fetch-{archive_id}")
        return True

    def gave_up(self, archive_id: int) -> str | None:
        """Why waiting for this archive will not help (a restore fails), or None."""
        if self.verification_failures.get(archive_id, 0) >= MAX_VERIFICATION_FAILURES:
            return (
                f"it was downloaded {MAX_VERIFICATION_FAILURES} times and never matched the "
                "SHA-256 recorded at backup time: the stored copy is damaged — restore another "
                "backup"
            )
        failure = self.failures.get(archive_id)
        if failure is None or failure.kind == "local":
            return None
        if failure.kind == "permanent":
            return failure.reason.rstrip(".")
        if failure.kind == "transient" and failure.count >= MAX_FAILURES:
            return (
                f"it failed to download {failure.count} times in a row; the last error: "
                f"{failure.reason.rstrip('.')}"
            )
        return None

    def forget(self, archive_id: int) -> None:
        """Start counting afresh (a restore gave up on it: the next one tries again)."""
        self.failures.pop(archive_id, None)
        self.verification_failures.pop(archive_id, None)

    def waiting(self, archive_id: int) -> str | None:
        """A problem on this machine that keeps the download from succeeding, or None."""
        failure = self.failures.get(archive_id)
        return failure.reason if failure and failure.kind == "local" else None

    async def _run(self, archive_id: int) -> None:
        try:
            async with self.semaphore:
                await fetch_archive(self.ctx, archive_id)
            self.failures.pop(archive_id, None)
            self.verification_failures.pop(archive_id, None)
            self.on_fetched(archive_id)  # a restore may be waiting for exactly this archive
        except Exception as exc:
            kind = _kind(exc)
            previous = self.failures.get(archive_id)
            count = (previous.count if previous else 0) + 1
            delay = min(_BACKOFF_MAX, _BACKOFF_START * 2 ** (count - 1))
            reason = describe_error(exc, "fetch")
            self.failures[archive_id] = _Failure(count, time.monotonic() + delay, reason, kind)
            await archive_rows.update_fields(
                self.ctx.catalog.pool, self.ctx.catalog, archive_id, retrieval_error=reason
            )
            if kind == "verification":
                self.verification_failures[archive_id] = (
                    self.verification_failures.get(archive_id, 0) + 1
                )
            log.error(
                "fetch.verification_failed" if kind == "verification" else "fetch.failed",
                archive_id=archive_id,
                error=reason,
                attempt=count,
                retry_in_s=delay,
                kind=kind,
                outcome="bad copy deleted; archive stays ready",
            )
            if kind != "transient" or count >= MAX_FAILURES:
                self.on_fetched(archive_id)  # a restore may fail on, or report, this
        finally:
            self.in_flight.discard(archive_id)
