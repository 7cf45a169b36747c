"""Parsing retrieval events out of verified SNS notifications (glacierd.notifications.events)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from glacierd.notifications.events import EventParseError, parse_events
from glacierd.notifications.sns import SnsError
from glacierd.stores.events import IgnoredEvent
from glacierd.stores.s3.events import S3RestoreEvent
from glacierd.stores.vault.events import VaultJobEvent

VAULT_ARN = "arn:aws:glacier:us-east-1:123456789012:vaults/glacierd"
ARCHIVE_ID = (
    "NkbByEejwEggmBz2fTHgJrg0XBoDfjP4q6iu87-TjhqG6eGoOY9Z8i1_AUyUsuhPAdTqLHy8pTl5nfCFJmDl2yEZONi5L26"
    "Omw12vcs01MNGntHEQL8MBfGlqrEXAMPLEArchiveId"
)
JOB_ID = (
    "HkF9p6o7yjhFx-K3CGl6fuSm6VzW9T7esGQfco8nUXVYwS0jlb5gq1JZ55yHgt5vP54ZShjoQzQVVh7vEXAMPLEjobID"
)
TREE_HASH = "beb0fe31a1c7ca8c6c04d574ea906e3f97b31fdca7571defb5b44dca89b5af60"

# What Glacier publishes when an archive-retrieval job finishes (the DescribeJob document).
VAULT_JOB_SUCCEEDED: dict[str, Any] = {
    "Action": "ArchiveRetrieval",
    "ArchiveId": ARCHIVE_ID,
    "ArchiveSHA256TreeHash": TREE_HASH,
    "ArchiveSizeInBytes": 16777216,
    "Completed": True,
    "CompletionDate": "2026-03-02T17:21:39.339Z",
    "CreationDate": "2026-03-02T13:19:01.339Z",
    "InventorySizeInBytes": None,
    "JobDescription": "glacierd retrieval 42",
    "JobId": JOB_ID,
    "RetrievalByteRange": "0-16777215",
    "SHA256TreeHash": TREE_HASH,
    "SNSTopic": "arn:aws:sns:us-east-1:123456789012:glacierd-retrievals",
    "StatusCode": "Succeeded",
    "StatusMessage": "Succeeded",
    "Tier": "Standard",
    "VaultARN": VAULT_ARN,
}


def s3_record(event_name: str, key: str, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-03-02T18:04:11.097Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "198.51.100.7"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURI"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "glacierd-restores",
            "bucket": {
                "name": "acme-backups",
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": "arn:aws:s3:::acme-backups",
            },
            "object": {
                "key": key,
                "size": 204800,
                "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                "sequencer": "0055AED6DCD90281E5",
            },
        },
    }
    record.update(extra)
    return record


RESTORE_DATA = {
    "glacierEventData": {
        "restoreEventData": {
            "lifecycleRestorationExpiryTime": "2026-03-09T00:00:00.000Z",
            "lifecycleRestoreStorageClass": "GLACIER",
        }
    }
}


def test_vault_job_succeeded() -> None:
    [event] = parse_events(json.dumps(VAULT_JOB_SUCCEEDED))
    assert event == VaultJobEvent(
        job_id=VAULT_JOB_SUCCEEDED["JobId"],
        archive_id=ARCHIVE_ID,
        status_code="Succeeded",
        status_message="Succeeded",
        completed_at=datetime(2026, 3, 2, 17, 21, 39, 339000, tzinfo=UTC),
        vault_arn=VAULT_ARN,
        sha256_tree_hash=TREE_HASH,
        tier="Standard",
    )
    assert event.succeeded


def test_vault_job_failed_and_in_progress() -> None:
    failed = dict(
        VAULT_JOB_SUCCEEDED,
        StatusCode="Failed",
        StatusMessage="The archive was not found",
        SHA256TreeHash=None,
    )
    [event] = parse_events(json.dumps(failed))
    assert isinstance(event, VaultJobEvent)
    assert event.status_code == "Failed" and not event.succeeded
    assert event.status_message == "The archive was not found"
    assert event.sha256_tree_hash is None

    # moto's (and DescribeJob's) shape for a running job: no CompletionDate, null message
    running = dict(
        VAULT_JOB_SUCCEEDED, StatusCode="InProgress", StatusMessage=None, Completed=False
    )
    del running["CompletionDate"]
    [event] = parse_events(json.dumps(running))
    assert isinstance(event, VaultJobEvent)
    assert event.status_code == "InProgress"
    assert event.completed_at is None and event.status_message is None


def test_inventory_job_is_ignored() -> None:
    inventory = dict(VAULT_JOB_SUCCEEDED, Action="InventoryRetrieval", ArchiveId=None)
    [event] = parse_events(json.dumps(inventory))
    assert isinstance(event, IgnoredEvent)
    assert "InventoryRetrieval" in event.reason


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"StatusCode": "Exploded"}, "unknown StatusCode"),
        ({"ArchiveId": None}, "ArchiveId"),
        ({"JobId": ""}, "JobId"),
        ({"CompletionDate": "last Tuesday"}, "ISO 8601"),
        ({"StatusMessage": 3}, "not a string"),
    ],
)
def test_bad_vault_jobs_are_rejected(change: dict[str, Any], words: str) -> None:
    with pytest.raises(EventParseError) as info:
        parse_events(json.dumps(dict(VAULT_JOB_SUCCEEDED, **change)))
    assert words in info.value.reason
    assert info.value.status == 400


def test_s3_restore_completed_with_encoded_key_and_expiry() -> None:
    message = {
        "Records": [s3_record("ObjectRestore:Completed", "files/a+b%2Fc.jpg", **RESTORE_DATA)]
    }
    [event] = parse_events(json.dumps(message))
    assert event == S3RestoreEvent(
        bucket="acme-backups",
        key="files/a b/c.jpg",
        event="completed",
        expiry=datetime(2026, 3, 9, tzinfo=UTC),
        event_time=datetime(2026, 3, 2, 18, 4, 11, 97000, tzinfo=UTC),
        size=204800,
        version_id="096fKKXTRTtl3on89fVO.nfljtsv6qko",
        storage_class="GLACIER",
    )


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("files/a+b%2Fc.jpg", "files/a b/c.jpg"),
        ("files/caf%C3%A9+%2B+cr%C3%A8me.png", "files/café + crème.png"),
        ("db/2026-03-02T03%3A00%3A00Z.dump", "db/2026-03-02T03:00:00Z.dump"),
        ("plain/key.bin", "plain/key.bin"),
    ],
)
def test_s3_keys_are_url_decoded(encoded: str, decoded: str) -> None:
    [event] = parse_events(json.dumps({"Records": [s3_record("ObjectRestore:Post", encoded)]}))
    assert isinstance(event, S3RestoreEvent)
    assert event.key == decoded


def test_s3_restore_post_and_delete() -> None:
    # Post carries no glacierEventData; Delete (restored copy expired) carries the storage class
    delete_data = {
        "glacierEventData": {"restoreEventData": {"lifecycleRestoreStorageClass": "DEEP_ARCHIVE"}}
    }
    message = {
        "Records": [
            s3_record("ObjectRestore:Post", "db/backup-1.dump"),
            s3_record("ObjectRestore:Delete", "db/backup-1.dump", **delete_data),
        ]
    }
    posted, deleted = parse_events(json.dumps(message))
    assert isinstance(posted, S3RestoreEvent) and isinstance(deleted, S3RestoreEvent)
    assert (posted.event, posted.expiry, posted.storage_class) == ("posted", None, None)
    assert (deleted.event, deleted.expiry, deleted.storage_class) == (
        "deleted",
        None,
        "DEEP_ARCHIVE",
    )


def test_s3_batch_keeps_order_and_ignores_other_events() -> None:
    message = {
        "Records": [
            s3_record("ObjectRestore:Completed", "files/1.jpg", **RESTORE_DATA),
            s3_record("ObjectCreated:Put", "files/2.jpg"),
            s3_record("s3:ObjectRestore:Completed", "files/3.jpg", **RESTORE_DATA),
        ]
    }
    first, second, third = parse_events(json.dumps(message))
    assert isinstance(first, S3RestoreEvent) and first.key == "files/1.jpg"
    assert isinstance(second, IgnoredEvent) and "ObjectCreated:Put" in second.reason
    assert isinstance(third, S3RestoreEvent) and third.key == "files/3.jpg"


def test_s3_test_event_is_ignored() -> None:
    message = {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2026-03-02T15:57:02.089Z",
        "Bucket": "acme-backups",
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
    [event] = parse_events(json.dumps(message))
    assert isinstance(event, IgnoredEvent)
    assert "acme-backups" in event.reason


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ("not json at all", "not JSON"),
        ("[1, 2, 3]", "not a JSON object"),
        (json.dumps({"hello": "world"}), "neither a Glacier job"),
        (json.dumps({"Records": []}), "no Records"),
        (json.dumps({"Records": ["x"]}), "not a JSON object"),
        (json.dumps({"Records": [{"eventName": "ObjectRestore:Completed"}]}), "s3 object"),
        (
            json.dumps({"Records": [s3_record("ObjectRestore:Completed", "k", eventTime=None)]}),
            "eventTime",
        ),
        (
            json.dumps(
                {
                    "Records": [
                        s3_record(
                            "ObjectRestore:Completed",
                            "k",
                            glacierEventData={
                                "restoreEventData": {"lifecycleRestorationExpiryTime": "soon"}
                            },
                        )
                    ]
                }
            ),
            "ISO 8601",
        ),
    ],
)
def test_unknown_shapes_are_rejected(message: str, words: str) -> None:
    with pytest.raises(EventParseError) as info:
        parse_events(message)
    assert words in info.value.reason
    # one error, usable both ways: as a ValueError, and as an SnsError answering 400
    assert isinstance(info.value, ValueError) and isinstance(info.value, SnsError)
    assert info.value.status == 400
