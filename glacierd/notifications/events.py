"""Turn the ``Message`` of a verified SNS Notification into typed retrieval events.

The message formats are the stores' knowledge: ``glacierd.stores.notifications`` parses
them. This module decodes the JSON and turns a message of no known shape into
``EventParseError`` (a 400 ``SnsError`` that is also a ``ValueError``).
"""

from __future__ import annotations

from glacierd import jsonsafe
from glacierd.notifications.sns import SnsError
from glacierd.stores.events import MalformedEvent
from glacierd.stores.notifications import RetrievalEvent, parse_notification


class EventParseError(SnsError, ValueError):
    """A Notification's Message has no shape glacierd knows; answer 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(400, reason)


def parse_events(message: str) -> list[RetrievalEvent]:
    """Parse a Notification's ``Message`` into events (one message may carry several)."""
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
