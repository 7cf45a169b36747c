"""One backup or restore at a time, across processes: a PostgreSQL advisory lock.

The lock is held by a dedicated catalog connection for the whole operation, so a crashed
process releases it automatically when its connection drops.

Advisory locks live in one namespace per database, so each key is derived from the catalog
schema: two glacierd instances with their own schemas in one database never block each
other, while every process using the same schema shares one key.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from glacierd.catalog.pool import Catalog


def lock_key(schema: str, purpose: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``purpose`` ("operation", "migrate")
    in ``schema``: the same in every process and release (never Python's salted hash())."""
    digest = hashlib.blake2b(f"glacierd:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class BusyError(Exception):
    """Another backup or restore holds the lock."""


@asynccontextmanager
async def operation_lock(catalog: Catalog, what: str) -> AsyncIterator[asyncpg.Connection]:
    """Hold the operation lock, or raise BusyError at once (never wait)."""
    key = lock_key(catalog.schema, "operation")  # shared by backup and restore
    conn: asyncpg.Connection = await catalog.pool.acquire()
    try:
        got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
        if not got:
            raise BusyError(await _busy_message(conn, catalog, what))
        try:
            yield conn
        finally:
            if not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
    finally:
        await catalog.pool.release(conn)


async def _busy_message(conn: asyncpg.Connection, catalog: Catalog, what: str) -> str:
    running = await conn.fetchrow(
        f"SELECT id, started_at FROM {catalog.schema_sql}.backups WHERE status = 'running' "
        "ORDER BY id DESC LIMIT 1"
    )
    restoring = (
        await conn.fetchrow(
            f"SELECT id FROM {catalog.schema_sql}.restores "
            "WHERE state = 'restoring' ORDER BY id LIMIT 1"
        )
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{catalog.schema}.restores")
        else None
    )
    if restoring:
        return (
            f"cannot start a {what}: restore {restoring['id']} is changing the database; try "
            "again when it has finished."
        )
    if running:
        return (
            f"cannot start a {what}: backup {running['id']} is running since "
            f"{running['started_at']:%Y-%m-%d %H:%M:%S %Z}; try again when it has finished."
        )
    return f"cannot start a {what}: another backup or restore is running; try again later."
