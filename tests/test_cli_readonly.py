"""The command line on small things done wrong: read-only commands change nothing, bad
arguments and a bad log file get one clear sentence (never a traceback), and check-config
says what it checked.

Every command runs as an operator runs it: ``python -m glacierd`` in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from tests import pg
from tests.conftest import to_toml
from tests.test_config import run_cli


def write(tmp_path: Path, settings: dict, name: str = "glacierd.toml") -> Path:
    path = tmp_path / name
    path.write_text(to_toml(settings))
    return path


async def schemas(dbname: str) -> set[str]:
    conn = await asyncpg.connect(pg.dsn_for(dbname))
    try:
        rows = await conn.fetch("SELECT nspname FROM pg_namespace")
    finally:
        await conn.close()
    return {r["nspname"] for r in rows}


def tree(root: Path) -> set[str]:
    """Every path under root (relative), to compare before and after a command."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------- list --limit


@pytest.mark.parametrize("limit", ["-3", "0", "10001", "abc"])
def test_list_refuses_a_limit_out_of_range(
    tmp_path: Path, make_settings: Callable[..., dict], limit: str
) -> None:
    proc = run_cli(write(tmp_path, make_settings()), "list", "--limit", limit)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "asyncpg" not in out
    assert "no backups yet" not in out
    assert "--limit must be a whole number from 1 to 10000" in proc.stderr, proc.stderr


def test_list_limit_shows_that_many(tmp_path: Path, make_settings: Callable[..., dict]) -> None:
    path = write(tmp_path, make_settings())
    for _ in range(2):
        assert run_cli(path, "backup", "--json").returncode == 0
    proc = run_cli(path, "list", "--json", "--limit", "1")
    assert proc.returncode == 0, proc.stderr
    assert [b["id"] for b in json.loads(proc.stdout)] == [2]


# ---------------------------------------------------------- read-only commands


def test_list_on_a_fresh_database_creates_nothing(
    tmp_path: Path, make_settings: Callable[..., dict], app_db: str
) -> None:
    log_dir = tmp_path / "logs"
    settings = make_settings(logging={"file": str(log_dir / "glacierd.log")})
    before_schemas = asyncio.run(schemas(app_db))
    before_files = tree(tmp_path)

    proc = run_cli(write(tmp_path, settings), "list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("no backups yet"), proc.stdout
    assert "glacierd migrate" in proc.stdout  # says why there are none

    json_proc = run_cli(tmp_path / "glacierd.toml", "list", "--json")
    assert json_proc.returncode == 0, json_proc.stderr
    assert json.loads(json_proc.stdout) == []

    assert asyncio.run(schemas(app_db)) == before_schemas  # no catalog schema created
    assert tree(tmp_path) == before_files | {"glacierd.toml"}  # no log dir, vault, state dir
    assert not log_dir.exists()


def test_list_on_an_older_catalog_says_to_migrate(
    tmp_path: Path, make_settings: Callable[..., dict], app_db: str
) -> None:
    path = write(tmp_path, make_settings())
    assert run_cli(path, "migrate").returncode == 0

    async def forget_newest() -> None:
        conn = await asyncpg.connect(pg.dsn_for(app_db))
        try:
            await conn.execute(
                "DELETE FROM glacierd.schema_migrations WHERE version = "
                "(SELECT max(version) FROM glacierd.schema_migrations)"
            )
        finally:
            await conn.close()

    asyncio.run(forget_newest())
    proc = run_cli(path, "list")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("glacierd: the catalog schema glacierd needs"), line
    assert "run 'glacierd migrate'" in line


def test_check_config_creates_no_log_directory(
    tmp_path: Path, make_settings: Callable[..., dict]
) -> None:
    log_dir = tmp_path / "logs" / "nested"
    settings = make_settings(logging={"file": str(log_dir / "glacierd.log")})
    before = tree(tmp_path)
    proc = run_cli(write(tmp_path, settings), "check-config")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert tree(tmp_path) == before | {"glacierd.toml"}
    assert not (tmp_path / "logs").exists()


# ------------------------------------------------------------------ bad log file


@pytest.mark.parametrize("command", ["check-config", "migrate", "backup", "serve"])
def test_a_log_file_that_cannot_be_opened_is_one_sentence(
    tmp_path: Path, make_settings: Callable[..., dict], command: str
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be\n")
    settings = make_settings(logging={"file": str(blocker / "glacierd.log")})
    proc = run_cli(write(tmp_path, settings), command)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"glacierd: logging.file {blocker / 'glacierd.log'} cannot be"), (
        lines[0]
    )
    assert "change logging.file" in lines[0]
    assert blocker.read_text().startswith("a file where")


def test_a_log_file_in_a_new_directory_is_created_by_the_daemon_commands(
    tmp_path: Path, make_settings: Callable[..., dict]
) -> None:
    log = tmp_path / "logs" / "glacierd.log"
    proc = run_cli(write(tmp_path, make_settings(logging={"file": str(log)})), "migrate")
    assert proc.returncode == 0, proc.stderr
    assert log.is_file()


# ----------------------------------------------------------------- check-config


def test_check_config_says_when_the_schedule_is_disabled(
    tmp_path: Path, make_settings: Callable[..., dict]
) -> None:
    settings = make_settings(schedule={"enabled": False, "backup_cron": "15 4 * * *"})
    proc = run_cli(write(tmp_path, settings), "check-config")
    assert proc.returncode == 0, proc.stderr
    assert "schedule disabled" in proc.stdout, proc.stdout
    assert "15 4" not in proc.stdout and "0 3 * * *" not in proc.stdout


def test_check_config_shows_an_enabled_schedule(
    tmp_path: Path, make_settings: Callable[..., dict]
) -> None:
    settings = make_settings(schedule={"enabled": True, "backup_cron": "15 4 * * *"})
    proc = run_cli(write(tmp_path, settings), "check-config")
    assert proc.returncode == 0, proc.stderr
    assert "schedule '15 4 * * *' UTC" in proc.stdout, proc.stdout
