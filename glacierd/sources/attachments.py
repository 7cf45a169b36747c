"""The attached-files source: one recursive walk of files.root.

A file's identity is its path relative to the root (ActiveStorage nests folders, refile
does not). Uploads are immutable by convention, so a known path with the same size is the
same file; see ``operations/backup.py`` for the set difference against the catalog.

**Catalog paths.** The kernel names files with bytes; the catalog (PostgreSQL text), the
log and the JSON API need text. ``catalog_path`` turns a name into text that is valid
UTF-8 and free of control characters by percent-escaping just what cannot be text: bytes
that are not valid UTF-8, control characters (a newline breaks S3 keys and log lines),
U+FFFE/U+FFFF, and a literal ``%`` that happens to be followed by two hex digits (so that
a file really named ``caf%E9.txt`` never meets the escaped ``café.txt`` in Latin-1). Every
other name — nearly all of them — is its own catalog path. ``filesystem_path`` is the exact
inverse, so an archived file is put back under the very bytes it had.

Documented outcomes for awkward entries (each gets one log line naming the path):

- a name that is not valid UTF-8 or holds control characters is archived under its escaped
  catalog path and restored under its original bytes;
- a symlink to a file inside the root is archived under the link's own path;
- a symlink leading outside the root, a symlink to a directory, or a dangling symlink is
  skipped (``outside-root`` / ``directory-symlink`` / ``dangling``): following them could
  archive data that is not the application's, or loop forever;
- a symlink loop is skipped (``symlink-loop``);
- an unreadable file or directory is skipped (``unreadable``); the backup still completes
  and counts it in ``skipped_files`` so the operator sees it;
- a file that vanishes between the walk and its upload is skipped (``vanished``) and gets
  no archive row;
- a ``*.glacierd-partial`` file (left by a restore interrupted while writing it) is skipped
  (``partial``); the resumed restore writes the file again.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from glacierd.pipeline.files import PARTIAL_SUFFIX

_HEX = frozenset("0123456789abcdefABCDEF")
_SURROGATE_ESCAPES = range(0xDC80, 0xDD00)  # how Python spells undecodable bytes


def _needs_escape(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or code == 0x7F or code in _SURROGATE_ESCAPES or code in (0xFFFE, 0xFFFF)


def _hex_pair(text: str, at: int) -> bool:
    pair = text[at : at + 2]
    return len(pair) == 2 and pair[0] in _HEX and pair[1] in _HEX


def catalog_path(name: str) -> str:
    """The catalog's text for a relative path as ``os`` returns it (see the module notes)."""
    if "%" not in name and not any(_needs_escape(ch) for ch in name):
        return name  # the common case: the name is its own catalog path
    out: list[str] = []
    for i, ch in enumerate(name):
        if ch == "%":
            # Only a "%" that could be read as an escape needs escaping itself.
            out.append("%25" if _hex_pair(name, i + 1) else "%")
        elif _needs_escape(ch):
            raw = ch.encode("utf-8", "surrogateescape")
            out.append("".join(f"%{b:02X}" for b in raw))
        else:
            out.append(ch)
    return "".join(out)


def filesystem_path(text: str) -> str:
    """The inverse of ``catalog_path``: the name to hand to ``os`` (undecodable bytes come
    back as Python's surrogate escapes, which ``os`` turns into the original bytes)."""
    if "%" not in text:
        return text
    raw = bytearray()
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "%" and _hex_pair(text, i + 1):
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
            continue
        raw += ch.encode("utf-8", "surrogateescape")
        i += 1
    return raw.decode("utf-8", "surrogateescape")


def on_disk_path(root: Path, catalog: str) -> Path:
    """Where a catalog path lives under ``root`` (no safety checks: see
    operations/restore/paths.py)."""
    return root / filesystem_path(catalog)


@dataclass(frozen=True)
class FileEntry:
    path: str  # catalog path: relative to the root, "/" separators, escaped as above
    size: int
    mode: int | None = None  # permission bits at backup time
    mtime_ns: int | None = None  # modification time at backup time


@dataclass(frozen=True)
class Skipped:
    path: str
    # outside-root | directory-symlink | dangling | symlink-loop | unreadable | special |
    # vanished | partial
    reason: str
    detail: str = ""


@dataclass
class WalkResult:
    files: list[FileEntry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _is_loop(exc: BaseException) -> bool:
    # Path.resolve raises RuntimeError for a loop on Python 3.11/3.12, OSError(ELOOP) later.
    return isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP


def _classify_symlink(full: Path, real_root: Path) -> tuple[str, str] | None:
    """Why a symlink is skipped, or None when it leads to a file inside the root."""
    try:
        target = full.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        return "dangling", os.readlink(full)
    except (RuntimeError, OSError) as exc:
        if _is_loop(exc):
            return "symlink-loop", os.readlink(full)
        raise
    if not target.is_relative_to(real_root):
        return "outside-root", str(target)
    if target.is_dir():
        return "directory-symlink", str(target)
    return None


def _walk(root: Path) -> WalkResult:
    result = WalkResult()
    real_root = root.resolve()
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            rel = catalog_path(directory.relative_to(root).as_posix()) or "."
            result.skipped.append(Skipped(rel, "unreadable", exc.strerror or str(exc)))
            continue
        for entry in entries:
            full = Path(entry.path)
            rel = catalog_path(full.relative_to(root).as_posix())
            if entry.name.endswith(PARTIAL_SUFFIX):
                # A file a restore was putting back when it was interrupted: not an upload.
                result.skipped.append(Skipped(rel, "partial", "an interrupted restore's file"))
                continue
            try:
                if entry.is_symlink():
                    why = _classify_symlink(full, real_root)
                    if why is not None:
                        result.skipped.append(Skipped(rel, why[0], catalog_path(why[1])))
                        continue
                st = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                result.skipped.append(Skipped(rel, "vanished"))
                continue
            except (OSError, RuntimeError) as exc:
                if _is_loop(exc):
                    result.skipped.append(Skipped(rel, "symlink-loop", "too many levels"))
                else:
                    detail = getattr(exc, "strerror", None) or str(exc)
                    result.skipped.append(Skipped(rel, "unreadable", detail))
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(full)
            elif stat.S_ISREG(st.st_mode):
                if not os.access(full, os.R_OK):
                    result.skipped.append(Skipped(rel, "unreadable", "permission denied"))
                    continue
                mode = stat.S_IMODE(st.st_mode)
                result.files.append(FileEntry(rel, st.st_size, mode, st.st_mtime_ns))
            else:
                result.skipped.append(Skipped(rel, "special", "not a regular file"))
    result.files.sort(key=lambda f: f.path)
    return result


async def walk(root: Path) -> WalkResult:
    """Walk ``root`` in a worker thread (a large tree must not stall the event loop)."""
    return await asyncio.to_thread(_walk, root)


# ---------------------------------------------------------------- comparing with an archive


def sha256_of(path: Path) -> str | None:
    """Blocking: the file's SHA-256, or None when it cannot be read."""
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                sha.update(chunk)
    except OSError:
        return None
    return sha.hexdigest()


def file_state(path: Path, size: int | None, sha256: str | None, compare: str = "size") -> str:
    """Blocking: ``missing``, ``same`` or ``differs`` — how the file at ``path`` compares
    with an archive of ``size`` (and ``sha256`` when ``compare`` is "sha256")."""
    if not os.path.lexists(path):
        return "missing"
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return "differs"  # a dangling link or a loop where the file should be
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        return "differs"
    if compare == "sha256" and sha256 is not None and sha256_of(path) != sha256:
        return "differs"
    return "same"
