"""Restoring a custom-format dump into the live database: all or nothing.

How it stays atomic: glacierd runs ``psql`` itself and feeds it, on one connection,
``BEGIN``; DROP statements for every object the database holds now (so objects created
after the backup disappear too); then the SQL that ``pg_restore`` generates from the dump;
and ``COMMIT`` only after pg_restore exited cleanly. Any error — an object that fails, a
killed pg_restore, a lock not granted in time, glacierd itself being killed — ends the
connection without COMMIT, and PostgreSQL rolls everything back.

glacierd's own catalog schema is never touched: it is excluded from the drops and filtered
out of pg_restore's object list (``-L``), so a restore to last week can be followed by a
restore to yesterday.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path

import structlog

from glacierd.sources.conninfo import ConnInfo
from glacierd.sources.database import DatabaseSourceError, _read_limited, connect, find_tool

log = structlog.get_logger("glacierd.restore.database")
CHUNK = 1024 * 1024
_HEADER_BYTES = 64 * 1024
_TAIL_BYTES = 64 * 1024


def _edit_head(head: bytes, lock_setting: str) -> bytes:
    head = head.replace(b"\nBEGIN;\n", b"\n", 1)
    return head.replace(b"SET lock_timeout = 0;", lock_setting.encode(), 1)


# A TOC line: "<id>; <catalog oid> <oid> <TYPE words> <schema or -> <name> <owner>".
_TOC = re.compile(r"^\d+; \d+ \d+ (?P<rest>.*)$")


class RestoreError(DatabaseSourceError):
    """The database restore failed; the database was left as it was."""


async def _run(argv: list[str], env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RestoreError(
            f"{Path(argv[0]).name} exited with code {proc.returncode}: "
            f"{' '.join(err.decode(errors='replace').split())}"
        )
    return out.decode(errors="replace")


# Object kinds in pg_restore --list, longest first so "TABLE DATA" wins over "TABLE".
_KINDS = sorted(
    """ACCESS METHOD|ACL|AGGREGATE|BLOB|BLOB METADATA|BLOBS|CAST|CHECK CONSTRAINT|COLLATION|
    COMMENT|CONSTRAINT|CONVERSION|DATABASE|DATABASE PROPERTIES|DEFAULT|DEFAULT ACL|DOMAIN|
    ENCODING|EVENT TRIGGER|EXTENSION|FK CONSTRAINT|FOREIGN DATA WRAPPER|FOREIGN SERVER|
    FOREIGN TABLE|FUNCTION|INDEX|INDEX ATTACH|LARGE OBJECT|MATERIALIZED VIEW|
    MATERIALIZED VIEW DATA|OPERATOR|OPERATOR CLASS|OPERATOR FAMILY|POLICY|PROCEDURE|
    PROCEDURAL LANGUAGE|PUBLICATION|PUBLICATION TABLE|PUBLICATION TABLES IN SCHEMA|
    ROW SECURITY|RULE|SCHEMA|SEARCHPATH|SECURITY LABEL|SEQUENCE|SEQUENCE OWNED BY|
    SEQUENCE SET|SERVER|SHELL TYPE|STATISTICS|STATISTICS DATA|STDSTRINGS|SUBSCRIPTION|TABLE|
    TABLE ATTACH|TABLE DATA|TEXT SEARCH CONFIGURATION|TEXT SEARCH DICTIONARY|
    TEXT SEARCH PARSER|TEXT SEARCH TEMPLATE|TRANSFORM|TRIGGER|TYPE|USER MAPPING|VIEW""".replace(
        "\n", ""
    ).split("|"),
    key=len,
    reverse=True,
)
_KINDS = [" ".join(k.split()) for k in _KINDS]


def toc_entry(line: str) -> tuple[str, str, str] | None:
    """(kind, schema, rest) of a pg_restore --list line; None for comments."""
    match = _TOC.match(line)
    if match is None:
        return None
    rest = match.group("rest")
    for kind in _KINDS:
        if rest.startswith(kind + " "):
            tail = rest[len(kind) + 1 :]
            schema, _, name = tail.partition(" ")
            return kind, schema, name
    return "", "", rest


def filter_toc(toc: str, schema: str) -> list[str]:
    """pg_restore's object list without glacierd's catalog schema and everything in it."""
    kept = []
    for line in toc.splitlines():
        entry = toc_entry(line)
        if entry is None:
            continue
        kind, namespace, name = entry
        if namespace == schema:
            continue
        if namespace == "-" and (
            (kind == "SCHEMA" and name.split(" ")[0] == schema)
            or (
                kind in ("COMMENT", "ACL", "SECURITY LABEL")
                and name.startswith(f"SCHEMA {schema} ")
            )
        ):
            continue
        kept.append(line)
    return kept


async def current_drops(pg_dump: str, conninfo: ConnInfo, catalog_schema: str) -> list[str]:
    """DROP statements for every object the database holds now (but the catalog schema).

    pg_dump --clean writes them, in dependency order, before it recreates anything; the
    restore runs them first so that objects created after the backup are gone afterwards.
    """
    script = await _run(
        [
            find_tool(pg_dump, "database.pg_dump"),
            "--schema-only",
            "--clean",
            "--if-exists",
            "--no-password",
            f"--exclude-schema={catalog_schema}",
        ],
        conninfo.libpq_env(),
    )
    drops = []
    for line in script.splitlines():
        if line.startswith("CREATE ") or line.startswith("SET default_tablespace"):
            break
        if line.startswith("DROP ") or (line.startswith("ALTER ") and " DROP " in line):
            drops.append(line)
    return drops


async def terminate_other_sessions(conninfo: ConnInfo) -> int:
    """End other sessions on the database (restore.terminate_connections = true)."""
    async with connect(conninfo) as conn:
        ended = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND coalesce(application_name, '') NOT LIKE 'glacierd%'"
        )
    return len(ended)


async def restore_dump(
    *,
    dump: Path,
    conninfo: ConnInfo,
    pg_restore: str,
    pg_dump: str,
    psql: str,
    catalog_schema: str,
    work_dir: Path,
    lock_timeout_seconds: float,
    terminate_connections: bool,
) -> dict[str, int]:
    """Replace the database's contents with the dump's, in one transaction."""
    env = conninfo.libpq_env()
    restore_tool = find_tool(pg_restore, "database.pg_restore")
    toc = await _run([restore_tool, "--list", str(dump)], env)
    kept = filter_toc(toc, catalog_schema)
    await asyncio.to_thread(work_dir.mkdir, parents=True, exist_ok=True)
    list_file = work_dir / f"restore-{os.getpid()}.list"
    await asyncio.to_thread(list_file.write_text, "\n".join(kept) + "\n")
    drops = await current_drops(pg_dump, conninfo, catalog_schema)
    if terminate_connections:
        ended = await terminate_other_sessions(conninfo)
        log.warning("restore.sessions_terminated", count=ended)
    where = conninfo.describe()
    psql_proc = await asyncio.create_subprocess_exec(
        find_tool(psql, "database.psql"),
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    restore_proc: asyncio.subprocess.Process | None = None
    assert psql_proc.stdin is not None and psql_proc.stderr is not None
    psql_err = asyncio.create_task(_read_limited(psql_proc.stderr))
    committed = False
    try:
        lock_setting = f"SET LOCAL lock_timeout = '{int(lock_timeout_seconds * 1000)}ms';"
        preamble = (
            "BEGIN;\n"
            # Other sessions' locks: wait this long, then fail (and roll back) — never hang.
            f"{lock_setting}\n"
            "SET LOCAL statement_timeout = 0;\n" + "\n".join(drops) + "\n"
        )
        psql_proc.stdin.write(preamble.encode())
        restore_proc = await asyncio.create_subprocess_exec(
            restore_tool,
            # One BEGIN … COMMIT around the whole script. Without it pg_restore wraps large
            # objects in transactions of their own, whose COMMIT would end ours half-way.
            "--single-transaction",
            "--clean",
            "--if-exists",
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
        restore_err = asyncio.create_task(_read_limited(restore_proc.stderr))
        # The script is edited on the way in two places: its BEGIN goes (ours is open) and its
        # "SET lock_timeout = 0;" becomes ours, both in the header at the top; its final
        # COMMIT is held back with the last bytes, and dropped — glacierd commits only after
        # pg_restore has exited cleanly.
        buf = bytearray()
        head_done = False
        while chunk := await restore_proc.stdout.read(CHUNK):
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
        code = await restore_proc.wait()
        if code != 0:
            raise RestoreError(
                f"pg_restore exited with code {code} while restoring into {where}: "
                f"{' '.join((await restore_err).split()) or '(no message)'}; the database "
                "was not changed."
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
        code = await psql_proc.wait()
        if code != 0:
            raise _psql_error(code, await psql_err, where, lock_timeout_seconds)
        committed = True
    except (BrokenPipeError, ConnectionResetError):
        await psql_proc.wait()
        raise _psql_error(
            psql_proc.returncode or 1, await psql_err, where, lock_timeout_seconds
        ) from None
    finally:
        if not committed:
            for proc in (restore_proc, psql_proc):
                if proc is not None and proc.returncode is None:
                    # Killing psql drops its connection: PostgreSQL rolls back.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
        await asyncio.to_thread(list_file.unlink, missing_ok=True)
    return {"objects": len(kept), "dropped_first": len(drops)}


def _psql_error(code: int, stderr: str, where: str, lock_timeout: float) -> RestoreError:
    text = " ".join(stderr.split()) or "(no message)"
    if "lock timeout" in text:
        return RestoreError(
            f"other connections to {where} held locks for more than {lock_timeout:g} s; stop "
            "the application (or set restore.terminate_connections = true) and retry — the "
            "database was not changed."
        )
    return RestoreError(
        f"the restore into {where} failed and was rolled back (psql exit {code}): {text}"
    )
