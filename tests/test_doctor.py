"""``glacierd doctor`` run as an operator runs it: a subprocess on a config file.

One healthy setup where every check passes, then one broken setting per check, each of
which must fail that check (and only the checks that depend on it) with a sentence naming
what is wrong.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glacierd.catalog.pool import CatalogError
from glacierd.config import config_from_dict
from glacierd.doctor import Check, CheckResult, Doctor, run_checks
from glacierd.operations.errors import OperationError
from glacierd.stores.base import StoreError
from tests.aws_fixtures import AWS_ENV, REGION, aws_client
from tests.conftest import to_toml
from tests.daemon import free_port

CHECKS = [
    "configuration",
    "database",
    "catalog",
    "pg_dump",
    "pg_restore",
    "psql",
    "store credentials",
    "store",
    "disk space",
    "files",
    "sns",
]


def glacierd(
    tmp_path: Path, settings: dict, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"doctor-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(to_toml(settings))
    return subprocess.run(
        [sys.executable, "-m", "glacierd", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else {**os.environ, **AWS_ENV},
    )


def doctor(tmp_path: Path, settings: dict, env: dict[str, str] | None = None) -> tuple[int, dict]:
    """Run ``glacierd doctor``; returns (exit code, {check name: its output line})."""
    proc = glacierd(tmp_path, settings, "doctor", env=env)
    lines = proc.stdout.splitlines()
    by_name = {}
    for line in lines:
        label, _, rest = line.partition(" ")
        assert label in ("OK", "FAIL", "SKIP"), line
        by_name[rest.strip().split(":", 1)[0]] = line
    assert list(by_name) == CHECKS, proc.stdout + proc.stderr
    return proc.returncode, by_name


def only_failing(lines: dict[str, str]) -> set[str]:
    return {name for name, line in lines.items() if not line.startswith("OK ")}


boto = aws_client


def s3_settings(bucket: str, endpoint: str) -> dict:
    return {
        "type": "s3",
        "s3": {"bucket": bucket, "endpoint_url": endpoint, "region": REGION, "prefix": "prod/"},
    }


def vault_settings(vault: str, endpoint: str, **extra: Any) -> dict:
    return {
        "type": "vault",
        "vault": {"vault": vault, "endpoint_url": endpoint, "region": REGION, **extra},
    }


# ------------------------------------------------------------------------ healthy setup


def test_healthy_local_setup_after_a_backup(tmp_path: Path, make_settings: Callable) -> None:
    settings = make_settings()
    backup = glacierd(tmp_path, settings, "backup", "--json")
    assert backup.returncode == 0, backup.stderr
    dump_bytes = json.loads(backup.stdout)["database_bytes"]

    code, lines = doctor(tmp_path, settings)
    assert code == 0, lines
    assert all(line.startswith("OK    ") for line in lines.values()), lines
    assert "migrations applied, 1 backups recorded" in lines["catalog"]
    # The disk check sizes its threshold from the newest dump in the catalog.
    assert "newest database dump (backup 1, " in lines["disk space"]
    assert dump_bytes > 0
    assert "PostgreSQL 15" in lines["pg_dump"] and "PostgreSQL 15" in lines["pg_restore"]
    assert "PostgreSQL 15" in lines["psql"]
    assert "accepted a probe object and deleted it" in lines["store"]
    assert not (tmp_path / "vault" / ".glacierd-probe").exists()
    assert "orphan directory" in lines["files"] and "creatable" in lines["files"]


def test_json_output_on_a_fresh_catalog(tmp_path: Path, make_settings: Callable) -> None:
    proc = glacierd(tmp_path, make_settings(), "doctor", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == CHECKS
    for c in report["checks"]:
        assert set(c) == {"name", "ok", "detail", "fix", "skipped"}
        assert c["ok"] is True and c["fix"] is None and c["skipped"] is False
    catalog = next(c for c in report["checks"] if c["name"] == "catalog")
    # Doctor changes nothing: the schema it found missing is still missing.
    assert "not created yet" in catalog["detail"]
    again = json.loads(glacierd(tmp_path, make_settings(), "doctor", "--json").stdout)
    assert "not created yet" in again["checks"][2]["detail"]


def test_json_output_on_failure(tmp_path: Path, make_settings: Callable) -> None:
    proc = glacierd(
        tmp_path, make_settings(database={"pg_dump": "nonexistent"}), "doctor", "--json"
    )
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    failed = [c for c in report["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["pg_dump"]
    assert "nonexistent was not found" in failed[0]["detail"]
    assert "database.pg_dump" in failed[0]["fix"]


# ------------------------------------------------------------------- database and tools


def test_pg_dump_missing(tmp_path: Path, make_settings: Callable) -> None:
    code, lines = doctor(tmp_path, make_settings(database={"pg_dump": "nonexistent"}))
    assert code == 1
    assert only_failing(lines) == {"pg_dump"}
    assert lines["pg_dump"].startswith("FAIL  pg_dump: nonexistent was not found — install it")


def test_psql_missing(tmp_path: Path, make_settings: Callable) -> None:
    # A restore pipes pg_restore's script into psql: without it every restore fails.
    code, lines = doctor(tmp_path, make_settings(database={"psql": "nonexistent-psql"}))
    assert code == 1
    assert only_failing(lines) == {"psql"}
    assert lines["psql"].startswith("FAIL  psql: nonexistent-psql was not found"), lines["psql"]
    assert "database.psql" in lines["psql"]


def test_old_psql_names_both_versions(tmp_path: Path, make_settings: Callable) -> None:
    fake = tmp_path / "psql"
    fake.write_text("#!/bin/sh\necho 'psql (PostgreSQL) 11.2'\n")
    fake.chmod(0o755)
    code, lines = doctor(tmp_path, make_settings(database={"psql": str(fake)}))
    assert code == 1
    assert only_failing(lines) == {"psql"}
    assert "psql (PostgreSQL) 11.2" in lines["psql"] and "PostgreSQL 15" in lines["psql"]


def test_a_log_file_that_cannot_be_opened(tmp_path: Path, make_settings: Callable) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    settings = make_settings(logging={"file": str(blocker / "glacierd.log")})
    code, lines = doctor(tmp_path, settings)
    assert code == 1
    assert only_failing(lines) == {"configuration"}
    line = lines["configuration"]
    assert line.startswith(f"FAIL  configuration: logging.file {blocker}/glacierd.log cannot"), line
    assert "change logging.file" in line


def test_old_pg_dump_names_both_versions(tmp_path: Path, make_settings: Callable) -> None:
    fake = tmp_path / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    fake.chmod(0o755)
    code, lines = doctor(tmp_path, make_settings(database={"pg_dump": str(fake)}))
    assert code == 1
    assert only_failing(lines) == {"pg_dump"}
    line = lines["pg_dump"]
    assert line.startswith("FAIL  pg_dump: pg_dump is older than the server")
    assert "pg_dump (PostgreSQL) 9.6.24" in line and "PostgreSQL 15" in line
    assert "postgresql-client-15" in line  # the fix


def test_old_pg_restore_names_both_versions(tmp_path: Path, make_settings: Callable) -> None:
    fake = tmp_path / "pg_restore"
    fake.write_text("#!/bin/sh\necho 'pg_restore (PostgreSQL) 12.3'\n")
    fake.chmod(0o755)
    code, lines = doctor(tmp_path, make_settings(database={"pg_restore": str(fake)}))
    assert code == 1
    assert only_failing(lines) == {"pg_restore"}
    assert "pg_restore (PostgreSQL) 12.3" in lines["pg_restore"]
    assert "PostgreSQL 15" in lines["pg_restore"]


def test_database_unreachable(tmp_path: Path, make_settings: Callable, app_db: str) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:1/{app_db}"
    code, lines = doctor(tmp_path, make_settings(database={"dsn": dsn}))
    assert code == 1
    assert lines["database"].startswith("FAIL  database: the backed-up database")
    assert "127.0.0.1:1" in lines["database"] and "unreachable" in lines["database"]
    assert " — check that PostgreSQL is running" in lines["database"]
    assert lines["catalog"].startswith("FAIL  catalog:")  # same dsn
    # The tools are found, but cannot be compared with an unknown server.
    assert lines["pg_dump"].startswith("SKIP  pg_dump: pg_dump (PostgreSQL)")
    assert "database check failed" in lines["pg_dump"]
    assert lines["pg_restore"].startswith("SKIP  ")
    assert lines["psql"].startswith("SKIP  psql: psql (PostgreSQL)")
    # Everything that does not need the database still ran and passed.
    assert only_failing(lines) == {"database", "catalog", "pg_dump", "pg_restore", "psql"}
    assert "1.0 GiB (catalog unreachable)" in lines["disk space"]


# ------------------------------------------------------------------------------- stores


def test_s3_bucket_missing(tmp_path: Path, make_settings: Callable, moto_server: str) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    code, lines = doctor(tmp_path, make_settings(store=s3_settings(bucket, moto_server)))
    assert code == 1
    assert only_failing(lines) == {"store"}
    assert lines["store credentials"].startswith(
        "OK    store credentials: AWS credentials from env"
    )
    assert lines["store"] == (
        f"FAIL  store: S3 bucket {bucket} does not exist — create it or correct store.s3.bucket"
    )


def test_s3_probe_on_an_existing_bucket(
    tmp_path: Path, make_settings: Callable, moto_server: str, s3_bucket: str
) -> None:
    settings = make_settings(store=s3_settings(s3_bucket, moto_server))
    code, lines = doctor(tmp_path, settings)
    assert code == 0, lines
    assert lines["store"] == (
        f"OK    store: S3 bucket {s3_bucket} (prefix prod/) at {moto_server} accepted a probe "
        "object, returned it intact and deleted it"
    )
    s3 = boto("s3", moto_server)
    assert s3.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0  # the probe is gone
    assert not s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    # SNS disabled with an S3 store: a note, not a failure.
    assert lines["sns"] == (
        "OK    sns: SNS endpoint disabled: finished S3 restores are found by polling at an "
        "interval that depends on the retrieval tier"
    )


def test_no_aws_credentials(
    tmp_path: Path, make_settings: Callable, moto_server: str, s3_bucket: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    code, lines = doctor(tmp_path, make_settings(store=s3_settings(s3_bucket, moto_server)), env)
    assert code == 1
    assert only_failing(lines) == {"store credentials", "store"}
    assert lines["store credentials"].startswith("FAIL  store credentials: no AWS credentials")
    assert "AWS_ACCESS_KEY_ID" in lines["store credentials"]
    assert lines["store"] == "SKIP  store: not checked because the store credentials check failed"


def test_vault_ok_and_missing(tmp_path: Path, make_settings: Callable, vault_moto: str) -> None:
    name = f"glacierd-{uuid.uuid4().hex[:10]}"
    boto("glacier", vault_moto).create_vault(accountId="-", vaultName=name)
    code, lines = doctor(tmp_path, make_settings(store=vault_settings(name, vault_moto)))
    assert code == 0, lines
    assert lines["store"].startswith(f"OK    store: Glacier vault {name} (us-east-1)")
    assert "answers DescribeVault" in lines["store"]
    assert "finished vault jobs are found by polling" in lines["sns"]

    missing = f"missing-{uuid.uuid4().hex[:10]}"
    code, lines = doctor(tmp_path, make_settings(store=vault_settings(missing, vault_moto)))
    assert code == 1
    assert only_failing(lines) == {"store"}
    assert lines["store"] == (
        f"FAIL  store: vault {missing} does not exist in region us-east-1 — create it or fix "
        "store.vault.vault (and store.vault.region)"
    )


# ------------------------------------------------------------------------ files and sns


def test_orphan_dir_not_creatable(tmp_path: Path, make_settings: Callable) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    code, lines = doctor(tmp_path, make_settings(files={"orphan_dir": str(blocker / "orphans")}))
    assert code == 1
    assert only_failing(lines) == {"files"}
    assert lines["files"] == (
        f"FAIL  files: files.orphan_dir {blocker / 'orphans'} cannot be created: {blocker} is "
        "not a directory — point files.orphan_dir at a directory path beside files.root"
    )


def test_sns_port_taken_and_vault_topic_missing(
    tmp_path: Path, make_settings: Callable, vault_moto: str
) -> None:
    topic = "arn:aws:sns:us-east-1:123456789012:glacierd"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        sns = {"enabled": True, "port": port, "topic_arns": [topic]}
        code, lines = doctor(tmp_path, make_settings(sns=sns))
        assert code == 1
        assert only_failing(lines) == {"sns"}
        assert lines["sns"].startswith(
            f"FAIL  sns: port 127.0.0.1:{port} (sns.port) is in use by another process — "
        )
    # Port free now; a vault whose jobs announce nothing leaves the endpoint deaf.
    name = f"glacierd-{uuid.uuid4().hex[:10]}"
    boto("glacier", vault_moto).create_vault(accountId="-", vaultName=name)
    code, lines = doctor(tmp_path, make_settings(sns=sns, store=vault_settings(name, vault_moto)))
    assert code == 1
    assert only_failing(lines) == {"sns"}
    assert "store.vault.sns_topic is not set" in lines["sns"]
    assert lines["sns"].endswith("— set store.vault.sns_topic to one of sns.topic_arns")
    code, lines = doctor(
        tmp_path,
        make_settings(sns=sns, store=vault_settings(name, vault_moto, sns_topic=topic)),
    )
    assert code == 0, lines
    assert lines["sns"] == (
        f"OK    sns: listener 127.0.0.1:{port}/sns can be bound; accepting topics {topic}"
    )


# --------------------------------------------------------------------- the check runner


async def test_a_hanging_check_times_out_and_the_rest_still_run(
    make_settings: Callable,
) -> None:
    config = config_from_dict(make_settings())
    ran: list[str] = []

    async def hangs(d: Doctor) -> CheckResult:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def fine(d: Doctor) -> CheckResult:
        ran.append("fine")
        return CheckResult("fine", True, "all good")

    async def dependent(d: Doctor) -> CheckResult:
        ran.append("dependent")
        return CheckResult("dependent", True, "never")

    async def breaks(d: Doctor) -> CheckResult:
        raise RuntimeError("boom")

    checks = [
        Check("hangs", hangs),
        Check("fine", fine),
        Check("dependent", dependent, needs=("hangs",)),
        Check("breaks", breaks),
    ]
    results = await asyncio.wait_for(run_checks(config, checks, check_timeout=0.3), 5)
    assert [r.line() for r in results] == [
        "FAIL  hangs: no answer within 0.3 s — check the network, firewalls and the host, port "
        "or endpoint settings; a connection that hangs usually means packets are dropped on "
        "the way",
        "OK    fine: all good",
        "SKIP  dependent: not checked because the hangs check failed",
        "FAIL  breaks: unexpected RuntimeError: boom — run again with logging.level = 'debug' "
        "and report it as a glacierd bug",
    ]
    assert ran == ["fine"]


async def test_failures_are_rendered_from_the_errors_fields(make_settings: Callable) -> None:
    # Doctor prints an error's detail and fix as they are: nothing is split apart, so a
    # "; " inside the detail (a server's message) stays where it is.
    config = config_from_dict(make_settings())

    def failing(error: Exception) -> Check:
        async def check(d: Doctor) -> CheckResult:
            raise error

        return Check(type(error).__name__, check)

    results = await run_checks(
        config,
        [
            failing(
                StoreError("S3 bucket b does not exist", "create it or correct store.s3.bucket")
            ),
            failing(CatalogError("db is unreachable (Error: a; b)", "check that it runs")),
            failing(OperationError("backup 9 does not exist; GET /backups lists the ids.")),
        ],
    )
    assert [r.line() for r in results] == [
        "FAIL  StoreError: S3 bucket b does not exist — create it or correct store.s3.bucket",
        "FAIL  CatalogError: db is unreachable (Error: a; b) — check that it runs",
        "FAIL  OperationError: backup 9 does not exist; GET /backups lists the ids",
    ]
    assert results[1].as_dict() == {
        "name": "CatalogError",
        "ok": False,
        "detail": "db is unreachable (Error: a; b)",
        "fix": "check that it runs",
        "skipped": False,
    }


def test_doctor_beside_the_running_daemon(
    tmp_path: Path, make_settings: Callable, daemon_factory: Callable
) -> None:
    # On a live system the daemon holds the SNS port: that is not a conflict.
    topic = "arn:aws:sns:us-east-1:123456789012:glacierd"
    port = free_port()
    settings = make_settings(sns={"enabled": True, "port": port, "topic_arns": [topic]})
    daemon_factory(settings)
    code, lines = doctor(tmp_path, settings)
    assert code == 0, lines
    assert lines["sns"].startswith(
        f"OK    sns: listener 127.0.0.1:{port}/sns is held by the running glacierd"
    )
    assert "migrations applied, 0 backups recorded" in lines["catalog"]
