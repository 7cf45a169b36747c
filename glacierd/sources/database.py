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
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import structlog

from glacierd.pgconnect.connect import connection
from glacierd.pgconnect.conninfo import ConnInfo

log = structlog.get_logger("glacierd.sources.database")
CHUNK = 1024 * 1024
_STDERR_LIMIT = 64 * 1024
_HELD = "(its error output was held open by another process)"
T = TypeVar("T")


class DatabaseSourceError(Exception):
    """pg_dump or the database cannot do what a backup needs; the message says how to fix it."""


@dataclass(frozen=True)
class ToolVersion:
    major: int
    text: str


# How long a program that only reports something (--version, --list) may take, and how long
# a killed process group may take to go away before glacierd stops waiting for it.
TOOL_SECONDS = 60.0
REAP_SECONDS = 10.0


class ToolTimeout(Exception):
    """A short-lived tool did not finish in time (it was killed)."""


async def run_tool(
    argv: list[str], env: dict[str, str], limit_seconds: float
) -> tuple[int, bytes, bytes]:
    """Run a short-lived program to the end: (exit code, stdout, stderr).

    Both pipes are read to the end while waiting (``communicate``), and the whole run is
    bounded: after ``limit_seconds`` the program and its helpers are killed and
    ToolTimeout is raised."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit_seconds)
    except TimeoutError:
        await stop_process(proc, (proc.stdout, proc.stderr))
        raise ToolTimeout(f"{argv[0]} did not finish within {limit_seconds:g} s") from None
    except BaseException:
        await stop_process(proc, (proc.stdout, proc.stderr))
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


async def stop_process(
    proc: asyncio.subprocess.Process,
    unread: tuple[asyncio.StreamReader | None, ...] = (),
    grace: float | None = None,
) -> None:
    """Kill ``proc``'s process group (it was started with ``start_new_session``) and reap
    it — bounded, and never stuck on a pipe.

    asyncio (CPython 3.11) wakes ``Process.wait()`` only once the child has exited *and*
    every one of its pipes has been seen closed. A stdout pipe nobody reads any more, whose
    reading asyncio paused because its buffer was full, is never seen closed, and such a
    wait never returns. So the streams the caller stopped reading (``unread``) are read to
    their end here (the kill closes their other end), stdin is closed, and if something
    still holds a pipe open after ``grace`` seconds (default REAP_SECONDS) the pipes are
    closed by force."""
    grace = REAP_SECONDS if grace is None else grace
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.stdin is not None:
        proc.stdin.close()

    async def discard(stream: asyncio.StreamReader) -> None:
        while await stream.read(CHUNK):
            pass

    try:
        await asyncio.wait_for(
            asyncio.gather(*(discard(s) for s in unread if s is not None), proc.wait()), grace
        )
    except TimeoutError:
        # A helper outside the process group keeps a pipe open: close our ends, so that
        # asyncio can finish with the (dead) process. Process has no public way to do this.
        log.warning("process.pipes_forced_closed", pid=proc.pid, grace_seconds=grace)
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)


async def read_output(
    proc: asyncio.subprocess.Process, stream: asyncio.StreamReader, size: int = CHUNK
) -> bytes:
    """The next bytes ``proc`` writes to ``stream``; b"" at the end of its output.

    The end is normally the pipe's end of file. But when the process has exited and a helper
    it left behind (a wrapper script's background child) keeps the pipe open, no end of file
    ever comes: once the process is gone and the pipe has been silent for ``REAP_SECONDS``,
    the helpers are killed and the output is taken as ended. A quiet process that is still
    running (pg_dump waiting for a lock, a long query) is waited for."""
    while True:
        try:
            return await asyncio.wait_for(stream.read(size), REAP_SECONDS)
        except TimeoutError:
            if proc.returncode is None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(stream.read(size), REAP_SECONDS)
            return b""


async def wait_exited(
    proc: asyncio.subprocess.Process, unread: tuple[asyncio.StreamReader | None, ...] = ()
) -> int:
    """``proc``'s exit code, once it has exited — also when a helper it left behind keeps one
    of its pipes open (asyncio's ``wait()`` alone would then never return): such helpers are
    killed and the pipes closed (see stop_process). Its other pipes must be being read."""
    waiter = asyncio.ensure_future(proc.wait())
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=REAP_SECONDS)
            if done:
                return waiter.result()
            if proc.returncode is not None:
                await stop_process(proc, unread)
                return proc.returncode
    finally:
        waiter.cancel()


async def collect(
    reader: asyncio.Task[T],
    proc: asyncio.subprocess.Process,
    unread: tuple[asyncio.StreamReader | None, ...] = (),
    *,
    default: T,
) -> T:
    """What ``reader`` (a task reading one of ``proc``'s pipes to its end) read, now that
    ``proc`` has exited. If a helper ``proc`` left behind holds that pipe open, the process
    group is killed and the pipes are closed (stop_process), which ends the reader; if even
    that does not end it, ``default``."""
    try:
        return await asyncio.wait_for(asyncio.shield(reader), REAP_SECONDS)
    except TimeoutError:
        await stop_process(proc, unread)
    try:
        return await asyncio.wait_for(reader, REAP_SECONDS)
    except TimeoutError:
        return default


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
    try:
        code, out, _ = await run_tool([path, "--version"], dict(os.environ), TOOL_SECONDS)
    except ToolTimeout:
        raise DatabaseSourceError(
            f"{path} --version did not answer within {TOOL_SECONDS:g} s; check the program "
            "(a wrapper script waiting for input?) or reinstall it."
        ) from None
    text = out.decode(errors="replace").strip()
    match = re.search(r"(\d+)(?:\.(\d+))?", text)
    if code != 0 or not match:
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
        stderr_task = asyncio.create_task(_read_limited(proc.stderr))
        finished = False
        try:
            while chunk := await read_output(proc, proc.stdout):
                yield chunk
            # End of the dump: pg_dump closed its output and is exiting. Still bounded: a
            # wrapper could close its output and go on running.
            try:
                code = await asyncio.wait_for(wait_exited(proc), 3 * REAP_SECONDS)
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
