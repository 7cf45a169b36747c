"""VaultStore with the real aioboto3 client over HTTP against an in-process moto server.

moto 5.2.5 implements only part of the Glacier vault API, so ``_extend_moto`` adds, for this
test session and with AWS's behaviour: multipart uploads (initiate, parts, complete, abort,
list — checking byte ranges, part sizes, per-part and whole-archive tree hashes and the
payload SHA-256), tree-hash checks on UploadArchive, the ``x-amz-sha256-tree-hash`` header on
job output (recorded at upload, so a damaged stored copy is detectable), and
ResourceNotFoundException for unknown jobs and archives (moto answers 500). What no server
produces (NoLongerSupportedException, a failed job, the SNS topic parameter) goes through
aiobotocore's Stubber on the store's own client.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from aiobotocore.stub import AioStubber
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.glacier.models import Vault, glacier_backends

from glacierd.config import VaultStoreConfig
from glacierd.stores.base import (
    ArchiveRef,
    NotRetrievedError,
    StoreError,
    VerificationError,
)
from glacierd.stores.vault import (
    DESCRIPTION_PREFIX,
    EMPTY_ARCHIVE_KEY,
    STORAGE_CLASS,
    VaultStore,
    archive_description,
)
from tests.moto_glacier import CALLS, FAIL_PART_AT, LIST_PAGE_SIZE, _uploads  # noqa: F401

MIB = 1024 * 1024
REGION = "us-east-1"
CLOSED = "closed to new AWS customers since 2025-12-15"

# -- helpers --------------------------------------------------------------------------


def _cfg(endpoint: str, vault: str, **overrides: Any) -> VaultStoreConfig:
    settings: dict[str, Any] = {
        "vault": vault,
        "region": REGION,
        "endpoint_url": endpoint,
        "default_tier": "Expedited",  # moto completes Expedited jobs after 2 s
        "multipart_threshold": MIB,
        "part_size": MIB,
    }
    settings.update(overrides)
    return VaultStoreConfig(**settings)


def _backend_vault(name: str) -> Vault:
    return glacier_backends[DEFAULT_ACCOUNT_ID][REGION].vaults[name]


async def _stream(data: bytes, step: int = 300_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i : i + step]
        await asyncio.sleep(0)


def _data(size: int) -> bytes:
    return random.randbytes(size)


@pytest.fixture
async def store(vault_moto: str) -> AsyncIterator[VaultStore]:
    name = f"glacierd-{uuid.uuid4().hex[:10]}"
    vault_store = VaultStore("vault", _cfg(vault_moto, name))
    await vault_store.open()
    await vault_store._client.create_vault(accountId="-", vaultName=name)
    CALLS.clear()
    FAIL_PART_AT.clear()
    try:
        yield vault_store
    finally:
        await vault_store.close()


async def _wait_ready(store: VaultStore, ref: ArchiveRef, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await store.retrieval_status(ref)).status != "ready":
        assert asyncio.get_running_loop().time() < deadline, "retrieval never became ready"
        await asyncio.sleep(0.25)


# -- uploads --------------------------------------------------------------------------


async def test_small_archive_is_one_upload_archive(store: VaultStore) -> None:
    data = _data(300_000)
    result = await store.put(
        "files/ab/cd/photo é.jpg", _stream(data), kind="file", size_hint=len(data)
    )
    assert result.storage_class == STORAGE_CLASS
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert CALLS == ["upload_archive"]
    archive = _backend_vault(store.cfg.vault).archives[result.key]  # the key is the ArchiveId
    assert archive["body"] == data
    assert archive["description"] == "glacierd:files/ab/cd/photo%20%C3%A9.jpg"


async def test_large_or_unknown_size_streams_as_multipart(store: VaultStore) -> None:
    data = _data(3 * MIB + MIB // 2)
    result = await store.put("db/2026-01-01.dump", _stream(data), kind="database")
    # 4 parts of 1 MiB (the last half), each checked by the server against its tree hash,
    # and the whole-archive tree hash combined from them
    parts = ["upload_multipart_part"] * 4
    assert CALLS[:] == ["initiate_multipart_upload", *parts, "complete_multipart_upload"]
    assert result.size == len(data)
    vault = _backend_vault(store.cfg.vault)
    assert vault.archives[result.key]["body"] == data
    assert unquote(vault.archives[result.key]["description"]) == "glacierd:db/2026-01-01.dump"
    assert not _uploads(vault)


async def test_a_wrong_small_size_hint_still_uploads_everything(store: VaultStore) -> None:
    data = _data(2 * MIB + 3)
    result = await store.put("k", _stream(data), kind="file", size_hint=10)
    assert "upload_archive" not in CALLS
    assert CALLS.count("upload_multipart_part") == 3
    assert _backend_vault(store.cfg.vault).archives[result.key]["body"] == data


async def test_empty_archive_never_reaches_the_vault(store: VaultStore, tmp_path: Path) -> None:
    for hint in (0, None):
        result = await store.put("empty", _stream(b""), kind="file", size_hint=hint)
        assert result.key.startswith(EMPTY_ARCHIVE_KEY)
        assert result.sha256 == hashlib.sha256(b"").hexdigest()
    assert CALLS == []
    # Two empty files get two keys: the catalog's (store, key) is unique.
    other = await store.put("empty-too", _stream(b""), kind="file", size_hint=0)
    assert other.key.startswith(EMPTY_ARCHIVE_KEY) and other.key != result.key
    ref = ArchiveRef(result.key, 0, hashlib.sha256(b"").hexdigest())
    assert (await store.request_retrieval(ref)).status == "ready"
    assert await store.get(ref, tmp_path / "empty") == 0
    assert (tmp_path / "empty").read_bytes() == b""
    await store.delete(ref)


async def test_failing_source_aborts_the_upload(store: VaultStore) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield _data(2 * MIB + 5)
        raise RuntimeError("pg_dump died")

    with pytest.raises(RuntimeError, match="pg_dump died"):  # the source's own error
        await store.put("db/broken", broken(), kind="database")
    assert "abort_multipart_upload" in CALLS
    assert not _uploads(_backend_vault(store.cfg.vault))


async def test_aws_failure_mid_upload_aborts_and_raises_store_error(store: VaultStore) -> None:
    FAIL_PART_AT.add(2 * MIB)
    with pytest.raises(StoreError, match=r"upload_multipart_part.*injected failure"):
        await store.put("db/x", _stream(_data(3 * MIB)), kind="database")
    assert CALLS[-1] == "abort_multipart_upload"
    assert not _uploads(_backend_vault(store.cfg.vault))


async def test_cancelled_upload_is_aborted(store: VaultStore) -> None:
    started = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield _data(MIB + 100)  # one whole part goes up
        started.set()
        await asyncio.Event().wait()  # then the source hangs
        yield b""  # pragma: no cover

    task = asyncio.create_task(store.put("db/slow", stalls(), kind="database"))
    await asyncio.wait_for(started.wait(), 5)
    while "upload_multipart_part" not in CALLS:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert CALLS[-1] == "abort_multipart_upload"
    assert not _uploads(_backend_vault(store.cfg.vault))


async def test_abort_incomplete_removes_only_glacierd_uploads(store: VaultStore) -> None:
    client = store._client
    for i in range(5):
        await client.initiate_multipart_upload(
            accountId="-",
            vaultName=store.cfg.vault,
            partSize=str(MIB),
            archiveDescription=archive_description(f"crashed/{i}"),
        )
    await client.initiate_multipart_upload(
        accountId="-",
        vaultName=store.cfg.vault,
        partSize=str(MIB),
        archiveDescription="another tool's upload",
    )
    assert await store.abort_incomplete() == 5  # found across three pages
    left = await client.list_multipart_uploads(accountId="-", vaultName=store.cfg.vault)
    assert [u["ArchiveDescription"] for u in left["UploadsList"]] == ["another tool's upload"]
    assert await store.abort_incomplete() == 0


# -- retrieval and download -----------------------------------------------------------


async def test_retrieve_then_fetch_verified(store: VaultStore, tmp_path: Path) -> None:
    data = _data(3 * MIB + MIB // 2)
    put = await store.put("db/dump", _stream(data), kind="database")
    ref = ArchiveRef(put.key, put.size, put.sha256, put.storage_class)

    assert (await store.retrieval_status(ref)).status == "available"
    with pytest.raises(NotRetrievedError):
        await store.get(ref, tmp_path / "never")

    before = datetime.now(UTC)
    state = await store.request_retrieval(ref)
    assert state.status == "pending" and state.job_id
    assert state.expected_at is not None
    assert before + timedelta(minutes=4) < state.expected_at < before + timedelta(minutes=6)
    ref = ArchiveRef(put.key, put.size, put.sha256, put.storage_class, state.job_id)
    job = await store._client.describe_job(
        accountId="-", vaultName=store.cfg.vault, jobId=state.job_id
    )
    assert job["Tier"] == "Expedited" and job["ArchiveId"] == put.key

    # idempotent: the running job answers, no second job
    again = await store.request_retrieval(ref)
    assert again.status == "pending" and again.job_id == state.job_id
    with pytest.raises(NotRetrievedError, match="pending"):
        await store.get(ref, tmp_path / "too-early")
    assert not (tmp_path / "too-early").exists()

    await _wait_ready(store, ref)
    ready = await store.retrieval_status(ref)
    assert ready.ready_until is not None and ready.job_id == state.job_id
    assert (await store.request_retrieval(ref)).job_id == state.job_id
    jobs = await store._client.list_jobs(accountId="-", vaultName=store.cfg.vault)
    assert len(jobs["JobList"]) == 1

    dest = tmp_path / "restore" / "dump"
    assert await store.get(ref, dest) == len(data)
    assert dest.read_bytes() == data

    # a wrong recorded SHA-256: nothing lands at dest, no temporary file is left
    wrong = ArchiveRef(put.key, put.size, "0" * 64, put.storage_class, state.job_id)
    with pytest.raises(VerificationError, match="SHA-256"):
        await store.get(wrong, tmp_path / "wrong")
    assert list(tmp_path.iterdir()) == [tmp_path / "restore"]

    # a damaged stored copy fails Glacier's tree hash even with no SHA-256 recorded
    archive = _backend_vault(store.cfg.vault).archives[put.key]
    archive["body"] = archive["body"][:-1] + bytes([archive["body"][-1] ^ 1])
    unchecked = ArchiveRef(put.key, None, None, put.storage_class, state.job_id)
    with pytest.raises(VerificationError, match="tree hash"):
        await store.get(unchecked, tmp_path / "damaged")
    assert not (tmp_path / "damaged").exists()


async def test_unknown_job_falls_back_to_available(store: VaultStore, tmp_path: Path) -> None:
    ref = ArchiveRef("some-archive", retrieval_job_id="EXPIRED-JOB")
    state = await store.retrieval_status(ref)
    assert state.status == "available"
    assert state.reason and "no longer knows" in state.reason
    with pytest.raises(NotRetrievedError, match="no longer knows"):
        await store.get(ref, tmp_path / "x")


async def test_failed_job_and_sns_topic_with_stubber(vault_moto: str) -> None:
    vault_store = VaultStore(
        "vault", _cfg(vault_moto, "stubbed", sns_topic="arn:aws:sns:us-east-1:1:glacierd")
    )
    await vault_store.open()
    try:
        with AioStubber(vault_store._client) as stub:
            stub.add_response(
                "describe_job",
                {
                    "JobId": "J1",
                    "ArchiveId": "A1",
                    "StatusCode": "Failed",
                    "StatusMessage": "archive unreadable",
                },
                {"accountId": "-", "vaultName": "stubbed", "jobId": "J1"},
            )
            stub.add_response(
                "initiate_job",
                {"jobId": "J2", "location": "/-/vaults/stubbed/jobs/J2"},
                {
                    "accountId": "-",
                    "vaultName": "stubbed",
                    "jobParameters": {
                        "Type": "archive-retrieval",
                        "ArchiveId": "A1",
                        "Tier": "Bulk",
                        "Description": "glacierd retrieval",
                        "SNSTopic": "arn:aws:sns:us-east-1:1:glacierd",
                    },
                },
            )
            ref = ArchiveRef("A1", retrieval_job_id="J1")
            state = await vault_store.request_retrieval(ref, tier="Bulk")
            stub.assert_no_pending_responses()
        assert state.status == "pending" and state.job_id == "J2"
        assert state.expected_at is not None
        assert state.expected_at > datetime.now(UTC) + timedelta(hours=11)

        with AioStubber(vault_store._client) as stub:
            stub.add_response(
                "describe_job",
                {
                    "JobId": "J1",
                    "ArchiveId": "A1",
                    "StatusCode": "Failed",
                    "StatusMessage": "archive unreadable",
                },
            )
            failed = await vault_store.retrieval_status(ref)
        assert failed.status == "available"
        assert failed.reason and "archive unreadable" in failed.reason
    finally:
        await vault_store.close()


# -- delete, list, probe, errors ------------------------------------------------------


async def test_delete_is_idempotent(store: VaultStore) -> None:
    put = await store.put("k", _stream(_data(1000)), kind="file", size_hint=1000)
    ref = ArchiveRef(put.key, put.size, put.sha256)
    await store.delete(ref)
    assert put.key not in _backend_vault(store.cfg.vault).archives
    await store.delete(ref)  # already gone: not an error


async def test_missing_vault_names_vault_region_and_fix(vault_moto: str) -> None:
    vault_store = VaultStore("vault", _cfg(vault_moto, "no-such-vault"))
    await vault_store.open()
    expected = "vault no-such-vault does not exist in region us-east-1; create it or fix"
    try:
        with pytest.raises(StoreError, match=expected):
            await vault_store.probe()
        with pytest.raises(StoreError, match=expected):
            await vault_store.put("k", _stream(_data(MIB + 1)), kind="file")
        with pytest.raises(StoreError, match=expected):
            await vault_store.put("k", _stream(b"x"), kind="file", size_hint=1)
        with pytest.raises(StoreError, match=expected):
            await vault_store.request_retrieval(ArchiveRef("A"))
        with pytest.raises(StoreError, match=expected):
            await vault_store.abort_incomplete()
    finally:
        await vault_store.close()


async def test_probe_of_an_existing_vault_asks_and_writes_nothing(
    store: VaultStore, vault_moto: str
) -> None:
    # A probe archive could not be read back for hours, and would cost a 90-day minimum:
    # the vault is only asked to describe itself.
    said = await store.probe()
    assert said == (
        f"Glacier vault {store.cfg.vault} (us-east-1) at {vault_moto} answers DescribeVault "
        "(a write-and-read probe would take hours in a vault)"
    )
    assert CALLS == [] and _backend_vault(store.cfg.vault).archives == {}
    assert not _uploads(_backend_vault(store.cfg.vault))


async def test_no_longer_supported_becomes_a_clear_error(store: VaultStore) -> None:
    with AioStubber(store._client) as stub:
        for method in (
            "describe_vault",
            "upload_archive",
            "initiate_multipart_upload",
            "initiate_job",
            "describe_job",
        ):
            stub.add_client_error(method, "NoLongerSupportedException", "no longer supported")
        with pytest.raises(StoreError, match=CLOSED) as probe_error:
            await store.probe()
        assert 'store.type = "s3"' in str(probe_error.value)
        assert "storage_class GLACIER" in str(probe_error.value)
        with pytest.raises(StoreError, match=CLOSED):
            await store.put("k", _stream(b"abc"), kind="file", size_hint=3)
        with pytest.raises(StoreError, match=CLOSED):
            await store.put("k", _stream(_data(10)), kind="file")
        with pytest.raises(StoreError, match=CLOSED):
            await store.request_retrieval(ArchiveRef("A"))
        with pytest.raises(StoreError, match=CLOSED):
            await store.retrieval_status(ArchiveRef("A", retrieval_job_id="J"))
        stub.assert_no_pending_responses()


async def test_missing_credentials_is_one_sentence(
    vault_moto: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    vault_store = VaultStore("vault", _cfg(vault_moto, "any"))
    await vault_store.open()
    try:
        with pytest.raises(StoreError, match="no usable AWS credentials for Glacier vault"):
            await vault_store.probe()
    finally:
        await vault_store.close()

    missing = VaultStore("vault", _cfg(vault_moto, "any", profile="nobody"))
    with pytest.raises(StoreError, match=r"AWS profile 'nobody' .*store\.vault\.profile"):
        await missing.open()


def test_archive_description_is_ascii_and_bounded() -> None:
    key = "files/ü/" + "é" * 400 + "/x y"
    text = archive_description(key)
    assert text.startswith(DESCRIPTION_PREFIX)
    assert len(text) <= 1024 and text.isascii() and text.isprintable()
    assert re.search(r"%.?$", text) is None  # never cut inside an escape
    assert key.startswith(unquote(text.removeprefix(DESCRIPTION_PREFIX)))
    short = "db/2026-01-01T03:00:00Z.dump"
    assert unquote(archive_description(short)[len(DESCRIPTION_PREFIX) :]) == short
