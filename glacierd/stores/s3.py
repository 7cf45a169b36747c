"""S3 store: archives are objects in one bucket under one prefix, usually in a Glacier class.

The S3 Glacier storage classes are the Glacier a new AWS customer can use: GLACIER
(Flexible Retrieval) and DEEP_ARCHIVE need a ``RestoreObject`` before they can be read;
GLACIER_IR, STANDARD and STANDARD_IA are readable at once. S3-compatible stores without
archive classes (R2, B2, Wasabi) behave like the latter: retrieval is a no-op.

How the AWS quirks are handled (details next to the code):

- **Keys.** The object key is ``prefix + key``; the catalog keeps ``key`` without the prefix,
  so a bucket can be re-prefixed by changing one setting and copying the objects.
- **Uploads stream** as multipart uploads, part by part; memory is bounded by about
  ``part_concurrency + 2`` parts whatever the archive's size. S3 allows at most 10,000 parts
  of 5 MiB–5 GiB, so the part size comes from ``size_hint`` (with headroom), and parts grow
  when a stream turns out longer than announced or its size is unknown (``plan_parts``). An
  archive smaller than one part is a single ``PutObject``. Every part carries its SHA-256
  (``x-amz-checksum-sha256``), so S3 rejects a part damaged on the way.
- **Nothing half-done is left behind.** Any failure — the source stream raising, a part
  failing after botocore's retries, cancellation — aborts the multipart upload (shielded from
  a second cancellation). Parts of an unfinished upload are billed as STANDARD until aborted;
  ``abort_incomplete`` sweeps the ones a crash left, and a bucket lifecycle rule
  ``AbortIncompleteMultipartUpload`` is the safety net (deploy/AWS-SETUP.md).
- **Retrieval** is ``RestoreObject`` (``Days`` = ``restore_days``, ``Tier``): 202 started,
  200 already restored (the new ``Days`` resets the expiry), 409 already running, 503 no
  Expedited capacity. Progress is the ``x-amz-restore`` header of ``HeadObject``, parsed by
  ``parse_restore_header``; HEAD keeps reporting the archival class after the restore.
- **Downloads** stream ``GetObject``; an unrestored archive answers 403 ``InvalidObjectState``.
  A connection lost mid-download resumes with a ``Range`` request pinned to the ETag.
- **Errors** a person must fix (no bucket, access denied, no credentials, wrong region)
  become one-sentence ``StoreError`` messages naming the bucket and the fix.

One aiobotocore client per store is created in ``open()`` and reused; credentials come from
the SDK's standard chain (``store.s3.profile`` picks a shared-file profile).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aioboto3
import aiohttp
import structlog
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
)

from glacierd.config import S3StoreConfig
from glacierd.pipeline.hashing import Digest, rechunk
from glacierd.stores.base import (
    ArchiveNotFoundError,
    ArchiveRef,
    ListedObject,
    NotRetrievedError,
    RetrievalState,
    Store,
    StoreError,
)

log = structlog.get_logger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
#: S3's bounds for a multipart upload: every part but the last is 5 MiB–5 GiB; 10,000 parts.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
#: Smallest part glacierd uses: fewer PUTs (billed per 1,000) than the SDK's 5 MiB default.
DEFAULT_PART_SIZE = 8 * MiB
#: With a size hint, aim for at most this many parts: 10 % headroom if the hint is low.
TARGET_PARTS = 9_000
#: After the planned parts, parts double every this many parts (hint too low).
OVERRUN_GROW_EVERY = 100
#: Without a size hint, parts double every this many parts: 8 MiB parts hold the first
#: 8 GiB, 16 MiB the next 16 GiB, …; 10,000 parts reach about 8 TiB.
UNKNOWN_GROW_EVERY = 1_000

#: Classes that need a RestoreObject before GetObject works. Everything else (GLACIER_IR,
#: STANDARD, STANDARD_IA, and the lone class of S3-compatible stores) is readable at once.
ARCHIVAL_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
TIERS = ("Expedited", "Standard", "Bulk")

#: How long a restore typically takes (AWS's published upper bounds), for ``expected_at``.
#: DEEP_ARCHIVE has no Expedited tier. Polling and SNS events decide when it is really ready;
#: this only tells the operator when to expect it.
TYPICAL_RETRIEVAL_TIME: dict[tuple[str, str], timedelta] = {
    ("GLACIER", "Expedited"): timedelta(minutes=5),  # 1–5 minutes
    ("GLACIER", "Standard"): timedelta(hours=5),  # 3–5 hours
    ("GLACIER", "Bulk"): timedelta(hours=12),  # 5–12 hours
    ("DEEP_ARCHIVE", "Standard"): timedelta(hours=12),  # within 12 hours
    ("DEEP_ARCHIVE", "Bulk"): timedelta(hours=48),  # within 48 hours
}

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED_CODES = frozenset({"AccessDenied", "403", "AllAccessDisabled", "AccountProblem"})
_BAD_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
    }
)
_WRONG_REGION_CODES = frozenset(
    {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
)
_CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)
#: A download interrupted by these resumes with a Range request.
_STREAM_ERRORS = (
    ResponseStreamingError,
    IncompleteReadError,
    ReadTimeoutError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
)
_DOWNLOAD_CHUNK = 1 * MiB
_DOWNLOAD_RESUMES = 3
#: Parts larger than this are hashed in a thread so the event loop stays responsive.
_HASH_IN_THREAD = 256 * 1024


# --------------------------------------------------------------------------- part sizing


@dataclass(frozen=True)
class PartPlan:
    """How a stream is cut into parts: ``base``-sized pieces, grouped into growing parts.

    Part *n* (1-based) is ``pieces(n)`` pieces of ``base`` bytes. S3 lets parts differ in
    size (only the vault API wants them equal), so when a stream runs past ``steady_parts``
    the parts double every ``grow_every`` parts and the 10,000-part limit is not reached.
    """

    base: int
    steady_parts: int
    grow_every: int

    def pieces(self, part_number: int) -> int:
        if part_number <= self.steady_parts:
            return 1
        doublings = min((part_number - 1 - self.steady_parts) // self.grow_every + 1, 40)
        return max(1, min(2**doublings, MAX_PART_SIZE // self.base))

    def size_of(self, part_number: int) -> int:
        return self.base * self.pieces(part_number)

    def capacity(self) -> int:
        """The largest stream this plan can upload within MAX_PARTS parts."""
        return sum(self.size_of(n) for n in range(1, MAX_PARTS + 1))


def plan_parts(size_hint: int | None, min_part_size: int = DEFAULT_PART_SIZE) -> PartPlan:
    """Choose part sizes so the part limit is never hit and PUTs stay few.

    With a hint: parts of ``max(min_part_size, hint / 9000 rounded up to a MiB)`` (at most
    5 GiB), so a correct hint needs at most 9,000 parts; if the stream turns out longer,
    parts double every 100 parts after that. Without a hint (a database dump): start at
    ``min_part_size`` and double every 1,000 parts, so small dumps use small parts (little
    memory) and a dump of several TiB still fits.
    """
    min_part_size = max(MIN_PART_SIZE, min(min_part_size, MAX_PART_SIZE))
    if size_hint is None:
        return PartPlan(min_part_size, UNKNOWN_GROW_EVERY, UNKNOWN_GROW_EVERY)
    per_part = -(-max(size_hint, 0) // TARGET_PARTS)  # ceiling division
    per_part = -(-per_part // MiB) * MiB  # whole MiB
    if per_part > MAX_PART_SIZE:
        # Beyond 9,000 × 5 GiB (~44 TiB) only all 10,000 parts of 5 GiB will do.
        return PartPlan(MAX_PART_SIZE, MAX_PARTS, OVERRUN_GROW_EVERY)
    return PartPlan(max(min_part_size, per_part), TARGET_PARTS, OVERRUN_GROW_EVERY)


# ------------------------------------------------------------------ x-amz-restore header


@dataclass(frozen=True)
class RestoreHeader:
    """The parsed ``x-amz-restore`` header (``head_object(...)["Restore"]``)."""

    ongoing: bool
    expiry: datetime | None = None


def parse_restore_header(value: str | None) -> RestoreHeader | None:
    """Parse ``ongoing-request="true"`` or ``ongoing-request="false", expiry-date="<RFC 1123>"``.

    Returns None when there is no header (no restore was ever requested, or the copy
    expired long ago). An unparsable expiry date counts as "no expiry known".
    """
    if value is None or not value.strip():
        return None
    fields = dict(re.findall(r'([A-Za-z-]+)\s*=\s*"([^"]*)"', value))
    ongoing = fields.get("ongoing-request", "").strip().lower() == "true"
    expiry: datetime | None = None
    raw_expiry = fields.get("expiry-date")
    if raw_expiry:
        try:
            expiry = parsedate_to_datetime(raw_expiry)
        except (TypeError, ValueError):
            expiry = None
        if expiry is not None and expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=UTC)  # "-0000" parses naive; S3 means GMT
    return RestoreHeader(ongoing=ongoing, expiry=expiry)


def retrieval_state(
    storage_class: str | None, restore: str | None, now: datetime | None = None
) -> RetrievalState:
    """Map HeadObject's ``StorageClass`` and ``Restore`` to a retrieval state.

    HEAD omits the storage class for STANDARD objects, so None means readable.
    """
    if (storage_class or "STANDARD") not in ARCHIVAL_CLASSES:
        return RetrievalState("ready")
    header = parse_restore_header(restore)
    if header is None:
        return RetrievalState("available")
    if header.ongoing:
        # HEAD does not say when the restore started; request_retrieval gave the estimate.
        return RetrievalState("pending")
    now = now or datetime.now(UTC)
    if header.expiry is not None and header.expiry <= now:
        return RetrievalState("available", reason="the restored copy expired")
    return RetrievalState("ready", ready_until=header.expiry)


# ------------------------------------------------------------------------------ helpers


class _StreamFailed(Exception):
    """The archive's source stream raised (not S3): wraps it to tell the two apart."""


