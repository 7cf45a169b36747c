"""The backup verb in-process, on a real database and a local vault: changed, linked,
vanished and unreadable files; pg_dump failures; the lock; batched catalog writes;
recovery of interrupted backups; archives shared between backups; deleting a backup."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from glacierd.catalog import backups as backup_rows
from glacierd.catalog.locks import BusyError
from glacierd.config import config_from_dict
from glacierd.context import Context, open_context
from glacierd.operations import inventory
from glacierd.operations.backup import attempt_key, run_backup, start_backup
from glacierd.operations.recovery import recover_interrupted
from glacierd.pgconnect.conninfo import parse_conninfo
from glacierd.sources import attachments
from glacierd.sources.database import DatabaseSourceError, check_pg_dump
from tests import pg

# ------------------------------------------------------------------------------------------
# helpers


async def rows(ctx: Context, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Run SQL on the catalog; "{s}" stands for the quoted catalog schema."""
    records = await ctx.catalog.pool.fetch(sql.replace("{s}", ctx.catalog.schema_sql), *args)
    return [dict(r) for r in records]


async def backup_row(ctx: Context, backup_id: int) -> dict[str, Any]:
    [row] = await rows(ctx, "SELECT * FROM {s}.backups WHERE id = $1", backup_id)
    return row


async def archives_of(ctx: Context, backup_id: int) -> list[dict[str, Any]]:
    return await rows(
        ctx,
        "SELECT a.* FROM {s}.archives a JOIN {s}.backup_archives ba ON ba.archive_id = a.id "
        "WHERE ba.backup_id = $1 ORDER BY a.kind, a.path",
        backup_id,
    )


async def file_ids(ctx: Context, backup_id: int) -> dict[str, int]:
    return {a["path"]: a["id"] for a in await archives_of(ctx, backup_id) if a["kind"] == "file"}


def vault_files(ctx: Context) -> dict[str, bytes]:
    """Every object in the local vault (partial uploads included), by key."""
    root = ctx.config.store.local.path  # type: ignore[union-attr]
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".retrievals" not in p.parts
    }


async def assert_catalog_consistent(ctx: Context) -> None:
    """No half-written archive rows; every archive a backup references is stored and present."""
    assert await rows(ctx, "SELECT id, store_key FROM {s}.archives WHERE state <> 'stored'") == []
    referenced = await rows(
        ctx,
        "SELECT a.state, a.store_key, a.size FROM {s}.archives a "
        "JOIN {s}.backup_archives ba ON ba.archive_id = a.id",
    )
    stored = vault_files(ctx)
    for a in referenced:
        assert a["state"] == "stored"
        assert len(stored[a["store_key"]]) == a["size"], a


