"""The value types settings are made of, each with its rule and its message.

Numbers, booleans and strings are strict: TOML has real types, so "80" for a port, 80.5 for
a count or "no" for a switch is a mistake to report, not something to coerce.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from apscheduler.triggers.cron import CronTrigger
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, StrictFloat, StrictInt

from glacierd.config.errors import invalid, must_be

# Every section forbids keys it does not know: a misspelt key is an error, never ignored.
SECTION = ConfigDict(extra="forbid")

DEFAULT_STATE_DIR = Path("/var/lib/glacierd")

StoreType = Literal["local", "s3", "vault"]
StorageClass = Literal["GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "STANDARD", "STANDARD_IA"]
# S3 Object Lock: GOVERNANCE (a user with s3:BypassGovernanceRetention may still delete) or
# COMPLIANCE (nobody can, not even the account's root user, until the date has passed).
LockMode = Literal["GOVERNANCE", "COMPLIANCE"]
# The retrieval tiers, from fastest to cheapest: the one list the code base uses.
Tier = Literal["Expedited", "Standard", "Bulk"]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
# How a restore matches a file on disk with its archive.
Compare = Literal["size", "sha256"]

STORE_TYPES: tuple[str, ...] = get_args(StoreType)
S3_STORAGE_CLASSES: tuple[str, ...] = get_args(StorageClass)
TIERS: tuple[str, ...] = get_args(Tier)

PositiveInt = Annotated[StrictInt, Field(gt=0)]
PositiveSeconds = Annotated[StrictFloat, Field(gt=0)]
NonNegativeSeconds = Annotated[StrictFloat, Field(ge=0)]


def _port(port: int) -> int:
    if not 0 < port < 65536:
        raise invalid(f"{{setting}} {port} is out of range", "use a port between 1 and 65535")
    return port


Port = Annotated[StrictInt, AfterValidator(_port)]


def _absolute(value: Any) -> Path:
    if not isinstance(value, str | Path):
        raise must_be("a string", value)
    path = Path(value)
    if not path.is_absolute():
        raise must_be("an absolute path", str(value))
    return path


def _absolute_or_unset(value: Any) -> Path | None:
    return None if value is None or value == "" else _absolute(value)


# Paths are absolute: the daemon's working directory is no place to look for anything.
AbsolutePath = Annotated[Path, BeforeValidator(_absolute)]
# An optional path: absent or "" means unset.
OptionalPath = Annotated[Path | None, BeforeValidator(_absolute_or_unset)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def section() -> Any:
    """A section's default: built from an empty table, so its own defaults and checks apply
    (and the parent's cross-section validators run) even when the file leaves it out."""
    return Field(default_factory=dict, validate_default=True)
