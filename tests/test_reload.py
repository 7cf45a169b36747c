"""SIGHUP reloads the configuration without dropping work (glacierd/reload.py).

In process: what a reload changes (scheduler jobs, poller, logging, ctx.config) and what it
keeps (the sections wired at start), with a real catalog, store and APScheduler. Against the
real daemon: the new schedule fires, the log level follows, an invalid file keeps the old
configuration running, and a backup in progress is not interrupted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from glacierd import reload as reload_mod
from glacierd.config import config_from_dict, load_config
from glacierd.context import Context, open_context
from glacierd.logs import configure_logging
from glacierd.operations.retrieval import Poller
from glacierd.reload import Reloader, changed_settings, reload
from glacierd.scheduler import start_scheduler
from glacierd.service import Workers, _poll_job, _restore_job
from tests import pg
from tests.conftest import to_toml
from tests.daemon import Daemon
from tests.wiring import wire

# ------------------------------------------------------------------------------------------
# in process


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """A reload reconfigures the root logger; give pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


class Running:
    """serve's pieces that a reload touches, around a real context."""

    def __init__(self, ctx: Context, scheduler: Any, poller: Poller, workers: Workers) -> None:
        self.ctx, self.scheduler, self.poller, self.workers = ctx, scheduler, poller, workers

    def jobs(self) -> list[dict[str, Any]]:
        return [_poll_job(self.ctx, self.poller), _restore_job(self.ctx, self.workers.restorer)]

    @property
    def daemon(self) -> Any:
        return reload_mod._Daemon(self.ctx, self.scheduler, self.poller, self.jobs)

    def interval(self, job_id: str) -> timedelta:
        return self.scheduler.get_job(job_id).trigger.interval


@pytest.fixture
def config_file(tmp_path: Path, make_settings: Callable[..., dict]) -> Callable[..., Path]:
    """Writes glacierd.toml from make_settings(**overrides) (with a log file to read)."""
    path = tmp_path / "glacierd.toml"

    def write(**overrides: Any) -> Path:
        settings = make_settings(**overrides)
        settings["logging"] = {
            "format": "json",
            "level": "info",
            "file": str(tmp_path / "glacierd.log"),
            **overrides.get("logging", {}),
        }
        path.write_text(to_toml(settings))
        return path

    return write


