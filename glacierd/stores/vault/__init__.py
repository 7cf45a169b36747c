"""A Glacier vault (the legacy Glacier API) as a store, for people who already have vaults.

The vault API closed to new AWS customers on 2025-12-15; new accounts should use the S3
store with a Glacier storage class.

    store.py   the store: client, retrieval jobs asked and read, download, delete, probe
    upload.py  UploadArchive or a tree-hashed multipart upload; Glacier names the archive
    jobs.py    what a retrieval job's description means for the archive
    events.py  Glacier's job-completion messages and what they mean for an archive
    errors.py  Glacier's failures as one sentence naming the vault and the fix
"""

from importlib import import_module
from typing import Any

# The store and its uploads need aioboto3; the job and event modules do not. Loading them on
# first use keeps boto out of a daemon that only parses Glacier's job messages.
_LAZY = {
    "VaultStore": "glacierd.stores.vault.store",
    "DESCRIPTION_PREFIX": "glacierd.stores.vault.upload",
    "EMPTY_ARCHIVE_KEY": "glacierd.stores.vault.upload",
    "STORAGE_CLASS": "glacierd.stores.vault.upload",
    "archive_description": "glacierd.stores.vault.upload",
    "empty_key": "glacierd.stores.vault.upload",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)


__all__ = [
    "DESCRIPTION_PREFIX",
    "EMPTY_ARCHIVE_KEY",
    "STORAGE_CLASS",
    "VaultStore",
    "archive_description",
    "empty_key",
]
