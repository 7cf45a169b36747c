"""Every glacierd setting: typed, documented in deploy/glacierd.example.toml, validated at load.

A bad setting raises ConfigError with one sentence naming the setting and the fix; the CLI
prints that sentence and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.util import astimezone

from glacierd.sources.conninfo import ConnInfo, ConnInfoError, names_secret, parse_conninfo

DEFAULT_CONFIG_PATH = "/etc/glacierd/glacierd.toml"

STORE_TYPES = ("local", "s3", "vault")
S3_STORAGE_CLASSES = ("GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "STANDARD", "STANDARD_IA")
TIERS = ("Expedited", "Standard", "Bulk")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TOP_LEVEL = (
    "state_dir",
    "shutdown_timeout_seconds",
    "database",
    "catalog",
    "files",
    "store",
    "schedule",
    "api",
    "sns",
    "logging",
    "restore",
)


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one sentence an operator can act on."""


@dataclass(frozen=True)
class DatabaseConfig:
    conninfo: ConnInfo
    pg_dump: str = "pg_dump"
    pg_restore: str = "pg_restore"
    psql: str = "psql"


@dataclass(frozen=True)
class CatalogConfig:
    conninfo: ConnInfo
    schema: str = "glacierd"


@dataclass(frozen=True)
class FilesConfig:
    root: Path | None
    orphan_dir: Path | None
    upload_concurrency: int = 4


@dataclass(frozen=True)
class LocalStoreConfig:
    path: Path
    retrieval_delay_seconds: float = 0.0
    retrieval_days: int = 7


@dataclass(frozen=True)
class S3StoreConfig:
    bucket: str
    prefix: str = ""
    region: str | None = None
    storage_class: str = "GLACIER"
    database_storage_class: str | None = None
    files_storage_class: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    default_tier: str = "Standard"
    restore_days: int = 7
    part_concurrency: int = 4

    def class_for(self, kind: str) -> str:
        if kind == "database" and self.database_storage_class:
            return self.database_storage_class
        if kind == "file" and self.files_storage_class:
            return self.files_storage_class
        return self.storage_class


@dataclass(frozen=True)
class VaultStoreConfig:
    vault: str
    region: str | None = None
    account_id: str = "-"
    endpoint_url: str | None = None
    profile: str | None = None
    default_tier: str = "Standard"
    sns_topic: str | None = None
    multipart_threshold: int = 64 * 1024 * 1024
    part_size: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class StoreConfig:
    type: str
    name: str
    local: LocalStoreConfig | None = None
    s3: S3StoreConfig | None = None
    vault: VaultStoreConfig | None = None


@dataclass(frozen=True)
class ScheduleConfig:
    enabled: bool = True
    backup_cron: str = "0 3 * * *"
    timezone: str = "UTC"
    catch_up: bool = True
    catch_up_delay_seconds: float = 60.0
    poll_interval_seconds: float | None = None

    def trigger(self) -> CronTrigger:
        return cron_trigger(self.backup_cron, self.timezone)


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8470
    socket: Path | None = None
    token_env: str = "GLACIERD_API_TOKEN"

    @property
    def token(self) -> str | None:
        return os.environ.get(self.token_env) or None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class SnsConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8471
    path: str = "/sns"
    topic_arns: tuple[str, ...] = ()
    # Tests point certificate downloads at a local server; the host check stays real.
    cert_url_override: str | None = None


@dataclass(frozen=True)
class LoggingConfig:
    format: str = "auto"
    level: str = "info"
    file: Path | None = None


@dataclass(frozen=True)
class RestoreConfig:
    snapshot: bool = True
    snapshot_keep: int = 3
    terminate_connections: bool = False
    lock_timeout_seconds: float = 30.0
    compare: str = "size"  # how a file on disk is matched with its archive: size | sha256


