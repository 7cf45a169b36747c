"""Reading the configuration file and validating it into a Config."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from glacierd.config.errors import EXAMPLE_FILE, ConfigError
from glacierd.config.formatting import problems_of
from glacierd.config.model import Config

DEFAULT_CONFIG_PATH = "/etc/glacierd/glacierd.toml"

_CONFIG = TypeAdapter(Config)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the configuration file (``--config``, GLACIERD_CONFIG, or default)."""
    chosen = Path(path or os.environ.get("GLACIERD_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        text = chosen.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {chosen} does not exist",
            f"copy {EXAMPLE_FILE} there or pass --config PATH",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"configuration file {chosen} cannot be read ({exc.strerror})",
            "check its permissions",
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"configuration file {chosen} is not UTF-8 text (byte {exc.start})",
            "save it as UTF-8",
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"configuration file {chosen} is not valid TOML: {exc}",
            f"correct it at that place ({EXAMPLE_FILE} shows the format)",
        ) from None
    return config_from_dict(data, chosen)


def config_from_dict(
    data: dict[str, Any], path: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate settings (what a TOML file holds) into a Config, reporting every problem at
    once. ``environ`` (default: the process's) supplies the variables that replace settings."""
    context = {"environ": os.environ if environ is None else environ, "path": path}
    try:
        return _CONFIG.validate_python(data, context=context)
    except ValidationError as exc:
        # `from None`: pydantic's own text quotes the input, which may hold a password.
        raise ConfigError.of(problems_of(exc, data), path) from None
