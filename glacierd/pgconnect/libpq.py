"""What pg_dump, pg_restore and psql get: libpq environment variables, and the service files.

glacierd never puts a connection string on a command line: a password in it would be
visible in `ps`. The tools get the parameters as PG* environment variables, which is also
how `.pgpass` and the operator's own PG* variables keep working. The few keywords libpq
reads from no variable (keepalives, sslpassword, …) reach them through a service file
glacierd writes for itself (mode 0600, removed at exit).

The operator's own pg_service.conf is read here too, as libpq would find it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from glacierd.pgconnect.keywords import KEYWORDS, ConnInfoError, check_value

# Where libpq looks for pg_service.conf when PGSYSCONFDIR is unset (Debian and Ubuntu's libpq).
DEFAULT_SYSCONFDIR = "/etc/postgresql-common"
_OWN_SERVICE = "glacierd"
_own_service_files: dict[frozenset[tuple[str, str]], Path] = {}


def libpq_env(params: dict[str, str], service: str | None) -> dict[str, str]:
    """The process environment for pg_dump/pg_restore/psql, with ``params`` applied;
    ``service`` names the pg_service.conf service already merged into them, if any."""
    env = dict(os.environ)
    if service is not None:
        # Already merged into params; libpq would otherwise read it again, and a
        # service's values outrank the environment's.
        env.pop("PGSERVICE", None)
    no_variable: dict[str, str] = {}
    for key, value in params.items():
        var = KEYWORDS[key]
        if var is None:
            no_variable[key] = value
        elif key != "service":
            env[var] = value
    if no_variable:
        env["PGSERVICEFILE"] = str(_service_file(no_variable))
        env["PGSERVICE"] = _OWN_SERVICE
    return env


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
        if not sep or key not in KEYWORDS or key == "service":
            raise ConnInfoError(
                f"line {number} of the service file {path} is not a connection keyword=value"
            )
        check_value(key, value)
        found[key] = value
    return found
