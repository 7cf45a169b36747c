"""The S3 store: archives as objects in one bucket, usually in a Glacier storage class.

The S3 Glacier storage classes are the Glacier a new AWS customer can use: GLACIER
(Flexible Retrieval) and DEEP_ARCHIVE need a ``RestoreObject`` before they can be read;
GLACIER_IR, STANDARD and STANDARD_IA are readable at once. S3-compatible stores without
archive classes (R2, B2, Wasabi) behave like the latter: retrieval is a no-op.

    store.py           the store: keys, client, retrieval, download, delete, probe
    upload.py          PutObject or a multipart upload with bounded memory, aborted on failure
    parts.py           part sizes that never hit S3's 10,000-part limit
    restores.py        tiers, how long a restore takes, the x-amz-restore header
    events.py          S3's ObjectRestore notifications and what they mean for an archive
    download.py        GetObject, resumed where a dropped connection broke off
    errors.py          S3's failures as one sentence naming the bucket and the fix
"""

from typing import Any

from glacierd.stores.s3.parts import (
    DEFAULT_PART_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    GiB,
    MiB,
    PartPlan,
    plan_parts,
)
from glacierd.stores.s3.restores import (
    ARCHIVAL_CLASSES,
    RESTORE_TIMES,
    RestoreHeader,
    parse_restore_header,
    retrieval_state,
)


def __getattr__(name: str) -> Any:
    # The store needs aioboto3; events, parts and the Restore header do not. Loading the
    # store on first use keeps boto out of a daemon that only parses S3 notifications.
    if name == "S3Store":
        from glacierd.stores.s3.store import S3Store

        return S3Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARCHIVAL_CLASSES",
    "DEFAULT_PART_SIZE",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "RESTORE_TIMES",
    "GiB",
    "MiB",
    "PartPlan",
    "RestoreHeader",
    "S3Store",
    "parse_restore_header",
    "plan_parts",
    "retrieval_state",
]
