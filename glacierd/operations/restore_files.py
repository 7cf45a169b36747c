"""Putting attached files back and moving orphans aside — never overwriting, never deleting.

Paths come from the catalog, which could be damaged or forged; each one is checked before
use: absolute paths, ``..`` segments and paths that pass through a symlink leading outside
files.root are refused.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from glacierd.operations.errors import OperationError
from glacierd.pipeline.files import read_chunks, write_atomically


class UnsafePathError(OperationError):
    pass


def safe_destination(root: Path, relpath: str) -> Path:
    """The absolute path for ``relpath`` under ``root``, or UnsafePathError saying why."""
    pure = PurePosixPath(relpath)
    if not relpath or "\0" in relpath:
        raise UnsafePathError(f"catalog path {relpath!r} is empty or contains a NUL byte")
    if pure.is_absolute():
        raise UnsafePathError(f"catalog path {relpath!r} is absolute; refusing to write there")
    if ".." in pure.parts:
        raise UnsafePathError(f"catalog path {relpath!r} contains '..'; refusing to leave the root")
    dest = root.joinpath(*pure.parts)
    real_root = root.resolve()
    # Resolving the parent follows any symlinked folder on the way: it must stay inside.
    if not dest.parent.resolve().is_relative_to(real_root):
        raise UnsafePathError(
            f"catalog path {relpath!r} passes through a symlink leading outside {root}; "
            "refusing to write there"
        )
    return dest


def unsafe_paths(root: Path, relpaths: list[str]) -> list[str]:
    """Blocking (it resolves paths): why each unsafe path is refused, in order."""
    refused = []
    for relpath in relpaths:
        try:
            safe_destination(root, relpath)
        except UnsafePathError as exc:
            refused.append(str(exc))
    return refused


@dataclass
class PlacedFiles:
    placed: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)  # already there: left untouched


async def place_files(root: Path, files: list[tuple[str, Path]]) -> PlacedFiles:
    """Copy fetched files to their paths, each through a temporary name and a link.

    A path that already exists is left alone (``existing``): files are never overwritten.
    """
    result = PlacedFiles()
    for relpath, source in files:
        dest = await asyncio.to_thread(safe_destination, root, relpath)
        if await asyncio.to_thread(os.path.lexists, dest):
            result.existing.append(relpath)
            continue
        try:
            await write_atomically(dest, read_chunks(source), overwrite=False)
        except FileExistsError:
            result.existing.append(relpath)  # appeared meanwhile: still not overwritten
            continue
        result.placed.append(relpath)
    return result


async def remove_placed(root: Path, relpaths: list[str]) -> None:
    """Undo ``place_files`` (the database restore failed): remove only what it created."""
    for relpath in relpaths:
        await asyncio.to_thread((root / relpath).unlink, missing_ok=True)


def _free_name(target: Path) -> Path:
    if not os.path.lexists(target):
        return target
    n = 1
    while os.path.lexists(target.with_name(f"{target.name}.{n}")):
        n += 1
    return target.with_name(f"{target.name}.{n}")


def _move_one(source: Path, orphan_root: Path, relpath: str) -> Path:
    target = _free_name(orphan_root.joinpath(*PurePosixPath(relpath).parts))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target)  # same filesystem: atomic
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: the orphan folder is on another filesystem
            raise
        shutil.copy2(source, target)
        os.unlink(source)
    return target


async def move_orphans(root: Path, orphan_root: Path, relpaths: list[str]) -> list[str]:
    """Move files the restored backup does not reference to ``orphan_root``, keeping their
    relative paths; an earlier orphan of the same name gets a ``.1``, ``.2``… sibling."""
    moved = []
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
