"""A really small filesystem for "disk full" tests: a tmpfs of a few hundred KiB mounted
under the test's tmp_path (the tests run as root), unmounted afterwards.

Writing past its size fails with a real ENOSPC from the kernel, exactly what a full disk
does. If mounting is impossible (no privilege, no tmpfs), the test is skipped with the
reason — the only case where these tests do not run.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(mount: Path, leave: int) -> Path:
    """Fill ``mount`` until about ``leave`` bytes are free (0: until the kernel says
    ENOSPC, not one block left); returns the filler file."""
    filler = mount / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while free_bytes(mount) > leave + 4096:
            os.write(fd, b"\0" * min(65536, free_bytes(mount) - leave - 4096))
        if leave == 0:
            try:
                while True:
                    os.write(fd, b"\0" * 512)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``small_fs(name, size="512k")`` mounts a fresh tmpfs at tmp_path/name."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "512k") -> Path:
        where = tmp_path / name
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs for a full-disk test: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
