"""Turn the ``Message`` of a verified SNS Notification into typed retrieval events.

Two producers post to glacierd's topic:

- the **Glacier vault API**, when a job finishes: the message is the job's DescribeJob JSON
  (``JobId``, ``Action``, ``ArchiveId``, ``StatusCode``, ``CompletionDate``, …);
- **S3 event notifications** for ``s3:ObjectRestore:*`` on the bucket: the message is
  ``{"Records": [...]}``, one record per event, object keys URL-encoded. When the bucket
  notification is configured, S3 first sends an ``s3:TestEvent``.

Everything here is pure: no I/O, no clock. A message of a known shape that glacierd does not
act on (a test event, an inventory job, another S3 event) becomes an ``IgnoredEvent`` with the
reason; a message of no known shape raises ``EventParseError`` (a 400 ``SnsError`` that is
also a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

from glacierd import jsonsafe
from glacierd.notifications.sns import SnsError

JobStatus = Literal["InProgress", "Succeeded", "Failed"]
RestoreEventKind = Literal["completed", "deleted", "posted"]

_JOB_STATUSES: frozenset[str] = frozenset(("InProgress", "Succeeded", "Failed"))

#: S3 eventName (without the ``s3:`` prefix) -> what happened to the restored copy.
S3_RESTORE_EVENTS: dict[str, RestoreEventKind] = {
    "ObjectRestore:Post": "posted",  # restore requested
    "ObjectRestore:Completed": "completed",  # restored copy readable
    "ObjectRestore:Delete": "deleted",  # restored copy expired (object back in Glacier)
}


class EventParseError(SnsError, ValueError):
    """A Notification's Message has no shape glacierd knows; answer 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(400, reason)


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


@dataclass(frozen=True)
class S3RestoreEvent:
    """An S3 restore of ``bucket``/``key`` was requested, completed or expired."""

    bucket: str
    key: str  # decoded (S3 sends it URL-encoded)
    event: RestoreEventKind
    expiry: datetime | None  # when the restored copy goes away (completed events)
    event_time: datetime
    size: int | None = None
    version_id: str | None = None
    storage_class: str | None = None  # lifecycleRestoreStorageClass


@dataclass(frozen=True)
class IgnoredEvent:
    """A well-formed message glacierd does not act on."""

    reason: str


RetrievalEvent = VaultJobEvent | S3RestoreEvent | IgnoredEvent


def parse_events(message: str) -> list[RetrievalEvent]:
    """Parse a Notification's ``Message`` into events (S3 may batch several records)."""
    try:
        data = jsonsafe.loads(message)
    except ValueError as exc:  # JSONDecodeError, JsonTooDeep
        raise EventParseError(f"notification message is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventParseError("notification message is not a JSON object")
    if "Records" in data:
        return list(parse_s3_records(data))
    if data.get("Event") == "s3:TestEvent":
        return [IgnoredEvent(f"S3 test event for bucket {data.get('Bucket')!r}")]
    if "JobId" in data and "Action" in data:
        return [parse_vault_job(data)]
    raise EventParseError(
        "notification message is neither a Glacier job, an S3 event nor an S3 test event "
        f"(keys: {', '.join(sorted(data)[:10])})"
    )


def parse_vault_job(data: Mapping[str, Any]) -> VaultJobEvent | IgnoredEvent:
    """Parse a Glacier DescribeJob document (the vault job-completion message)."""
    job_id = _str(data, "JobId", "Glacier job")
    action = _str(data, "Action", "Glacier job")
    if action != "ArchiveRetrieval":
        return IgnoredEvent(f"Glacier {action} job {job_id} is not an archive retrieval")
    archive_id = _str(data, "ArchiveId", "Glacier job")
    status = _str(data, "StatusCode", "Glacier job")
    if status not in _JOB_STATUSES:
        raise EventParseError(f"Glacier job {job_id} has an unknown StatusCode {status!r}")
    completion = _opt_str(data, "CompletionDate", "Glacier job")
    return VaultJobEvent(
        job_id=job_id,
        archive_id=archive_id,
        status_code=status,  # type: ignore[arg-type]  # checked against _JOB_STATUSES
        status_message=_opt_str(data, "StatusMessage", "Glacier job"),
        completed_at=_time(completion, "Glacier job CompletionDate") if completion else None,
        vault_arn=_opt_str(data, "VaultARN", "Glacier job"),
        sha256_tree_hash=_opt_str(data, "SHA256TreeHash", "Glacier job"),
        tier=_opt_str(data, "Tier", "Glacier job"),
    )


def parse_s3_records(data: Mapping[str, Any]) -> list[S3RestoreEvent | IgnoredEvent]:
    """Parse an S3 event notification (``{"Records": [...]}``)."""
    records = data.get("Records")
    if not isinstance(records, list) or not records:
        raise EventParseError("S3 event notification has no Records")
    return [_parse_s3_record(record, i) for i, record in enumerate(records)]


def _parse_s3_record(record: Any, index: int) -> S3RestoreEvent | IgnoredEvent:
    where = f"S3 event record {index}"
    if not isinstance(record, dict):
        raise EventParseError(f"{where} is not a JSON object")
    name = _str(record, "eventName", where).removeprefix("s3:")
    s3 = _obj(record, "s3", where)
    bucket = _str(_obj(s3, "bucket", where), "name", f"{where} bucket")
    obj = _obj(s3, "object", where)
    key = unquote_plus(_str(obj, "key", f"{where} object"))
    kind = S3_RESTORE_EVENTS.get(name)
    if kind is None:
        return IgnoredEvent(f"S3 event {name} for s3://{bucket}/{key} is not a restore event")

    size = obj.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise EventParseError(f"{where} object size {size!r} is not an integer")
    restore: Mapping[str, Any] = {}
    glacier = record.get("glacierEventData")
    if glacier is not None:
        if not isinstance(glacier, dict):
            raise EventParseError(f"{where} glacierEventData is not a JSON object")
        restore = glacier.get("restoreEventData") or {}
        if not isinstance(restore, dict):
            raise EventParseError(f"{where} restoreEventData is not a JSON object")
    expiry = _opt_str(restore, "lifecycleRestorationExpiryTime", where)
    return S3RestoreEvent(
        bucket=bucket,
        key=key,
        event=kind,
        expiry=_time(expiry, f"{where} lifecycleRestorationExpiryTime") if expiry else None,
        event_time=_time(_str(record, "eventTime", where), f"{where} eventTime"),
        size=size,
        version_id=_opt_str(obj, "versionId", f"{where} object"),
        storage_class=_opt_str(restore, "lifecycleRestoreStorageClass", where),
    )


# --------------------------------------------------------------------------- field helpers


def _str(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise EventParseError(f"{where} lacks {key} (a non-empty string)")
    return value


def _opt_str(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise EventParseError(f"{where} {key} {value!r} is not a string")
    return value


def _obj(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise EventParseError(f"{where} lacks the {key} object")
    return value


def _time(value: str, what: str) -> datetime:
    """Parse an AWS ISO 8601 time (``2026-01-05T00:00:00.000Z``); naive times are UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise EventParseError(f"{what} {value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
