"""S3Store against a real aiobotocore client talking HTTP to moto (and a fault proxy).

Cases moto cannot produce (a restore still running, an expired copy, 409 and 503 answers to
RestoreObject, access denied) use botocore's Stubber on the store's own client.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.stub import AioStubber

from glacierd.config import S3StoreConfig
from glacierd.stores.base import (
    ArchiveNotFoundError,
    ArchiveRef,
    NotRetrievedError,
    StoreError,
    VerificationError,
)
from glacierd.stores.s3 import (
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    MiB,
    S3Store,
    parse_restore_header,
    plan_parts,
    retrieval_state,
)
from tests.aws_fixtures import FaultProxy, s3_client
from tests.store_listing import listing

PART = MIN_PART_SIZE  # tests use 5 MiB parts to stay fast
PREFIX = "backups/"


def payload(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB of varied bytes
    return (block * (size // len(block) + 1))[:size]


async def stream(data: bytes, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]
        await asyncio.sleep(0)


@asynccontextmanager
async def open_store(endpoint: str, bucket: str, **overrides: Any) -> AsyncIterator[S3Store]:
    tunables = {k: overrides.pop(k) for k in list(overrides) if k.startswith("_")}
    cfg = S3StoreConfig(
        bucket=bucket, prefix=PREFIX, endpoint_url=endpoint, storage_class="GLACIER_IR"
    )
    store = S3Store("s3", replace(cfg, **overrides))
    store._part_size = PART
    store._max_attempts = 3
    for name, value in tunables.items():
        setattr(store, name, value)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def open_uploads(endpoint: str, bucket: str) -> list[dict[str, Any]]:
    async with s3_client(endpoint) as client:
        resp = await client.list_multipart_uploads(Bucket=bucket)
    return list(resp.get("Uploads", []))


async def head(endpoint: str, bucket: str, key: str) -> dict[str, Any]:
    async with s3_client(endpoint) as client:
        return dict(await client.head_object(Bucket=bucket, Key=key))


def ref_for(result: Any, storage_class: str | None = None) -> ArchiveRef:
    return ArchiveRef(result.key, result.size, result.sha256, storage_class)


# ------------------------------------------------------------------------ pure functions


def test_parse_restore_header() -> None:
    assert parse_restore_header(None) is None
    assert parse_restore_header("") is None
    running = parse_restore_header('ongoing-request="true"')
    assert running is not None and running.ongoing and running.expiry is None
    done = parse_restore_header(
        'ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"'
    )
    assert done is not None and not done.ongoing
    assert done.expiry == datetime(2012, 12, 21, tzinfo=UTC)
    naive = parse_restore_header(
        'ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 -0000"'
    )
    assert naive is not None and naive.expiry == datetime(2012, 12, 21, tzinfo=UTC)
    spaced = parse_restore_header(' ongoing-request = "FALSE" ,expiry-date="garbage"')
    assert spaced is not None and not spaced.ongoing and spaced.expiry is None


def test_retrieval_state_from_head() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    later = "Mon, 08 Jun 2026 00:00:00 GMT"
    earlier = "Fri, 29 May 2026 00:00:00 GMT"
    assert retrieval_state(None, None, now).status == "ready"  # HEAD omits STANDARD
    assert retrieval_state("GLACIER_IR", None, now).status == "ready"
    assert retrieval_state("STANDARD_IA", None, now).status == "ready"
    assert retrieval_state("GLACIER", None, now).status == "available"
    assert retrieval_state("DEEP_ARCHIVE", 'ongoing-request="true"', now).status == "pending"
    ready = retrieval_state("GLACIER", f'ongoing-request="false", expiry-date="{later}"', now)
    assert ready.status == "ready"
    assert ready.ready_until == datetime(2026, 6, 8, tzinfo=UTC)
    gone = retrieval_state("GLACIER", f'ongoing-request="false", expiry-date="{earlier}"', now)
    assert gone.status == "available" and gone.reason == "the restored copy expired"


@pytest.mark.parametrize(
    "hint", [None, 0, 1, 100 * MiB, 10**9, 10**11, 2**40, 5 * 2**40, 48 * 2**40]
)
def test_part_plan_never_hits_the_part_limit(hint: int | None) -> None:
    plan = plan_parts(hint)
    assert plan.base >= 8 * MiB and plan.base % MiB == 0
    assert all(plan.size_of(n) <= MAX_PART_SIZE for n in (1, 9_000, 9_500, MAX_PARTS))
    if hint is None:
        assert plan.base == 8 * MiB
        assert plan.capacity() >= 5 * 2**40  # S3's object size limit was 5 TiB for years
    else:
        if hint <= 40 * 2**40:
            assert -(-hint // plan.base) <= 9_000  # a correct hint: at most 9,000 parts
        # A hint that is too low still fits (parts grow past 9,000), up to S3's limit.
        assert plan.capacity() >= min(1.5 * hint, 48 * 2**40)


def test_part_plan_small_dumps_stay_small() -> None:
    plan = plan_parts(None)
    assert [plan.pieces(n) for n in (1, 1000, 1001, 2001, 3001)] == [1, 1, 2, 4, 8]
    assert plan_parts(10**9).base == 8 * MiB  # ~120 PUTs for a gigabyte
    assert plan_parts(None, 1).base == MIN_PART_SIZE  # never below S3's 5 MiB


# ---------------------------------------------------------------- round trips on moto


@pytest.mark.parametrize("size", [0, 1, 100_000, PART, 2 * PART + 12_345])
async def test_put_get_round_trip(
    moto_server: str, s3_bucket: str, tmp_path: Path, size: int
) -> None:
    data = payload(size, seed=size)
    async with open_store(moto_server, s3_bucket) as store:
        result = await store.put("db/dump-1", stream(data), kind="database", size_hint=size)
        assert result.key == "db/dump-1"  # the catalog keeps the key without the prefix
        assert result.size == size
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        assert result.storage_class == "GLACIER_IR"
        meta = await head(moto_server, s3_bucket, PREFIX + "db/dump-1")
        assert meta["StorageClass"] == "GLACIER_IR"
        assert meta["ContentLength"] == size
        parts = -(-size // PART)
        if size >= PART:  # multipart: ETag "<md5>-<parts>"
            assert meta["ETag"].strip('"').endswith(f"-{parts}")
        else:
            assert "-" not in meta["ETag"]
        dest = tmp_path / "out" / "dump"
        assert await store.get(ref_for(result, "GLACIER_IR"), dest) == size
        assert dest.read_bytes() == data
    assert await open_uploads(moto_server, s3_bucket) == []


async def test_unknown_size_goes_multipart(
    moto_server: str, s3_bucket: str, tmp_path: Path
) -> None:
    data = payload(PART + 1)
    async with open_store(moto_server, s3_bucket, part_concurrency=2) as store:
        result = await store.put("db/unsized", stream(data), kind="database")
        meta = await head(moto_server, s3_bucket, PREFIX + "db/unsized")
        assert meta["ETag"].strip('"').endswith("-2")
        await store.get(ref_for(result), tmp_path / "x")
        assert (tmp_path / "x").read_bytes() == data


async def test_storage_class_per_kind(moto_server: str, s3_bucket: str) -> None:
    async with open_store(
        moto_server,
        s3_bucket,
        storage_class="GLACIER",
        database_storage_class="DEEP_ARCHIVE",
        files_storage_class="GLACIER_IR",
    ) as store:
        for key, kind, expected in [
            ("db", "database", "DEEP_ARCHIVE"),
            ("big-db", "database", "DEEP_ARCHIVE"),
            ("file", "file", "GLACIER_IR"),
            ("probe", "probe", "STANDARD"),
        ]:
            size = 2 * PART if key == "big-db" else 10
            result = await store.put(key, stream(payload(size)), kind=kind, size_hint=size)
            assert result.storage_class == expected
            meta = await head(moto_server, s3_bucket, PREFIX + key)
            assert meta.get("StorageClass", "STANDARD") == expected


async def test_parts_upload_concurrently_with_bounded_read_ahead(
    moto_server: str, s3_bucket: str, tmp_path: Path
) -> None:
    data = payload(8 * PART)
    consumed = 0
    gate = asyncio.Event()
    in_flight = peak = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal consumed
        async for chunk in stream(data, chunk=MiB):
            consumed += len(chunk)
            yield chunk

    async with open_store(moto_server, s3_bucket, part_concurrency=3) as store:
        real = store.uploader.upload_part

        async def gated(*args: Any) -> dict[str, Any]:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                await gate.wait()
                return await real(*args)
            finally:
                in_flight -= 1

        store.uploader.upload_part = gated  # type: ignore[method-assign]
        task = asyncio.create_task(store.put("big", counted(), kind="file", size_hint=len(data)))
        await asyncio.sleep(0.3)
        assert in_flight == 3  # part_concurrency parts in flight …
        assert consumed <= 5 * PART  # … and the source is not read much further ahead
        gate.set()
        result = await task
        assert peak == 3
        await store.get(ref_for(result), tmp_path / "big")
        assert (tmp_path / "big").read_bytes() == data


# ------------------------------------------------------------------- retrieval on moto


async def test_glacier_object_needs_restore(
    moto_server: str, s3_bucket: str, tmp_path: Path
) -> None:
    data = payload(1000)
    async with open_store(moto_server, s3_bucket, storage_class="GLACIER") as store:
        result = await store.put("f/1", stream(data), kind="file", size_hint=len(data))
        archive = ref_for(result, "GLACIER")
        dest = tmp_path / "f1"
        with pytest.raises(NotRetrievedError, match="request a retrieval"):
            await store.get(archive, dest)
        assert not dest.exists() and list(tmp_path.iterdir()) == []
        assert (await store.retrieval_status(archive)).status == "available"

        before = datetime.now(UTC)
        state = await store.request_retrieval(archive)  # 202 from moto
        assert state.status == "pending"
        assert state.expected_at is not None
        assert (
            before + timedelta(hours=5)
            <= state.expected_at
            <= datetime.now(UTC) + timedelta(hours=5)
        )
        # moto restores at once.
        ready = await store.retrieval_status(archive)
        assert ready.status == "ready" and ready.ready_until is not None
        assert ready.ready_until > datetime.now(UTC) + timedelta(days=6)
        # A second request on a restored object: 200, reported from HEAD.
        again = await store.request_retrieval(archive, "Bulk")
        assert again.status == "ready"
        assert await store.get(archive, dest) == len(data)
        assert dest.read_bytes() == data


async def test_instant_retrieval_is_ready_at_once(
    moto_server: str, s3_bucket: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    async with open_store(fault_proxy.url, s3_bucket, storage_class="GLACIER_IR") as store:
        result = await store.put("f/ir", stream(b"instant"), kind="file", size_hint=7)
        state = await store.request_retrieval(ref_for(result, "GLACIER_IR"), "Expedited")
        assert state.status == "ready"
        assert not any("restore" in path for _, path, _ in fault_proxy.log)
        assert (await store.retrieval_status(ref_for(result))).status == "ready"
        await store.get(ref_for(result), tmp_path / "ir")
        assert (tmp_path / "ir").read_bytes() == b"instant"


async def test_missing_archive_and_bucket(moto_server: str, s3_bucket: str, tmp_path: Path) -> None:
    missing = ArchiveRef("nope", 1, "0" * 64, "GLACIER")
    async with open_store(moto_server, s3_bucket) as store:
        with pytest.raises(ArchiveNotFoundError, match="nope"):
            await store.retrieval_status(missing)
        with pytest.raises(ArchiveNotFoundError):
            await store.request_retrieval(missing)
        with pytest.raises(ArchiveNotFoundError):
            await store.get(missing, tmp_path / "nope")
        assert not (tmp_path / "nope").exists()
        await store.delete(missing)  # already gone: fine
    async with open_store(moto_server, "no-such-bucket-here") as store:
        with pytest.raises(StoreError, match="no-such-bucket-here does not exist"):
            await store.put("k", stream(b"x"), kind="file")
        with pytest.raises(StoreError, match="no-such-bucket-here does not exist"):
            await store.retrieval_status(missing)
        with pytest.raises(StoreError, match="no-such-bucket-here does not exist"):
            await store.probe()


async def test_list_delete_and_probe(moto_server: str, s3_bucket: str) -> None:
    async with s3_client(moto_server) as client:
        await client.put_object(Bucket=s3_bucket, Key="elsewhere/x", Body=b"not ours")
    async with open_store(moto_server, s3_bucket) as store:
        for key, size in [("files/a", 3), ("files/b", 5), ("db/1", 7)]:
            await store.put(key, stream(payload(size)), kind="file", size_hint=size)
        listed = [(o.key, o.size) for o in await listing(store)]
        assert listed == [("db/1", 7), ("files/a", 3), ("files/b", 5)]
        assert [o.key for o in await listing(store, "files/")] == ["files/a", "files/b"]
        await store.delete(ArchiveRef("files/a"))
        await store.delete(ArchiveRef("files/a"))
        assert [o.key for o in await listing(store, "files/")] == ["files/b"]
        await store.probe()
        assert [o.key for o in await listing(store, ".glacierd")] == []


async def test_abort_incomplete(moto_server: str, s3_bucket: str) -> None:
    async with s3_client(moto_server) as client:
        for key in (PREFIX + "a", PREFIX + "b/c", "other/d"):
            await client.create_multipart_upload(Bucket=s3_bucket, Key=key)
    async with open_store(moto_server, s3_bucket) as store:
        assert await store.abort_incomplete() == 2
        assert await store.abort_incomplete() == 0
    left = await open_uploads(moto_server, s3_bucket)
    assert [u["Key"] for u in left] == ["other/d"]


async def test_credentials_errors(
    moto_server: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(StoreError, match="profile 'nobody'"):
        async with open_store(moto_server, s3_bucket, profile="nobody"):
            pass
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    async with open_store(moto_server, s3_bucket) as store:
        with pytest.raises(
            StoreError, match=f"no usable AWS credentials for S3 bucket {s3_bucket}"
        ):
            await store.put("k", stream(b"x"), kind="file")


# ------------------------------------------------------- RestoreObject answers (Stubber)


def _glacier_head(restore: str | None = None, storage_class: str = "GLACIER") -> dict[str, Any]:
    resp: dict[str, Any] = {"StorageClass": storage_class, "ContentLength": 10}
    if restore is not None:
        resp["Restore"] = restore
    return resp


async def test_restore_answers_with_stubber(moto_server: str, s3_bucket: str) -> None:
    archive = ArchiveRef("f/x", 10, "0" * 64, "GLACIER")
    key = PREFIX + "f/x"
    head_params = {"Bucket": s3_bucket, "Key": key}
    future = (datetime.now(UTC) + timedelta(days=7)).strftime("%a, %d %b %Y %H:%M:%S GMT")

    def restore_params(tier: str, days: int = 7) -> dict[str, Any]:
        return {
            "Bucket": s3_bucket,
            "Key": key,
            "RestoreRequest": {"Days": days, "GlacierJobParameters": {"Tier": tier}},
        }

    async with open_store(moto_server, s3_bucket, restore_days=7) as store:
        with AioStubber(store._client) as stub:
            # 202: a new restore started.
            stub.add_response("head_object", _glacier_head(), head_params)
            stub.add_response(
                "restore_object",
                {"ResponseMetadata": {"HTTPStatusCode": 202}},
                restore_params("Standard"),
            )
            before = datetime.now(UTC)
            state = await store.request_retrieval(archive)
            assert state.status == "pending" and state.expected_at is not None
            assert state.expected_at >= before + timedelta(hours=5)

            # 200: already restored; the state comes from HEAD.
            stub.add_response("head_object", _glacier_head(), head_params)
            stub.add_response(
                "restore_object",
                {"ResponseMetadata": {"HTTPStatusCode": 200}},
                restore_params("Bulk"),
            )
            stub.add_response(
                "head_object",
                _glacier_head(f'ongoing-request="false", expiry-date="{future}"'),
                head_params,
            )
            state = await store.request_retrieval(archive, "Bulk")
            assert state.status == "ready" and state.ready_until is not None

            # 409 RestoreAlreadyInProgress: pending, not an error.
            stub.add_response("head_object", _glacier_head(), head_params)
            stub.add_client_error(
                "restore_object",
                "RestoreAlreadyInProgress",
                "running",
                409,
                expected_params=restore_params("Expedited"),
            )
            assert (await store.request_retrieval(archive, "Expedited")).status == "pending"

            # A restore already running per HEAD: no RestoreObject at all.
            stub.add_response("head_object", _glacier_head('ongoing-request="true"'), head_params)
            state = await store.request_retrieval(archive, "Expedited")
            assert state.status == "pending" and state.expected_at is not None
            assert state.expected_at <= datetime.now(UTC) + timedelta(minutes=5)

            # 503 GlacierExpeditedRetrievalNotAvailable: an error suggesting Standard.
            stub.add_response("head_object", _glacier_head(), head_params)
            stub.add_client_error(
                "restore_object",
                "GlacierExpeditedRetrievalNotAvailable",
                "no capacity",
                503,
                expected_params=restore_params("Expedited"),
            )
            with pytest.raises(StoreError, match="Standard tier"):
                await store.request_retrieval(archive, "Expedited")

            # NoSuchKey between HEAD and RestoreObject.
            stub.add_response("head_object", _glacier_head(), head_params)
            stub.add_client_error("restore_object", "NoSuchKey", "gone", 404)
            with pytest.raises(ArchiveNotFoundError):
                await store.request_retrieval(archive)

            # DEEP_ARCHIVE has no Expedited tier: refused before RestoreObject …
            deep = _glacier_head(storage_class="DEEP_ARCHIVE")
            stub.add_response("head_object", deep, head_params)
            with pytest.raises(StoreError, match="no Expedited"):
                await store.request_retrieval(archive, "Expedited")
            stub.assert_no_pending_responses()

    # … but a configured default of Expedited falls back to Standard for DEEP_ARCHIVE.
    async with open_store(moto_server, s3_bucket, default_tier="Expedited") as store:
        with AioStubber(store._client) as stub:
            stub.add_response("head_object", deep, head_params)
            stub.add_response(
                "restore_object",
                {"ResponseMetadata": {"HTTPStatusCode": 202}},
                restore_params("Standard"),
            )
            state = await store.request_retrieval(archive)
            assert state.status == "pending" and state.expected_at is not None
            assert state.expected_at >= datetime.now(UTC) + timedelta(hours=11)
            stub.assert_no_pending_responses()


async def test_status_pending_and_expired_with_stubber(moto_server: str, s3_bucket: str) -> None:
    archive = ArchiveRef("f/y", 10, "0" * 64, "DEEP_ARCHIVE")
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    async with open_store(moto_server, s3_bucket) as store:
        with AioStubber(store._client) as stub:
            stub.add_response(
                "head_object", _glacier_head('ongoing-request="true"', "DEEP_ARCHIVE")
            )
            assert (await store.retrieval_status(archive)).status == "pending"
            stub.add_response(
                "head_object",
                _glacier_head(f'ongoing-request="false", expiry-date="{past}"', "DEEP_ARCHIVE"),
            )
            state = await store.retrieval_status(archive)
            assert state.status == "available" and state.reason == "the restored copy expired"


async def test_access_denied_is_one_sentence(moto_server: str, s3_bucket: str) -> None:
    async with open_store(moto_server, s3_bucket) as store:
        with AioStubber(store._client) as stub:
            stub.add_client_error("put_object", "AccessDenied", "Access Denied", 403)
            with pytest.raises(StoreError) as info:
                await store.put("k", stream(b"x"), kind="file")
            message = str(info.value)
            assert s3_bucket in message and "deploy/iam/s3-policy.json" in message
            assert message.count(". ") == 0 and message.endswith(".")


# ------------------------------------------------------------------ fault injection


async def _put_and_verify(
    store: S3Store, endpoint: str, bucket: str, tmp_path: Path, size: int
) -> None:
    data = payload(size, seed=7)
    result = await store.put("db/dump", stream(data), kind="database", size_hint=size)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    await store.get(ref_for(result), tmp_path / "dump")
    assert (tmp_path / "dump").read_bytes() == data
    assert await open_uploads(endpoint, bucket) == []


@pytest.mark.parametrize(
    ("action", "where"),
    [
        ("500", {"method": "PUT", "query_value": ("partNumber", "2")}),
        ("slowdown", {"method": "PUT", "query": "partNumber"}),
        ("slowdown", {"method": "POST", "query": "uploads"}),
        ("500", {"method": "POST", "query": "uploadId"}),  # CompleteMultipartUpload
        ("drop", {"method": "PUT", "query_value": ("partNumber", "1")}),
    ],
)
async def test_transient_faults_are_retried(
    moto_server: str,
    s3_bucket: str,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    action: str,
    where: dict[str, Any],
) -> None:
    fault_proxy.inject(action, **where)
    async with open_store(fault_proxy.url, s3_bucket) as store:
        await _put_and_verify(store, moto_server, s3_bucket, tmp_path, 2 * PART + 100)
    assert fault_proxy.injected(action) == 1


async def test_small_put_retried_after_slowdown(
    moto_server: str, s3_bucket: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    fault_proxy.inject("slowdown", method="PUT", times=2)
    async with open_store(fault_proxy.url, s3_bucket) as store:
        await _put_and_verify(store, moto_server, s3_bucket, tmp_path, 1000)
    assert fault_proxy.injected("slowdown") == 2


async def test_slow_response_times_out_and_is_retried(
    moto_server: str, s3_bucket: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    fault_proxy.inject("slow", method="PUT", query_value=("partNumber", "2"), delay=2.0)
    async with open_store(fault_proxy.url, s3_bucket, _read_timeout=1.0) as store:
        await _put_and_verify(store, moto_server, s3_bucket, tmp_path, 2 * PART + 100)
    parts_2 = fault_proxy.count(lambda m, p, _: m == "PUT" and "partNumber=2" in p)
    assert parts_2 == 2  # the slow one, then the retry


@pytest.mark.parametrize(
    ("action", "where"),
    [
        ("500", {"method": "PUT", "query_value": ("partNumber", "2")}),
        ("drop", {"method": "PUT", "query": "partNumber"}),
        ("slowdown", {"method": "POST", "query": "uploadId"}),  # CompleteMultipartUpload
    ],
)
async def test_persistent_faults_abort_the_upload(
    moto_server: str,
    s3_bucket: str,
    fault_proxy: FaultProxy,
    action: str,
    where: dict[str, Any],
) -> None:
    fault_proxy.inject(action, times=-1, **where)
    async with open_store(fault_proxy.url, s3_bucket, _max_attempts=2) as store:
        with pytest.raises(StoreError) as info:
            await store.put("db/dump", stream(payload(2 * PART + 1)), kind="database")
        assert "nothing was stored" in str(info.value) and s3_bucket in str(info.value)
        assert await listing(store) == []
    assert await open_uploads(moto_server, s3_bucket) == []
    assert fault_proxy.count(lambda m, p, _: m == "DELETE" and "uploadId" in p) == 1


async def test_failing_stream_aborts_the_upload(moto_server: str, s3_bucket: str) -> None:
    async def broken() -> AsyncIterator[bytes]:
        async for chunk in stream(payload(2 * PART)):
            yield chunk
        raise RuntimeError("pg_dump exited with status 1")

    async with open_store(moto_server, s3_bucket) as store:
        with pytest.raises(StoreError, match=r"data stream failed.*pg_dump exited") as info:
            await store.put("db/dump", broken(), kind="database")
        assert isinstance(info.value.__cause__, RuntimeError)
        assert await listing(store) == []
    assert await open_uploads(moto_server, s3_bucket) == []


async def test_cancellation_aborts_the_upload(moto_server: str, s3_bucket: str) -> None:
    reached = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        async for chunk in stream(payload(2 * PART)):
            yield chunk
        reached.set()
        await asyncio.Event().wait()  # the source hangs (pg_dump stuck on a lock)
        yield b""

    async with open_store(moto_server, s3_bucket) as store:
        task = asyncio.create_task(store.put("db/dump", stalls(), kind="database"))
        await asyncio.wait_for(reached.wait(), 10)
        await asyncio.sleep(0.2)  # let the two parts upload
        assert len(await open_uploads(moto_server, s3_bucket)) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await open_uploads(moto_server, s3_bucket) == []


async def test_interrupted_download_resumes(
    moto_server: str, s3_bucket: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    data = payload(3 * MiB + 17)
    async with open_store(fault_proxy.url, s3_bucket) as store:
        result = await store.put("f/big", stream(data), kind="file", size_hint=len(data))
        fault_proxy.inject("cut", method="GET", times=2)
        assert await store.get(ref_for(result), tmp_path / "big") == len(data)
        assert (tmp_path / "big").read_bytes() == data
        gets = [p for m, p, _ in fault_proxy.log if m == "GET"]
        assert len(gets) == 3 and fault_proxy.injected("cut") == 2

        fault_proxy.inject("cut", method="GET", times=-1)
        with pytest.raises(StoreError, match="broke off"):
            await store.get(ref_for(result), tmp_path / "again")
        assert not (tmp_path / "again").exists()


async def test_tampered_object_fails_verification(
    moto_server: str, s3_bucket: str, tmp_path: Path
) -> None:
    data = payload(PART + 10, seed=1)
    async with open_store(moto_server, s3_bucket) as store:
        result = await store.put("db/dump", stream(data), kind="database")
        tampered = bytearray(data)
        tampered[12345] ^= 0xFF
        async with s3_client(moto_server) as client:
            await client.put_object(Bucket=s3_bucket, Key=PREFIX + "db/dump", Body=bytes(tampered))
        dest = tmp_path / "restore" / "dump"
        with pytest.raises(VerificationError, match="failed verification"):
            await store.get(ref_for(result), dest)
        assert not dest.exists()
        assert list(dest.parent.iterdir()) == []  # no .partial left either
