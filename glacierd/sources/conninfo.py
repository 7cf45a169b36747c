"""libpq connection strings, turned into libpq environment variables and asyncpg arguments.

glacierd never puts a connection string on a command line: a password in it would be
visible in `ps`. pg_dump and pg_restore get the parameters as PG* environment variables,
which is also how `.pgpass` and the operator's own PG* variables keep working.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

# libpq parameter -> environment variable (see "Environment Variables" in the libpq docs).
_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
}
_KV = re.compile(r"\s*([a-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'")
_NUMERIC = ("port", "connect_timeout")


class ConnInfoError(ValueError):
    pass


@dataclass(frozen=True)
class ConnInfo:
    params: dict[str, str]

    def with_dbname(self, dbname: str) -> ConnInfo:
        return ConnInfo({**self.params, "dbname": dbname})

    @property
    def dbname(self) -> str | None:
        return self.params.get("dbname") or os.environ.get("PGDATABASE")

    def libpq_env(self) -> dict[str, str]:
        """The process environment for pg_dump/pg_restore, with these parameters applied."""
        env = dict(os.environ)
        for key, value in self.params.items():
            env[_ENV[key]] = value
        return env

    def asyncpg_kwargs(self) -> dict[str, Any]:
        """Arguments for asyncpg.connect / create_pool; unset ones fall back to PG* and .pgpass."""
        p = self.params
        kwargs: dict[str, Any] = {}
        if "host" in p or "hostaddr" in p:
            kwargs["host"] = p.get("hostaddr") or p["host"]
        if "port" in p:
            kwargs["port"] = int(p["port"])
        if "user" in p:
            kwargs["user"] = p["user"]
        if "password" in p:
            kwargs["password"] = p["password"]
        if "dbname" in p:
            kwargs["database"] = p["dbname"]
        if "passfile" in p:
            kwargs["passfile"] = p["passfile"]
        if "sslmode" in p:
            kwargs["ssl"] = p["sslmode"]
        if "connect_timeout" in p:
            kwargs["timeout"] = float(p["connect_timeout"])
        server_settings = {"application_name": p.get("application_name", "glacierd")}
        kwargs["server_settings"] = server_settings
        return kwargs

    def describe(self) -> str:
        """Where this points, for messages and logs: never the password."""
        p = self.params
        host = p.get("host") or os.environ.get("PGHOST") or "localhost"
        port = p.get("port") or os.environ.get("PGPORT") or "5432"
        user = p.get("user") or os.environ.get("PGUSER") or "(default user)"
        return f"{user}@{host}:{port}/{self.dbname or '(default database)'}"


def parse_conninfo(text: str) -> ConnInfo:
    """Parse a URI (postgresql://…) or a keyword/value string (host=… dbname=…)."""
    text = text.strip()
    if text.startswith(("postgresql://", "postgres://")):
        return _parse_uri(text)
    params: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _KV.match(text, pos)
        if not match or not match.group(0).strip():
            # Never quote the text itself: it may be (part of) a password.
            raise ConnInfoError(
                f"cannot read it from character {pos + 1} on (expected keyword=value)"
            )
        key, value = match.group(1), match.group(2)
        if value.startswith("'"):
            if not _QUOTED.fullmatch(value):
                raise ConnInfoError(f"the quoted value of {key!r} has no closing quote")
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        _check_key(key)
        _check_value(key, value)
        params[key] = value
        pos = match.end()
    return ConnInfo(params)


def names_password(text: str) -> bool:
    """Whether the connection string itself holds a password (a service file's is not
    counted); False for text that does not parse (parse_conninfo reports that)."""
    try:
        return "password" in parse_conninfo(text).params
    except ConnInfoError:
        return False


def _parse_uri(text: str) -> ConnInfo:
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL": an unclosed [ in the host
        raise ConnInfoError(str(exc)) from None
    params: dict[str, str] = {}
    if parts.hostname:
        params["host"] = unquote(parts.hostname)
    try:
        port = parts.port
    except ValueError:
        # urllib's message quotes the text it took for a port, which may be part of the
        # password: never repeat it.
        raise ConnInfoError(
            "the port is not a whole number from 1 to 65535 (if the password contains "
            "/ # ? @ or :, percent-encode it)"
        ) from None
    if port:
        params["port"] = str(port)
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    if parts.path and parts.path != "/":
        params["dbname"] = unquote(parts.path.lstrip("/"))
    for key, value in parse_qsl(parts.query):
        _check_key(key)
        _check_value(key, value)
        params[key] = value
    return ConnInfo(params)


def _check_key(key: str) -> None:
    if key not in _ENV:
        raise ConnInfoError(f"unknown parameter {key!r}")


def _check_value(key: str, value: str) -> None:
    # asyncpg_kwargs() turns these into numbers; fail here, at start-up, not at connect time.
    if key in _NUMERIC and not value.strip().isdigit():
        raise ConnInfoError(f"{key} must be a whole number, not {value!r}")
