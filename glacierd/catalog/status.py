"""Retrieval status of archives, states of restore requests: the one place that knows the
legal transitions, and who may take each of them.

Archive statuses (names from the original glacier_on_rails engine, which operators know):

    exists     the attached file is already on disk; nothing to retrieve (computed, not stored)
    available  archived; not readable without a retrieval
    pending    retrieval requested; waiting for Glacier
    ready      retrieved; downloadable until the retrieval expires
    local      downloaded, verified, ready to restore

A backup's status is the lowest among its archives: available < pending < ready < local <
exists.

Four kinds of callers change an archive's status, and each may take only its own edges:

    request   our own retrieval request: claims the archive (-> pending) before asking the
              store, applies the store's answer, or undoes the claim if asking failed
    news      what the store says: SNS notifications, polling, a fetch that found no copy
    fetch     a download whose SHA-256 matched (-> local)
    cleanup   a local copy that failed verification again or is gone (local -> available)

Store news is applied as a compare-and-set in SQL (``catalog.archives``): only if the row
still has the status, generation and job id the caller saw before it asked. ``local`` is
never a source for news: a verified copy on disk is not moved backwards by anything the
store says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

#: What a store can say about its copy of an archive (``stores.base.RetrievalState``).
StoreStatus = Literal["available", "pending", "ready"]
#: An archive's retrieval status: the store's word, then what only glacierd knows, in the
#: order that ranks a backup (its lowest archive).
ArchiveStatus = Literal[StoreStatus, "local", "exists"]

ORDER: tuple[ArchiveStatus, ...] = get_args(ArchiveStatus)
STORE_STATUSES: tuple[StoreStatus, ...] = get_args(StoreStatus)
#: What the catalog column may hold ("exists" is computed from the disk, never stored).
STORED: tuple[ArchiveStatus, ...] = ("available", "pending", "ready", "local")

REQUEST, NEWS, FETCH, CLEANUP = "request", "news", "fetch", "cleanup"

# SQL conditions on the row as it is at the moment of the UPDATE (guards that a snapshot
# the caller took earlier cannot express).
EXPIRED = "coalesce(ready_until <= now(), false)"
# Our own request is answered (or so old that it was lost: the process died while asking).
# Until then "the store knows of no retrieval" may just mean "our request has not arrived".
ANSWERED = "(NOT retrieval_asking OR retrieval_requested_at < now() - interval '30 minutes')"


@dataclass(frozen=True)
class Edge:
    why: str
    # who may take this edge -> an extra SQL guard for that caller (None: no guard)
    who: dict[str, str | None]


# (from, to) -> the edge. Anything not listed is refused.
TRANSITIONS: dict[tuple[ArchiveStatus, ArchiveStatus], Edge] = {
    ("available", "pending"): Edge(
        "we claim the archive before asking the store for a retrieval (RestoreObject / "
        "archive-retrieval job): only the caller whose claim succeeds asks, so no retrieval "
        "is requested (and billed) twice",
        {REQUEST: None},
    ),
    ("ready", "pending"): Edge(
        "a retrieved copy expired: a new request replaces it, or the store says one runs",
        {REQUEST: EXPIRED, NEWS: EXPIRED},
    ),
    ("pending", "pending"): Edge(
        "the retrieval still runs: its job id or expected time is refreshed (and the answer "
        "to our own request ends the claim)",
        {REQUEST: None, NEWS: None},
    ),
    ("pending", "ready"): Edge(
        "Glacier finished the retrieval (the request's answer, SNS or polling)",
        {REQUEST: None, NEWS: None},
    ),
    ("pending", "available"): Edge(
        "our request failed before the store took it (the claim is undone), or the "
        "retrieval job failed or vanished and must be requested again — news only once our "
        "request was answered",
        {REQUEST: None, NEWS: ANSWERED},
    ),
    ("available", "ready"): Edge(
        "the store needs no retrieval (GLACIER_IR, STANDARD, local vault without delay) or "
        "a retrieval we never saw start has finished",
        {NEWS: None},
    ),
    ("ready", "ready"): Edge("the readable copy got a new expiry", {NEWS: None}),
    ("ready", "available"): Edge(
        "the readable copy expired or was removed before it was downloaded", {NEWS: None}
    ),
    ("ready", "local"): Edge("the archive was downloaded and its SHA-256 verified", {FETCH: None}),
    ("pending", "local"): Edge(
        "a download that started while the copy was ready finished verified after news "
        "about the copy arrived: verified bytes beat any news",
        {FETCH: None},
    ),
    ("available", "local"): Edge(
        "as above: the copy expired while the verified download was finishing",
        {FETCH: None},
    ),
    ("local", "available"): Edge(
        "the fetched copy failed verification again or is gone; it must be retrieved again",
        {CLEANUP: None},
    ),
    # Nothing but cleanup leaves "local": news about the store's copy (a late, duplicate or
    # stale notification or poll answer) never overrides a verified copy on disk.
}


def allowed(current: ArchiveStatus, new: ArchiveStatus, who: str) -> bool:
    """Whether ``who`` may move an archive from ``current`` to ``new`` at all."""
    found = TRANSITIONS.get((current, new))
    return found is not None and who in found.who


def guard(current: ArchiveStatus, new: ArchiveStatus, who: str) -> str | None:
    """The SQL guard on an allowed edge for this caller (None: none)."""
    return TRANSITIONS[(current, new)].who[who]


def sources_for(new: ArchiveStatus, who: str) -> list[ArchiveStatus]:
    """Statuses from which ``who`` may move an archive to ``new`` (guarded SQL updates)."""
    return [a for (a, b), e in TRANSITIONS.items() if b == new and a != new and who in e.who]


def lowest(statuses: Iterable[ArchiveStatus]) -> ArchiveStatus | None:
    """A backup's status: the lowest of its archives' statuses (None if it has none)."""
    ranked = [ORDER.index(s) for s in statuses]
    return ORDER[min(ranked)] if ranked else None


# ------------------------------------------------------------------ restore requests
#
#   requested → retrieving → fetching → restoring → restored   (or failed, with the reason)

RESTORE_ACTIVE = ("requested", "retrieving", "fetching", "restoring")
RESTORE_FINISHED = ("restored", "failed")

RESTORE_TRANSITIONS: dict[tuple[str, str], str] = {
    ("requested", "retrieving"): "every needed archive was requested (or is already there)",
    ("requested", "restoring"): "a safety snapshot is on disk already: nothing to retrieve",
    ("retrieving", "fetching"): "every needed archive is ready or local",
    ("fetching", "retrieving"): "a retrieval failed or a copy expired before it was "
    "downloaded: it is requested again",
    ("fetching", "fetching"): "waiting on something an operator can fix (a full disk): the "
    "reason is noted on the request and the download retried",
    ("fetching", "restoring"): "every needed archive is local and verified again from disk",
    ("restoring", "restoring"): "the database is restored but a later step (moving orphans) "
    "failed: noted on the request, retried at the next tick",
    ("restoring", "restored"): "every step is done",
    **{
        (state, "failed"): "the request cannot complete; nothing was changed (the reason says why)"
        for state in RESTORE_ACTIVE
    },
    # Nothing leaves "restored" or "failed": a finished request is history. A late step of
    # the driver (or a second driver) cannot revive or re-finish it.
}


def restore_sources_for(new: str) -> list[str]:
    """Restore states from which ``new`` may be reached: used in guarded SQL updates."""
    return [a for (a, b) in RESTORE_TRANSITIONS if b == new]
