"""A Glacier vault (the legacy Glacier API) as a store, for people who already have vaults.

The vault API closed to new AWS customers on 2025-12-15: a new account gets
``NoLongerSupportedException`` on every call, which this store turns into one sentence
pointing at the S3 store with a Glacier storage class.

How a vault differs from a bucket, and what this store does about it:

- **Glacier names the archive.** An upload returns an ``ArchiveId`` (about 138 characters);
  that id is what ``put`` returns as the key and what the catalog keeps in
  ``ArchiveRef.key``. Our own key goes into the archive description (percent-encoded ASCII,
  at most 1024 characters), the only place a vault inventory would show it again.
- **Every upload carries a SHA-256 tree hash** (see ``glacierd.pipeline.treehash``).
  Small archives (``size_hint`` below ``multipart_threshold``) are buffered, at most the
  threshold, and sent with one ``UploadArchive``; everything else streams as a multipart
  upload of ``part_size`` parts (1 MiB × 2^n), each with its own tree hash, and the
  archive's tree hash is combined from the parts' as they go. At most one part (plus the
  regrouping buffer) is in memory. A failed or cancelled upload is aborted.
- **Empty archives cannot be stored** (``UploadArchive`` takes 1 byte to 4 GB, and a
  multipart upload needs one non-empty part), so an empty stream is recorded under the
  sentinel key ``glacierd:empty`` and never touches the vault.
- **Reading takes a job.** ``request_retrieval`` starts an ``archive-retrieval`` job
  (optionally announced on an SNS topic); ``retrieval_status`` asks ``DescribeJob``; the
  output can be downloaded with ``GetJobOutput`` for 24 hours after the job completes, after
  which Glacier forgets the job (``ResourceNotFoundException``).
- **Listing needs an inventory job** that takes hours, so ``list`` is not supported; the
  catalog is the list of archives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aioboto3
import aiohttp
import structlog
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

from glacierd.config import VaultStoreConfig
from glacierd.pipeline.hashing import Digest, rechunk
from glacierd.pipeline.treehash import TreeHash, combine_tree_hashes
from glacierd.stores.base import (
    ArchiveNotFoundError,
    ArchiveRef,
    ListedObject,
    NotRetrievedError,
    RetrievalState,
    Store,
    StoreError,
    VerificationError,
)

log = structlog.get_logger(__name__)

STORAGE_CLASS = "GLACIER_VAULT"
EMPTY_ARCHIVE_KEY = "glacierd:empty"


def empty_key(key: str) -> str:
    """Glacier cannot store 0 bytes; an empty archive is this marker, unique per key (two
    empty files must not share a catalog key)."""
    return f"{EMPTY_ARCHIVE_KEY}:{key}"


DESCRIPTION_PREFIX = "glacierd:"

MIB = 1024 * 1024
_MAX_DESCRIPTION = 1024  # ArchiveDescription: printable ASCII, at most 1024 characters
_MAX_SINGLE_UPLOAD = 4 * 1024**3  # UploadArchive: 1 byte to 4 GB
_MAX_PARTS = 10_000  # a multipart upload holds at most 10,000 parts
_DOWNLOAD_CHUNK = MIB
# Glacier keeps a completed job, and so its output, for at least 24 hours.
_JOB_OUTPUT_LIFETIME = timedelta(hours=24)
# Typical completion times (AWS: Expedited 1–5 min, Standard 3–5 h, Bulk 5–12 h).
_TIER_DELAY = {
    "Expedited": timedelta(minutes=5),
    "Standard": timedelta(hours=5),
    "Bulk": timedelta(hours=12),
}
_CLOSED_TO_NEW_CUSTOMERS = (
    "the Glacier vault API is closed to new AWS customers since 2025-12-15; use the S3 "
    'store (store.type = "s3") with storage_class GLACIER'
)
# Operations whose only resource is the vault: a ResourceNotFoundException means the vault.
_VAULT_OPERATIONS = frozenset(
    {
        "describe_vault",
        "upload_archive",
        "initiate_multipart_upload",
        "list_multipart_uploads",
        "initiate_job",
    }
)

# The hex SHA-256 of the request body about to be sent, computed off the event loop. botocore
# hashes an UploadArchive / UploadMultipartPart body itself (x-amz-content-sha256, for SigV4)
# unless the header is already set, and it would do that on the event loop.
_PAYLOAD_SHA256: ContextVar[str | None] = ContextVar("glacierd_vault_payload_sha256", default=None)


def _add_payload_sha256(params: dict[str, Any], **_: Any) -> None:
    digest = _PAYLOAD_SHA256.get()
    if digest is not None:
        params["headers"].setdefault("x-amz-content-sha256", digest)


def _hashes(data: bytes) -> tuple[bytes, str]:
    """(tree hash, hex SHA-256) of a buffer; run in a thread (hashlib releases the GIL)."""
    return TreeHash(data).digest(), hashlib.sha256(data).hexdigest()


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


def _parse_date(value: str | None) -> datetime | None:
    """Glacier's dates are ISO 8601 strings (``2012-05-15T17:21:39.339Z``), not timestamps."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class _GoneError(ArchiveNotFoundError):
    """Glacier does not know the archive, job or upload (not the vault) in a request."""


