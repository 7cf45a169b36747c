"""The orphan folder (files.orphan_dir): where a restore moves files aside instead of
deleting them. Whether it can be used is checked in one place, by ``glacierd doctor``
before anything runs and by a restore before its first change."""

from __future__ import annotations

import os
from pathlib import Path

from glacierd.errors import GlacierdError


class OrphanDirProblem(GlacierdError):
    """The orphan folder cannot be used: ``detail`` says why, ``fix`` what to do."""


def existing_ancestor(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def orphan_dir_state(orphan: Path) -> str:
    """Blocking, and changes nothing: "writable" (it exists and glacierd may write there)
    or "creatable" (a restore can create it); OrphanDirProblem otherwise."""
    if orphan.exists():
        if not orphan.is_dir():
            raise OrphanDirProblem(
                f"files.orphan_dir {orphan} exists and is not a directory",
                "remove it or point files.orphan_dir elsewhere",
            )
        if not os.access(orphan, os.W_OK | os.X_OK):
            raise OrphanDirProblem(
                f"files.orphan_dir {orphan} is not writable, so a restore cannot move orphans "
                "aside",
                f"'chown glacierd: {orphan}' or point files.orphan_dir elsewhere",
            )
        return "writable"
    parent = existing_ancestor(orphan)
    if not parent.is_dir():
        raise OrphanDirProblem(
            f"files.orphan_dir {orphan} cannot be created: {parent} is not a directory",
            "point files.orphan_dir at a directory path beside files.root",
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OrphanDirProblem(
            f"files.orphan_dir {orphan} does not exist and cannot be created ({parent} is "
            "not writable)",
            f"create it and 'chown glacierd: {orphan}', or point files.orphan_dir elsewhere",
        )
    return "creatable"
