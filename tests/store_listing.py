"""What a store holds, listed as an operator would look at it: for tests only. glacierd
itself never lists a store (the catalog is the list of archives, and a vault cannot be
listed without an inventory job that takes hours)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from glacierd.pipeline.files import PARTIAL_SUFFIX
from glacierd.stores.base import Store
from glacierd.stores.local import LONG_DIR, RESERVED_DIRS, LocalStore
from glacierd.stores.s3 import S3Store


@dataclass(frozen=True)
class Listed:
    key: str
    size: int


async def listing(store: Store, prefix: str = "") -> list[Listed]:
    """The archives under ``prefix``, sorted by key (catalog keys: no bucket prefix)."""
    if isinstance(store, LocalStore):
        return await asyncio.to_thread(_walk_local, store.root, prefix)
    if isinstance(store, S3Store):
        return await _list_s3(store, prefix)
    raise TypeError(f"a {store.type} store cannot be listed")


def _walk_local(root: Path, prefix: str) -> list[Listed]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        top = Path(dirpath) == root
        dirnames[:] = [d for d in dirnames if not (top and d in RESERVED_DIRS)]
        for name in filenames:
            if name.endswith(PARTIAL_SUFFIX):
                continue
            full = Path(dirpath) / name
            key = full.relative_to(root).as_posix()
            if key.startswith(prefix):
                found.append(Listed(key, full.stat().st_size))
    # Keys too long for a file name live under .long/<digest>, named by <digest>.key.
    long_dir = root / LONG_DIR
    for keyfile in long_dir.glob("*.key") if long_dir.is_dir() else []:
        obj = keyfile.with_suffix("")
        key = keyfile.read_text()
        if obj.is_file() and key.startswith(prefix):
            found.append(Listed(key, obj.stat().st_size))
    return sorted(found, key=lambda o: o.key)


async def _list_s3(store: S3Store, prefix: str) -> list[Listed]:
    client = store._require_client()
    strip = len(store.cfg.prefix)
    found = []
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=store.cfg.bucket, Prefix=store.cfg.prefix + prefix):
        for obj in page.get("Contents", []):
            found.append(Listed(obj["Key"][strip:], int(obj["Size"])))
    return sorted(found, key=lambda o: o.key)
