"""The SHA-256 tree hash the Glacier vault API uses to check uploads and downloads.

Glacier's definition (docs: "Computing Checksums"): hash every 1 MiB chunk of the data (the
last chunk may be shorter), then hash the concatenation of neighbouring pairs, level by
level, carrying an odd last node up unchanged, until one digest remains. Empty data hashes
to SHA-256 of nothing (what ``botocore.utils.calculate_tree_hash`` returns).

``TreeHash`` computes it incrementally from bytes arriving in any chunking, with memory
bounded by one chunk plus one digest per tree level: instead of keeping every leaf and
combining level by level at the end, it merges two subtrees as soon as they are of equal
height (a binary counter). The level-by-level tree for n leaves is exactly the tree whose
left subtrees are complete (2^k leaves) and whose odd nodes are carried up, so folding the
remaining subtrees right to left at the end gives the same digest; the tests compare it
with botocore on many sizes.

For a multipart upload each part is 1 MiB × 2^n bytes (all equal but the last), so a part's
tree hash is a node of the whole archive's tree; ``combine_tree_hashes`` turns the parts'
hashes into the archive's tree hash, which ``CompleteMultipartUpload`` needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

CHUNK = 1024 * 1024  # Glacier's fixed leaf size


def _pair(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(left + right).digest()


class _Nodes:
    """Subtrees waiting for a partner: (height, digest), heights strictly decreasing."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []

    def push(self, digest: bytes) -> None:
        height = 0
        while self._stack and self._stack[-1][0] == height:
            _, left = self._stack.pop()
            digest = _pair(left, digest)
            height += 1
        self._stack.append((height, digest))

    def root(self) -> bytes | None:
        if not self._stack:
            return None
        digest = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            digest = _pair(left, digest)
        return digest


class TreeHash:
    """Incremental Glacier tree hash: ``update`` with bytes in any chunking, then ``digest``."""

    def __init__(self, data: bytes | bytearray | memoryview = b"") -> None:
        self._nodes = _Nodes()
        self._pending = bytearray()
        self.size = 0
        if data:
            self.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self.size += len(view)
        if self._pending:
            take = min(CHUNK - len(self._pending), len(view))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < CHUNK:
                return
            self._nodes.push(hashlib.sha256(self._pending).digest())
            self._pending.clear()
        # Whole chunks straight from the caller's buffer, without copying.
        while len(view) >= CHUNK:
            self._nodes.push(hashlib.sha256(view[:CHUNK]).digest())
            view = view[CHUNK:]
        self._pending += view

    def digest(self) -> bytes:
        """The tree hash of everything so far (does not end the stream)."""
        nodes = self._nodes
        if self._pending:
            # Finish on a copy so that more bytes may still be added afterwards.
            nodes = _Nodes()
            nodes._stack = list(self._nodes._stack)
            nodes.push(hashlib.sha256(self._pending).digest())
        root = nodes.root()
        return root if root is not None else hashlib.sha256(b"").digest()

    def hexdigest(self) -> str:
        return self.digest().hex()


def tree_hash(data: bytes | bytearray | memoryview) -> str:
    """The hex tree hash of a buffer (convenience for small data and tests)."""
    return TreeHash(data).hexdigest()


def combine_tree_hashes(part_hashes: Iterable[bytes]) -> bytes:
    """The archive's tree hash from its parts' tree hashes (raw 32-byte digests, in order).

    Valid when every part but the last is 1 MiB × 2^n bytes for one n — Glacier's rule for
    multipart uploads — because each part's hash is then a node of the archive's tree.
    No parts means empty data.
    """
    nodes = _Nodes()
    for digest in part_hashes:
        if len(digest) != 32:
            raise ValueError("combine_tree_hashes expects raw 32-byte SHA-256 digests")
        nodes.push(digest)
    root = nodes.root()
    return root if root is not None else hashlib.sha256(b"").digest()