def log_events(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "glacierd.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
async def running(
    config_file: Callable[..., Path], restore_logging: None
) -> AsyncIterator[Running]:
    schedule = {"enabled": True, "backup_cron": "0 3 * * *", "poll_interval_seconds": 4.0}
    config = load_config(config_file(schedule=schedule))
    configure_logging(config.logging)  # as `glacierd serve` does before it starts
    async with open_context(config) as ctx:
        workers = wire(ctx)  # as serve wires them
        poller = Poller(
            ctx, config.schedule.poll_interval_seconds, on_ready=workers.fetcher.enqueue
        )
        run = Running(ctx, None, poller, workers)
        run.scheduler = await start_scheduler(ctx, run.jobs())
        try:
            yield run
        finally:
            run.scheduler.pause()
            while ctx.tasks:  # the jobs' first runs (and a reload still going on)
                await asyncio.wait(set(ctx.tasks))
            run.scheduler.shutdown(wait=False)


def test_changed_settings_are_named_not_shown(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    base = {"state_dir": str(tmp_path), "files": {"root": str(tmp_path / "files")}}
    env = {"GLACIERD_DATABASE_DSN": "postgresql://app:s3cret@db.example/app"}
    old = config_from_dict({**base, "schedule": {"backup_cron": "0 3 * * *"}}, environ=env)
    env = {"GLACIERD_DATABASE_DSN": "postgresql://app:0ther@db.example/app"}
    new = config_from_dict({**base, "schedule": {"backup_cron": "0 4 * * *"}}, environ=env)
    assert changed_settings(old, new) == ["database.dsn", "catalog.dsn", "schedule.backup_cron"]
    assert changed_settings(old, old) == []


async def test_reload_applies_what_can_change_and_keeps_the_rest(
    running: Running, config_file: Callable[..., Path], tmp_path: Path
) -> None:
    ctx = running.ctx
    old = ctx.config
    store = ctx.store
    assert running.interval("poll") == timedelta(seconds=4)
    assert logging.getLogger().level == logging.INFO

    config_file(
        schedule={
            "enabled": True,
            "backup_cron": "30 4 * * *",
            "timezone": "Europe/Berlin",
            "poll_interval_seconds": 2.0,
        },
        restore={"snapshot_keep": 7, "compare": "sha256"},
        logging={"level": "debug"},
        api={"port": old.api.port + 1},
        store={"type": "local", "local": {"path": str(tmp_path / "another-vault")}},
    )
    assert await reload(running.daemon) is True

    # Applied: schedule, intervals, poller, logging, restore settings.
    assert ctx.config is not old
    assert ctx.config.schedule.backup_cron == "30 4 * * *"
    job = running.scheduler.get_job("backup")
    assert (job.next_run_time.hour, job.next_run_time.minute) == (4, 30)
    assert str(job.next_run_time.tzinfo) == "Europe/Berlin"
    assert running.interval("poll") == timedelta(seconds=2)
    assert running.interval("restores") == timedelta(seconds=2)
    assert running.poller.override == 2.0
    assert logging.getLogger().level == logging.DEBUG
    assert (ctx.config.restore.snapshot_keep, ctx.config.restore.compare) == (7, "sha256")
    # Kept until a restart: the listener's port, the store (and its open client).
    assert ctx.config.api == old.api
    assert ctx.config.store == old.store
    assert ctx.store is store

    events = {e["event"]: e for e in log_events(tmp_path)}
    assert set(events["config.reloaded"]["changed"]) == {
        "schedule.backup_cron",
        "schedule.timezone",
        "schedule.poll_interval_seconds",
        "logging.level",
        "restore.snapshot_keep",
        "restore.compare",
    }
    assert events["config.restart_needed"]["settings"] == ["store.local.path", "api.port"]
    assert events["config.restart_needed"]["level"] == "warning"


async def test_reload_turns_the_schedule_off_and_on(
    running: Running, config_file: Callable[..., Path]
) -> None:
    config_file(schedule={"enabled": False})
    assert await reload(running.daemon) is True
    assert running.scheduler.get_job("backup") is None
    config_file(schedule={"enabled": True, "backup_cron": "15 2 * * *"})
    assert await reload(running.daemon) is True
    job = running.scheduler.get_job("backup")
    assert job is not None and (job.next_run_time.hour, job.next_run_time.minute) == (2, 15)


async def test_invalid_file_keeps_the_running_configuration(
    running: Running, config_file: Callable[..., Path], tmp_path: Path
) -> None:
    ctx = running.ctx
    old = ctx.config
    next_backup = running.scheduler.get_job("backup").next_run_time
    path = config_file(schedule={"enabled": True, "backup_cron": "61 * * * *"})
    assert await reload(running.daemon) is False
    assert ctx.config is old
    assert running.scheduler.get_job("backup").next_run_time == next_backup
    path.write_bytes(b"[schedule\n")
    assert await reload(running.daemon) is False
    assert ctx.config is old
    failures = [e for e in log_events(tmp_path) if e["event"] == "config.reload_failed"]
    assert [f["level"] for f in failures] == ["error", "error"]
    assert "schedule.backup_cron '61 * * * *' is not valid" in failures[0]["error"]
    assert "is not valid TOML" in failures[1]["error"]


async def test_reload_reopens_the_log_file(
    running: Running, config_file: Callable[..., Path], tmp_path: Path
) -> None:
    """logrotate (or an operator) moved the file away: the next reload writes a new one,
    also when the configuration file itself is broken at that moment."""
    log_file = tmp_path / "glacierd.log"
    log_file.rename(tmp_path / "glacierd.log.1")
    assert await reload(running.daemon) is True
    assert [e["event"] for e in log_events(tmp_path)] == ["config.reloaded"]
    log_file.rename(tmp_path / "glacierd.log.2")
    (tmp_path / "glacierd.toml").write_text("not = [toml")
    assert await reload(running.daemon) is False
    assert [e["event"] for e in log_events(tmp_path)] == ["config.reload_failed"]


async def test_sighups_during_a_reload_make_exactly_one_more(
    running: Running, config_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file()
    loading = threading.Event()
    release = threading.Event()
    calls: list[Path] = []

    def paused_load(path: Path) -> Any:
        calls.append(path)
        if len(calls) == 1:
            loading.set()
            assert release.wait(30)
        return load_config(path)

    monkeypatch.setattr(reload_mod, "load_config", paused_load)
    reloader = Reloader()
    reloader.request()  # during start-up: only remembered
    await asyncio.sleep(0)
    assert calls == []
    reloader.attach(running.ctx, running.scheduler, running.poller, running.jobs)
    assert await asyncio.to_thread(loading.wait, 30)
    for _ in range(3):  # more SIGHUPs while the first reload reads the file
        reloader.request()
    release.set()
    assert reloader._running is not None
    await asyncio.wait_for(reloader._running, 30)
    assert len(calls) == 2


async def test_no_reload_once_stopping(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(reload_mod, "load_config", calls.append)
    reloader = Reloader()
    reloader.attach(running.ctx, running.scheduler, running.poller, running.jobs)
    running.ctx.stopping = True
    reloader.request()
    assert reloader._running is None and calls == []


# ------------------------------------------------------------------------------------------
# the real daemon


def events_named(d: Daemon, name: str) -> list[dict[str, Any]]:
    return [e for e in d.events() if e.get("event") == name]


def sighup_and_wait(d: Daemon, event: str) -> dict[str, Any]:
    """Send SIGHUP and wait for the reload's outcome ``event`` (one more than before)."""
    before = len(events_named(d, event))
    d.signal(signal.SIGHUP)
    found = d.wait_for(lambda: len(events_named(d, event)) > before, what=f"{event} after SIGHUP")
    assert found
    return events_named(d, event)[-1]


def scheduled_backups(d: Daemon) -> list[dict[str, Any]]:
    listed = d.request("GET", "/backups").json()["backups"]
    return [b for b in listed if b["trigger"] == "schedule"]


def test_sighup_applies_schedule_and_log_level_and_survives_a_broken_file(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict]
) -> None:
    settings = make_settings(logging={"level": "warning"})
    d = daemon_factory(settings)
    path = d.config
    assert events_named(d, "service.ready") == []  # info events are not logged at warning

    # A schedule that fires every second, and info events.
    settings["schedule"] = {"enabled": True, "backup_cron": "* * * * * *", "catch_up": False}
    settings["logging"]["level"] = "info"
    path.write_text(to_toml(settings))
    reloaded = sighup_and_wait(d, "config.reloaded")
    assert set(reloaded["changed"]) == {
        "schedule.enabled",
        "schedule.backup_cron",
        "schedule.catch_up",
        "logging.level",
    }
    first = d.wait_for(lambda: scheduled_backups(d), what="a scheduled backup")
    assert d.wait_backup(first[-1]["id"])["status"] == "completed"

    # A broken file: one error, the daemon and its schedule go on as before.
    path.write_text(path.read_text().replace("* * * * * *", "every second"))
    failed = sighup_and_wait(d, "config.reload_failed")
    assert "schedule.backup_cron 'every second' is not valid" in failed["error"]
    assert len(events_named(d, "config.reload_failed")) == 1
    assert d.request("GET", "/health").status == 200
    seen = {b["id"] for b in scheduled_backups(d)}
    later = d.wait_for(
        lambda: [b for b in scheduled_backups(d) if b["id"] not in seen],
        what="another scheduled backup on the old schedule",
    )
    d.wait_backup(later[-1]["id"])

    # Fixed and turned off.
    settings["schedule"]["enabled"] = False
    path.write_text(to_toml(settings))
    assert sighup_and_wait(d, "config.reloaded")["changed"] == ["schedule.enabled"]
    assert events_named(d, "schedule.updated")[-1]["next_backup"] is None
    assert d.proc is not None and d.proc.poll() is None
    assert d.stop() == 0


def test_settings_wired_at_start_wait_for_a_restart(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict], tmp_path: Path
) -> None:
    settings = make_settings()
    d = daemon_factory(settings)
    old_port = settings["api"]["port"]
    settings["api"]["port"] = old_port + 1
    settings["store"] = {"type": "local", "local": {"path": str(tmp_path / "vault-2")}}
    settings["database"]["dsn"] += "_other"
    d.config.write_text(to_toml(settings))
    warned = sighup_and_wait(d, "config.restart_needed")
    # The catalog's connection defaults to the database's: it moves with it.
    assert warned["settings"] == ["database.dsn", "catalog.dsn", "store.local.path", "api.port"]
    assert warned["level"] == "warning"
    # Still the old listener, database and vault.
    backup = d.wait_backup(d.request("POST", "/backups").json()["id"])
    assert backup["status"] == "completed"
    assert any((tmp_path / "vault").rglob("*")) and not (tmp_path / "vault-2").exists()
    assert d.stop() == 0


async def pg_dump_waiting_for_a_lock(dbname: str) -> bool:
    conn = await asyncpg.connect(pg.ADMIN_DSN)
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                "AND application_name = 'pg_dump' AND wait_event_type = 'Lock'",
                dbname,
            )
        )
    finally:
        await conn.close()


