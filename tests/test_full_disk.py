"""A full disk leaves nothing behind: every write glacierd makes for itself — fetched
copies, safety snapshots, local-vault objects — removes its temporary file when the kernel
answers ENOSPC (a real one, from a small tmpfs), and start-up sweeps what a crash left in
state_dir. Also: those files are created 0600 whatever the umask."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from glacierd.config import config_from_dict
from glacierd.context import open_context
from glacierd.operations.backup import run_backup
from glacierd.operations.fetch import LocalFetchError, fetch_archive, fetched_path
from glacierd.operations.restore.snapshot import take_snapshot
from glacierd.operations.retrieval import no_follow_up, request_archive
from glacierd.pipeline.files import write_atomically
from glacierd.stores.local import LocalStore
from tests.small_fs import fill, free_bytes

MIB = 1024 * 1024


async def stream(total: int, chunk: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield os.urandom(n)
        sent += n


def everything(root: Path) -> list[str]:
    """Every entry below ``root`` (hidden ones included), as relative paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("chunk", [1000, 64 * 1024, MIB])
async def test_a_write_that_fills_the_disk_removes_its_temporary_file(
    small_fs: Callable[..., Path], chunk: int
):
    disk = small_fs("disk", "1m")
    free_before = free_bytes(disk)
    with pytest.raises(OSError) as raised:
        await write_atomically(disk / "sub" / "big.bin", stream(4 * MIB, chunk))
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(disk / "sub" / "big.bin")  # says where
    assert everything(disk) == ["sub"]  # no ".big.bin.glacierd-partial"
    assert free_bytes(disk) == free_before
    # The disk is usable again at once: the next write fits.
    assert await write_atomically(disk / "sub" / "small.bin", stream(1000, 1000)) == 1000


async def test_a_local_vault_on_a_full_disk_keeps_no_partial_object(
    small_fs: Callable[..., Path],
):
    vault = small_fs("vault", "1m")
    store = LocalStore("local", vault)
    await store.open()
    with pytest.raises(OSError):
        await store.put("database/big.dump", stream(3 * MIB, 64 * 1024), kind="database")
    assert [p for p in everything(vault) if p != "database"] == []
    # The next backup's upload is not blocked by a leftover.
    result = await store.put("files/small", stream(2000, 2000), kind="file")
    assert result.size == 2000


@pytest.fixture
def state_on(small_fs: Callable[..., Path], make_settings: Callable[..., dict], tmp_path: Path):
    """Settings whose state_dir is a small tmpfs (the vault stays on the real disk)."""

    def make(size: str = "512k", **overrides: Any) -> tuple[dict, Path]:
        state = small_fs("state", size)
        settings = make_settings(**overrides)
        settings["state_dir"] = str(state)
        settings["store"] = {"type": "local", "local": {"path": str(tmp_path / "vault")}}
        return settings, state

    return make


async def test_a_fetch_into_a_full_state_dir_leaves_no_partial_copy(
    state_on: Callable[..., Any], files_root: Path
):
    (files_root / "big.bin").write_bytes(os.urandom(2 * MIB))
    settings, state = state_on("1m")
    async with open_context(config_from_dict(settings)) as ctx:
        await run_backup(ctx, "test")
        [row] = await ctx.catalog.pool.fetch(
            f"SELECT * FROM {ctx.catalog.schema_sql}.archives WHERE path = 'big.bin'"
        )
        await request_archive(ctx, dict(row), None, source="test", on_ready=no_follow_up)
        with pytest.raises(LocalFetchError) as raised:
            await fetch_archive(ctx, row["id"])
        # The operator's sentence names the full directory; the cause is the real ENOSPC.
        assert str(state / "fetched") in str(raised.value)
        assert isinstance(raised.value.__cause__, OSError)
        assert raised.value.__cause__.errno == errno.ENOSPC
        assert everything(state / "fetched") == []
        assert not fetched_path(state, row["id"]).exists()
        status = await ctx.catalog.pool.fetchval(
            f"SELECT retrieval_status FROM {ctx.catalog.schema_sql}.archives WHERE id = $1",
            row["id"],
        )
        assert status == "ready"  # not local: nothing half-written counts as fetched


async def test_a_snapshot_on_a_full_disk_leaves_nothing_and_the_next_one_works(
    state_on: Callable[..., Any],
):
    settings, state = state_on("512k")
    async with open_context(config_from_dict(settings)) as ctx:
        filler = fill(state, leave=2048)  # less room than the sample database's dump
        with pytest.raises(OSError) as raised:
            await take_snapshot(ctx, reason="test")
        assert raised.value.errno == errno.ENOSPC
        assert everything(state / "snapshots") == []
        assert (
            await ctx.catalog.pool.fetchval(
                f"SELECT count(*) FROM {ctx.catalog.schema_sql}.snapshots"
            )
            == 0
        )
        filler.unlink()
        snap = await take_snapshot(ctx, reason="test")
        assert everything(state / "snapshots") == [Path(snap["path"]).name]


async def test_files_glacierd_writes_for_itself_are_private_whatever_the_umask(
    make_settings: Callable[..., dict], tmp_path: Path
):
    settings = make_settings()
    old = os.umask(0o022)  # a login shell's umask, outside systemd
    try:
        async with open_context(config_from_dict(settings)) as ctx:
            await run_backup(ctx, "test")
            rows = await ctx.catalog.pool.fetch(f"SELECT * FROM {ctx.catalog.schema_sql}.archives")
            for row in rows:
                await request_archive(ctx, dict(row), None, source="test", on_ready=no_follow_up)
            snap = await take_snapshot(ctx, reason="test")
            for row in rows:
                await fetch_archive(ctx, row["id"])
    finally:
        os.umask(old)
    state, vault = tmp_path / "state", tmp_path / "vault"
    written = [Path(snap["path"])]
    written += [fetched_path(state, r["id"]) for r in rows]
    written += [p for p in vault.rglob("*") if p.is_file()]
    assert len(written) == 1 + 2 * len(rows) + len(rows)  # objects and retrieval markers
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_daemon_sweeps_what_a_crash_left_in_state_dir_at_start(
    daemon_factory: Callable[..., Any], make_settings: Callable[..., dict], tmp_path: Path
):
    state = tmp_path / "state"
    leftovers = [
        state / "snapshots" / ".snapshot-20260101T000000000000Z.dump.glacierd-partial",
        state / "fetched" / ".archive-7.glacierd-partial",
        state / "work" / "restore-4242.list",
    ]
    kept = [
        state / "snapshots" / "snapshot-20260101T000000000000Z.dump",  # a finished one
        state / "fetched" / "archive-7",
        state / "vault" / "files" / "x",  # the local vault is the store's business
    ]
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000))
    d = daemon_factory(make_settings())
    assert [p for p in leftovers if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []
    [swept] = [e for e in d.events() if e.get("event") == "recovery.state_swept"]
    assert swept["count"] == 3
    assert d.stop() == 0
