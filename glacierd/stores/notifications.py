"""What AWS's notifications say about retrievals, as typed events (pure: no I/O, no clock).

Two producers post to glacierd's SNS topic:

- the **Glacier vault API**, when a job finishes: the message is the job's DescribeJob JSON
  (``vault/events.py``);
- **S3 event notifications** for ``s3:ObjectRestore:*`` on the bucket: ``{"Records": [...]}``,
  one record per event (``s3/events.py``). When the bucket notification is configured, S3
  first sends an ``s3:TestEvent``.

A message of a known shape that glacierd does not act on (a test event, an inventory job,
another S3 event) becomes an ``IgnoredEvent`` with the reason; a message of no known shape
raises ``MalformedEvent``. Which archive an event is about, and what it means for it, each
store says itself (``Store.interpret``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

from glacierd.stores.events import IgnoredEvent, MalformedEvent
from glacierd.stores.s3.events import S3RestoreEvent, parse_s3_records
from glacierd.stores.vault.events import VaultJobEvent, parse_vault_job

#: What a store may be told (``Store.interpret``).
StoreEvent: TypeAlias = S3RestoreEvent | VaultJobEvent
RetrievalEvent: TypeAlias = S3RestoreEvent | VaultJobEvent | IgnoredEvent


def parse_notification(data: Mapping[str, Any]) -> list[RetrievalEvent]:
    """The events in a notification's decoded message (S3 may batch several records)."""
    if "Records" in data:
        return list(parse_s3_records(data))
    if data.get("Event") == "s3:TestEvent":
        return [IgnoredEvent(f"S3 test event for bucket {data.get('Bucket')!r}")]
    if "JobId" in data and "Action" in data:
        return [parse_vault_job(data)]
    raise MalformedEvent(
        "notification message is neither a Glacier job, an S3 event nor an S3 test event "
        f"(keys: {', '.join(sorted(data)[:10])})"
    )
