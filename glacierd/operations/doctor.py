"""``glacierd doctor``: check everything a backup and a restore depend on, and say how to fix it.

Like barman's ``check``: a registry of small async checks, each answering with a
``CheckResult`` (name, ok, detail, fix). Every check is bounded in time (``CHECK_TIMEOUT``),
so a network that drops packets makes one check fail instead of hanging the command; and
every check runs whatever the others found, except where one cannot work without another:

- ``needs``: hard dependencies. If one of them failed the check is not run, and reports
  itself *skipped* (``ok`` false, ``skipped`` true) naming the failed check.
- ``after``: soft ordering. The check waits for these and may use what they found (the
  database's server version, the catalog's newest dump size) or degrade when they failed.

Independent checks run concurrently, so the whole run takes about as long as the slowest
chain of checks, however many there are. Doctor changes nothing it does not put back: it
creates no catalog schema, and the only thing it writes is the store's probe object, deleted
at once (opening a local store creates its directory, as the daemon would).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from glacierd.catalog.migrations import available_migrations
from glacierd.catalog.pool import CatalogError
from glacierd.config import Config
from glacierd.logs import log_file_problem
from glacierd.operations.errors import EXPECTED
from glacierd.pgconnect.connect import connection
from glacierd.sources.database import (
    ToolVersion,
    check_pg_dump,
    connect,
    server_version,
    server_version_of,
    tool_version,
)
from glacierd.sources.orphan_dir import OrphanDirProblem, orphan_dir_state
from glacierd.stores.base import Store
from glacierd.stores.factory import build_store
from glacierd.units import human_bytes

#: Seconds one check may take; a check still running then fails with a timeout.
CHECK_TIMEOUT = 15.0
GiB = 1024**3
#: Free space kept in reserve beyond the newest database dump (or alone, without one).
DISK_HEADROOM = GiB


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    #: Not (fully) run because a check it depends on failed; never ok.
    skipped: bool = False

    @property
    def label(self) -> str:
        return "OK" if self.ok else "SKIP" if self.skipped else "FAIL"

    def line(self) -> str:
        text = f"{self.label:<6}{self.name}: {self.detail}"
        if not self.ok and self.fix:
            text += f" — {self.fix}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Problem(Exception):
    """Raised by a check: what is wrong (``detail``) and what to do about it (``fix``)."""

    def __init__(self, detail: str, fix: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


@dataclass
class Doctor:
    """What the checks share: the configuration and what earlier checks found."""

    config: Config
    timeout: float = CHECK_TIMEOUT
    results: dict[str, CheckResult] = field(default_factory=dict)
    store: Store | None = None
    server: ToolVersion | None = None
    last_dump_size: int | None = None
    last_dump_backup: int | None = None

    def passed(self, name: str) -> bool:
        result = self.results.get(name)
        return result is not None and result.ok


CheckFunc = Callable[[Doctor], Awaitable[CheckResult]]


@dataclass(frozen=True)
class Check:
    name: str
    func: CheckFunc
    needs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()


#: Every check, in the order they are reported.
REGISTRY: list[Check] = []


def check(
    name: str, *, needs: Iterable[str] = (), after: Iterable[str] = ()
) -> Callable[[CheckFunc], CheckFunc]:
    """Register a check; ``needs`` must pass for it to run, ``after`` only run before it."""

    def register(func: CheckFunc) -> CheckFunc:
        REGISTRY.append(Check(name, func, tuple(needs), tuple(after)))
        return func

    return register


def split_message(message: str) -> tuple[str, str | None]:
    """glacierd's error sentences read 'what is wrong; how to fix it.': split them there.

    Only a '; ' outside parentheses counts, so quoted server messages stay whole.
    """
    depth = 0
    for i, ch in enumerate(message):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch == ";" and depth == 0 and message[i + 1 : i + 2] == " ":
            return message[:i], message[i + 2 :].rstrip(".") or None
    return message.rstrip("."), None


# ----------------------------------------------------------------------------- running


async def _run_one(doctor: Doctor, item: Check) -> CheckResult:
    failed = [n for n in item.needs if not doctor.passed(n)]
    if failed:
        return CheckResult(
            item.name,
            False,
            f"not checked because the {', '.join(failed)} check failed",
            skipped=True,
        )
    try:
        return await asyncio.wait_for(item.func(doctor), doctor.timeout)
    except TimeoutError:
        return CheckResult(
            item.name,
            False,
            f"no answer within {doctor.timeout:g} s",
            "check the network, firewalls and the host, port or endpoint settings; a "
            "connection that hangs usually means packets are dropped on the way",
        )
    except Problem as exc:
        return CheckResult(item.name, False, exc.detail, exc.fix)
    except EXPECTED as exc:
        detail, fix = split_message(str(exc))
        return CheckResult(item.name, False, detail, fix)
    except Exception as exc:
        return CheckResult(
            item.name,
            False,
            f"unexpected {exc.__class__.__name__}: {exc}",
            "run again with logging.level = 'debug' and report it as a glacierd bug",
        )


async def run_checks(
    config: Config,
    checks: Iterable[Check] | None = None,
    check_timeout: float = CHECK_TIMEOUT,
) -> list[CheckResult]:
    """Run the checks (all registered ones by default); results in registry order."""
    items = list(REGISTRY if checks is None else checks)
    names: set[str] = set()
    for item in items:
        later = [
            dep
            for dep in (*item.needs, *item.after)
            if dep not in names and any(other.name == dep for other in items)
        ]
        if later:
            raise ValueError(f"check {item.name!r} depends on {later[0]!r}, listed after it")
        names.add(item.name)
    doctor = Doctor(config, check_timeout)
    tasks: dict[str, asyncio.Task[CheckResult]] = {}

    async def run(item: Check) -> CheckResult:
        for dep in (*item.needs, *item.after):
            if dep in tasks:
                await asyncio.wait([tasks[dep]])
        result = await _run_one(doctor, item)
        doctor.results[item.name] = result
        return result

    for item in items:  # dependencies come first (checked above), so no cycles
        tasks[item.name] = asyncio.create_task(run(item), name=f"doctor-{item.name}")
    try:
        await asyncio.gather(*tasks.values())
    finally:
        for task in tasks.values():
            task.cancel()
        if doctor.store is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(doctor.store.close(), check_timeout)
    return [tasks[item.name].result() for item in items]


# ------------------------------------------------------------------------------ checks


@check("configuration")
async def check_configuration(d: Doctor) -> CheckResult:
    cfg = d.config
    where = str(cfg.path) if cfg.path else "(built in code)"
    if cfg.logging.file is not None:
        problem = await asyncio.to_thread(log_file_problem, cfg.logging.file)
        if problem is not None:
            raise Problem(*split_message(str(problem)))
    detail = (
        f"{where} is valid (store {cfg.store.name!r} of type {cfg.store.type}, "
        f"state_dir {cfg.state_dir})"
    )
    if cfg.sns.cert_url_override:
        detail += (
            f"; WARNING: sns.cert_url_override sends SNS certificate downloads to "
            f"{cfg.sns.cert_url_override} — a setting for tests only, remove it in production"
        )
    return CheckResult("configuration", True, detail)


@check("database")
async def check_database(d: Doctor) -> CheckResult:
    info = d.config.database.conninfo
    async with connect(info) as conn:
        d.server = await server_version_of(conn)
        user = await conn.fetchval("SELECT current_user")
    return CheckResult(
        "database", True, f"connected to {info.describe()} as {user} ({d.server.text})"
    )


@check("catalog")
async def check_catalog(d: Doctor) -> CheckResult:
    cat = d.config.catalog
    q = f'"{cat.schema}"'
    known = available_migrations()
    async with connection(cat.conninfo, "catalog", CatalogError) as conn:
        table = await conn.fetchval("SELECT to_regclass($1)", f"{q}.schema_migrations")
        if table is None:
            may_create = await conn.fetchval(
                "SELECT has_database_privilege(current_user, current_database(), 'CREATE')"
            )
            if not may_create:
                user = await conn.fetchval("SELECT current_user")
                raise Problem(
                    f"schema {cat.schema} does not exist in {cat.conninfo.describe()} and user "
                    f"{user} may not create it",
                    f"run 'glacierd migrate' once as a user who may, or GRANT CREATE ON "
                    f"DATABASE to {user}",
                )
            return CheckResult(
                "catalog",
                True,
                f"connected to {cat.conninfo.describe()}; schema {cat.schema} is not created "
                f"yet ({len(known)} migrations to apply) — 'glacierd migrate' or the daemon's "
                "start creates it",
            )
        applied = {
            r["version"] for r in await conn.fetch(f"SELECT version FROM {q}.schema_migrations")
        }
        unknown = sorted(applied - {v for v, _, _ in known})
        if unknown:
            raise Problem(
                f"schema {cat.schema} has migration {unknown[0]:04d}, which this glacierd does "
                "not know: the catalog was upgraded by a newer glacierd",
                "upgrade glacierd to the version that wrote the catalog",
            )
        pending = [name for v, name, _ in known if v not in applied]
        row = await conn.fetchrow(
            f"SELECT size, created_by FROM {q}.archives WHERE kind = 'database' "
            "AND state = 'stored' AND size IS NOT NULL ORDER BY created_at DESC, id DESC LIMIT 1"
        )
        backups = await conn.fetchval(f"SELECT count(*) FROM {q}.backups")
    if row is not None:
        d.last_dump_size, d.last_dump_backup = int(row["size"]), row["created_by"]
    detail = (
        f"schema {cat.schema} in {cat.conninfo.describe()}: {len(applied)} of {len(known)} "
        f"migrations applied, {backups} backups recorded"
    )
    if pending:
        detail += f"; {', '.join(pending)} will be applied at the next start or 'glacierd migrate'"
    return CheckResult("catalog", True, detail)


async def _tool(d: Doctor, name: str, command: str, setting: str) -> CheckResult:
    """pg_dump / pg_restore / psql: installed, and at least as new as the server."""
    if not d.passed("database"):
        found = await tool_version(command, setting)  # a missing tool is still a failure
        return CheckResult(
            name,
            False,
            f"{found.text} found; not compared with the server's version because the "
            "database check failed",
            skipped=True,
        )
    if name == "pg_dump":
        client, server = await check_pg_dump(command, d.config.database.conninfo)
    else:
        client = await tool_version(command, setting)
        server = d.server or await server_version(d.config.database.conninfo)
        if client.major < server.major:
            why = (
                "cannot read the server's dumps"
                if name == "pg_restore"
                else "may not run the restore scripts pg_restore writes for it"
            )
            raise Problem(
                f"{name} is older than the server ({client.text} vs {server.text}), so it {why}",
                f"install postgresql-client-{server.major} and set {setting} to its "
                f"path, for example /usr/lib/postgresql/{server.major}/bin/{name}",
            )
    path = shutil.which(command) or command
    return CheckResult(name, True, f"{path}: {client.text} (server {server.text})")


@check("pg_dump", after=("database",))
async def check_pg_dump_tool(d: Doctor) -> CheckResult:
    return await _tool(d, "pg_dump", d.config.database.pg_dump, "database.pg_dump")


@check("pg_restore", after=("database",))
async def check_pg_restore_tool(d: Doctor) -> CheckResult:
    return await _tool(d, "pg_restore", d.config.database.pg_restore, "database.pg_restore")


@check("psql", after=("database",))
async def check_psql_tool(d: Doctor) -> CheckResult:
    # Restores pipe pg_restore's SQL script into psql: without it every restore fails.
    return await _tool(d, "psql", d.config.database.psql, "database.psql")


def _describe_store(d: Doctor) -> str:
    s = d.config.store
    if s.type == "s3" and s.s3 is not None:
        where = f" at {s.s3.endpoint_url}" if s.s3.endpoint_url else ""
        return f"S3 bucket {s.s3.bucket} (prefix {s.s3.prefix or '(none)'!s}){where}"
    if s.type == "vault" and s.vault is not None:
        where = f" at {s.vault.endpoint_url}" if s.vault.endpoint_url else ""
        return f"Glacier vault {s.vault.vault} ({s.vault.region or 'default region'}){where}"
    assert s.local is not None
    return f"local vault {s.local.path}"


@check("store credentials")
async def check_store_credentials(d: Doctor) -> CheckResult:
    s = d.config.store
    store = build_store(s)
    d.store = store  # closed by run_checks, even if open() gets only half-way
    await store.open()
    if s.type == "local":
        return CheckResult(
            "store credentials", True, f"{_describe_store(d)} is writable; no credentials needed"
        )
    import aioboto3  # not loaded for local-only setups
    from botocore.exceptions import BotoCoreError, ProfileNotFound

    profile = s.s3.profile if s.s3 else s.vault.profile if s.vault else None
    setting = f"store.{s.type}.profile"
    try:
        session = await asyncio.to_thread(aioboto3.Session, profile_name=profile)
        credentials = await session.get_credentials()
    except ProfileNotFound:
        raise Problem(
            f"AWS profile {profile!r} ({setting}) is not defined",
            "add it to ~/.aws/credentials or ~/.aws/config, or correct the setting",
        ) from None
    except BotoCoreError as exc:
        raise Problem(
            f"the AWS credentials could not be loaded ({exc})",
            f"fix the credential source (SSO login, credential_process, {setting})",
        ) from None
    if credentials is None:
        raise Problem(
            "no AWS credentials found in the environment, the shared credentials files or an "
            "instance role",
            f"set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, name a profile in {setting}, or "
            "attach an IAM role",
        )
    source = getattr(credentials, "method", None) or "the SDK's default chain"
    named = f" (profile {profile})" if profile else ""
    return CheckResult(
        "store credentials", True, f"AWS credentials from {source}{named} for {_describe_store(d)}"
    )


@check("store", needs=("store credentials",))
async def check_store(d: Doctor) -> CheckResult:
    assert d.store is not None
    await d.store.probe()
    kind = d.config.store.type
    if kind == "vault":
        what = "answers DescribeVault (a write-and-read probe would take hours in a vault)"
    elif kind == "s3":
        what = "accepted a probe object, returned it intact and deleted it"
    else:
        what = "accepted a probe object and deleted it"
    return CheckResult("store", True, f"{_describe_store(d)} {what}")


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


@check("disk space", after=("catalog",))
async def check_disk_space(d: Doctor) -> CheckResult:
    state_dir = d.config.state_dir
    base = await asyncio.to_thread(_existing_ancestor, state_dir)
    if base == state_dir and not await asyncio.to_thread(base.is_dir):
        raise Problem(f"state_dir {state_dir} is not a directory", "point state_dir at a directory")
    if not await asyncio.to_thread(os.access, base, os.W_OK | os.X_OK):
        verb = "writable" if base == state_dir else f"creatable ({base} is not writable)"
        raise Problem(
            f"state_dir {state_dir} is not {verb}",
            f"create it and 'chown glacierd: {state_dir}', or change state_dir",
        )
    usage = await asyncio.to_thread(shutil.disk_usage, base)
    if d.last_dump_size is not None:
        need = d.last_dump_size + DISK_HEADROOM
        why = (
            f"the newest database dump (backup {d.last_dump_backup}, "
            f"{human_bytes(d.last_dump_size)}) + {human_bytes(DISK_HEADROOM)}"
        )
    else:
        need = DISK_HEADROOM
        source = "no database dump recorded yet" if d.passed("catalog") else "catalog unreachable"
        why = f"{human_bytes(DISK_HEADROOM)} ({source})"
    detail = f"{human_bytes(usage.free)} free in {state_dir}; a retrieval needs {why}"
    if usage.free < need:
        raise Problem(
            detail.replace("; a retrieval needs", ", less than"),
            f"free {human_bytes(need - usage.free)} on that filesystem or move state_dir to a "
            "larger one, or a fetched dump will not fit",
        )
    return CheckResult("disk space", True, detail)


def _check_files(root: Path | None, orphan: Path | None) -> str:
    """Blocking: the files root is readable and the orphan directory writable or creatable."""
    if root is None:
        return "no files.root configured; only the database is backed up"
    if not root.is_dir():
        raise Problem(f"files.root {root} is not a directory", "create it or fix files.root")
    if not os.access(root, os.R_OK | os.X_OK):
        raise Problem(
            f"files.root {root} is not readable by this user",
            f"give the glacierd user read access (for example 'setfacl -R -m u:glacierd:rX "
            f"{root}')",
        )
    try:
        with os.scandir(root) as entries:
            count = sum(1 for _ in zip(entries, range(1000), strict=False))
    except OSError as exc:
        raise Problem(
            f"files.root {root} cannot be listed ({exc.strerror})",
            "give the glacierd user read access to it",
        ) from None
    shown = f"{count}{'+' if count == 1000 else ''} entries at the top"
    if orphan is None:
        return f"{root} is readable ({shown})"
    try:
        state = orphan_dir_state(orphan)  # the same check a restore makes
    except OrphanDirProblem as exc:
        raise Problem(exc.detail, exc.fix) from None
    note = ""
    with contextlib.suppress(OSError):
        if _existing_ancestor(orphan).stat().st_dev != root.stat().st_dev:
            note = " (on another filesystem than files.root: orphans are copied, not renamed)"
    return f"{root} is readable ({shown}); orphan directory {orphan} is {state}{note}"


@check("files")
async def check_files(d: Doctor) -> CheckResult:
    cfg = d.config.files
    return CheckResult(
        "files", True, await asyncio.to_thread(_check_files, cfg.root, cfg.orphan_dir)
    )


def _try_bind(host: str, port: int) -> OSError | None:
    """Bind (and release) host:port as the SNS listener would; the error, or None."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, str(exc))
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            # aiohttp's listener sets SO_REUSEADDR too, so TIME_WAIT leftovers are no conflict.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                return exc
    return None


