"""Nothing hangs: a restore that cannot get its locks fails in time and changes nothing; a
pg_dump whose consumer stops, that fails mid-stream, or that leaves a helper holding its
pipe is reaped; short-lived tools (--version, --list) are bounded. Each wait in these tests
is bounded itself, so a hang fails the test instead of stalling the run."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from glacierd.pgconnect.conninfo import parse_conninfo
from glacierd.sources import processes
from glacierd.sources.database import DatabaseSourceError, PgDump, RestoreError, tool_version
from glacierd.sources.database_restore import restore_dump
from tests import pg
from tests.restore_schema import capture

LOCK_TIMEOUT = 1.0
# A restore that cannot get a lock must end within the lock timeout and this margin.
MARGIN = 30.0

# Enough rows that pg_restore's script (several MB) fills every pipe and buffer between
# pg_restore, glacierd and psql while psql waits for a lock.
BULK = """
CREATE TABLE bulk (id integer PRIMARY KEY, filler text NOT NULL);
INSERT INTO bulk SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 40000) g;
"""


def processes_mentioning(needle: str) -> list[int]:
    """Pids of live processes whose command line mentions ``needle`` (a unique tmp path)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if needle in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


def executable(path: Path, script: str) -> Path:
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def other_sessions(dbname: str) -> list[str]:
    conn = await asyncpg.connect(pg.dsn_for(dbname))
    try:
        rows = await conn.fetch(
            "SELECT application_name || ' ' || state AS s FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [r["s"] for r in rows]
    finally:
        await conn.close()


async def until(predicate: Callable[[], object], what: str, seconds: float = 15) -> None:
    """Poll an async predicate until it holds (bounded)."""
    deadline = time.monotonic() + seconds
    while not await predicate():  # type: ignore[misc]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def bulk_db(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The sample schema plus a bulk table; a custom-format dump of it; then a change."""
    name = await pg.create_database("gthang")
    try:
        await pg.populate(name)
        await pg.populate(name, BULK)
        dump = tmp_path / "bulk.dump"
        subprocess.run(
            ["pg_dump", "-Fc", "-f", str(dump), "-d", pg.dsn_for(name)], check=True, timeout=120
        )
        await pg.populate(name, "DELETE FROM bulk WHERE id > 100; CREATE TABLE later (i int);")
        yield name, dump
    finally:
        await pg.drop_database(name)


# ------------------------------------------------------------------------------------------
# the database restore


async def test_a_restore_that_cannot_get_its_locks_fails_in_time_and_changes_nothing(
    bulk_db: tuple[str, Path], tmp_path: Path
):
    name, dump = bulk_db
    before = await capture(name)
    holder = await asyncpg.connect(pg.dsn_for(name))
    try:
        await holder.execute("BEGIN; LOCK TABLE bulk IN SHARE MODE")
        restore = restore_dump(
            dump=dump,
            conninfo=parse_conninfo(pg.dsn_for(name)),
            pg_restore="pg_restore",
            psql="psql",
            catalog_schema="glacierd",
            work_dir=tmp_path / "work",
            lock_timeout_seconds=LOCK_TIMEOUT,
            terminate_connections=False,
        )
        with pytest.raises(RestoreError) as failure:
            await asyncio.wait_for(restore, LOCK_TIMEOUT + MARGIN)
        message = str(failure.value)
        assert f"held locks for more than {LOCK_TIMEOUT:g} s" in message
        assert "restore.terminate_connections = true" in message
        assert "the database was not changed" in message
        # pg_restore and psql are gone, and so is psql's session with its locks.
        assert processes_mentioning(str(dump)) == []

        async def only_the_holder_left() -> bool:
            return len(await other_sessions(name)) == 1

        await until(only_the_holder_left, "the restore's session to end")
        assert await holder.fetchval("SELECT count(*) FROM bulk") == 100  # still in its txn
    finally:
        await holder.close()
    (await capture(name)).assert_same(before)
    # Nothing of the restore holds a lock any more: an exclusive lock is granted at once.
    conn = await asyncpg.connect(pg.dsn_for(name))
    try:
        await conn.execute("BEGIN; LOCK TABLE bulk IN ACCESS EXCLUSIVE MODE NOWAIT; ROLLBACK")
    finally:
        await conn.close()


async def test_a_pg_restore_list_that_never_ends_is_bounded(
    bulk_db: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    name, dump = bulk_db
    monkeypatch.setattr(processes, "TOOL_SECONDS", 1.0)
    stuck = executable(tmp_path / "pg_restore-stuck", "sleep 300\n")
    restore = restore_dump(
        dump=dump,
        conninfo=parse_conninfo(pg.dsn_for(name)),
        pg_restore=str(stuck),
        psql="psql",
        catalog_schema="glacierd",
        work_dir=tmp_path / "work",
        lock_timeout_seconds=LOCK_TIMEOUT,
        terminate_connections=False,
    )
    with pytest.raises(RestoreError, match="did not finish within 1 s and was killed"):
        await asyncio.wait_for(restore, MARGIN)
    assert processes_mentioning(str(stuck)) == []


# ------------------------------------------------------------------------------------------
# pg_dump and the other tools


async def test_a_dump_whose_consumer_stops_is_reaped(app_db: str, tmp_path: Path):
    """The consumer (the store, the disk) is slow, then fails, while pg_dump still has a lot
    to write: the dump is killed and reaped, and the consumer's error comes through."""
    writer = executable(tmp_path / "pg_dump-lots", "exec head -c 100000000 /dev/zero\n")
    dump = PgDump(str(writer), parse_conninfo(pg.dsn_for(app_db)))

    async def writer_blocked() -> bool:
        # Every buffer between pg_dump and glacierd is full: pg_dump waits in a pipe write.
        assert dump.proc is not None
        return "pipe_write" in Path(f"/proc/{dump.proc.pid}/wchan").read_text()

    async def consume() -> None:
        async with aclosing(dump.chunks()) as chunks:
            async for _chunk in chunks:
                await until(writer_blocked, "pg_dump to fill the pipe")
                raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        await asyncio.wait_for(consume(), MARGIN)
    assert processes_mentioning(str(writer)) == []
    assert dump.proc is not None and dump.proc.returncode == -signal.SIGKILL


async def test_a_dump_that_fails_mid_stream_reports_why(app_db: str, tmp_path: Path):
    failing = executable(
        tmp_path / "pg_dump-fails",
        "head -c 20000000 /dev/zero\n"
        'echo "pg_dump: error: could not write to output: No space left on device" >&2\n'
        "exit 1\n",
    )
    dump = PgDump(str(failing), parse_conninfo(pg.dsn_for(app_db)))
    received = 0

    async def consume() -> None:
        nonlocal received
        async with aclosing(dump.chunks()) as chunks:
            async for chunk in chunks:
                received += len(chunk)

    with pytest.raises(DatabaseSourceError) as failure:
        await asyncio.wait_for(consume(), MARGIN)
    assert received == 20_000_000
    assert "pg_dump exited with code 1" in str(failure.value)
    assert "could not write to output: No space left on device" in str(failure.value)
    assert processes_mentioning(str(failing)) == []


@pytest.mark.parametrize("helper", ["in its process group", "in a session of its own"])
async def test_a_dump_whose_helper_keeps_the_pipe_open_is_reaped(
    app_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, helper: str
):
    """A wrapper exits but leaves a background child holding stdout and stderr: no end of
    file ever comes. glacierd notices the exit and stops waiting for the pipe."""
    monkeypatch.setattr(processes, "REAP_SECONDS", 0.5)
    pidfile = tmp_path / "helper.pid"
    start = "setsid sleep 300" if helper == "in a session of its own" else "sleep 300"
    wrapper = executable(
        tmp_path / "pg_dump-helper",
        "head -c 3000000 /dev/zero\n"
        'echo "pg_dump: error: connection lost" >&2\n'
        f'{start} &\necho $! > "{pidfile}"\nexit 1\n',
    )
    dump = PgDump(str(wrapper), parse_conninfo(pg.dsn_for(app_db)))

    async def consume() -> int:
        received = 0
        async with aclosing(dump.chunks()) as chunks:
            async for chunk in chunks:
                received += len(chunk)
        return received

    try:
        with pytest.raises(DatabaseSourceError, match=r"code 1 .*connection lost"):
            await asyncio.wait_for(consume(), MARGIN)
        assert processes_mentioning(str(wrapper)) == []
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


async def test_a_dump_waiting_for_a_lock_gives_up_when_asked_to(app_db: str):
    """With lock_wait_seconds (the safety snapshot before a restore), pg_dump stops waiting
    for another session's exclusive lock, with a sentence that says so."""
    holder = await asyncpg.connect(pg.dsn_for(app_db))
    try:
        await holder.execute("BEGIN; LOCK TABLE documents IN ACCESS EXCLUSIVE MODE")
        dump = PgDump("pg_dump", parse_conninfo(pg.dsn_for(app_db)), lock_wait_seconds=1)

        async def consume() -> None:
            async with aclosing(dump.chunks()) as chunks:
                async for _chunk in chunks:
                    pass

        with pytest.raises(DatabaseSourceError, match="held locks for more than 1 s"):
            await asyncio.wait_for(consume(), MARGIN)
    finally:
        await holder.close()


async def test_a_tool_that_never_answers_its_version_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(processes, "TOOL_SECONDS", 1.0)
    stuck = executable(tmp_path / "pg_dump-silent", "sleep 300\n")
    with pytest.raises(DatabaseSourceError, match="did not answer within 1 s"):
        await asyncio.wait_for(tool_version(str(stuck), "database.pg_dump"), MARGIN)
    assert processes_mentioning(str(stuck)) == []


# ------------------------------------------------------------------------------------------
# the real daemon


def sql(dbname: str, statement: str) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(pg.dsn_for(dbname))
        try:
            return await conn.fetchval(statement)
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.mark.parametrize(
    "mode",
    [
        "SHARE",  # the restore's transaction waits for it
        "ACCESS EXCLUSIVE",  # the safety snapshot's pg_dump waits for it
    ],
)
def test_the_daemon_fails_a_restore_that_cannot_get_its_locks_and_carries_on(
    mode: str, daemon_factory, make_settings, app_db: str
):
    asyncio.run(pg.populate(app_db, BULK))
    d = daemon_factory(make_settings(restore={"lock_timeout_seconds": 2}))
    backup = d.wait_backup(d.request("POST", "/backups").json()["id"])
    assert backup["status"] == "completed"
    asyncio.run(pg.populate(app_db, "DELETE FROM bulk WHERE id > 100; CREATE TABLE later (i int)"))
    before = pg.table_rows(app_db)
    holder = subprocess.Popen(
        [
            "psql",
            "-X",
            "-q",
            "-d",
            pg.dsn_for(app_db),
            "-c",
            f"BEGIN; LOCK TABLE bulk IN {mode} MODE; SELECT pg_sleep(600);",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        holder_pid = d.wait_for(
            lambda: sql(
                app_db,
                "SELECT pid FROM pg_locks WHERE relation = 'bulk'::regclass AND granted "
                f"AND mode = '{mode.title().replace(' ', '')}Lock'",
            ),
            what="the other session's lock",
        )
        r = d.request("POST", f"/backups/{backup['id']}/restore")
        assert r.status == 202, r.body
        rid = r.json()["id"]

        def ended() -> dict[str, Any] | None:
            view = d.request("GET", f"/restores/{rid}").json()
            return view if view["state"] in ("restored", "failed") else None

        final = d.wait_for(ended, timeout=2 + MARGIN, what="the restore to fail")
        assert final["state"] == "failed"
        assert "held locks for more than 2 s" in final["error"], final["error"]
        assert "nothing was changed" in final["error"] or "not changed" in final["error"]
        health = d.request("GET", "/health")
        assert health.status == 200 and health.json()["status"] == "ok"
    finally:
        sql(
            app_db,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()",
        )
        holder.wait(10)
    assert holder_pid
    assert pg.table_rows(app_db) == before  # unchanged (read once the lock is gone)
    # The lock is free and glacierd goes on: the next backup is accepted and completes.
    after = d.request("POST", "/backups")
    assert after.status == 202, after.body
    assert d.wait_backup(after.json()["id"])["status"] == "completed"
    assert d.stop() == 0
    assert "Traceback" not in d.logs()
