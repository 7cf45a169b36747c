"""The one interface every store implements: local directory, S3 bucket, Glacier vault.

A store knows nothing of backups, databases or files: it keeps opaque archives under keys.
Archives may not be readable at once (Glacier): ``request_retrieval`` starts making one
readable, ``retrieval_status`` says how far that got, and ``get`` works only once it is
ready. Everything streams: ``put`` consumes an async iterator of chunks, ``get`` writes
chunks to disk, and the SHA-256 is computed on the way in both directions.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from glacierd.catalog.status import StoreStatus
from glacierd.config import TIERS
from glacierd.errors import GlacierdError
from glacierd.pipeline.files import write_atomically
from glacierd.pipeline.hashing import Digest
from glacierd.stores.protection import Retention


class StoreError(GlacierdError):
    """A store operation failed: ``detail`` says what, ``fix`` what to do next."""


class ArchiveNotFoundError(StoreError):
    pass


class NotRetrievedError(StoreError):
    """The archive is in an archival class and has no readable copy (S3 InvalidObjectState)."""


class ArchiveLockedError(StoreError):
    """The store refused (or would refuse) to delete an archive under S3 Object Lock."""


class VerificationError(StoreError):
    """Downloaded bytes do not match the SHA-256 recorded at backup time."""


@dataclass(frozen=True)
class ArchiveRef:
    """What a store needs to know about an archive it holds (from the catalog)."""

    key: str
    size: int | None = None
    sha256: str | None = None
    storage_class: str | None = None
    retrieval_job_id: str | None = None


@dataclass(frozen=True)
class PutResult:
    key: str  # the key to ask for it again: for a vault, the ArchiveId that Glacier assigned
    size: int
    sha256: str
    storage_class: str | None


@dataclass(frozen=True)
class RetrievalState:
    status: StoreStatus  # the transitions it may cause: glacierd.catalog.status
    expected_at: datetime | None = None  # pending: when it should become ready
    ready_until: datetime | None = None  # ready: when the readable copy expires
    job_id: str | None = None  # vault: the archive-retrieval job
    reason: str | None = None  # why it fell back to available (job failed, copy expired)


@dataclass(frozen=True)
class ExpectedRetrieval:
    """How long a retrieval takes, in seconds: usually (``typical``) and at most (``maximum``)."""

    typical: float
    maximum: float


#: An archive readable without a retrieval (GLACIER_IR, STANDARD, a local vault without delay).
READABLE_AT_ONCE = ExpectedRetrieval(0.0, 0.0)


@dataclass(frozen=True)
class StoreNews:
    """What a notification says about one archive, for the catalog's compare-and-set.

    ``key`` is the archive's catalog key (``store_key``). When ``state.job_id`` is set the
    news is about that retrieval job: rows recording the job are found by it (the key then
    finds only a row whose job was never recorded), and a row recording another job ignores
    the news. ``only_from`` limits the news to rows in these statuses (the expiry of a
    restored copy ends only a ready one, never a newer retrieval).
    """

    key: str
    state: RetrievalState
    only_from: tuple[StoreStatus, ...] | None = None


class Store(abc.ABC):
    """Base class: the public methods stream and hash; subclasses move bytes."""

    type: str = "abstract"

    def __init__(self, name: str) -> None:
        self.name = name

    async def open(self) -> None:
        """Create clients; called once before use."""

    async def close(self) -> None:
        """Release clients."""

    async def put(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        kind: str,
        size_hint: int | None = None,
    ) -> PutResult:
        """Store a stream under ``key``; nothing is left behind if the stream or upload fails."""
        digest = Digest()
        wrapped = digest.wrap(chunks)
        try:
            stored_key, storage_class = await self._upload(
                key, wrapped, kind=kind, size_hint=size_hint, digest=digest
            )
        finally:
            # Close the source now (kill pg_dump, close the file) rather than whenever the
            # garbage collector finalizes an abandoned generator.
            await wrapped.aclose()
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
        return PutResult(stored_key, digest.size, digest.hexdigest, storage_class)

    async def get(self, archive: ArchiveRef, dest: Path) -> int:
        """Download a readable archive to ``dest``, verified against ``archive.sha256``.

        The bytes land in a temporary file first; on a mismatch it is deleted, ``dest`` is
        untouched and VerificationError says so.
        """
        return await write_atomically_verified(dest, Digest(), self._download(archive), archive)

    @abc.abstractmethod
    async def _upload(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        kind: str,
        size_hint: int | None,
        digest: Digest,
    ) -> tuple[str, str | None]:
        """Upload the stream; return (key to store in the catalog, storage class)."""

    @abc.abstractmethod
    def _download(self, archive: ArchiveRef) -> AsyncIterator[bytes]:
        """Stream a readable archive's bytes; raise NotRetrievedError if it is not readable."""

    @abc.abstractmethod
    async def request_retrieval(
        self, archive: ArchiveRef, tier: str | None = None
    ) -> RetrievalState:
        """Start making an archive readable (idempotent: a running retrieval is not an error)."""

    @abc.abstractmethod
    async def retrieval_status(self, archive: ArchiveRef) -> RetrievalState:
        """Where a retrieval stands now."""

    @abc.abstractmethod
    async def delete(self, archive: ArchiveRef) -> None:
        """Delete an archive; deleting one that is already gone is not an error."""

    def interpret(self, event: object) -> list[StoreNews]:
        """What a notification (any ``stores.notifications.StoreEvent``) says about this
        store's archives: nothing, unless the store is the kind that sent it (and, for a
        bucket, it is this bucket and prefix). Typed ``object`` so that this interface need
        not import every store's event types."""
        return []

    def stored_key(self, planned: str) -> str | None:
        """The key under which an upload to ``planned`` is stored if it completed, for
        cleaning up an upload whose result was never recorded. Most stores keep ``planned``
        itself; a store that names its archives (a vault) knows only the uploads it saw
        complete, and None means there is nothing to delete under that name."""
        return planned

    @property
    def default_tier(self) -> str:
        """The tier used when a retrieval request names none."""
        return "Standard"

    def expected_retrieval(self, storage_class: str | None, tier: str) -> ExpectedRetrieval | None:
        """How long retrieving an archive of ``storage_class`` (None: the store's default
        class) takes at ``tier``; None if the store offers no such tier for that class. The
        one table per store: the poller's pace, ``expected_at`` and dry-run estimates."""
        return READABLE_AT_ONCE

    def retrieval_estimates(self, storage_class: str | None) -> dict[str, float]:
        """Seconds until an archive of this class is readable at the latest, per offered tier.

        Kept for restore planning (the dry run in operations/restore.py); built on
        ``expected_retrieval``.
        """
        estimates = {}
        for tier in TIERS:
            expected = self.expected_retrieval(storage_class, tier)
            if expected is not None:
                estimates[tier] = expected.maximum
        return estimates

    async def abort_incomplete(self) -> int:
        """Clean up uploads a crash left half-done; returns how many were removed."""
        return 0

    async def ping(self) -> None:
        """A cheap, read-only call proving the store answers (``/health``, ``glacierd
        check``); a StoreError (detail and fix) if it does not."""

    async def retention(self, archive: ArchiveRef) -> Retention | None:
        """Whether the store refuses to delete ``archive`` now (S3 Object Lock); None if not."""
        return None

    # -- what ``glacierd doctor`` asks: each answer is the sentence it prints; a StoreError
    # -- (detail and fix) says what is wrong.

    def describe(self) -> str:
        """The store in a few words, for messages (``S3 bucket b (prefix p/)``)."""
        return f"{self.type} store {self.name!r}"

    async def check_access(self) -> str:
        """After ``open()``: whether the store can be used with what it was given (credentials,
        a writable directory)."""
        return f"{self.describe()} is open"

    async def probe(self) -> str:
        """Write a small object and delete it again."""
        await self.delete(await self.put_probe())
        return f"{self.describe()} accepted a probe object and deleted it"

    async def put_probe(self) -> ArchiveRef:
        """Store the probe object (``PROBE_DATA`` under ``PROBE_KEY``)."""
        size = len(PROBE_DATA)
        result = await self.put(PROBE_KEY, one_chunk(PROBE_DATA), kind="probe", size_hint=size)
        return ArchiveRef(result.key, result.size, result.sha256)

    def notification_check(self, topics: Sequence[str] | None, polling: str) -> str:
        """How this store's finished retrievals reach glacierd. With the SNS endpoint off
        (``topics`` None): how they are found instead; with it on, accepting ``topics``: what
        this store must send there ("" if nothing). A StoreError if the store's settings
        cannot work with those topics."""
        return f"finished retrievals are found by polling {polling}" if topics is None else ""


#: The small object ``probe`` writes and deletes (STANDARD in S3: no minimum storage charge).
PROBE_KEY = ".glacierd-probe"
PROBE_DATA = b"glacierd probe\n"


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    """A stream of one chunk, for ``put``."""
    yield data


async def write_atomically_verified(
    dest: Path, digest: Digest, chunks: AsyncIterator[bytes], archive: ArchiveRef
) -> int:
    """Write through a temporary file and rename only if size and SHA-256 match."""

    async def checked() -> AsyncIterator[bytes]:
        async for chunk in digest.wrap(chunks):
            yield chunk
        if archive.sha256 and digest.hexdigest != archive.sha256:
            raise VerificationError(
                f"archive {archive.key} failed verification: SHA-256 {digest.hexdigest} "
                f"differs from the {archive.sha256} recorded at backup time",
                "the download was discarded — retry the fetch, and if it fails again the "
                "stored copy is damaged",
            )
        if archive.size is not None and digest.size != archive.size:
            raise VerificationError(
                f"archive {archive.key} failed verification: {digest.size} bytes downloaded, "
                f"{archive.size} recorded at backup time; the download was discarded."
            )

    return await write_atomically(dest, checked())
