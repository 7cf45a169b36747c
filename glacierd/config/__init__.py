"""Every glacierd setting: typed, documented in deploy/glacierd.example.toml, validated at load.

The settings are pydantic models, one per TOML section (``model.py`` holds the whole file;
``connections.py``, ``stores.py`` and ``sections.py`` its sections; ``fields.py`` the value
types). Every model forbids keys it does not know, and every value is checked when the
file is loaded. All problems are reported at once, each as one sentence naming the setting
and the fix (``formatting.py``); the CLI prints them and exits non-zero instead of showing
a traceback. ``ConfigError`` also carries each problem's ``detail`` and ``fix``.
"""

from glacierd.config.connections import ENV_OVERRIDES, CatalogConfig, DatabaseConfig
from glacierd.config.errors import ConfigError, ConfigProblem
from glacierd.config.fields import S3_STORAGE_CLASSES, STORE_TYPES, TIERS, cron_trigger
from glacierd.config.loading import DEFAULT_CONFIG_PATH, config_from_dict, load_config
from glacierd.config.model import Config
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
from glacierd.config.stores import (
    LocalStoreConfig,
    S3StoreConfig,
    StoreConfig,
    VaultStoreConfig,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_OVERRIDES",
    "S3_STORAGE_CLASSES",
    "STORE_TYPES",
    "TIERS",
    "ApiConfig",
    "CatalogConfig",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DatabaseConfig",
    "FilesConfig",
    "HealthConfig",
    "HooksConfig",
    "LocalStoreConfig",
    "LoggingConfig",
    "RestoreConfig",
    "S3StoreConfig",
    "ScheduleConfig",
    "SnsConfig",
    "SqsConfig",
    "StoreConfig",
    "VaultStoreConfig",
    "config_from_dict",
    "cron_trigger",
    "load_config",
]
