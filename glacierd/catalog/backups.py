"""Queries on backups and the archives they reference. Batches, never a query per file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

from glacierd.catalog.pool import Catalog

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class KnownFile:
    archive_id: int
    size: int


@dataclass(frozen=True)
class NewArchive:
    kind: str
    store_key: str
    path: str | None
    size: int | None
    mode: int | None = None  # a file's permission bits at backup time
    mtime_ns: int | None = None  # a file's modification time at backup time


async def create_backup(db: Conn, catalog: Catalog, trigger: str, database_name: str | None) -> int:
    return await db.fetchval(
        f"INSERT INTO {catalog.schema_sql}.backups (trigger, database_name) VALUES ($1, $2) "
        "RETURNING id",
        trigger,
        database_name,
    )


async def complete_backup(db: Conn, catalog: Catalog, backup_id: int, **stats: int) -> None:
    await db.execute(
        f"UPDATE {catalog.schema_sql}.backups SET status = 'completed', finished_at = now(), "
        "file_count = $2, new_files = $3, skipped_files = $4, bytes_uploaded = $5 "
        "WHERE id = $1 AND status = 'running'",
        backup_id,
        stats["file_count"],
        stats["new_files"],
        stats["skipped_files"],
        stats["bytes_uploaded"],
    )


async def fail_backup(db: Conn, catalog: Catalog, backup_id: int, error: str) -> None:
    await db.execute(
        f"UPDATE {catalog.schema_sql}.backups "
        "SET status = 'failed', finished_at = now(), error = $2 "
        "WHERE id = $1 AND status = 'running'",
        backup_id,
        error,
    )


async def insert_archives(
    db: Conn, catalog: Catalog, backup_id: int, store_name: str, rows: list[NewArchive]
) -> list[int]:
    """Insert many 'uploading' archive rows in one statement; returns ids in input order."""
    if not rows:
        return []
    records = await db.fetch(
        f"INSERT INTO {catalog.schema_sql}.archives "
        "(kind, store_name, store_key, path, size, created_by, mode, mtime_ns) "
        "SELECT k, $1, sk, p, s, $2, m, mt FROM unnest($3::text[], $4::text[], $5::text[], "
        "$6::bigint[], $7::integer[], $8::bigint[]) "
        "WITH ORDINALITY AS t(k, sk, p, s, m, mt, n) ORDER BY n RETURNING id",
        store_name,
        backup_id,
        [r.kind for r in rows],
        [r.store_key for r in rows],
        [r.path for r in rows],
        [r.size for r in rows],
        [r.mode for r in rows],
        [r.mtime_ns for r in rows],
    )
    return [r["id"] for r in records]


async def mark_stored(
    db: Conn, catalog: Catalog, stored: list[tuple[int, str, int, str, str | None]]
) -> None:
    """Mark uploaded archives stored: (id, store_key, size, sha256, storage_class) each."""
    if not stored:
        return
    await db.execute(
        f"UPDATE {catalog.schema_sql}.archives a "
        "SET state = 'stored', store_key = t.k, size = t.s, sha256 = t.h, storage_class = t.c "
        "FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[]) "
        "AS t(i, k, s, h, c) WHERE a.id = t.i",
        [s[0] for s in stored],
        [s[1] for s in stored],
        [s[2] for s in stored],
        [s[3] for s in stored],
        [s[4] for s in stored],
    )


async def keys_in_use(db: Conn, catalog: Catalog, store_name: str, keys: list[str]) -> list[str]:
    """Which of ``keys`` an archive row of this store already has (any state)."""
    records = await db.fetch(
        f"SELECT DISTINCT store_key FROM {catalog.schema_sql}.archives "
        "WHERE store_name = $1 AND store_key = ANY($2::text[])",
        store_name,
        keys,
    )
    return [r["store_key"] for r in records]


async def drop_archive_rows(db: Conn, catalog: Catalog, ids: list[int]) -> None:
    if ids:
        await db.execute(
            f"DELETE FROM {catalog.schema_sql}.archives WHERE id = ANY($1::bigint[])", ids
        )


async def known_files(db: Conn, catalog: Catalog, store_name: str) -> dict[str, KnownFile]:
    """The newest stored archive of every file path in this store: one query, one dict."""
    records = await db.fetch(
        f"SELECT DISTINCT ON (path) path, id, size FROM {catalog.schema_sql}.archives "
        "WHERE kind = 'file' AND state = 'stored' AND store_name = $1 ORDER BY path, id DESC",
        store_name,
    )
    return {r["path"]: KnownFile(r["id"], r["size"]) for r in records}


async def link_archives(db: Conn, catalog: Catalog, backup_id: int, archive_ids: list[int]) -> None:
    await db.execute(
        f"INSERT INTO {catalog.schema_sql}.backup_archives (backup_id, archive_id) "
        "SELECT $1, unnest($2::bigint[]) ON CONFLICT DO NOTHING",
        backup_id,
        archive_ids,
    )


async def list_backups(
    db: Conn, catalog: Catalog, limit: int = 100, before: int | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` backups (older than backup ``before``, to page backwards), with
    their lowest retrieval status and the store their database dump went to."""
    records = await db.fetch(
        f"SELECT b.*, (SELECT min(array_position(ARRAY['available','pending','ready','local'], "
        f"  a.retrieval_status)) FROM {catalog.schema_sql}.backup_archives ba "
        f"  JOIN {catalog.schema_sql}.archives a ON a.id = ba.archive_id "
        "  WHERE ba.backup_id = b.id) "
        f"  AS lowest_rank, (SELECT d.store_name FROM {catalog.schema_sql}.archives d "
        "  WHERE d.created_by = b.id AND d.kind = 'database' ORDER BY d.id LIMIT 1) AS store_name "
        f"FROM {catalog.schema_sql}.backups b WHERE ($2::bigint IS NULL OR b.id < $2) "
        "ORDER BY b.id DESC LIMIT $1",
        limit,
        before,
    )
    return [dict(r) for r in records]


