"""Reading and writing local files in chunks without blocking the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

CHUNK = 1024 * 1024
# Temporary files while writing: a suffix no upload has by accident, so start-up recovery
# and the attachments walk can recognise (and skip or sweep) them.
PARTIAL_SUFFIX = ".glacierd-partial"


async def read_chunks(path: Path, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        while True:
            chunk = await asyncio.to_thread(handle.read, chunk_size)
            if not chunk:
                return
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


async def write_atomically(
    dest: Path, chunks: AsyncIterable[bytes], *, overwrite: bool = True
) -> int:
    """Write a stream to ``dest`` through a temporary sibling, fsync, then rename into place.

    Returns the number of bytes written. On any error the temporary file is removed and
    ``dest`` is untouched. With ``overwrite=False`` an existing ``dest`` raises
    FileExistsError (a hard link is the atomic "create only if absent").
    """
    tmp = dest.with_name(f".{dest.name}{PARTIAL_SUFFIX}")
    await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
    handle = await asyncio.to_thread(open, tmp, "wb")
    size = 0
    try:
        async for chunk in chunks:
            await asyncio.to_thread(handle.write, chunk)
            size += len(chunk)
        await asyncio.to_thread(handle.flush)
        await asyncio.to_thread(os.fsync, handle.fileno())
        await asyncio.to_thread(handle.close)
        if overwrite:
            await asyncio.to_thread(os.replace, tmp, dest)
        else:
            await asyncio.to_thread(os.link, tmp, dest)
            await asyncio.to_thread(tmp.unlink)
    except BaseException:
        await asyncio.to_thread(handle.close)
        await asyncio.to_thread(tmp.unlink, missing_ok=True)
        raise
    return size
