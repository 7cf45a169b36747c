"""Reading and writing local files in chunks without blocking the event loop.

Every file glacierd writes for itself — fetched copies, safety snapshots, local-vault
objects, retrieval markers — goes through ``write_atomically``: a temporary sibling created
0600 whatever the umask (a database dump must not be world-readable outside systemd's
UMask=0077), fsync, rename. A failed write always removes its temporary file, a full disk
included, and leftovers a crash could not remove are recognisable by their suffix and
swept at the next start (``sweep_partials``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

CHUNK = 1024 * 1024
# Temporary files while writing: a suffix no upload has by accident, so start-up recovery
# and the attachments walk can recognise (and skip or sweep) them.
PARTIAL_SUFFIX = ".glacierd-partial"
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
_NAME_MAX = 255  # bytes in one file name on every Linux filesystem glacierd targets


async def read_chunks(path: Path, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while True:
            chunk = await asyncio.to_thread(handle.read, chunk_size)
            if not chunk:
                return
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


def partial_path(dest: Path) -> Path:
    """The temporary sibling ``dest`` is written through: ``.<name>.glacierd-partial``.

    A name too long to take the prefix and suffix within NAME_MAX is cut (at a character
    boundary) and a digest of the whole name keeps it unique.
    """
    name = dest.name
    extra = len(PARTIAL_SUFFIX) + 1
    if len(os.fsencode(name)) + extra <= _NAME_MAX:
        return dest.with_name(f".{name}{PARTIAL_SUFFIX}")
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    room = _NAME_MAX - extra - len(digest) - 1
    cut = os.fsencode(name)[:room].decode("utf-8", "ignore")
    return dest.with_name(f".{cut}~{digest}{PARTIAL_SUFFIX}")


def discard(path: Path) -> None:
    """Blocking: remove a temporary file, never raising (the caller is already failing)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def create_private(path: Path, mode: int = PRIVATE_FILE) -> int:
    """Blocking: create ``path`` afresh for writing with exactly ``mode``; returns the fd.

    A stale file of that name (a crash's leftover) is replaced, never written through: a
    symlink planted there is removed, not followed.
    """
    discard(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away
    except BaseException:
        _close_quietly(fd)
        discard(path)
        raise
    return fd


def naming(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name when it has none (os.write errors name no
    file, and "No space left on device" must say where)."""
    if exc.filename is not None or exc.errno is None:
        return exc
    named = OSError(exc.errno, exc.strerror, str(path))
    named.__cause__ = exc
    return named


def write_all(fd: int, data: bytes) -> None:
    """Blocking: write every byte (os.write may write fewer than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


async def write_atomically(
    dest: Path, chunks: AsyncIterable[bytes], *, overwrite: bool = True, mode: int = PRIVATE_FILE
) -> int:
    """Write a stream to ``dest`` through a temporary sibling, fsync, then rename into place.

    Returns the number of bytes written. The file is created with ``mode`` (0600 unless
    told otherwise) whatever the umask; missing parent folders are created 0700. On any
    error — ENOSPC included — the temporary file is removed and ``dest`` is untouched. With
    ``overwrite=False`` an existing ``dest`` raises FileExistsError (a hard link is the
    atomic "create only if absent").
    """
    tmp = partial_path(dest)
    await asyncio.to_thread(dest.parent.mkdir, mode=PRIVATE_DIR, parents=True, exist_ok=True)
    # Unbuffered writes on a bare descriptor: nothing is left in a buffer for close() to
    # flush (and fail on again when the disk is full) before the cleanup runs.
    fd = await asyncio.to_thread(create_private, tmp, mode)
    size = 0
    try:
        try:
            async for chunk in chunks:
                await asyncio.to_thread(write_all, fd, chunk)
                size += len(chunk)
            await asyncio.to_thread(os.fsync, fd)
        finally:
            closing = fd
            fd = -1
            await asyncio.to_thread(os.close, closing)
        if overwrite:
            await asyncio.to_thread(os.replace, tmp, dest)
        else:
            await asyncio.to_thread(os.link, tmp, dest)
            await asyncio.to_thread(discard, tmp)
    except BaseException as exc:
        if fd >= 0:
            _close_quietly(fd)
        # Shielded: a cancelled write (shutdown) still removes its temporary file.
        await asyncio.shield(asyncio.to_thread(discard, tmp))
        if isinstance(exc, OSError):
            named = naming(exc, dest)
            if named is not exc:
                raise named from exc
        raise
    return size


def sweep_partials(directory: Path) -> list[Path]:
    """Blocking: remove every ``*.glacierd-partial`` below ``directory``; returns them."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for dirpath, _dirs, names in os.walk(directory):
        for name in names:
            if name.endswith(PARTIAL_SUFFIX):
                path = Path(dirpath) / name
                discard(path)
                removed.append(path)
    return removed