async def get_backup(db: Conn, catalog: Catalog, backup_id: int) -> dict[str, Any] | None:
    record = await db.fetchrow(
        f"SELECT * FROM {catalog.schema_sql}.backups WHERE id = $1", backup_id
    )
    if record is None:
        return None
    return dict(record)


async def backup_archives(db: Conn, catalog: Catalog, backup_id: int) -> list[dict[str, Any]]:
    records = await db.fetch(
        f"SELECT a.* FROM {catalog.schema_sql}.backup_archives ba "
        f"JOIN {catalog.schema_sql}.archives a ON a.id = ba.archive_id "
        "WHERE ba.backup_id = $1 ORDER BY a.kind, a.path NULLS FIRST, a.id",
        backup_id,
    )
    return [dict(r) for r in records]


async def last_backup(
    db: Conn, catalog: Catalog, status: str | None = None
) -> dict[str, Any] | None:
    where = "WHERE status = $1" if status else "WHERE $1::text IS NULL"
    record = await db.fetchrow(
        f"SELECT * FROM {catalog.schema_sql}.backups {where} "
        "ORDER BY started_at DESC, id DESC LIMIT 1",
        status,
    )
    return dict(record) if record else None


async def failed_with_leftovers(db: Conn, catalog: Catalog) -> list[int]:
    """Failed backups whose partial data a store error kept from being removed."""
    records = await db.fetch(
        f"SELECT DISTINCT b.id FROM {catalog.schema_sql}.backups b "
        f"JOIN {catalog.schema_sql}.archives a ON a.created_by = b.id "
        "WHERE b.status = 'failed' AND (a.state = 'uploading' OR a.kind = 'database') "
        f"AND NOT EXISTS (SELECT 1 FROM {catalog.schema_sql}.backup_archives ba "
        "WHERE ba.archive_id = a.id) ORDER BY b.id"
    )
    return [r["id"] for r in records]


async def running_backups(db: Conn, catalog: Catalog) -> list[int]:
    records = await db.fetch(
        f"SELECT id FROM {catalog.schema_sql}.backups WHERE status = 'running' ORDER BY id"
    )
    return [r["id"] for r in records]


async def unfinished_archives(db: Conn, catalog: Catalog, backup_id: int) -> list[dict[str, Any]]:
    """Archives a failed backup leaves behind that no completed backup may use.

    Its database dump and any upload that never finished. File archives that finished
    uploading stay: the next backup adopts them, so each file is still archived once.
    ``shared`` says that another archive row names the same object: then only the row may
    go, never the object.
    """
    records = await db.fetch(
        f"SELECT a.*, EXISTS (SELECT 1 FROM {catalog.schema_sql}.archives o "
        "WHERE o.store_name = a.store_name AND o.store_key = a.store_key AND o.id <> a.id"
        f") AS shared FROM {catalog.schema_sql}.archives a WHERE a.created_by = $1 "
        "AND (a.state = 'uploading' OR a.kind = 'database') "
        f"AND NOT EXISTS (SELECT 1 FROM {catalog.schema_sql}.backup_archives ba "
        "WHERE ba.archive_id = a.id AND ba.backup_id <> $1)",
        backup_id,
    )
    return [dict(r) for r in records]


async def delete_backup(
    db: asyncpg.Connection, catalog: Catalog, backup_id: int
) -> list[dict[str, Any]]:
    """Delete a backup's rows; mark 'deleting' and return the archives no backup references.

    Runs in the caller's transaction; the caller deletes each archive from the store and
    then its row. A 'deleting' archive is never adopted by a later backup.
    """
    await db.execute(
        f"SELECT 1 FROM {catalog.schema_sql}.backups WHERE id = $1 FOR UPDATE", backup_id
    )
    ids = [
        r["archive_id"]
        for r in await db.fetch(
            f"DELETE FROM {catalog.schema_sql}.backup_archives "
            "WHERE backup_id = $1 RETURNING archive_id",
            backup_id,
        )
    ]
    await db.execute(f"DELETE FROM {catalog.schema_sql}.backups WHERE id = $1", backup_id)
    orphaned = await db.fetch(
        f"UPDATE {catalog.schema_sql}.archives a SET state = 'deleting' "
        "WHERE a.id = ANY($1::bigint[]) "
        f"AND NOT EXISTS (SELECT 1 FROM {catalog.schema_sql}.backup_archives ba "
        "WHERE ba.archive_id = a.id) "
        "RETURNING a.*",
        ids,
    )
    return [dict(r) for r in orphaned]


async def deleting_archives(db: Conn, catalog: Catalog) -> list[dict[str, Any]]:
    records = await db.fetch(
        f"SELECT * FROM {catalog.schema_sql}.archives WHERE state = 'deleting'"
    )
    return [dict(r) for r in records]
