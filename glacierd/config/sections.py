"""[files], [schedule], [api], [sns], [logging] and [restore]."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.util import astimezone
from pydantic import StrictBool, StrictStr, field_validator, model_validator
from pydantic.dataclasses import dataclass

from glacierd.config.api_token import read_api_token
from glacierd.config.errors import invalid, must_be
from glacierd.config.fields import (
    SECTION,
    Compare,
    LogFormat,
    LogLevel,
    NonNegativeSeconds,
    OptionalPath,
    Port,
    PositiveInt,
    PositiveSeconds,
    cron_trigger,
    is_loopback,
)


@dataclass(frozen=True, config=SECTION)
class FilesConfig:
    """The application's attached files; without a root, backups hold the database only."""

    root: OptionalPath = None
    # Default: "orphan_files" beside the root.
    orphan_dir: OptionalPath = None
    upload_concurrency: PositiveInt = 4

    @field_validator("root")
    @classmethod
    def _root_is_a_directory(cls, root: Path | None) -> Path | None:
        try:
            is_dir = root is None or root.is_dir()
        except OSError as exc:  # a folder on the way that this user may not enter
            raise invalid(
                f"{{setting}} {str(root)!r} cannot be read ({exc.strerror})",
                "give the glacierd user access (SupplementaryGroups=) or correct {setting}",
            ) from None
        if not is_dir:
            raise invalid(
                f"{{setting}} {str(root)!r} is not a directory",
                "create it or point {setting} at the application's attached-files folder",
            )
        return root

    @model_validator(mode="after")
    def _orphans_beside_the_root(self) -> FilesConfig:
        if self.root is None:
            return self
        beside = self.root.parent / "orphan_files"
        orphan_dir = self.orphan_dir or beside
        # A restore moves orphans out of the root: into the root they would be found again.
        if orphan_dir.resolve().is_relative_to(self.root.resolve()):
            raise invalid(
                "{section}.orphan_dir lies inside {section}.root",
                f"put it beside the root, for example {beside}",
                key="orphan_dir",
            )
        object.__setattr__(self, "orphan_dir", orphan_dir)  # frozen: set while validating
        return self


@dataclass(frozen=True, config=SECTION)
class ScheduleConfig:
    enabled: StrictBool = True
    backup_cron: StrictStr = "0 3 * * *"
    timezone: StrictStr = "UTC"
    catch_up: StrictBool = True
    catch_up_delay_seconds: NonNegativeSeconds = 60.0
    # Default: by retrieval tier (see operations/retrieval.py).
    poll_interval_seconds: PositiveSeconds | None = None

    @field_validator("backup_cron")
    @classmethod
    def _cron_expression(cls, expression: str) -> str:
        # The timezone is checked on its own; the fields' validity does not depend on it.
        try:
            cron_trigger(expression, "UTC")
        except (ValueError, LookupError) as exc:
            raise invalid(
                f"{{setting}} {expression!r} is not valid ({exc})",
                "write five cron fields such as '0 3 * * *' (or six, with leading seconds)",
            ) from None
        return expression

    @field_validator("timezone")
    @classmethod
    def _iana_timezone(cls, timezone: str) -> str:
        try:
            astimezone(timezone)
        except (ValueError, LookupError):
            raise invalid(
                f"{{setting}} {timezone!r} is not a known timezone",
                "use an IANA name such as 'UTC' or 'Europe/Berlin'",
            ) from None
        return timezone

    def trigger(self) -> CronTrigger:
        return cron_trigger(self.backup_cron, self.timezone)


@dataclass(frozen=True, config=SECTION)
class ApiConfig:
    """The control API: loopback or a unix socket only; it must never face a network."""

    host: StrictStr = "127.0.0.1"
    port: Port = 8470
    socket: OptionalPath = None
    token_env: StrictStr = "GLACIERD_API_TOKEN"
    # A file holding the token, readable by the operators' group (config/api_token.py).
    token_file: OptionalPath = None

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        if not is_loopback(host):
            raise invalid(
                f"{{setting}} {host!r} is not a loopback address",
                "the control API must stay on 127.0.0.1, ::1 or a unix socket (api.socket) — "
                "put a proxy in front if needed",
            )
        return host

    @property
    def token(self) -> str | None:
        """The bearer token: from the environment variable, or from ``token_file``. Reads
        a small file: the daemon once at start, the CLI in a thread."""
        return read_api_token(self.token_env, self.token_file)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, config=SECTION)
class SnsConfig:
    enabled: StrictBool = False
    host: StrictStr = "127.0.0.1"
    port: Port = 8471
    path: StrictStr = "/sns"
    topic_arns: tuple[str, ...] = ()
    # Tests point certificate downloads at a local server; the host check stays real.
    cert_url_override: StrictStr | None = None

    @field_validator("path")
    @classmethod
    def _absolute_url_path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise invalid(f"{{setting}} {path!r} must start with '/'", "for example '/sns'")
        return path

    @field_validator("topic_arns", mode="before")
    @classmethod
    def _topic_arns(cls, arns: Any) -> Any:
        if not isinstance(arns, list | tuple):
            raise must_be("a list", arns)
        for arn in arns:
            if not isinstance(arn, str) or not re.match(r"^arn:aws(-cn|-us-gov)?:sns:", arn):
                raise invalid(
                    f"{{setting}} holds {arn!r}, which is not an SNS topic ARN",
                    "write 'arn:aws:sns:REGION:ACCOUNT:TOPIC'",
                )
        return tuple(arns)

    @model_validator(mode="after")
    def _consistent(self) -> SnsConfig:
        if self.enabled and not self.topic_arns:
            raise invalid(
                "{section}.enabled is true but {section}.topic_arns is empty",
                "list the topic ARNs whose messages glacierd should accept",
                key="enabled",
            )
        if self.cert_url_override and not is_loopback(self.host):
            # It sends certificate downloads to another server: on a listener others can
            # reach, anyone could sign "SNS" messages with their own key.
            raise invalid(
                f"{{section}}.cert_url_override is for tests only and {{section}}.host "
                f"{self.host!r} is not a loopback address",
                "remove {section}.cert_url_override",
                key="cert_url_override",
            )
        return self


@dataclass(frozen=True, config=SECTION)
class LoggingConfig:
    format: LogFormat = "auto"
    level: LogLevel = "info"
    file: OptionalPath = None


@dataclass(frozen=True, config=SECTION)
class RestoreConfig:
    snapshot: StrictBool = True
    snapshot_keep: PositiveInt = 3
    terminate_connections: StrictBool = False
    lock_timeout_seconds: PositiveSeconds = 30.0
    compare: Compare = "size"
