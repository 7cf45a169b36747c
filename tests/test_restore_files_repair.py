"""Restores put back exactly what was there, and a failure takes back exactly what the
restore did:

- a file that differs from its archive (by size, or by SHA-256 with restore.compare =
  "sha256") is retrieved, moved to the orphan folder and replaced, and the restore says so;
- restored files get their recorded mode and modification time, new folders their parent's
  mode and group, whatever the umask — in-process and in the real daemon;
- a failed database step never removes a file the application wrote meanwhile;
- a files step that fails half-way (a real full disk) leaves the files root as it was.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from glacierd.config import config_from_dict
from glacierd.context import Context, open_context
from glacierd.operations.backup import run_backup
from glacierd.operations.restore import start_restore
from tests.small_fs import fill
from tests.test_restore import bid, disk, drive, options, pg_restore_wrapper, restore, settle
from tests.wiring import wire


@pytest.fixture
def open_ctx(make_settings: Callable[..., dict]) -> Callable[..., Any]:
    @asynccontextmanager
    async def opened(**overrides: Any) -> AsyncIterator[Context]:
        async with open_context(config_from_dict(make_settings(**overrides))) as context:
            workers = wire(context)
            try:
                yield context
            finally:
                workers.close()
                await settle(context)

    return opened


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


# ------------------------------------------------------------------------------------------
# item 11: changed files are repaired


async def test_a_changed_file_is_retrieved_moved_aside_and_replaced(
    app_db: str, open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path
):
    orphan_dir = tmp_path / "orphans"
    archived = disk(files_root)
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        changed = files_root / "ab/ef/abef5678"
        changed.write_bytes(b"the application overwrote this upload")

        plan = await start_restore(ctx, b1, options(database=False, dry_run=True))
        assert plan["files_to_retrieve"] == {"count": 1, "bytes": len(archived["ab/ef/abef5678"])}
        assert plan["files_to_replace"] == {
            "count": 1,
            "paths": ["ab/ef/abef5678"],
            "compare": "size",
        }
        assert disk(files_root)["ab/ef/abef5678"] == b"the application overwrote this upload"

        with capture_logs() as logs:
            view = await restore(ctx, b1, database=False)
        assert view["state"] == "restored", view["error"]

    assert disk(files_root) == archived
    assert disk(orphan_dir) == {"ab/ef/abef5678": b"the application overwrote this upload"}
    assert view["steps"]["files"] == {
        "placed": 0,
        "replaced": 1,
        "replaced_paths": ["ab/ef/abef5678"],
        "replaced_moved_to": str(orphan_dir),
    }
    [logged] = events(logs, "restore.files_replaced")
    assert logged["paths"] == ["ab/ef/abef5678"] and logged["moved_to"] == str(orphan_dir)


@pytest.mark.parametrize("compare", ["size", "sha256"])
async def test_same_size_different_bytes_is_caught_only_by_sha256(
    app_db: str, open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path, compare: str
):
    archived = disk(files_root)
    rotten = bytearray(archived["ab/cd/abcd1234"])
    rotten[100] ^= 0xFF  # one flipped byte: bit rot, same size
    async with open_ctx(restore={"compare": compare}) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        (files_root / "ab/cd/abcd1234").write_bytes(bytes(rotten))
        plan = await start_restore(ctx, b1, options(database=False, dry_run=True))
        view = await restore(ctx, b1, database=False)
        assert view["state"] == "restored", view["error"]
    if compare == "sha256":
        assert plan["files_to_replace"]["paths"] == ["ab/cd/abcd1234"]
        assert disk(files_root) == archived
        assert disk(tmp_path / "orphans") == {"ab/cd/abcd1234": bytes(rotten)}
    else:  # documented: size alone cannot see it
        assert plan["files_to_replace"]["paths"] == []
        assert disk(files_root)["ab/cd/abcd1234"] == bytes(rotten)
        assert disk(tmp_path / "orphans") == {}


async def test_a_failed_database_step_puts_the_replaced_file_back(
    app_db: str, open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path
):
    failing = pg_restore_wrapper(tmp_path / "pg_restore-fails", "exit 1\n")
    async with open_ctx(database={"pg_restore": str(failing)}) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        (files_root / "ab/ef/abef5678").write_bytes(b"changed by the application")
        (files_root / "ab/cd/abcd1234").unlink()
        before = disk(files_root)
        view = await restore(ctx, b1)
        assert view["state"] == "failed"
    assert disk(files_root) == before
    assert disk(tmp_path / "orphans") == {}
    assert not [p for p in files_root.rglob("*") if p.name.startswith(".")]


# ------------------------------------------------------------------------------------------
# item 12: mode, modification time, folders


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def shape_files_root(files_root: Path) -> dict[str, tuple[int, int]]:
    """Give the files modes and times an application would; returns path → (mode, mtime)."""
    (files_root / "ab" / "cd" / "deep").mkdir()
    (files_root / "ab" / "cd" / "deep" / "inner.bin").write_bytes(b"inner")
    wanted = {
        "ab/cd/abcd1234": (0o644, 1_500_000_000_123_456_789),
        "ab/ef/abef5678": (0o640, 1_600_000_000_000_000_001),
        "ab/cd/deep/inner.bin": (0o604, 1_400_000_000_999_999_999),
        "cache_free_name.txt": (0o600, 1_700_000_000_000_000_000),
    }
    for rel, (mode, mtime) in wanted.items():
        os.chmod(files_root / rel, mode)
        os.utime(files_root / rel, ns=(mtime, mtime))
    # The application's folders: setgid, its group (tests run as root; any gid will do).
    for folder in (files_root / "ab", files_root / "ab" / "cd"):
        os.chown(folder, 1, 4242)
        os.chmod(folder, 0o2751)
    return wanted


def lose_files(files_root: Path, wanted: dict[str, tuple[int, int]]) -> None:
    for rel in wanted:
        (files_root / rel).unlink()
    (files_root / "ab" / "cd" / "deep").rmdir()


def check_restored(files_root: Path, wanted: dict[str, tuple[int, int]]) -> None:
    for rel, (mode, mtime) in wanted.items():
        st = (files_root / rel).stat()
        assert (rel, stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (rel, mode, mtime)
    deep = (files_root / "ab" / "cd" / "deep").stat()
    parent = (files_root / "ab" / "cd").stat()
    # A new folder: its parent's mode, owner (glacierd runs as root here) and group.
    assert stat.S_IMODE(deep.st_mode) == stat.S_IMODE(parent.st_mode) == 0o2751
    assert (deep.st_uid, deep.st_gid) == (1, 4242)
    # Files: their parent's group, so an application in that group can read them.
    inner = (files_root / "ab" / "cd" / "deep" / "inner.bin").stat()
    assert (inner.st_uid, inner.st_gid) == (1, 4242)


async def test_restored_files_get_their_recorded_mode_and_time_under_umask_0077(
    app_db: str, open_ctx: Callable[..., Any], files_root: Path
):
    wanted = shape_files_root(files_root)
    old = os.umask(0o077)  # the shipped unit's UMask
    try:
        async with open_ctx() as ctx:
            b1 = bid(await run_backup(ctx, "test"))
            lose_files(files_root, wanted)
            view = await restore(ctx, b1, database=False)
            assert view["state"] == "restored", view["error"]
    finally:
        os.umask(old)
    check_restored(files_root, wanted)


def test_the_daemon_restores_modes_times_and_folders_under_umask_0077(
    daemon_factory: Callable[..., Any], files_root: Path
):
    wanted = shape_files_root(files_root)
    old = os.umask(0o077)  # inherited by the daemon, as systemd's UMask=0077 would set it
    try:
        d = daemon_factory()
    finally:
        os.umask(old)
    backup = d.wait_backup(d.request("POST", "/backups").json()["id"])
    assert backup["status"] == "completed", backup
    lose_files(files_root, wanted)
    r = d.request("POST", f"/backups/{backup['id']}/restore", {"database": False})
    assert r.status == 202, r.json()

    def finished() -> dict[str, Any] | None:
        view = d.request("GET", f"/restores/{r.json()['id']}").json()
        return view if view["state"] in ("restored", "failed") else None

    view = d.wait_for(finished, 60, what="the restore to finish")
    assert view["state"] == "restored", view
    check_restored(files_root, wanted)
    assert d.stop() == 0


# ------------------------------------------------------------------------------------------
# item 14: a failed database step removes only what the restore itself created


async def test_a_failed_database_step_keeps_a_file_the_application_wrote_meanwhile(
    app_db: str, open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path
):
    target = files_root / "ab/cd/abcd1234"
    # While the database step runs, the application deletes the restored upload and writes
    # its own file under the same name — then the database step fails.
    failing = pg_restore_wrapper(
        tmp_path / "pg_restore-app-writes",
        f'rm -f "{target}"\nprintf "written by the application" > "{target}"\nexit 1\n',
    )
    async with open_ctx(database={"pg_restore": str(failing)}) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        target.unlink()
        view = await restore(ctx, b1)
        assert view["state"] == "failed"
    assert target.read_bytes() == b"written by the application"


async def test_a_failed_database_step_removes_what_the_restore_placed(
    app_db: str, open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path
):
    failing = pg_restore_wrapper(tmp_path / "pg_restore-fails", "exit 1\n")
    async with open_ctx(database={"pg_restore": str(failing)}) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        (files_root / "ab/cd/abcd1234").unlink()
        (files_root / "ab/ef/abef5678").unlink()
        (files_root / "ab/ef").rmdir()
        before = disk(files_root)
        view = await restore(ctx, b1)
        assert view["state"] == "failed"
    assert disk(files_root) == before
    assert not (files_root / "ab/ef").exists()  # the folder it created is gone again


# ------------------------------------------------------------------------------------------
# item 21: a files restore that fails half-way changes nothing


@pytest.mark.parametrize("database", [False, True])
async def test_a_files_restore_that_runs_out_of_space_half_way_changes_nothing(
    make_settings: Callable[..., dict],
    small_fs: Callable[..., Path],
    tmp_path: Path,
    database: bool,
):
    root = small_fs("files-on-tmpfs", "1m")
    (root / "a-small.bin").write_bytes(os.urandom(100_000))
    (root / "b-large.bin").write_bytes(os.urandom(400_000))
    archived = disk(root)
    settings = make_settings(files={"root": str(root)})
    async with open_context(config_from_dict(settings)) as ctx:
        wire(ctx)
        b1 = bid(await run_backup(ctx, "test"))
        for name in archived:
            (root / name).unlink()
        filler = fill(root, leave=250_000)  # room for the first file, not for the second
        before = disk(root)
        started = await start_restore(ctx, b1, options(database=database))
        view = await drive(ctx, started["id"])
        assert view["state"] == "failed"
        assert f"No space left on device ({root / 'b-large.bin'})" in view["error"]
        assert disk(root) == before  # neither file, and no temporary file
        assert sorted(p.name for p in root.iterdir()) == ["filler.bin"]

        filler.unlink()
        started = await start_restore(ctx, b1, options(database=database))
        view = await drive(ctx, started["id"])
        assert view["state"] == "restored", view["error"]
        assert disk(root) == archived
        await settle(ctx)


# ------------------------------------------------------------------------------------------
# an orphan folder on another filesystem (EXDEV): moved by copying, nothing lost


async def test_an_orphan_folder_on_another_filesystem_gets_copies_and_gives_them_back(
    app_db: str,
    open_ctx: Callable[..., Any],
    files_root: Path,
    small_fs: Callable[..., Path],
    tmp_path: Path,
):
    orphans = small_fs("orphans-elsewhere", "1m")
    assert os.stat(orphans).st_dev != os.stat(files_root).st_dev
    archived = disk(files_root)
    failing = pg_restore_wrapper(tmp_path / "pg_restore-fails", "exit 1\n")
    elsewhere = {"orphan_dir": str(orphans)}
    async with open_ctx(files=elsewhere, database={"pg_restore": str(failing)}) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        (files_root / "ab/ef/abef5678").write_bytes(b"changed")
        (files_root / "stray.txt").write_bytes(b"an orphan")
        before = disk(files_root)
        # A failed database step brings the replaced file back across filesystems.
        view = await restore(ctx, b1)
        assert view["state"] == "failed"
        assert disk(files_root) == before and disk(orphans) == {}

    async with open_ctx(files=elsewhere) as ctx:
        view = await restore(ctx, b1)
        assert view["state"] == "restored", view["error"]
    assert disk(files_root) == archived
    assert disk(orphans) == {"ab/ef/abef5678": b"changed", "stray.txt": b"an orphan"}
