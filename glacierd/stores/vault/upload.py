"""Uploading into a vault, where Glacier names the archive and checks a SHA-256 tree hash.

- **Glacier names the archive.** An upload returns an ``ArchiveId`` (about 138 characters);
  that id is the key ``put`` returns and the catalog keeps. Our own key goes into the
  archive description (percent-encoded ASCII, at most 1024 characters), the only place a
  vault inventory would show it again.
- **Every upload carries a tree hash** (``glacierd.pipeline.treehash``). Small archives
  (``size_hint`` below ``multipart_threshold``) are buffered, at most the threshold, and
  sent with one ``UploadArchive``; everything else streams as a multipart upload of
  ``part_size`` parts (1 MiB × 2^n), each with its own tree hash, and the archive's tree
  hash is combined from the parts'. At most one part (plus the regrouping buffer) is in
  memory. A failed or cancelled upload is aborted.
- **Empty archives cannot be stored** (``UploadArchive`` takes 1 byte to 4 GB, and a
  multipart upload needs one non-empty part), so an empty stream is recorded under the
  sentinel key ``glacierd:empty:<key>`` and never touches the vault.

Every vault call goes through the store's ``call`` (``VaultStore._call``), which puts
Glacier's failures in an operator's words.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable
from contextvars import ContextVar
from typing import Any, Protocol
from urllib.parse import quote

import structlog

from glacierd.pipeline.hashing import rechunk
from glacierd.pipeline.treehash import TreeHash, combine_tree_hashes
from glacierd.stores.aws import ShieldedAborts
from glacierd.stores.base import StoreError
from glacierd.stores.vault.errors import GoneError

log = structlog.get_logger("glacierd.stores.vault")

STORAGE_CLASS = "GLACIER_VAULT"
EMPTY_ARCHIVE_KEY = "glacierd:empty"
DESCRIPTION_PREFIX = "glacierd:"

_MAX_DESCRIPTION = 1024  # ArchiveDescription: printable ASCII, at most 1024 characters
MAX_SINGLE_UPLOAD = 4 * 1024**3  # UploadArchive: 1 byte to 4 GB
_MAX_PARTS = 10_000  # a multipart upload holds at most 10,000 parts

# The hex SHA-256 of the request body about to be sent, computed off the event loop. botocore
# hashes an UploadArchive / UploadMultipartPart body itself (x-amz-content-sha256, for SigV4)
# unless the header is already set, and it would do that on the event loop.
_PAYLOAD_SHA256: ContextVar[str | None] = ContextVar("glacierd_vault_payload_sha256", default=None)
#: The calls whose body is hashed ahead (``add_payload_sha256`` is registered for them).
PAYLOAD_OPERATIONS = ("UploadArchive", "UploadMultipartPart")


class Call(Protocol):
    def __call__(self, operation: str, /, **params: Any) -> Awaitable[dict[str, Any]]: ...


def empty_key(key: str) -> str:
    """Glacier cannot store 0 bytes; an empty archive is this marker, unique per key (two
    empty files must not share a catalog key)."""
    return f"{EMPTY_ARCHIVE_KEY}:{key}"


def is_empty_key(key: str) -> bool:
    return key.startswith(EMPTY_ARCHIVE_KEY)


def archive_description(key: str) -> str:
    """Our key as a Glacier archive description: printable ASCII, at most 1024 characters.

    Percent-encoding keeps any key ASCII-safe; a key too long to fit is cut before the
    limit, never inside an escape, so the description always decodes.
    """
    text = DESCRIPTION_PREFIX + quote(key, safe="/")
    if len(text) > _MAX_DESCRIPTION:
        text = text[:_MAX_DESCRIPTION]
        cut = text.rfind("%", len(text) - 2)
        if cut != -1:
            text = text[:cut]
    return text


def add_payload_sha256(params: dict[str, Any], **_: Any) -> None:
    """botocore ``before-call`` hook: send the SHA-256 computed in a thread."""
    digest = _PAYLOAD_SHA256.get()
    if digest is not None:
        params["headers"].setdefault("x-amz-content-sha256", digest)


def _hashes(data: bytes) -> tuple[bytes, str]:
    """(tree hash, hex SHA-256) of a buffer; run in a thread (hashlib releases the GIL)."""
    return TreeHash(data).digest(), hashlib.sha256(data).hexdigest()


async def _prepend(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in rest:
        yield chunk


class VaultUploader:
    """Uploads into one vault, and remembers the archives it created that nobody recorded."""

    def __init__(self, vault: str, part_size: int, multipart_threshold: int) -> None:
        self.vault = vault
        self.part_size = part_size
        self.single_limit = min(multipart_threshold, MAX_SINGLE_UPLOAD)
        self.aborts = ShieldedAborts()
        # planned key -> ArchiveId of uploads that completed although their put() did not
        # return it (cancelled while Glacier answered): cleanup deletes them by this id.
        self.completed: dict[str, str] = {}

    async def upload(
        self, call: Call, key: str, chunks: AsyncIterator[bytes], size_hint: int | None
    ) -> str:
        """Upload the stream; returns the ArchiveId (or the empty-archive marker)."""
        description = archive_description(key)
        limit = self.single_limit
        if size_hint is not None and size_hint < limit:
            # Buffer a small archive for one UploadArchive, but never more than the threshold:
            # if the hint was wrong the stream continues as a multipart upload.
            head = bytearray()
            exhausted = True
            async for chunk in chunks:
                head += chunk
                if len(head) >= limit:
                    exhausted = False
                    break
            buffered = bytes(head)
            del head  # one copy of the buffer, not two
            if exhausted:
                if not buffered:
                    return empty_key(key)
                return await self._single(call, buffered, description, key)
            chunks = _prepend(buffered, chunks)
            del buffered
        return await self._multipart(call, chunks, description, key)

    async def _single(self, call: Call, data: bytes, description: str, key: str) -> str:
        tree, sha256 = await asyncio.to_thread(_hashes, data)
        token = _PAYLOAD_SHA256.set(sha256)
        try:
            return await self._creating_call(
                call,
                key,
                "upload_archive",
                archiveDescription=description,
                checksum=tree.hex(),
                body=data,
            )
        finally:
            _PAYLOAD_SHA256.reset(token)

    async def _creating_call(self, call: Call, key: str, operation: str, **params: Any) -> str:
        """The call that makes an archive exist; returns its ArchiveId.

        Glacier alone knows the id, and a vault cannot be listed: an id lost between
        Glacier's answer and the catalog is an archive nobody can delete. So a cancellation
        while this call runs does not drop the answer: the call finishes (bounded by the
        client's timeouts), the id is kept in ``completed``, and the cancellation goes on.
        """
        pending = asyncio.ensure_future(call(operation, **params))

        def keep(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                self.completed[key] = str(done.result()["archiveId"])

        pending.add_done_callback(keep)
        try:
            response = await asyncio.shield(pending)
        except asyncio.CancelledError:
            await asyncio.wait({pending})
            raise
        self.completed.pop(key, None)  # returned to the caller, which records it
        return str(response["archiveId"])

    async def _multipart(
        self, call: Call, chunks: AsyncIterator[bytes], description: str, key: str
    ) -> str:
        part_size = self.part_size
        async with contextlib.aclosing(rechunk(chunks, part_size)) as parts:
            # Read the first part before starting an upload: an empty or failing source
            # then leaves nothing behind in the vault.
            part = await anext(parts, None)
            if part is None:
                return empty_key(key)
            started = await call(
                "initiate_multipart_upload",
                archiveDescription=description,
                partSize=str(part_size),  # Glacier models the part size as a string
            )
            upload_id = str(started["uploadId"])
            try:
                part_hashes: list[bytes] = []
                offset = 0
                while part is not None:
                    if len(part_hashes) >= _MAX_PARTS:
                        raise StoreError(
                            f"archive {key} is larger than {_MAX_PARTS} parts of {part_size} bytes",
                            "raise store.vault.part_size (1 MiB times a power of two)",
                        )
                    tree, sha256 = await asyncio.to_thread(_hashes, part)
                    token = _PAYLOAD_SHA256.set(sha256)
                    try:
                        await call(
                            "upload_multipart_part",
                            uploadId=upload_id,
                            # Content-Range with an unknown total: Glacier wants "/*".
                            range=f"bytes {offset}-{offset + len(part) - 1}/*",
                            checksum=tree.hex(),
                            body=part,
                        )
                    finally:
                        _PAYLOAD_SHA256.reset(token)
                    part_hashes.append(tree)
                    offset += len(part)
                    del part  # let the part go before reading the next one
                    part = await anext(parts, None)
                return await self._creating_call(
                    call,
                    key,
                    "complete_multipart_upload",
                    uploadId=upload_id,
                    archiveSize=str(offset),
                    checksum=combine_tree_hashes(part_hashes).hex(),
                )
            except BaseException:
                # Abort even when cancelled; Glacier would drop an idle upload after about
                # 24 hours anyway.
                await self.aborts.run(self.abort(call, upload_id))
                raise

    async def abort_incomplete(self, call: Call) -> int:
        """Abort the multipart uploads glacierd left in the vault (recognised by their
        description); uploads of other tools sharing the vault are left alone."""
        upload_ids: list[str] = []
        marker: str | None = None
        while True:
            page = await call("list_multipart_uploads", **({"marker": marker} if marker else {}))
            for upload in page.get("UploadsList") or []:
                if str(upload.get("ArchiveDescription") or "").startswith(DESCRIPTION_PREFIX):
                    upload_ids.append(str(upload["MultipartUploadId"]))
            marker = page.get("Marker")
            if not marker:
                break
        aborted = 0
        for upload_id in upload_ids:
            try:
                await call("abort_multipart_upload", uploadId=upload_id)
            except GoneError:
                continue
            aborted += 1
        if aborted:
            log.info("vault.aborted_incomplete", vault=self.vault, count=aborted)
        return aborted

    async def abort(self, call: Call, upload_id: str) -> None:
        try:
            await call("abort_multipart_upload", uploadId=upload_id)
        except GoneError:
            pass
        except StoreError as exc:
            log.warning("vault.abort_failed", vault=self.vault, upload_id=upload_id, error=str(exc))
