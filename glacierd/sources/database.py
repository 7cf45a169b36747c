"""The database source: pg_dump in custom format, streamed from its stdout; the tools'
versions; short connections to the backed-up database.

pg_dump runs as an asyncio subprocess with an argument list (processes.py); the connection
parameters (password included) reach it through libpq environment variables, never the
command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import asyncpg

from glacierd.errors import GlacierdError
from glacierd.pgconnect.connect import connection
from glacierd.pgconnect.conninfo import ConnInfo
from glacierd.sources import processes
from glacierd.sources.processes import (
    collect,
    read_limited,
    read_output,
    run_tool,
    stop_process,
    wait_exited,
)

_HELD = "(its error output was held open by another process)"


class DatabaseSourceError(GlacierdError):
    """pg_dump or the database cannot do what a backup needs; ``fix`` says what to do."""


@dataclass(frozen=True)
class ToolVersion:
    major: int
    text: str


class RestoreError(DatabaseSourceError):
    """The database restore failed; the database was left as it was."""


def find_tool(name: str, setting: str | None = None) -> str:
    """``name`` is the configured value (a command or a path); ``setting`` the key holding it."""
    path = shutil.which(name)
    if path is None:
        if setting is None:
            restore = "restore" in os.path.basename(name)
            setting = "database.pg_restore" if restore else "database.pg_dump"
        raise DatabaseSourceError(
            f"{name} was not found",
            "install it with 'apt-get install postgresql-client' "
            f"(or set {setting} to its full path)",
        )
    return path


async def tool_version(tool: str, setting: str | None = None) -> ToolVersion:
    path = find_tool(tool, setting)
    try:
        code, out, _ = await run_tool([path, "--version"], dict(os.environ), processes.TOOL_SECONDS)
    except processes.ToolTimeout:
        raise DatabaseSourceError(
            f"{path} --version did not answer within {processes.TOOL_SECONDS:g} s",
            "check the program (a wrapper script waiting for input?) or reinstall it",
        ) from None
    text = out.decode(errors="replace").strip()
    match = re.search(r"(\d+)(?:\.(\d+))?", text)
    if code != 0 or not match:
        raise DatabaseSourceError(f"{path} --version did not print a version", "reinstall it")
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
            f"pg_dump is older than the server ({client.text} vs {server.text})",
            f"install postgresql-client-{server.major} and set database.pg_dump to its path, "
            f"for example /usr/lib/postgresql/{server.major}/bin/pg_dump",
        )
    return client, server


class PgDump:
    """One pg_dump run; iterate ``chunks()`` to stream the custom-format dump."""

    def __init__(
        self,
        tool: str,
        conninfo: ConnInfo,
        extra_args: list[str] | None = None,
        lock_wait_seconds: float | None = None,
    ) -> None:
        self.tool = tool
        self.conninfo = conninfo
        self.extra_args = extra_args or []
        # pg_dump first takes a share lock on every table; another session's exclusive lock
        # makes it wait. None: wait as long as it takes (a backup); a number: give up then.
        self.lock_wait_seconds = lock_wait_seconds
        self.proc: asyncio.subprocess.Process | None = None

    def argv(self) -> list[str]:
        # Custom format: compressed, and pg_restore can select objects from it (which the
        # restore needs to leave glacierd's own schema alone). --no-password: never prompt.
        tool = find_tool(self.tool, "database.pg_dump")
        argv = [tool, "--format=custom", "--no-password", *self.extra_args]
        if self.lock_wait_seconds is not None:
            argv.append(f"--lock-wait-timeout={max(1, int(self.lock_wait_seconds * 1000))}")
        return argv

    async def chunks(self) -> AsyncGenerator[bytes, None]:
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
        proc = self.proc
        assert proc.stdout is not None and proc.stderr is not None
        stderr_task = asyncio.create_task(read_limited(proc.stderr))
        finished = False
        try:
            while chunk := await read_output(proc, proc.stdout):
                yield chunk
            # End of the dump: pg_dump closed its output and is exiting. Still bounded: a
            # wrapper could close its output and go on running.
            try:
                code = await asyncio.wait_for(wait_exited(proc), 3 * processes.REAP_SECONDS)
            except TimeoutError:
                raise DatabaseSourceError(
                    f"{self.tool} ended its output but did not exit while dumping "
                    f"{self.conninfo.describe()}; it was killed — check database.pg_dump."
                ) from None
            stderr = await collect(stderr_task, proc, (proc.stdout,), default=_HELD)
            if code != 0:
                # One line: pg_dump's message spans several (an error, then a hint).
                message = " ".join(stderr.split()) or "(no message)"
                # (--lock-wait-timeout ends the LOCK TABLE with a "statement timeout".)
                if (
                    self.lock_wait_seconds is not None
                    and "timeout" in message
                    and ("LOCK TABLE" in message)
                ):
                    raise DatabaseSourceError(
                        f"other connections to {self.conninfo.describe()} held locks for "
                        f"more than {self.lock_wait_seconds:g} s, so pg_dump could not start; "
                        "stop the application and retry — nothing was changed."
                    )
                raise DatabaseSourceError(
                    f"pg_dump exited with code {code} while dumping "
                    f"{self.conninfo.describe()}: {message}"
                )
            finished = True
        finally:
            if not finished:
                # The consumer stopped (a full disk, a failed upload, cancellation) or
                # pg_dump misbehaved: kill it, reading away what it still has in its pipe.
                await stop_process(proc, (proc.stdout,))
            stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stderr_task


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
