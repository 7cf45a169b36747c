"""Archives a store refuses to delete: S3 Object Lock (a retention date, a legal hold).

``Store.retention`` says whether an archive is locked now; a deletion asks first, so that a
backup whose archives are locked is refused as a whole — with the date — before anything in
the catalog changes (``stores.base.ArchiveLockedError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Retention:
    """Why an archive cannot be deleted now: ``mode`` GOVERNANCE or COMPLIANCE until
    ``until``, or LEGAL_HOLD (no date: until someone lifts it)."""

    mode: str
    until: datetime | None

    def describe(self) -> str:
        if self.mode == "LEGAL_HOLD" or self.until is None:
            return "under an S3 Object Lock legal hold"
        return (
            f"under S3 Object Lock ({self.mode} mode) until "
            f"{self.until.strftime('%Y-%m-%d %H:%M:%S UTC')}"
        )
