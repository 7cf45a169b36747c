"""The local vault: retrieval markers are written atomically and never shared by two keys,
and keys too long for one file name (NAME_MAX) are stored, listed, read and deleted."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from glacierd.stores.base import ArchiveRef, StoreError
from glacierd.stores.local import LocalStore
from tests.small_fs import fill
from tests.store_listing import listing


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def opened(path: Path, delay: float = 0.0) -> LocalStore:
    store = LocalStore("local", path, retrieval_delay_seconds=delay)
    await store.open()
    return store


async def put(store: LocalStore, key: str, data: bytes) -> ArchiveRef:
    result = await store.put(key, one(data), kind="file")
    assert result.key == key
    return ArchiveRef(result.key, result.size, result.sha256)


async def test_keys_that_differ_only_by_an_escaped_slash_have_their_own_retrievals(
    tmp_path: Path,
):
    store = await opened(tmp_path / "vault", delay=3600)
    slash = await put(store, "files/a/b", b"one")
    escaped = await put(store, "files/a%2Fb", b"two")
    assert (await store.request_retrieval(slash)).status == "pending"
    # The other key was never asked for: it must not look pending.
    assert (await store.retrieval_status(escaped)).status == "available"
    await store.delete(escaped)
    assert (await store.retrieval_status(slash)).status == "pending"


async def test_a_retrieval_marker_is_never_left_half_written(
    small_fs: Callable[..., Path],
):
    vault = small_fs("vault", "256k")
    store = await opened(vault, delay=3600)
    ref = await put(store, "files/x", b"data")
    filler = fill(vault, leave=0)  # the disk is full when the marker is written
    with pytest.raises(OSError):
        await store.request_retrieval(ref)
    # Nothing half-written: the status is readable and says nobody asked yet.
    assert (await store.retrieval_status(ref)).status == "available"
    filler.unlink()
    assert (await store.request_retrieval(ref)).status == "pending"
    assert (await store.retrieval_status(ref)).status == "pending"


@pytest.mark.parametrize(
    "key",
    [
        "files/" + "x" * 300,  # one name beyond NAME_MAX
        "files/" + "%FF" * 200 + ".bin",  # an escaped non-UTF-8 name, 600 bytes
        "files/" + "d" * 250 + "/" + "\u00e9" * 200,  # both a long folder and a long name
        "files/" + "y" * 240,  # fits on its own, not with the temporary name's suffix
    ],
)
async def test_keys_longer_than_a_file_name_round_trip(tmp_path: Path, key: str):
    store = await opened(tmp_path / "vault", delay=3600)
    data = os.urandom(5000)
    ref = await put(store, key, data)
    ref = ArchiveRef(ref.key, ref.size, hashlib.sha256(data).hexdigest())
    assert (await store.request_retrieval(ref)).status == "pending"
    assert [(o.key, o.size) for o in await listing(store)] == [(key, 5000)]
    await store.delete(ref)
    assert await listing(store) == []
    assert (await store.retrieval_status(ref)).status == "available"


async def test_long_keys_are_readable(tmp_path: Path):
    store = await opened(tmp_path / "vault")
    key = "files/" + "z" * 400
    data = os.urandom(3000)
    await put(store, key, data)
    dest = tmp_path / "out"
    got = await store.get(ArchiveRef(key, len(data), hashlib.sha256(data).hexdigest()), dest)
    assert got == 3000 and dest.read_bytes() == data


async def test_reserved_names_are_refused(tmp_path: Path):
    store = await opened(tmp_path / "vault")
    for key in (".retrievals/x", ".long/x", "../x", "/abs"):
        with pytest.raises(StoreError):
            await put(store, key, b"x")
