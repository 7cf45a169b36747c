"""Streaming an archive into S3: one ``PutObject`` when it is smaller than a part, else a
multipart upload, part by part, with bounded memory and nothing left behind on failure.

- Memory is bounded by about ``part_concurrency + 2`` parts whatever the archive's size:
  the next part is read only when there is room for it (back-pressure on the source).
- Every part carries its SHA-256 (``x-amz-checksum-sha256``), so S3 rejects a part damaged
  on the way.
- Any failure — the source stream raising, a part failing after botocore's retries,
  cancellation — aborts the multipart upload, shielded from a second cancellation. Parts of
  an unfinished upload are billed as STANDARD until aborted; the store's
  ``abort_incomplete`` sweeps the ones a crash left, and a bucket lifecycle rule
  ``AbortIncompleteMultipartUpload`` is the safety net (deploy/AWS-SETUP.md).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from glacierd.pipeline.hashing import rechunk
from glacierd.stores.aws import ShieldedAborts, error_code
from glacierd.stores.s3.parts import PartPlan

log = structlog.get_logger("glacierd.stores.s3")

#: Parts larger than this are hashed in a thread so the event loop stays responsive.
_HASH_IN_THREAD = 256 * 1024


class StreamFailed(Exception):
    """The archive's source stream raised (not S3): wraps it to tell the two apart."""


async def sha256_b64(body: bytes) -> str:
    """Base64 SHA-256 for ``ChecksumSHA256`` (hashlib releases the GIL on big buffers)."""
    if len(body) > _HASH_IN_THREAD:
        raw = await asyncio.to_thread(lambda: hashlib.sha256(body).digest())
    else:
        raw = hashlib.sha256(body).digest()
    return base64.b64encode(raw).decode("ascii")


async def numbered_parts(
    pieces: AsyncIterator[bytes], plan: PartPlan
) -> AsyncGenerator[tuple[int, bytes], None]:
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


async def next_part(parts: AsyncIterator[tuple[int, bytes]]) -> tuple[int, bytes] | None:
    """The next part, or None at the end; a failing source becomes StreamFailed."""
    try:
        return await anext(parts)
    except StopAsyncIteration:
        return None
    except Exception as exc:
        raise StreamFailed() from exc


class S3Uploader:
    """Uploads archives into one bucket; knows which multipart uploads it is running."""

    def __init__(self, bucket: str, part_concurrency: int) -> None:
        self.bucket = bucket
        self.part_concurrency = max(1, part_concurrency)
        #: Upload ids running now: a sweep of unfinished uploads must spare them.
        self.active: set[str] = set()
        self.aborts = ShieldedAborts()

    async def upload(
        self,
        client: Any,
        s3_key: str,
        chunks: AsyncIterator[bytes],
        plan: PartPlan,
        storage_class: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Upload the stream; StreamFailed if the source raised, botocore's errors else.
        ``extra``: more PutObject / CreateMultipartUpload parameters (Object Lock, SSE-KMS)."""
        extra = extra or {}
        parts = numbered_parts(rechunk(chunks, plan.base), plan)
        try:
            first = await next_part(parts)
            if first is None or len(first[1]) < plan.size_of(1):
                # Smaller than one part (or empty): a single PutObject.
                body = first[1] if first else b""
                await client.put_object(
                    Bucket=self.bucket,
                    Key=s3_key,
                    Body=body,
                    StorageClass=storage_class,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=await sha256_b64(body),
                    **extra,
                )
            else:
                await self._multipart(client, s3_key, first, parts, plan, storage_class, extra)
        finally:
            await parts.aclose()

    async def _multipart(
        self,
        client: Any,
        s3_key: str,
        first: tuple[int, bytes],
        parts: AsyncIterator[tuple[int, bytes]],
        plan: PartPlan,
        storage_class: str,
        extra: dict[str, Any],
    ) -> None:
        created = await client.create_multipart_upload(
            Bucket=self.bucket,
            Key=s3_key,
            StorageClass=storage_class,
            ChecksumAlgorithm="SHA256",
            **extra,
        )
        upload_id: str = created["UploadId"]
        self.active.add(upload_id)
        try:
            done = await self._upload_parts(client, s3_key, upload_id, first, parts, plan)
            done.sort(key=lambda p: p["PartNumber"])
            # CompleteMultipartUpload can answer 200 with an error in the body; botocore
            # turns that into a (retried) error, so reaching the next line means success.
            await client.complete_multipart_upload(
                Bucket=self.bucket, Key=s3_key, UploadId=upload_id, MultipartUpload={"Parts": done}
            )
        except BaseException:
            await self.aborts.run(self.abort_quietly(client, s3_key, upload_id))
            raise
        finally:
            self.active.discard(upload_id)

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
        concurrency = self.part_concurrency
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
                    self.upload_part(client, s3_key, upload_id, number, body)
                )
                running[task] = len(body)
                del body, part
                part = await next_part(parts)
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                reap(done)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        return finished

    async def upload_part(
        self, client: Any, s3_key: str, upload_id: str, number: int, body: bytes
    ) -> dict[str, Any]:
        checksum = await sha256_b64(body)
        resp = await client.upload_part(
            Bucket=self.bucket,
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

    async def abort_incomplete(self, client: Any, prefix: str) -> int:
        """Abort multipart uploads under ``prefix``, except the ones running here; returns
        how many were aborted.

        Another process uploading under the same prefix at this moment would lose its upload:
        one daemon per bucket prefix.
        """
        aborted = 0
        paginator = client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                if upload["UploadId"] in self.active:
                    continue
                try:
                    await client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                except ClientError as exc:
                    if error_code(exc) == "NoSuchUpload":  # finished or aborted meanwhile
                        continue
                    raise
                aborted += 1
                log.info("s3.upload_aborted", key=upload["Key"], initiated=upload.get("Initiated"))
        return aborted

    async def abort_quietly(self, client: Any, s3_key: str, upload_id: str) -> None:
        try:
            await client.abort_multipart_upload(Bucket=self.bucket, Key=s3_key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and error_code(exc) == "NoSuchUpload":
                return  # already gone
            log.warning(
                "s3.abort_failed",
                bucket=self.bucket,
                key=s3_key,
                upload_id=upload_id,
                error=str(exc),
                hint="the bucket's AbortIncompleteMultipartUpload rule will remove it",
            )
