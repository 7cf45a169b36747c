"""What a restore records about the files it places: enough to recognise each one later
(after a restart too) by its identity, and to take it back exactly."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glacierd.sources.attachments import catalog_path, filesystem_path


@dataclass(frozen=True)
class ArchivedFile:
    """A verified local copy and what the catalog recorded about the file."""

    path: str  # catalog path
    source: Path
    size: int | None
    sha256: str | None
    mode: int | None = None
    mtime_ns: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ArchivedFile:
        return cls(
            path=row["path"],
            source=Path(row["local_path"]),
            size=row["size"],
            sha256=row["sha256"],
            mode=row.get("mode"),
            mtime_ns=row.get("mtime_ns"),
        )


Identity = tuple[int, int, int, int]  # device, inode, size, mtime_ns


def stat_identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def identity_of(path: Path) -> Identity | None:
    try:
        return stat_identity(os.lstat(path))
    except OSError:
        return None


@dataclass
class Placed:
    """One file this restore puts (or put) in place."""

    path: str
    identity: Identity
    moved_to: str | None = None  # where the file it replaces went (orphan folder)

    def to_json(self) -> dict[str, Any]:
        # Escaped like catalog paths: an odd name must fit in the catalog's jsonb.
        moved = catalog_path(self.moved_to) if self.moved_to else None
        return {"identity": list(self.identity), "moved_to": moved}

    @classmethod
    def from_json(cls, path: str, value: Any) -> Placed | None:
        try:
            dev, ino, size, mtime = (int(x) for x in value["identity"])
            moved = value.get("moved_to")
            return cls(path, (dev, ino, size, mtime), filesystem_path(moved) if moved else None)
        except (KeyError, TypeError, ValueError):
            return None


@dataclass
class PlacementResult:
    placed: list[str] = field(default_factory=list)  # was missing
    replaced: list[str] = field(default_factory=list)  # differed: moved aside, replaced
    unchanged: list[str] = field(default_factory=list)  # already matched the archive
    taken: list[str] = field(default_factory=list)  # appeared meanwhile: left as it is

    def add(self, outcome: str, path: str) -> None:
        {
            "placed": self.placed,
            "replaced": self.replaced,
            "unchanged": self.unchanged,
            "taken": self.taken,
        }[outcome].append(path)

    def summary(self, orphan_dir: Path | None) -> dict[str, Any]:
        return {
            "placed": len(self.placed),
            "replaced": len(self.replaced),
            "replaced_paths": self.replaced[:1000],
            "replaced_moved_to": str(orphan_dir) if self.replaced else None,
        }
