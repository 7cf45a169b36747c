"""Restoring a custom-format dump into the live database: all or nothing.

How it stays atomic: glacierd runs ``psql`` itself and feeds it, on one connection,
``BEGIN``; a drop phase that removes what the database holds now (so that objects created
after the backup disappear too); the schemas of the dump; then the SQL that ``pg_restore``
generates from the dump; and ``COMMIT`` only after pg_restore exited cleanly. Any error — an
object that fails, a killed pg_restore, a lock not granted in time, glacierd itself being
killed — ends the connection without COMMIT, and PostgreSQL rolls everything back.

The drop phase is computed by the server inside the transaction (psql's ``\\gexec`` runs the
statements a catalog query writes), so it sees exactly what is there once the transaction
runs. Whole objects are dropped with CASCADE, never constraint by constraint (dropping a
partition's inherited primary key is refused by PostgreSQL), in this order:

1. event triggers (they would fire on — or refuse — every statement that follows);
2. every large object (pg_dump --schema-only, and so any DROP list taken from it, has none);
3. objects that live in no schema: publications, casts, transforms, languages, foreign-data
   wrappers and servers, access methods — the ones created by users, not by extensions;
4. extensions the dump does not have (extensions it has are kept: pg_restore's
   ``CREATE EXTENSION IF NOT EXISTS`` then leaves them be, and a restore needs no right to
   create them again);
5. every schema with ``DROP SCHEMA … CASCADE`` — except ``public`` (the dump does not
   create it) and the schemas that hold an extension, which are emptied object by object
   (tables, views, sequences, routines, types, operators, collations, text-search objects…
   but not the extensions' own members); the rows of kept extensions' configuration tables
   that pg_dump dumps (the application's) are deleted, to come back from the dump;
6. a check that glacierd's catalog schema lost nothing — if it depended on an application
   object, the CASCADE would have reached into it; the restore then fails and rolls back.

The dump's schemas are then created with ``CREATE SCHEMA IF NOT EXISTS`` (the kept ones
exist), and pg_restore's script (without ``--clean``: nothing is left to drop) follows.

glacierd's own catalog schema is never touched: the drop phase skips it (and checks that it
stayed whole), and it is filtered out of pg_restore's object list (``-L``), so a restore to
last week can be followed by a restore to yesterday.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import structlog

from glacierd.catalog.pool import own_backend_pids
from glacierd.pgconnect.conninfo import ConnInfo
from glacierd.sources.database import (
    REAP_SECONDS,
    TOOL_SECONDS,
    DatabaseSourceError,
    ToolTimeout,
    _read_limited,
    collect,
    connect,
    find_tool,
    read_output,
    run_tool,
    stop_process,
    wait_exited,
)

log = structlog.get_logger("glacierd.restore.database")
_HEADER_BYTES = 64 * 1024
_TAIL_BYTES = 64 * 1024
# Lines the drop phase prints on psql's output: "glacierd:<counter>:<number>".
_MARKER = re.compile(rb"^glacierd:(dropped|large_objects_dropped):(\d+)$")
_REFUSED = "glacierd refused the restore"


def _edit_head(head: bytes, lock_setting: str) -> bytes:
    head = head.replace(b"\nBEGIN;\n", b"\n", 1)
    return head.replace(b"SET lock_timeout = 0;", lock_setting.encode(), 1)


# A TOC line: "<id>; <catalog oid> <oid> <TYPE words> <schema or -> <name> <owner>".
_TOC = re.compile(r"^\d+; \d+ \d+ (?P<rest>.*)$")


class RestoreError(DatabaseSourceError):
    """The database restore failed; the database was left as it was."""


async def _run(argv: list[str], env: dict[str, str]) -> str:
    """Run pg_restore to read the dump (its list, its schemas): nothing is changed yet."""
    try:
        code, out, err = await run_tool(argv, env, TOOL_SECONDS)
    except ToolTimeout:
        raise RestoreError(
            f"pg_restore ({argv[0]}) did not finish within {TOOL_SECONDS:g} s and was killed; "
            "check the program and the dump file — the database was not changed."
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


def _literal(text: str) -> str:
    """A SQL string literal (standard_conforming_strings is on in the drop phase)."""
    return "'" + text.replace("'", "''") + "'"


def _depends(catalog: str, oid: str, deptype: str) -> str:
    """SQL: the object has a dependency of this type ('e': it is a member of an extension,
    'i': it is part of another object, such as a range type's constructor function)."""
    return (
        "EXISTS (SELECT 1 FROM pg_catalog.pg_depend AS d WHERE d.classid = "
        f"'pg_catalog.{catalog}'::pg_catalog.regclass AND d.objid = {oid} "
        f"AND d.deptype = '{deptype}')"
    )


def _not_member(catalog: str, oid: str) -> str:
    """SQL: the object is not a member of an extension (those are left to their extension)."""
    return "NOT " + _depends(catalog, oid, "e")


# Objects created at initdb have OIDs below this (PostgreSQL's FirstNormalObjectId); pg_dump
# does not dump them, so the restore never drops them either.
_FIRST_USER_OID = 16384


def _catalog_fingerprint(catalog_schema: str) -> str:
    """SQL for a text that changes if anything in the catalog schema is dropped: relations,
    columns, constraints, triggers, routines, types, defaults, policies, rules."""
    per_relation = {
        "pg_attribute": "attrelid",
        "pg_trigger": "tgrelid",
        "pg_attrdef": "adrelid",
        "pg_policy": "polrelid",
        "pg_rewrite": "ev_class",
    }
    counts = [
        "(SELECT count(*) FROM pg_catalog.pg_class AS c WHERE c.relnamespace = n.oid)",
        "(SELECT count(*) FROM pg_catalog.pg_constraint AS k WHERE k.connamespace = n.oid)",
        "(SELECT count(*) FROM pg_catalog.pg_proc AS p WHERE p.pronamespace = n.oid)",
        "(SELECT count(*) FROM pg_catalog.pg_type AS t WHERE t.typnamespace = n.oid)",
    ]
    for table, column in per_relation.items():
        extra = " AND x.attnum > 0 AND NOT x.attisdropped" if table == "pg_attribute" else ""
        counts.append(
            f"(SELECT count(*) FROM pg_catalog.{table} AS x JOIN pg_catalog.pg_class AS c "
            f"ON c.oid = x.{column} WHERE c.relnamespace = n.oid{extra})"
        )
    return (
        "SELECT coalesce((SELECT concat_ws('/', "
        + ", ".join(counts)
        + f") FROM pg_catalog.pg_namespace AS n WHERE n.nspname = {_literal(catalog_schema)}), "
        "'absent')"
    )


def drop_phase(catalog_schema: str, dump_extensions: list[str]) -> str:
    """The psql script that empties the database (but glacierd's catalog schema) inside the
    restore's transaction; see the module docstring for the order and the reasons."""
    catalog = _literal(catalog_schema)
    extensions = _literal(json.dumps(sorted(dump_extensions)))
    user_schema = (
        f"n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' AND n.nspname <> {catalog}"
    )
    # A schema that holds (part of) an extension is kept and emptied object by object;
    # so is public, which the dump does not create.
    holds_extension = (
        "(EXISTS (SELECT 1 FROM pg_catalog.pg_extension AS x WHERE x.extnamespace = n.oid)"
        " OR " + _depends("pg_namespace", "n.oid", "e") + " OR EXISTS ("
        "SELECT 1 FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_class AS c ON "
        "d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid "
        "WHERE d.deptype = 'e' AND c.relnamespace = n.oid) OR EXISTS ("
        "SELECT 1 FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_proc AS p ON "
        "d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid "
        "WHERE d.deptype = 'e' AND p.pronamespace = n.oid) OR EXISTS ("
        "SELECT 1 FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_type AS t ON "
        "d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = t.oid "
        "WHERE d.deptype = 'e' AND t.typnamespace = n.oid))"
    )
    kept_schema = f"{user_schema} AND (n.nspname = 'public' OR {holds_extension})"

    def in_kept(alias: str, namespace_column: str, catalog_table: str) -> str:
        # Not an extension's member, and not part of another object (which takes it along).
        return (
            f"FROM pg_catalog.{catalog_table} AS {alias} JOIN pg_catalog.pg_namespace AS n "
            f"ON n.oid = {alias}.{namespace_column} WHERE {kept_schema} "
            f"AND {_not_member(catalog_table, alias + '.oid')} "
            f"AND NOT {_depends(catalog_table, alias + '.oid', 'i')}"
        )

    generators: list[str] = [
        # 1. Event triggers first: they fire on DDL, and one may refuse it.
        "SELECT format('DROP EVENT TRIGGER IF EXISTS %I CASCADE', e.evtname) "
        f"FROM pg_catalog.pg_event_trigger AS e WHERE {_not_member('pg_event_trigger', 'e.oid')}",
        # 3. Objects in no schema, made by users.
        "SELECT format('DROP PUBLICATION IF EXISTS %I', p.pubname) "
        f"FROM pg_catalog.pg_publication AS p WHERE {_not_member('pg_publication', 'p.oid')}",
        "SELECT format('DROP CAST IF EXISTS (%s AS %s) CASCADE', "
        "pg_catalog.format_type(c.castsource, NULL), pg_catalog.format_type(c.casttarget, NULL)) "
        f"FROM pg_catalog.pg_cast AS c WHERE c.oid >= {_FIRST_USER_OID} "
        # (A range type's cast to its multirange is part of the type: never on its own.)
        f"AND {_not_member('pg_cast', 'c.oid')} AND NOT {_depends('pg_cast', 'c.oid', 'i')}",
        "SELECT format('DROP TRANSFORM IF EXISTS FOR %s LANGUAGE %I CASCADE', "
        "pg_catalog.format_type(t.trftype, NULL), l.lanname) FROM pg_catalog.pg_transform AS t "
        "JOIN pg_catalog.pg_language AS l ON l.oid = t.trflang "
        f"WHERE {_not_member('pg_transform', 't.oid')}",
        "SELECT format('DROP LANGUAGE IF EXISTS %I CASCADE', l.lanname) "
        f"FROM pg_catalog.pg_language AS l WHERE l.oid >= {_FIRST_USER_OID} "
        f"AND {_not_member('pg_language', 'l.oid')}",
        "SELECT format('DROP FOREIGN DATA WRAPPER IF EXISTS %I CASCADE', w.fdwname) "
        "FROM pg_catalog.pg_foreign_data_wrapper AS w "
        f"WHERE {_not_member('pg_foreign_data_wrapper', 'w.oid')}",
        "SELECT format('DROP SERVER IF EXISTS %I CASCADE', s.srvname) "
        f"FROM pg_catalog.pg_foreign_server AS s WHERE {_not_member('pg_foreign_server', 's.oid')}",
        "SELECT format('DROP ACCESS METHOD IF EXISTS %I CASCADE', a.amname) "
        f"FROM pg_catalog.pg_am AS a WHERE a.oid >= {_FIRST_USER_OID} "
        f"AND {_not_member('pg_am', 'a.oid')}",
        # 4. Extensions the backup does not have (never one in the catalog schema).
        "SELECT format('DROP EXTENSION IF EXISTS %I CASCADE', x.extname) "
        "FROM pg_catalog.pg_extension AS x JOIN pg_catalog.pg_namespace AS n "
        f"ON n.oid = x.extnamespace WHERE x.oid >= {_FIRST_USER_OID} AND n.nspname <> {catalog} "
        "AND NOT x.extname IN (SELECT pg_catalog.jsonb_array_elements_text("
        f"{extensions}::pg_catalog.jsonb))",
        # 5a. Whole schemas.
        "SELECT format('DROP SCHEMA IF EXISTS %I CASCADE', n.nspname) "
        f"FROM pg_catalog.pg_namespace AS n WHERE {user_schema} AND n.nspname <> 'public' "
        f"AND NOT {holds_extension}",
        # 5b. The kept schemas, object by object: relations first (CASCADE takes partitions,
        # inheritance children, dependent views, foreign keys and triggers along), then the
        # rest; IF EXISTS because an earlier CASCADE may have taken an object already.
        "SELECT format('DROP %s IF EXISTS %I.%I CASCADE', CASE c.relkind "
        "WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' "
        "WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, n.nspname, c.relname) "
        + in_kept("c", "relnamespace", "pg_class")
        + " AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') "
        "ORDER BY c.relkind IN ('r', 'p', 'f') DESC, c.relispartition, n.nspname, c.relname",
        "SELECT format('DROP %s IF EXISTS %I.%I(%s) CASCADE', CASE p.prokind WHEN 'p' THEN "
        "'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, n.nspname, p.proname, "
        "CASE WHEN p.prokind = 'a' AND p.pronargs = 0 THEN '*' "
        "ELSE pg_catalog.pg_get_function_identity_arguments(p.oid) END) "
        + in_kept("p", "pronamespace", "pg_proc"),
        "SELECT format('DROP %s IF EXISTS %I.%I CASCADE', CASE t.typtype WHEN 'd' THEN "
        "'DOMAIN' ELSE 'TYPE' END, n.nspname, t.typname) "
        + in_kept("t", "typnamespace", "pg_type")
        # Base, domain, enum, range and stand-alone composite types; not arrays, multiranges
        # or tables' row types, which go with their owners.
        + " AND (t.typtype IN ('b', 'd', 'e', 'r') AND t.typrelid = 0 OR t.typtype = 'c' "
        "AND EXISTS (SELECT 1 FROM pg_catalog.pg_class AS r WHERE r.oid = t.typrelid "
        "AND r.relkind = 'c')) AND NOT EXISTS ("
        "SELECT 1 FROM pg_catalog.pg_type AS e WHERE e.typarray = t.oid)",
        "SELECT format('DROP OPERATOR IF EXISTS %I.%s (%s, %s) CASCADE', n.nspname, o.oprname, "
        "CASE WHEN o.oprleft = 0 THEN 'NONE' ELSE pg_catalog.format_type(o.oprleft, NULL) END, "
        "CASE WHEN o.oprright = 0 THEN 'NONE' ELSE pg_catalog.format_type(o.oprright, NULL) END) "
        + in_kept("o", "oprnamespace", "pg_operator"),
        "SELECT format('DROP OPERATOR CLASS IF EXISTS %I.%I USING %I CASCADE', n.nspname, "
        "c.opcname, a.amname) "
        + in_kept("c", "opcnamespace", "pg_opclass").replace(
            " WHERE ", " JOIN pg_catalog.pg_am AS a ON a.oid = c.opcmethod WHERE ", 1
        ),
        "SELECT format('DROP OPERATOR FAMILY IF EXISTS %I.%I USING %I CASCADE', n.nspname, "
        "f.opfname, a.amname) "
        + in_kept("f", "opfnamespace", "pg_opfamily").replace(
            " WHERE ", " JOIN pg_catalog.pg_am AS a ON a.oid = f.opfmethod WHERE ", 1
        ),
    ]
    for kind, table, alias, prefix in (
        ("COLLATION", "pg_collation", "c", "coll"),
        ("CONVERSION", "pg_conversion", "c", "con"),
        ("TEXT SEARCH CONFIGURATION", "pg_ts_config", "c", "cfg"),
        ("TEXT SEARCH DICTIONARY", "pg_ts_dict", "c", "dict"),
        ("TEXT SEARCH PARSER", "pg_ts_parser", "c", "prs"),
        ("TEXT SEARCH TEMPLATE", "pg_ts_template", "c", "tmpl"),
        ("STATISTICS", "pg_statistic_ext", "c", "stx"),
    ):
        generators.append(
            f"SELECT format('DROP {kind} IF EXISTS %I.%I CASCADE', n.nspname, "
            f"{alias}.{prefix}name) " + in_kept(alias, f"{prefix}namespace", table)
        )

    # 5c. A kept extension's configuration tables (PostGIS's spatial_ref_sys…): pg_dump dumps
    # the rows its filter selects (the application's), so exactly those are removed here and
    # come back from the dump — after the application's tables, whose foreign keys may
    # point at them, are gone.
    config_rows = (
        "SELECT format('DELETE FROM %I.%I %s', n.nspname, c.relname, "
        "coalesce(x.extcondition[i], '')) FROM pg_catalog.pg_extension AS x "
        "CROSS JOIN LATERAL pg_catalog.generate_subscripts(x.extconfig, 1) AS i "
        "JOIN pg_catalog.pg_class AS c ON c.oid = x.extconfig[i] "
        "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
        f"WHERE c.relkind = 'r' AND n.nspname <> {catalog}"
    )

    lines = [
        "SET LOCAL client_min_messages = warning;",
        "SET LOCAL standard_conforming_strings = on;",
        # Every name the queries below print is schema-qualified, and no function of the
        # application's is picked by accident.
        "SET LOCAL search_path = '';",
        _catalog_fingerprint(catalog_schema) + " AS glacierd_catalog_before \\gset",
    ]
    for number, query in enumerate(generators):
        if number == 1:
            # 2. Large objects (after the event triggers; their own statement: no \gexec).
            lines.append(
                "SELECT 'glacierd:large_objects_dropped:' || count(pg_catalog.lo_unlink(m.oid)) "
                "FROM pg_catalog.pg_largeobject_metadata AS m;"
            )
        lines.append(f"SELECT 'glacierd:dropped:' || count(*) FROM ({query}) AS q;")
        lines.append(query + " \\gexec")
    lines.append(config_rows + " \\gexec")
    # The kept schemas' comments as a new database has them: the dump's COMMENT entries then
    # give back the backup's (pg_dump leaves public's default comment out).
    lines += [
        "SELECT format('COMMENT ON SCHEMA %I IS %L', n.nspname, CASE n.nspname WHEN 'public' "
        "THEN 'standard public schema' END) FROM pg_catalog.pg_namespace AS n "
        f"WHERE {kept_schema} AND NOT {_depends('pg_namespace', 'n.oid', 'e')} \\gexec",
    ]
    # 6. The catalog schema must be exactly as it was.
    lines += [
        "SELECT (" + _catalog_fingerprint(catalog_schema) + ") = :'glacierd_catalog_before' "
        "AS glacierd_catalog_intact \\gset",
        "\\if :glacierd_catalog_intact",
        "\\else",
        "DO $glacierd$ BEGIN RAISE EXCEPTION '%', "
        + _literal(
            f"{_REFUSED}: dropping the application's objects would change glacierd's "
            f"catalog schema {catalog_schema}"
        )
        + "; END $glacierd$;",
        "\\endif",
    ]
    return "\n".join(lines) + "\n"


async def schema_script(
    restore_tool: str, dump: Path, schemas: list[str], list_file: Path, env: dict[str, str]
) -> str:
    """``CREATE SCHEMA IF NOT EXISTS`` (and ownership) for the dump's schemas: the ones that
    hold an extension were kept by the drop phase, the others are created."""
    if not schemas:
        return ""
    await asyncio.to_thread(list_file.write_text, "\n".join(schemas) + "\n")
    script = await _run(
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


async def terminate_other_sessions(conninfo: ConnInfo) -> int:
    """End other sessions on the database (restore.terminate_connections = true) — never
    glacierd's own: this process's catalog connections (one of them holds the operation
    lock) are recognised by their server process ids, whatever application_name the DSN
    gives them; sessions of other glacierd processes (named glacierd…, the default) are
    spared too."""
    async with connect(conninfo) as conn:
        ended = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND pid <> ALL($1::int[]) "
            "AND coalesce(application_name, '') NOT LIKE 'glacierd%'",
            sorted(own_backend_pids()),
        )
    return len(ended)


async def restore_dump(
    *,
    dump: Path,
    conninfo: ConnInfo,
    pg_restore: str,
    psql: str,
    catalog_schema: str,
    work_dir: Path,
    lock_timeout_seconds: float,
    terminate_connections: bool,
    pg_dump: str | None = None,
) -> dict[str, int]:
    """Replace the database's contents with the dump's, in one transaction.

    ``pg_dump`` is not used any more (the drop phase is computed by the server); it is still
    accepted so that callers need not change."""
    del pg_dump
    env = conninfo.libpq_env()
    restore_tool = find_tool(pg_restore, "database.pg_restore")
    psql_tool = find_tool(psql, "database.psql")
    toc = await _run([restore_tool, "--list", str(dump)], env)
    plan = RestorePlan.from_toc(toc, catalog_schema)
    await asyncio.to_thread(work_dir.mkdir, parents=True, exist_ok=True)
    list_file = work_dir / f"restore-{os.getpid()}.list"
    schema_list = work_dir / f"restore-{os.getpid()}.schemas.list"
    try:
        await asyncio.to_thread(list_file.write_text, "\n".join(plan.objects) + "\n")
        schemas = await schema_script(restore_tool, dump, plan.schemas, schema_list, env)
        if terminate_connections:
            ended = await terminate_other_sessions(conninfo)
            log.warning("restore.sessions_terminated", count=ended)
        counts = await _restore_in_one_transaction(
            psql_tool=psql_tool,
            restore_tool=restore_tool,
            dump=dump,
            list_file=list_file,
            env=env,
            preamble=drop_phase(catalog_schema, plan.extensions) + schemas,
            where=conninfo.describe(),
            lock_timeout_seconds=lock_timeout_seconds,
        )
    finally:
        for path in (list_file, schema_list):
            await asyncio.to_thread(path.unlink, missing_ok=True)
    return {
        "objects": len(plan.objects) + len(plan.schemas),
        "dropped_first": counts.get("dropped", 0),
        "large_objects_dropped": counts.get("large_objects_dropped", 0),
    }


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


async def _restore_in_one_transaction(
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
    psql_err = asyncio.create_task(_read_limited(psql_proc.stderr))
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
        restore_err = asyncio.create_task(_read_limited(restore_proc.stderr))
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
            code = await asyncio.wait_for(wait_exited(restore_proc), 3 * REAP_SECONDS)
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
            await asyncio.wait_for(wait_exited(psql_proc), 3 * REAP_SECONDS)
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
    if _REFUSED in text:
        reason = text[text.find(_REFUSED) :]
        return RestoreError(
            f"{reason} (a column, default, view or constraint there uses an object of the "
            "application); remove that dependency, or keep the catalog in a database of its "
            "own (catalog.dsn), and retry — the database was not changed."
        )
    return RestoreError(
        f"the restore into {where} failed and was rolled back (psql exit {code}): {text}"
    )
