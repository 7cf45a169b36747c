"""Hooks in the real daemon: each event reaches the webhook once across restarts, an event
recorded while the daemon was down is delivered when it starts, and a failing hook never
affects a backup."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.config_helpers import run_cli
from tests.daemon import Daemon, free_port
from tests.webhook_receiver import WebhookReceiver, webhook_receiver


def failing(settings: dict[str, Any]) -> dict[str, Any]:
    settings["database"] = {**settings["database"], "pg_dump": "/nonexistent/pg_dump"}
    return settings


def wait_received(d: Daemon, receiver: WebhookReceiver, count: int) -> None:
    d.wait_for(lambda: len(receiver.received) >= count, what=f"{count} webhook deliveries")


def test_each_event_reaches_the_webhook_once_across_restarts(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict], tmp_path: Path
) -> None:
    settings = failing(make_settings())
    with webhook_receiver() as receiver:
        d = daemon_factory(settings, env={"GLACIERD_WEBHOOK_URL": receiver.url})
        first = d.request("POST", "/backups", {}).json()["id"]
        assert d.wait_backup(first)["status"] == "failed"
        wait_received(d, receiver, 1)
        assert d.stop() == 0

        # While the daemon is down, a backup from the command line fails too.
        cli = run_cli(tmp_path / "glacierd.toml", "backup")
        assert cli.returncode == 1, cli.stderr
        second = first + 1

        d.start()
        wait_received(d, receiver, 2)
        third = d.request("POST", "/backups", {}).json()["id"]
        assert d.wait_backup(third)["status"] == "failed"
        wait_received(d, receiver, 3)
        assert d.stop() == 0
    # In order, once each: the restart neither fired the first again nor lost the second.
    assert receiver.events() == [
        ("backup.failed", first, None),
        ("backup.failed", second, None),
        ("backup.failed", third, None),
    ]
    assert [e["event"] for e in d.events()].count("hook.delivered") == 3  # both runs' log


def test_a_failing_hook_never_affects_a_backup(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict]
) -> None:
    settings = make_settings(
        hooks={
            "on_success": True,
            "command": [sys.executable, "-c", "import sys; sys.exit(1)"],
            "retry_seconds": 3600,
        }
    )
    nowhere = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    d = daemon_factory(settings, env={"GLACIERD_WEBHOOK_URL": nowhere})
    started = d.request("POST", "/backups", {}).json()["id"]
    assert d.wait_backup(started)["status"] == "completed"

    def failures() -> list[dict[str, Any]]:
        return [e for e in d.events() if e["event"] == "hook.failed"]

    found = d.wait_for(lambda: len(failures()) >= 2 and failures(), what="both hooks to fail")
    assert {e["hook"] for e in found} == {"webhook", "command"}
    webhook = next(e for e in found if e["hook"] == "webhook")
    assert webhook["error"].startswith("the webhook at 127.0.0.1 could not be reached")
    assert "/hook" not in webhook["error"]
    health = d.request("GET", "/health")
    assert health.status == 200, health.body
    assert d.stop() == 0
