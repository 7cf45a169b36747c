"""libpq connection strings, turned into libpq environment variables and asyncpg arguments.

glacierd never puts a connection string on a command line: a password in it would be
visible in `ps`. pg_dump, pg_restore and psql get the parameters as PG* environment
variables, which is also how `.pgpass` and the operator's own PG* variables keep working.
The few keywords libpq reads from no variable (keepalives, sslpassword, …) reach them
through a service file glacierd writes for itself (mode 0600, removed at exit).

Every libpq keyword is accepted. glacierd's own connections use asyncpg, which speaks
fewer of them: ``asyncpg_kwargs`` maps what it can (TLS files and modes into an SSL context,
``options`` into server settings, a ``service`` looked up in pg_service.conf), and
``asyncpg_problem`` names the few that would promise a guarantee asyncpg cannot keep.
"""

from __future__ import annotations

import atexit
import os
import random
import re
import shutil
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

# Every libpq keyword (PostgreSQL 18) -> its environment variable, None where libpq has none.
_KEYWORDS: dict[str, str | None] = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "fallback_application_name": None,
    "keepalives": None,
    "keepalives_idle": None,
    "keepalives_interval": None,
    "keepalives_count": None,
    "tcp_user_timeout": None,
    "replication": None,
    "gssencmode": "PGGSSENCMODE",
    "sslmode": "PGSSLMODE",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE",
    "sslpassword": None,
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "sslkeylogfile": None,
    "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "min_protocol_version": "PGMINPROTOCOLVERSION",
    "max_protocol_version": "PGMAXPROTOCOLVERSION",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "service": "PGSERVICE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
    "oauth_issuer": None,
    "oauth_client_id": None,
    "oauth_client_secret": None,
    "oauth_scope": None,
    "scram_client_key": None,
    "scram_server_key": None,
}
_ENV = {key: var for key, var in _KEYWORDS.items() if var is not None}
# Secrets: never in the configuration file (config.py refuses them there).
SECRET_KEYWORDS = ("password", "sslpassword", "oauth_client_secret", "scram_client_key")
_KV = re.compile(r"\s*([a-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'")
_NUMERIC = (
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# TLS keywords asyncpg's own DSN parser understands (used for sslmode allow/prefer).
_ASYNCPG_DSN_TLS = (
    "sslmode",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "sslnegotiation",
)
# Where libpq looks for pg_service.conf when PGSYSCONFDIR is unset (Debian and Ubuntu's libpq).
DEFAULT_SYSCONFDIR = "/etc/postgresql-common"


class ConnInfoError(ValueError):
    pass


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

    def _get(self, key: str) -> str | None:
        """The keyword's value, else its environment variable's (libpq's order)."""
        value = self.params.get(key)
        if value is None and (var := _ENV.get(key)):
            value = os.environ.get(var)
        return value

    def libpq_env(self) -> dict[str, str]:
        """The process environment for pg_dump/pg_restore/psql, with these parameters applied."""
        env = dict(os.environ)
        if self.service is not None:
            # Already merged into params; libpq would otherwise read it again, and a
            # service's values outrank the environment's.
            env.pop("PGSERVICE", None)
        no_variable: dict[str, str] = {}
        for key, value in self.params.items():
            var = _KEYWORDS[key]
            if var is None:
                no_variable[key] = value
            elif key != "service":
                env[var] = value
        if no_variable:
            env["PGSERVICEFILE"] = str(_service_file(no_variable))
            env["PGSERVICE"] = _OWN_SERVICE
        return env

    def asyncpg_problem(self) -> str | None:
        """Why glacierd's own (asyncpg) connections cannot honour these parameters, or None."""
        p = self.params
        for key in (
            "require_auth",
            "requirepeer",
            "oauth_issuer",
            "oauth_client_id",
            "oauth_client_secret",
            "oauth_scope",
            "scram_client_key",
            "scram_server_key",
        ):
            if p.get(key):
                return (
                    f"{key} cannot be enforced on glacierd's own connections (asyncpg does not "
                    f"support it); remove {key}"
                )
        demands = {
            "channel_binding": ("require", "channel binding", "prefer"),
            "gssencmode": ("require", "GSSAPI encryption", "prefer"),
            "sslcertmode": ("require", "a server request for the client certificate", "allow"),
        }
        for key, (refused, what, instead) in demands.items():
            if self._get(key) == refused:
                return (
                    f"{key}={refused} cannot be honoured on glacierd's own connections (asyncpg "
                    f"does not support {what}); use {key}={instead} or remove it"
                )
        replication = (p.get("replication") or "").lower()
        if replication not in ("", "0", "false", "off", "no"):
            return "replication connections cannot hold glacierd's catalog; remove replication"
        if (options := self._get("options")) is not None:
            try:
                _server_settings(options)
            except ConnInfoError as exc:
                return str(exc)
        mode = self._get("sslmode")
        if mode is not None and mode not in _SSLMODES:
            return f"sslmode {mode!r} is not one of {', '.join(_SSLMODES)}"
        if self._get("sslrootcert") == "system" and mode not in (None, "verify-full"):
            return "sslrootcert=system needs sslmode=verify-full (or no sslmode)"
        return None

    def asyncpg_kwargs(self) -> dict[str, Any]:
        """Arguments for asyncpg.connect / create_pool; unset ones fall back to PG* and .pgpass.

        Reads the TLS files named in the parameters (call it off the event loop); raises
        ConnInfoError with one sentence when one is missing or unreadable.
        """
        if problem := self.asyncpg_problem():
            raise ConnInfoError(problem)
        p = self.params
        kwargs: dict[str, Any] = {}
        host = p.get("hostaddr") or p.get("host")
        if host:
            hosts = host.split(",")
            ports = [int(x) for x in p["port"].split(",")] if "port" in p else None
            if self._get("load_balance_hosts") == "random":
                order = random.sample(range(len(hosts)), len(hosts))
                hosts = [hosts[i] for i in order]
                if ports is not None and len(ports) == len(order):
                    ports = [ports[i] for i in order]
            kwargs["host"] = hosts if len(hosts) > 1 else hosts[0]
            if ports is not None:
                kwargs["port"] = ports if len(ports) > 1 else ports[0]
        elif "port" in p:
            kwargs["port"] = int(p["port"])
        if "user" in p:
            kwargs["user"] = p["user"]
        if "password" in p:
            kwargs["password"] = p["password"]
        if "dbname" in p:
            kwargs["database"] = p["dbname"]
        if "passfile" in p:
            kwargs["passfile"] = p["passfile"]
        if (timeout := self._get("connect_timeout")) is not None and int(timeout) > 0:
            kwargs["timeout"] = float(timeout)
        for key in ("target_session_attrs", "krbsrvname", "gsslib"):
            if key in p:
                kwargs[key] = p[key]
        server_settings = _server_settings(self._get("options") or "")
        server_settings["application_name"] = p.get("application_name", "glacierd")
        kwargs["server_settings"] = server_settings
        kwargs.update(self._tls_kwargs())
        return kwargs

    def _tls_kwargs(self) -> dict[str, Any]:
        mode = self._get("sslmode")
        if self._get("sslrootcert") == "system" and mode is None:
            mode = "verify-full"  # as libpq does
        if mode == "disable":
            return {"ssl": False}
        if mode in (None, "allow", "prefer"):
            # No certificate is verified in these modes, and plain text remains possible:
            # asyncpg's own DSN handling does exactly that, client certificate included.
            query = {k: self.params[k] for k in _ASYNCPG_DSN_TLS if self.params.get(k)}
            if mode is not None:
                query["sslmode"] = mode
            return {"dsn": "postgresql://?" + urlencode(query)} if query else {}
        kwargs: dict[str, Any] = {"ssl": self._ssl_context(mode)}
        if self._get("sslnegotiation") == "direct":
            kwargs["direct_tls"] = True
        return kwargs

    def _ssl_context(self, mode: str) -> ssl.SSLContext:
        """sslmode require / verify-ca / verify-full as libpq implements them."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = mode == "verify-full"
        root = self._get("sslrootcert")
        verify = False
        if root == "system":
            ctx.load_default_certs()
            verify = True
        else:
            root_path = Path(root) if root else _dot_postgresql("root.crt")
            if root_path is not None and root_path.exists():
                _load(
                    lambda: ctx.load_verify_locations(cafile=str(root_path)),
                    "sslrootcert",
                    root_path,
                )
                verify = True
            elif mode != "require":
                raise ConnInfoError(
                    f"sslmode={mode} needs the CA certificate, and sslrootcert "
                    f"{root_path or '~/.postgresql/root.crt'} does not exist; set sslrootcert "
                    "to the CA's certificate file"
                )
        if verify:
            ctx.verify_mode = ssl.CERT_REQUIRED
            crl, crldir = self._get("sslcrl"), self._get("sslcrldir")
            if not crl and not crldir:
                default = _dot_postgresql("root.crl")
                crl = str(default) if default is not None else None
            if crl and Path(crl).is_file():
                _load(lambda: ctx.load_verify_locations(cafile=crl), "sslcrl", crl)
                ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
            if crldir and Path(crldir).is_dir():
                _load(lambda: ctx.load_verify_locations(capath=crldir), "sslcrldir", crldir)
                ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        cert = self._get("sslcert") or _dot_postgresql("postgresql.crt")
        key = self._get("sslkey") or _dot_postgresql("postgresql.key")
        if cert and Path(cert).is_file():
            password = self.params.get("sslpassword") or ""
            keyfile = str(key) if key and Path(key).is_file() else None
            _load(
                lambda: ctx.load_cert_chain(str(cert), keyfile, password=lambda: password),
                "sslcert/sslkey (or sslpassword)",
                cert,
            )
        ctx.minimum_version = _tls_version(self._get("ssl_min_protocol_version") or "TLSv1.2")
        if maximum := self._get("ssl_max_protocol_version"):
            ctx.maximum_version = _tls_version(maximum)
        return ctx

    def describe(self) -> str:
        """Where this points, for messages and logs: never the password."""
        p = self.params
        host = p.get("host") or os.environ.get("PGHOST") or "localhost"
        port = p.get("port") or os.environ.get("PGPORT") or "5432"
        user = p.get("user") or os.environ.get("PGUSER") or "(default user)"
        return f"{user}@{host}:{port}/{self.dbname or '(default database)'}"


def _dot_postgresql(name: str) -> Path | None:
    home = os.environ.get("HOME")
    return Path(home) / ".postgresql" / name if home else None


def _load(action: Any, setting: str, path: object) -> None:
    try:
        action()
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise ConnInfoError(
            f"{setting} {path} cannot be loaded ({reason}); check the file"
        ) from None


def _tls_version(text: str) -> ssl.TLSVersion:
    versions = {
        "TLSv1": ssl.TLSVersion.TLSv1,
        "TLSv1.1": ssl.TLSVersion.TLSv1_1,
        "TLSv1.2": ssl.TLSVersion.TLSv1_2,
        "TLSv1.3": ssl.TLSVersion.TLSv1_3,
    }
    if text not in versions:
        raise ConnInfoError(f"{text!r} is not a TLS version; use TLSv1.2 or TLSv1.3")
    return versions[text]


def _split_options(text: str) -> list[str]:
    """Split an ``options`` value as the server does: on blanks, with backslash escapes."""
    words: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


def _server_settings(options: str) -> dict[str, str]:
    """``options`` ("-c name=value --name=value") as asyncpg server_settings."""
    words = _split_options(options)
    settings: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c" and i + 1 < len(words):
            setting, i = words[i + 1], i + 2
        elif word.startswith(("-c", "--")) and len(word) > 2:
            setting, i = word[2:], i + 1
        else:
            raise ConnInfoError(
                f"options holds {word!r}, which glacierd's own connections cannot pass on; "
                "write each setting as -c name=value"
            )
        name, sep, value = setting.partition("=")
        if not sep or not name:
            raise ConnInfoError(f"options holds {setting!r}; write it as -c name=value")
        settings[name.replace("-", "_")] = value
    return settings


# ------------------------------------------------------------------ service files

_OWN_SERVICE = "glacierd"
_own_service_files: dict[frozenset[tuple[str, str]], Path] = {}


def _service_file(params: dict[str, str]) -> Path:
    """A private service file holding ``params`` (keywords libpq reads from no variable),
    written once per process and set of values, removed at exit."""
    ident = frozenset(params.items())
    if ident not in _own_service_files:
        folder = Path(tempfile.mkdtemp(prefix="glacierd-libpq-"))  # mode 0700
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = folder / "pg_service.conf"
        body = f"[{_OWN_SERVICE}]\n" + "".join(f"{k}={v}\n" for k, v in params.items())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body)
        _own_service_files[ident] = path
    return _own_service_files[ident]


def service_files() -> list[Path]:
    """Where libpq looks for a service, in its order: the user's file, then the system's."""
    user = os.environ.get("PGSERVICEFILE")
    home = os.environ.get("HOME")
    first = Path(user) if user else (Path(home) / ".pg_service.conf" if home else None)
    system = Path(os.environ.get("PGSYSCONFDIR") or DEFAULT_SYSCONFDIR) / "pg_service.conf"
    return [f for f in (first, system) if f is not None]


def read_service(name: str) -> dict[str, str]:
    """The parameters of service ``name`` from the first pg_service.conf that defines it."""
    searched = service_files()
    for path in searched:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConnInfoError(
                f"the service file {path} cannot be read ({exc.strerror})"
            ) from None
        found = _service_section(text, name, path)
        if found is not None:
            return found
    raise ConnInfoError(
        f"service {name!r} is not defined in {' or '.join(str(p) for p in searched)}; "
        "define it there (or set PGSERVICEFILE)"
    )


def _service_section(text: str, name: str, path: Path) -> dict[str, str] | None:
    section: str | None = None
    found: dict[str, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if found is not None:
                break
            section = line.strip("[]").strip()
            if section == name:
                found = {}
            continue
        if found is None:
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in _KEYWORDS or key == "service":
            raise ConnInfoError(
                f"line {number} of the service file {path} is not a connection keyword=value"
            )
        _check_value(key, value)
        found[key] = value
    return found


def parse_conninfo(text: str) -> ConnInfo:
    """Parse a URI (postgresql://…) or a keyword/value string (host=… dbname=…); a service
    (the ``service`` keyword, else PGSERVICE) is looked up in pg_service.conf and merged
    under the keywords given explicitly, as libpq does."""
    params = _parse_text(text)
    name = params.pop("service", None) or os.environ.get("PGSERVICE")
    if not name:
        return ConnInfo(params)
    return ConnInfo({**read_service(name), **params}, name)


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
        _check_key(key)
        _check_value(key, value)
        params[key] = value
        pos = match.end()
    return params


def names_secret(text: str) -> str | None:
    """The secret keyword (password, sslpassword, …) the connection string itself holds (a
    service file's are not counted); None for text that does not parse (parse_conninfo
    reports that)."""
    try:
        params = _parse_text(text)
    except ConnInfoError:
        return None
    return next((k for k in SECRET_KEYWORDS if params.get(k)), None)


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
        _check_key(key)
        _check_value(key, value)
        params[key] = value
    return params


def _check_key(key: str) -> None:
    if key not in _KEYWORDS:
        raise ConnInfoError(f"unknown parameter {key!r}")


def _check_value(key: str, value: str) -> None:
    # Fail here, at start-up, not at connect time.
    if key in _NUMERIC and not value.strip().lstrip("-").isdigit():
        raise ConnInfoError(f"{key} must be a whole number, not {value!r}")
    if key == "port" and not all(p.strip().isdigit() for p in value.split(",")):
        raise ConnInfoError(f"port must be a whole number, not {value!r}")
    if key == "sslmode" and value not in _SSLMODES:
        raise ConnInfoError(f"sslmode {value!r} is not one of {', '.join(_SSLMODES)}")
    if "\n" in value or "\r" in value:
        # A line break would end the value early in the service file written for libpq.
        raise ConnInfoError(f"the value of {key} contains a line break")
