"""``GET /health`` of the real daemon and ``glacierd check`` as a monitoring system runs them:
status codes, JSON bodies, exit codes and one line per problem."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.config_helpers import run_cli
from tests.conftest import to_toml
from tests.daemon import Daemon


def failing_settings(make_settings: Callable[..., dict]) -> dict[str, Any]:
    """Settings whose backups fail: pg_dump is not where the configuration says."""
    settings = make_settings()
    settings["database"] = {**settings["database"], "pg_dump": "/nonexistent/pg_dump"}
    return settings


def test_health_and_check_report_a_failed_backup(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict], tmp_path: Path
) -> None:
    settings = failing_settings(make_settings)
    d = daemon_factory(settings)
    started = d.request("POST", "/backups", {}).json()
    assert d.wait_backup(started["id"])["status"] == "failed"

    health = d.request("GET", "/health")
    assert health.status == 503, health.body
    body = health.json()
    assert body["status"] == "unhealthy"
    assert body["last_backup_status"] == "failed"
    [problem] = body["problems"]
    assert problem["check"] == "last_backup"
    assert problem["detail"].startswith(f"the last backup ({started['id']}, started by api)")
    assert "/nonexistent/pg_dump" in problem["detail"]
    assert problem["fix"] == (
        "fix the cause, then run 'glacierd backup' or wait for the next scheduled one"
    )

    # The same evaluation without going through the daemon.
    config = tmp_path / "glacierd.toml"
    check = run_cli(config, "check")
    assert check.returncode == 1, (check.stdout, check.stderr)
    assert check.stdout.splitlines() == [f"last_backup: {problem['detail']}; {problem['fix']}."]
    as_json = run_cli(config, "check", "--json")
    assert as_json.returncode == 1
    checked = json.loads(as_json.stdout)
    assert checked["status"] == "unhealthy" and checked["problems"] == body["problems"]
    d.stop()


def test_check_is_quiet_and_zero_when_healthy(
    daemon_factory: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = daemon_factory()
    started = d.request("POST", "/backups", {}).json()
    assert d.wait_backup(started["id"])["status"] == "completed"
    assert d.request("GET", "/health").status == 200
    check = run_cli(tmp_path / "glacierd.toml", "check")
    assert check.returncode == 0, (check.stdout, check.stderr)
    assert check.stdout.startswith(
        f"glacierd is healthy: last successful backup {started['id']} finished "
    )
    assert len(check.stdout.splitlines()) == 1
    d.stop()


def test_check_before_the_catalog_exists(
    make_settings: Callable[..., dict], tmp_path: Path
) -> None:
    config = tmp_path / "fresh.toml"
    config.write_text(to_toml(make_settings()))
    check = run_cli(config, "check")
    assert check.returncode == 1, (check.stdout, check.stderr)
    assert check.stdout.splitlines() == [
        "catalog: the catalog schema glacierd does not exist yet; start the daemon or run "
        "'glacierd migrate'."
    ]
    assert not (tmp_path / "vault").exists()  # a look changes nothing


def test_check_when_the_catalog_is_unreachable(
    make_settings: Callable[..., dict], tmp_path: Path
) -> None:
    settings = make_settings()
    settings["catalog"] = {"dsn": "postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2"}
    config = tmp_path / "down.toml"
    config.write_text(to_toml(settings))
    check = run_cli(config, "check")
    assert check.returncode == 1, (check.stdout, check.stderr)
    [line] = check.stdout.splitlines()
    assert line.startswith("catalog: "), line
    assert "Traceback" not in check.stdout + check.stderr


def test_without_the_token_health_names_the_problems_but_not_their_details(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict]
) -> None:
    """/health needs no token (monitoring), but the reasons (paths, hosts, errors) are for
    whoever holds it: other local users see which checks fail, not why."""
    d = daemon_factory(failing_settings(make_settings), env={"GLACIERD_API_TOKEN": "t0ken"})
    auth = {"Authorization": "Bearer t0ken"}
    started = d.request("POST", "/backups", {}, headers=auth).json()
    d.wait_for(
        lambda: (
            d.request("GET", f"/backups/{started['id']}", headers=auth).json()["status"] == "failed"
        ),
        what="the backup to fail",
    )
    anonymous = d.request("GET", "/health")
    assert anonymous.status == 503
    assert anonymous.json()["problems"] == [{"check": "last_backup"}]
    assert "/nonexistent" not in anonymous.body.decode()
    full = d.request("GET", "/health", headers=auth).json()
    assert "/nonexistent/pg_dump" in full["problems"][0]["detail"]
    wrong = d.request("GET", "/health", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 503 and wrong.json()["problems"] == [{"check": "last_backup"}]
    d.stop()
