"""The attached-files source: one recursive walk of files.root.

A file's identity is its path relative to the root (ActiveStorage nests folders, refile
does not). Uploads are immutable by convention, so a known path with the same size is the
same file; see ``operations/backup.py`` for the set difference against the catalog.

Documented outcomes for awkward entries (each gets one log line naming the path):

- a symlink to a file inside the root is archived under the link's own path;
- a symlink leading outside the root, a symlink to a directory, or a dangling symlink is
  skipped (``outside-root`` / ``directory-symlink`` / ``dangling``): following them could
  archive data that is not the application's, or loop forever;
- an unreadable file or directory is skipped (``unreadable``); the backup still completes
  and counts it in ``skipped_files`` so the operator sees it;
- a file that vanishes between the walk and its upload is skipped (``vanished``) and gets
  no archive row;
- a ``*.glacierd-partial`` file (left by a restore interrupted while writing it) is skipped
  (``partial``); the resumed restore writes the file again.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from glacierd.pipeline.files import PARTIAL_SUFFIX


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the root, with "/" separators
    size: int


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str  # outside-root | directory-symlink | dangling | unreadable | special | vanished
    detail: str = ""


@dataclass
class WalkResult:
    files: list[FileEntry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _walk(root: Path) -> WalkResult:
    result = WalkResult()
    real_root = root.resolve()
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            rel = directory.relative_to(root).as_posix() or "."
            result.skipped.append(Skipped(rel, "unreadable", exc.strerror or str(exc)))
            continue
        for entry in entries:
            full = Path(entry.path)
            rel = full.relative_to(root).as_posix()
            if entry.name.endswith(PARTIAL_SUFFIX):
                # A file a restore was putting back when it was interrupted: not an upload.
                result.skipped.append(Skipped(rel, "partial", "an interrupted restore's file"))
                continue
            try:
                if entry.is_symlink():
                    target = full.resolve()
                    if not target.exists():
                        result.skipped.append(Skipped(rel, "dangling", str(os.readlink(full))))
                        continue
                    if not target.is_relative_to(real_root):
                        result.skipped.append(Skipped(rel, "outside-root", str(target)))
                        continue
                    if target.is_dir():
                        result.skipped.append(Skipped(rel, "directory-symlink", str(target)))
                        continue
                st = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                result.skipped.append(Skipped(rel, "vanished"))
                continue
            except OSError as exc:
                result.skipped.append(Skipped(rel, "unreadable", exc.strerror or str(exc)))
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(full)
            elif stat.S_ISREG(st.st_mode):
                if not os.access(full, os.R_OK):
                    result.skipped.append(Skipped(rel, "unreadable", "permission denied"))
                    continue
                result.files.append(FileEntry(rel, st.st_size))
            else:
                result.skipped.append(Skipped(rel, "special", "not a regular file"))
    result.files.sort(key=lambda f: f.path)
    return result


async def walk(root: Path) -> WalkResult:
    """Walk ``root`` in a worker thread (a large tree must not stall the event loop)."""
    return await asyncio.to_thread(_walk, root)