@dataclass(frozen=True)
class Config:
    path: Path | None
    database: DatabaseConfig
    catalog: CatalogConfig
    files: FilesConfig
    store: StoreConfig
    schedule: ScheduleConfig
    api: ApiConfig
    sns: SnsConfig
    logging: LoggingConfig
    restore: RestoreConfig
    state_dir: Path
    shutdown_timeout_seconds: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def work_dir(self) -> Path:
        """Where fetched archives and safety snapshots are kept."""
        return self.state_dir


def cron_trigger(expression: str, timezone: str) -> CronTrigger:
    """Five cron fields, or six with a leading seconds field (handy for tests and demos)."""
    fields = expression.split()
    if len(fields) == 5:
        return CronTrigger.from_crontab(expression, timezone=timezone)
    if len(fields) == 6:
        second, minute, hour, day, month, dow = fields
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=dow,
            timezone=timezone,
        )
    raise ValueError("expected 5 fields (or 6 with leading seconds)")


class _Section:
    """Reads one TOML table, remembering its dotted name for error messages."""

    def __init__(self, name: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"[{name}] must be a table; write it as a [{name}] section.")
        self.name = name
        self.data = data
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.name}.{key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{self._key(key)} must be {_kind_name(kinds)}, not true/false.")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise ConfigError(f"{self._key(key)} must be {_kind_name(kinds)}; got {value!r}.")
        return value

    def required(self, key: str, kind: type, hint: str) -> Any:
        value = self.get(key, kind)
        if value in (None, ""):
            raise ConfigError(f"{self._key(key)} is missing; {hint}.")
        return value

    def positive(self, key: str, kind: type, default: Any, allow_zero: bool = False) -> Any:
        value = self.get(key, kind, default)
        if value is not None and (value < 0 or (value == 0 and not allow_zero)):
            bound = "zero or more" if allow_zero else "greater than zero"
            raise ConfigError(f"{self._key(key)} must be {bound}; got {value}.")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str | None) -> Any:
        value = self.get(key, str, default)
        if value is not None and value not in choices:
            raise ConfigError(f"{self._key(key)} is {value!r}; use one of: {', '.join(choices)}.")
        return value

    def sub(self, key: str) -> _Section:
        self.used.add(key)
        return _Section(self._key(key), self.data.get(key, {}))

    def check_unknown(self, nested: tuple[str, ...] = ()) -> None:
        unknown = sorted(set(self.data) - self.used - set(nested))
        if unknown:
            raise ConfigError(
                f"{self._key(unknown[0])} is not a known setting; check its spelling against "
                "deploy/glacierd.example.toml."
            )


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        list: "a list",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _path(section: _Section, key: str, default: str | None = None) -> Path | None:
    value = section.get(key, str, default)
    if value in (None, ""):
        return None
    path = Path(value)
    if not path.is_absolute():
        raise ConfigError(f"{section._key(key)} must be an absolute path; got {value!r}.")
    return path


def _conninfo(section: _Section, env_name: str, default: ConnInfo | None) -> ConnInfo:
    # Read the file's dsn even when the environment overrides it, so it counts as known.
    in_file = section.get("dsn", str, "")
    if in_file and (secret := names_secret(in_file)):
        # The file is meant to be readable by more than root (README: secrets never go in
        # it); refuse even when the environment overrides it, since it is still there.
        what = "a password" if secret == "password" else f"a secret ({secret})"
        raise ConfigError(
            f"{section._key('dsn')} contains {what}; remove it from the file and put it in "
            f"~/.pgpass (or PGPASSWORD in /etc/glacierd/environment), or give the whole dsn "
            f"in {env_name}."
        )
    raw = os.environ.get(env_name) or in_file
    if not raw and default is not None:
        return default
    try:
        info = parse_conninfo(raw)
    except ConnInfoError as exc:
        raise ConfigError(
            f"{section._key('dsn')} (or {env_name}) is not a valid libpq connection string: "
            f"{exc}; write it as postgresql://user@host:5432/dbname or 'host=… dbname=…'."
        ) from exc
    if problem := info.asyncpg_problem():
        raise ConfigError(
            f"{section._key('dsn')} (or {env_name}) cannot be used by glacierd's own "
            f"connections: {problem}."
        )
    return info


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _load_database(root: _Section) -> DatabaseConfig:
    sec = root.sub("database")
    info = _conninfo(sec, "GLACIERD_DATABASE_DSN", None)
    if not info.params.get("dbname") and not os.environ.get("PGDATABASE"):
        raise ConfigError(
            "database.dsn names no database; set it to postgresql://user@host/dbname "
            "(or set PGDATABASE)."
        )
    cfg = DatabaseConfig(
        conninfo=info,
        pg_dump=sec.get("pg_dump", str, "pg_dump"),
        pg_restore=sec.get("pg_restore", str, "pg_restore"),
        psql=sec.get("psql", str, "psql"),
    )
    sec.check_unknown()
    return cfg


