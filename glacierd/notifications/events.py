"""Turn the ``Message`` of a verified SNS Notification into typed retrieval events.

The message formats (Glacier's job documents, S3's ObjectRestore records) are the stores'
knowledge: ``glacierd.stores.notifications`` parses them. This module decodes the JSON and
turns a message of no known shape into ``EventParseError`` (a 400 ``SnsError`` that is also
a ``ValueError``).
"""

from __future__ import annotations

from glacierd import jsonsafe
from glacierd.notifications.sns import SnsError
from glacierd.stores.events import IgnoredEvent, MalformedEvent
from glacierd.stores.notifications import RetrievalEvent, parse_notification
from glacierd.stores.s3.events import S3RestoreEvent
from glacierd.stores.vault.events import VaultJobEvent


class EventParseError(SnsError, ValueError):
    """A Notification's Message has no shape glacierd knows; answer 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(400, reason)


def parse_events(message: str) -> list[RetrievalEvent]:
    """Parse a Notification's ``Message`` into events (S3 may batch several records)."""
    try:
        data = jsonsafe.loads(message)
    except ValueError as exc:  # JSONDecodeError, JsonTooDeep
        raise EventParseError(f"notification message is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventParseError("notification message is not a JSON object")
    try:
        return parse_notification(data)
    except MalformedEvent as exc:
        raise EventParseError(exc.reason) from None


__all__ = [
    "EventParseError",
    "IgnoredEvent",
    "RetrievalEvent",
    "S3RestoreEvent",
    "VaultJobEvent",
    "parse_events",
]
