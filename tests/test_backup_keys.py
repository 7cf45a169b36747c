"""One attempt, one key: cleaning up after a failed backup never touches an object another
backup stored; odd file names never collide with another archive's key; finished uploads
are recorded as they complete (a crash does not throw them away); and a vault archive whose
upload completed just as the backup was cancelled is found and removed, not orphaned.

In-process with the local vault, the real daemon against moto's S3 behind a fault proxy,
and the vault store against moto's Glacier.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.glacier.models import glacier_backends

from glacierd.config import config_from_dict
from glacierd.context import Context, open_context
from glacierd.operations.backup import run_backup, start_backup
from glacierd.operations.recovery import recover_interrupted
from glacierd.stores.base import StoreError
from tests import pg
from tests.aws_fixtures import AWS_ENV, REGION, aws_client
from tests.test_backup_faults import ThreadedFaultProxy


async def rows(ctx: Context, sql: str, *args: Any) -> list[dict[str, Any]]:
    records = await ctx.catalog.pool.fetch(sql.replace("{s}", ctx.catalog.schema_sql), *args)
    return [dict(r) for r in records]


def vault_files(ctx: Context) -> dict[str, bytes]:
    root = ctx.config.store.local.path  # type: ignore[union-attr]
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".retrievals" not in p.parts
    }


async def stored_files(ctx: Context, backup_id: int) -> dict[str, dict[str, Any]]:
    """The file archives a backup references, by path."""
    found = await rows(
        ctx,
        "SELECT a.* FROM {s}.archives a JOIN {s}.backup_archives ba ON ba.archive_id = a.id "
        "WHERE ba.backup_id = $1 AND a.kind = 'file'",
        backup_id,
    )
    return {a["path"]: a for a in found}


def bid(summary: dict[str, object]) -> int:
    return int(summary["backup_id"])  # type: ignore[call-overload]


# ------------------------------------------------------------------------------------------
# item 1: cleaning one attempt never touches another


async def test_cleanup_of_a_failed_attempt_never_deletes_a_newer_backups_object(
    ctx: Context, files_root: Path, monkeypatch: pytest.MonkeyPatch
):
    new = files_root / "new" / "p.bin"
    new.parent.mkdir()
    data = os.urandom(5000)
    new.write_bytes(data)

    # B1: the store fails while new/p.bin uploads, and the store is still down when B1
    # cleans up after itself, so its rows stay for recovery to finish at the next start.
    real_put = ctx.store.put

    async def outage_for_p(key: str, chunks: Any, **kwargs: Any) -> Any:
        if "new/p.bin" in key:
            raise StoreError("simulated store outage during the upload")
        return await real_put(key, chunks, **kwargs)

    async def outage(ref: Any) -> None:
        raise StoreError("simulated store outage during the cleanup")

    monkeypatch.setattr(ctx.store, "put", outage_for_p)
    monkeypatch.setattr(ctx.store, "delete", outage)
    with pytest.raises(StoreError, match="during the upload"):
        await run_backup(ctx, "test")
    monkeypatch.undo()
    [b1] = await rows(ctx, "SELECT id, status FROM {s}.backups")
    assert b1["status"] == "failed"
    assert await rows(ctx, "SELECT id FROM {s}.archives WHERE created_by = $1", b1["id"])

    # B2 (the store is back) archives new/p.bin.
    b2 = bid(await run_backup(ctx, "test"))
    p2 = (await stored_files(ctx, b2))["new/p.bin"]

    # The next start finishes B1's cleanup: B2's object must survive it.
    assert await recover_interrupted(ctx) == []
    assert vault_files(ctx)[p2["store_key"]] == data
    assert await rows(ctx, "SELECT id FROM {s}.archives WHERE created_by = $1", b1["id"]) == []

    # Later backups adopt B2's archive, which is still whole.
    b3 = await run_backup(ctx, "test")
    assert b3["new_files"] == 0
    assert (await stored_files(ctx, bid(b3)))["new/p.bin"]["id"] == p2["id"]
    for path, archive in (await stored_files(ctx, bid(b3))).items():
        assert vault_files(ctx)[archive["store_key"]] == (files_root / path).read_bytes()


async def test_cleanup_never_deletes_an_object_another_archive_uses(ctx: Context):
    """Rows from before per-attempt keys (or any other way two rows share a key): the
    object stays as long as any other archive names it."""
    done = await run_backup(ctx, "test")
    kept = await stored_files(ctx, bid(done))
    shared = kept["cache_free_name.txt"]["store_key"]
    pool, cat = ctx.catalog.pool, ctx.catalog
    failed = await pool.fetchval(
        f"INSERT INTO {cat.schema_sql}.backups (status, error) VALUES ('failed', 'old') "
        "RETURNING id"
    )
    await pool.execute(
        f"INSERT INTO {cat.schema_sql}.archives "
        "(kind, store_name, store_key, path, size, created_by) "
        "VALUES ('file', $1, $2, 'cache_free_name.txt', 6, $3)",
        ctx.store.name,
        shared,
        failed,
    )
    await recover_interrupted(ctx)
    assert vault_files(ctx)[shared] == b"hello\n"
    assert await rows(ctx, "SELECT id FROM {s}.archives WHERE created_by = $1", failed) == []


# ------------------------------------------------------------------------------------------
# a file literally named like another archive's key


async def test_odd_names_never_collide_with_another_archives_key(ctx: Context, files_root: Path):
    first = bid(await run_backup(ctx, "test"))
    nxt = first + 1
    target = files_root / "cache_free_name.txt"
    target.write_bytes(b"changed, and longer than before\n")  # archived again by backup nxt
    odd = {
        f"cache_free_name.txt@backup{nxt}": b"a file literally named like the new key",
        f"cache_free_name.txt@backup{nxt}@backup{nxt}": b"and one named like that one's key",
        f"cache_free_name.txt@backup{first}": b"named like the first backup's key",
        f"ab@backup{nxt}/x": b"a directory named like a key",
    }
    for name, content in odd.items():
        (files_root / name).parent.mkdir(parents=True, exist_ok=True)
        (files_root / name).write_bytes(content)

    second = await run_backup(ctx, "test")
    assert bid(second) == nxt
    assert second["new_files"] == 1 + len(odd)
    archives = await stored_files(ctx, nxt)
    keys = [a["store_key"] for a in archives.values()]
    assert len(set(keys)) == len(keys)
    stored = vault_files(ctx)
    for path, archive in archives.items():
        assert stored[archive["store_key"]] == (files_root / path).read_bytes(), path
    # The first version of the changed file is still there, unchanged.
    [old] = await rows(
        ctx,
        "SELECT store_key FROM {s}.archives WHERE path = 'cache_free_name.txt' AND created_by = $1",
        first,
    )
    assert stored[old["store_key"]] == b"hello\n"


# ------------------------------------------------------------------------------------------
# item 9: finished uploads are recorded as they complete


def catalog_rows(dbname: str, sql: str) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(pg.dsn_for(dbname))
        try:
            return [dict(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def proxy(moto_server: str) -> Any:
    threaded = ThreadedFaultProxy(moto_server)
    threaded.start()
    try:
        yield threaded
    finally:
        threaded.stop()


def test_a_kill_mid_backup_keeps_every_upload_that_finished(
    daemon_factory: Callable,
    make_settings: Callable,
    moto_server: str,
    s3_bucket: str,
    proxy: ThreadedFaultProxy,
    files_root: Path,
    app_db: str,
):
    for n in range(12):
        (files_root / "many").mkdir(exist_ok=True)
        (files_root / "many" / f"{n:02d}.bin").write_bytes(os.urandom(1000 + n))
    slow = files_root / "zz-slow.bin"
    slow.write_bytes(os.urandom(2000))
    # This one upload reaches S3 but its answer never comes back before the kill.
    proxy.inject("slow", method="PUT", path="zz-slow.bin", delay=600)
    settings = make_settings(
        store={
            "type": "s3",
            "s3": {
                "bucket": s3_bucket,
                "region": REGION,
                "endpoint_url": proxy.url,
                "storage_class": "GLACIER_IR",
            },
        }
    )
    d = daemon_factory(settings, env=AWS_ENV)
    assert d.request("POST", "/backups").status == 202
    s3 = aws_client("s3", moto_server)
    d.wait_for(
        lambda: s3.list_objects_v2(Bucket=s3_bucket, Prefix="files/").get("KeyCount") == 16,
        what="every file object in the bucket",
    )
    finished = 15  # 12 + the 3 sample files; the slow one is still waiting for its answer
    d.wait_for(
        lambda: (
            len(
                catalog_rows(
                    app_db,
                    "SELECT id FROM glacierd.archives WHERE kind = 'file' AND state = 'stored'",
                )
            )
            == finished
        ),
        what="each finished upload recorded as stored while the backup runs",
    )
    d.kill()

    d.start()  # recovery at start-up
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    kept = catalog_rows(app_db, "SELECT store_key FROM glacierd.archives WHERE state = 'stored'")
    assert {r["store_key"] for r in kept if r["store_key"].startswith("files/")} <= listed
    assert len([k for k in listed if k.startswith("files/")]) == finished  # slow one removed
    proxy.clear()
    again = d.wait_backup(d.request("POST", "/backups").json()["id"])
    assert again["status"] == "completed", again
    assert again["new_files"] == 1  # only the upload that never finished
    assert again["file_count"] == 16
    d.stop()


# ------------------------------------------------------------------------------------------
# item 9: vault archives are deleted by their ArchiveId


def backend_archives(vault: str) -> dict[str, Any]:
    return glacier_backends[DEFAULT_ACCOUNT_ID][REGION].vaults[vault].archives


async def test_a_vault_dump_completed_as_the_backup_is_cancelled_is_not_orphaned(
    make_settings: Callable, vault_moto: str, monkeypatch: pytest.MonkeyPatch
):
    vault = f"keys-{uuid.uuid4().hex[:8]}"
    aws_client("glacier", vault_moto).create_vault(vaultName=vault)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    settings = make_settings(
        store={"type": "vault", "vault": {"vault": vault, "endpoint_url": vault_moto}}
    )
    async with open_context(config_from_dict(settings)) as ctx:
        real_call = ctx.store._call  # type: ignore[attr-defined]
        completed, resume = asyncio.Event(), asyncio.Event()

        async def answer_late(operation: str, **params: Any) -> Any:
            response = await real_call(operation, **params)
            if operation == "complete_multipart_upload":
                # Glacier has the whole dump now; its answer is still on its way to us.
                completed.set()
                await resume.wait()
            return response

        monkeypatch.setattr(ctx.store, "_call", answer_late)
        handle = await start_backup(ctx, "test")
        await asyncio.wait_for(completed.wait(), 60)
        [archive_id] = list(backend_archives(vault))
        handle.task.cancel()  # shutdown arrives right then
        await asyncio.sleep(0)
        resume.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(handle.task, 60)
        monkeypatch.undo()
        assert await recover_interrupted(ctx) == []

        [backup] = await rows(ctx, "SELECT status, error FROM {s}.backups")
        assert backup["status"] == "failed"
        assert archive_id not in backend_archives(vault)  # deleted, not orphaned
        assert await rows(ctx, "SELECT id FROM {s}.archives") == []
