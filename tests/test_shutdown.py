"""SIGTERM: every kind of running work gets the same grace, no new work starts, the control
API answers 503 while stopping, and the daemon exits 0 with no traceback.

Each test pauses the work in the real daemon at a known point with a PostgreSQL lock held by
the test (seen in pg_stat_activity), sends SIGTERM, checks the stopping daemon's answers,
then lets the work go on.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from glacierd.config import config_from_dict
from glacierd.context import open_context
from glacierd.operations.backup import run_backup
from glacierd.operations.restore import RestoreDriver, start_restore, start_snapshot_restore
from glacierd.operations.restore.snapshot import take_snapshot
from tests import pg
from tests.daemon import Daemon

BAD_SIGNS = (
    "Traceback",
    "Event loop is closed",
    "Task was destroyed",
    "exception was never retrieved",
    "coroutine was never awaited",
)


def clean_exit(d: Daemon, timeout: float = 90) -> None:
    assert d.proc is not None
    code = d.proc.wait(timeout)
    logs = d.logs()
    assert code == 0, logs[-4000:]
    for sign in BAD_SIGNS:
        assert sign not in logs, logs[-6000:]
    assert any(e.get("event") == "service.stopped" for e in d.events())


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stopping(d: Daemon) -> bool:
    return any(e.get("event") == "service.stopping" for e in d.events())


async def _fetchval(dbname: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(pg.dsn_for(dbname))
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def sql_value(dbname: str, sql: str, *args: Any) -> Any:
    return asyncio.run(_fetchval(dbname, sql, *args))


def waiting_on_lock(dbname: str, like: str) -> bool:
    """A session of the daemon (or its pg_dump) waits for a lock the test holds."""
    return bool(
        sql_value(
            dbname,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
            "AND wait_event_type = 'Lock' AND (application_name = $2 OR query ILIKE $2)",
            dbname,
            like,
        )
    )


class HeldLock:
    """A transaction of the test's own holding a lock until released (its own thread-free
    event loop: the test is synchronous, the daemon a separate process)."""

    def __init__(self, dbname: str, sql: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.loop.run_until_complete(
            asyncpg.connect(pg.dsn_for(dbname))
        )
        self.tx = self.conn.transaction()
        self.loop.run_until_complete(self.tx.start())
        self.loop.run_until_complete(self.conn.execute(sql))

    def release(self) -> None:
        if not self.conn.is_closed():
            self.loop.run_until_complete(self.tx.rollback())
            self.loop.run_until_complete(self.conn.close())
        self.loop.close()


def assert_refuses_new_work(d: Daemon) -> None:
    """While stopping, the control API still answers, and refuses new work with 503."""
    for method, path in (("POST", "/backups"), ("POST", "/backups/1/restore")):
        try:
            resp = d.request(method, path, body={})
        except OSError as exc:
            raise AssertionError(
                f"the control API stopped answering while stopping: {exc}"
            ) from None
        assert resp.status == 503, (method, path, resp.status, resp.body)
        body = resp.json()
        assert body["status"] == 503 and "stopping" in body["error"], body
    assert d.request("GET", "/backups").status == 200  # reading is still fine


def test_sigterm_during_a_restore_tick_lets_it_finish(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict], app_db: str
) -> None:
    settings = make_settings(shutdown_timeout_seconds=60)

    async def request_snapshot_restore() -> int:
        # No daemon runs yet: the request waits for the daemon's scheduled restore tick.
        async with open_context(config_from_dict(settings)) as ctx:
            snap = await take_snapshot(ctx, reason="test")
            return (await start_snapshot_restore(ctx, snap["id"]))["id"]

    restore_id = asyncio.run(request_snapshot_restore())
    # The restore's own safety snapshot (a pg_dump) waits for this lock: the tick is paused
    # inside the restore.
    lock = HeldLock(app_db, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
    try:
        d = daemon_factory(settings)
        wait_until(lambda: waiting_on_lock(app_db, "pg_dump"), "the safety snapshot to wait")
        d.signal(signal.SIGTERM)
        wait_until(lambda: stopping(d), "the daemon to begin stopping")
        assert_refuses_new_work(d)
        assert d.proc is not None and d.proc.poll() is None  # still waiting for the restore
    finally:
        lock.release()
    clean_exit(d)
    state = sql_value(app_db, "SELECT state FROM glacierd.restores WHERE id = $1", restore_id)
    assert state == "restored"


def test_sigterm_during_a_fetch_that_would_start_more_work(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict], app_db: str
) -> None:
    settings = make_settings(shutdown_timeout_seconds=60)

    async def restore_waiting_for_fetch() -> int:
        async with open_context(config_from_dict(settings)) as ctx:
            await run_backup(ctx, "cli")
            request = await start_restore(
                ctx, 1, {"tier": None, "database": True, "files": True, "dry_run": False}
            )
            driver = RestoreDriver(ctx, None)  # no fetcher here: it stops at "fetching"
            await driver.advance_all()
            await driver.advance_all()
            return request["id"]

    restore_id = asyncio.run(restore_waiting_for_fetch())
    assert sql_value(app_db, "SELECT state FROM glacierd.restores WHERE id = $1", restore_id) == (
        "fetching"
    )
    # The daemon's fetch downloads and verifies the dump, then waits for this row lock to
    # record it local; once it may, it would kick the restore along (new work).
    lock = HeldLock(app_db, "SELECT 1 FROM glacierd.archives WHERE kind = 'database' FOR UPDATE")
    try:
        d = daemon_factory(settings)
        wait_until(
            lambda: waiting_on_lock(app_db, "%UPDATE%archives%"), "the fetch to wait for the row"
        )
        d.signal(signal.SIGTERM)
        wait_until(lambda: stopping(d), "the daemon to begin stopping")
        assert_refuses_new_work(d)
    finally:
        lock.release()
    clean_exit(d)
    row = asyncio.run(
        _fetchval(
            app_db,
            "SELECT r.state || ' ' || a.retrieval_status FROM glacierd.restores r, "
            "glacierd.archives a WHERE r.id = $1 AND a.kind = 'database'",
            restore_id,
        )
    )
    # The fetch finished; the restore did not move on during shutdown, and resumes at start.
    assert row == "fetching local"
    again = daemon_factory(settings, name="again")
    again.wait_for(
        lambda: again.request("GET", f"/restores/{restore_id}").json()["state"] == "restored",
        timeout=90,
        what="the restore to finish after the restart",
    )
    assert again.stop() == 0
