"""Retrieval status of archives and backups: the one place that knows the legal transitions.

Statuses (names from the original glacier_on_rails engine, which operators know):

    exists     the attached file is already on disk; nothing to retrieve (computed, not stored)
    available  archived; not readable without a retrieval
    pending    retrieval requested; waiting for Glacier
    ready      retrieved; downloadable until the retrieval expires
    local      downloaded, verified, ready to restore

A backup's status is the lowest among its archives: available < pending < ready < local <
exists.
"""

from __future__ import annotations

from collections.abc import Iterable

ORDER = ("available", "pending", "ready", "local", "exists")
STORED = ("available", "pending", "ready", "local")  # what the catalog column may hold

# (from, to) -> why this edge exists. Anything not listed is refused by `check`.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("available", "pending"): "a retrieval was requested (RestoreObject / archive-retrieval job)",
    ("available", "ready"): "the store needs no retrieval (GLACIER_IR, STANDARD, local vault "
    "without delay) or a retrieval we never saw start has finished",
    ("pending", "ready"): "Glacier finished the retrieval (SNS notification or polling)",
    ("pending", "available"): "the retrieval job failed or vanished; it must be requested again",
    ("ready", "local"): "the archive was downloaded and its SHA-256 verified",
    ("ready", "available"): "the restored copy expired before it was downloaded",
    ("ready", "pending"): "a new retrieval replaced an expired one (guarded in SQL: only "
    "once ready_until has passed)",
    ("local", "available"): "the fetched copy was removed (restored and cleaned up, or lost)",
    # No edge leaves "local" for "ready" or "pending": news about the store's copy (a late
    # or duplicate notification) never overrides a verified copy on disk.
}


class IllegalTransition(ValueError):
    pass


def check(current: str, new: str) -> bool:
    """True if the change is a real transition, False if it is a no-op (same status).

    Notifications arrive at least once and out of order, so a repeated event is a no-op
    and a late one that would move an archive backwards raises IllegalTransition, which
    callers treat as "ignore".
    """
    if current == new:
        return False
    if (current, new) not in TRANSITIONS:
        raise IllegalTransition(f"retrieval status cannot go from {current} to {new}")
    return True


def sources_for(new: str) -> list[str]:
    """Statuses from which ``new`` may be reached: used in guarded SQL updates."""
    return [a for (a, b) in TRANSITIONS if b == new]


def lowest(statuses: Iterable[str]) -> str | None:
    """A backup's status: the lowest of its archives' statuses (None if it has none)."""
    ranked = [ORDER.index(s) for s in statuses]
    return ORDER[min(ranked)] if ranked else None
