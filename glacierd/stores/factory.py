"""Build the configured store. Imports are local so a local-only setup never loads boto."""

from __future__ import annotations

from glacierd.config import StoreConfig
from glacierd.stores.base import Store


def build_store(cfg: StoreConfig) -> Store:
    if cfg.type == "local":
        from glacierd.stores.local import LocalStore

        assert cfg.local is not None
        return LocalStore(
            cfg.name, cfg.local.path, cfg.local.retrieval_delay_seconds, cfg.local.retrieval_days
        )
    if cfg.type == "s3":
        from glacierd.stores.s3 import S3Store

        assert cfg.s3 is not None
        return S3Store(cfg.name, cfg.s3)
    if cfg.type == "vault":
        from glacierd.stores.vault import VaultStore

        assert cfg.vault is not None
        return VaultStore(cfg.name, cfg.vault)
    raise ValueError(f"unknown store type {cfg.type}")