async def _sha256_b64(body: bytes) -> str:
    """Base64 SHA-256 for ``ChecksumSHA256`` (hashlib releases the GIL on big buffers)."""
    if len(body) > _HASH_IN_THREAD:
        raw = await asyncio.to_thread(lambda: hashlib.sha256(body).digest())
    else:
        raw = hashlib.sha256(body).digest()
    return base64.b64encode(raw).decode("ascii")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")).rstrip(".")


# -------------------------------------------------------------------------------- store


class S3Store(Store):
    """Archives as objects in ``cfg.bucket`` under ``cfg.prefix``."""

    type = "s3"

    # Tunables kept private (tests shrink them; operators have no reason to).
    _part_size: int = DEFAULT_PART_SIZE
    _max_attempts: int = 5
    _connect_timeout: float = 10.0
    _read_timeout: float = 60.0

    def __init__(self, name: str, cfg: S3StoreConfig) -> None:
        super().__init__(name)
        self.cfg = cfg
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._active_uploads: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------- keys and client

    @property
    def bucket(self) -> str:
        return self.cfg.bucket

    def s3_key(self, key: str) -> str:
        """The object key in the bucket for a catalog key."""
        return self.cfg.prefix + key

    def catalog_key(self, s3_key: str) -> str | None:
        """The catalog key for an object key (as in S3 events), or None if outside the prefix."""
        if not s3_key.startswith(self.cfg.prefix):
            return None
        return s3_key[len(self.cfg.prefix) :]

    @property
    def default_tier(self) -> str:
        return self.cfg.default_tier

    def retrieval_estimates(self, storage_class: str | None) -> dict[str, float]:
        cls = storage_class or self.cfg.storage_class
        if cls not in ("GLACIER", "DEEP_ARCHIVE"):
            return super().retrieval_estimates(cls)  # readable at once
        return {
            tier: TYPICAL_RETRIEVAL_TIME[(cls, tier)].total_seconds()
            for tier in ("Expedited", "Standard", "Bulk")
            if (cls, tier) in TYPICAL_RETRIEVAL_TIME
        }

    async def open(self) -> None:
        if self._client is not None:
            return
        cfg = self.cfg
        options: dict[str, Any] = {
            # "standard" retries throttling (503 SlowDown), 5xx and dropped connections with
            # jittered exponential backoff; bodies are bytes, so a retry resends them.
            "retries": {"mode": "standard", "max_attempts": self._max_attempts},
            # One pooled connection per concurrent part, plus a few for HEAD/GET meanwhile.
            "max_pool_connections": max(10, cfg.part_concurrency + 4),
            "connect_timeout": self._connect_timeout,
            "read_timeout": self._read_timeout,
        }
        if cfg.endpoint_url:
            # S3-compatible stores and test servers: no virtual-host DNS, and recent SDKs'
            # default CRC checksums are rejected by some (R2, B2, some MinIO versions).
            # Our explicit SHA-256 checksums are still sent.
            options["s3"] = {"addressing_style": "path"}
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
        stack = AsyncExitStack()
        try:
            session = aioboto3.Session(profile_name=cfg.profile, region_name=cfg.region)
            self._client = await stack.enter_async_context(
                session.client("s3", endpoint_url=cfg.endpoint_url, config=AioConfig(**options))
            )
        except ProfileNotFound:
            await stack.aclose()
            raise StoreError(
                f"AWS profile {cfg.profile!r} (store.s3.profile) is not defined in "
                "~/.aws/credentials or ~/.aws/config; add it there or correct the setting."
            ) from None
        except BotoCoreError as exc:  # e.g. a credential_process or SSO login that fails
            await stack.aclose()
            raise self._error(exc, "the opening of the S3 client") from exc
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack

    async def close(self) -> None:
        # Let aborts started during a cancellation finish before the client goes away.
        if self._background:
            await asyncio.wait(set(self._background), timeout=30)
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def _require_client(self) -> Any:
        if self._client is None:
            raise StoreError(f"S3 store {self.name!r} is not open; call open() first.")
        return self._client

    # ------------------------------------------------------------------------ errors

    def _error(self, exc: BaseException, doing: str, *, aborted: bool = False) -> StoreError:
        """One sentence for an operator: what failed, on which bucket, and the fix.

        ``doing`` is a noun phrase ("the upload of archive X"); ``aborted`` adds that an
        upload was rolled back.
        """
        bucket = self.cfg.bucket
        rolled_back = ", so the upload was aborted and nothing was stored" if aborted else ""
        if isinstance(exc, _CREDENTIAL_ERRORS):
            return StoreError(
                f"no usable AWS credentials for S3 bucket {bucket} during {doing} "
                f"({exc}){rolled_back}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, name "
                "a profile from ~/.aws/credentials in store.s3.profile, or attach an IAM role."
            )
        if isinstance(exc, EndpointConnectionError):
            where = self.cfg.endpoint_url or "the AWS S3 endpoint"
            return StoreError(
                f"the connection to {where} failed or broke off during {doing} in S3 bucket "
                f"{bucket}{rolled_back}; "
                "check the network, proxy settings, store.s3.region and store.s3.endpoint_url."
            )
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code == "NoSuchBucket":
                return StoreError(
                    f"S3 bucket {bucket} does not exist (found during {doing}){rolled_back}; "
                    "create it or correct store.s3.bucket."
                )
            if code in _DENIED_CODES:
                return StoreError(
                    f"S3 denied access to bucket {bucket} during {doing}{rolled_back}; grant "
                    "these credentials the policy in deploy/iam/s3-policy.json or pick another "
                    "profile with store.s3.profile."
                )
            if code in _BAD_CREDENTIAL_CODES:
                return StoreError(
                    f"S3 rejected the AWS credentials for bucket {bucket} ({code}) during "
                    f"{doing}{rolled_back}; check the access key and secret, or refresh the "
                    "session token."
                )
            if code in _WRONG_REGION_CODES:
                return StoreError(
                    f"S3 bucket {bucket} is not in the configured region "
                    f"({self.cfg.region or 'the SDK default'}) and answered {code} during "
                    f"{doing}{rolled_back}; set store.s3.region to the bucket's region."
                )
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = _message(exc).replace(". ", "; ") or "no message"
            return StoreError(
                f"{doing} in S3 bucket {bucket} failed with {code or status} ({detail})"
                f"{rolled_back}; retry later, and if it persists check the bucket's settings."
            )
        return StoreError(
            f"{doing} in S3 bucket {bucket} failed ({str(exc).rstrip('.')}){rolled_back}; "
            "retry later, and if it persists check the network and store.s3.endpoint_url."
        )

    # ------------------------------------------------------------------------ upload

    async def _upload(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        kind: str,
        size_hint: int | None,
        digest: Digest,
    ) -> tuple[str, str | None]:
        client = self._require_client()
        # The probe must not cost a 90-day minimum charge: it is STANDARD whatever the config.
        storage_class = "STANDARD" if kind == "probe" else self.cfg.class_for(kind)
        plan = plan_parts(size_hint, self._part_size)
        parts = self._parts(rechunk(chunks, plan.base), plan)
        try:
            try:
                first = await self._next_part(parts)
                if first is None or len(first[1]) < plan.size_of(1):
                    # Smaller than one part (or empty): a single PutObject.
                    await self._put_single(client, key, first[1] if first else b"", storage_class)
                else:
                    await self._put_multipart(client, key, first, parts, plan, storage_class)
            finally:
                await parts.aclose()
        except StoreError:
            raise
        except _StreamFailed as exc:
            cause = exc.__cause__
            raise StoreError(
                f"upload of archive {key} to S3 bucket {self.cfg.bucket} stopped because its "
                f"data stream failed ({cause!r}); nothing was stored."
            ) from cause
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"the upload of archive {key}", aborted=True) from exc
        return key, storage_class

    async def _parts(
        self, pieces: AsyncIterator[bytes], plan: PartPlan
    ) -> AsyncIterator[tuple[int, bytes]]:
        """Group ``base``-sized pieces into numbered parts of ``plan.pieces(n)`` pieces."""
        number = 1
        group: list[bytes] = []
        async for piece in pieces:
            group.append(piece)
            if len(group) == plan.pieces(number):
                body = group[0] if len(group) == 1 else b"".join(group)
                group = []
                yield number, body
                number += 1
        if group:
            yield number, b"".join(group)

    @staticmethod
    async def _next_part(parts: AsyncIterator[tuple[int, bytes]]) -> tuple[int, bytes] | None:
        """The next part, or None at the end; a failing source becomes _StreamFailed."""
        try:
            return await anext(parts)
        except StopAsyncIteration:
            return None
        except Exception as exc:
            raise _StreamFailed() from exc

    async def _put_single(self, client: Any, key: str, body: bytes, storage_class: str) -> None:
        await client.put_object(
            Bucket=self.cfg.bucket,
            Key=self.s3_key(key),
            Body=body,
            StorageClass=storage_class,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=await _sha256_b64(body),
        )

    async def _put_multipart(
        self,
        client: Any,
        key: str,
        first: tuple[int, bytes],
        parts: AsyncIterator[tuple[int, bytes]],
        plan: PartPlan,
        storage_class: str,
    ) -> None:
        s3_key = self.s3_key(key)
        created = await client.create_multipart_upload(
            Bucket=self.cfg.bucket,
            Key=s3_key,
            StorageClass=storage_class,
            ChecksumAlgorithm="SHA256",
        )
        upload_id: str = created["UploadId"]
        self._active_uploads.add(upload_id)
        try:
            done = await self._upload_parts(client, s3_key, upload_id, first, parts, plan)
            done.sort(key=lambda p: p["PartNumber"])
            # CompleteMultipartUpload can answer 200 with an error in the body; botocore
            # turns that into a (retried) error, so reaching the next line means success.
            await client.complete_multipart_upload(
                Bucket=self.cfg.bucket,
                Key=s3_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
            )
        except BaseException:
            await self._abort_shielded(s3_key, upload_id)
            raise
        finally:
            self._active_uploads.discard(upload_id)

    async def _upload_parts(
        self,
        client: Any,
        s3_key: str,
        upload_id: str,
        first: tuple[int, bytes],
        parts: AsyncIterator[tuple[int, bytes]],
        plan: PartPlan,
    ) -> list[dict[str, Any]]:
        """Upload parts, at most ``part_concurrency`` (and that many base parts' bytes) at once.

        The producer (this coroutine) reads the next part only when there is room, so the
        source is back-pressured and memory stays near ``(part_concurrency + 2) × part size``.
        The first failed part stops everything; the caller aborts the upload.
        """
        concurrency = max(1, self.cfg.part_concurrency)
        budget = concurrency * plan.base
        running: dict[asyncio.Task[dict[str, Any]], int] = {}
        finished: list[dict[str, Any]] = []

        def reap(done: set[asyncio.Task[dict[str, Any]]]) -> None:
            for task in done:
                running.pop(task, None)
                finished.append(task.result())  # re-raises the part's error

        try:
            part: tuple[int, bytes] | None = first
            while part is not None:
                number, body = part
                reap({t for t in running if t.done()})
                while running and (
                    len(running) >= concurrency or sum(running.values()) + len(body) > budget
                ):
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    reap(done)
                task = asyncio.create_task(
                    self._upload_part(client, s3_key, upload_id, number, body)
                )
                running[task] = len(body)
                del body, part
                part = await self._next_part(parts)
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                reap(done)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        return finished

    async def _upload_part(
        self, client: Any, s3_key: str, upload_id: str, number: int, body: bytes
    ) -> dict[str, Any]:
        checksum = await _sha256_b64(body)
        resp = await client.upload_part(
            Bucket=self.cfg.bucket,
            Key=s3_key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
        )
        return {
            "PartNumber": number,
            "ETag": resp["ETag"],
            "ChecksumSHA256": resp.get("ChecksumSHA256") or checksum,
        }

    async def _abort_shielded(self, s3_key: str, upload_id: str) -> None:
        """Abort an upload even if the caller is being cancelled.

        The abort runs in its own task; a second cancellation stops the wait, not the abort
        (``close()`` waits for such stragglers before closing the client).
        """
        task = asyncio.create_task(self._abort_quietly(s3_key, upload_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        await asyncio.shield(task)

    async def _abort_quietly(self, s3_key: str, upload_id: str) -> None:
        try:
            await self._require_client().abort_multipart_upload(
                Bucket=self.cfg.bucket, Key=s3_key, UploadId=upload_id
            )
        except (ClientError, BotoCoreError, StoreError) as exc:
            if isinstance(exc, ClientError) and _code(exc) == "NoSuchUpload":
                return  # already gone
            log.warning(
                "s3.abort_failed",
                bucket=self.cfg.bucket,
                key=s3_key,
                upload_id=upload_id,
                error=str(exc),
                hint="the bucket's AbortIncompleteMultipartUpload rule will remove it",
            )

    async def abort_incomplete(self) -> int:
        """Abort multipart uploads under the prefix, except the ones this store is running.

        Another process uploading under the same prefix at this moment would lose its upload:
        one daemon per bucket prefix.
        """
        client = self._require_client()
        aborted = 0
        try:
            paginator = client.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=self.cfg.bucket, Prefix=self.cfg.prefix):
                for upload in page.get("Uploads", []):
                    if upload["UploadId"] in self._active_uploads:
                        continue
                    try:
                        await client.abort_multipart_upload(
                            Bucket=self.cfg.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    except ClientError as exc:
                        if _code(exc) == "NoSuchUpload":  # finished or aborted meanwhile
                            continue
                        raise
                    aborted += 1
                    log.info(
                        "s3.upload_aborted", key=upload["Key"], initiated=upload.get("Initiated")
                    )
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "the abort of unfinished multipart uploads") from exc
        return aborted

    # ------------------------------------------------------------------------ download

    async def _download(self, archive: ArchiveRef) -> AsyncIterator[bytes]:
        client = self._require_client()
        s3_key = self.s3_key(archive.key)
        received = 0
        etag: str | None = None
        interruptions = 0
        while True:
            request: dict[str, Any] = {"Bucket": self.cfg.bucket, "Key": s3_key}
            if received:
                # Resume where the connection broke; IfMatch makes sure it is the same object.
                request["Range"] = f"bytes={received}-"
                if etag:
                    request["IfMatch"] = etag
            try:
                resp = await client.get_object(**request)
            except ClientError as exc:
                raise self._get_error(exc, archive, "the download") from exc
            except BotoCoreError as exc:
                raise self._error(exc, f"the download of archive {archive.key}") from exc
            etag = etag or resp.get("ETag")
            body = resp["Body"]
            try:
                async for chunk in body.iter_chunks(_DOWNLOAD_CHUNK):
                    received += len(chunk)
                    yield chunk
                return
            except _STREAM_ERRORS as exc:
                interruptions += 1
                if interruptions > _DOWNLOAD_RESUMES:
                    raise StoreError(
                        f"download of archive {archive.key} from S3 bucket {self.cfg.bucket} "
                        f"broke off {interruptions} times ({exc}); retry the fetch later."
                    ) from exc
                log.warning("s3.download_resumed", key=s3_key, received=received, error=repr(exc))
            finally:
                body.close()

    def _get_error(self, exc: ClientError, archive: ArchiveRef, doing: str) -> StoreError:
        """Errors about one archive: not restored, missing, changed; else ``_error``."""
        code = _code(exc)
        if code == "InvalidObjectState":
            return NotRetrievedError(
                f"archive {archive.key} in S3 bucket {self.cfg.bucket} is in an archival "
                "storage class and has no restored copy; request a retrieval and wait until "
                "it is ready."
            )
        if code in _NOT_FOUND_CODES:
            return ArchiveNotFoundError(
                f"archive {archive.key} is not in S3 bucket {self.cfg.bucket} under prefix "
                f"{self.cfg.prefix!r}; it was deleted, or store.s3.prefix changed."
            )
        if code in ("PreconditionFailed", "412"):
            return StoreError(
                f"archive {archive.key} in S3 bucket {self.cfg.bucket} changed during the "
                "download; retry the fetch."
            )
        return self._error(exc, f"{doing} of archive {archive.key}")

    # ------------------------------------------------------------------------ retrieval

    async def _head(self, archive: ArchiveRef) -> dict[str, Any]:
        client = self._require_client()
        try:
            return await client.head_object(Bucket=self.cfg.bucket, Key=self.s3_key(archive.key))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND_CODES:
                # HEAD has no body, so a missing bucket also reads as a bare 404: tell apart.
                await self._check_bucket()
            raise self._get_error(exc, archive, "the status check") from exc
        except BotoCoreError as exc:
            raise self._error(exc, f"the status check of archive {archive.key}") from exc

    async def _check_bucket(self) -> None:
        client = self._require_client()
        try:
            await client.head_bucket(Bucket=self.cfg.bucket)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise StoreError(
                    f"S3 bucket {self.cfg.bucket} does not exist; create it or correct "
                    "store.s3.bucket."
                ) from exc
            raise self._error(exc, "the bucket check") from exc
        except BotoCoreError as exc:
            raise self._error(exc, "the bucket check") from exc

    def _choose_tier(self, storage_class: str, archive: ArchiveRef, tier: str | None) -> str:
        chosen = tier or self.cfg.default_tier
        if chosen not in TIERS:
            raise StoreError(
                f"retrieval tier {chosen!r} is not an S3 tier; use one of: {', '.join(TIERS)}."
            )
        if storage_class == "DEEP_ARCHIVE" and chosen == "Expedited":
            if tier is None:
                # The configured default is meant for GLACIER objects; DEEP_ARCHIVE has no
                # Expedited tier, so its fastest (Standard) is the closest to what was asked.
                return "Standard"
            raise StoreError(
                f"archive {archive.key} is in DEEP_ARCHIVE, which has no Expedited retrieval "
                "tier; request the Standard (within 12 h) or Bulk (within 48 h) tier."
            )
        return chosen

    async def request_retrieval(
        self, archive: ArchiveRef, tier: str | None = None
    ) -> RetrievalState:
        # HEAD first: the catalog's class may be stale (a lifecycle rule may have moved the
        # object), and a restore already running needs no second request.
        head = await self._head(archive)
        storage_class = head.get("StorageClass") or "STANDARD"
        if storage_class not in ARCHIVAL_CLASSES:
            return RetrievalState("ready")  # GLACIER_IR, STANDARD…: a plain GET works
        current = retrieval_state(storage_class, head.get("Restore"))
        chosen = self._choose_tier(storage_class, archive, tier)
        expected = datetime.now(UTC) + TYPICAL_RETRIEVAL_TIME[(storage_class, chosen)]
        if current.status == "pending":
            return RetrievalState("pending", expected_at=expected)
        client = self._require_client()
        try:
            resp = await client.restore_object(
                Bucket=self.cfg.bucket,
                Key=self.s3_key(archive.key),
                RestoreRequest={
                    "Days": self.cfg.restore_days,
                    "GlacierJobParameters": {"Tier": chosen},
                },
            )
        except ClientError as exc:
            code = _code(exc)
            if code == "RestoreAlreadyInProgress":  # 409: one restore per object at a time
                return RetrievalState("pending", expected_at=expected)
            if code == "GlacierExpeditedRetrievalNotAvailable":  # 503: no Expedited capacity
                raise StoreError(
                    f"S3 has no Expedited retrieval capacity for archive {archive.key} right "
                    "now; request the Standard tier instead (or buy provisioned capacity)."
                ) from exc
            if code == "InvalidObjectState":
                # "not in an archival class" after all (moved meanwhile): readable as it is.
                return await self.retrieval_status(archive)
            if code in ("NotImplemented", "501"):
                # S3-compatible stores without archive classes: objects are always readable.
                return RetrievalState("ready")
            raise self._get_error(exc, archive, "the retrieval request") from exc
        except BotoCoreError as exc:
            raise self._error(exc, f"the retrieval request of archive {archive.key}") from exc
        status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 200:
            # Already restored: the new Days reset the expiry; report what HEAD now says.
            return await self.retrieval_status(archive)
        log.info(
            "s3.restore_requested",
            key=archive.key,
            storage_class=storage_class,
            tier=chosen,
            expected_at=expected.isoformat(),
        )
        return RetrievalState("pending", expected_at=expected)  # 202: restore started

    async def retrieval_status(self, archive: ArchiveRef) -> RetrievalState:
        head = await self._head(archive)
        return retrieval_state(head.get("StorageClass"), head.get("Restore"))

    # ------------------------------------------------------------------------ the rest

    async def delete(self, archive: ArchiveRef) -> None:
        client = self._require_client()
        try:
            # DeleteObject answers 204 whether or not the key existed (unversioned bucket).
            await client.delete_object(Bucket=self.cfg.bucket, Key=self.s3_key(archive.key))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND_CODES:
                return
            raise self._error(exc, f"the deletion of archive {archive.key}") from exc
        except BotoCoreError as exc:
            raise self._error(exc, f"the deletion of archive {archive.key}") from exc

    async def list(self, prefix: str = "") -> AsyncIterator[ListedObject]:
        client = self._require_client()
        strip = len(self.cfg.prefix)
        try:
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(
                Bucket=self.cfg.bucket, Prefix=self.cfg.prefix + prefix
            ):
                for obj in page.get("Contents", []):
                    yield ListedObject(obj["Key"][strip:], int(obj["Size"]))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "the listing of archives") from exc

    async def probe(self) -> None:
        """Check the bucket, write a small STANDARD object, read it back, delete it."""
        await self._check_bucket()
        data = b"glacierd probe\n"

        async def one() -> AsyncIterator[bytes]:
            yield data

        result = await self.put(".glacierd-probe", one(), kind="probe", size_hint=len(data))
        ref = ArchiveRef(result.key, result.size, result.sha256, "STANDARD")
        try:
            back = bytearray()
            async for chunk in self._download(ref):
                back += chunk
            if bytes(back) != data:
                raise StoreError(
                    f"S3 bucket {self.cfg.bucket} returned different bytes than were written "
                    "to the probe object; check store.s3.endpoint_url and any proxy in between."
                )
        finally:
            with contextlib.suppress(StoreError):
                await self.delete(ref)


__all__ = [
    "ARCHIVAL_CLASSES",
    "TYPICAL_RETRIEVAL_TIME",
    "PartPlan",
    "RestoreHeader",
    "S3Store",
    "parse_restore_header",
    "plan_parts",
    "retrieval_state",
]
