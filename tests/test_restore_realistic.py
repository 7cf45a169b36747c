"""restore_dump on a realistic schema (tests/restore_schema.py): after a backup the database
changes in every way, the restore makes it equal to the backup again — rows, materialized
views, schema, sequences, large objects — and glacierd's catalog schema, living in the same
database under a configurable name, is never touched."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from glacierd.pgconnect.conninfo import parse_conninfo
from glacierd.sources.database import RestoreError
from glacierd.sources.database_restore import restore_dump
from tests import pg
from tests.restore_schema import CHANGES, RICH_SCHEMA, capture

CATALOG = "ops_catalog"  # not the default name: the setting must be honoured everywhere

# A stand-in for glacierd's catalog, in the application's database: tables with rows, a
# sequence, a view, a function, an index, a foreign key, a comment.
CATALOG_SCHEMA = f"""
CREATE SCHEMA {CATALOG};
CREATE TABLE {CATALOG}.backups (id bigserial PRIMARY KEY, status text NOT NULL);
CREATE TABLE {CATALOG}.archives (
    id bigserial PRIMARY KEY, backup_id bigint REFERENCES {CATALOG}.backups, key text
);
CREATE INDEX archives_key ON {CATALOG}.archives (key);
CREATE VIEW {CATALOG}.completed AS SELECT id FROM {CATALOG}.backups WHERE status = 'completed';
CREATE FUNCTION {CATALOG}.newest() RETURNS bigint LANGUAGE sql AS
    'SELECT max(id) FROM {CATALOG}.backups';
