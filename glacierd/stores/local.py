"""A directory acting as a vault: the embedded default for laptops, demos and tests.

With ``retrieval_delay_seconds`` above zero it behaves like Glacier: an archive can only be
read after a retrieval was requested and the delay has passed, and the readable copy
expires after ``retrieval_days``. Retrieval state lives in small JSON files under
``.retrievals/`` so it survives a daemon restart, like a real Glacier retrieval does.

Layout. A key is a relative path in the vault (``files/ab/cd``), so the vault stays
browsable. A key with a segment too long for one file name (NAME_MAX, 255 bytes, less the
room a temporary name needs) lives under ``.long/<SHA-256 of the key>`` instead, with the
key itself beside it in ``<digest>.key``, so whoever browses the vault can name it. A
retrieval marker is ``.retrievals/<SHA-256 of the key>.json`` (the key is also inside): one
fixed-length name per key, so no two keys share one. Every object, marker and key file is
written through a temporary file and a rename, 0600.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

from glacierd.pipeline.files import PARTIAL_SUFFIX, read_chunks, write_atomically
from glacierd.pipeline.hashing import Digest
from glacierd.stores.base import (
    ArchiveNotFoundError,
    ArchiveRef,
    ExpectedRetrieval,
    NotRetrievedError,
    RetrievalState,
    Store,
    StoreError,
    one_chunk,
)

RETRIEVALS_DIR = ".retrievals"
LONG_DIR = ".long"
RESERVED_DIRS = (RETRIEVALS_DIR, LONG_DIR)
# A segment longer than this goes to .long/: it plus the temporary name's ".", and
# ".glacierd-partial" must fit in NAME_MAX (keys up to this length always lived in place).
_MAX_SEGMENT = 255 - 1 - len(PARTIAL_SUFFIX)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


class LocalStore(Store):
    type = "local"

    def __init__(
        self, name: str, path: Path, retrieval_delay_seconds: float = 0.0, retrieval_days: int = 7
    ) -> None:
        super().__init__(name)
        self.root = path
        self.delay = timedelta(seconds=retrieval_delay_seconds)
        self.days = retrieval_days

    @property
    def archival(self) -> bool:
        return self.delay > timedelta(0)

    def describe(self) -> str:
        return f"local vault {self.root}"

    async def check_access(self) -> str:
        # open() found the directory writable (or created it).
        return f"{self.describe()} is writable; no credentials needed"

    def notification_check(self, topics: Sequence[str] | None, polling: str) -> str:
        return (
            "the local store needs none"
            if topics is None
            else "the local store sends no notifications"
        )

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"local vault directory {self.root} cannot be created ({exc.strerror})",
                "create it and make it writable by the glacierd user, or change store.local.path",
            ) from None
        if not await asyncio.to_thread(os.access, self.root, os.W_OK):
            raise StoreError(
                f"local vault directory {self.root} is not writable",
                f"run 'chown glacierd: {self.root}' or change store.local.path",
            )

    async def ping(self) -> None:
        # A vault on a mount that went away, or a directory removed: uploads would fail.
        if not await asyncio.to_thread(os.access, self.root, os.W_OK | os.X_OK):
            raise StoreError(
                f"local vault directory {self.root} is missing or not writable",
                "restore the directory (or its mount) or correct store.local.path",
            )

    def _path(self, key: str) -> Path:
        pure = PurePosixPath(key)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise StoreError(f"store key {key!r} is not a relative path inside the vault.")
        if pure.parts[0] in RESERVED_DIRS:
            raise StoreError(f"store key {key!r} uses a name the local vault reserves.")
        if any(len(os.fsencode(part)) > _MAX_SEGMENT for part in pure.parts):
            return self.root / LONG_DIR / _digest(key)
        return self.root.joinpath(*pure.parts)

    def _marker(self, key: str) -> Path:
        return self.root / RETRIEVALS_DIR / f"{_digest(key)}.json"

    async def _upload(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        kind: str,
        size_hint: int | None,
        digest: Digest,
    ) -> tuple[str, str | None]:
        path = self._path(key)
        if path.parent.name == LONG_DIR:
            # The key first, so that listing never meets an object it cannot name.
            await write_atomically(path.with_name(path.name + ".key"), one_chunk(key.encode()))
        await write_atomically(path, chunks)
        return key, "LOCAL_ARCHIVE" if self.archival else "LOCAL"

    async def _download(self, archive: ArchiveRef) -> AsyncIterator[bytes]:
        state = await self.retrieval_status(archive)
        if state.status != "ready":
            raise NotRetrievedError(
                f"archive {archive.key} is not retrieved yet (status {state.status})",
                "request a retrieval and wait until it is ready",
            )
        path = self._path(archive.key)
        if not await asyncio.to_thread(path.is_file):
            raise ArchiveNotFoundError(
                f"archive {archive.key} is not in the local vault {self.root}."
            )
        async for chunk in read_chunks(path):
            yield chunk

    async def _read_marker(self, key: str) -> dict[str, str] | None:
        try:
            text = await asyncio.to_thread(self._marker(key).read_text)
        except FileNotFoundError:
            return None
        return json.loads(text)

    async def request_retrieval(
        self, archive: ArchiveRef, tier: str | None = None
    ) -> RetrievalState:
        if not await asyncio.to_thread(self._path(archive.key).is_file):
            raise ArchiveNotFoundError(
                f"archive {archive.key} is not in the local vault {self.root}."
            )
        state = await self.retrieval_status(archive)
        if state.status in ("pending", "ready") and self.archival:
            return state  # one retrieval at a time, like S3's RestoreAlreadyInProgress
        now = datetime.now(UTC)
        ready_at = now + self.delay
        marker = {
            "key": archive.key,
            "requested_at": now.isoformat(),
            "ready_at": ready_at.isoformat(),
            "expires_at": (ready_at + timedelta(days=self.days)).isoformat(),
            "tier": tier or "Standard",
        }
        # Atomic: a crash or a full disk leaves the old marker or none, never half of one.
        await write_atomically(self._marker(archive.key), one_chunk(json.dumps(marker).encode()))
        return await self.retrieval_status(archive)

    async def retrieval_status(self, archive: ArchiveRef) -> RetrievalState:
        if not self.archival:
            return RetrievalState("ready")
        marker = await self._read_marker(archive.key)
        if marker is None:
            return RetrievalState("available")
        now = datetime.now(UTC)
        ready_at = datetime.fromisoformat(marker["ready_at"])
        expires_at = datetime.fromisoformat(marker["expires_at"])
        if now < ready_at:
            return RetrievalState("pending", expected_at=ready_at)
        if now < expires_at:
            return RetrievalState("ready", ready_until=expires_at)
        return RetrievalState("available", reason="the retrieved copy expired")

    def expected_retrieval(self, storage_class: str | None, tier: str) -> ExpectedRetrieval:
        """The configured delay, whatever the tier (none without a delay)."""
        delay = self.delay.total_seconds()
        return ExpectedRetrieval(delay, delay)

    async def delete(self, archive: ArchiveRef) -> None:
        path = self._path(archive.key)
        await asyncio.to_thread(path.unlink, missing_ok=True)
        if path.parent.name == LONG_DIR:
            await asyncio.to_thread(path.with_name(path.name + ".key").unlink, missing_ok=True)
        await asyncio.to_thread(self._marker(archive.key).unlink, missing_ok=True)

    async def abort_incomplete(self) -> int:
        def sweep() -> int:
            removed = 0
            for partial in self.root.rglob(f"*{PARTIAL_SUFFIX}"):
                partial.unlink(missing_ok=True)
                removed += 1
            return removed

        return await asyncio.to_thread(sweep)
