"""Putting attached files back — never deleting anything.

**Placing files** (``FilePlacement``) makes every file the restore needs match its archive:

- a missing file is copied to its path;
- a file that differs (by size, or by SHA-256 with ``restore.compare = "sha256"``) is moved
  to the orphan folder — never deleted — and replaced by the archived version;
- a file that matches is left alone.

It works in three passes so that a failure anywhere can be taken back exactly:

1. each archived copy is written to a temporary sibling of its destination
   (``.<name>.glacierd-partial``) with its recorded mode and modification time, its parent's
   group, and missing folders are created like their parent (mode and group);
2. what is about to change — each temporary file's identity (device, inode, size, mtime),
   where a replaced file will be moved, the folders created — is saved in the restore's
   ``steps`` (the caller's ``save``), before anything visible changes;
3. replaced files are moved aside and every temporary file is linked into place (a link,
   not a rename: a file the application created there meanwhile is never overwritten).

``undo`` removes only what this restore placed — a file is removed only if it is still the
very file we wrote (same identity), never one the application wrote meanwhile — puts the
replaced files back from the orphan folder and removes the folders it created if they are
empty. After a restart the saved record is enough: a resumed restore recognises the files it
already placed by their identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from glacierd.operations.restore.moving import free_name, move_aside
from glacierd.operations.restore.paths import UnsafePathError, errors_as_text, safe_destination
from glacierd.operations.restore.placed import (
    ArchivedFile,
    Identity,
    Placed,
    PlacementResult,
    identity_of,
    stat_identity,
)
from glacierd.pipeline.files import CHUNK, create_private, discard, naming, partial_path, write_all
from glacierd.sources.attachments import catalog_path, file_state, filesystem_path

log = structlog.get_logger("glacierd.restore")

Save = Callable[[dict[str, Any]], Awaitable[None]]


class FilePlacement:
    """Places files for one restore, remembers what it did, and can take it back."""

    def __init__(
        self,
        root: Path,
        orphan_dir: Path | None,
        *,
        compare: str = "size",
        record: Any = None,
        save: Save | None = None,
    ) -> None:
        self.root = root
        self.orphan_dir = orphan_dir
        self.compare = compare
        self.save = save
        self.entries: dict[str, Placed] = {}
        self.dirs: list[str] = []  # folders this restore created (relative, os spelling)
        self.temps: dict[str, Path] = {}  # temporary files written and not yet linked
        if isinstance(record, dict):  # what an earlier run of this restore saved
            for path, value in (record.get("files") or {}).items():
                entry = Placed.from_json(path, value)
                if entry is not None:
                    self.entries[path] = entry
            self.dirs = [filesystem_path(str(d)) for d in record.get("dirs") or []]

    def record(self) -> dict[str, Any]:
        return {
            "files": {p: e.to_json() for p, e in self.entries.items()},
            "dirs": [catalog_path(d) for d in self.dirs],
        }

    async def place(self, files: list[ArchivedFile]) -> PlacementResult:
        with errors_as_text():
            return await self._place(files)

    async def _place(self, files: list[ArchivedFile]) -> PlacementResult:
        result = PlacementResult()
        pending: list[tuple[ArchivedFile, Path, Placed]] = []
        # 1. Temporary copies next to their destinations; nothing visible changes yet.
        for f in files:
            outcome, dest, entry = await asyncio.to_thread(self._prepare, f)
            if entry is None:
                result.add(outcome, f.path)
            else:
                pending.append((f, dest, entry))
        # 2. Saved before the first visible change, so that a failure — even after a
        # restart — takes back exactly what this restore did.
        if self.save is not None:
            await self.save(self.record())
        # 3. Replaced files aside, archived copies into place.
        for f, dest, entry in pending:
            result.add(await asyncio.to_thread(self._put_in_place, dest, entry), f.path)
            self.temps.pop(f.path, None)
        if result.replaced:
            log.warning(
                "restore.files_replaced",
                count=len(result.replaced),
                paths=result.replaced[:100],
                moved_to=str(self.orphan_dir),
                compare=self.compare,
            )
        if result.taken:
            log.warning(
                "restore.files_appeared",
                count=len(result.taken),
                paths=result.taken[:100],
                outcome="created by someone else during the restore; left as they are",
            )
        return result

    # -- blocking helpers, run in threads

    def _prepare(self, f: ArchivedFile) -> tuple[str, Path, Placed | None]:
        """Compare one file with its archive; write the temporary copy if it must change."""
        dest = safe_destination(self.root, f.path)
        earlier = self.entries.get(f.path)
        if earlier and identity_of(dest) == earlier.identity:
            # Placed by an earlier run of this same restore (before a restart): done.
            return ("replaced" if earlier.moved_to else "placed"), dest, None
        state = file_state(dest, f.size, f.sha256, self.compare)
        if state == "same":
            return "unchanged", dest, None
        tmp = partial_path(dest)
        self.temps[f.path] = tmp
        identity = self._write_temp(f, dest, tmp)
        moved_to = earlier.moved_to if earlier else None
        if moved_to and state == "differs" and os.path.lexists(moved_to):
            moved_to = None  # that orphan name holds an earlier file: pick a new one
        if state == "differs" and moved_to is None:
            moved_to = str(self._orphan_target(f.path))
        entry = Placed(f.path, identity, moved_to)
        self.entries[f.path] = entry
        return state, dest, entry

    def _make_parents(self, dest: Path) -> None:
        """Create missing folders like their parent: its mode, its group (and its owner
        when glacierd runs as root), whatever the umask."""
        missing: list[Path] = []
        folder = dest.parent
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for new in reversed(missing):
            parent = os.stat(new.parent)
            try:
                os.mkdir(new, 0o700)
            except FileExistsError:
                continue  # created meanwhile by someone else: not ours
            self.dirs.append(new.relative_to(self.root).as_posix())
            _take_ownership_of(new, parent)
            os.chmod(new, stat.S_IMODE(parent.st_mode))

    def _write_temp(self, f: ArchivedFile, dest: Path, tmp: Path) -> Identity:
        self._make_parents(dest)
        parent = os.stat(dest.parent)
        fd = create_private(tmp)
        try:
            with open(f.source, "rb") as source:
                while chunk := source.read(CHUNK):
                    write_all(fd, chunk)
            os.fsync(fd)
            _take_ownership_of(fd, parent)
            os.fchmod(fd, _file_mode(f.mode, parent))
            if f.mtime_ns is not None:
                os.utime(fd, ns=(f.mtime_ns, f.mtime_ns))
            identity = stat_identity(os.fstat(fd))
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.close(fd)
            discard(tmp)
            if isinstance(exc, OSError) and naming(exc, dest) is not exc:
                raise naming(exc, dest) from exc
            raise
        os.close(fd)
        return identity

    def _orphan_target(self, relpath: str) -> Path:
        assert self.orphan_dir is not None
        taken = {e.moved_to for e in self.entries.values() if e.moved_to}
        return free_name(
            self.orphan_dir.joinpath(*PurePosixPath(filesystem_path(relpath)).parts), taken
        )

    def _put_in_place(self, dest: Path, entry: Placed) -> str:
        tmp = partial_path(dest)
        if entry.moved_to and os.path.lexists(dest) and not os.path.lexists(entry.moved_to):
            move_aside(dest, Path(entry.moved_to))
        try:
            os.link(tmp, dest)
        except FileExistsError:
            discard(tmp)
            return "taken"
        discard(tmp)
        return "replaced" if entry.moved_to else "placed"

    # -- taking it back

    async def undo(self) -> dict[str, int]:
        """Take back what this restore changed; safe to call more than once."""
        with errors_as_text():
            counts = await asyncio.to_thread(self._undo)
        if any(counts.values()):
            log.warning("restore.files_undone", **counts)
        return counts

    def _undo(self) -> dict[str, int]:
        removed = put_back = kept = 0
        for path, tmp in list(self.temps.items()):
            discard(tmp)
            self.temps.pop(path, None)
        for path, entry in self.entries.items():
            try:
                dest = safe_destination(self.root, path)
            except UnsafePathError:
                continue
            discard(partial_path(dest))
            if identity_of(dest) == entry.identity:
                os.unlink(dest)  # the very file this restore wrote
                removed += 1
            if entry.moved_to and os.path.lexists(entry.moved_to):
                if os.path.lexists(dest):
                    kept += 1  # someone wrote a new file there meanwhile: keep theirs
                    log.warning(
                        "restore.undo_left_in_orphans",
                        path=path,
                        moved_to=entry.moved_to,
                        reason="a new file is at the path now",
                    )
                else:
                    try:
                        move_aside(Path(entry.moved_to), dest)
                        put_back += 1
                    except FileExistsError:  # written there this very moment: keep theirs
                        kept += 1
        for rel in sorted(self.dirs, key=lambda d: d.count("/"), reverse=True):
            with contextlib.suppress(OSError):  # not empty: someone put files there
                os.rmdir(self.root / rel)
        return {"removed": removed, "put_back": put_back, "left_in_orphans": kept}


def _file_mode(recorded: int | None, parent: os.stat_result) -> int:
    """The recorded permission bits (never set-id bits: glacierd owns the file); for an
    archive made before modes were recorded, the parent folder's read/write bits."""
    if recorded is not None:
        return stat.S_IMODE(recorded) & ~(stat.S_ISUID | stat.S_ISGID)
    return stat.S_IMODE(parent.st_mode) & 0o666


def _take_ownership_of(target: int | Path, parent: os.stat_result) -> None:
    """Give a new file or folder its parent's group — and its owner when glacierd runs as
    root. An unprivileged glacierd can only choose among its own groups: a group it is not
    in is left as it is (the README explains SupplementaryGroups=)."""
    uid = parent.st_uid if os.geteuid() == 0 else -1
    with contextlib.suppress(PermissionError):
        if isinstance(target, int):
            os.fchown(target, uid, parent.st_gid)
        else:
            os.chown(target, uid, parent.st_gid)


async def remove_placed(placement: FilePlacement) -> dict[str, int]:
    """Undo a placement (a later step of the restore failed): see ``FilePlacement.undo``."""
    return await placement.undo()
