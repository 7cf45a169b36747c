"""restore_dump with large objects: pg_restore's own per-object transactions must not commit
glacierd's restore half-way."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import asyncpg
import pytest

from glacierd.pgconnect.conninfo import parse_conninfo
from glacierd.sources import restore_transaction
from glacierd.sources.database import RestoreError
from glacierd.sources.database_restore import restore_dump
from tests import pg

SCHEMA = """
CREATE TABLE photos (id serial PRIMARY KEY, blob oid NOT NULL);
INSERT INTO photos (blob) VALUES (lo_from_bytea(0, '\\x89504e47'::bytea));
CREATE TABLE rows (id int PRIMARY KEY);
INSERT INTO rows SELECT generate_series(1, 5000);
-- Objects restored after the large objects, so their part of the script is long.
""" + "\n".join(f"CREATE INDEX rows_i{n} ON rows ((id + {n}));" for n in range(20))


async def state(dbname: str) -> tuple[list[str], int, bytes | None]:
    conn = await asyncpg.connect(pg.dsn_for(dbname))
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        count = await conn.fetchval("SELECT count(*) FROM rows") if "rows" in tables else -1
        blob = None
        if "photos" in tables:
            blob = await conn.fetchval("SELECT lo_get(blob) FROM photos LIMIT 1")
        return tables, count, blob
    finally:
        await conn.close()


async def run(dbname: str, dump: Path, tmp_path: Path, pg_restore: str = "pg_restore") -> None:
    await restore_dump(
        dump=dump,
        conninfo=parse_conninfo(pg.dsn_for(dbname)),
        pg_restore=pg_restore,
        psql="psql",
        catalog_schema="glacierd",
        work_dir=tmp_path,
        lock_timeout_seconds=5,
        terminate_connections=False,
    )


@pytest.fixture
async def db_with_blob(tmp_path: Path):
    name = await pg.create_database("gtlo")
    await pg.populate(name, SCHEMA)
    dump = tmp_path / "blob.dump"
    subprocess.run(["pg_dump", "-Fc", "-f", str(dump), "-d", pg.dsn_for(name)], check=True)
    await pg.populate(name, "CREATE TABLE later (i int); DELETE FROM rows WHERE id > 10;")
    yield name, dump
    await pg.drop_database(name)


async def test_large_objects_come_back_and_later_objects_go(db_with_blob, tmp_path: Path):
    name, dump = db_with_blob
    await run(name, dump, tmp_path)
    assert await state(name) == (["photos", "rows"], 5000, b"\x89PNG")


async def test_a_failing_pg_restore_after_large_objects_changes_nothing(
    db_with_blob, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    name, dump = db_with_blob
    # Stream the script through in small pieces, as with a large database: everything but
    # the last bytes reaches psql before pg_restore's exit status is known.
    monkeypatch.setattr(restore_transaction, "_HEADER_BYTES", 4096)
    monkeypatch.setattr(restore_transaction, "_TAIL_BYTES", 512)
    before = await state(name)
    assert before[0] == ["later", "photos", "rows"] and before[1] == 10
    # The whole script, large objects included, then a failure exit: no COMMIT may happen.
    wrapper = tmp_path / "failing_pg_restore"
    wrapper.write_text(
        '#!/bin/sh\ncase "$1" in --list|--version|--schema-only) exec pg_restore "$@";; esac\n'
        'pg_restore "$@"\nsleep 1\nexit 1\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(RestoreError, match="the database was not changed"):
        await run(name, dump, tmp_path, str(wrapper))
    assert await state(name) == before


async def large_objects(dbname: str) -> dict[int, bytes]:
    conn = await asyncpg.connect(pg.dsn_for(dbname))
    try:
        rows = await conn.fetch(
            "SELECT oid::bigint AS oid, lo_get(oid) AS data FROM pg_largeobject_metadata"
        )
        return {r["oid"]: r["data"] for r in rows}
    finally:
        await conn.close()


async def test_large_objects_created_after_the_backup_are_removed(db_with_blob, tmp_path: Path):
    """The database equals the backup: a large object made after it does not survive the
    restore (no DROP list taken from pg_dump --schema-only can name it)."""
    name, dump = db_with_blob
    at_backup = await large_objects(name)  # the fixture changed no large object
    conn = await asyncpg.connect(pg.dsn_for(name))
    try:
        late = await conn.fetchval("SELECT lo_from_bytea(0, 'made after the backup')")
        await conn.execute("SELECT lo_put(blob, 0, 'XX') FROM photos")
    finally:
        await conn.close()
    assert late in await large_objects(name)

    await run(name, dump, tmp_path)

    assert await large_objects(name) == at_backup
    assert list(at_backup.values()) == [b"\x89PNG"]
