"""What the stores' event parsers share (``s3/events.py``, ``vault/events.py``): the ignored
event, the error for a malformed one, and checked access to a message's fields. Everything
here is pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class MalformedEvent(ValueError):
    """A notification's message has no shape glacierd knows; ``reason`` says what is off."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IgnoredEvent:
    """A well-formed message glacierd does not act on."""

    reason: str


# --------------------------------------------------------------------------- field helpers


def field_str(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"{where} lacks {key} (a non-empty string)")
    return value


def field_opt_str(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedEvent(f"{where} {key} {value!r} is not a string")
    return value


def field_obj(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise MalformedEvent(f"{where} lacks the {key} object")
    return value


def field_time(value: str, what: str) -> datetime:
    """Parse an AWS ISO 8601 time (``2026-01-05T00:00:00.000Z``); naive times are UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedEvent(f"{what} {value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
