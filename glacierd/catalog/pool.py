"""The catalog connection pool, with connection errors turned into one clear sentence."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from glacierd.errors import GlacierdError
from glacierd.sources.conninfo import ConnInfo, ConnInfoError

# What connecting can raise besides a server's answer: bad TLS files or settings
# (ConnInfoError, asyncpg's ClientConfigurationError), the network, TLS itself (OSError).
_CONNECT_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    ConnInfoError,
    OSError,
    TimeoutError,
)


class CatalogError(GlacierdError):
    """The catalog (or the database it lives in) cannot be used: ``detail`` says why."""


def describe_connect_error(
    exc: BaseException, conninfo: ConnInfo, what: str
) -> tuple[str, str | None]:
    """An asyncpg connection failure as (what is wrong and where, the fix); no fix where the
    detail already says what to change."""
    where = conninfo.describe()
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"the {what} database {where} does not exist", "create it or fix the dsn"
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return (
            f"the {what} database {where} refused the login ({exc})",
            "check the user and set the password in .pgpass or PGPASSWORD",
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the {what} database {where} presented a certificate that was not accepted "
            f"({exc.verify_message or exc.reason})",
            "check sslrootcert (the CA), the host name and sslmode in the dsn",
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"the TLS connection to the {what} database {where} failed ({exc.reason or exc})",
            "check the ssl settings in the dsn and the server's ssl configuration",
        )
    if isinstance(exc, ConnInfoError):  # its sentence already says what to change
        return f"the {what} database {where} cannot be used: {exc}.", None
    if isinstance(exc, asyncpg.InterfaceError):
        return f"the {what} database {where} cannot be used: {exc}", "fix the dsn"
    if isinstance(exc, OSError | socket.gaierror | asyncio.TimeoutError | TimeoutError):
        return (
            f"the {what} database {where} is unreachable ({exc.__class__.__name__}: {exc})",
            "check that PostgreSQL is running and the host and port are right",
        )
    return f"the {what} database {where} cannot be used: {exc}.", None


@asynccontextmanager
async def connection(
    conninfo: ConnInfo, what: str, error: type[GlacierdError]
) -> AsyncIterator[asyncpg.Connection]:
    """One connection, closed afterwards; a failure to connect raises ``error`` with the
    detail and fix from ``describe_connect_error``."""
    try:
        # Off the event loop: building the arguments may read TLS certificate files.
        kwargs = await asyncio.to_thread(conninfo.asyncpg_kwargs)
        conn = await asyncpg.connect(**kwargs)
    except _CONNECT_ERRORS as exc:
        raise error(*describe_connect_error(exc, conninfo, what)) from None
    try:
        yield conn
    finally:
        await conn.close()


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
    def q(self) -> str:
        """The quoted schema name, for building SQL (validated as an identifier in config)."""
        return f'"{self.schema}"'

    async def open(self) -> None:
        try:
            kwargs = await asyncio.to_thread(self.conninfo.asyncpg_kwargs)
            self._pool = await asyncpg.create_pool(
                min_size=1, max_size=6, command_timeout=None, init=_init_connection, **kwargs
            )
        except _CONNECT_ERRORS as exc:
            raise CatalogError(*describe_connect_error(exc, self.conninfo, "catalog")) from None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