def _load_catalog(root: _Section, database: DatabaseConfig) -> CatalogConfig:
    sec = root.sub("catalog")
    schema = sec.get("schema", str, "glacierd")
    if not _IDENT.match(schema):
        raise ConfigError(
            f"catalog.schema {schema!r} is not a plain lower-case SQL identifier; "
            "use letters, digits and underscores, such as 'glacierd'."
        )
    cfg = CatalogConfig(
        conninfo=_conninfo(sec, "GLACIERD_CATALOG_DSN", database.conninfo), schema=schema
    )
    sec.check_unknown()
    return cfg


def _load_files(root: _Section) -> FilesConfig:
    sec = root.sub("files")
    files_root = _path(sec, "root")
    orphan = _path(sec, "orphan_dir")
    if files_root is not None:
        if not files_root.is_dir():
            raise ConfigError(
                f"files.root {str(files_root)!r} is not a directory; create it or point "
                "files.root at the application's attached-files folder."
            )
        if orphan is None:
            orphan = files_root.parent / "orphan_files"
        if orphan.resolve().is_relative_to(files_root.resolve()):
            raise ConfigError(
                "files.orphan_dir lies inside files.root; put it beside the root, for example "
                f"{files_root.parent / 'orphan_files'}."
            )
    cfg = FilesConfig(
        root=files_root,
        orphan_dir=orphan,
        upload_concurrency=sec.positive("upload_concurrency", int, 4),
    )
    sec.check_unknown()
    return cfg


