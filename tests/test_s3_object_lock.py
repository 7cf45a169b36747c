"""S3 Object Lock and SSE-KMS on uploads, against moto over HTTP with the real aioboto3 client,
and the deletion of a locked backup refused whole, with the date, by the real daemon.

moto 5.2.5 does not implement GetObjectRetention (``GET ?retention`` returns the object's
bytes), so an object's retention is read from HeadObject, which carries the same
``x-amz-object-lock-mode`` and ``-retain-until-date`` (on AWS, for callers allowed
s3:GetObjectRetention). moto also drops the lock headers of CreateMultipartUpload; what
glacierd sends there is checked on the request itself.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from glacierd.config import S3StoreConfig
from glacierd.stores.base import ArchiveLockedError, ArchiveRef, one_chunk
from glacierd.stores.s3 import MIN_PART_SIZE, S3Store
from tests.aws_fixtures import AWS_ENV, REGION, s3_client, sync_s3_client
from tests.daemon import Daemon

KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
PREFIX = "locked/"


@pytest.fixture
def lock_bucket(moto_server: str) -> str:
    """A bucket created with Object Lock enabled (which also turns versioning on)."""
    name = f"lock-{uuid.uuid4().hex[:20]}"
    sync_s3_client(moto_server).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@asynccontextmanager
async def open_store(endpoint: str, bucket: str, **settings: Any) -> AsyncIterator[S3Store]:
    cfg = S3StoreConfig(
        bucket=bucket,
        prefix=PREFIX,
        endpoint_url=endpoint,
        region=REGION,
        storage_class="STANDARD",
        **settings,
    )
    store = S3Store("s3", cfg)
    store._part_size = MIN_PART_SIZE
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def head(endpoint: str, bucket: str, key: str) -> dict[str, Any]:
    async with s3_client(endpoint) as client:
        return await client.head_object(Bucket=bucket, Key=PREFIX + key)


async def test_a_locked_and_kms_encrypted_upload(moto_server: str, lock_bucket: str) -> None:
    before = datetime.now(UTC)
    async with open_store(
        moto_server,
        lock_bucket,
        object_lock_mode="COMPLIANCE",
        object_lock_days=30,
        kms_key_id=KEY_ARN,
    ) as store:
        await store.put("database/one.dump", one_chunk(b"dump bytes"), kind="database")
    after = datetime.now(UTC)
    got = await head(moto_server, lock_bucket, "database/one.dump")
    assert got["ObjectLockMode"] == "COMPLIANCE"
    until = got["ObjectLockRetainUntilDate"]
    # S3 keeps the date to the second.
    assert before + timedelta(days=30, seconds=-1) <= until <= after + timedelta(days=30)
    assert got["ServerSideEncryption"] == "aws:kms" and got["SSEKMSKeyId"] == KEY_ARN


async def test_a_multipart_upload_asks_for_the_lock_and_the_key(
    moto_server: str, lock_bucket: str
) -> None:
    sent: list[dict[str, Any]] = []
    data = b"x" * (MIN_PART_SIZE + 1000)  # two parts
    async with open_store(
        moto_server,
        lock_bucket,
        object_lock_mode="GOVERNANCE",
        object_lock_days=7,
        kms_key_id="alias/glacierd",
    ) as store:
        store._client.meta.events.register(
            "before-call.s3.CreateMultipartUpload",
            lambda params, **_: sent.append(dict(params["headers"])),
        )
        await store.put("files/big@backup1", one_chunk(data), kind="file", size_hint=len(data))
    [headers] = sent
    assert headers["x-amz-object-lock-mode"] == "GOVERNANCE"
    until = datetime.fromisoformat(headers["x-amz-object-lock-retain-until-date"])
    assert abs(until - (datetime.now(UTC) + timedelta(days=7))) < timedelta(minutes=5)
    assert headers["x-amz-server-side-encryption"] == "aws:kms"
    assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == "alias/glacierd"
    got = await head(moto_server, lock_bucket, "files/big@backup1")
    assert got["ServerSideEncryption"] == "aws:kms" and got["ContentLength"] == len(data)


async def test_a_locked_archive_is_not_deleted_and_the_refusal_names_the_date(
    moto_server: str, lock_bucket: str
) -> None:
    async with open_store(
        moto_server, lock_bucket, object_lock_mode="COMPLIANCE", object_lock_days=3
    ) as store:
        stored = await store.put("database/two.dump", one_chunk(b"keep me"), kind="database")
        ref = ArchiveRef(stored.key, stored.size, stored.sha256)
        lock = await store.retention(ref)
        assert lock is not None and lock.mode == "COMPLIANCE"
        with pytest.raises(ArchiveLockedError) as refused:
            await store.delete(ref)
    day = lock.until.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert str(refused.value) == (
        f"archive database/two.dump in S3 bucket {lock_bucket} is under S3 Object Lock "
        f"(COMPLIANCE mode) until {day}, so it cannot be deleted; delete it after that date."
    )
    got = await head(moto_server, lock_bucket, "database/two.dump")  # still there, intact
    assert got["ContentLength"] == len(b"keep me")


async def test_unlocked_archives_in_a_versioned_bucket_are_deleted_for_good(
    moto_server: str, lock_bucket: str
) -> None:
    """Without a version id, DeleteObject in a versioned bucket only hides the object behind
    a delete marker: its bytes would stay (and be billed) for ever."""
    async with open_store(moto_server, lock_bucket) as store:
        stored = await store.put("files/a@backup1", one_chunk(b"gone"), kind="file")
        assert await store.retention(ArchiveRef(stored.key)) is None
        await store.delete(ArchiveRef(stored.key))
        await store.delete(ArchiveRef(stored.key))  # already gone: not an error
        assert "probe object" in await store.probe()
    async with s3_client(moto_server) as client:
        versions = await client.list_object_versions(Bucket=lock_bucket, Prefix=PREFIX)
    assert versions.get("Versions", []) == [] and versions.get("DeleteMarkers", []) == []


# ------------------------------------------------------------------ the daemon's DELETE


def lock_settings(make_settings: Callable[..., dict], moto: str, bucket: str) -> dict:
    s3 = {
        "bucket": bucket,
        "prefix": PREFIX,
        "endpoint_url": moto,
        "region": REGION,
        "storage_class": "STANDARD",
        "object_lock_mode": "GOVERNANCE",
        "object_lock_days": 1,
    }
    return make_settings(store={"type": "s3", "name": "locked", "s3": s3})


def test_deleting_a_locked_backup_is_refused_whole(
    daemon_factory: Callable[..., Daemon],
    make_settings: Callable[..., dict],
    moto_server: str,
    lock_bucket: str,
) -> None:
    d = daemon_factory(lock_settings(make_settings, moto_server, lock_bucket), env=AWS_ENV)
    started = d.request("POST", "/backups", {}).json()["id"]
    before = d.wait_backup(started)
    assert before["status"] == "completed"
    objects = sync_s3_client(moto_server).list_object_versions(Bucket=lock_bucket)["Versions"]

    refused = d.request("DELETE", f"/backups/{started}")
    assert refused.status == 409, refused.body
    message = refused.json()["error"]
    assert message.startswith(
        f"backup {started} cannot be deleted: 4 of the 4 archives only it uses are locked, "
        "the last under S3 Object Lock (GOVERNANCE mode) until "
    )
    assert message.endswith("; nothing was deleted — delete it after that date.")
    # Nothing changed: not in the catalog, not in the bucket.
    after = d.request("GET", f"/backups/{started}")
    assert after.status == 200 and after.json() == before
    left = sync_s3_client(moto_server).list_object_versions(Bucket=lock_bucket)
    assert left["Versions"] == objects and "DeleteMarkers" not in left
    assert d.stop() == 0
