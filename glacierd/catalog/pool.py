"""The catalog connection pool, with connection errors turned into one clear sentence
(``pgconnect.connect``)."""

from __future__ import annotations

import asyncio
import json

import asyncpg

from glacierd.errors import GlacierdError
from glacierd.pgconnect.connect import CONNECT_ERRORS, describe_connect_error
from glacierd.pgconnect.conninfo import ConnInfo


class CatalogError(GlacierdError):
    """The catalog (or the database it lives in) cannot be used: ``detail`` says why."""


# Server process ids of this process's open catalog connections. A restore that ends the
# database's "other sessions" must never end these (one of them holds the operation lock),
# whatever application_name the DSN gives them.
_own_backends: set[int] = set()


def own_backend_pids() -> frozenset[int]:
    return frozenset(_own_backends)


def _remember_backend(conn: asyncpg.Connection) -> None:
    pid = conn.get_server_pid()
    _own_backends.add(pid)
    conn.add_termination_listener(lambda _conn: _own_backends.discard(pid))


async def _init_connection(conn: asyncpg.Connection) -> None:
    _remember_backend(conn)
    await _json_codec(conn)


async def _json_codec(conn: asyncpg.Connection) -> None:
    # jsonb columns (restore options and steps, a backup's tables) in and out as Python
    # values, decoded in one place instead of at every query.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Catalog:
    """A pool of connections to the catalog database and the name of glacierd's schema."""

    def __init__(self, conninfo: ConnInfo, schema: str) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("catalog is not open")
        return self._pool

    @property
    def schema_sql(self) -> str:
        """The quoted schema name, for building SQL (validated as an identifier in config)."""
        return f'"{self.schema}"'

    async def open(self) -> None:
        try:
            kwargs = await asyncio.to_thread(self.conninfo.asyncpg_kwargs)
            self._pool = await asyncpg.create_pool(
                min_size=1, max_size=6, command_timeout=None, init=_init_connection, **kwargs
            )
        except CONNECT_ERRORS as exc:
            raise CatalogError(*describe_connect_error(exc, self.conninfo, "catalog")) from None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
