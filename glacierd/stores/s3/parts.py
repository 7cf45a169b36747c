"""How a stream is cut into multipart-upload parts, so S3's limits are never hit.

S3 allows at most 10,000 parts of 5 MiB–5 GiB (only the last may be smaller). The part size
comes from ``size_hint`` with headroom, and parts grow when a stream turns out longer than
announced or its size is unknown, so a database dump of several TiB still fits.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
GiB = 1024 * MiB
#: S3's bounds for a multipart upload: every part but the last is 5 MiB–5 GiB; 10,000 parts.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
#: Smallest part glacierd uses: fewer PUTs (billed per 1,000) than the SDK's 5 MiB default.
DEFAULT_PART_SIZE = 8 * MiB
#: With a size hint, aim for at most this many parts: 10 % headroom if the hint is low.
TARGET_PARTS = 9_000
#: After the planned parts, parts double every this many parts (hint too low).
OVERRUN_GROW_EVERY = 100
#: Without a size hint, parts double every this many parts: 8 MiB parts hold the first
#: 8 GiB, 16 MiB the next 16 GiB, …; 10,000 parts reach about 8 TiB.
UNKNOWN_GROW_EVERY = 1_000


@dataclass(frozen=True)
class PartPlan:
    """How a stream is cut into parts: ``base``-sized pieces, grouped into growing parts.

    Part *n* (1-based) is ``pieces(n)`` pieces of ``base`` bytes. S3 lets parts differ in
    size (only the vault API wants them equal), so when a stream runs past ``steady_parts``
    the parts double every ``grow_every`` parts and the 10,000-part limit is not reached.
    """

    base: int
    steady_parts: int
    grow_every: int

    def pieces(self, part_number: int) -> int:
        if part_number <= self.steady_parts:
            return 1
        doublings = min((part_number - 1 - self.steady_parts) // self.grow_every + 1, 40)
        return max(1, min(2**doublings, MAX_PART_SIZE // self.base))

    def size_of(self, part_number: int) -> int:
        return self.base * self.pieces(part_number)

    def capacity(self) -> int:
        """The largest stream this plan can upload within MAX_PARTS parts."""
        return sum(self.size_of(n) for n in range(1, MAX_PARTS + 1))


def plan_parts(size_hint: int | None, min_part_size: int = DEFAULT_PART_SIZE) -> PartPlan:
    """Choose part sizes so the part limit is never hit and PUTs stay few.

    With a hint: parts of ``max(min_part_size, hint / 9000 rounded up to a MiB)`` (at most
    5 GiB), so a correct hint needs at most 9,000 parts; if the stream turns out longer,
    parts double every 100 parts after that. Without a hint (a database dump): start at
    ``min_part_size`` and double every 1,000 parts, so small dumps use small parts (little
    memory) and a dump of several TiB still fits.
    """
    min_part_size = max(MIN_PART_SIZE, min(min_part_size, MAX_PART_SIZE))
    if size_hint is None:
        return PartPlan(min_part_size, UNKNOWN_GROW_EVERY, UNKNOWN_GROW_EVERY)
    per_part = -(-max(size_hint, 0) // TARGET_PARTS)  # ceiling division
    per_part = -(-per_part // MiB) * MiB  # whole MiB
    if per_part > MAX_PART_SIZE:
        # Beyond 9,000 × 5 GiB (~44 TiB) only all 10,000 parts of 5 GiB will do.
        return PartPlan(MAX_PART_SIZE, MAX_PARTS, OVERRUN_GROW_EVERY)
    return PartPlan(max(min_part_size, per_part), TARGET_PARTS, OVERRUN_GROW_EVERY)
