"""A Glacier vault (the legacy Glacier API) as a store, for people who already have vaults.

The vault API closed to new AWS customers on 2025-12-15; new accounts should use the S3
store with a Glacier storage class.

    store.py   the store: client, retrieval jobs asked and read, download, delete, probe
    upload.py  UploadArchive or a tree-hashed multipart upload; Glacier names the archive
    jobs.py    what a retrieval job's description means for the archive
    errors.py  Glacier's failures as one sentence naming the vault and the fix
"""

from glacierd.stores.vault.store import VaultStore
from glacierd.stores.vault.upload import (
    DESCRIPTION_PREFIX,
    EMPTY_ARCHIVE_KEY,
    STORAGE_CLASS,
    archive_description,
    empty_key,
)

__all__ = [
    "DESCRIPTION_PREFIX",
    "EMPTY_ARCHIVE_KEY",
    "STORAGE_CLASS",
    "VaultStore",
    "archive_description",
    "empty_key",
]
