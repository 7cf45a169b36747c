"""Streaming an object out of S3, resuming where a dropped connection broke off.

A ``GetObject`` of an unrestored archive answers 403 ``InvalidObjectState``
(``NotRetrievedError``). A connection lost mid-download resumes with a ``Range`` request
pinned to the object's ETag (``IfMatch``), so the bytes that follow are the same object's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import structlog
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from glacierd.stores.base import StoreError
from glacierd.stores.s3.errors import S3Errors
from glacierd.stores.s3.parts import MiB

log = structlog.get_logger("glacierd.stores.s3")

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


async def download(
    client: Any, bucket: str, s3_key: str, key: str, errors: S3Errors
) -> AsyncIterator[bytes]:
    """The object's bytes; ``key`` is the catalog key the sentences name."""
    received = 0
    etag: str | None = None
    interruptions = 0
    while True:
        request: dict[str, Any] = {"Bucket": bucket, "Key": s3_key}
        if received:
            # Resume where the connection broke; IfMatch makes sure it is the same object.
            request["Range"] = f"bytes={received}-"
            if etag:
                request["IfMatch"] = etag
        try:
            resp = await client.get_object(**request)
        except ClientError as exc:
            raise errors.about_archive(exc, key, "the download") from exc
        except BotoCoreError as exc:
            raise errors.translate(exc, f"the download of archive {key}") from exc
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
                    f"download of archive {key} from S3 bucket {bucket} broke off "
                    f"{interruptions} times ({exc})",
                    "retry the fetch later",
                ) from exc
            log.warning("s3.download_resumed", key=s3_key, received=received, error=repr(exc))
        finally:
            body.close()
