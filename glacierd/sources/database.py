"""The database source: pg_dump in custom format, streamed from its stdout.

pg_dump runs as an asyncio subprocess with an argument list; the connection parameters
(password included) reach it through libpq environment variables, never the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import asyncpg

from glacierd.catalog.pool import connection
from glacierd.sources.conninfo import ConnInfo

CHUNK = 1024 * 1024
_STDERR_LIMIT = 64 * 1024


class DatabaseSourceError(Exception):
    """pg_dump or the database cannot do what a backup needs; the message says how to fix it."""


@dataclass(frozen=True)
class ToolVersion:
    major: int
    text: str


def find_tool(name: str, setting: str | None = None) -> str:
    """``name`` is the configured value (a command or a path); ``setting`` the key holding it."""
    path = shutil.which(name)
    if path is None:
        if setting is None:
            restore = "restore" in os.path.basename(name)
            setting = "database.pg_restore" if restore else "database.pg_dump"
        raise DatabaseSourceError(
            f"{name} was not found; install it with 'apt-get install postgresql-client' "
            f"(or set {setting} to its full path)."
        )
    return path


async def tool_version(tool: str, setting: str | None = None) -> ToolVersion:
    path = find_tool(tool, setting)
    proc = await asyncio.create_subprocess_exec(
        path, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace").strip()
    match = re.search(r"(\d+)(?:\.(\d+))?", text)
    if proc.returncode != 0 or not match:
        raise DatabaseSourceError(f"{path} --version did not print a version; reinstall it.")
    return ToolVersion(int(match.group(1)), text)


def connect(conninfo: ConnInfo) -> AbstractAsyncContextManager[asyncpg.Connection]:
    """A connection to the backed-up database (unreachable: DatabaseSourceError)."""
    return connection(conninfo, "backed-up", DatabaseSourceError)


async def server_version_of(conn: asyncpg.Connection) -> ToolVersion:
    num = int(await conn.fetchval("SHOW server_version_num"))
    text = await conn.fetchval("SHOW server_version")
    return ToolVersion(num // 10000, f"PostgreSQL {text}")


async def server_version(conninfo: ConnInfo) -> ToolVersion:
    async with connect(conninfo) as conn:
        return await server_version_of(conn)


async def check_pg_dump(tool: str, conninfo: ConnInfo) -> tuple[ToolVersion, ToolVersion]:
    """pg_dump must exist and be at least as new as the server (it refuses older servers' peers)."""
    client = await tool_version(tool, "database.pg_dump")
    server = await server_version(conninfo)
    if client.major < server.major:
        raise DatabaseSourceError(
            f"pg_dump is older than the server ({client.text} vs {server.text}); install "
            f"postgresql-client-{server.major} and set database.pg_dump to its path, for "
            f"example /usr/lib/postgresql/{server.major}/bin/pg_dump."
        )
    return client, server


class PgDump:
    """One pg_dump run; iterate ``chunks()`` to stream the custom-format dump."""

    def __init__(self, tool: str, conninfo: ConnInfo, extra_args: list[str] | None = None) -> None:
        self.tool = tool
        self.conninfo = conninfo
        self.extra_args = extra_args or []
        self.proc: asyncio.subprocess.Process | None = None

    def argv(self) -> list[str]:
        # Custom format: compressed, and pg_restore can select objects from it (which the
        # restore needs to leave glacierd's own schema alone). --no-password: never prompt.
        tool = find_tool(self.tool, "database.pg_dump")
        return [tool, "--format=custom", "--no-password", *self.extra_args]

    async def chunks(self) -> AsyncIterator[bytes]:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.conninfo.libpq_env(),
            # Its own process group, so an abandoned dump is killed with any helper it
            # started (a wrapper script's children would otherwise hold the pipe open).
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        stderr_task = asyncio.create_task(_read_limited(self.proc.stderr))
        finished = False
        try:
            while True:
                chunk = await self.proc.stdout.read(CHUNK)
                if not chunk:
                    break
                yield chunk
            code = await self.proc.wait()
            stderr = await stderr_task
            if code != 0:
                # One line: pg_dump's message spans several (an error, then a hint).
                message = " ".join(stderr.split()) or "(no message)"
                raise DatabaseSourceError(
                    f"pg_dump exited with code {code} while dumping "
                    f"{self.conninfo.describe()}: {message}"
                )
            finished = True
        finally:
            if not finished:
                await self._kill()
                stderr_task.cancel()

    async def _kill(self) -> None:
        if self.proc and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


async def _read_limited(stream: asyncio.StreamReader) -> str:
    data = bytearray()
    while chunk := await stream.read(4096):
        if len(data) < _STDERR_LIMIT:
            data += chunk
    return data[:_STDERR_LIMIT].decode(errors="replace")


async def list_tables(conninfo: ConnInfo, exclude_schema: str) -> list[str]:
    """The user tables of the database, as schema.table (recorded with each backup)."""
    async with connect(conninfo) as conn:
        rows = await conn.fetch(
            "SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
            "AND schemaname <> $1 ORDER BY 1",
            exclude_schema,
        )
    return [r["t"] for r in rows]