async def _daemon_answers(cfg: Config) -> bool:
    """Whether a glacierd control API answers /health (it then holds its own SNS port)."""
    api = cfg.api
    connector = aiohttp.UnixConnector(path=str(api.socket)) if api.socket else None
    url = "http://localhost/health" if api.socket else f"{api.base_url}/health"
    headers = {"Authorization": f"Bearer {api.token}"} if api.token else {}
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=3)
            ) as session,
            session.get(url, headers=headers) as resp,
        ):
            body = await resp.json(content_type=None)
            return resp.status in (200, 503) and isinstance(body, dict) and "store" in body
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False


@check("sns")
async def check_sns(d: Doctor) -> CheckResult:
    cfg = d.config
    sns, store = cfg.sns, cfg.store
    interval = cfg.schedule.poll_interval_seconds
    polling = (
        f"every {interval:g} s (schedule.poll_interval_seconds)"
        if interval
        else "at an interval that depends on the retrieval tier"
    )
    if not sns.enabled:
        if store.type == "s3":
            return CheckResult(
                "sns",
                True,
                f"SNS endpoint disabled: finished S3 restores are found by polling {polling}",
            )
        if store.type == "vault":
            assert store.vault is not None
            unheard = (
                f"; store.vault.sns_topic {store.vault.sns_topic} is set, but nothing listens"
                if store.vault.sns_topic
                else ""
            )
            return CheckResult(
                "sns",
                True,
                f"SNS endpoint disabled: finished vault jobs are found by polling {polling}"
                + unheard,
            )
        return CheckResult("sns", True, "SNS endpoint disabled (the local store needs none)")
    if not sns.topic_arns:
        raise Problem(
            "sns.enabled is true but sns.topic_arns is empty",
            "list the topic ARNs whose messages glacierd should accept",
        )
    if store.type == "vault":
        assert store.vault is not None
        topic = store.vault.sns_topic
        if not topic:
            raise Problem(
                "the SNS endpoint is enabled but store.vault.sns_topic is not set, so Glacier "
                f"announces no finished retrieval jobs (they are found by polling {polling})",
                "set store.vault.sns_topic to one of sns.topic_arns",
            )
        if topic not in sns.topic_arns:
            raise Problem(
                f"store.vault.sns_topic {topic} is not in sns.topic_arns, so the endpoint "
                "would reject Glacier's job notifications",
                "add it to sns.topic_arns",
            )
    where = f"{sns.host}:{sns.port}"
    error = await asyncio.to_thread(_try_bind, sns.host, sns.port)
    if error is None:
        listener = f"listener {where}{sns.path} can be bound"
    elif error.errno == errno.EADDRINUSE and await _daemon_answers(cfg):
        listener = f"listener {where}{sns.path} is held by the running glacierd"
    elif error.errno == errno.EADDRINUSE:
        raise Problem(
            f"port {where} (sns.port) is in use by another process",
            f"stop that process ('ss -ltnp sport = :{sns.port}' names it) or change sns.port",
        )
    elif error.errno in (errno.EACCES, errno.EPERM):
        raise Problem(
            f"port {where} (sns.port) may not be bound by this user",
            "use a port above 1023 behind a reverse proxy, or grant CAP_NET_BIND_SERVICE "
            "(AmbientCapabilities= in the systemd unit)",
        )
    else:
        raise Problem(
            f"sns.host {sns.host} cannot be bound ({error.strerror or error})",
            "set sns.host to an address of this machine, such as 0.0.0.0 or 127.0.0.1",
        )
    topics = ", ".join(sns.topic_arns)
    if store.type == "s3":
        note = (
            "; the bucket's event notifications must send s3:ObjectRestore:Completed to one of "
            "these topics (deploy/AWS-SETUP.md)"
        )
    elif store.type == "local":
        note = "; the local store sends no notifications"
    else:
        note = ""
    return CheckResult("sns", True, f"{listener}; accepting topics {topics}{note}")


# ------------------------------------------------------------------------------ output


def render(results: list[CheckResult]) -> str:
    return "\n".join(r.line() for r in results)


def as_json(results: list[CheckResult]) -> dict[str, Any]:
    return {"ok": all(r.ok for r in results), "checks": [r.as_dict() for r in results]}
