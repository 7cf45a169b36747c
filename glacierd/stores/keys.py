"""Store keys for attached files, safe for every store.

A file's key keeps its catalog path readable (``files/<path>``), so the store alone tells
what it holds. Catalog paths are already valid UTF-8 without control characters (see
``sources/attachments.catalog_path``), which S3, vault descriptions and the local vault all
accept. Only length needs care: S3 allows 1,024 bytes per key, prefix included, and a path
may be up to 4,096. A path too long to fit is stored under ``files/%2F<SHA-256 of the
path>``; ``%2F`` never occurs in a catalog path (a "/" is never escaped, and a literal
"%2F" is escaped as "%252F"), so such a key cannot meet a real path's key.
"""

from __future__ import annotations

import hashlib

FILES_PREFIX = "files/"
# Room for the longest S3 prefix we expect and a suffix such as "@backup123456".
MAX_PATH_BYTES = 768


def file_key_path(catalog_path: str) -> str:
    """The part of a file's key that names it: the catalog path, or its digest if too long."""
    if len(catalog_path.encode("utf-8")) <= MAX_PATH_BYTES:
        return catalog_path
    return "%2F" + hashlib.sha256(catalog_path.encode("utf-8")).hexdigest()


def file_key(catalog_path: str, suffix: str = "") -> str:
    """``files/<path><suffix>`` for a file archive (``suffix`` tells attempts apart)."""
    return f"{FILES_PREFIX}{file_key_path(catalog_path)}{suffix}"
