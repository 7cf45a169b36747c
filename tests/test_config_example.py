"""deploy/glacierd.example.toml is the settings' documentation: it names every section and
every setting the models know (and nothing else), and what it shows is valid."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic.dataclasses import is_pydantic_dataclass

from glacierd.config import STORE_TYPES, Config, config_from_dict

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "glacierd.example.toml"

# "[store.s3]" or "#[store.s3]"; "dsn = …" or "#dsn = …" (a commented-out setting).
HEADER = re.compile(r"^#?\[([a-z0-9_.]+)\]\s*$")
SETTING = re.compile(r"^#?([a-z0-9_]+) = ")


def example_lines() -> Iterator[tuple[tuple[str, ...], str, str]]:
    """(section, key or "", line) for every header and setting, commented out or not."""
    section: tuple[str, ...] = ()
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if header := HEADER.match(line):
            section = tuple(header.group(1).split("."))
            yield section, "", line.lstrip("#")
        elif setting := SETTING.match(line):
            yield section, setting.group(1), line.lstrip("#")


def model_settings(model: type = Config, section: tuple[str, ...] = ()) -> Iterator[tuple]:
    """(section, key) for every setting and (section, "") for every section of the models,
    by the names the file uses."""
    for name, info in model.__pydantic_fields__.items():  # type: ignore[attr-defined]
        if info.init is False:  # not read from the file (Config.path)
            continue
        key = info.validation_alias if isinstance(info.validation_alias, str) else name
        inner = [t for t in getattr(info.annotation, "__args__", (info.annotation,))]
        nested = next((t for t in inner if is_pydantic_dataclass(t)), None)
        if nested is not None:
            yield (*section, key), ""
            yield from model_settings(nested, (*section, key))
        else:
            yield section, key


def test_the_example_documents_every_setting_and_no_other() -> None:
    documented = [(section, key) for section, key, _ in example_lines()]
    assert len(documented) == len(set(documented)), "a setting is documented twice"
    known = set(model_settings())
    assert len(known) > 60  # the walk found the sections' settings, not only the top level
    assert sorted(known - set(documented)) == [], "settings missing from the example"
    assert sorted(set(documented) - known) == [], "the example documents unknown settings"


def uncommented_example(root: Path, store_type: str) -> dict[str, Any]:
    """The example with every setting in effect, for one store type, attached files in
    ``root`` (the example's own directory does not exist here)."""
    data = tomllib.loads("\n".join(line for _, _, line in example_lines()))
    data["store"]["type"] = store_type
    for other in set(STORE_TYPES) - {store_type}:
        del data["store"][other]
    data["files"]["root"] = str(root)
    return data


@pytest.mark.parametrize("store_type", STORE_TYPES)
def test_every_value_the_example_shows_is_valid(tmp_path: Path, store_type: str) -> None:
    data = uncommented_example(tmp_path, store_type)
    cfg = config_from_dict(data, environ={})
    assert (cfg.store.type, cfg.store.name) == (store_type, "local")  # the example's name
    section = getattr(cfg.store, store_type)
    assert section is not None
    # Values come through as the example writes them.
    for key, value in data["store"][store_type].items():
        assert getattr(section, key) == (Path(value) if key == "path" else value), key
    assert cfg.sns.topic_arns == tuple(data["sns"]["topic_arns"])
    assert cfg.catalog.conninfo.params["dbname"] == "glacierd"


def test_the_example_as_shipped_loads_with_the_documented_defaults(tmp_path: Path) -> None:
    shipped = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    shipped["files"]["root"] = str(tmp_path)
    cfg = config_from_dict(shipped, environ={})
    assert cfg.database.conninfo.params["dbname"] == "app_production"
    assert cfg.catalog.conninfo == cfg.database.conninfo
    assert cfg.store.local is not None and cfg.store.local.path == Path("/var/lib/glacierd/vault")
    # Every commented-out line of a section that is in effect shows that setting's default,
    # except the few that show an example instead (no default, or a derived one).
    examples = {
        ("catalog", "dsn"),
        ("files", "orphan_dir"),
        ("schedule", "poll_interval_seconds"),
        ("api", "socket"),
        ("sns", "topic_arns"),
        ("sns", "cert_url_override"),
        *(("sqs", key) for key in ("queue_url", "region", "endpoint_url", "profile")),
        ("sqs", "topic_arns"),
        ("sqs", "cert_url_override"),
        ("logging", "file"),
    }
    text = EXAMPLE.read_text(encoding="utf-8").splitlines()
    section: tuple[str, ...] = ()
    checked = 0
    for line in text:
        if header := HEADER.match(line):
            section = tuple(header.group(1).split("."))
        elif (setting := SETTING.match(line)) and line.startswith("#"):
            key = setting.group(1)
            if section[:2] in (("store", "s3"), ("store", "vault")) or (*section, key) in examples:
                continue
            shown = tomllib.loads(line.lstrip("#"))[key]
            node: Any = cfg
            for part in (*section, key):
                node = getattr(node, part)
            assert node == (Path(shown) if isinstance(node, Path) else shown), (section, key)
            checked += 1
    assert checked > 25