def bid(summary: dict[str, object]) -> int:
    return int(summary["backup_id"])  # type: ignore[call-overload]


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def fake_tool(path: Path, script: str, real_version: bool = True) -> Path:
    """A stand-in pg_dump: reports the real version (glacierd checks it first), then runs
    ``script`` for the dump itself."""
    version = 'if [ "$1" = "--version" ]; then exec pg_dump --version; fi\n'
    path.write_text("#!/bin/sh\n" + (version if real_version else "") + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def context_with(make_settings: Callable[..., dict]) -> Callable[..., Any]:
    """Open a Context on the test database with some settings overridden."""

    @asynccontextmanager
    async def opened(**overrides: dict) -> AsyncIterator[Context]:
        async with open_context(config_from_dict(make_settings(**overrides))) as context:
            yield context

    return opened


# ------------------------------------------------------------------------------------------
# attached files


async def test_first_backup_archives_every_file_with_its_bytes(ctx: Context, files_root: Path):
    summary = await run_backup(ctx, "test")
    assert summary["file_count"] == 3 and summary["new_files"] == 3
    assert summary["skipped_files"] == 0
    stored = vault_files(ctx)
    for rel in ("ab/cd/abcd1234", "ab/ef/abef5678", "cache_free_name.txt"):
        assert stored[attempt_key(rel, bid(summary))] == (files_root / rel).read_bytes()
    [dump_key] = [k for k in stored if k.startswith("database/")]
    assert stored[dump_key].startswith(b"PGDMP")  # pg_dump custom format
    archives = await archives_of(ctx, bid(summary))
    [db] = [a for a in archives if a["kind"] == "database"]
    assert db["store_key"] == dump_key and db["size"] == len(stored[dump_key])
    assert summary["database_bytes"] == db["size"]
    row = await backup_row(ctx, bid(summary))
    assert (row["status"], row["file_count"], row["new_files"]) == ("completed", 3, 3)
    await assert_catalog_consistent(ctx)


async def test_second_backup_references_the_existing_file_archives(ctx: Context):
    first = await run_backup(ctx, "test")
    before = vault_files(ctx)
    second = await run_backup(ctx, "test")
    assert second["new_files"] == 0 and second["file_count"] == 3
    ids1 = await file_ids(ctx, bid(first))
    ids2 = await file_ids(ctx, bid(second))
    assert len(ids1) == 3 and ids1 == ids2
    after = vault_files(ctx)
    assert [k for k in after if k.startswith("files/")] == [
        k for k in before if k.startswith("files/")
    ]
    assert sum(k.startswith("database/") for k in after) == 2
    # Only the first backup's bytes went into file archives.
    assert second["bytes_uploaded"] == second["database_bytes"]
    assert (await rows(ctx, "SELECT count(*) AS n FROM {s}.archives WHERE kind = 'file'"))[0][
        "n"
    ] == 3


async def test_changed_file_is_archived_again_as_a_new_archive(ctx: Context, files_root: Path):
    first = await run_backup(ctx, "test")
    target = files_root / "cache_free_name.txt"
    old_bytes = target.read_bytes()
    target.write_text("hello, this file was rewritten in place\n")
    with capture_logs() as logs:
        second = await run_backup(ctx, "test")
    b2 = bid(second)
    assert second["new_files"] == 1 and second["file_count"] == 3

    [changed] = events(logs, "backup.file_changed")
    assert changed["log_level"] == "warning"
    assert changed["path"] == "cache_free_name.txt"
    assert changed["archived_size"] == len(old_bytes)
    assert changed["size"] == target.stat().st_size

    stored = vault_files(ctx)
    # the old version is kept
    assert stored[attempt_key("cache_free_name.txt", bid(first))] == old_bytes
    assert stored[f"files/cache_free_name.txt@backup{b2}"] == target.read_bytes()

    ids1 = await file_ids(ctx, bid(first))
    ids2 = await file_ids(ctx, b2)
    assert ids2["cache_free_name.txt"] != ids1["cache_free_name.txt"]
    assert {k: v for k, v in ids2.items() if k != "cache_free_name.txt"} == {
        k: v for k, v in ids1.items() if k != "cache_free_name.txt"
    }

    # A third backup adopts the newest archive of the path and uploads nothing.
    third = await run_backup(ctx, "test")
    assert third["new_files"] == 0
    assert (await file_ids(ctx, bid(third)))["cache_free_name.txt"] == ids2["cache_free_name.txt"]
    await assert_catalog_consistent(ctx)


async def test_symlinks(ctx: Context, files_root: Path, tmp_path: Path):
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("not the application's data\n")
    (tmp_path / "outside-dir").mkdir()
    (files_root / "inside-link").symlink_to("ab/cd/abcd1234")  # relative, inside the root
    (files_root / "outside-link").symlink_to(outside)
    (files_root / "escape-link").symlink_to("../outside-secret.txt")
    (files_root / "dangling-link").symlink_to(files_root / "no-such-file")
    (files_root / "dir-link").symlink_to(files_root / "ab")
    (files_root / "outside-dir-link").symlink_to(tmp_path / "outside-dir")

    with capture_logs() as logs:
        summary = await run_backup(ctx, "test")

    skipped = {e["path"]: e["reason"] for e in events(logs, "backup.file_skipped")}
    assert skipped == {
        "outside-link": "outside-root",
        "escape-link": "outside-root",
        "outside-dir-link": "outside-root",
        "dangling-link": "dangling",
        "dir-link": "directory-symlink",
    }
    assert all(e["log_level"] == "warning" for e in events(logs, "backup.file_skipped"))
    assert summary["skipped_files"] == 5
    assert summary["file_count"] == 4 and summary["new_files"] == 4

    stored = vault_files(ctx)
    # Archived under the link's own path, with the target's bytes.
    b1 = bid(summary)
    assert stored[attempt_key("inside-link", b1)] == (files_root / "ab/cd/abcd1234").read_bytes()
    assert not any("outside" in k or "dangling" in k or "dir-link" in k for k in stored)
    assert b"not the application's data\n" not in stored.values()
    # The directory behind dir-link is archived once, under its real path only.
    assert sorted(k for k in stored if k.startswith("files/")) == [
        attempt_key("ab/cd/abcd1234", b1),
        attempt_key("ab/ef/abef5678", b1),
        attempt_key("cache_free_name.txt", b1),
        attempt_key("inside-link", b1),
    ]
    row = await backup_row(ctx, bid(summary))
    assert row["skipped_files"] == 5 and row["status"] == "completed"


async def test_symlinked_root_still_archives_links_inside_it(
    context_with: Callable[..., Any], files_root: Path, tmp_path: Path
):
    (files_root / "inside-link").symlink_to(files_root / "cache_free_name.txt")
    linked_root = tmp_path / "current"
    linked_root.symlink_to(files_root)
    async with context_with(files={"root": str(linked_root)}) as ctx:
        summary = await run_backup(ctx, "test")
        assert summary["skipped_files"] == 0 and summary["new_files"] == 4
        assert vault_files(ctx)[attempt_key("inside-link", bid(summary))] == b"hello\n"


def patch_walk(monkeypatch: pytest.MonkeyPatch, after_walk: Callable[[], None]) -> None:
    """Run ``after_walk`` between the real walk and the uploads."""
    real_walk = attachments.walk

    async def walk(root: Path) -> attachments.WalkResult:
        result = await real_walk(root)
        after_walk()
        return result

    monkeypatch.setattr(attachments, "walk", walk)


async def test_file_vanishing_after_the_walk_is_skipped(
    ctx: Context, files_root: Path, monkeypatch: pytest.MonkeyPatch
):
    victim = files_root / "ab/cd/abcd1234"
    patch_walk(monkeypatch, victim.unlink)
    with capture_logs() as logs:
        summary = await run_backup(ctx, "test")

    [skip] = events(logs, "backup.file_skipped")
    assert (skip["path"], skip["reason"]) == ("ab/cd/abcd1234", "vanished")
    assert summary["skipped_files"] == 1
    assert summary["file_count"] == 2 and summary["new_files"] == 2
    assert await rows(ctx, "SELECT id FROM {s}.archives WHERE path = 'ab/cd/abcd1234'") == []
    stored = vault_files(ctx)
    assert not any("abcd1234" in k for k in stored)  # no object, no partial upload
    assert sorted(await file_ids(ctx, bid(summary))) == ["ab/ef/abef5678", "cache_free_name.txt"]
    row = await backup_row(ctx, bid(summary))
    assert (row["status"], row["skipped_files"], row["file_count"]) == ("completed", 1, 2)
    await assert_catalog_consistent(ctx)


async def test_vanished_entry_from_the_walk_itself(ctx: Context, monkeypatch: pytest.MonkeyPatch):
    real_walk = attachments.walk

    async def walk(root: Path) -> attachments.WalkResult:
        result = await real_walk(root)
        result.files.append(attachments.FileEntry("never/existed.bin", 123))
        return result

    monkeypatch.setattr(attachments, "walk", walk)
    summary = await run_backup(ctx, "test")
    assert summary["skipped_files"] == 1 and summary["new_files"] == 3
    assert await rows(ctx, "SELECT id FROM {s}.archives WHERE path = 'never/existed.bin'") == []
    await assert_catalog_consistent(ctx)


async def test_entry_turned_into_a_directory_is_unreadable(
    ctx: Context, files_root: Path, monkeypatch: pytest.MonkeyPatch
):
    victim = files_root / "ab/ef/abef5678"

    def replace_by_directory() -> None:
        victim.unlink()
        victim.mkdir()

    patch_walk(monkeypatch, replace_by_directory)
    with capture_logs() as logs:
        summary = await run_backup(ctx, "test")
    [skip] = events(logs, "backup.file_skipped")
    assert (skip["path"], skip["reason"]) == ("ab/ef/abef5678", "unreadable")
    assert "directory" in skip["detail"].lower()
    assert summary["skipped_files"] == 1 and summary["new_files"] == 2
    assert await rows(ctx, "SELECT id FROM {s}.archives WHERE path = 'ab/ef/abef5678'") == []
    assert not any("abef5678" in k for k in vault_files(ctx))
    await assert_catalog_consistent(ctx)


# ------------------------------------------------------------------------------------------
# pg_dump failures: a clear message, the backup recorded failed, nothing left in the vault


async def assert_failed_cleanly(ctx: Context, message: str) -> None:
    [row] = await rows(ctx, "SELECT * FROM {s}.backups")
    assert row["status"] == "failed"
    assert row["error"] == message
    assert row["finished_at"] is not None
    assert await rows(ctx, "SELECT id FROM {s}.archives") == []
    assert await rows(ctx, "SELECT * FROM {s}.backup_archives") == []
    assert vault_files(ctx) == {}


async def test_pg_dump_missing(context_with: Callable[..., Any]):
    async with context_with(database={"pg_dump": "glacierd-test-no-such-pg_dump"}) as ctx:
        with capture_logs() as logs, pytest.raises(DatabaseSourceError) as err:
            await run_backup(ctx, "test")
        message = str(err.value)
        assert message.startswith("glacierd-test-no-such-pg_dump was not found")
        assert "apt-get install postgresql-client" in message
        assert "database.pg_dump" in message
        await assert_failed_cleanly(ctx, message)
        [failed] = events(logs, "backup.failed")
        assert failed["error"] == message and failed["log_level"] == "error"


async def test_pg_dump_nonzero_exit(context_with: Callable[..., Any], tmp_path: Path):
    # Writes part of a dump first: that partial object must not survive either.
    tool = fake_tool(
        tmp_path / "pg_dump",
        (
            "printf 'PGDMP partial dump bytes'\n"
            "echo 'pg_dump: error: simulated failure: relation \"x\" is locked' >&2\n"
            "echo 'HINT: try again later' >&2\n"
            "exit 1\n"
        ),
    )
    async with context_with(database={"pg_dump": str(tool)}) as ctx:
        with pytest.raises(DatabaseSourceError) as err:
            await run_backup(ctx, "test")
        message = str(err.value)
        assert message.startswith("pg_dump exited with code 1")
        assert 'simulated failure: relation "x" is locked' in message
        assert "HINT: try again later" in message
        assert "\n" not in message
        await assert_failed_cleanly(ctx, message)


async def test_database_unreachable(context_with: Callable[..., Any], app_db: str):
    port = closed_port()
    async with context_with(
        database={"dsn": f"postgresql://postgres@127.0.0.1:{port}/{app_db}"},
        catalog={"dsn": pg.dsn_for(app_db)},
    ) as ctx:
        with pytest.raises(DatabaseSourceError) as err:
            await run_backup(ctx, "test")
        message = str(err.value)
        assert message.startswith(
            f"the backed-up database postgres@127.0.0.1:{port}/{app_db} is unreachable"
        )
        assert "check that PostgreSQL is running" in message
        await assert_failed_cleanly(ctx, message)


async def test_check_pg_dump_refuses_an_older_client(tmp_path: Path, app_db: str):
    tool = fake_tool(tmp_path / "pg_dump", "echo 'pg_dump (PostgreSQL) 9.6.24'\n", False)
    info = parse_conninfo(pg.dsn_for(app_db))
    with pytest.raises(DatabaseSourceError) as err:
        await check_pg_dump(str(tool), info)
    message = str(err.value)
    conn = await asyncpg.connect(pg.dsn_for(app_db))
    try:
        server = await conn.fetchval("SHOW server_version")
        major = int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()
    assert "pg_dump (PostgreSQL) 9.6.24" in message
    assert f"PostgreSQL {server}" in message
    assert f"postgresql-client-{major}" in message
    assert f"/usr/lib/postgresql/{major}/bin/pg_dump" in message
    assert "database.pg_dump" in message


async def test_check_pg_dump_accepts_the_installed_client(app_db: str):
    client, server = await check_pg_dump("pg_dump", parse_conninfo(pg.dsn_for(app_db)))
    assert client.major >= server.major >= 10
    assert client.text.startswith("pg_dump (PostgreSQL)")


async def test_check_pg_dump_unreachable_server(app_db: str):
    port = closed_port()
    with pytest.raises(DatabaseSourceError, match=r"is unreachable.*check that PostgreSQL"):
        await check_pg_dump("pg_dump", parse_conninfo(f"postgresql://postgres@127.0.0.1:{port}/x"))


# ------------------------------------------------------------------------------------------
# one backup at a time; cancellation and crash recovery


def gated_pg_dump(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A pg_dump that records its pid and waits for a gate file before dumping for real."""
    gate, pidfile = tmp_path / "gate", tmp_path / "pg_dump.pid"
    tool = fake_tool(
        tmp_path / "slow_pg_dump",
        (
            f"echo $$ > '{pidfile}'\n"
            # Bounded, so a failed test never leaves it looping.
            f"n=0; while [ ! -e '{gate}' ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done\n"
            'exec pg_dump "$@"\n'
        ),
    )
    return tool, gate, pidfile


async def wait_for_file(path: Path, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.02)):
        if path.exists() and path.read_text().strip():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


async def test_second_backup_is_refused_while_one_runs(
    context_with: Callable[..., Any], tmp_path: Path
):
    tool, gate, pidfile = gated_pg_dump(tmp_path)
    async with context_with(database={"pg_dump": str(tool)}) as ctx:
        handle = await start_backup(ctx, "test")
        await wait_for_file(pidfile)
        with pytest.raises(BusyError) as err:
            await start_backup(ctx, "test")
        message = str(err.value)
        assert f"backup {handle.backup_id} is running since" in message
        assert "try again when it has finished" in message
        assert [r["id"] for r in await rows(ctx, "SELECT id FROM {s}.backups")] == [
            handle.backup_id
        ]
        gate.touch()
        summary = await asyncio.wait_for(handle.task, 60)
        assert summary["new_files"] == 3
        # The lock is released once the backup ends.
        again = await asyncio.wait_for(run_backup(ctx, "test"), 60)
        assert again["backup_id"] != handle.backup_id


async def test_cancelled_backup_is_failed_and_cleaned_up(
    context_with: Callable[..., Any], tmp_path: Path
):
    tool, gate, pidfile = gated_pg_dump(tmp_path)
    async with context_with(database={"pg_dump": str(tool)}) as ctx:
        handle = await start_backup(ctx, "test")
        await wait_for_file(pidfile)
        pid = int(pidfile.read_text())
        handle.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handle.task
        row = await backup_row(ctx, handle.backup_id)
        assert row["status"] == "failed"
        assert row["error"].startswith("interrupted")
        assert await rows(ctx, "SELECT id FROM {s}.archives") == []
        assert vault_files(ctx) == {}
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # pg_dump was killed, not left running
        # ...and the lock was released.
        gate.touch()
        assert (await asyncio.wait_for(run_backup(ctx, "test"), 60))["new_files"] == 3


async def test_recovery_marks_a_crashed_backup_failed_and_removes_its_partial_data(
    ctx: Context, files_root: Path
):
    # A completed backup whose file archives must survive the recovery.
    done = await run_backup(ctx, "test")
    kept = vault_files(ctx)

    # What a process killed mid-backup leaves: a running row, its dump, a file archive that
    # finished uploading, one that did not, and a partial object in the store.
    pool, cat = ctx.catalog.pool, ctx.catalog
    crashed = await backup_rows.create_backup(pool, cat, "test", "app")
    vault = ctx.config.store.local.path  # type: ignore[union-attr]
    (vault / "database").mkdir(exist_ok=True)
    (vault / "database/crashed.dump").write_bytes(b"PGDMP half")
    (vault / "files/new").mkdir(parents=True)
    (vault / "files/new/finished.bin").write_bytes(b"finished")
    (vault / "files/new/.half.bin.glacierd-partial").write_bytes(b"hal")
    dump_id, finished_id, half_id = await backup_rows.insert_archives(
        pool,
        cat,
        crashed,
        "local",
        [
            backup_rows.NewArchive("database", "database/crashed.dump", None, None),
            backup_rows.NewArchive("file", "files/new/finished.bin", "new/finished.bin", 8),
            backup_rows.NewArchive("file", "files/new/half.bin", "new/half.bin", 100),
        ],
    )
    await backup_rows.mark_stored(
        pool,
        cat,
        [
            (dump_id, "database/crashed.dump", 10, "0" * 64, "LOCAL"),
            (finished_id, "files/new/finished.bin", 8, "1" * 64, "LOCAL"),
        ],
    )

    with capture_logs() as logs:
        assert await recover_interrupted(ctx) == [crashed]

    row = await backup_row(ctx, crashed)
    assert row["status"] == "failed"
    assert row["error"].startswith("interrupted")
    remaining = {r["id"] for r in await rows(ctx, "SELECT id FROM {s}.archives")}
    assert dump_id not in remaining and half_id not in remaining
    assert finished_id in remaining  # adopted by the next backup instead of re-uploaded
    assert vault_files(ctx) == {**kept, "files/new/finished.bin": b"finished"}
    assert [e["backup_id"] for e in events(logs, "recovery.backup_interrupted")] == [crashed]
    # The completed backup is untouched.
    assert (await backup_row(ctx, bid(done)))["status"] == "completed"
    # Running recovery again finds nothing.
    assert await recover_interrupted(ctx) == []


async def test_recovery_leaves_a_backup_alone_while_another_process_holds_the_lock(
    context_with: Callable[..., Any], tmp_path: Path
):
    tool, gate, pidfile = gated_pg_dump(tmp_path)
    async with context_with(database={"pg_dump": str(tool)}) as ctx:
        handle = await start_backup(ctx, "test")
        await wait_for_file(pidfile)
        assert await recover_interrupted(ctx) == []
        assert (await backup_row(ctx, handle.backup_id))["status"] == "running"
        gate.touch()
        await asyncio.wait_for(handle.task, 60)
        assert (await backup_row(ctx, handle.backup_id))["status"] == "completed"


# ------------------------------------------------------------------------------------------
# batched catalog writes


class StatementCounter:
    """Counts every statement sent on any asyncpg connection (pool calls go through them)."""

    METHODS = ("execute", "executemany", "fetch", "fetchval", "fetchrow", "fetchmany")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in self.METHODS:
            original = getattr(asyncpg.connection.Connection, name)
            monkeypatch.setattr(asyncpg.connection.Connection, name, self._wrap(original))

    def _wrap(self, original: Any) -> Any:
        async def counted(conn: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await original(conn, *args, **kwargs)

        return counted


def add_files(root: Path, prefix: str, n: int) -> None:
    for i in range(n):
        d = root / prefix / f"{i % 10:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}").write_bytes(f"{prefix} {i}\n".encode())


async def test_catalog_statements_do_not_grow_with_the_number_of_files(
    ctx: Context, files_root: Path, monkeypatch: pytest.MonkeyPatch
):
    """Finding what is new, inserting rows and linking them take the same statements for 3
    files or 300; only recording finished uploads grows (each is recorded as it completes,
    several per statement when they finish together, so a crash cannot lose a backlog)."""
    await run_backup(ctx, "test")  # warm-up: type introspection, first-time paths

    calls: dict[str, list[int]] = {"insert_archives": [], "mark_stored": []}
    mark_statements: list[int] = []
    real_insert, real_mark = backup_rows.insert_archives, backup_rows.mark_stored

    async def insert_archives(db: Any, cat: Any, backup_id: int, store: str, new: list) -> Any:
        calls["insert_archives"].append(len(new))
        return await real_insert(db, cat, backup_id, store, new)

    async def mark_stored(db: Any, cat: Any, stored: list) -> None:
        calls["mark_stored"].append(len(stored))
        before = counter.count  # marks are written one at a time (a lock), so this is exact
        await real_mark(db, cat, stored)
        mark_statements.append(counter.count - before)

    monkeypatch.setattr(backup_rows, "insert_archives", insert_archives)
    monkeypatch.setattr(backup_rows, "mark_stored", mark_stored)
    counter = StatementCounter(monkeypatch)

    add_files(files_root, "few", 3)
    few = await run_backup(ctx, "test")
    few_statements = counter.count - sum(mark_statements)
    assert few["new_files"] == 3
    assert sum(calls["mark_stored"]) == 4  # the dump and 3 files, each recorded once

    counter.count = 0
    mark_statements.clear()
    calls = {"insert_archives": [], "mark_stored": []}
    add_files(files_root, "many", 300)
    many = await run_backup(ctx, "test")
    assert many["new_files"] == 300 and many["file_count"] == 306
    assert few_statements >= 8  # the counter sees the catalog traffic
    other = counter.count - sum(mark_statements)
    assert other == few_statements, (other, few_statements)
    # One insert for the dump, one for all 300 files; every upload recorded exactly once.
    assert calls["insert_archives"] == [1, 300]
    assert sum(calls["mark_stored"]) == 301 and len(calls["mark_stored"]) <= 301
    ids = await file_ids(ctx, bid(many))
    assert len(ids) == 306
    await assert_catalog_consistent(ctx)


# ------------------------------------------------------------------------------------------
# deleting a backup


async def test_delete_keeps_shared_file_archives_and_removes_unshared_ones(
    ctx: Context, files_root: Path
):
    first = await run_backup(ctx, "test")
    b1 = bid(first)
    only_first = files_root / "ab/cd/abcd1234"
    only_first.unlink()  # referenced by the first backup only
    (files_root / "only-second.txt").write_text("second\n")
    second = await run_backup(ctx, "test")
    b2 = bid(second)
    a1 = {a["store_key"]: a for a in await archives_of(ctx, b1)}
    a2 = {a["store_key"]: a for a in await archives_of(ctx, b2)}
    dump1 = next(k for k, a in a1.items() if a["kind"] == "database")
    dump2 = next(k for k, a in a2.items() if a["kind"] == "database")
    only_key = attempt_key("ab/cd/abcd1234", b1)
    assert only_key in a1 and only_key not in a2

    with capture_logs() as logs:
        result = await inventory.delete_backup(ctx, b1)
    assert result == {"id": b1, "deleted": True, "archives_deleted": 2}
    stored = vault_files(ctx)
    assert dump1 not in stored and only_key not in stored
    assert sorted(stored) == sorted(a2)  # everything the second backup uses stays
    assert await rows(ctx, "SELECT id FROM {s}.backups WHERE id = $1", b1) == []
    assert {a["store_key"] for a in await archives_of(ctx, b2)} == set(a2)
    left = await rows(ctx, "SELECT store_key FROM {s}.archives")
    assert {r["store_key"] for r in left} == set(a2)
    assert events(logs, "backup.deleted")[0]["archives_deleted"] == 2

    with pytest.raises(inventory.NotFoundError, match=f"backup {b1} does not exist"):
        await inventory.delete_backup(ctx, b1)

    result = await inventory.delete_backup(ctx, b2)
    assert result["archives_deleted"] == len(a2)
    assert vault_files(ctx) == {}
    assert dump2 not in vault_files(ctx)
    assert await rows(ctx, "SELECT id FROM {s}.archives") == []


async def test_a_file_archived_again_after_delete_is_uploaded_anew(ctx: Context, files_root: Path):
    first = await run_backup(ctx, "test")
    await inventory.delete_backup(ctx, bid(first))
    assert vault_files(ctx) == {}
    second = await run_backup(ctx, "test")
    assert second["new_files"] == 3
    assert vault_files(ctx)[attempt_key("cache_free_name.txt", bid(second))] == b"hello\n"
    await assert_catalog_consistent(ctx)


async def test_an_unfinished_deletion_never_removes_a_newer_backups_object(
    ctx: Context, files_root: Path
):
    from glacierd.stores.base import StoreError

    first = await run_backup(ctx, "test")
    real_delete = ctx.store.delete

    async def outage(ref: Any) -> None:
        raise StoreError("simulated store outage")

    ctx.store.delete = outage  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        await inventory.delete_backup(ctx, first["backup_id"])
    ctx.store.delete = real_delete  # type: ignore[method-assign]
    # The files are archived again by the next backup...
    second = await run_backup(ctx, "test")
    assert second["new_files"] == 3
    # ...and the next start finishes the old deletion: it must not take the new objects.
    await recover_interrupted(ctx)
    stored = vault_files(ctx)
    for path in ("ab/cd/abcd1234", "ab/ef/abef5678", "cache_free_name.txt"):
        assert stored[attempt_key(path, bid(second))] == (files_root / path).read_bytes()
    assert await rows(ctx, "SELECT id FROM {s}.archives WHERE state = 'deleting'") == []
