"""The vault store: archives in one Glacier vault; keys are Glacier's ArchiveIds.

Uploads (``upload.py``), retrieval jobs (``jobs.py``) and error sentences (``errors.py``)
live beside it. Listing a vault needs an inventory job that takes hours, so the catalog is
the list of archives.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from glacierd.config import VaultStoreConfig
from glacierd.pipeline.hashing import Digest
from glacierd.pipeline.treehash import TreeHash
from glacierd.stores.aws import check_credentials, client_config, open_client
from glacierd.stores.base import (
    ArchiveRef,
    ExpectedRetrieval,
    NotRetrievedError,
    RetrievalState,
    Store,
    StoreError,
    StoreNews,
    VerificationError,
)
from glacierd.stores.vault.errors import GoneError, VaultErrors
from glacierd.stores.vault.events import VaultJobEvent, job_news
from glacierd.stores.vault.jobs import (
    JOB_TIMES,
    job_parameters,
    state_from_job,
    tier_delay,
)
from glacierd.stores.vault.upload import (
    PAYLOAD_OPERATIONS,
    STORAGE_CLASS,
    VaultUploader,
    add_payload_sha256,
    is_empty_key,
)

log = structlog.get_logger("glacierd.stores.vault")

_DOWNLOAD_CHUNK = 1024 * 1024


class VaultStore(Store):
    """Archives in one Glacier vault; keys are Glacier's ArchiveIds."""

    type = "vault"

    def __init__(self, name: str, cfg: VaultStoreConfig) -> None:
        super().__init__(name)
        self.cfg = cfg
        self.errors = VaultErrors(cfg)
        self.uploader = VaultUploader(cfg.vault, cfg.part_size, cfg.multipart_threshold)
        self._stack: AsyncExitStack | None = None
        self._client_obj: Any = None

    # -- client ---------------------------------------------------------------------------

    def interpret(self, event: object) -> list[StoreNews]:
        """A retrieval job's message; its archive is found by the job, else by the ArchiveId."""
        return [job_news(event)] if isinstance(event, VaultJobEvent) else []

    @property
    def default_tier(self) -> str:
        return self.cfg.default_tier

    def expected_retrieval(self, storage_class: str | None, tier: str) -> ExpectedRetrieval | None:
        return JOB_TIMES.get(tier)

    async def open(self) -> None:
        if self._client_obj is not None:
            return
        config = client_config(max_attempts=5, connect_timeout=30, read_timeout=120)
        try:
            stack, client = await open_client(
                "glacier",
                profile=self.cfg.profile,
                region=self.cfg.region,
                endpoint_url=self.cfg.endpoint_url,
                config=config,
                setting="store.vault.profile",
            )
        except NoRegionError:
            raise StoreError(
                f"no AWS region is set for Glacier vault store {self.name!r}",
                "set store.vault.region to the vault's region, for example 'us-east-1'",
            ) from None
        for operation in PAYLOAD_OPERATIONS:
            client.meta.events.register_first(
                f"before-call.glacier.{operation}", add_payload_sha256
            )
        self._stack, self._client_obj = stack, client
        self.errors.region = str(client.meta.region_name)

    async def close(self) -> None:
        # Let shielded aborts of failed uploads finish before the client goes away.
        await self.uploader.aborts.wait()
        if self._stack is not None:
            stack, self._stack, self._client_obj = self._stack, None, None
            await stack.aclose()

    @property
    def _client(self) -> Any:
        if self._client_obj is None:
            raise StoreError(
                f"Glacier vault store {self.name!r} is used before open()", "call open() first"
            )
        return self._client_obj

    async def _call(self, operation: str, /, **params: Any) -> dict[str, Any]:
        """Call a vault operation; every AWS failure becomes a StoreError that says what to do."""
        try:
            method = getattr(self._client, operation)
            return await method(vaultName=self.cfg.vault, accountId=self.cfg.account_id, **params)
        except (ClientError, BotoCoreError) as exc:
            raise self.errors.translate(exc, operation) from exc

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
        return await self.uploader.upload(self._call, key, chunks, size_hint), STORAGE_CLASS

    def stored_key(self, planned: str) -> str | None:
        """The ArchiveId of a completed upload nobody recorded, or None: a planned key is
        not an ArchiveId, so there is nothing to delete under it (an upload that did not
        complete is aborted by the store itself, or by ``abort_incomplete`` at start)."""
        return self.uploader.completed.pop(planned, None)

    async def abort_incomplete(self) -> int:
        return await self.uploader.abort_incomplete(self._call)

    # -- retrieval ------------------------------------------------------------------------

    async def _describe_job(self, job_id: str) -> dict[str, Any] | None:
        """The job's description, or None when Glacier no longer knows it."""
        try:
            return await self._call("describe_job", jobId=job_id)
        except GoneError:
            return None

    async def request_retrieval(
        self, archive: ArchiveRef, tier: str | None = None
    ) -> RetrievalState:
        if is_empty_key(archive.key):
            return RetrievalState("ready")
        if archive.retrieval_job_id:
            current = await self.retrieval_status(archive)
            if current.status in ("pending", "ready"):
                return current  # one job per archive: the running one answers
        tier = tier or self.cfg.default_tier
        started = await self._call(
            "initiate_job", jobParameters=job_parameters(archive.key, tier, self.cfg.sns_topic)
        )
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
            "pending", expected_at=datetime.now(UTC) + tier_delay(tier), job_id=job_id
        )

    async def retrieval_status(self, archive: ArchiveRef) -> RetrievalState:
        if is_empty_key(archive.key):
            return RetrievalState("ready")
        if not archive.retrieval_job_id:
            return RetrievalState("available")
        return state_from_job(archive, await self._describe_job(archive.retrieval_job_id))

    async def _download(self, archive: ArchiveRef) -> AsyncIterator[bytes]:
        if is_empty_key(archive.key):
            return
        job_id = archive.retrieval_job_id
        if not job_id:
            raise NotRetrievedError(
                f"archive {archive.key} has no retrieval job",
                "request a retrieval and wait until it is ready",
            )
        job = await self._describe_job(job_id)
        state = state_from_job(archive, job)
        if state.status != "ready" or job is None:
            raise NotRetrievedError(
                f"archive {archive.key} is not retrieved (status {state.status}"
                + (f": {state.reason}" if state.reason else "")
                + ")",
                "request a retrieval and wait until it is ready",
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
                f"interrupted ({exc})",
                "retry the fetch while the retrieval is ready",
            ) from exc
        finally:
            body.close()
        if expected and tree.hexdigest() != str(expected).lower():
            raise VerificationError(
                f"archive {archive.key} failed verification: Glacier tree hash "
                f"{tree.hexdigest()} differs from the {expected} Glacier sent",
                "the download was discarded — retry the fetch",
            )

    # -- the rest -------------------------------------------------------------------------

    async def delete(self, archive: ArchiveRef) -> None:
        if is_empty_key(archive.key):
            return
        with contextlib.suppress(GoneError):
            await self._call("delete_archive", archiveId=archive.key)

    # -- glacierd doctor -----------------------------------------------------------------

    def describe(self) -> str:
        where = f" at {self.cfg.endpoint_url}" if self.cfg.endpoint_url else ""
        return f"Glacier vault {self.cfg.vault} ({self.cfg.region or 'default region'}){where}"

    async def check_access(self) -> str:
        return await check_credentials(self.cfg.profile, "store.vault.profile", self.describe())

    async def ping(self) -> None:
        await self._call("describe_vault")

    async def probe(self) -> str:
        """Check that the vault exists and answers (DescribeVault): writing and reading back
        a probe archive is impractical here, a read takes hours."""
        await self._call("describe_vault")
        return (
            f"{self.describe()} answers DescribeVault (a write-and-read probe would take hours "
            "in a vault)"
        )

    def notification_check(self, topics: Sequence[str] | None, polling: str) -> str:
        topic = self.cfg.sns_topic
        if topics is None:
            unheard = (
                f"; store.vault.sns_topic {topic} is set, but nothing listens" if topic else ""
            )
            return f"finished vault jobs are found by polling {polling}{unheard}"
        if not topic:
            raise StoreError(
                "the SNS endpoint is enabled but store.vault.sns_topic is not set, so Glacier "
                f"announces no finished retrieval jobs (they are found by polling {polling})",
                "set store.vault.sns_topic to one of sns.topic_arns",
            )
        if topic not in topics:
            raise StoreError(
                f"store.vault.sns_topic {topic} is not in sns.topic_arns, so the endpoint "
                "would reject Glacier's job notifications",
                "add it to sns.topic_arns",
            )
        return ""
