"""Restores in S3's terms: which tier a restore uses, how long it takes, and what the
``x-amz-restore`` header of HeadObject says about it.

GLACIER and DEEP_ARCHIVE need a ``RestoreObject`` before they can be read; every other class
(GLACIER_IR, STANDARD, STANDARD_IA, and the lone class of S3-compatible stores) is readable
at once. HEAD keeps reporting the archival class after a restore; the ``Restore`` header
says whether the restore still runs and when the restored copy expires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from glacierd.config import TIERS
from glacierd.stores.base import ExpectedRetrieval, RetrievalState, StoreError

#: Classes that need a RestoreObject before GetObject works.
ARCHIVAL_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})

MINUTE, HOUR = 60.0, 3600.0
#: How long a restore takes, from AWS's published ranges (DEEP_ARCHIVE: "within", so the
#: bound is also the typical time; it has no Expedited tier). Polling and SNS events decide
#: when a copy is really ready; ``expected_at`` (the upper bound) tells the operator when to
#: expect it.
RESTORE_TIMES: dict[tuple[str, str], ExpectedRetrieval] = {
    ("GLACIER", "Expedited"): ExpectedRetrieval(1 * MINUTE, 5 * MINUTE),
    ("GLACIER", "Standard"): ExpectedRetrieval(3 * HOUR, 5 * HOUR),
    ("GLACIER", "Bulk"): ExpectedRetrieval(5 * HOUR, 12 * HOUR),
    ("DEEP_ARCHIVE", "Standard"): ExpectedRetrieval(12 * HOUR, 12 * HOUR),
    ("DEEP_ARCHIVE", "Bulk"): ExpectedRetrieval(48 * HOUR, 48 * HOUR),
}


def choose_tier(storage_class: str, key: str, asked: str | None, default: str) -> str:
    """The tier to restore an archive of ``storage_class`` with: the one ``asked`` for, else
    ``default`` (store.s3.default_tier)."""
    chosen = asked or default
    if chosen not in TIERS:
        raise StoreError(
            f"retrieval tier {chosen!r} is not an S3 tier", f"use one of: {', '.join(TIERS)}"
        )
    if storage_class == "DEEP_ARCHIVE" and chosen == "Expedited":
        if asked is None:
            # The configured default is meant for GLACIER objects; DEEP_ARCHIVE has no
            # Expedited tier, so its fastest (Standard) is the closest to what was asked.
            return "Standard"
        raise StoreError(
            f"archive {key} is in DEEP_ARCHIVE, which has no Expedited retrieval tier",
            "request the Standard (within 12 h) or Bulk (within 48 h) tier",
        )
    return chosen


@dataclass(frozen=True)
class RestoreHeader:
    """The parsed ``x-amz-restore`` header (``head_object(...)["Restore"]``)."""

    ongoing: bool
    expiry: datetime | None = None


def parse_restore_header(value: str | None) -> RestoreHeader | None:
    """Parse ``ongoing-request="true"`` or ``ongoing-request="false", expiry-date="<RFC 1123>"``.

    Returns None when there is no header (no restore was ever requested, or the copy
    expired long ago). An unparsable expiry date counts as "no expiry known".
    """
    if value is None or not value.strip():
        return None
    fields = dict(re.findall(r'([A-Za-z-]+)\s*=\s*"([^"]*)"', value))
    ongoing = fields.get("ongoing-request", "").strip().lower() == "true"
    expiry: datetime | None = None
    raw_expiry = fields.get("expiry-date")
    if raw_expiry:
        try:
            expiry = parsedate_to_datetime(raw_expiry)
        except (TypeError, ValueError):
            expiry = None
        if expiry is not None and expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=UTC)  # "-0000" parses naive; S3 means GMT
    return RestoreHeader(ongoing=ongoing, expiry=expiry)


def retrieval_state(
    storage_class: str | None, restore: str | None, now: datetime | None = None
) -> RetrievalState:
    """Map HeadObject's ``StorageClass`` and ``Restore`` to a retrieval state.

    HEAD omits the storage class for STANDARD objects, so None means readable.
    """
    if (storage_class or "STANDARD") not in ARCHIVAL_CLASSES:
        return RetrievalState("ready")
    header = parse_restore_header(restore)
    if header is None:
        return RetrievalState("available")
    if header.ongoing:
        # HEAD does not say when the restore started; request_retrieval gave the estimate.
        return RetrievalState("pending")
    now = now or datetime.now(UTC)
    if header.expiry is not None and header.expiry <= now:
        return RetrievalState("available", reason="the restored copy expired")
    return RetrievalState("ready", ready_until=header.expiry)
