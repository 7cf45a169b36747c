"""Reading from a vault takes a job: what a retrieval job's description means for the archive.

``request_retrieval`` starts an ``archive-retrieval`` job (optionally announced on an SNS
topic); ``retrieval_status`` asks ``DescribeJob``; the output can be downloaded with
``GetJobOutput`` for 24 hours after the job completes, after which Glacier forgets the job
(``ResourceNotFoundException``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from glacierd.stores.base import ArchiveRef, ExpectedRetrieval, RetrievalState

#: Glacier keeps a completed job, and so its output, for at least 24 hours.
JOB_OUTPUT_LIFETIME = timedelta(hours=24)
MINUTE, HOUR = 60.0, 3600.0
#: How long a retrieval job takes (AWS: Expedited 1–5 min, Standard 3–5 h, Bulk 5–12 h).
JOB_TIMES: dict[str, ExpectedRetrieval] = {
    "Expedited": ExpectedRetrieval(1 * MINUTE, 5 * MINUTE),
    "Standard": ExpectedRetrieval(3 * HOUR, 5 * HOUR),
    "Bulk": ExpectedRetrieval(5 * HOUR, 12 * HOUR),
}


def parse_date(value: str | None) -> datetime | None:
    """Glacier's dates are ISO 8601 strings (``2012-05-15T17:21:39.339Z``), not timestamps."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def tier_delay(tier: str | None) -> timedelta:
    """When a job of ``tier`` (unknown: Standard) is done at the latest, after it started."""
    return timedelta(seconds=JOB_TIMES.get(tier or "", JOB_TIMES["Standard"]).maximum)


def job_parameters(archive_id: str, tier: str, sns_topic: str | None) -> dict[str, str]:
    """InitiateJob's parameters for an archive retrieval."""
    parameters = {
        "Type": "archive-retrieval",
        "ArchiveId": archive_id,
        "Tier": tier,
        "Description": "glacierd retrieval",
    }
    if sns_topic:
        # Glacier posts the DescribeJob JSON to this topic when the job completes.
        parameters["SNSTopic"] = sns_topic
    return parameters


def state_from_job(archive: ArchiveRef, job: dict[str, Any] | None) -> RetrievalState:
    """The archive's retrieval state from its job's DescribeJob (None: Glacier forgot it)."""
    job_id = archive.retrieval_job_id
    if job is None:
        return RetrievalState(
            "available",
            reason=f"Glacier no longer knows retrieval job {job_id} (jobs expire about 24 "
            "hours after they complete); request a new retrieval.",
        )
    if job.get("ArchiveId") and job["ArchiveId"] != archive.key:
        return RetrievalState(
            "available", reason=f"retrieval job {job_id} belongs to another archive."
        )
    status = job.get("StatusCode")
    if status == "InProgress":
        created = parse_date(job.get("CreationDate")) or datetime.now(UTC)
        return RetrievalState(
            "pending", expected_at=created + tier_delay(job.get("Tier")), job_id=job_id
        )
    if status == "Succeeded":
        completed = parse_date(job.get("CompletionDate")) or datetime.now(UTC)
        until = completed + JOB_OUTPUT_LIFETIME
        if datetime.now(UTC) >= until:
            return RetrievalState(
                "available", reason=f"the output of retrieval job {job_id} expired."
            )
        return RetrievalState("ready", ready_until=until, job_id=job_id)
    message = job.get("StatusMessage") or "no reason given"
    return RetrievalState(
        "available", job_id=job_id, reason=f"retrieval job {job_id} failed: {message}"
    )
