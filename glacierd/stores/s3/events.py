"""S3 event notifications about restores (``s3:ObjectRestore:*``), and what they mean for an
archive of the S3 store.

The message is ``{"Records": [...]}``, one record per event, object keys URL-encoded.
Outcomes: ``Completed`` → ready until the restored copy expires; ``Delete`` → the copy
expired (available again, but only for an archive that was ready: a late Delete must not
cancel a newer retrieval); ``Post`` → a restore was requested (pending).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

from glacierd.stores.base import RetrievalState, StoreNews
from glacierd.stores.events import (
    IgnoredEvent,
    MalformedEvent,
    field_obj,
    field_opt_str,
    field_str,
    field_time,
)

RestoreEventKind = Literal["completed", "deleted", "posted"]

#: S3 eventName (without the ``s3:`` prefix) -> what happened to the restored copy.
S3_RESTORE_EVENTS: dict[str, RestoreEventKind] = {
    "ObjectRestore:Post": "posted",  # restore requested
    "ObjectRestore:Completed": "completed",  # restored copy readable
    "ObjectRestore:Delete": "deleted",  # restored copy expired (object back in Glacier)
}


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


def parse_s3_records(data: Mapping[str, Any]) -> list[S3RestoreEvent | IgnoredEvent]:
    """Parse an S3 event notification (``{"Records": [...]}``)."""
    records = data.get("Records")
    if not isinstance(records, list) or not records:
        raise MalformedEvent("S3 event notification has no Records")
    return [_parse_record(record, i) for i, record in enumerate(records)]


def _parse_record(record: Any, index: int) -> S3RestoreEvent | IgnoredEvent:
    where = f"S3 event record {index}"
    if not isinstance(record, dict):
        raise MalformedEvent(f"{where} is not a JSON object")
    name = field_str(record, "eventName", where).removeprefix("s3:")
    s3 = field_obj(record, "s3", where)
    bucket = field_str(field_obj(s3, "bucket", where), "name", f"{where} bucket")
    obj = field_obj(s3, "object", where)
    key = unquote_plus(field_str(obj, "key", f"{where} object"))
    kind = S3_RESTORE_EVENTS.get(name)
    if kind is None:
        return IgnoredEvent(f"S3 event {name} for s3://{bucket}/{key} is not a restore event")

    size = obj.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise MalformedEvent(f"{where} object size {size!r} is not an integer")
    restore: Mapping[str, Any] = {}
    glacier = record.get("glacierEventData")
    if glacier is not None:
        if not isinstance(glacier, dict):
            raise MalformedEvent(f"{where} glacierEventData is not a JSON object")
        restore = glacier.get("restoreEventData") or {}
        if not isinstance(restore, dict):
            raise MalformedEvent(f"{where} restoreEventData is not a JSON object")
    expiry = field_opt_str(restore, "lifecycleRestorationExpiryTime", where)
    return S3RestoreEvent(
        bucket=bucket,
        key=key,
        event=kind,
        expiry=field_time(expiry, f"{where} lifecycleRestorationExpiryTime") if expiry else None,
        event_time=field_time(field_str(record, "eventTime", where), f"{where} eventTime"),
        size=size,
        version_id=field_opt_str(obj, "versionId", f"{where} object"),
        storage_class=field_opt_str(restore, "lifecycleRestoreStorageClass", where),
    )


def restore_news(event: S3RestoreEvent, catalog_key: str) -> StoreNews:
    """What a restore event says about the archive stored under ``catalog_key``."""
    if event.event == "completed":
        return StoreNews(catalog_key, RetrievalState("ready", ready_until=event.expiry))
    if event.event == "deleted":
        # Only a ready copy can expire; a late Delete must not cancel a newer retrieval.
        expired = RetrievalState("available", reason="the restored copy expired")
        return StoreNews(catalog_key, expired, only_from=("ready",))
    return StoreNews(catalog_key, RetrievalState("pending"))
