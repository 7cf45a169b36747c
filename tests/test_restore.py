"""The restore verb in-process, on real PostgreSQL and a local vault: round trips of a rich
schema, restores in sequence, failures that change nothing (a killed pg_restore, a broken
object, a lock not granted), safety snapshots and their retention, a corrupted fetched
archive, files and orphans, unsafe catalog paths, the dry run, the lock, and resuming a
request interrupted in the middle of the database restore."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import glacierd.operations.restore.restoring as restoring_step
from glacierd.catalog import restores as restore_rows
from glacierd.catalog.locks import BusyError, operation_lock
from glacierd.config import config_from_dict
from glacierd.context import Context, open_context
from glacierd.operations import inventory
from glacierd.operations.backup import run_backup
from glacierd.operations.fetch import fetch_archive
from glacierd.operations.restore import (
    RestoreDriver,
    RestoreFailed,
    restore_view,
    start_restore,
    start_snapshot_restore,
)
from tests import pg
from tests.restore_schema import CHANGES, RICH_SCHEMA, DbState, capture
from tests.wiring import wire, workers_of

# ------------------------------------------------------------------------------------------
# helpers

REAL_PG_RESTORE = shutil.which("pg_restore") or "pg_restore"


async def rows(ctx: Context, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Run SQL on the catalog; "{s}" stands for the quoted catalog schema."""
    records = await ctx.catalog.pool.fetch(sql.replace("{s}", ctx.catalog.schema_sql), *args)
    return [dict(r) for r in records]


def bid(summary: dict[str, object]) -> int:
    return int(summary["backup_id"])  # type: ignore[call-overload]


def options(**overrides: Any) -> dict[str, Any]:
    return {"tier": None, "database": True, "files": True, "dry_run": False, **overrides}


async def settle(ctx: Context) -> None:
    """Let background fetches and kicked restore advances finish."""
    while ctx.tasks:
        await asyncio.gather(*list(ctx.tasks), return_exceptions=True)


