"""The restore's one transaction: psql fed ``BEGIN``, the drop phase, the dump's schemas,
pg_restore's script, and ``COMMIT`` only after pg_restore exited cleanly.

Any error — an object that fails, a killed pg_restore, a lock not granted in time, glacierd
itself being killed — ends psql's connection without COMMIT, and PostgreSQL rolls
everything back. Both programs' output is read all the time, so neither blocks on a pipe,
and every wait is bounded (processes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

from glacierd.sources import processes
from glacierd.sources.database import RestoreError
from glacierd.sources.drop_phase import REFUSED
from glacierd.sources.processes import (
    collect,
    read_limited,
    read_output,
    stop_process,
    wait_exited,
)

_HEADER_BYTES = 64 * 1024
_TAIL_BYTES = 64 * 1024
# Lines the drop phase prints on psql's output: "glacierd:<counter>:<number>".
_MARKER = re.compile(rb"^glacierd:(dropped|large_objects_dropped):(\d+)$")


def _edit_head(head: bytes, lock_setting: str) -> bytes:
    head = head.replace(b"\nBEGIN;\n", b"\n", 1)
    return head.replace(b"SET lock_timeout = 0;", lock_setting.encode(), 1)


async def _read_markers(stream: asyncio.StreamReader) -> dict[str, int]:
    """Read psql's output to its end, keeping only the drop phase's counter lines."""
    counts: dict[str, int] = {}
    pending = b""
    while chunk := await stream.read(64 * 1024):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        if len(pending) > 4096:  # a long output line is never a marker
            pending = b"x"
        for line in lines:
            match = _MARKER.match(line)
            if match:
                key = match.group(1).decode()
                counts[key] = counts.get(key, 0) + int(match.group(2))
    return counts


async def restore_in_one_transaction(
    *,
    psql_tool: str,
    restore_tool: str,
    dump: Path,
    list_file: Path,
    env: dict[str, str],
    preamble: str,
    where: str,
    lock_timeout_seconds: float,
) -> dict[str, int]:
    psql_proc = await asyncio.create_subprocess_exec(
        psql_tool,
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    assert psql_proc.stdin is not None and psql_proc.stdout is not None
    assert psql_proc.stderr is not None
    # psql's output and errors are read all the time, so psql never blocks on them and its
    # exit is always noticed (see stop_process).
    psql_out = asyncio.create_task(_read_markers(psql_proc.stdout))
    psql_err = asyncio.create_task(read_limited(psql_proc.stderr))
    restore_proc: asyncio.subprocess.Process | None = None
    restore_err: asyncio.Task[str] | None = None
    committed = False
    try:
        lock_setting = f"SET LOCAL lock_timeout = '{int(lock_timeout_seconds * 1000)}ms';"
        psql_proc.stdin.write(
            (
                "BEGIN;\n"
                # Other sessions' locks: wait this long, then fail (and roll back) — never hang.
                f"{lock_setting}\n"
                "SET LOCAL statement_timeout = 0;\n" + preamble
            ).encode()
        )
        restore_proc = await asyncio.create_subprocess_exec(
            restore_tool,
            # One BEGIN … COMMIT around the whole script. Without it pg_restore wraps large
            # objects in transactions of their own, whose COMMIT would end ours half-way.
            "--single-transaction",
            "--use-list",
            str(list_file),
            "--file",
            "-",
            str(dump),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert restore_proc.stdout is not None and restore_proc.stderr is not None
        restore_err = asyncio.create_task(read_limited(restore_proc.stderr))
        # The script is edited on the way in two places: its BEGIN goes (ours is open) and its
        # "SET lock_timeout = 0;" becomes ours, both in the header at the top; its final
        # COMMIT is held back with the last bytes, and dropped — glacierd commits only after
        # pg_restore has exited cleanly.
        buf = bytearray()
        head_done = False
        while chunk := await read_output(restore_proc, restore_proc.stdout):
            buf += chunk
            if not head_done:
                if len(buf) < _HEADER_BYTES:
                    continue
                buf = bytearray(_edit_head(bytes(buf), lock_setting))
                head_done = True
            if len(buf) > _TAIL_BYTES:
                psql_proc.stdin.write(bytes(buf[:-_TAIL_BYTES]))
                del buf[:-_TAIL_BYTES]
                await psql_proc.stdin.drain()
        if not head_done:
            buf = bytearray(_edit_head(bytes(buf), lock_setting))
        # pg_restore closed its output, so it is exiting: bounded all the same.
        try:
            code = await asyncio.wait_for(wait_exited(restore_proc), 3 * processes.REAP_SECONDS)
        except TimeoutError:
            raise RestoreError(
                f"{restore_tool} ended its output but did not exit while restoring into "
                f"{where}; it was killed — check database.pg_restore. The database was not "
                "changed."
            ) from None
        if code != 0:
            stderr = await collect(restore_err, restore_proc, (restore_proc.stdout,), default="")
            message = " ".join(stderr.split()) or "(no message)"
            raise RestoreError(
                f"pg_restore exited with code {code} while restoring into {where}: "
                f"{message}; the database was not changed."
            )
        end = buf.rfind(b"\nCOMMIT;\n")
        if end < 0:
            raise RestoreError(
                f"pg_restore's script for {where} did not end with COMMIT (a pg_restore "
                "version glacierd does not know?); the database was not changed."
            )
        del buf[end + 1 : end + len(b"\nCOMMIT;\n")]
        psql_proc.stdin.write(bytes(buf))
        # Only now, with the whole script sent, may the transaction commit.
        psql_proc.stdin.write(b"\nCOMMIT;\n")
        await psql_proc.stdin.drain()
        psql_proc.stdin.close()
        # psql's pipes are being read, so this wait ends when psql does; how long that is
        # depends on the size of the database, and on no lock (lock_timeout bounds those).
        code = await wait_exited(psql_proc)
        if code != 0:
            raise _psql_error(
                code, await collect(psql_err, psql_proc, default=""), where, lock_timeout_seconds
            )
        committed = True
        return await collect(psql_out, psql_proc, default={})
    except (BrokenPipeError, ConnectionResetError):
        # psql ended early (an error, a lock not granted): it is gone or going.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wait_exited(psql_proc), 3 * processes.REAP_SECONDS)
        raise _psql_error(
            psql_proc.returncode or 1,
            await collect(psql_err, psql_proc, default=""),
            where,
            lock_timeout_seconds,
        ) from None
    finally:
        if not committed:
            # Killing psql drops its connection: PostgreSQL rolls back and frees its locks.
            # Each process's unread output is read away so that reaping it cannot hang.
            await stop_process(psql_proc)
            if restore_proc is not None:
                await stop_process(restore_proc, (restore_proc.stdout,))
        for task in (psql_out, psql_err, restore_err):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _psql_error(code: int, stderr: str, where: str, lock_timeout: float) -> RestoreError:
    text = " ".join(stderr.split()) or "(no message)"
    # psql prints warnings and notices too; the error is what the operator needs.
    first_error = text.find("ERROR:")
    if first_error > 0:
        text = text[first_error:]
    if "lock timeout" in text:
        return RestoreError(
            f"other connections to {where} held locks for more than {lock_timeout:g} s; stop "
            "the application (or set restore.terminate_connections = true) and retry — the "
            "database was not changed."
        )
    if REFUSED in text:
        reason = text[text.find(REFUSED) :]
        return RestoreError(
            f"{reason} (a column, default, view or constraint there uses an object of the "
            "application); remove that dependency, or keep the catalog in a database of its "
            "own (catalog.dsn), and retry — the database was not changed."
        )
    return RestoreError(
        f"the restore into {where} failed and was rolled back (psql exit {code}): {text}"
    )
