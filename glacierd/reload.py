"""SIGHUP (``systemctl reload glacierd``): read the configuration file again and apply it
without dropping work.

The file is read and validated in a thread. An invalid file is logged once
(``config.reload_failed``) and the running configuration stays. A valid one replaces
``ctx.config`` in one assignment (``apply``), except for the sections the daemon wired
together at start (``RESTART_ONLY``): they keep their running values, and
``config.restart_needed`` names the settings that changed there. The schedule, the poll
intervals and the logging follow at once; everything else (restore and files settings,
the shutdown timeout) is read from ``ctx.config`` by the work that starts after the
reload. Work already running is never touched: it goes on with what it read when it
began. Every reload also reopens the log file (``logging.file``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from glacierd import sdnotify
from glacierd.config import Config, ConfigError, LoggingConfig, ScheduleConfig, load_config
from glacierd.context import Context
from glacierd.logs import configure_logging
from glacierd.operations.retrieval import Poller
from glacierd.scheduler import add_backup_job

log = structlog.get_logger("glacierd.reload")

# Sections read once, when serve wires the daemon together: a change needs a restart.
# (A new section whose values something keeps from start belongs here; one that is read
# from ctx.config when used does not.)
RESTART_ONLY = (
    "state_dir",  # fetched copies, snapshots and the default vault are found there
    "database",  # the application's database: what is backed up and restored
    "catalog",  # its connection pool is opened at start
    "store",  # its client is opened at start; archives are recorded per store
    "api",  # the control API's listener, and its token, read at start
    "sns",  # the SNS listener and the topics its verifier accepts
    "sqs",  # the queue consumer, its client and its verifier
)

JobSpecs = Callable[[], list[dict[str, Any]]]


@dataclasses.dataclass
class _Daemon:
    """What a reload changes besides ctx.config: the scheduler's jobs and the poller."""

    ctx: Context
    scheduler: AsyncIOScheduler
    poller: Poller
    # The interval jobs (poll, restores) as serve defines them, from ctx.config.
    jobs: JobSpecs


class Reloader:
    """The SIGHUP handler. Installed as serve starts, so a SIGHUP during start-up (when
    systemd's default action would end the process) only marks a reload as wanted; it
    runs once ``attach`` gives it the running daemon. Reloads never overlap: SIGHUPs that
    arrive during one make exactly one more."""

    def __init__(self) -> None:
        self._daemon: _Daemon | None = None
        self._wanted = False
        self._running: asyncio.Task[object] | None = None

    def request(self) -> None:
        """Called by the event loop on SIGHUP."""
        self._wanted = True
        if self._daemon is None:
            log.info("config.reload_deferred", reason="glacierd is still starting")
            return
        self._start()

    def attach(
        self, ctx: Context, scheduler: AsyncIOScheduler, poller: Poller, jobs: JobSpecs
    ) -> None:
        self._daemon = _Daemon(ctx, scheduler, poller, jobs)
        if self._wanted:
            self._start()

    def _start(self) -> None:
        assert self._daemon is not None
        ctx = self._daemon.ctx
        if ctx.stopping:
            self._wanted = False
            log.info("config.reload_ignored", reason="glacierd is stopping")
            return
        if self._running is None or self._running.done():
            # Tracked work: a stop that begins meanwhile waits for the reload to end.
            self._running = ctx.spawn(self._run(), name="config-reload")

    async def _run(self) -> None:
        while self._wanted and self._daemon is not None:
            self._wanted = False
            try:
                await reload(self._daemon)
            except Exception:  # a reload must never take the daemon down
                log.exception("config.reload_failed", detail="the running configuration stays")


async def reload(daemon: _Daemon) -> bool:
    """Read, validate and apply the configuration file; True if it was applied."""
    sdnotify.notify(
        f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}\n"
        "STATUS=glacierd is reloading its configuration"
    )
    status = "glacierd is running"
    try:
        applied = await _reload(daemon)
        if not applied:
            status = "glacierd is running; the last reload failed (see the journal)"
        return applied
    finally:
        sdnotify.notify(f"READY=1\nSTATUS={status}")


