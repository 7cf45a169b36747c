"""Environment variables that replace settings, exactly as README's "Configuration" lists them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from glacierd.config import ENV_OVERRIDES, ApiConfig, ConfigError, config_from_dict, load_config
from tests.config_helpers import DELETE, base_settings, clean_env, merged
from tests.conftest import to_toml

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "glacierd.example.toml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch)


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    return base_settings(tmp_path)


def test_readme_and_example_list_every_override() -> None:
    readme, example = README.read_text(), EXAMPLE.read_text()
    # README: | `GLACIERD_DATABASE_DSN` | replaces `[database] dsn` |
    listed = re.findall(r"^\| `(GLACIERD_\w+)` \| replaces `\[(\w+)\] (\w+)` \|", readme, re.M)
    assert {var: f"{section}.{key}" for var, section, key in listed} == {
        var: setting for setting, var in ENV_OVERRIDES.items()
    }
    for setting, var in ENV_OVERRIDES.items():
        section, key = setting.split(".")
        assert re.search(rf"^#\s+{var}\s+replaces \[{section}\] {key}\b", example, re.M), var


def test_catalog_variable_replaces_the_file_catalog_dsn(
    base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLACIERD_CATALOG_DSN", "host=cathost dbname=catdb")
    cfg = config_from_dict(merged(base, {"catalog": {"dsn": "host=filehost dbname=filedb"}}))
    assert cfg.catalog.conninfo.params == {"host": "cathost", "dbname": "catdb"}
    assert cfg.database.conninfo.params["dbname"] == "app"  # the database is left alone


def test_catalog_variable_wins_over_the_database_default(
    base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLACIERD_DATABASE_DSN", "host=dbhost dbname=dbdb")
    monkeypatch.setenv("GLACIERD_CATALOG_DSN", "host=cathost dbname=catdb")
    cfg = config_from_dict(base)
    assert cfg.database.conninfo.params == {"host": "dbhost", "dbname": "dbdb"}
    assert cfg.catalog.conninfo.params == {"host": "cathost", "dbname": "catdb"}


def test_catalog_follows_the_database_variable_when_it_has_no_dsn(
    base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLACIERD_DATABASE_DSN", "host=dbhost dbname=dbdb")
    cfg = config_from_dict(merged(base, {"catalog": {"dsn": "", "schema": "cat"}}))
    assert cfg.catalog.conninfo == cfg.database.conninfo
    assert cfg.catalog.conninfo.params == {"host": "dbhost", "dbname": "dbdb"}


def test_a_file_catalog_dsn_is_kept_when_only_the_database_is_replaced(
    base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLACIERD_DATABASE_DSN", "host=dbhost dbname=dbdb")
    cfg = config_from_dict(merged(base, {"catalog": {"dsn": "host=filehost dbname=filedb"}}))
    assert cfg.catalog.conninfo.params == {"host": "filehost", "dbname": "filedb"}


def test_invalid_catalog_variable_names_it(
    base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLACIERD_CATALOG_DSN", "host=h password=hunter2secret colour=blue")
    with pytest.raises(ConfigError) as err:
        config_from_dict(base)
    assert str(err.value).startswith(
        "catalog.dsn (or GLACIERD_CATALOG_DSN) is not a valid libpq connection string: "
        "unknown parameter 'colour'"
    ), err.value
    assert "hunter2" not in str(err.value)


def test_the_environment_can_be_given_instead_of_the_process_one(
    base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLACIERD_DATABASE_DSN", "host=process dbname=process")
    given = {"GLACIERD_DATABASE_DSN": "host=given dbname=given"}
    cfg = config_from_dict(merged(base, {"database": {"dsn": DELETE}}), environ=given)
    assert cfg.database.conninfo.params == {"host": "given", "dbname": "given"}
    with pytest.raises(ConfigError, match=r"^database\.dsn names no database"):
        config_from_dict(merged(base, {"database": {"dsn": DELETE}}), environ={})
    cfg = config_from_dict(
        merged(base, {"database": {"dsn": "host=h"}}), environ={"PGDATABASE": "fromenv"}
    )
    assert cfg.database.conninfo.params == {"host": "h"}


def test_glacierd_config_chooses_the_file(
    base: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chosen.toml"
    path.write_text(to_toml(merged(base, {"store": {"name": "chosen"}})))
    monkeypatch.setenv("GLACIERD_CONFIG", str(path))
    cfg = load_config()
    assert (cfg.path, cfg.store.name) == (path, "chosen")
    # --config wins over the variable.
    other = tmp_path / "other.toml"
    other.write_text(to_toml(merged(base, {"store": {"name": "other"}})))
    assert load_config(other).store.name == "other"


def test_api_token_comes_from_the_variable_token_env_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GLACIERD_API_TOKEN", "default-variable")
    monkeypatch.setenv("MY_TOKEN", "chosen-variable")
    assert ApiConfig().token == "default-variable"
    assert ApiConfig(token_env="MY_TOKEN").token == "chosen-variable"
    monkeypatch.setenv("MY_TOKEN", "")
    assert ApiConfig(token_env="MY_TOKEN").token is None  # empty: no token asked for
