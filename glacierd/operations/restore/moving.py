"""Moving files aside — to the orphan folder — without ever replacing what is there.

Files the restored backup does not reference (orphans) keep their relative paths under the
orphan folder; a file that a restore replaces goes there too (placement.py).
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from pathlib import Path, PurePosixPath

from glacierd.operations.restore.paths import errors_as_text, safe_destination
from glacierd.pipeline.files import discard, partial_path
from glacierd.sources.attachments import filesystem_path


def free_name(target: Path, taken: set[str] | None = None) -> Path:
    def used(p: Path) -> bool:
        return os.path.lexists(p) or (taken is not None and str(p) in taken)

    if not used(target):
        return target
    n = 1
    while used(target.with_name(f"{target.name}.{n}")):
        n += 1
    return target.with_name(f"{target.name}.{n}")


def move_aside(source: Path, target: Path) -> None:
    """Move a file (or a folder) to ``target`` without ever replacing what is there: a hard
    link then an unlink on one filesystem, a complete copy first across filesystems — the
    source goes only once the target is complete. Raises FileExistsError if ``target``
    exists."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.isdir(source) and not os.path.islink(source):
        _move_folder(source, target)
        return
    try:
        os.link(source, target, follow_symlinks=False)  # create-only: never replaces
    except OSError as exc:
        if exc.errno == errno.EXDEV:  # the orphan folder is on another filesystem
            tmp = partial_path(target)
            try:
                shutil.copy2(source, tmp, follow_symlinks=False)
                os.link(tmp, target, follow_symlinks=False)
            finally:
                discard(tmp)
        elif exc.errno in (errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.EMLINK):
            # No hard link here (fs.protected_hardlinks forbids linking another user's
            # file; some filesystems have none): a rename, after checking the target.
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
            os.rename(source, target)
            return
        else:
            raise
    os.unlink(source)


def _move_folder(source: Path, target: Path) -> None:
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "exists", str(target))
    try:
        os.rename(source, target)  # same filesystem: atomic
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copytree(source, target, symlinks=True)
        shutil.rmtree(source)


def _move_one(source: Path, orphan_root: Path, relpath: str) -> Path:
    target = free_name(orphan_root.joinpath(*PurePosixPath(filesystem_path(relpath)).parts))
    move_aside(source, target)
    return target


async def move_orphans(root: Path, orphan_root: Path, relpaths: list[str]) -> list[str]:
    """Move files the restored backup does not reference to ``orphan_root``, keeping their
    relative paths; an earlier orphan of the same name gets a ``.1``, ``.2``… sibling."""
    moved = []
    with errors_as_text():
        for relpath in relpaths:
            if await asyncio.to_thread(_move_if_present, root, orphan_root, relpath):
                moved.append(relpath)
    return moved


def _move_if_present(root: Path, orphan_root: Path, relpath: str) -> bool:
    source = safe_destination(root, relpath)
    if not os.path.lexists(source):
        return False
    _move_one(source, orphan_root, relpath)
    return True