async def drive(ctx: Context, restore_id: int, timeout: float = 30.0) -> dict[str, Any]:
    """Advance the request like the daemon's ticks do, until it is restored or failed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await workers_of(ctx).restorer.advance_all()
        view = await restore_view(ctx, restore_id)
        if view["state"] in ("restored", "failed"):
            await settle(ctx)
            return view
        assert loop.time() < deadline, f"restore {restore_id} did not finish: {view}"
        await asyncio.sleep(0.05)


async def restore(ctx: Context, backup_id: int, **overrides: Any) -> dict[str, Any]:
    started = await start_restore(ctx, backup_id, options(**overrides))
    assert started["state"] == "requested"
    return await drive(ctx, started["id"])


def restored(view: dict[str, Any]) -> dict[str, Any]:
    assert view["state"] == "restored", view["error"]
    assert view["error"] is None and view["finished_at"] is not None
    return view


def disk(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path → bytes); {} if it does not exist."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def processes_mentioning(needle: str) -> list[int]:
    """Pids of processes whose command line mentions ``needle`` (a unique tmp path)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (proc / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if needle in cmdline and status != "Z":
            pids.append(int(proc.name))
    return pids


def executable(path: Path, script: str) -> Path:
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def pg_restore_wrapper(path: Path, when_restoring: str) -> Path:
    """A stand-in pg_restore: ``--list``, ``--version`` and the schemas' script
    (``--schema-only``) go to the real one; generating the restore script runs
    ``when_restoring`` (with $REAL set to the real pg_restore)."""
    return executable(
        path,
        f'REAL="{REAL_PG_RESTORE}"\n'
        'for a in "$@"; do case "$a" in --list|--version|--schema-only) exec "$REAL" "$@";; '
        "esac; done\n" + when_restoring,
    )


@pytest.fixture
def open_ctx(make_settings: Callable[..., dict]) -> Callable[..., Any]:
    """A Context like the daemon's (with a fetcher and a restore driver), some settings
    overridden; background tasks are finished before it closes."""

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


@pytest.fixture
async def rich_db(app_db: str) -> str:
    """The sample database plus the realistic schema (tests/restore_schema.py: partitions,
    inheritance, extensions, views and materialized views, large objects, …)."""
    await pg.populate(app_db, RICH_SCHEMA)
    return app_db


async def change_database(dbname: str, before: DbState) -> DbState:
    """Change rows, materialized views, schema, sequences and large objects; check that each
    of them did change."""
    await pg.populate(dbname, CHANGES)
    after = await capture(dbname)
    before.assert_differs_in_every_way(after)
    return after


# ------------------------------------------------------------------------------------------
# round trips


async def test_round_trip_of_a_rich_schema_keeps_the_catalog(
    rich_db: str, open_ctx: Callable[..., Any], files_root: Path
):
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        at_backup = await capture(rich_db)
        assert "public.orders" in at_backup.rows and "CREATE EXTENSION" in at_backup.schema
        for thing in ("CREATE VIEW", "CREATE TRIGGER", "CREATE TYPE", "CREATE DOMAIN"):
            assert thing in at_backup.schema
        for thing in ("PARTITION BY RANGE", "INHERITS", "MATERIALIZED VIEW", "tsvector"):
            assert thing in at_backup.schema
        assert "app.events_2025_early" in at_backup.rows and at_backup.large_objects
        await change_database(rich_db, at_backup)
        b2 = bid(await run_backup(ctx, "test"))  # catalog rows written after the first backup

        view = restored(await restore(ctx, b1))

        (await capture(rich_db)).assert_same(at_backup)
        # The catalog was left alone: both backups, their archives and this restore remain.
        backups = await rows(ctx, "SELECT id, status FROM {s}.backups ORDER BY id")
        assert backups == [{"id": b1, "status": "completed"}, {"id": b2, "status": "completed"}]
        assert len(await rows(ctx, "SELECT 1 FROM {s}.backup_archives WHERE backup_id = $1", b2))
        [row] = await rows(ctx, "SELECT id, state, backup_id FROM {s}.restores")
        assert row == {"id": view["id"], "state": "restored", "backup_id": b1}
        assert view["steps"]["database"]["dropped_first"] > 0
        assert view["steps"]["snapshot"]["id"] is not None

    # The restored objects work, not only look the same.
    conn = await asyncpg.connect(pg.dsn_for(rich_db))
    try:
        touched = await conn.fetchval("SELECT touched FROM accounts WHERE id = 1")
        assert touched == 1  # the bulk update after the inserts went through the trigger
        assert await conn.fetchval(
            "UPDATE accounts SET mood = 'ok' WHERE id = 1 RETURNING touched"
        ) == (touched + 1)
        assert await conn.fetchval("SELECT count(*) FROM happy_accounts") > 0
        with pytest.raises(asyncpg.UniqueViolationError):  # citext: case-insensitive
            await conn.execute("INSERT INTO accounts (email) VALUES ('PERSON1@example.COM')")
        with pytest.raises(asyncpg.CheckViolationError):  # the domain's check
            await conn.execute("INSERT INTO orders (account_id, quantity) VALUES (1, 0)")
        with pytest.raises(asyncpg.InvalidTextRepresentationError):  # enum value added later
            await conn.execute("SELECT 'ecstatic'::mood")
        last, _ = at_backup.sequences["public.invoice_numbers"]
        assert last == 4242 + 300  # setval, then one nextval per order
        assert await conn.fetchval("SELECT nextval('invoice_numbers')") == last + 1
        assert await conn.fetchval("SELECT to_regproc('added_function')") is None
    finally:
        await conn.close()


async def test_restore_to_an_older_backup_then_to_a_newer_one(
    rich_db: str, open_ctx: Callable[..., Any], tmp_path: Path
):
    # Dumps that hold glacierd's schema too (a catalog kept elsewhere before, a dump made
    # by hand): the restore's filtered object list must still leave the catalog alone.
    real_pg_dump = shutil.which("pg_dump") or "pg_dump"
    pg_dump = executable(
        tmp_path / "pg_dump-with-catalog",
        f'REAL="{real_pg_dump}"\n'
        'case " $* " in *" --format=custom "*) ;; *) exec "$REAL" "$@";; esac\n'
        'for a in "$@"; do shift; case "$a" in --exclude-schema=*) ;; *) set -- "$@" "$a";; esac\n'
        "done\n"
        'exec "$REAL" "$@"\n',
    )
    async with open_ctx(database={"pg_dump": str(pg_dump)}) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        state1 = await capture(rich_db)
        state2 = await change_database(rich_db, state1)
        b2 = bid(await run_backup(ctx, "test"))

        dump = (tmp_path / "vault").rglob(f"*backup{b1}.dump").__next__()
        listing = subprocess.run(
            [REAL_PG_RESTORE, "--list", str(dump)], check=True, capture_output=True, text=True
        ).stdout
        assert "TABLE glacierd backups" in listing  # the catalog is in this dump

        first = restored(await restore(ctx, b1, files=False))
        (await capture(rich_db)).assert_same(state1)
        second = restored(await restore(ctx, b2, files=False))
        (await capture(rich_db)).assert_same(state2)

        assert await rows(ctx, "SELECT id, backup_id, state FROM {s}.restores ORDER BY id") == [
            {"id": first["id"], "backup_id": b1, "state": "restored"},
            {"id": second["id"], "backup_id": b2, "state": "restored"},
        ]


# ------------------------------------------------------------------------------------------
# failures leave the database and the files as they were


async def failed_attempt(
    ctx: Context, dbname: str, backup_id: int, files_root: Path, orphan_dir: Path
) -> dict[str, Any]:
    """Run a restore that must fail; check that the database and the files are untouched."""
    (files_root / "ab/cd/abcd1234").unlink()  # the restore will put this one back first
    (files_root / "orphan-candidate.txt").write_text("not in the backup\n")
    before_db = await capture(dbname)
    before_files = disk(files_root)
    view = await restore(ctx, backup_id)
    assert view["state"] == "failed" and view["error"], view
    assert "database" not in view["steps"] and "orphans" not in view["steps"]
    (await capture(dbname)).assert_same(before_db)
    assert disk(files_root) == before_files  # the placed file was taken back
    assert disk(orphan_dir) == {}
    return view


async def test_a_restore_shows_its_archives_as_the_backup_does(
    app_db: str, open_ctx: Callable[..., Any], files_root: Path
):
    """One archive view: GET /restores/{id} and GET /backups/{id} show an archive with the
    same fields and values (a backup marks a file already on disk "exists")."""
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        (files_root / "ab/cd/abcd1234").unlink()
        view = restored(await restore(ctx, b1))
        detail = await inventory.backup_detail(ctx, b1)
        shown = {a["id"]: a for a in detail["archives"]}
        items = view["archives"]["items"]
        assert sorted(a["kind"] for a in items) == ["database", "file"]
        for item in items:
            backup_item = shown[item["id"]]
            assert set(item) == set(backup_item)
            assert {**item, "status": None} == {**backup_item, "status": None}
            assert item["status"] == "local" and item["retrieval_error"] is None
            # The file is back on disk: the backup's view says so.
            assert backup_item["status"] == ("exists" if item["kind"] == "file" else "local")


async def test_an_unusable_orphan_folder_fails_the_restore_before_any_change(
    rich_db: str, open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the orphan folder's parent should be\n")
    async with open_ctx(files={"orphan_dir": str(blocker / "orphans")}) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        await change_database(rich_db, await capture(rich_db))
        (files_root / "ab/cd/abcd1234").unlink()
        (files_root / "orphan-candidate.txt").write_text("not in the backup\n")
        before_db, before_files = await capture(rich_db), disk(files_root)
        view = await restore(ctx, b1)
        assert view["state"] == "failed"
        # The sentence glacierd doctor shows for the same folder (one check for both).
        assert view["error"] == (
            f"files.orphan_dir {blocker / 'orphans'} cannot be created: {blocker} is not a "
            "directory; point files.orphan_dir at a directory path beside files.root, then "
            "request the restore again — nothing was changed."
        )
        assert view["steps"] == {}  # not even a snapshot
        (await capture(rich_db)).assert_same(before_db)
        assert disk(files_root) == before_files


async def test_killed_pg_restore_changes_nothing(
    rich_db: str, open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path
):
    wrapper = pg_restore_wrapper(
        tmp_path / "pg_restore-killed", '"$REAL" "$@" | head -c 3000\nkill -9 $$\n'
    )
    async with open_ctx(database={"pg_restore": str(wrapper)}) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        await change_database(rich_db, await capture(rich_db))
        view = await failed_attempt(ctx, rich_db, b1, files_root, tmp_path / "orphans")
        assert "pg_restore exited with code -9" in view["error"]
        assert "the database was not changed" in view["error"]
        raw = await restore_rows.get(ctx.catalog.pool, ctx.catalog, view["id"])
        assert raw is not None and list(raw["steps"]["files_placed"]["files"]) == ["ab/cd/abcd1234"]


async def test_a_broken_object_rolls_the_whole_restore_back(
    rich_db: str, open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path
):
    role = f"gtest_owner_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg.dsn_for(rich_db))
    try:
        await conn.execute(
            f"CREATE ROLE {role}; CREATE TABLE owned_elsewhere (id int PRIMARY KEY); "
            "INSERT INTO owned_elsewhere VALUES (1), (2); "
            f"ALTER TABLE owned_elsewhere OWNER TO {role}"
        )
        async with open_ctx() as ctx:
            b1 = bid(await run_backup(ctx, "test"))
            # The dump says "ALTER TABLE owned_elsewhere OWNER TO <role>": make that fail.
            await conn.execute(
                f"REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}; DROP ROLE {role}"
            )
            await change_database(rich_db, await capture(rich_db))
            view = await failed_attempt(ctx, rich_db, b1, files_root, tmp_path / "orphans")
            assert "rolled back" in view["error"]
            assert f'role "{role}" does not exist' in view["error"]
    finally:
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute(f"REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE IF EXISTS {role}")
        await conn.close()


async def test_locks_held_by_other_sessions_time_out_or_are_terminated(
    rich_db: str, open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path
):
    holder = await asyncpg.connect(pg.dsn_for(rich_db))
    try:
        async with open_ctx(restore={"lock_timeout_seconds": 1}) as ctx:
            b1 = bid(await run_backup(ctx, "test"))
            await change_database(rich_db, at_backup := await capture(rich_db))
            await holder.execute("BEGIN; LOCK TABLE orders IN ACCESS SHARE MODE")
            started = asyncio.get_running_loop().time()
            view = await failed_attempt(ctx, rich_db, b1, files_root, tmp_path / "orphans")
            assert asyncio.get_running_loop().time() - started < 20  # never a hang
            assert "held locks for more than 1 s" in view["error"]
            assert "restore.terminate_connections = true" in view["error"]
            assert "not changed" in view["error"]
            assert not holder.is_closed()
            assert await holder.fetchval("SELECT count(*) FROM orders") > 0  # still in its txn

        async with open_ctx(restore={"terminate_connections": True}) as ctx:
            restored(await restore(ctx, b1))
            (await capture(rich_db)).assert_same(at_backup)
        with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
            await holder.fetchval("SELECT 1")  # its session was ended
    finally:
        holder.terminate()


# ------------------------------------------------------------------------------------------
# safety snapshots


async def test_the_safety_snapshot_gives_back_the_pre_restore_state(
    rich_db: str, open_ctx: Callable[..., Any]
):
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        at_backup = await capture(rich_db)
        before_restore = await change_database(rich_db, at_backup)

        view = restored(await restore(ctx, b1, files=False))
        (await capture(rich_db)).assert_same(at_backup)
        snap_id = view["steps"]["snapshot"]["id"]
        [snap] = await restore_rows.snapshots(ctx.catalog.pool, ctx.catalog)
        assert snap["id"] == snap_id and Path(snap["path"]).is_file()
        assert f"before restore {view['id']}" in snap["reason"]

        started = await start_snapshot_restore(ctx, snap_id)
        undo = restored(await drive(ctx, started["id"]))
        assert undo["snapshot_id"] == snap_id and undo["backup_id"] is None
        (await capture(rich_db)).assert_same(before_restore)
        # The catalog still knows the backup and both restores.
        assert len(await rows(ctx, "SELECT 1 FROM {s}.restores WHERE state = 'restored'")) == 2


async def test_snapshot_retention_keeps_the_newest(
    app_db: str, open_ctx: Callable[..., Any], tmp_path: Path
):
    async with open_ctx(restore={"snapshot_keep": 2}) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        taken = []
        for _ in range(3):
            view = restored(await restore(ctx, b1, files=False))
            taken.append(view["steps"]["snapshot"])
        snaps = await restore_rows.snapshots(ctx.catalog.pool, ctx.catalog)
        assert [s["id"] for s in snaps] == [taken[2]["id"], taken[1]["id"]]
        on_disk = sorted(p.name for p in (tmp_path / "state" / "snapshots").iterdir())
        assert on_disk == sorted(Path(s["path"]).name for s in snaps)
        assert not Path(taken[0]["path"]).exists()


async def test_restoring_the_oldest_snapshot_does_not_prune_it(
    app_db: str, open_ctx: Callable[..., Any]
):
    # snapshot_keep = 1: restoring the snapshot takes a new one, which must not push out
    # the very snapshot being restored.
    async with open_ctx(restore={"snapshot_keep": 1}) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        before = pg.table_rows(app_db)
        await pg.populate(app_db, "DELETE FROM documents WHERE id > 100;")
        changed = pg.table_rows(app_db)
        first = restored(await restore(ctx, b1, files=False))
        assert pg.table_rows(app_db) == before
        started = await start_snapshot_restore(ctx, first["steps"]["snapshot"]["id"])
        restored(await drive(ctx, started["id"]))
        assert pg.table_rows(app_db) == changed


async def test_no_snapshot_when_switched_off(
    app_db: str, open_ctx: Callable[..., Any], tmp_path: Path
):
    async with open_ctx(restore={"snapshot": False}) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        view = restored(await restore(ctx, b1, files=False))
        assert "snapshot" not in view["steps"] and "database" in view["steps"]
        assert await restore_rows.snapshots(ctx.catalog.pool, ctx.catalog) == []
        assert disk(tmp_path / "state" / "snapshots") == {}


# ------------------------------------------------------------------------------------------
# verification before anything changes


async def test_a_corrupted_fetched_archive_is_refused_before_anything_changes(
    rich_db: str, open_ctx: Callable[..., Any], files_root: Path
):
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        at_backup = await capture(rich_db)
        await change_database(rich_db, at_backup)
        (files_root / "ab/cd/abcd1234").unlink()
        before_db, before_files = await capture(rich_db), disk(files_root)

        started = await start_restore(ctx, b1, options())
        # A driver without a fetcher: the request waits in "fetching", so the copies can be
        # fetched by hand and one damaged before it is used.
        await RestoreDriver(ctx, None).advance_all()
        assert (await restore_view(ctx, started["id"]))["state"] == "fetching"
        needed = await restore_rows.archives(ctx.catalog.pool, ctx.catalog, started["id"])
        assert sorted(a["kind"] for a in needed) == ["database", "file"]
        for a in needed:
            assert (await fetch_archive(ctx, a["id"]))["retrieval_status"] == "local"
        db = next(
            a
            for a in await restore_rows.archives(ctx.catalog.pool, ctx.catalog, started["id"])
            if a["kind"] == "database"
        )
        fetched = Path(db["local_path"])
        data = bytearray(fetched.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
        fetched.write_bytes(bytes(data))

        view = await drive(ctx, started["id"])
        assert view["state"] == "failed"
        assert f"archive {db['id']}" in view["error"] and "SHA-256" in view["error"]
        assert db["sha256"] in view["error"] and "nothing was changed" in view["error"]
        assert view["steps"] == {}
        (await capture(rich_db)).assert_same(before_db)
        assert disk(files_root) == before_files
        assert await restore_rows.snapshots(ctx.catalog.pool, ctx.catalog) == []
        assert not fetched.exists()  # the bad copy is gone; a new request fetches it anew
        [again] = await rows(
            ctx, "SELECT retrieval_status FROM {s}.archives WHERE id = $1", db["id"]
        )
        assert again["retrieval_status"] == "available"

        restored(await restore(ctx, b1))
        (await capture(rich_db)).assert_same(at_backup)


# ------------------------------------------------------------------------------------------
# files


async def test_a_damaged_stored_archive_fails_the_restore_after_three_downloads(
    app_db: str, open_ctx: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("glacierd.operations.fetch._BACKOFF_START", 0.05)
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        [dump] = await rows(ctx, "SELECT store_key FROM {s}.archives WHERE kind = 'database'")
        stored = tmp_path / "vault" / dump["store_key"]
        stored.write_bytes(stored.read_bytes()[:-1] + b"!")  # damaged in the store
        before = pg.table_rows(app_db)
        await pg.populate(app_db, "DELETE FROM documents;")
        changed = pg.table_rows(app_db)
        assert changed != before
        view = await restore(ctx, b1, files=False)
        assert view["state"] == "failed"
        assert "downloaded 3 times" in view["error"] and "nothing was changed" in view["error"]
        assert pg.table_rows(app_db) == changed
        assert view["steps"] == {}


async def test_files_are_put_back_changed_ones_replaced_and_orphans_moved_aside(
    app_db: str, open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path
):
    orphan_dir = tmp_path / "orphans"
    (files_root / "deep" / "er").mkdir(parents=True)
    (files_root / "deep" / "er" / "keep.bin").write_bytes(os.urandom(5000))
    archived = disk(files_root)
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))

        (files_root / "ab/cd/abcd1234").unlink()  # missing: put back
        shutil.rmtree(files_root / "deep")  # missing with its folders: put back
        # Changed: moved to the orphan folder (never deleted) and replaced by the archive.
        (files_root / "ab/ef/abef5678").write_bytes(b"different size, moved aside")
        (files_root / "cache_free_name.txt").write_bytes(b"HELLO\n")  # same size: "exists"
        (files_root / "new.txt").write_text("a new orphan\n")
        (files_root / "x" / "y" / "z").mkdir(parents=True)
        (files_root / "x" / "y" / "z" / "orphan.bin").write_bytes(b"nested orphan")
        (files_root / "ab" / "cd" / "stray").write_bytes(b"stray beside a restored file")
        orphan_dir.mkdir()
        (orphan_dir / "new.txt").write_text("an earlier orphan\n")

        view = restored(await restore(ctx, b1, database=False))

        assert view["steps"]["files"] == {
            "placed": 2,
            "replaced": 1,
            "replaced_paths": ["ab/ef/abef5678"],
            "replaced_moved_to": str(orphan_dir),
        }
        assert view["steps"]["orphans"]["moved"] == 3
        assert disk(files_root) == {
            "ab/cd/abcd1234": archived["ab/cd/abcd1234"],
            "ab/ef/abef5678": archived["ab/ef/abef5678"],
            "cache_free_name.txt": b"HELLO\n",
            "deep/er/keep.bin": archived["deep/er/keep.bin"],
        }
        assert disk(orphan_dir) == {
            "ab/ef/abef5678": b"different size, moved aside",
            "new.txt": b"an earlier orphan\n",
            "new.txt.1": b"a new orphan\n",
            "x/y/z/orphan.bin": b"nested orphan",
            "ab/cd/stray": b"stray beside a restored file",
        }
        assert not any(p.name.startswith(".") for p in files_root.rglob("*"))  # no temp files


async def test_unsafe_catalog_paths_are_refused_and_nothing_changes(
    app_db: str, open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "escape.txt").write_text("outside the root\n")
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        (files_root / "linked").symlink_to(outside)
        (files_root / "ab/cd/abcd1234").unlink()
        [real] = await rows(ctx, "SELECT * FROM {s}.archives WHERE path = 'cache_free_name.txt'")
        before_files, before_archives = (
            disk(files_root),
            await rows(ctx, "SELECT id, retrieval_status FROM {s}.archives ORDER BY id"),
        )
        bad_paths = {
            # the size matches the file that lies there: "already on disk" must not hide it
            "../escape.txt": len("outside the root\n"),
            "/etc/glacierd-test-x": 5,
            "linked/x.txt": 5,
            "ab/../../escape.txt": 5,
        }
        for n, (bad, size) in enumerate(bad_paths.items()):
            [evil] = await rows(
                ctx,
                "INSERT INTO {s}.archives (kind, state, store_name, store_key, path, size, "
                "sha256, storage_class) VALUES ('file', 'stored', $1, $2, $3, $4, $5, $6) "
                "RETURNING id",
                real["store_name"],
                f"files/evil-{n}",
                bad,
                size,
                real["sha256"],
                real["storage_class"],
            )
            await rows(ctx, "INSERT INTO {s}.backup_archives VALUES ($1, $2)", b1, evil["id"])
            with pytest.raises(RestoreFailed) as raised:
                await start_restore(ctx, b1, options())
            message = str(raised.value)
            assert repr(bad) in message and "nothing was changed" in message
            await rows(ctx, "DELETE FROM {s}.backup_archives WHERE archive_id = $1", evil["id"])
            await rows(ctx, "DELETE FROM {s}.archives WHERE id = $1", evil["id"])

        assert await rows(ctx, "SELECT id FROM {s}.restores") == []
        assert disk(files_root) == before_files and disk(outside) == {}
        assert (tmp_path / "escape.txt").read_text() == "outside the root\n"
        assert disk(tmp_path / "orphans") == {}
        assert (
            await rows(ctx, "SELECT id, retrieval_status FROM {s}.archives ORDER BY id")
            == before_archives
        )
        # With the forged rows gone the same backup restores fine.
        restored(await restore(ctx, b1, database=False))


# ------------------------------------------------------------------------------------------
# dry run, the lock, resuming


async def test_dry_run_returns_the_plan_and_changes_nothing(
    app_db: str, open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path
):
    delayed = {
        "type": "local",
        "local": {"path": str(tmp_path / "vault"), "retrieval_delay_seconds": 90},
    }
    async with open_ctx(store=delayed) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        await pg.populate(app_db, "CREATE TABLE after_backup (id int)")  # not in the plan
        sizes = {p: len(b) for p, b in disk(files_root).items()}
        (files_root / "ab/cd/abcd1234").unlink()
        (files_root / "ab/ef/abef5678").unlink()
        (files_root / "zz").mkdir()
        (files_root / "zz" / "orphan.txt").write_text("orphan\n")
        before_archives = await rows(ctx, "SELECT * FROM {s}.archives ORDER BY id")
        [backup] = await rows(ctx, "SELECT started_at FROM {s}.backups WHERE id = $1", b1)

        plan = await start_restore(ctx, b1, options(dry_run=True))

        assert plan["dry_run"] is True and plan["backup_id"] == b1
        assert plan["backup_time"] == backup["started_at"].isoformat()
        assert plan["tables"] == ["public.documents", "public.users"]
        assert plan["files_to_retrieve"] == {
            "count": 2,
            "bytes": sizes["ab/cd/abcd1234"] + sizes["ab/ef/abef5678"],
        }
        assert plan["orphans"]["count"] == 1 and plan["orphans"]["paths"] == ["zz/orphan.txt"]
        assert plan["orphans"]["moved_to"] == str(tmp_path / "orphans")
        assert plan["estimated_retrieval_seconds"] == {
            "Expedited": 90.0,
            "Standard": 90.0,
            "Bulk": 90.0,
        }
        assert plan["refused_paths"] == [] and plan["snapshot"] is True
        assert plan["database_bytes"] > 0
        assert "_needed_ids" not in plan
        assert await rows(ctx, "SELECT id FROM {s}.restores") == []
        assert await rows(ctx, "SELECT * FROM {s}.archives ORDER BY id") == before_archives
        assert not (files_root / "ab/cd/abcd1234").exists()
        assert (files_root / "zz" / "orphan.txt").exists()


async def test_busy_while_a_backup_or_another_restore_runs(
    app_db: str, open_ctx: Callable[..., Any]
):
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        async with operation_lock(ctx.catalog, "backup"):
            with pytest.raises(BusyError, match="cannot start a restore"):
                await start_restore(ctx, b1, options(files=False))
        assert await rows(ctx, "SELECT id FROM {s}.restores") == []

        started = await start_restore(ctx, b1, options(files=False))
        with pytest.raises(BusyError, match=f"restore {started['id']} is requested"):
            await start_restore(ctx, b1, options(files=False))

        # A request that reaches "restoring" while a backup holds the lock waits; it
        # neither fails nor changes anything, and completes once the lock is free.
        before = pg.table_rows(app_db)
        async with operation_lock(ctx.catalog, "backup"):
            for _ in range(100):
                await workers_of(ctx).restorer.advance_all()
                view = await restore_view(ctx, started["id"])
                if view["state"] == "restoring":
                    break
                await asyncio.sleep(0.05)
            await workers_of(ctx).restorer.advance_all()
            view = await restore_view(ctx, started["id"])
            assert view["state"] == "restoring" and view["error"] is None
            assert view["steps"] == {}
            with pytest.raises(BusyError, match=f"restore {started['id']} is restoring"):
                await start_restore(ctx, b1, options(files=False))
        assert pg.table_rows(app_db) == before
        restored(await drive(ctx, started["id"]))


@pytest.mark.parametrize("how", ["stopped", "killed"])
async def test_a_restore_interrupted_during_the_database_step_resumes_after_a_restart(
    rich_db: str,
    open_ctx: Callable[..., Any],
    files_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
):
    """ "stopped": a graceful shutdown cancels the work (the placed files are taken back);
    "killed": like SIGKILL, nothing cleans up (the placed file stays, psql's transaction
    dies with its connection)."""
    marker = tmp_path / "pg_restore-started"
    slow = pg_restore_wrapper(
        tmp_path / "pg_restore-slow", f'touch "{marker}"\nsleep 60\nexec "$REAL" "$@"\n'
    )
    archived = disk(files_root)
    if how == "killed":

        async def no_cleanup(placement: object) -> None:
            return None

        monkeypatch.setattr(restoring_step, "remove_placed", no_cleanup)
    async with open_ctx(database={"pg_restore": str(slow)}) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        at_backup = await capture(rich_db)
        before_restore = await change_database(rich_db, at_backup)
        (files_root / "ab/cd/abcd1234").unlink()
        started = await start_restore(ctx, b1, options())
        rid = started["id"]

        task = asyncio.create_task(drive(ctx, rid))
        for _ in range(400):
            if marker.exists() or task.done():
                break
            await asyncio.sleep(0.05)
        assert marker.exists(), "the database step never started"
        # The daemon goes away in the middle of the database restore: every task is
        # cancelled (the advance may run in a task a finished fetch kicked off).
        running = [task, *ctx.tasks]
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        assert task.cancelled()
        assert processes_mentioning(str(slow)) == []  # killed together with psql
        interrupted = await restore_rows.get(ctx.catalog.pool, ctx.catalog, rid)
        assert interrupted is not None and interrupted["state"] == "restoring"
        assert "database" not in interrupted["steps"]
        assert list(interrupted["steps"]["files_placed"]["files"]) == ["ab/cd/abcd1234"]
        snapshot = interrupted["steps"]["snapshot"]
        (await capture(rich_db)).assert_same(before_restore)  # rolled back
        assert (files_root / "ab/cd/abcd1234").exists() == (how == "killed")
    monkeypatch.undo()

    async with open_ctx() as ctx:  # a new daemon, with the real pg_restore
        view = restored(await drive(ctx, rid))
        assert view["steps"]["snapshot"] == snapshot  # no second snapshot
        [snap] = await restore_rows.snapshots(ctx.catalog.pool, ctx.catalog)
        assert snap["id"] == snapshot["id"]
        (await capture(rich_db)).assert_same(at_backup)
        assert disk(files_root) == archived
        assert view["steps"]["files"]["placed"] == 1
