"""Start-up sweep of state_dir: what a crash or a full disk left half-written.

Temporary files (``*.glacierd-partial``) of fetched copies and safety snapshots, and the
restore's work files, are never worth keeping: a fetch or a snapshot is simply made again.
Left in place they hold disk space — a partial snapshot the size of the database can make
every later restore fail with "No space left on device". Complete fetched copies and
snapshots are kept (the catalog knows them). The local vault, which may live in state_dir
too, is swept by its store under the operation lock, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import structlog

from glacierd.pipeline.files import sweep_partials

log = structlog.get_logger("glacierd.recovery")

SWEPT_FOR_PARTIALS = ("fetched", "snapshots")
WORK = "work"  # only ever holds files of a restore in progress


def _sweep(state_dir: Path) -> list[Path]:
    removed: list[Path] = []
    for name in SWEPT_FOR_PARTIALS:
        removed += sweep_partials(state_dir / name)
    work = state_dir / WORK
    if work.is_dir():
        for entry in work.iterdir():
            if entry.is_file() or entry.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry)
                removed.append(entry)
    return removed


async def sweep_state_dir(state_dir: Path) -> int:
    """Remove leftovers before any work starts (``glacierd serve`` only); returns the count."""
    removed = await asyncio.to_thread(_sweep, state_dir)
    if removed:
        log.warning(
            "recovery.state_swept",
            count=len(removed),
            paths=[str(p) for p in removed[:20]],
            outcome="temporary files of interrupted work removed",
        )
    return len(removed)
