"""The progress display of ``glacierd backup`` on a terminal (rich).

One bar for the stage the backup is in: the database dump (bytes so far and the rate; its
size is not known in advance), the walk of the files root, then the files (bytes of the
total, the rate, the time left, and files done of all). While it shows, the log's terminal
handler writes through the same console: rich prints each log line whole above the bar and
draws the bar again below it, so a log line and the bar never share a line. The bar is
removed when the backup ends; the summary line follows on stdout.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as Bars
from rich.text import Text

from glacierd.operations.backup import Progress

STAGES = {
    "starting": "starting",
    "database": "dumping the database",
    "walking": "walking the files",
    "files": "archiving files",
    "done": "finishing",
}


class TimeLeft(ProgressColumn):
    """'0:01:05 left' once the total is known (the files), nothing before (the dump)."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        seconds = task.time_remaining
        if seconds is None:
            return Text("-:--:-- left")
        minutes, second = divmod(int(seconds), 60)
        hour, minute = divmod(minutes, 60)
        return Text(f"{hour}:{minute:02d}:{second:02d} left")


class BackupProgress:
    """A listener for ``run_backup`` that draws the stage's bar; a context manager that
    shows it and sends the log through the console meanwhile."""

    def __init__(self, console: Console, *, get_time: Callable[[], float] | None = None) -> None:
        self.console = console
        self.bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeLeft(),
            TextColumn("{task.fields[files]}"),
            console=console,
            transient=True,
            get_time=get_time,
        )
        self._task: TaskID | None = None
        self._stage = ""
        # A log line is printed above the bar as it is now (not as last drawn).
        self._redirect: AbstractContextManager[None] = logs_through(console, self.bars.refresh)

    def __call__(self, p: Progress) -> None:
        if p.stage != self._stage:
            self._start_stage(p)
        if p.stage == "database":
            self._update(completed=p.database_bytes)
        elif p.stage == "files":
            self._update(
                completed=p.bytes_done,
                total=p.bytes_total,
                files=f"{p.files_done}/{p.files_total} files",
            )

    def _start_stage(self, p: Progress) -> None:
        self._stage = p.stage
        description = f"backup {p.backup_id}: {STAGES.get(p.stage, p.stage)}"
        # A new stage starts its own count, so the rate and the time left are its own.
        total = p.bytes_total if p.stage == "files" else None
        if self._task is None:
            self._task = self.bars.add_task(description, total=total, files="")
        else:
            self.bars.reset(self._task, total=total, description=description, files="")

    def _update(self, **fields: object) -> None:
        assert self._task is not None
        self.bars.update(self._task, **fields)  # type: ignore[arg-type]

    def __enter__(self) -> BackupProgress:
        self._redirect.__enter__()
        self.bars.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.bars.stop()
        finally:
            self._redirect.__exit__(kind, exc, tb)


class _ConsoleLines(io.TextIOBase):
    """A text stream that hands each whole line to a rich console (for logging handlers)."""

    def __init__(self, console: Console, before: Callable[[], None]) -> None:
        self.console = console
        self.before = before
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        if lines:
            self.before()
        for line in lines:
            # soft_wrap: no newline inserted into a long (JSON) line; colours kept.
            self.console.print(Text.from_ansi(line), soft_wrap=True, highlight=False)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self.write("\n")


@contextmanager
def logs_through(console: Console, before: Callable[[], None]) -> Iterator[None]:
    """Point the root logger's stderr handlers at ``console`` for the duration; ``before``
    runs before each batch of lines."""
    swapped: list[tuple[logging.StreamHandler[io.TextIOBase], object]] = []
    stream = _ConsoleLines(console, before)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and handler.stream in (
            sys.stderr,
            sys.__stderr__,
        ):
            swapped.append((handler, handler.setStream(stream)))
    try:
        yield
    finally:
        stream.flush()
        for handler, old in swapped:
            handler.setStream(old)  # type: ignore[arg-type]
