"""Checks of this machine: the configuration and its log file, free space for fetched
archives, the attached files and the orphan directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

from glacierd.doctor.model import CheckResult, Doctor, Problem
from glacierd.logs import log_file_problem
from glacierd.sources.orphan_dir import OrphanDirProblem, existing_ancestor, orphan_dir_state
from glacierd.units import human_bytes

GiB = 1024**3
#: Free space kept in reserve beyond the newest database dump (or alone, without one).
DISK_HEADROOM = GiB


async def check_configuration(d: Doctor) -> CheckResult:
    cfg = d.config
    where = str(cfg.path) if cfg.path else "(built in code)"
    if cfg.logging.file is not None:
        problem = await asyncio.to_thread(log_file_problem, cfg.logging.file)
        if problem is not None:
            raise problem
    detail = (
        f"{where} is valid (store {cfg.store.name!r} of type {cfg.store.type}, "
        f"state_dir {cfg.state_dir})"
    )
    if cfg.sns.cert_url_override:
        detail += (
            f"; WARNING: sns.cert_url_override sends SNS certificate downloads to "
            f"{cfg.sns.cert_url_override} — a setting for tests only, remove it in production"
        )
    return CheckResult("configuration", True, detail)


async def check_disk_space(d: Doctor) -> CheckResult:
    state_dir = d.config.state_dir
    base = await asyncio.to_thread(existing_ancestor, state_dir)
    if base == state_dir and not await asyncio.to_thread(base.is_dir):
        raise Problem(f"state_dir {state_dir} is not a directory", "point state_dir at a directory")
    if not await asyncio.to_thread(os.access, base, os.W_OK | os.X_OK):
        verb = "writable" if base == state_dir else f"creatable ({base} is not writable)"
        raise Problem(
            f"state_dir {state_dir} is not {verb}",
            f"create it and 'chown glacierd: {state_dir}', or change state_dir",
        )
    usage = await asyncio.to_thread(shutil.disk_usage, base)
    if d.last_dump_size is not None:
        need = d.last_dump_size + DISK_HEADROOM
        why = (
            f"the newest database dump (backup {d.last_dump_backup}, "
            f"{human_bytes(d.last_dump_size)}) + {human_bytes(DISK_HEADROOM)}"
        )
    else:
        need = DISK_HEADROOM
        source = "no database dump recorded yet" if d.passed("catalog") else "catalog unreachable"
        why = f"{human_bytes(DISK_HEADROOM)} ({source})"
    detail = f"{human_bytes(usage.free)} free in {state_dir}; a retrieval needs {why}"
    if usage.free < need:
        raise Problem(
            detail.replace("; a retrieval needs", ", less than"),
            f"free {human_bytes(need - usage.free)} on that filesystem or move state_dir to a "
            "larger one, or a fetched dump will not fit",
        )
    return CheckResult("disk space", True, detail)


def _check_files(root: Path | None, orphan: Path | None) -> str:
    """Blocking: the files root is readable and the orphan directory writable or creatable."""
    if root is None:
        return "no files.root configured; only the database is backed up"
    if not root.is_dir():
        raise Problem(f"files.root {root} is not a directory", "create it or fix files.root")
    if not os.access(root, os.R_OK | os.X_OK):
        raise Problem(
            f"files.root {root} is not readable by this user",
            f"give the glacierd user read access (for example 'setfacl -R -m u:glacierd:rX "
            f"{root}')",
        )
    try:
        with os.scandir(root) as entries:
            count = sum(1 for _ in zip(entries, range(1000), strict=False))
    except OSError as exc:
        raise Problem(
            f"files.root {root} cannot be listed ({exc.strerror})",
            "give the glacierd user read access to it",
        ) from None
    shown = f"{count}{'+' if count == 1000 else ''} entries at the top"
    if orphan is None:
        return f"{root} is readable ({shown})"
    try:
        state = orphan_dir_state(orphan)  # the same check a restore makes
    except OrphanDirProblem as exc:
        raise Problem(exc.detail, exc.fix) from None
    note = ""
    with contextlib.suppress(OSError):
        if existing_ancestor(orphan).stat().st_dev != root.stat().st_dev:
            note = " (on another filesystem than files.root: orphans are copied, not renamed)"
    return f"{root} is readable ({shown}); orphan directory {orphan} is {state}{note}"


async def check_files(d: Doctor) -> CheckResult:
    cfg = d.config.files
    return CheckResult(
        "files", True, await asyncio.to_thread(_check_files, cfg.root, cfg.orphan_dir)
    )
