"""deploy/demo.sh on a server with other databases: its names are configurable, and it never
drops or changes a database or role it did not create. Runs the whole demo once (backup,
retrieval, restore against the real daemon), in a work directory of its own."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests import pg

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "deploy" / "demo.sh"


async def admin(sql: str, dbname: str = "postgres") -> object:
    base, _, _ = pg.ADMIN_DSN.rpartition("/")
    conn = await asyncpg.connect(f"{base}/{dbname}")
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def run_demo(work: Path, db: str, role: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GLACIERD_DEMO_DB": db,
        "GLACIERD_DEMO_ROLE": role,
        "GLACIERD_DEMO_WORK": str(work),
    }
    return subprocess.run(
        ["bash", str(DEMO), *args], capture_output=True, text=True, timeout=240, env=env
    )


@pytest.fixture
def names() -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    db, role = f"gdemo_{suffix}", f"gdemo_{suffix}_owner"
    yield db, role
    subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            pg.ADMIN_DSN,
            "-c",
            f"DROP DATABASE IF EXISTS {db} WITH (FORCE)",
            "-c",
            f"DROP ROLE IF EXISTS {role}",
        ],
        capture_output=True,
        check=False,
    )


async def someone_elses_database(db: str) -> None:
    await admin(f"CREATE DATABASE {db}")
    await admin("CREATE TABLE precious AS SELECT 'keep me' AS v", db)


@pytest.mark.timeout(600)
async def test_demo_runs_and_drops_only_what_it_created(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    db, role = names
    work = tmp_path / "demo-work"

    # The name is taken by another database: the demo stops and leaves it alone.
    await someone_elses_database(db)
    refused = run_demo(work, db, role)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"a database named {db} exists and deploy/demo.sh did not create it" in refused.stderr
    assert await admin("SELECT v FROM precious", db) == "keep me"
    assert await admin(f"SELECT count(*) FROM pg_roles WHERE rolname = '{role}'") == 0
    await admin(f"DROP DATABASE {db}")

    # Free names: the whole demo, to the restore and a clean stop.
    done = run_demo(work, db, role)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "restored" in done.stdout and "glacierd exited with status 0" in done.stdout
    db_oid = await admin(f"SELECT oid FROM pg_database WHERE datname = '{db}'")
    role_oid = await admin(f"SELECT oid FROM pg_roles WHERE rolname = '{role}'")
    created = (work / "created").read_text().splitlines()
    assert created == [f"role {role} {role_oid}", f"database {db} {db_oid}"]

    # Its database dropped and created again by someone else under the same name: a new run
    # refuses, and --cleanup keeps it (the role, which the demo made, goes).
    await admin(f"DROP DATABASE {db} WITH (FORCE)")
    await someone_elses_database(db)
    again = run_demo(work, db, role)
    assert again.returncode == 1 and "did not create it" in again.stderr
    cleaned = run_demo(work, db, role, "--cleanup")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert f"keeping the database {db}" in cleaned.stdout
    assert await admin("SELECT v FROM precious", db) == "keep me"
    assert await admin(f"SELECT count(*) FROM pg_roles WHERE rolname = '{role}'") == 0
    assert not work.exists()


def test_demo_refuses_names_that_are_not_plain_identifiers(tmp_path: Path) -> None:
    proc = run_demo(tmp_path / "w", "demo; DROP DATABASE postgres", "glacierd_demo")
    assert proc.returncode == 1
    assert "is not a plain lower-case SQL name" in proc.stderr


def test_demo_never_empties_a_directory_it_did_not_make(tmp_path: Path) -> None:
    work = tmp_path / "somebodys"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    proc = run_demo(work, "gdemo_unused", "gdemo_unused")
    assert proc.returncode == 1
    assert "is not empty and not a demo work directory" in proc.stderr
    assert (work / "thesis.tex").read_text() == "years of work"