COMMENT ON TABLE {CATALOG}.backups IS 'glacierd''s own';
INSERT INTO {CATALOG}.backups (status) VALUES ('completed'), ('running');
INSERT INTO {CATALOG}.archives (backup_id, key) VALUES (1, 'database/1.dump');
"""
# Work glacierd does between the backup and the restore: it must survive the restore.
CATALOG_CHANGES = f"""
INSERT INTO {CATALOG}.backups (status) VALUES ('completed');
INSERT INTO {CATALOG}.archives (backup_id, key) VALUES (3, 'database/3.dump');
UPDATE {CATALOG}.backups SET status = 'failed' WHERE id = 2;
"""


def catalog_state(dbname: str) -> tuple[str, dict[str, list[str]]]:
    schema = subprocess.run(
        ["pg_dump", "--schema-only", f"--schema={CATALOG}", "-d", pg.dsn_for(dbname)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    schema = "\n".join(line for line in schema.splitlines() if not line.startswith(("--", "\\")))
    rows = {
        t: r for t, r in pg.table_rows(dbname, exclude_schema="-").items() if t.startswith(CATALOG)
    }
    return schema, rows


@dataclass
class Db:
    name: str
    dump: Path


@pytest.fixture
async def realistic_db(tmp_path: Path) -> AsyncIterator[Db]:
    """The sample and realistic schemas plus a catalog schema; a backup of it (a dump made
    as glacierd makes it: custom format, the catalog left out)."""
    name = await pg.create_database("gtreal")
    try:
        await pg.populate(name)
        await pg.populate(name, RICH_SCHEMA)
        await pg.populate(name, CATALOG_SCHEMA)
        dump = tmp_path / "backup.dump"
        subprocess.run(
            [
                "pg_dump",
                "--format=custom",
                f"--exclude-schema={CATALOG}",
                "-f",
                str(dump),
                "-d",
                pg.dsn_for(name),
            ],
            check=True,
            timeout=120,
        )
        yield Db(name, dump)
    finally:
        await pg.drop_database(name)


async def restore(db: Db, tmp_path: Path, *, lock_timeout: float = 10) -> dict[str, int]:
    return await asyncio.wait_for(  # a hang fails the test instead of stalling the run
        restore_dump(
            dump=db.dump,
            conninfo=parse_conninfo(pg.dsn_for(db.name)),
            pg_restore="pg_restore",
            psql="psql",
            catalog_schema=CATALOG,
            work_dir=tmp_path / "work",
            lock_timeout_seconds=lock_timeout,
            terminate_connections=False,
        ),
        timeout=180,
    )


async def test_a_realistic_database_equals_its_backup_after_the_restore(
    realistic_db: Db, tmp_path: Path
):
    name = realistic_db.name
    at_backup = await capture(name, CATALOG)
    # The capture sees what it must: partitions, inheritance, matviews, LOs, sequences.
    for table in ("app.events_2025_early", "app.events_default", "legacy.trucks"):
        assert table in at_backup.rows
    assert at_backup.matviews["reporting.daily_events"]
    assert len(at_backup.large_objects) == 200
    assert at_backup.sequences["app.ticket_numbers"] == (128, True)
    for thing in ("PARTITION BY RANGE", "INHERITS", "CREATE MATERIALIZED VIEW", "GENERATED"):
        assert thing in at_backup.schema
    await pg.populate(name, CHANGES)
    await pg.populate(name, CATALOG_CHANGES)
    catalog_before = catalog_state(name)
    at_backup.assert_differs_in_every_way(await capture(name, CATALOG))

    info = await restore(realistic_db, tmp_path)

    (await capture(name, CATALOG)).assert_same(at_backup)
    assert catalog_state(name) == catalog_before  # glacierd's catalog, untouched
    assert info["dropped_first"] > 0 and info["large_objects_dropped"] == 200
    assert not list((tmp_path / "work").iterdir())  # no list files left behind

    # The restored objects work, not only look the same.
    conn = await asyncpg.connect(pg.dsn_for(name))
    try:
        before = await conn.fetchval("SELECT count(*) FROM app.audit_log")
        event_id = await conn.fetchval(
            "INSERT INTO app.events (occurred_at, account_id, kind, amount) "
            "VALUES ('2025-02-02', 3, 'click', 10) RETURNING id"
        )
        # The identity continues after the restored rows, the row lands in its
        # sub-partition, the trigger on the partitioned table fires, the column is generated.
        assert event_id == 3001
        assert (
            await conn.fetchval(
                "SELECT amount_with_tax FROM app.events_2025_late WHERE id = $1", event_id
            )
            == 12
        )
        assert await conn.fetchval("SELECT count(*) FROM app.audit_log") == before + 1
        with pytest.raises(asyncpg.ForeignKeyViolationError):  # FK to a partitioned table
            await conn.execute(
                "INSERT INTO app.event_notes (event_id, occurred_at, note) "
                "VALUES (999999, '2025-01-01', 'x')"
            )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM app.articles "
                "WHERE search @@ to_tsquery('public.app_english', 'lorem & 42')"
            )
            == 1
        )
        assert await conn.fetchval("SELECT count(*) FROM ONLY legacy.vehicles") == 2
        assert await conn.fetchval("SELECT count(*) FROM legacy.vehicles") == 72
        assert await conn.fetchval("SELECT 1.001 OPERATOR(public.=~=) 1.002")
        assert await conn.fetchval("SELECT extensions.exist('a=>1'::extensions.hstore, 'a')")
        assert await conn.fetchval("SELECT count(*) FROM reporting.account_hashes") == 60
        assert (
            await conn.fetchval("SELECT lo_get(attachment) FROM app.articles WHERE id = 20")
            == b"attachment 20"
        )
        # Extensions: kept ones still work, the one created after the backup is gone, the
        # one dropped after the backup is back.
        assert await conn.fetchval(
            "SELECT array_agg(extname ORDER BY extname) FROM pg_extension"
        ) == ["citext", "hstore", "pgcrypto", "plpgsql"]
    finally:
        await conn.close()


async def test_restoring_twice_gives_the_same_database(realistic_db: Db, tmp_path: Path):
    at_backup = await capture(realistic_db.name, CATALOG)
    await restore(realistic_db, tmp_path)  # nothing changed since the backup
    (await capture(realistic_db.name, CATALOG)).assert_same(at_backup)
    await restore(realistic_db, tmp_path)
    (await capture(realistic_db.name, CATALOG)).assert_same(at_backup)


async def test_large_objects_created_after_the_backup_are_gone(realistic_db: Db, tmp_path: Path):
    name = realistic_db.name
    at_backup = await capture(name, CATALOG)
    conn = await asyncpg.connect(pg.dsn_for(name))
    try:
        # Nothing but large objects changes: one new, one changed, one removed.
        new = await conn.fetchval("SELECT lo_from_bytea(0, 'new after the backup')")
        await conn.execute("SELECT lo_put(attachment, 0, 'XX') FROM app.articles WHERE id = 20")
        await conn.execute("SELECT lo_unlink(attachment) FROM app.articles WHERE id = 30")
    finally:
        await conn.close()
    changed = await capture(name, CATALOG)
    assert new in changed.large_objects and changed.large_objects != at_backup.large_objects

    await restore(realistic_db, tmp_path)

    restored = await capture(name, CATALOG)
    assert new not in restored.large_objects
    restored.assert_same(at_backup)


async def test_a_catalog_that_depends_on_application_objects_is_never_dropped(
    realistic_db: Db, tmp_path: Path
):
    """If dropping the application's objects would cascade into the catalog schema (here a
    catalog column of an application type), the restore refuses and changes nothing."""
    name = realistic_db.name
    await pg.populate(name, f"ALTER TABLE {CATALOG}.backups ADD COLUMN feeling public.mood")
    await pg.populate(name, CHANGES)
    before, catalog_before = await capture(name, CATALOG), catalog_state(name)

    with pytest.raises(RestoreError, match=f"catalog schema {CATALOG}") as failure:
        await restore(realistic_db, tmp_path)

    assert "the database was not changed" in str(failure.value)
    (await capture(name, CATALOG)).assert_same(before)
    assert catalog_state(name) == catalog_before


async def test_an_extension_configuration_table_equals_the_backup(realistic_db: Db, tmp_path: Path):
    """A kept extension's configuration table (like PostGIS's spatial_ref_sys) holds the
    extension's own rows and the application's; pg_dump dumps the application's (those its
    filter selects). After the restore they are the backup's: none added later survives, and
    none is there twice. (Registered by hand here: contrib has no extension with one.)"""
    name = realistic_db.name
    await pg.populate(
        name,
        """
        CREATE TABLE public.reference_systems (code integer PRIMARY KEY, label text NOT NULL,
            builtin boolean NOT NULL DEFAULT false);
        INSERT INTO public.reference_systems VALUES (1, 'shipped with the extension', true);
        INSERT INTO public.reference_systems VALUES (100, 'ours', false), (101, 'also ours', false);
        ALTER EXTENSION citext ADD TABLE public.reference_systems;
        UPDATE pg_extension SET extconfig = ARRAY['public.reference_systems'::regclass::oid],
            extcondition = ARRAY['WHERE NOT builtin'] WHERE extname = 'citext';
        """,
    )
    dump = tmp_path / "with-config.dump"
    subprocess.run(
        ["pg_dump", "-Fc", f"--exclude-schema={CATALOG}", "-f", str(dump), "-d", pg.dsn_for(name)],
        check=True,
        timeout=120,
    )
    at_backup = await capture(name, CATALOG)
    assert at_backup.rows["public.reference_systems"] == [
        '(1,"shipped with the extension",t)',
        "(100,ours,f)",
        '(101,"also ours",f)',
    ]
    await pg.populate(
        name,
        "INSERT INTO public.reference_systems VALUES (102, 'added later', false); "
        "UPDATE public.reference_systems SET label = 'changed' WHERE code = 100",
    )

    await restore(Db(name, dump), tmp_path)

    (await capture(name, CATALOG)).assert_same(at_backup)
