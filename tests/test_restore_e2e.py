"""Restores driven over HTTP on the real daemon: they complete on their own (S3 and vault,
with signed SNS notifications from moto), and survive the daemon being killed. The database
holds the realistic schema of tests/restore_schema.py, changed in every way after the
backup; a restore must make it equal to the backup (rows, schema, sequences, large
objects)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests import pg
from tests.aws_fixtures import (
    AWS_ENV,
    REGION,
    aws_client,
    notify_restores,
    sns_settings,
    subscribe,
)
from tests.daemon import free_port
from tests.restore_schema import CHANGES, RICH_SCHEMA, DbState, capture

client = aws_client


@pytest.fixture
async def app_db(app_db: str) -> str:
    """The sample database plus the realistic schema."""
    await pg.populate(app_db, RICH_SCHEMA)
    return app_db


def db_state(dbname: str) -> DbState:
    return asyncio.run(capture(dbname))


def sql(dbname: str, statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(pg.dsn_for(dbname))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def change_everything(app_db: str, files_root: Path) -> None:
    """After the backup: the database changes in every way, a file is lost, an unknown file
    appears."""
    asyncio.run(pg.populate(app_db, CHANGES))
    (files_root / "ab" / "ef" / "abef5678").unlink()
    (files_root / "uploads-after-backup").mkdir()
    (files_root / "uploads-after-backup" / "new.bin").write_bytes(b"new")


def wait_restore(d, restore_id: int, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        r = d.request("GET", f"/restores/{restore_id}").json()
        return r if r["state"] in ("restored", "failed") else None

    return d.wait_for(done, timeout, what=f"restore {restore_id} to end")


def check_restored(
    app_db: str, at_backup: DbState, files_root: Path, original: bytes, tmp_path: Path
) -> None:
    db_state(app_db).assert_same(at_backup)
    assert (files_root / "ab" / "ef" / "abef5678").read_bytes() == original
    assert not (files_root / "uploads-after-backup" / "new.bin").exists()
    assert (tmp_path / "orphans" / "uploads-after-backup" / "new.bin").read_bytes() == b"new"


def test_s3_restore_completes_on_its_own_with_sns(
    daemon_factory, make_settings, moto_server, s3_bucket, files_root, tmp_path, app_db
):
    topic = client("sns", moto_server).create_topic(Name=f"r-{uuid.uuid4().hex[:8]}")["TopicArn"]
    s3 = client("s3", moto_server)
    notify_restores(moto_server, s3_bucket, topic)
    sns_port = free_port()
    settings = make_settings(
        store={
            "type": "s3",
            "s3": {"bucket": s3_bucket, "endpoint_url": moto_server, "region": REGION},
        },
        sns=sns_settings(sns_port, topic, moto_server),
        schedule={"enabled": False, "poll_interval_seconds": 3600},
    )
    d = daemon_factory(settings, env=AWS_ENV)
    subscribe(moto_server, topic, sns_port)
    backup = d.wait_backup(d.request("POST", "/backups").json()["id"])
    at_backup = db_state(app_db)
    original = (files_root / "ab" / "ef" / "abef5678").read_bytes()
    change_everything(app_db, files_root)

    r = d.request("POST", f"/backups/{backup['id']}/restore", {"tier": "Standard"})
    assert r.status == 202, r.body
    rid = r.json()["id"]
    d.wait_for(
        lambda: d.request("GET", f"/restores/{rid}").json()["state"] == "retrieving",
        what="retrieving",
    )
    view = d.request("GET", f"/restores/{rid}").json()
    assert view["archives"]["by_status"] == {"pending": 2}
    assert view["expected_ready_at"] is not None
    # Glacier finishes (moto: when the object is next looked at); S3 → SNS → glacierd.
    for key in [
        a["key"]
        for a in backup["archives"]
        if a["kind"] == "database" or a["path"] == "ab/ef/abef5678"
    ]:
        s3.head_object(Bucket=s3_bucket, Key=key)
    final = wait_restore(d, rid)
    assert final["state"] == "restored", final
    check_restored(app_db, at_backup, files_root, original, tmp_path)
    assert any(
        e.get("source") == "sns" for e in d.events() if e.get("event") == "archive.status_changed"
    )
    d.stop()


def test_vault_restore_completes_on_its_own_with_sns(
    daemon_factory, make_settings, vault_moto, files_root, tmp_path, app_db
):
    vault = f"r-{uuid.uuid4().hex[:8]}"
    client("glacier", vault_moto).create_vault(vaultName=vault)
    topic = client("sns", vault_moto).create_topic(Name=vault)["TopicArn"]
    sns_port = free_port()
    settings = make_settings(
        store={
            "type": "vault",
            "vault": {
                "vault": vault,
                "endpoint_url": vault_moto,
                "region": REGION,
                "sns_topic": topic,
                "default_tier": "Expedited",
            },
        },
        sns=sns_settings(sns_port, topic, vault_moto),
        schedule={"enabled": False, "poll_interval_seconds": 3600},
    )
    d = daemon_factory(settings, env=AWS_ENV)
    subscribe(vault_moto, topic, sns_port)
    backup = d.wait_backup(d.request("POST", "/backups").json()["id"])
    at_backup = db_state(app_db)
    original = (files_root / "ab" / "ef" / "abef5678").read_bytes()
    change_everything(app_db, files_root)
    rid = d.request("POST", f"/backups/{backup['id']}/restore").json()["id"]
    glacier = client("glacier", vault_moto)
    jobs = d.wait_for(
        lambda: (
            len(glacier.list_jobs(vaultName=vault)["JobList"]) == 2
            and glacier.list_jobs(vaultName=vault)["JobList"]
        ),
        what="two jobs",
    )
    # Glacier publishes each finished job's description to the vault's topic.
    for job in jobs:
        deadline = time.monotonic() + 20
        desc = glacier.describe_job(vaultName=vault, jobId=job["JobId"])
        while desc["StatusCode"] != "Succeeded" and time.monotonic() < deadline:
            time.sleep(0.5)
            desc = glacier.describe_job(vaultName=vault, jobId=job["JobId"])
        desc.pop("ResponseMetadata")
        client("sns", vault_moto).publish(TopicArn=topic, Message=json.dumps(desc, default=str))
    final = wait_restore(d, rid)
    assert final["state"] == "restored", final
    check_restored(app_db, at_backup, files_root, original, tmp_path)
    d.stop()


def slow_pg_restore(tmp_path: Path) -> Path:
    tool = tmp_path / "slow_pg_restore"
    # Lists pass through; the script is generated only after a pause, so the daemon can be
    # killed while the restore transaction is open.
    tool.write_text(
        '#!/bin/sh\ncase "$1" in --list|--version|--schema-only) exec pg_restore "$@";; esac\n'
        'sleep 3\nexec pg_restore "$@"\n'
    )
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return tool


def test_kill_while_restoring_then_restart_finishes_correctly(
    daemon_factory, make_settings, files_root, tmp_path, app_db
):
    settings = make_settings(
        database={"pg_restore": str(slow_pg_restore(tmp_path))},
        schedule={"enabled": False, "poll_interval_seconds": 0.5},
    )
    d = daemon_factory(settings)
    backup = d.wait_backup(d.request("POST", "/backups").json()["id"])
    at_backup = db_state(app_db)
    original = (files_root / "ab" / "ef" / "abef5678").read_bytes()
    change_everything(app_db, files_root)
    before_restore = db_state(app_db)
    rid = d.request("POST", f"/backups/{backup['id']}/restore").json()["id"]
    d.wait_for(
        lambda: d.request("GET", f"/restores/{rid}").json()["state"] == "restoring",
        what="restoring",
    )
    time.sleep(1.0)  # inside the transaction: snapshot taken, pg_restore pausing
    busy = d.request("POST", "/backups")
    assert busy.status == 409 and f"restore {rid}" in busy.json()["error"]
    d.kill()
    subprocess.run(["pkill", "-f", "slow_pg_restore"], check=False)
    # Killed mid-transaction: PostgreSQL rolled back, the database is as before the restore.
    db_state(app_db).assert_same(before_restore)

    settings["database"].pop("pg_restore")
    d2 = daemon_factory(settings, name="restarted")
    final = wait_restore(d2, rid)
    assert final["state"] == "restored", final
    check_restored(app_db, at_backup, files_root, original, tmp_path)
    snaps = d2.request("GET", "/snapshots").json()["snapshots"]
    assert len(snaps) == 1, "the safety snapshot must be taken once, before the first attempt"
    assert final["steps"]["snapshot"]["id"] == snaps[0]["id"]
    d2.stop()


@pytest.mark.parametrize("state", ["requested", "retrieving", "fetching"])
def test_restart_resumes_a_request_left_in_each_state(
    state, daemon_factory, make_settings, files_root, tmp_path, app_db
):
    settings = make_settings(
        store={
            "type": "local",
            "local": {"path": str(tmp_path / "vault"), "retrieval_delay_seconds": 1},
        },
        schedule={"enabled": False, "poll_interval_seconds": 0.3},
    )
    d = daemon_factory(settings)
    backup = d.wait_backup(d.request("POST", "/backups").json()["id"])
    at_backup = db_state(app_db)
    original = (files_root / "ab" / "ef" / "abef5678").read_bytes()
    change_everything(app_db, files_root)
    rid = d.request("POST", f"/backups/{backup['id']}/restore").json()["id"]
    d.kill()  # SIGKILL right after the request was recorded
    # What survives a kill is the catalog: put the request in the state under test.
    sql(app_db, f"UPDATE glacierd.restores SET state = '{state}' WHERE id = {rid}")
    d2 = daemon_factory(settings, name="restarted")
    final = wait_restore(d2, rid)
    assert final["state"] == "restored", final
    check_restored(app_db, at_backup, files_root, original, tmp_path)
    d2.stop()


def test_cli_restore_waits_and_dry_run_changes_nothing(
    daemon_factory, make_settings, files_root, tmp_path, app_db
):
    d = daemon_factory()
    backup = d.wait_backup(d.request("POST", "/backups").json()["id"])
    at_backup = db_state(app_db)
    original = (files_root / "ab" / "ef" / "abef5678").read_bytes()
    change_everything(app_db, files_root)
    changed = db_state(app_db)
    base = [sys.executable, "-m", "glacierd", "--config", str(d.config)]
    env = {**os.environ}
    plan = subprocess.run(
        [*base, "restore", str(backup["id"]), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    body = json.loads(plan.stdout)
    assert body["dry_run"] is True and body["files_to_retrieve"]["count"] == 1
    assert body["orphans"]["count"] == 1 and "public.users" in body["tables"]
    db_state(app_db).assert_same(changed)
    assert d.request("GET", "/restores").json()["restores"] == []

    run = subprocess.run(
        [*base, "restore", str(backup["id"]), "--wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "restored" in run.stdout.splitlines()[-1]
    check_restored(app_db, at_backup, files_root, original, tmp_path)

    # Undo it: the safety snapshot brings back the state from before the restore.
    snap = d.request("GET", "/snapshots").json()["snapshots"][0]
    r = d.request("POST", f"/snapshots/{snap['id']}/restore")
    assert r.status == 202
    assert wait_restore(d, r.json()["id"])["state"] == "restored"
    db_state(app_db).assert_same(changed)
    d.stop()


def test_restore_api_refuses_bad_requests(daemon_factory):
    d = daemon_factory()
    b = d.wait_backup(d.request("POST", "/backups").json()["id"])
    cases = [
        (f"/backups/{b['id']}/restore", {"database": "yes"}, 400, "true or false"),
        (f"/backups/{b['id']}/restore", {"tier": "Now"}, 400, "tier"),
        (f"/backups/{b['id']}/restore", {"database": False, "files": False}, 422, "nothing"),
        (f"/backups/{b['id']}/restore", {"when": 1}, 400, "unknown field"),
        ("/backups/999/restore", {}, 404, "does not exist"),
        ("/snapshots/999/restore", {}, 404, "does not exist"),
    ]
    for path, body, status, text in cases:
        r = d.request("POST", path, body)
        assert r.status == status and text in r.json()["error"], (path, body, r.body)
    assert d.request("GET", "/restores/77").status == 404
    d.signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0