def _load_store(root: _Section, state_dir: Path) -> StoreConfig:
    sec = root.sub("store")
    kind = sec.choice("type", STORE_TYPES, "local")
    name = sec.get("name", str, kind)
    local = s3 = vault = None
    if kind == "local":
        lsec = sec.sub("local")
        local = LocalStoreConfig(
            path=_path(lsec, "path") or state_dir / "vault",
            retrieval_delay_seconds=lsec.positive(
                "retrieval_delay_seconds", float, 0.0, allow_zero=True
            ),
            retrieval_days=lsec.positive("retrieval_days", int, 7),
        )
        lsec.check_unknown()
    elif kind == "s3":
        ssec = sec.sub("s3")
        bucket = ssec.required("bucket", str, "set it to the name of your S3 bucket")
        if not re.match(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$", bucket):
            raise ConfigError(
                f"store.s3.bucket {bucket!r} is not a valid bucket name; use 3–63 lower-case "
                "letters, digits, dots and hyphens."
            )
        prefix = ssec.get("prefix", str, "")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        storage_class = ssec.choice("storage_class", S3_STORAGE_CLASSES, "GLACIER")
        s3 = S3StoreConfig(
            bucket=bucket,
            prefix=prefix.lstrip("/"),
            region=ssec.get("region", str),
            storage_class=storage_class,
            database_storage_class=ssec.choice("database_storage_class", S3_STORAGE_CLASSES, None),
            files_storage_class=ssec.choice("files_storage_class", S3_STORAGE_CLASSES, None),
            endpoint_url=ssec.get("endpoint_url", str),
            profile=ssec.get("profile", str),
            default_tier=ssec.choice("default_tier", TIERS, "Standard"),
            restore_days=ssec.positive("restore_days", int, 7),
            part_concurrency=ssec.positive("part_concurrency", int, 4),
        )
        ssec.check_unknown()
    else:
        vsec = sec.sub("vault")
        part_size = vsec.positive("part_size", int, 8 * 1024 * 1024)
        mib = 1024 * 1024
        if (
            part_size % mib
            or (part_size // mib) & (part_size // mib - 1)
            or part_size > 4096 * mib  # Glacier's largest part: 4 GiB
        ):
            raise ConfigError(
                f"store.vault.part_size {part_size} is not 1 MiB times a power of two up to "
                "4 GiB; "
                "use for example 8388608 (8 MiB)."
            )
        vault = VaultStoreConfig(
            vault=vsec.required("vault", str, "set it to the name of your Glacier vault"),
            region=vsec.get("region", str),
            account_id=vsec.get("account_id", str, "-"),
            endpoint_url=vsec.get("endpoint_url", str),
            profile=vsec.get("profile", str),
            default_tier=vsec.choice("default_tier", TIERS, "Standard"),
            sns_topic=vsec.get("sns_topic", str),
            multipart_threshold=vsec.positive("multipart_threshold", int, 64 * mib),
            part_size=part_size,
        )
        vsec.check_unknown()
    for other in ("local", "s3", "vault"):
        if other != kind and other in sec.data:
            raise ConfigError(
                f"[store.{other}] is set but store.type is {kind!r}; remove that section or "
                f"set store.type = {other!r}."
            )
    sec.check_unknown(nested=("local", "s3", "vault"))
    return StoreConfig(type=kind, name=name, local=local, s3=s3, vault=vault)


def _load_schedule(root: _Section) -> ScheduleConfig:
    sec = root.sub("schedule")
    cfg = ScheduleConfig(
        enabled=sec.get("enabled", bool, True),
        backup_cron=sec.get("backup_cron", str, "0 3 * * *"),
        timezone=sec.get("timezone", str, "UTC"),
        catch_up=sec.get("catch_up", bool, True),
        catch_up_delay_seconds=sec.positive("catch_up_delay_seconds", float, 60.0, True),
        poll_interval_seconds=sec.positive("poll_interval_seconds", float, None),
    )
    try:
        astimezone(cfg.timezone)
    except (ValueError, LookupError):
        raise ConfigError(
            f"schedule.timezone {cfg.timezone!r} is not a known timezone; use an IANA name "
            "such as 'UTC' or 'Europe/Berlin'."
        ) from None
    try:
        cfg.trigger()
    except (ValueError, LookupError) as exc:
        raise ConfigError(
            f"schedule.backup_cron {cfg.backup_cron!r} with timezone {cfg.timezone!r} is not "
            f"valid ({exc}); write five cron fields such as '0 3 * * *' and an IANA timezone "
            "such as 'UTC'."
        ) from exc
    sec.check_unknown()
    return cfg


def _load_api(root: _Section) -> ApiConfig:
    sec = root.sub("api")
    host = sec.get("host", str, "127.0.0.1")
    if not _is_loopback(host):
        raise ConfigError(
            f"api.host {host!r} is not a loopback address; the control API must stay on "
            "127.0.0.1, ::1 or a unix socket (api.socket) — put a proxy in front if needed."
        )
    port = sec.get("port", int, 8470)
    if not 0 < port < 65536:
        raise ConfigError(f"api.port {port} is out of range; use a port between 1 and 65535.")
    cfg = ApiConfig(
        host=host,
        port=port,
        socket=_path(sec, "socket"),
        token_env=sec.get("token_env", str, "GLACIERD_API_TOKEN"),
    )
    sec.check_unknown()
    return cfg


def _load_sns(root: _Section) -> SnsConfig:
    sec = root.sub("sns")
    topics = sec.get("topic_arns", list, [])
    for arn in topics:
        if not isinstance(arn, str) or not re.match(r"^arn:aws(-cn|-us-gov)?:sns:", arn):
            raise ConfigError(
                f"sns.topic_arns holds {arn!r}, which is not an SNS topic ARN; write "
                "'arn:aws:sns:REGION:ACCOUNT:TOPIC'."
            )
    enabled = sec.get("enabled", bool, False)
    if enabled and not topics:
        raise ConfigError(
            "sns.enabled is true but sns.topic_arns is empty; list the topic ARNs whose "
            "messages glacierd should accept."
        )
    path = sec.get("path", str, "/sns")
    if not path.startswith("/"):
        raise ConfigError(f"sns.path {path!r} must start with '/'; for example '/sns'.")
    port = sec.get("port", int, 8471)
    if not 0 < port < 65536:
        raise ConfigError(f"sns.port {port} is out of range; use a port between 1 and 65535.")
    host = sec.get("host", str, "127.0.0.1")
    override = sec.get("cert_url_override", str)
    if override and not _is_loopback(host):
        # It sends certificate downloads to another server: on a listener others can reach,
        # anyone could sign "SNS" messages with their own key.
        raise ConfigError(
            f"sns.cert_url_override is for tests only and sns.host {host!r} is not a loopback "
            "address; remove sns.cert_url_override."
        )
    cfg = SnsConfig(
        enabled=enabled,
        host=host,
        port=port,
        path=path,
        topic_arns=tuple(topics),
        cert_url_override=override,
    )
    sec.check_unknown()
    return cfg


def _load_logging(root: _Section) -> LoggingConfig:
    sec = root.sub("logging")
    cfg = LoggingConfig(
        format=sec.choice("format", ("auto", "json", "console"), "auto"),
        level=sec.choice("level", ("debug", "info", "warning", "error"), "info"),
        file=_path(sec, "file"),
    )
    sec.check_unknown()
    return cfg


def _load_restore(root: _Section) -> RestoreConfig:
    sec = root.sub("restore")
    cfg = RestoreConfig(
        snapshot=sec.get("snapshot", bool, True),
        snapshot_keep=sec.positive("snapshot_keep", int, 3),
        terminate_connections=sec.get("terminate_connections", bool, False),
        lock_timeout_seconds=sec.positive("lock_timeout_seconds", float, 30.0),
        compare=sec.choice("compare", ("size", "sha256"), "size"),
    )
    sec.check_unknown()
    return cfg


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the configuration file (``--config``, GLACIERD_CONFIG, or default)."""
    chosen = Path(path or os.environ.get("GLACIERD_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        text = chosen.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {chosen} does not exist; copy deploy/glacierd.example.toml "
            "there or pass --config PATH."
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"configuration file {chosen} cannot be read ({exc.strerror}); check its permissions."
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {chosen} is not valid TOML: {exc}.") from None
    return config_from_dict(data, chosen)


def config_from_dict(data: dict[str, Any], path: Path | None = None) -> Config:
    root = _Section("glacierd", data)
    root.name = ""
    root._key = lambda key: key  # type: ignore[method-assign]
    # A misspelt section ([databse]) is named as such, before its absence causes another error.
    root.used.update(_TOP_LEVEL)
    root.check_unknown()
    state_dir = _path(root, "state_dir", "/var/lib/glacierd")
    assert state_dir is not None
    database = _load_database(root)
    cfg = Config(
        path=path,
        database=database,
        catalog=_load_catalog(root, database),
        files=_load_files(root),
        store=_load_store(root, state_dir),
        schedule=_load_schedule(root),
        api=_load_api(root),
        sns=_load_sns(root),
        logging=_load_logging(root),
        restore=_load_restore(root),
        state_dir=state_dir,
        shutdown_timeout_seconds=root.positive("shutdown_timeout_seconds", float, 30.0),
    )
    root.check_unknown()
    return cfg
