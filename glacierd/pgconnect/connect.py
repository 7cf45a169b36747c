"""One asyncpg connection, and what an operator reads when it could not be made.

The catalog's pool and the backed-up database's short connections (table list, server
version, ending other sessions) both use this, so a failure to connect reads the same
wherever it happens.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from glacierd.errors import GlacierdError
from glacierd.pgconnect.conninfo import ConnInfo
from glacierd.pgconnect.keywords import ConnInfoError

# What connecting can raise besides a server's answer: bad TLS files or settings
# (ConnInfoError, asyncpg's ClientConfigurationError), the network, TLS itself (OSError).
CONNECT_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    ConnInfoError,
    OSError,
    TimeoutError,
)


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
    except CONNECT_ERRORS as exc:
        raise error(*describe_connect_error(exc, conninfo, what)) from None
    try:
        yield conn
    finally:
        await conn.close()
