"""libpq connection strings: parsed once, at start-up, into a ``ConnInfo``.

A ``ConnInfo`` is what the configuration holds for the backed-up database and the catalog.
It turns itself into what each kind of connection needs: libpq environment variables for
pg_dump / pg_restore / psql (``libpq.py``), asyncpg arguments for glacierd's own connections
(``asyncpg_args.py``, ``tls.py``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from glacierd.pgconnect import asyncpg_args, libpq
from glacierd.pgconnect.keywords import (
    SECRET_KEYWORDS,
    ConnInfoError,
    check_key,
    check_value,
)

_KV = re.compile(r"\s*([a-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'")

__all__ = ["ConnInfo", "ConnInfoError", "names_secret", "parse_conninfo"]


@dataclass(frozen=True)
class ConnInfo:
    params: dict[str, str]
    # The pg_service.conf service whose parameters were merged into params, if any.
    service: str | None = field(default=None, compare=False)

    def with_dbname(self, dbname: str) -> ConnInfo:
        return ConnInfo({**self.params, "dbname": dbname}, self.service)

    @property
    def dbname(self) -> str | None:
        return self.params.get("dbname") or os.environ.get("PGDATABASE")

    def libpq_env(self) -> dict[str, str]:
        """The process environment for pg_dump/pg_restore/psql, with these parameters applied."""
        return libpq.libpq_env(self.params, self.service)

    def asyncpg_problem(self) -> str | None:
        """Why glacierd's own (asyncpg) connections cannot honour these parameters, or None."""
        return asyncpg_args.asyncpg_problem(self.params)

    def asyncpg_kwargs(self) -> dict[str, Any]:
        """Arguments for asyncpg.connect / create_pool (reads TLS files: call it off the event
        loop); ConnInfoError with one sentence when a file is missing or unreadable."""
        return asyncpg_args.asyncpg_kwargs(self.params)

    def describe(self) -> str:
        """Where this points, for messages and logs: never the password."""
        p = self.params
        host = p.get("host") or os.environ.get("PGHOST") or "localhost"
        port = p.get("port") or os.environ.get("PGPORT") or "5432"
        user = p.get("user") or os.environ.get("PGUSER") or "(default user)"
        return f"{user}@{host}:{port}/{self.dbname or '(default database)'}"


def parse_conninfo(text: str) -> ConnInfo:
    """Parse a URI (postgresql://…) or a keyword/value string (host=… dbname=…); a service
    (the ``service`` keyword, else PGSERVICE) is looked up in pg_service.conf and merged
    under the keywords given explicitly, as libpq does."""
    params = _parse_text(text)
    name = params.pop("service", None) or os.environ.get("PGSERVICE")
    if not name:
        return ConnInfo(params)
    return ConnInfo({**libpq.read_service(name), **params}, name)


def names_secret(text: str) -> str | None:
    """The secret keyword (password, sslpassword, …) the connection string itself holds (a
    service file's are not counted); None for text that does not parse (parse_conninfo
    reports that)."""
    try:
        params = _parse_text(text)
    except ConnInfoError:
        return None
    return next((k for k in SECRET_KEYWORDS if params.get(k)), None)


def _parse_text(text: str) -> dict[str, str]:
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
        check_key(key)
        check_value(key, value)
        params[key] = value
        pos = match.end()
    return params


def _parse_uri(text: str) -> dict[str, str]:
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
        check_key(key)
        check_value(key, value)
        params[key] = value
    return params
