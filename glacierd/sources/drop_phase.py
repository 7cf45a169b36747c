"""The drop phase: the psql script that empties the database — but glacierd's catalog
schema — inside the restore's transaction, so that objects created after the backup
disappear too.

The statements are computed by the server inside the transaction (psql's ``\\gexec`` runs
the statements a catalog query writes), so it sees exactly what is there once the
transaction runs. Whole objects are dropped with CASCADE, never constraint by constraint
(dropping a partition's inherited primary key is refused by PostgreSQL), in this order:

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
"""

from __future__ import annotations

import json

# What the script raises when the catalog schema would lose something (psql's error names it).
REFUSED = "glacierd refused the restore"


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
            f"{REFUSED}: dropping the application's objects would change glacierd's "
            f"catalog schema {catalog_schema}"
        )
        + "; END $glacierd$;",
        "\\endif",
    ]
    return "\n".join(lines) + "\n"