async def test_a_reload_does_not_interrupt_a_running_backup(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict], app_db: str
) -> None:
    settings = make_settings()
    d = await asyncio.to_thread(daemon_factory, settings)
    pid = d.proc.pid if d.proc else None
    blocker = await asyncpg.connect(pg.dsn_for(app_db))
    try:
        # The backup's pg_dump waits for this lock: the backup is running, mid-dump.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE")
        started = await asyncio.to_thread(d.request, "POST", "/backups")
        assert started.status == 202, started.body
        backup_id = started.json()["id"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not await pg_dump_waiting_for_a_lock(app_db):
            assert loop.time() < deadline, "pg_dump never waited for the lock"
            await asyncio.sleep(0.05)

        settings["restore"] = {"snapshot_keep": 5}
        settings["logging"]["level"] = "info"
        d.config.write_text(to_toml(settings))
        reloaded = await asyncio.to_thread(sighup_and_wait, d, "config.reloaded")
        assert set(reloaded["changed"]) == {"restore.snapshot_keep", "logging.level"}
        during = (await asyncio.to_thread(d.request, "GET", f"/backups/{backup_id}")).json()
        assert during["status"] == "running"
        assert await pg_dump_waiting_for_a_lock(app_db)
        await tx.rollback()
    finally:
        await blocker.close()
    done = await asyncio.to_thread(d.wait_backup, backup_id)
    assert done["status"] == "completed", done
    assert d.proc is not None and d.proc.pid == pid and d.proc.poll() is None
    assert await asyncio.to_thread(d.stop) == 0
