"""Helpers shared by the configuration tests: valid base settings, deep merges with
deletions, and `glacierd check-config` run as an operator runs it."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DELETE = object()  # marks a key to remove from the base settings

# The variables that change how settings are read; no test inherits them from the shell.
CONFIG_ENV = ("GLACIERD_DATABASE_DSN", "GLACIERD_CATALOG_DSN", "GLACIERD_CONFIG", "PGDATABASE")


def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in CONFIG_ENV:
        monkeypatch.delenv(var, raising=False)


def base_settings(tmp_path: Path) -> dict[str, Any]:
    """A valid configuration (nothing in it connects anywhere while loading)."""
    (tmp_path / "files").mkdir(exist_ok=True)
    return {
        "state_dir": str(tmp_path / "state"),
        "database": {"dsn": "postgresql://postgres@127.0.0.1:5432/app"},
        "files": {"root": str(tmp_path / "files"), "orphan_dir": str(tmp_path / "orphans")},
        "store": {"type": "local"},
        "schedule": {"enabled": True},
        "api": {"host": "127.0.0.1", "port": 8470},
    }


def merged(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``data``; DELETE removes a key."""
    out = copy.deepcopy(data)
    for key, value in overrides.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def resolve(value: Any, tmp_path: Path) -> Any:
    """Replace "{tmp}" in strings so cases can name paths in the test's directory."""
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp_path))
    if isinstance(value, dict):
        return {k: resolve(v, tmp_path) for k, v in value.items()}
    return value


def run_cli(
    config: Path | str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    return subprocess.run(
        [sys.executable, "-m", "glacierd", "--config", str(config), *(args or ("check-config",))],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        cwd=Path(__file__).resolve().parent.parent,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("glacierd: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert proc.stdout == ""
    return lines[0]
