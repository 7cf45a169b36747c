"""Glacier's job-completion messages (the job's DescribeJob JSON, posted to the vault's SNS
topic), and what they mean for an archive of the vault store.

Outcomes: ``Succeeded`` → ready while the job's output lasts (24 hours after completion);
``Failed`` → available again, with Glacier's reason; ``InProgress`` → pending. The news names
its job, so a message about an older job never overrides a newer one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from glacierd.stores.base import RetrievalState, StoreNews
from glacierd.stores.events import (
    IgnoredEvent,
    MalformedEvent,
    field_opt_str,
    field_str,
    field_time,
)
from glacierd.stores.vault.jobs import JOB_OUTPUT_LIFETIME

JobStatus = Literal["InProgress", "Succeeded", "Failed"]

_JOB_STATUSES: frozenset[str] = frozenset(("InProgress", "Succeeded", "Failed"))


@dataclass(frozen=True)
class VaultJobEvent:
    """A Glacier vault archive-retrieval job changed state (usually: finished)."""

    job_id: str
    archive_id: str
    status_code: JobStatus
    status_message: str | None
    completed_at: datetime | None
    vault_arn: str | None = None
    sha256_tree_hash: str | None = None
    tier: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code == "Succeeded"


def parse_vault_job(data: Mapping[str, Any]) -> VaultJobEvent | IgnoredEvent:
    """Parse a Glacier DescribeJob document (the vault job-completion message)."""
    where = "Glacier job"
    job_id = field_str(data, "JobId", where)
    action = field_str(data, "Action", where)
    if action != "ArchiveRetrieval":
        return IgnoredEvent(f"Glacier {action} job {job_id} is not an archive retrieval")
    archive_id = field_str(data, "ArchiveId", where)
    status = field_str(data, "StatusCode", where)
    if status not in _JOB_STATUSES:
        raise MalformedEvent(f"Glacier job {job_id} has an unknown StatusCode {status!r}")
    completion = field_opt_str(data, "CompletionDate", where)
    return VaultJobEvent(
        job_id=job_id,
        archive_id=archive_id,
        status_code=status,  # type: ignore[arg-type]  # checked against _JOB_STATUSES
        status_message=field_opt_str(data, "StatusMessage", where),
        completed_at=field_time(completion, "Glacier job CompletionDate") if completion else None,
        vault_arn=field_opt_str(data, "VaultARN", where),
        sha256_tree_hash=field_opt_str(data, "SHA256TreeHash", where),
        tier=field_opt_str(data, "Tier", where),
    )


def job_news(event: VaultJobEvent) -> StoreNews:
    """What a job message says about the archive it retrieved (its key is the ArchiveId)."""
    if event.status_code == "Succeeded":
        until = event.completed_at + JOB_OUTPUT_LIFETIME if event.completed_at else None
        state = RetrievalState("ready", ready_until=until, job_id=event.job_id)
    elif event.status_code == "Failed":
        state = RetrievalState(
            "available",
            job_id=event.job_id,
            reason=f"Glacier retrieval job failed: {event.status_message or 'no reason given'}",
        )
    else:
        state = RetrievalState("pending", job_id=event.job_id)
    return StoreNews(event.archive_id, state)
