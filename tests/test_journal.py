"""Log priorities for journald, and APScheduler's skipped-run chatter kept out of warnings.

Under systemd, stderr is a stream to the journal and ``JOURNAL_STREAM`` names it
(``device:inode``). journald reads a ``<N>`` prefix on each line as that line's syslog
priority (sd-daemon(3), ``SyslogLevelPrefix=`` is on by default), which is what
``journalctl -p err`` filters on. Each case runs a real Python process whose stderr is a
file, exactly as systemd hands glacierd a stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from glacierd.config import LoggingConfig
from glacierd.logs import configure_logging

ROOT = Path(__file__).resolve().parent.parent

EMIT = textwrap.dedent(
    """
    import logging, sys
    import structlog
    from glacierd.config import LoggingConfig
    from glacierd.logs import configure_logging

    configure_logging(LoggingConfig(format=sys.argv[1], level="debug"), tty=False)
    log = structlog.get_logger("glacierd.test")
    log.debug("probe.debug")
    log.info("probe.info")
    log.warning("probe.warning")
    log.error("backup.failed", error="pg_dump exited with 1")
    log.critical("probe.critical")
    logging.getLogger("botocore").error("a library's error")
    try:
        raise RuntimeError("first line\\nsecond line")
    except RuntimeError:
        log.exception("restore.failed")
    """
)


def run_emitter(tmp_path: Path, fmt: str, *, journal: str | None) -> list[str]:
    """Run EMIT with stderr to a file; ``journal``: "match" (JOURNAL_STREAM names that
    file), "other" (it names another file: stderr was redirected away from the journal) or
    None (not under systemd)."""
    out = tmp_path / f"stderr-{fmt}-{journal}.txt"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with out.open("wb") as stderr:
        if journal is not None:
            target = stderr.fileno() if journal == "match" else os.open(ROOT, os.O_RDONLY)
            st = os.fstat(target)
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
            if target != stderr.fileno():
                os.close(target)
        subprocess.run(
            [sys.executable, "-c", EMIT, fmt],
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
            check=True,
            timeout=60,
        )
    return out.read_text().splitlines()


def test_each_json_line_carries_its_syslog_priority_under_journald(tmp_path: Path) -> None:
    lines = run_emitter(tmp_path, "json", journal="match")
    by_event = {}
    for line in lines:
        assert line[0] == "<" and line[2] == ">", line
        by_event[json.loads(line[3:])["event"]] = int(line[1])
    assert by_event == {
        "probe.debug": 7,
        "probe.info": 6,
        "probe.warning": 4,
        "backup.failed": 3,  # journalctl -p err finds it
        "probe.critical": 2,
        "a library's error": 3,
        "restore.failed": 3,
    }


def test_every_line_of_a_multi_line_entry_is_prefixed(tmp_path: Path) -> None:
    """A console traceback spans lines; each must keep the entry's priority, or journald
    files the traceback's lines at the default (info)."""
    lines = run_emitter(tmp_path, "console", journal="match")
    start = next(i for i, line in enumerate(lines) if "restore.failed" in line)
    tail = lines[start:]
    assert any("second line" in line for line in tail)
    assert all(line.startswith("<3>") for line in tail), tail
    assert [line[:3] for line in lines if "probe.info" in line] == ["<6>"]


@pytest.mark.parametrize("journal", [None, "other"])
def test_no_prefix_when_stderr_is_not_the_journal(tmp_path: Path, journal: str | None) -> None:
    """Run by hand, or with stderr redirected to a file inside a unit: plain JSON lines."""
    lines = run_emitter(tmp_path, "json", journal=journal)
    events = [json.loads(line)["event"] for line in lines]  # every line is bare JSON
    assert "backup.failed" in events and "probe.info" in events


# ------------------------------------------------------------------ APScheduler chatter


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[Captured]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield Captured()
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


async def _skip_a_run(level: str, captured: Captured) -> None:
    """A real AsyncIOScheduler whose job is still running when it is due again: APScheduler
    skips the run and logs "maximum number of running instances reached"."""
    configure_logging(LoggingConfig(format="json", level=level), tty=False)
    logging.getLogger().addHandler(captured)
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await release.wait()

    scheduler = AsyncIOScheduler(timezone="UTC")
    skipped = asyncio.Event()
    loop = asyncio.get_running_loop()
    scheduler.add_listener(
        lambda event: loop.call_soon_threadsafe(skipped.set), EVENT_JOB_MAX_INSTANCES
    )
    scheduler.add_job(
        slow, "interval", seconds=3600, id="poll", max_instances=1, next_run_time=datetime.now(UTC)
    )
    scheduler.start()
    try:
        await asyncio.wait_for(started.wait(), 10)  # the first run starts and stays running
        scheduler.modify_job("poll", next_run_time=datetime.now(UTC))  # due again at once
        await asyncio.wait_for(skipped.wait(), 10)  # skipped: one instance is running
    finally:
        release.set()
        scheduler.shutdown(wait=False)


def _skips(captured: Captured) -> list[logging.LogRecord]:
    return [r for r in captured.records if "maximum number of running" in r.getMessage()]


async def test_skipped_scheduler_runs_are_not_warnings(captured: Captured) -> None:
    await _skip_a_run("info", captured)
    assert _skips(captured) == []
    assert not [r for r in captured.records if r.levelno >= logging.WARNING]


async def test_skipped_scheduler_runs_show_at_debug(captured: Captured) -> None:
    await _skip_a_run("debug", captured)
    skips = _skips(captured)
    assert len(skips) == 1 and skips[0].levelno == logging.DEBUG
