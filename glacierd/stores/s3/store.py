"""The S3 store: archives are objects in one bucket under one prefix, usually in a Glacier
class; one aiobotocore client per store, created in ``open()`` and reused.

- **Keys.** The object key is ``prefix + key``; the catalog keeps ``key`` without the prefix,
  so a bucket can be re-prefixed by changing one setting and copying the objects.
- **Retrieval** is ``RestoreObject`` (``Days`` = ``restore_days``, ``Tier``): 202 started,
  200 already restored (the new ``Days`` resets the expiry), 409 already running, 503 no
  Expedited capacity. Progress is the ``x-amz-restore`` header of ``HeadObject``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from glacierd.config import S3StoreConfig
from glacierd.pipeline.hashing import Digest
from glacierd.stores.aws import check_credentials, client_config, error_code, open_client
from glacierd.stores.base import (
    PROBE_DATA,
    READABLE_AT_ONCE,
    ArchiveNotFoundError,
    ArchiveRef,
    ExpectedRetrieval,
    RetrievalState,
    Store,
    StoreError,
    StoreNews,
)
from glacierd.stores.protection import Retention
from glacierd.stores.s3.download import download
from glacierd.stores.s3.errors import NO_BUCKET_CODES, NOT_FOUND_CODES, S3Errors
from glacierd.stores.s3.events import S3RestoreEvent, restore_news
from glacierd.stores.s3.parts import DEFAULT_PART_SIZE, plan_parts
from glacierd.stores.s3.protection import (
    bucket_may_lock,
    delete_for_good,
    retention_of,
    upload_args,
)
from glacierd.stores.s3.restores import (
    ARCHIVAL_CLASSES,
    RESTORE_TIMES,
    choose_tier,
    retrieval_state,
)
from glacierd.stores.s3.upload import S3Uploader, StreamFailed

log = structlog.get_logger("glacierd.stores.s3")


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
        self.errors = S3Errors(cfg)
        self.uploader = S3Uploader(cfg.bucket, cfg.part_concurrency)
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._may_lock: bool | None = None  # the bucket has Object Lock (None: not asked)

    # ---------------------------------------------------------------- keys and client

    def s3_key(self, key: str) -> str:
        """The object key in the bucket for a catalog key."""
        return self.cfg.prefix + key

    def catalog_key(self, s3_key: str) -> str | None:
        """The catalog key for an object key (as in S3 events), or None if outside the prefix."""
        if not s3_key.startswith(self.cfg.prefix):
            return None
        return s3_key[len(self.cfg.prefix) :]

    def interpret(self, event: object) -> list[StoreNews]:
        """A restore event about an object of this bucket under this prefix."""
        if not isinstance(event, S3RestoreEvent) or event.bucket != self.cfg.bucket:
            return []
        key = self.catalog_key(event.key)
        return [restore_news(event, key)] if key is not None else []

    @property
    def default_tier(self) -> str:
        return self.cfg.default_tier

    def expected_retrieval(self, storage_class: str | None, tier: str) -> ExpectedRetrieval | None:
        cls = storage_class or self.cfg.storage_class
        if cls not in ARCHIVAL_CLASSES:
            return READABLE_AT_ONCE
        return RESTORE_TIMES.get((cls, tier))

    async def open(self) -> None:
        if self._client is not None:
            return
        cfg = self.cfg
        config = client_config(
            max_attempts=self._max_attempts,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            # One pooled connection per concurrent part, plus a few for HEAD/GET meanwhile.
            pool=max(10, cfg.part_concurrency + 4),
            compatible_endpoint=bool(cfg.endpoint_url),
        )
        try:
            self._stack, self._client = await open_client(
                "s3",
                profile=cfg.profile,
                region=cfg.region,
                endpoint_url=cfg.endpoint_url,
                config=config,
                setting="store.s3.profile",
            )
        except BotoCoreError as exc:  # e.g. a credential_process or SSO login that fails
            raise self.errors.translate(exc, "the opening of the S3 client") from exc

    async def close(self) -> None:
        # Let aborts started during a cancellation finish before the client goes away.
        await self.uploader.aborts.wait()
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def _require_client(self) -> Any:
        if self._client is None:
            raise StoreError(f"S3 store {self.name!r} is not open", "call open() first")
        return self._client

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
        try:
            extra = upload_args(self.cfg, kind)  # Object Lock, SSE-KMS (protection.py)
            await self.uploader.upload(client, self.s3_key(key), chunks, plan, storage_class, extra)
        except StreamFailed as exc:
            cause = exc.__cause__
            raise StoreError(
                f"upload of archive {key} to S3 bucket {self.cfg.bucket} stopped because its "
                f"data stream failed ({cause!r}); nothing was stored."
            ) from cause
        except (ClientError, BotoCoreError) as exc:
            raise self.errors.translate(exc, f"the upload of archive {key}", aborted=True) from exc
        return key, storage_class

    async def abort_incomplete(self) -> int:
        try:
            return await self.uploader.abort_incomplete(self._require_client(), self.cfg.prefix)
        except (ClientError, BotoCoreError) as exc:
            raise self.errors.translate(exc, "the abort of unfinished multipart uploads") from exc

    # ------------------------------------------------------------------------ download

    def _download(self, archive: ArchiveRef) -> AsyncIterator[bytes]:
        client = self._require_client()
        return download(client, self.cfg.bucket, self.s3_key(archive.key), archive.key, self.errors)

    # ------------------------------------------------------------------------ retrieval

    async def _head(self, archive: ArchiveRef) -> dict[str, Any]:
        client = self._require_client()
        try:
            return await client.head_object(Bucket=self.cfg.bucket, Key=self.s3_key(archive.key))
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                # HEAD has no body, so a missing bucket also reads as a bare 404: tell apart.
                await self._check_bucket()
            raise self.errors.about_archive(exc, archive.key, "the status check") from exc
        except BotoCoreError as exc:
            raise self.errors.translate(exc, f"the status check of archive {archive.key}") from exc

    async def _check_bucket(self) -> None:
        client = self._require_client()
        try:
            await client.head_bucket(Bucket=self.cfg.bucket)
        except ClientError as exc:
            if error_code(exc) in NO_BUCKET_CODES:
                raise self.errors.no_bucket() from exc
            raise self.errors.translate(exc, "the bucket check") from exc
        except BotoCoreError as exc:
            raise self.errors.translate(exc, "the bucket check") from exc

    async def ping(self) -> None:
        await self._check_bucket()  # HEAD Bucket: cheap, and it proves bucket and access

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
        chosen = choose_tier(storage_class, archive.key, tier, self.cfg.default_tier)
        expected = datetime.now(UTC) + timedelta(
            seconds=RESTORE_TIMES[(storage_class, chosen)].maximum
        )
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
            code = error_code(exc)
            if code == "RestoreAlreadyInProgress":  # 409: one restore per object at a time
                return RetrievalState("pending", expected_at=expected)
            if code == "GlacierExpeditedRetrievalNotAvailable":  # 503: no Expedited capacity
                raise StoreError(
                    f"S3 has no Expedited retrieval capacity for archive {archive.key} right now",
                    "request the Standard tier instead (or buy provisioned capacity)",
                ) from exc
            if code == "InvalidObjectState":
                # "not in an archival class" after all (moved meanwhile): readable as it is.
                return await self.retrieval_status(archive)
            if code in ("NotImplemented", "501"):
                # S3-compatible stores without archive classes: objects are always readable.
                return RetrievalState("ready")
            raise self.errors.about_archive(exc, archive.key, "the retrieval request") from exc
        except BotoCoreError as exc:
            raise self.errors.translate(
                exc, f"the retrieval request of archive {archive.key}"
            ) from exc
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

    async def retention(self, archive: ArchiveRef) -> Retention | None:
        if self._may_lock is None:  # one question per process: no lock, no HEAD per archive
            self._may_lock = await bucket_may_lock(self._require_client(), self.cfg.bucket)
        if not self._may_lock:
            return None
        try:
            return retention_of(await self._head(archive))
        except ArchiveNotFoundError:
            return None

    async def delete(self, archive: ArchiveRef) -> None:
        """Delete the object for good; refused with the date while S3 Object Lock holds it."""
        client, key, head = self._require_client(), archive.key, partial(self._head, archive)
        await delete_for_good(client, self.cfg.bucket, self.s3_key(key), key, head, self.errors)

    # ------------------------------------------------------------------ glacierd doctor

    def describe(self) -> str:
        where = f" at {self.cfg.endpoint_url}" if self.cfg.endpoint_url else ""
        return f"S3 bucket {self.cfg.bucket} (prefix {self.cfg.prefix or '(none)'}){where}"

    async def check_access(self) -> str:
        return await check_credentials(self.cfg.profile, "store.s3.profile", self.describe())

    async def probe(self) -> str:
        """Check the bucket, write a small STANDARD object, read it back, delete it."""
        await self._check_bucket()
        ref = await self.put_probe()
        try:
            back = bytearray()
            async for chunk in self._download(ref):
                back += chunk
            if bytes(back) != PROBE_DATA:
                raise StoreError(
                    f"S3 bucket {self.cfg.bucket} returned different bytes than were written "
                    "to the probe object",
                    "check store.s3.endpoint_url and any proxy in between",
                )
        finally:
            with contextlib.suppress(StoreError):
                await self.delete(ref)
        return f"{self.describe()} accepted a probe object, returned it intact and deleted it"

    def notification_check(self, topics: Sequence[str] | None, polling: str) -> str:
        if topics is None:
            return f"finished S3 restores are found by polling {polling}"
        return (
            "the bucket's event notifications must send s3:ObjectRestore:Completed to one of "
            "these topics (deploy/AWS-SETUP.md)"
        )
