"""Config: the whole file, one section per attribute.

Sections are validated in the order of the fields below, so a section whose default comes
from another (the catalog's connection from [database], the local vault from state_dir)
comes after it and finds it in ``info.data`` — if it was valid.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any

from pydantic import ValidationInfo, field_validator, model_validator
from pydantic.dataclasses import dataclass

from glacierd.config.connections import CatalogConfig, DatabaseConfig
from glacierd.config.fields import (
    DEFAULT_STATE_DIR,
    SECTION,
    AbsolutePath,
    PositiveSeconds,
    section,
)
from glacierd.config.monitoring import HealthConfig, HooksConfig
from glacierd.config.sections import (
    ApiConfig,
    FilesConfig,
    LoggingConfig,
    RestoreConfig,
    ScheduleConfig,
    SnsConfig,
)
from glacierd.config.sqs import SqsConfig
from glacierd.config.stores import StoreConfig, with_local_default


@dataclass(frozen=True, config=SECTION)
class Config:
    # Fetched archives, safety snapshots and the default local vault.
    state_dir: AbsolutePath = DEFAULT_STATE_DIR
    shutdown_timeout_seconds: PositiveSeconds = 30.0
    database: DatabaseConfig = section()
    catalog: CatalogConfig = section()
    files: FilesConfig = section()
    store: StoreConfig = section()
    schedule: ScheduleConfig = section()
    api: ApiConfig = section()
    sns: SnsConfig = section()
    sqs: SqsConfig = section()
    logging: LoggingConfig = section()
    restore: RestoreConfig = section()
    health: HealthConfig = section()
    hooks: HooksConfig = section()
    # The file the settings came from (None when built in code); not a setting itself.
    path: Path | None = field(default=None, init=False)

    @field_validator("catalog", mode="before")
    @classmethod
    def _catalog_defaults_to_the_database(cls, value: Any, info: ValidationInfo) -> Any:
        database = info.data.get("database")
        if database is not None and isinstance(value, dict) and value.get("dsn") in (None, ""):
            # GLACIERD_CATALOG_DSN still replaces this default (see resolve_dsn).
            return {**value, "dsn": database.conninfo}
        return value

    @field_validator("store", mode="before")
    @classmethod
    def _local_vault_in_state_dir(cls, value: Any, info: ValidationInfo) -> Any:
        state_dir = info.data.get("state_dir")
        return value if state_dir is None else with_local_default(value, state_dir)

    @model_validator(mode="after")
    def _remember_the_file(self, info: ValidationInfo) -> Config:
        context = info.context if isinstance(info.context, dict) else {}
        object.__setattr__(self, "path", context.get("path"))  # frozen: set while validating
        return self
