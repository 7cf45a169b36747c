"""Reading a custom-format dump before anything changes: its object list (pg_restore
--list) without glacierd's catalog schema, what the restore asks pg_restore for, and the
schemas to create.

pg_restore only reads the dump here, bounded in time (processes.TOOL_SECONDS); a failure
says that the database was not changed.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from glacierd.sources import processes
from glacierd.sources.database import RestoreError

# A TOC line: "<id>; <catalog oid> <oid> <TYPE words> <schema or -> <name> <owner>".
_TOC = re.compile(r"^\d+; \d+ \d+ (?P<rest>.*)$")


async def read_dump(argv: list[str], env: dict[str, str]) -> str:
    """Run pg_restore to read the dump (its list, its schemas): nothing is changed yet."""
    try:
        code, out, err = await processes.run_tool(argv, env, processes.TOOL_SECONDS)
    except processes.ToolTimeout:
        raise RestoreError(
            f"pg_restore ({argv[0]}) did not finish within {processes.TOOL_SECONDS:g} s and "
            "was killed; check the program and the dump file — the database was not changed."
        ) from None
    if code != 0:
        message = " ".join(err.decode(errors="replace").split()) or "(no message)"
        raise RestoreError(
            f"pg_restore exited with code {code} while reading {argv[-1]}: {message}; the "
            "database was not changed."
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


@dataclass(frozen=True)
class RestorePlan:
    """What pg_restore is asked for: the schemas (created by glacierd, IF NOT EXISTS), the
    other objects (pg_restore's script), and the extensions the dump has (kept if there)."""

    schemas: list[str]
    objects: list[str]
    extensions: list[str]

    @classmethod
    def from_toc(cls, toc: str, catalog_schema: str) -> RestorePlan:
        schemas, objects, extensions = [], [], []
        for line in filter_toc(toc, catalog_schema):
            entry = toc_entry(line)
            assert entry is not None
            kind, namespace, name = entry
            if kind == "SCHEMA" and namespace == "-":
                schemas.append(line)
                continue
            if kind == "EXTENSION" and namespace == "-":
                # "EXTENSION - citext " (an extension has no owner in the list).
                extensions.append(name.strip())
            objects.append(line)
        return cls(schemas, objects, extensions)


async def schema_script(
    restore_tool: str, dump: Path, schemas: list[str], list_file: Path, env: dict[str, str]
) -> str:
    """``CREATE SCHEMA IF NOT EXISTS`` (and ownership) for the dump's schemas: the ones that
    hold an extension were kept by the drop phase, the others are created."""
    if not schemas:
        return ""
    await asyncio.to_thread(list_file.write_text, "\n".join(schemas) + "\n")
    script = await read_dump(
        [restore_tool, "--schema-only", "--use-list", str(list_file), "--file", "-", str(dump)],
        env,
    )
    statements = []
    for line in script.splitlines():
        if line.startswith("CREATE SCHEMA "):
            statements.append("CREATE SCHEMA IF NOT EXISTS " + line[len("CREATE SCHEMA ") :])
        elif line.startswith("ALTER SCHEMA "):
            statements.append(line)
    return "\n".join(statements) + "\n"
