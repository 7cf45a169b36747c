"""Shared fixtures: a fresh application database with sample data, attached files, configs."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import tomli_w

from glacierd.config import Config, config_from_dict
from glacierd.context import Context, open_context
from tests import pg
from tests.daemon import Daemon, free_port

# Shared AWS fixtures, registered once so each session-scoped server starts once.
pytest_plugins = ["tests.aws_fixtures", "tests.moto_glacier", "tests.small_fs"]


def _ensure_postgres() -> None:
    probe = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True)
    if probe.returncode != 0:
        pytest.exit("PostgreSQL is not running on 127.0.0.1:5432; start it (see .ci/run).", 3)


def pytest_sessionstart(session: pytest.Session) -> None:
    _ensure_postgres()


@pytest.fixture
async def app_db() -> AsyncIterator[str]:
    """A new database holding the sample application schema and rows."""
    name = await pg.create_database()
    await pg.populate(name)
    yield name
    await pg.drop_database(name)


@pytest.fixture
def files_root(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    (root / "ab" / "cd").mkdir(parents=True)
    (root / "ab" / "cd" / "abcd1234").write_bytes(os.urandom(3000))
    (root / "ab" / "ef").mkdir(parents=True)
    (root / "ab" / "ef" / "abef5678").write_bytes(os.urandom(70_000))
    (root / "cache_free_name.txt").write_text("hello\n")
    return root


@pytest.fixture
def make_settings(tmp_path: Path, app_db: str, files_root: Path) -> Callable[..., dict]:
    """Settings as a dict (what a TOML file holds), with per-test overrides."""

    def make(**overrides: dict) -> dict:
        data: dict = {
            "state_dir": str(tmp_path / "state"),
            "database": {"dsn": pg.dsn_for(app_db)},
            "files": {"root": str(files_root), "orphan_dir": str(tmp_path / "orphans")},
            "store": {"type": "local", "local": {"path": str(tmp_path / "vault")}},
            "schedule": {"enabled": False},
            "api": {"port": free_port()},
            "logging": {"format": "json", "level": "debug"},
        }
        for section, values in overrides.items():
            # A store section replaces the default local store; other sections merge.
            if (
                section != "store"
                and isinstance(values, dict)
                and isinstance(data.get(section), dict)
            ):
                data[section] = {**data[section], **values}
            else:
                data[section] = values
        return data

    return make


@pytest.fixture
async def ctx(make_settings: Callable[..., dict]) -> AsyncIterator[Context]:
    config = config_from_dict(make_settings())
    async with open_context(config) as context:
        yield context


def to_toml(data: dict) -> str:
    """Test settings as the text of a TOML file (tomli-w: tables, lists, quoting)."""
    return tomli_w.dumps(data)


@pytest.fixture
def daemon_factory(
    tmp_path: Path, make_settings: Callable[..., dict]
) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(
        settings: dict | None = None,
        env: dict[str, str] | None = None,
        start: bool = True,
        name: str = "glacierd",
    ) -> Daemon:
        data = settings or make_settings()
        path = tmp_path / f"{name}.toml"
        path.write_text(to_toml(data))
        daemon = Daemon(path, data["api"]["port"], env)
        started.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield make
    for d in started:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def load(settings: dict) -> Config:
    return config_from_dict(settings)


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