async def _prepend(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in rest:
        yield chunk


class VaultStore(Store):
    """Archives in one Glacier vault; keys are Glacier's ArchiveIds."""

    type = "vault"

    def __init__(self, name: str, cfg: VaultStoreConfig) -> None:
        super().__init__(name)
        self.cfg = cfg
        self._stack: AsyncExitStack | None = None
        self._client_obj: Any = None
        self._background: set[asyncio.Task[None]] = set()
        # planned key -> ArchiveId of uploads that completed although their put() did not
        # return it (cancelled while Glacier answered): cleanup deletes them by this id.
        self._completed: dict[str, str] = {}

    # -- client ---------------------------------------------------------------------------

    @property
    def default_tier(self) -> str:
        return self.cfg.default_tier

    def retrieval_estimates(self, storage_class: str | None) -> dict[str, float]:
        return {tier: delay.total_seconds() for tier, delay in _TIER_DELAY.items()}

    async def open(self) -> None:
        if self._client_obj is not None:
            return
        try:
            # Reads the shared config/credentials files: keep that off the event loop.
            session = await asyncio.to_thread(aioboto3.Session, profile_name=self.cfg.profile)
        except ProfileNotFound:
            raise StoreError(
                f"AWS profile {self.cfg.profile!r} (store.vault.profile) is not in "
                "~/.aws/credentials or ~/.aws/config; add it there or fix the setting."
            ) from None
        config = AioConfig(
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=30,
            read_timeout=120,
        )
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                session.client(
                    "glacier",
                    region_name=self.cfg.region,
                    endpoint_url=self.cfg.endpoint_url,
                    config=config,
                )
            )
        except NoRegionError:
            await stack.aclose()
            raise StoreError(
                f"no AWS region is set for Glacier vault store {self.name!r}; set "
                "store.vault.region to the vault's region, for example 'us-east-1'."
            ) from None
        except BaseException:
            await stack.aclose()
            raise
        for operation in ("UploadArchive", "UploadMultipartPart"):
            client.meta.events.register_first(
                f"before-call.glacier.{operation}", _add_payload_sha256
            )
        self._stack = stack
        self._client_obj = client

    async def close(self) -> None:
        if self._background:
            # Let shielded aborts of failed uploads finish before the client goes away.
            await asyncio.wait(self._background, timeout=30)
        if self._stack is not None:
            stack, self._stack, self._client_obj = self._stack, None, None
            await stack.aclose()

    @property
    def _client(self) -> Any:
        if self._client_obj is None:
            raise StoreError(f"Glacier vault store {self.name!r} is used before open().")
        return self._client_obj

    @property
    def _region(self) -> str:
        if self._client_obj is not None:
            return str(self._client_obj.meta.region_name)
        return self.cfg.region or "(default region)"

    async def _call(self, operation: str, /, **params: Any) -> dict[str, Any]:
        """Call a vault operation; every AWS failure becomes a StoreError that says what to do."""
        try:
            method = getattr(self._client, operation)
            return await method(vaultName=self.cfg.vault, accountId=self.cfg.account_id, **params)
        except ClientError as exc:
            raise self._translate(exc, operation) from exc
        except (NoCredentialsError, PartialCredentialsError):
            raise StoreError(
                f"no usable AWS credentials for Glacier vault {self.cfg.vault!r}; set "
                "store.vault.profile to a profile in ~/.aws/credentials, or provide "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an instance role."
            ) from None
        except BotoCoreError as exc:
            raise StoreError(
                f"Glacier {operation} on vault {self.cfg.vault!r} in {self._region} failed: "
                f"{exc}; check the network and store.vault.endpoint_url, then retry."
            ) from exc

    def _translate(self, exc: ClientError, operation: str) -> StoreError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "") or "")
        vault = self.cfg.vault
        if code == "NoLongerSupportedException":
            return StoreError(f"Glacier vault {vault!r}: {_CLOSED_TO_NEW_CUSTOMERS}.")
        # AWS says ResourceNotFoundException "Vault not found for ARN: …"; moto says
        # VaultNotFound. The same code also covers unknown archives, jobs and upload ids.
        lowered = message.lower()
        if code == "VaultNotFound" or (
            code == "ResourceNotFoundException"
            and (
                "vault not found" in lowered
                or (operation in _VAULT_OPERATIONS and "archive" not in lowered)
            )
        ):
            return StoreError(
                f"vault {vault} does not exist in region {self._region}; create it or fix "
                "store.vault.vault (and store.vault.region)."
            )
        if code == "ResourceNotFoundException":
            return _GoneError(f"Glacier {operation} on vault {vault!r}: {message or code}.")
        if code in ("AccessDeniedException", "AccessDenied"):
            action = "".join(part.capitalize() for part in operation.split("_"))
            return StoreError(
                f"AWS denied glacier:{action} on vault {vault!r} ({message}); allow it in the "
                "IAM policy of the credentials glacierd uses."
            )
        if code in (
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "MissingAuthenticationTokenException",
            "ExpiredTokenException",
        ):
            return StoreError(
                f"AWS rejected the credentials for Glacier vault {vault!r} ({code}); fix the "
                "access key (or store.vault.profile) and make sure the clock is right."
            )
        if code == "InsufficientCapacityException":
            return StoreError(
                f"Glacier has no Expedited capacity for vault {vault!r} right now; retry "
                "later, use the Standard tier, or buy provisioned capacity."
            )
        if code == "PolicyEnforcedException":
            return StoreError(
                f"the data retrieval policy of the account refused a retrieval from vault "
                f"{vault!r} ({message}); raise the policy's limit or retry later."
            )
        return StoreError(
            f"Glacier {operation} on vault {vault!r} in {self._region} failed: "
            f"{code or 'error'}: {message}."
        )

    # -- upload ---------------------------------------------------------------------------

    async def _upload(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        kind: str,
        size_hint: int | None,
        digest: Digest,
    ) -> tuple[str, str | None]:
        description = archive_description(key)
        limit = min(self.cfg.multipart_threshold, _MAX_SINGLE_UPLOAD)
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
                    return empty_key(key), STORAGE_CLASS
                archive_id = await self._upload_single(buffered, description, key)
                return archive_id, STORAGE_CLASS
            chunks = _prepend(buffered, chunks)
            del buffered
        archive_id = await self._upload_multipart(chunks, description, key)
        return archive_id, STORAGE_CLASS

    async def _upload_single(self, data: bytes, description: str, key: str) -> str:
        tree, sha256 = await asyncio.to_thread(_hashes, data)
        token = _PAYLOAD_SHA256.set(sha256)
        try:
            return await self._creating_call(
                key,
                "upload_archive",
                archiveDescription=description,
                checksum=tree.hex(),
                body=data,
            )
        finally:
            _PAYLOAD_SHA256.reset(token)

    async def _creating_call(self, key: str, operation: str, **params: Any) -> str:
        """The call that makes an archive exist; returns its ArchiveId.

        Glacier alone knows the id, and a vault cannot be listed: an id lost between
        Glacier's answer and the catalog is an archive nobody can delete. So a cancellation
        while this call runs does not drop the answer: the call finishes (bounded by the
        client's timeouts), the id is kept for ``stored_key``, and the cancellation goes on.
        """
        call = asyncio.ensure_future(self._call(operation, **params))

        def keep(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._completed[key] = str(done.result()["archiveId"])

        call.add_done_callback(keep)
        try:
            response = await asyncio.shield(call)
        except asyncio.CancelledError:
            await asyncio.wait({call})
            raise
        self._completed.pop(key, None)  # returned to the caller, which records it
        return str(response["archiveId"])

    def stored_key(self, planned: str) -> str | None:
        """The ArchiveId of a completed upload nobody recorded, or None: a planned key is
        not an ArchiveId, so there is nothing to delete under it (an upload that did not
        complete is aborted by the store itself, or by ``abort_incomplete`` at start)."""
        return self._completed.pop(planned, None)

    async def _upload_multipart(
        self, chunks: AsyncIterator[bytes], description: str, key: str
    ) -> str:
        part_size = self.cfg.part_size
        async with contextlib.aclosing(rechunk(chunks, part_size)) as parts:
            # Read the first part before starting an upload: an empty or failing source
            # then leaves nothing behind in the vault.
            part = await anext(parts, None)
            if part is None:
                return empty_key(key)
            started = await self._call(
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
                            f"archive {key} is larger than {_MAX_PARTS} parts of {part_size} "
                            "bytes; raise store.vault.part_size (1 MiB times a power of two)."
                        )
                    tree, sha256 = await asyncio.to_thread(_hashes, part)
                    token = _PAYLOAD_SHA256.set(sha256)
                    try:
                        await self._call(
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
                archive_id = await self._creating_call(
                    key,
                    "complete_multipart_upload",
                    uploadId=upload_id,
                    archiveSize=str(offset),
                    checksum=combine_tree_hashes(part_hashes).hex(),
                )
            except BaseException:
                # Abort even when cancelled: shield a task so the abort outlives this one.
                # Glacier would drop an idle upload after about 24 hours anyway.
                task = asyncio.create_task(self._abort_upload(upload_id))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                await asyncio.shield(task)
                raise
        return archive_id

    async def _abort_upload(self, upload_id: str) -> None:
        try:
            await self._call("abort_multipart_upload", uploadId=upload_id)
        except _GoneError:
            pass
        except StoreError as exc:
            log.warning(
                "vault.abort_failed", vault=self.cfg.vault, upload_id=upload_id, error=str(exc)
            )

    async def abort_incomplete(self) -> int:
        """Abort the multipart uploads glacierd left in the vault (recognised by description).

        Uploads started by other tools sharing the vault are left alone.
        """
        upload_ids: list[str] = []
        marker: str | None = None
        while True:
            page = await self._call(
                "list_multipart_uploads", **({"marker": marker} if marker else {})
            )
            for upload in page.get("UploadsList") or []:
                if str(upload.get("ArchiveDescription") or "").startswith(DESCRIPTION_PREFIX):
                    upload_ids.append(str(upload["MultipartUploadId"]))
            marker = page.get("Marker")
            if not marker:
                break
        aborted = 0
        for upload_id in upload_ids:
            try:
                await self._call("abort_multipart_upload", uploadId=upload_id)
            except _GoneError:
                continue
            aborted += 1
        if aborted:
            log.info("vault.aborted_incomplete", vault=self.cfg.vault, count=aborted)
        return aborted

    # -- retrieval ------------------------------------------------------------------------

    async def _describe_job(self, job_id: str) -> dict[str, Any] | None:
        """The job's description, or None when Glacier no longer knows it."""
        try:
            return await self._call("describe_job", jobId=job_id)
        except _GoneError:
            return None

    def _state_from_job(self, archive: ArchiveRef, job: dict[str, Any] | None) -> RetrievalState:
        job_id = archive.retrieval_job_id
        if job is None:
            return RetrievalState(
                "available",
                reason=f"Glacier no longer knows retrieval job {job_id} (jobs expire about 24 "
                "hours after they complete); request a new retrieval.",
            )
        if job.get("ArchiveId") and job["ArchiveId"] != archive.key:
            return RetrievalState(
                "available", reason=f"retrieval job {job_id} belongs to another archive."
            )
        status = job.get("StatusCode")
        if status == "InProgress":
            created = _parse_date(job.get("CreationDate")) or datetime.now(UTC)
            delay = _TIER_DELAY.get(str(job.get("Tier") or ""), _TIER_DELAY["Standard"])
            return RetrievalState("pending", expected_at=created + delay, job_id=job_id)
        if status == "Succeeded":
            completed = _parse_date(job.get("CompletionDate")) or datetime.now(UTC)
            until = completed + _JOB_OUTPUT_LIFETIME
            if datetime.now(UTC) >= until:
                return RetrievalState(
                    "available", reason=f"the output of retrieval job {job_id} expired."
                )
            return RetrievalState("ready", ready_until=until, job_id=job_id)
        message = job.get("StatusMessage") or "no reason given"
        return RetrievalState(
            "available", job_id=job_id, reason=f"retrieval job {job_id} failed: {message}"
        )

    async def request_retrieval(
        self, archive: ArchiveRef, tier: str | None = None
    ) -> RetrievalState:
        if archive.key.startswith(EMPTY_ARCHIVE_KEY):
            return RetrievalState("ready")
        if archive.retrieval_job_id:
            current = await self.retrieval_status(archive)
            if current.status in ("pending", "ready"):
                return current  # one job per archive: the running one answers
        tier = tier or self.cfg.default_tier
        parameters: dict[str, str] = {
            "Type": "archive-retrieval",
            "ArchiveId": archive.key,
            "Tier": tier,
            "Description": "glacierd retrieval",
        }
        if self.cfg.sns_topic:
            # Glacier posts the DescribeJob JSON to this topic when the job completes.
            parameters["SNSTopic"] = self.cfg.sns_topic
        started = await self._call("initiate_job", jobParameters=parameters)
        job_id = str(started["jobId"])
        log.info(
            "vault.job_started",
            vault=self.cfg.vault,
            archive_id=archive.key,
            job_id=job_id,
            tier=tier,
            replaces=archive.retrieval_job_id,
        )
        return RetrievalState(
            "pending",
            expected_at=datetime.now(UTC) + _TIER_DELAY.get(tier, _TIER_DELAY["Standard"]),
            job_id=job_id,
        )

    async def retrieval_status(self, archive: ArchiveRef) -> RetrievalState:
        if archive.key.startswith(EMPTY_ARCHIVE_KEY):
            return RetrievalState("ready")
        if not archive.retrieval_job_id:
            return RetrievalState("available")
        return self._state_from_job(archive, await self._describe_job(archive.retrieval_job_id))

    async def _download(self, archive: ArchiveRef) -> AsyncIterator[bytes]:
        if archive.key.startswith(EMPTY_ARCHIVE_KEY):
            return
        job_id = archive.retrieval_job_id
        if not job_id:
            raise NotRetrievedError(
                f"archive {archive.key} has no retrieval job; request a retrieval and wait "
                "until it is ready."
            )
        job = await self._describe_job(job_id)
        state = self._state_from_job(archive, job)
        if state.status != "ready" or job is None:
            raise NotRetrievedError(
                f"archive {archive.key} is not retrieved (status {state.status}"
                + (f": {state.reason}" if state.reason else "")
                + "); request a retrieval and wait until it is ready."
            )
        output = await self._call("get_job_output", jobId=job_id)
        # The x-amz-sha256-tree-hash header comes with a whole-archive output; the job
        # description carries the same value.
        expected = (
            output.get("checksum") or job.get("SHA256TreeHash") or job.get("ArchiveSHA256TreeHash")
        )
        body = output["body"]
        tree = TreeHash()
        try:
            async for chunk in body.iter_chunks(_DOWNLOAD_CHUNK):
                if chunk:
                    tree.update(chunk)
                    yield chunk
        except (BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
            raise StoreError(
                f"download of archive {archive.key} from vault {self.cfg.vault!r} was "
                f"interrupted ({exc}); retry the fetch while the retrieval is ready."
            ) from exc
        finally:
            body.close()
        if expected and tree.hexdigest() != str(expected).lower():
            raise VerificationError(
                f"archive {archive.key} failed verification: Glacier tree hash "
                f"{tree.hexdigest()} differs from the {expected} Glacier sent; the download "
                "was discarded — retry the fetch."
            )

    # -- the rest -------------------------------------------------------------------------

    async def delete(self, archive: ArchiveRef) -> None:
        if archive.key.startswith(EMPTY_ARCHIVE_KEY):
            return
        with contextlib.suppress(_GoneError):
            await self._call("delete_archive", archiveId=archive.key)

    async def list(self, prefix: str = "") -> AsyncIterator[ListedObject]:
        """Not supported: a vault is listed only by an inventory job, which takes hours.

        Raises StoreError on first iteration (an empty listing would wrongly say "empty").
        """
        raise StoreError(
            f"Glacier vault {self.cfg.vault!r} cannot be listed synchronously: a vault "
            "inventory is a job that takes hours and glacierd does not run it; the catalog is "
            "the list of this store's archives."
        )
        yield  # an async generator, like the other stores' list()

    async def probe(self) -> None:
        """Check that the vault exists and answers (DescribeVault).

        Writing and reading back a probe archive is impractical here: a read takes hours.
        """
        await self._call("describe_vault")
