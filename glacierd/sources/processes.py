"""Running PostgreSQL's programs as child processes: bounded, and never stuck on a pipe.

pg_dump, pg_restore and psql run as asyncio subprocesses with argument lists, each in a
process group of its own, so that an abandoned run is killed with any helper it started.
Every wait here is bounded: a helper that keeps a pipe open after its parent exited (a
wrapper script's background child) can delay glacierd by seconds, never hang it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import TypeVar

import structlog

log = structlog.get_logger("glacierd.sources.database")
CHUNK = 1024 * 1024
_STDERR_LIMIT = 64 * 1024
T = TypeVar("T")

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


async def read_limited(stream: asyncio.StreamReader) -> str:
    """A process's error output, read to its end; only its first 64 KiB are kept."""
    data = bytearray()
    while chunk := await stream.read(4096):
        if len(data) < _STDERR_LIMIT:
            data += chunk
    return data[:_STDERR_LIMIT].decode(errors="replace")
