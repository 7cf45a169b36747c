"""The Glacier tree hash against botocore's reference implementation."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
from botocore.utils import calculate_tree_hash

from glacierd.pipeline.treehash import CHUNK, TreeHash, combine_tree_hashes, tree_hash

MIB = 1024 * 1024
SIZES = [
    0,
    1,
    1000,
    MIB - 1,
    MIB,
    MIB + 1,
    2 * MIB,
    3 * MIB + MIB // 2,
    4 * MIB,
    5 * MIB + 7,
    9 * MIB,
]


def _data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + size).randbytes(size)


def _reference(data: bytes) -> str:
    return calculate_tree_hash(io.BytesIO(data))


@pytest.mark.parametrize("size", SIZES)
def test_whole_buffer_matches_botocore(size: int) -> None:
    data = _data(size)
    assert tree_hash(data) == _reference(data)
    assert TreeHash(data).size == size


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("seed", [1, 2])
def test_any_chunking_matches_botocore(size: int, seed: int) -> None:
    data = _data(size, seed)
    rng = random.Random(seed)
    hasher = TreeHash()
    pos = 0
    while pos < size:
        # odd sizes straddling chunk boundaries, sometimes larger than a chunk
        step = rng.choice([1, 7, 4096, 65_537, CHUNK - 3, CHUNK, CHUNK + 5, 2 * CHUNK + 1])
        hasher.update(data[pos : pos + step])
        pos += step
    assert hasher.hexdigest() == _reference(data)


def test_digest_is_repeatable_and_update_continues() -> None:
    data = _data(3 * MIB + 12345)
    hasher = TreeHash()
    hasher.update(data[: MIB + 10])
    assert hasher.hexdigest() == _reference(data[: MIB + 10])  # a peek does not end it
    hasher.update(memoryview(data)[MIB + 10 :])
    assert hasher.hexdigest() == hasher.hexdigest() == _reference(data)


def test_empty_is_sha256_of_nothing() -> None:
    assert TreeHash().hexdigest() == hashlib.sha256(b"").hexdigest() == _reference(b"")
    assert combine_tree_hashes([]).hex() == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("part_mib", [1, 2, 4])
@pytest.mark.parametrize("size", [1, MIB, MIB + 1, 3 * MIB + MIB // 2, 8 * MIB, 9 * MIB])
def test_combining_part_hashes_gives_the_archive_tree_hash(part_mib: int, size: int) -> None:
    data = _data(size, part_mib)
    part = part_mib * MIB
    hashes = [TreeHash(data[i : i + part]).digest() for i in range(0, size, part)]
    assert combine_tree_hashes(hashes).hex() == _reference(data)


def test_combine_rejects_hex_strings() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        combine_tree_hashes([b"ab" * 32])
