"""Streaming SHA-256: bytes are hashed as they pass, never collected."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, AsyncIterable

_THREAD_THRESHOLD = 256 * 1024


class Digest:
    """Counts and hashes the bytes of a stream while it flows through ``wrap``."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self.size += len(chunk)

    @property
    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    async def wrap(self, chunks: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
        async for chunk in chunks:
            if chunk:
                if len(chunk) >= _THREAD_THRESHOLD:
                    # hashlib releases the GIL: big chunks are hashed off the event loop.
                    await asyncio.to_thread(self.update, chunk)
                else:
                    self.update(chunk)
                yield chunk


async def rechunk(chunks: AsyncIterable[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """Regroup a stream into pieces of exactly ``size`` bytes (the last may be shorter).

    Multipart uploads need equal parts; memory stays bounded by about two pieces.
    """
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)
