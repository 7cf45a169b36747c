"""[database] and [catalog]: libpq connection strings, and the variables that replace them.

The file is meant to be readable by more than root (README: secrets never go in it), so a
``dsn`` in the file that holds a password is refused even when the environment replaces
it. The environment's own dsn may hold one: /etc/glacierd/environment is root-only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, StrictStr, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass

from glacierd.config.errors import Unquoted, invalid, must_be
from glacierd.config.fields import SECTION
from glacierd.pgconnect.conninfo import ConnInfo, ConnInfoError, names_secret, parse_conninfo

# Environment variables that replace a setting of the file (README, "Configuration").
ENV_OVERRIDES = {
    "database.dsn": "GLACIERD_DATABASE_DSN",
    "catalog.dsn": "GLACIERD_CATALOG_DSN",
}


def environ(info: ValidationInfo) -> Mapping[str, str]:
    """The environment the settings are read with: config_from_dict passes it in the
    validation context; a model built in code reads the process's."""
    context = info.context if isinstance(info.context, dict) else {}
    found = context.get("environ")
    return found if found is not None else os.environ


def resolve_dsn(value: Any, info: ValidationInfo, env_name: str) -> ConnInfo:
    """The connection a section uses: ``env_name`` if set, else the file's dsn. A ConnInfo
    given instead of a string is the section's default (the catalog's: the database's)."""
    env = environ(info)
    if isinstance(value, ConnInfo):
        default: ConnInfo | None = value
        in_file = ""
    elif value is None or isinstance(value, str):
        default = None
        in_file = value or ""
    elif isinstance(value, list | dict):
        raise must_be("a string", Unquoted("a list" if isinstance(value, list) else "a table"))
    else:
        raise must_be("a string", value)
    if in_file and (secret := names_secret(in_file)):
        what = "a password" if secret == "password" else f"a secret ({secret})"
        raise invalid(
            f"{{setting}} contains {what}",
            "remove it from the file and put it in ~/.pgpass (or PGPASSWORD in "
            f"/etc/glacierd/environment), or give the whole dsn in {env_name}",
        )
    raw = env.get(env_name) or in_file
    if not raw and default is not None:
        return default
    # A parse error never quotes the text: it may hold a password (from the environment).
    try:
        conninfo = parse_conninfo(raw)
    except ConnInfoError as exc:
        raise invalid(
            f"{{setting}} (or {env_name}) is not a valid libpq connection string: {exc}",
            "write it as postgresql://user@host:5432/dbname or 'host=… dbname=…'",
        ) from None
    if problem := conninfo.asyncpg_problem():
        # The reason reads 'what; what to do' (or only 'what').
        what, _, how = problem.partition("; ")
        raise invalid(
            f"{{setting}} (or {env_name}) cannot be used by glacierd's own connections: {what}",
            how or "change that parameter of the connection string",
        )
    return conninfo


@dataclass(frozen=True, config=SECTION)
class DatabaseConfig:
    """The application's database: what is backed up and what a restore writes into."""

    env_name: ClassVar[str] = ENV_OVERRIDES["database.dsn"]

    # Read from the file's `dsn` (or the environment): see resolve_dsn.
    conninfo: ConnInfo = Field(default=None, validation_alias="dsn", validate_default=True)
    pg_dump: StrictStr = "pg_dump"
    pg_restore: StrictStr = "pg_restore"
    psql: StrictStr = "psql"

    @field_validator("conninfo", mode="plain")
    @classmethod
    def _connection(cls, value: Any, info: ValidationInfo) -> ConnInfo:
        conninfo = resolve_dsn(value, info, cls.env_name)
        if not conninfo.params.get("dbname") and not environ(info).get("PGDATABASE"):
            raise invalid(
                "{setting} names no database",
                "set it to postgresql://user@host/dbname (or set PGDATABASE)",
            )
        return conninfo


@dataclass(frozen=True, config=SECTION)
class CatalogConfig:
    """Where glacierd records its backups: a schema of its own, by default in the
    application's database (Config gives the database's connection as the default)."""

    env_name: ClassVar[str] = ENV_OVERRIDES["catalog.dsn"]

    conninfo: ConnInfo = Field(default=None, validation_alias="dsn", validate_default=True)
    schema: StrictStr = "glacierd"

    @field_validator("conninfo", mode="plain")
    @classmethod
    def _connection(cls, value: Any, info: ValidationInfo) -> ConnInfo:
        return resolve_dsn(value, info, cls.env_name)

    @field_validator("schema")
    @classmethod
    def _plain_identifier(cls, schema: str) -> str:
        # It is quoted into SQL: keep it to what needs no quoting at all.
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise invalid(
                f"{{setting}} {schema!r} is not a plain lower-case SQL identifier",
                "use letters, digits and underscores, such as 'glacierd'",
            )
        return schema
