"""Test databases on the real local PostgreSQL: created per test, dropped afterwards."""

from __future__ import annotations

import os
import subprocess
import uuid

import asyncpg

ADMIN_DSN = os.environ.get("GLACIERD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def dsn_for(dbname: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{dbname}"


async def create_database(prefix: str = "gtest") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


SAMPLE_SCHEMA = """
CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL UNIQUE, created_at timestamptz
    NOT NULL DEFAULT now());
CREATE TABLE documents (id bigserial PRIMARY KEY, user_id integer NOT NULL REFERENCES users(id),
    title text NOT NULL, file_path text, body bytea);
INSERT INTO users (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, 200) g;
INSERT INTO documents (user_id, title, file_path, body)
    SELECT 1 + (g % 200), 'doc ' || g, 'uploads/' || g || '.bin', decode(md5(g::text), 'hex')
    FROM generate_series(1, 500) g;
"""


async def populate(dbname: str, sql: str = SAMPLE_SCHEMA) -> None:
    conn = await asyncpg.connect(dsn_for(dbname))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def table_rows(dbname: str, exclude_schema: str = "glacierd") -> dict[str, list[str]]:
    """Every user table's rows as sorted text lines (psql), for before/after comparisons;
    ``exclude_schema`` is glacierd's catalog schema."""

    def psql(sql: str) -> str:
        return subprocess.run(
            ["psql", "-X", "-At", "-d", dsn_for(dbname), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout

    tables = psql(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema', "
        f"'{exclude_schema}') ORDER BY 1"
    ).split()
    return {t: sorted(psql(f"SELECT t::text FROM {t} t").splitlines()) for t in tables}
