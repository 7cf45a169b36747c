"""[store] and its three kinds: [store.local], [store.s3], [store.vault].

Only the section of the chosen ``type`` is read; another kind's section is refused rather
than silently ignored, since it usually means the type was not switched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, StrictStr, ValidationInfo, field_validator, model_validator
from pydantic.dataclasses import dataclass

from glacierd.config.errors import invalid
from glacierd.config.fields import (
    DEFAULT_STATE_DIR,
    SECTION,
    AbsolutePath,
    LockMode,
    NonNegativeSeconds,
    PositiveInt,
    StorageClass,
    StoreType,
    Tier,
)

MIB = 1024 * 1024


def _required(value: Any, hint: str) -> Any:
    if value in (None, ""):
        raise invalid("{setting} is missing", hint)
    return value


@dataclass(frozen=True, config=SECTION)
class LocalStoreConfig:
    """A directory acting as a vault, optionally as slow to retrieve from as Glacier."""

    # Config makes the default state_dir/vault; this one is for the default state_dir.
    path: AbsolutePath = DEFAULT_STATE_DIR / "vault"
    retrieval_delay_seconds: NonNegativeSeconds = 0.0
    retrieval_days: PositiveInt = 7


@dataclass(frozen=True, config=SECTION)
class S3StoreConfig:
    bucket: StrictStr = Field(default="", validate_default=True)
    prefix: StrictStr = ""
    region: StrictStr | None = None
    storage_class: StorageClass = "GLACIER"
    database_storage_class: StorageClass | None = None
    files_storage_class: StorageClass | None = None
    endpoint_url: StrictStr | None = None
    profile: StrictStr | None = None
    default_tier: Tier = "Standard"
    restore_days: PositiveInt = 7
    part_concurrency: PositiveInt = 4
    # S3 Object Lock on every archive uploaded, and SSE-KMS (stores/s3/protection.py).
    object_lock_mode: LockMode | None = None
    object_lock_days: PositiveInt | None = None
    kms_key_id: StrictStr | None = None

    @model_validator(mode="after")
    def _lock_mode_and_days_together(self) -> S3StoreConfig:
        if (self.object_lock_mode is None) != (self.object_lock_days is None):
            given, missing = (
                ("object_lock_mode", "object_lock_days")
                if self.object_lock_days is None
                else ("object_lock_days", "object_lock_mode")
            )
            raise invalid(
                f"{{section}}.{given} is set but {{section}}.{missing} is not",
                "set both (a mode, GOVERNANCE or COMPLIANCE, and the days each archive is "
                "kept), or neither",
                key=missing,
            )
        return self

    @field_validator("bucket", mode="before")
    @classmethod
    def _bucket_is_given(cls, value: Any) -> Any:
        return _required(value, "set it to the name of your S3 bucket")

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, bucket: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
            raise invalid(
                f"{{setting}} {bucket!r} is not a valid bucket name",
                "use 3–63 lower-case letters, digits, dots and hyphens",
            )
        return bucket

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_folder(cls, prefix: str) -> str:
        # Keys are prefix + name: the prefix ends with "/" and an S3 key never starts with one.
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return prefix.lstrip("/")

    def class_for(self, kind: str) -> str:
        if kind == "database" and self.database_storage_class:
            return self.database_storage_class
        if kind == "file" and self.files_storage_class:
            return self.files_storage_class
        return self.storage_class


@dataclass(frozen=True, config=SECTION)
class VaultStoreConfig:
    vault: StrictStr = Field(default="", validate_default=True)
    region: StrictStr | None = None
    account_id: StrictStr = "-"
    endpoint_url: StrictStr | None = None
    profile: StrictStr | None = None
    default_tier: Tier = "Standard"
    sns_topic: StrictStr | None = None
    multipart_threshold: PositiveInt = 64 * MIB
    part_size: PositiveInt = 8 * MIB

    @field_validator("vault", mode="before")
    @classmethod
    def _vault_is_given(cls, value: Any) -> Any:
        return _required(value, "set it to the name of your Glacier vault")

    @field_validator("part_size")
    @classmethod
    def _glacier_part_size(cls, part_size: int) -> int:
        mibs = part_size // MIB
        # Glacier takes 1 MiB times a power of two, at most 4 GiB.
        if part_size % MIB or mibs & (mibs - 1) or part_size > 4096 * MIB:
            raise invalid(
                f"{{setting}} {part_size} is not 1 MiB times a power of two up to 4 GiB",
                "use for example 8388608 (8 MiB)",
            )
        return part_size


@dataclass(frozen=True, config=SECTION)
class StoreConfig:
    type: StoreType = "local"
    # Which files are archived is tracked per store name: default, the type.
    name: StrictStr = Field(default=None, validate_default=True)
    local: LocalStoreConfig | None = Field(default=None, validate_default=True)
    s3: S3StoreConfig | None = Field(default=None, validate_default=True)
    vault: VaultStoreConfig | None = Field(default=None, validate_default=True)

    @field_validator("name", mode="before")
    @classmethod
    def _name_defaults_to_the_type(cls, value: Any, info: ValidationInfo) -> Any:
        return info.data.get("type", "local") if value is None else value

    @field_validator("local", "s3", "vault", mode="before")
    @classmethod
    def _only_the_chosen_kind(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.field_name
        chosen = info.data.get("type")
        if chosen is None:  # store.type itself is wrong (and reported): read no kind
            return None
        if kind != chosen:
            if value is not None:
                raise invalid(
                    f"[{{setting}}] is set but {{section}}.type is {chosen!r}",
                    f"remove that section or set {{section}}.type = {kind!r}",
                )
            return None
        return {} if value is None else value


def with_local_default(store: Any, state_dir: Path) -> Any:
    """The raw [store] table with the local vault defaulting to state_dir/vault."""
    if not isinstance(store, dict) or store.get("type", "local") != "local":
        return store
    local = store.get("local", {})
    if not isinstance(local, dict) or local.get("path") not in (None, ""):
        return store
    return {**store, "local": {**local, "path": state_dir / "vault"}}
