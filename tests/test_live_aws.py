"""The S3 store against a REAL bucket: what moto cannot prove (AWS's own checks and answers).

Opt in with ``GLACIERD_LIVE_S3_BUCKET=<bucket>`` and AWS credentials (environment, profile
via ``AWS_PROFILE``, or an instance role); ``GLACIERD_LIVE_S3_REGION`` names the bucket's
region if it is not the SDK default. Run only this group with ``pytest -m live_aws``.

Everything is written under a unique prefix (``glacierd-live-test/<random>/``) and deleted
at the end, even when a test fails. Cost: a few MiB in GLACIER_IR and one tiny GLACIER
object — billed for their 90-day minimum, well under a cent — and one free Bulk restore
request that is never completed.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import boto3
import pytest

from glacierd.config import S3StoreConfig
from glacierd.stores.base import ArchiveNotFoundError, ArchiveRef, NotRetrievedError
from glacierd.stores.s3 import MIN_PART_SIZE, S3Store
from tests.store_listing import listing

pytestmark = pytest.mark.live_aws

BUCKET_ENV = "GLACIERD_LIVE_S3_BUCKET"
REGION_ENV = "GLACIERD_LIVE_S3_REGION"
#: moto's fixtures put these fake credentials into os.environ; they never work on AWS.
_FAKE_KEYS = {"testing", "foobar_key"}


def _skip_reason() -> str | None:
    if not os.environ.get(BUCKET_ENV):
        return f"live AWS test: set {BUCKET_ENV} (and AWS credentials) to run it"
    credentials = boto3.Session().get_credentials()
    if credentials is None:
        return f"live AWS test: {BUCKET_ENV} is set but no AWS credentials were found"
    if credentials.access_key in _FAKE_KEYS:
        return (
            "live AWS test: the AWS credentials in the environment are moto's fake ones; "
            "run this group alone (pytest -m live_aws) with real credentials"
        )
    return None


@pytest.fixture
async def live_store() -> AsyncIterator[S3Store]:
    """An S3Store on the real bucket under a unique prefix; everything under it is removed."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    cfg = S3StoreConfig(
        bucket=os.environ[BUCKET_ENV],
        prefix=f"glacierd-live-test/{uuid.uuid4().hex}/",
        region=os.environ.get(REGION_ENV) or None,
        storage_class="GLACIER_IR",
        default_tier="Bulk",  # free, and the GLACIER test never waits for it anyway
        restore_days=1,
    )
    store = S3Store("live", cfg)
    store._part_size = MIN_PART_SIZE  # two real parts for a 6 MiB archive
    await store.open()
    try:
        yield store
    finally:
        try:
            await store.abort_incomplete()
            for obj in await listing(store):
                await store.delete(ArchiveRef(obj.key))
        finally:
            await store.close()


def payload(size: int) -> bytes:
    block = hashlib.sha256(b"glacierd live test").digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


async def stream(data: bytes, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


@pytest.mark.parametrize("size", [100_000, MIN_PART_SIZE + 1024 * 1024])
async def test_instant_retrieval_round_trip(live_store: S3Store, tmp_path: Path, size: int) -> None:
    """put → request_retrieval → ready → get (SHA-256 verified) → delete, on real S3."""
    data = payload(size)
    result = await live_store.put("roundtrip.bin", stream(data), kind="database", size_hint=size)
    assert result.size == size
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.storage_class == "GLACIER_IR"
    ref = ArchiveRef(result.key, result.size, result.sha256, result.storage_class)

    state = await live_store.request_retrieval(ref)
    assert state.status == "ready"  # Instant Retrieval: no RestoreObject needed
    assert (await live_store.retrieval_status(ref)).status == "ready"

    dest = tmp_path / "roundtrip.bin"
    assert await live_store.get(ref, dest) == size
    assert dest.read_bytes() == data

    await live_store.delete(ref)
    with pytest.raises(ArchiveNotFoundError):
        await live_store.retrieval_status(ref)
    assert [o.key for o in await listing(live_store)] == []


async def test_glacier_object_restore_is_pending(live_store: S3Store, tmp_path: Path) -> None:
    """A GLACIER object: unreadable, and RestoreObject answers 'started' (pending)."""
    live_store.cfg = replace(live_store.cfg, storage_class="GLACIER")
    data = payload(4096)
    result = await live_store.put("flexible.bin", stream(data), kind="file", size_hint=len(data))
    assert result.storage_class == "GLACIER"
    ref = ArchiveRef(result.key, result.size, result.sha256, result.storage_class)

    assert (await live_store.retrieval_status(ref)).status == "available"
    with pytest.raises(NotRetrievedError):
        await live_store.get(ref, tmp_path / "flexible.bin")

    state = await live_store.request_retrieval(ref, tier="Bulk")
    assert state.status == "pending"
    assert state.expected_at is not None
    # Asking again while it runs is not an error (409 RestoreAlreadyInProgress, or HEAD says so).
    assert (await live_store.request_retrieval(ref, tier="Bulk")).status == "pending"
    assert (await live_store.retrieval_status(ref)).status == "pending"
    assert not (tmp_path / "flexible.bin").exists()

    await live_store.delete(ref)
    with pytest.raises(ArchiveNotFoundError):
        await live_store.retrieval_status(ref)


async def test_doctor_probe_leaves_nothing(live_store: S3Store) -> None:
    await live_store.probe()
    assert [o.key for o in await listing(live_store)] == []
