"""Restore requests as records: one active at a time (enforced by the database), created
atomically, moved only along the restore transition table, and failed — not left waiting
for ever — when an archive cannot be fetched; a full disk is reported while it waits.

In-process on real PostgreSQL, with the local vault or moto's S3 behind a fault proxy; the
races are forced with events and a table lock held from another connection.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import glacierd.operations.restore.plan as restore_plan
from glacierd.catalog import restores as restore_rows
from glacierd.catalog.locks import BusyError
from glacierd.config import config_from_dict
from glacierd.context import Context, open_context
from glacierd.operations.backup import run_backup
from glacierd.operations.restore import RestoreDriver, restore_view, start_restore
from tests import pg
from tests.aws_fixtures import REGION, FaultProxy
from tests.wiring import wire, workers_of

# ------------------------------------------------------------------------------------------
# helpers


async def rows(ctx: Context, sql: str, *args: Any) -> list[dict[str, Any]]:
    records = await ctx.catalog.pool.fetch(sql.replace("{s}", ctx.catalog.schema_sql), *args)
    return [dict(r) for r in records]


def options(**overrides: Any) -> dict[str, Any]:
    return {"tier": None, "database": True, "files": True, "dry_run": False, **overrides}


async def settle(ctx: Context) -> None:
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


async def drive_until(
    ctx: Context,
    restore_id: int,
    check: Callable[[dict[str, Any]], bool],
    timeout: float = 30,
    driver: RestoreDriver | None = None,
) -> dict[str, Any]:
    """Advance the request (with ``driver``, else the daemon's) until ``check`` holds."""
    driver = driver or workers_of(ctx).restorer
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await driver.advance_all()
        view = await restore_view(ctx, restore_id)
        if check(view):
            return view
        assert loop.time() < deadline, f"restore {restore_id} never got there: {view}"
        await asyncio.sleep(0.05)


def bid(summary: dict[str, object]) -> int:
    return int(summary["backup_id"])  # type: ignore[call-overload]


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


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("glacierd.operations.fetch._BACKOFF_START", 0.05)


# ------------------------------------------------------------------------------------------
# item 4: one active restore, enforced by the database


async def test_two_restores_requested_at_once_only_one_is_accepted(
    app_db: str, open_ctx: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
):
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        # Both requests pass the "is another restore active?" check before either is
        # stored: the interleaving that used to accept both.
        real_check = restore_plan._check_not_busy
        checked = 0
        both = asyncio.Event()
        one_by_one = asyncio.Lock()  # the check briefly takes the operation lock

        async def check_then_wait(context: Context) -> None:
            nonlocal checked
            async with one_by_one:
                await real_check(context)
            checked += 1
            if checked == 2:
                both.set()
            await asyncio.wait_for(both.wait(), 30)

        monkeypatch.setattr(restore_plan, "_check_not_busy", check_then_wait)
        results = await asyncio.gather(
            start_restore(ctx, b1, options(files=False)),
            start_restore(ctx, b1, options(database=False)),
            return_exceptions=True,
        )
        accepted = [r for r in results if isinstance(r, dict)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(accepted) == 1 and len(refused) == 1, results
        assert isinstance(refused[0], BusyError), refused[0]
        winner = accepted[0]["id"]
        assert str(refused[0]) == (
            f"cannot start a restore: restore {winner} is requested; wait for it to finish "
            "(GET /restores/{id})."
        )
        assert [r["id"] for r in await rows(ctx, "SELECT id FROM {s}.restores")] == [winner]

        # Once it has finished, the next one is accepted.
        monkeypatch.undo()
        assert (await drive(ctx, winner))["state"] == "restored"
        assert (await start_restore(ctx, b1, options(files=False)))["state"] == "requested"


# ------------------------------------------------------------------------------------------
# item 5: restore states move only along the table


@pytest.mark.parametrize(
    ("start", "to"),
    [
        ("restored", "restoring"),
        ("restored", "failed"),
        ("failed", "retrieving"),
        ("failed", "restored"),
        ("requested", "restored"),
        ("retrieving", "restoring"),
    ],
)
async def test_illegal_restore_transitions_change_nothing(
    app_db: str, open_ctx: Callable[..., Any], start: str, to: str
):
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        rid = (await start_restore(ctx, b1, options(files=False)))["id"]
        await rows(
            ctx,
            "UPDATE {s}.restores SET state = $2, error = NULL, finished_at = NULL WHERE id = $1",
            rid,
            start,
        )
        before = await restore_rows.get(ctx.catalog.pool, ctx.catalog, rid)
        await restore_rows.set_state(ctx.catalog.pool, ctx.catalog, rid, to, "late")
        assert await restore_rows.get(ctx.catalog.pool, ctx.catalog, rid) == before


async def test_legal_restore_transitions_are_taken(app_db: str, open_ctx: Callable[..., Any]):
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        rid = (await start_restore(ctx, b1, options(files=False)))["id"]
        pool, cat = ctx.catalog.pool, ctx.catalog
        for state in ("retrieving", "fetching", "retrieving", "fetching", "restoring"):
            await restore_rows.set_state(pool, cat, rid, state)
            got = await restore_rows.get(pool, cat, rid)
            assert got is not None and got["state"] == state and got["finished_at"] is None
        await restore_rows.set_state(pool, cat, rid, "failed", "a reason")
        got = await restore_rows.get(pool, cat, rid)
        assert got is not None and (got["state"], got["error"]) == ("failed", "a reason")
        assert got["finished_at"] is not None


# ------------------------------------------------------------------------------------------
# item 6: a request is created in one transaction and never "ready" without its archives


async def wait_for_lock_wait(ctx: Context, table: str, timeout: float = 30) -> None:
    """Until some session waits for a lock while writing ``table``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await ctx.catalog.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE $1",
        f"%INSERT INTO%{table}%",
    ):
        assert loop.time() < deadline, f"nobody ever waited to write {table}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("what", ["files", "database"])
async def test_the_driver_never_sees_a_half_created_request(
    app_db: str, open_ctx: Callable[..., Any], files_root: Path, what: str
):
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        lost = files_root / "ab" / "ef" / "abef5678"
        original = lost.read_bytes()
        lost.unlink()
        rows_at_backup = pg.table_rows(app_db)
        await pg.populate(app_db, "DELETE FROM documents;")
        before = pg.table_rows(app_db)
        # Another session keeps the archive list from being written (readers still pass):
        # the request creation stops between its restores row and its restore_archives rows.
        blocker = await asyncpg.connect(pg.dsn_for(app_db))
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute(
                f"LOCK TABLE {ctx.catalog.schema_sql}.restore_archives IN SHARE MODE"
            )
            creating = asyncio.create_task(
                start_restore(ctx, b1, options(database=what == "database", files=what == "files"))
            )
            await wait_for_lock_wait(ctx, "restore_archives")
            for _ in range(3):  # the daemon's ticks while the request is being created
                await workers_of(ctx).restorer.advance_all()
            assert await restore_rows.snapshots(ctx.catalog.pool, ctx.catalog) == []
            visible = await rows(ctx, "SELECT state FROM {s}.restores")
            assert visible in ([], [{"state": "requested"}]), visible
            await tx.rollback()
        finally:
            await blocker.close()
        started = await asyncio.wait_for(creating, 30)
        view = await drive(ctx, started["id"])
        assert view["state"] == "restored", view
        if what == "files":
            assert view["steps"]["files"]["placed"] == 1
            assert view["steps"]["files"]["replaced"] == 0
            assert lost.read_bytes() == original
            assert pg.table_rows(app_db) == before
        else:
            assert pg.table_rows(app_db) == rows_at_backup
            assert not lost.exists()


async def test_a_request_whose_dump_is_missing_fails_with_the_reason(
    app_db: str, open_ctx: Callable[..., Any]
):
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        await pg.populate(app_db, "DELETE FROM documents;")
        before = pg.table_rows(app_db)
        rid = (await start_restore(ctx, b1, options(files=False)))["id"]
        # The archive list lost its database dump (a damaged catalog): never "all ready".
        await rows(ctx, "DELETE FROM {s}.restore_archives WHERE restore_id = $1", rid)
        view = await drive(ctx, rid)
        assert view["state"] == "failed"
        assert view["error"] == (
            f"restore {rid} lists 0 of the 1 archives it was created with; its archive list "
            "is damaged — request the restore again; nothing was changed."
        )
        assert pg.table_rows(app_db) == before
        assert await restore_rows.snapshots(ctx.catalog.pool, ctx.catalog) == []


# ------------------------------------------------------------------------------------------
# item 7: an archive that cannot be fetched fails the restore


async def test_an_archive_gone_from_the_store_fails_the_restore(
    app_db: str, open_ctx: Callable[..., Any], files_root: Path, tmp_path: Path
):
    async with open_ctx() as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        [lost] = await rows(ctx, "SELECT * FROM {s}.archives WHERE path = 'ab/ef/abef5678'")
        original = (files_root / "ab/ef/abef5678").read_bytes()
        (files_root / "ab/ef/abef5678").unlink()
        rid = (await start_restore(ctx, b1, options()))["id"]
        # Retrieved, but not downloaded yet (a driver without a fetcher)...
        no_downloads = RestoreDriver(ctx, None)
        view = await drive_until(ctx, rid, lambda v: v["state"] == "fetching", driver=no_downloads)
        (tmp_path / "vault" / lost["store_key"]).unlink()  # ...when it vanishes from the store
        view = await drive(ctx, rid, timeout=20)
        assert view["state"] == "failed"
        assert view["error"].startswith(
            f"archive {lost['id']} (ab/ef/abef5678) cannot be fetched: archive "
            f"{lost['store_key']} is not in the local vault"
        ), view["error"]
        assert view["error"].endswith("nothing was changed.")
        assert view["steps"] == {}
        assert not (files_root / "ab/ef/abef5678").exists()

        # The object comes back (restored from elsewhere): a new request is not failed by
        # the old request's verdict, it fetches the archive and completes.
        (tmp_path / "vault" / lost["store_key"]).write_bytes(original)
        view = await drive(ctx, (await start_restore(ctx, b1, options()))["id"])
        assert view["state"] == "restored", view
        assert (files_root / "ab/ef/abef5678").read_bytes() == original


@pytest.fixture
async def s3_proxy(moto_server: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(moto_server)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def s3_store(bucket: str, proxy: FaultProxy) -> dict[str, Any]:
    return {
        "type": "s3",
        "s3": {
            "bucket": bucket,
            "prefix": "p/",
            "region": REGION,
            "endpoint_url": proxy.url,
            "storage_class": "GLACIER_IR",  # readable at once: the fetch is what fails
        },
    }


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("denied", "S3 denied access to bucket"),
        # The client retries each download itself first, with pauses of seconds: two
        # attempts in a row stand for the five of the default.
        ("500", "failed to download 2 times in a row; the last error: "),
    ],
)
async def test_access_denied_or_repeated_failures_fail_the_restore(
    app_db: str,
    open_ctx: Callable[..., Any],
    files_root: Path,
    s3_bucket: str,
    s3_proxy: FaultProxy,
    fast_retries: None,
    fault: str,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr("glacierd.operations.fetch.MAX_FAILURES", 2)
    async with open_ctx(store=s3_store(s3_bucket, s3_proxy)) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        [lost] = await rows(ctx, "SELECT * FROM {s}.archives WHERE path = 'ab/ef/abef5678'")
        (files_root / "ab/ef/abef5678").unlink()
        s3_proxy.inject(fault, method="GET", path="ab/ef/abef5678", times=-1)
        view = await drive(ctx, (await start_restore(ctx, b1, options()))["id"], timeout=120)
        assert view["state"] == "failed"
        assert view["error"].startswith(
            f"archive {lost['id']} (ab/ef/abef5678) cannot be fetched: "
        ), view["error"]
        assert expected in view["error"], view["error"]
        assert view["error"].endswith("nothing was changed.")
        assert view["steps"] == {}
        assert s3_proxy.injected(fault) >= 1


# ------------------------------------------------------------------------------------------
# item 22: a full disk is reported while the restore waits, and the restore continues once
# there is space


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[Path]:
    """state_dir on its own 256 KiB file system (tmpfs), so a fetch can run out of space."""
    mount = tmp_path / "small-state"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_keeps_the_restore_waiting_with_the_directory_named(
    app_db: str,
    open_ctx: Callable[..., Any],
    files_root: Path,
    small_state_dir: Path,
    fast_retries: None,
):
    big = files_root / "big.bin"
    data = os.urandom(600 * 1024)  # larger than the whole state_dir file system
    big.write_bytes(data)
    async with open_ctx(state_dir=str(small_state_dir)) as ctx:
        b1 = bid(await run_backup(ctx, "test"))
        big.unlink()
        rid = (await start_restore(ctx, b1, options(database=False)))["id"]
        fetched = small_state_dir / "fetched"
        view = await drive_until(ctx, rid, lambda v: v["error"] is not None)
        assert view["state"] == "fetching", view
        assert view["error"].startswith(f"waiting: no space left in {fetched} for archive "), view
        assert "free space there" in view["error"] and "retried by itself" in view["error"]
        [item] = [a for a in view["archives"]["items"] if a["path"] == "big.bin"]
        assert item["retrieval_error"] == view["error"].removeprefix("waiting: ")

        # The operator makes room: the same request completes on its own.
        subprocess.run(["mount", "-o", "remount,size=4m", str(small_state_dir)], check=True)
        view = await drive(ctx, rid)
        assert view["state"] == "restored" and view["error"] is None, view
        assert big.read_bytes() == data
