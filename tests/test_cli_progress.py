"""The backup's progress display: rate, total and time left, and log lines that never share
a line with it — checked on a rich console with a clock of our own, and on a real
pseudo-terminal running ``glacierd backup``."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from glacierd.cli.progress import BackupProgress
from glacierd.operations.backup import Progress
from tests.conftest import to_toml

REPO = Path(__file__).resolve().parent.parent
# CSI sequences (cursor moves, erasing, colours), OSC sequences, and lone escapes.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[=>78]")


def screen_lines(raw: str) -> list[str]:
    """What was written, as lines: escape sequences removed, split at \\r and \\n."""
    return [line for line in re.split(r"[\r\n]+", ANSI.sub("", raw)) if line.strip()]


def log_lines_are_whole(lines: list[str]) -> list[dict]:
    """Every line that holds a JSON log event is exactly that event."""
    events = []
    for line in lines:
        if '{"' in line:
            assert line.strip().startswith("{"), f"a log line shares its line: {line!r}"
            events.append(json.loads(line))
    return events


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_bar_shows_rate_total_and_time_left_and_logs_print_above_it() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    clock = Clock()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    log = logging.getLogger("glacierd.test")
    try:
        display = BackupProgress(console, get_time=clock)
        p = Progress(backup_id=7)
        with display:
            p.stage = "database"
            for dumped in range(0, 5 * 2**20, 2**20):
                p.database_bytes = dumped
                display(p)
                clock.now += 1
            log.info('{"event": "backup.database_stored", "size": 5242880}')
            p.stage, p.files_total, p.bytes_total = "files", 4, 10 * 2**20
            display(p)
            for done in range(1, 5):
                clock.now += 1
                p.files_done, p.bytes_done = done, done * 2**20
                display(p)
                log.info('{"event": "backup.file_stored", "n": %d}', done)
            display.bars.refresh()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = screen_lines(out.getvalue())
    events = log_lines_are_whole(lines)
    assert [e["event"] for e in events] == ["backup.database_stored"] + ["backup.file_stored"] * 4
    # The files stage, 4 of 10 MiB done at 1 MiB a second: rate, total, time left, files.
    bars = [line for line in lines if "backup 7: archiving files" in line]
    assert bars, lines
    last = bars[-1]
    assert "4.0/10.0 MiB" in last, last
    assert "1.0 MB/s" in last, last
    assert "0:00:06 left" in last, last
    assert "4/4 files" in last, last
    assert any("backup 7: dumping the database" in line and "MB/s" in line for line in lines)
    # The bar is gone at the end (transient): the last thing written is no bar.
    assert not ANSI.sub("", out.getvalue()).rstrip().endswith("left")
    # The handler writes to stderr again.
    assert handler.stream is sys.stderr


@pytest.mark.timeout(120)
def test_glacierd_backup_on_a_terminal_keeps_log_lines_whole(
    tmp_path: Path, make_settings: Callable[..., dict]
) -> None:
    """The real command on a pseudo-terminal, with JSON debug logs on the same terminal."""
    for n in range(30):
        (tmp_path / "files" / f"upload{n}.bin").write_bytes(os.urandom(20_000))
    config = tmp_path / "glacierd.toml"
    config.write_text(to_toml(make_settings(logging={"format": "json", "level": "debug"})))
    controller, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "LINES": "50", "TERM": "xterm-256color"}
    env.pop("GLACIERD_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "glacierd", "--config", str(config), "backup"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=REPO,
        env=env,
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert proc.wait(60) == 0
    raw = b"".join(chunks).decode("utf-8", "replace")
    lines = screen_lines(raw)
    events = log_lines_are_whole(lines)
    assert "backup.completed" in [e["event"] for e in events]
    assert any(re.search(r"backup \d+: ", line) and "left" in line for line in lines), lines
    assert re.search(r"^backup \d+ completed: database ", lines[-1]), lines[-3:]
