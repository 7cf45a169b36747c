"""Putting attached files back and moving orphans aside — never deleting anything.

Paths come from the catalog, which could be damaged or forged; each one is checked before
use: absolute paths, ``..`` segments and paths that pass through a symlink leading outside
files.root (or through a symlink loop) are refused.

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
import errno
import os
import shutil
import stat
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from glacierd.operations.errors import OperationError
from glacierd.pipeline.files import (
    CHUNK,
    create_private,
    discard,
    naming,
    partial_path,
    write_all,
)
from glacierd.sources.attachments import catalog_path, file_state, filesystem_path

log = structlog.get_logger("glacierd.restore")


class UnsafePathError(OperationError):
    pass


def safe_destination(root: Path, relpath: str) -> Path:
    """The absolute path for catalog path ``relpath`` under ``root``, or UnsafePathError
    saying why."""
    name = filesystem_path(relpath)
    pure = PurePosixPath(name)
    if not relpath or "\0" in name:
        raise UnsafePathError(f"catalog path {relpath!r} is empty or contains a NUL byte")
    if pure.is_absolute():
        raise UnsafePathError(f"catalog path {relpath!r} is absolute; refusing to write there")
    if ".." in pure.parts:
        raise UnsafePathError(f"catalog path {relpath!r} contains '..'; refusing to leave the root")
    dest = root.joinpath(*pure.parts)
    real_root = root.resolve()
    # Resolving the parent follows any symlinked folder on the way: it must stay inside.
    try:
        parent = dest.parent.resolve()
    except (RuntimeError, OSError):  # RuntimeError: a symlink loop on Python 3.11
        raise UnsafePathError(
            f"catalog path {relpath!r} passes through a symlink loop; remove the loop"
        ) from None
    if not parent.is_relative_to(real_root):
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


@contextlib.contextmanager
def errors_as_text() -> Iterator[None]:
    """An OSError naming an odd file (a name that is not valid UTF-8) is re-raised with the
    name escaped like a catalog path: its message goes into the catalog, the log and JSON,
    which all need text."""
    try:
        yield
    except OSError as exc:
        names = [
            catalog_path(n) if isinstance(n, str) else n for n in (exc.filename, exc.filename2)
        ]
        if names != [exc.filename, exc.filename2]:
            raise OSError(exc.errno, exc.strerror, names[0], None, names[1]) from exc
        raise


# ---------------------------------------------------------------- placing files


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


def _identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _identity_of(path: Path) -> Identity | None:
    try:
        return _identity(os.lstat(path))
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
        if earlier and _identity_of(dest) == earlier.identity:
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
            identity = _identity(os.fstat(fd))
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
        return _free_name(
            self.orphan_dir.joinpath(*PurePosixPath(filesystem_path(relpath)).parts), taken
        )

    def _put_in_place(self, dest: Path, entry: Placed) -> str:
        tmp = partial_path(dest)
        if entry.moved_to and os.path.lexists(dest) and not os.path.lexists(entry.moved_to):
            _move(dest, Path(entry.moved_to))
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
            if _identity_of(dest) == entry.identity:
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
                        _move(Path(entry.moved_to), dest)
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


# ---------------------------------------------------------------- orphans


def _free_name(target: Path, taken: set[str] | None = None) -> Path:
    def used(p: Path) -> bool:
        return os.path.lexists(p) or (taken is not None and str(p) in taken)

    if not used(target):
        return target
    n = 1
    while used(target.with_name(f"{target.name}.{n}")):
        n += 1
    return target.with_name(f"{target.name}.{n}")


def _move(source: Path, target: Path) -> None:
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
    target = _free_name(orphan_root.joinpath(*PurePosixPath(filesystem_path(relpath)).parts))
    _move(source, target)
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


async def remove_placed(placement: FilePlacement) -> dict[str, int]:
    """Undo a placement (a later step of the restore failed): see ``FilePlacement.undo``."""
    return await placement.undo()
