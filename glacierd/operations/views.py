"""JSON views shared by the API and the CLI: times as ISO 8601 in UTC, and one view of an
archive (a backup's detail and a restore request show the same fields)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def archive_view(a: dict[str, Any], exists: bool = False) -> dict[str, Any]:
    """An archive row as the API shows it; ``exists``: its file is on disk already."""
    return {
        "id": a["id"],
        "kind": a["kind"],
        "path": a["path"],
        "store": a["store_name"],
        "key": a["store_key"],
        "size": a["size"],
        "sha256": a["sha256"],
        "storage_class": a["storage_class"],
        "status": "exists" if exists else a["retrieval_status"],
        "retrieval_tier": a["retrieval_tier"],
        "retrieval_requested_at": iso(a["retrieval_requested_at"]),
        "expected_ready_at": iso(a["retrieval_expected_at"])
        if a["retrieval_status"] == "pending"
        else None,
        "ready_until": iso(a["ready_until"]) if a["retrieval_status"] == "ready" else None,
        "retrieval_error": a["retrieval_error"],
    }
