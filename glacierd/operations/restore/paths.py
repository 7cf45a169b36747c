"""Catalog paths made safe to write to: the catalog could be damaged or forged, so each path
is checked before use — absolute paths, ``..`` segments and paths that pass through a
symlink leading outside files.root (or through a symlink loop) are refused."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from glacierd.operations.errors import OperationError
from glacierd.sources.attachments import catalog_path, filesystem_path


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