async def _reload(daemon: _Daemon) -> bool:
    old = daemon.ctx.config
    if old.path is None:
        log.error("config.reload_failed", error="glacierd was started without a file to read")
        return False
    try:
        new = await asyncio.to_thread(load_config, old.path)
        _switch_logging(new.logging)
    except ConfigError as exc:
        with contextlib.suppress(ConfigError):  # reopen the log file all the same
            _switch_logging(old.logging)
        log.error(
            "config.reload_failed",
            path=str(old.path),
            error=str(exc),
            detail="the running configuration stays in effect; correct the file and reload again",
        )
        return False
    apply(daemon, new)
    return True


def apply(daemon: _Daemon, new: Config) -> None:
    """Make ``new`` the running configuration (restart-only sections excepted)."""
    ctx = daemon.ctx
    old = ctx.config
    changed = changed_settings(old, new)
    restart = [name for name in changed if name.split(".")[0] in RESTART_ONLY]
    effective = copy.copy(new)  # a private copy: the one place a frozen Config is altered
    for section in RESTART_ONLY:
        object.__setattr__(effective, section, getattr(old, section))
    ctx.config = effective  # the swap: work that starts from now on reads the new settings
    _apply_schedule(daemon, old.schedule)
    log.info(
        "config.reloaded",
        path=str(new.path),
        changed=[name for name in changed if name not in restart],
    )
    if restart:
        log.warning(
            "config.restart_needed",
            settings=restart,
            detail="these settings keep their running values until glacierd restarts "
            "(systemctl restart glacierd)",
        )


def _switch_logging(cfg: LoggingConfig) -> None:
    """Apply [logging] (level, format, file) and reopen the log file; raises ConfigError,
    leaving the current handlers in place, when the file cannot be opened."""
    root = logging.getLogger()
    before = list(root.handlers)
    configure_logging(cfg)
    for handler in before:
        if isinstance(handler, logging.FileHandler) and handler not in root.handlers:
            handler.close()  # the previous log file (stderr is left open)


def _apply_schedule(daemon: _Daemon, old: ScheduleConfig) -> None:
    """The backup job follows [schedule] enabled/backup_cron/timezone; the poll and
    restore jobs their intervals. A job run already going on finishes as it is."""
    ctx, scheduler = daemon.ctx, daemon.scheduler
    new = ctx.config.schedule
    if new == old:
        return
    job = scheduler.get_job("backup")
    if not new.enabled:
        if job is not None:
            scheduler.remove_job("backup")
    elif job is None:
        add_backup_job(scheduler, ctx)
    elif (new.backup_cron, new.timezone) != (old.backup_cron, old.timezone):
        scheduler.reschedule_job("backup", trigger=new.trigger())
    daemon.poller.override = new.poll_interval_seconds
    for spec in daemon.jobs():
        running = scheduler.get_job(spec["id"])
        seconds = spec["seconds"]
        if running is not None and running.trigger.interval != timedelta(seconds=seconds):
            scheduler.reschedule_job(spec["id"], trigger="interval", seconds=seconds)
    backup = scheduler.get_job("backup")
    log.info(
        "schedule.updated",
        enabled=new.enabled,
        cron=new.backup_cron,
        timezone=new.timezone,
        next_backup=backup.next_run_time.isoformat() if backup else None,
        poll_interval_s=new.poll_interval_seconds,
    )


def changed_settings(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted names of the settings whose values differ (names only: a value may be a
    secret, such as a dsn from the environment)."""
    if _is_settings(old) and type(new) is type(old):
        names: list[str] = []
        for f in dataclasses.fields(old):
            if f.name == "path" and not prefix:
                continue  # where the file was read from: not a setting
            key = getattr(f.default, "validation_alias", None) or f.name  # conninfo: dsn
            names += changed_settings(getattr(old, f.name), getattr(new, f.name), f"{prefix}{key}.")
        return names
    return [] if old == new else [prefix.rstrip(".")]


def _is_settings(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and type(value).__module__.startswith("glacierd.config")
