"""structlog set-up: JSON lines for journald by default, readable lines on a terminal,
optionally also a log file (the original engine wrote log/aws.log). Under systemd each line
carries its syslog priority for journald (journal.py).

A redaction step runs last before rendering, so a password or token that slipped into an
event (a connection string in an error, a header) never reaches a log.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import structlog

from glacierd.config import ConfigError, LoggingConfig
from glacierd.journal import PriorityPrefix, is_journal_stream

_SECRET_KEYS = re.compile(r"(password|passwd|secret|token|authorization|credential)", re.I)
_URI_PASSWORD = re.compile(r"(\w+://[^:/@\s]*:)([^@\s]+)(@)")  # user may be empty
# A quoted libpq value may hold an escaped quote: 'it\'s secret' is one value.
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)
_AWS_SECRET = re.compile(r"(aws_secret_access_key\s*[=:]\s*)(\S+)", re.I)


def redact_text(text: str) -> str:
    text = _URI_PASSWORD.sub(r"\1***\3", text)
    text = _KV_PASSWORD.sub(r"\1***", text)
    return _AWS_SECRET.sub(r"\1***", text)


def redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key) and value not in (None, ""):
            event[key] = "***"
        elif isinstance(value, str):
            event[key] = redact_text(value)
    return event


class SkippedRunsAreDebug(logging.Filter):
    """APScheduler warns each time a job is due while its last run still runs ("maximum
    number of running instances reached"): hundreds of times during one long restore, for
    something expected (the next tick simply finds the work in hand). Such a record becomes
    a debug line, shown only when glacierd logs at debug."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if "maximum number of running instances reached" not in str(record.msg):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.level <= logging.DEBUG


def _cannot_open(path: Path, reason: str) -> ConfigError:
    return ConfigError(
        f"logging.file {path} cannot be opened ({reason}); create its directory, writable by "
        "the glacierd user, or change logging.file."
    )


def log_file_problem(path: Path) -> ConfigError | None:
    """Why ``path`` could not be opened for appending, found without creating anything
    (for ``check-config`` and ``doctor``, which must change nothing); None if it could."""
    if path.exists():
        if path.is_dir():
            return _cannot_open(path, "it is a directory")
        if not os.access(path, os.W_OK):
            return _cannot_open(path, "it is not writable")
        return None
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                return _cannot_open(path, f"{ancestor} is not a directory")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                return _cannot_open(path, f"{ancestor} is not writable")
            return None
    return None


def _file_handler(path: Path) -> logging.Handler:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise _cannot_open(path, exc.strerror or str(exc)) from None


def configure_logging(
    cfg: LoggingConfig, *, tty: bool | None = None, write_file: bool = True
) -> None:
    """Set up structlog and the standard logging handlers.

    ``write_file`` False: stderr only, for read-only commands, which must not create the
    log file or its directory. A log file that cannot be opened raises ConfigError.
    """
    tty = sys.stderr.isatty() if tty is None else tty
    use_console = cfg.format == "console" or (cfg.format == "auto" and tty)
    level = getattr(logging, cfg.level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    json_renderer = structlog.processors.JSONRenderer()
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_format: logging.Formatter = structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.dev.ConsoleRenderer(colors=tty) if use_console else json_renderer,
        ],
        foreign_pre_chain=shared,
    )
    if is_journal_stream(sys.stderr):  # under systemd: priorities for journalctl -p
        stderr_format = PriorityPrefix(stderr_format)
    stderr_handler.setFormatter(stderr_format)
    handlers: list[logging.Handler] = [stderr_handler]
    if cfg.file is not None and write_file:
        file_handler = _file_handler(Path(cfg.file))
        file_handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    json_renderer,
                ],
                foreign_pre_chain=shared,
            )
        )
        handlers.append(file_handler)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)
    # Library chatter (botocore request dumps can include signed headers) stays at WARNING.
    for noisy in (
        "botocore",
        "aiobotocore",
        "aioboto3",
        "asyncio",
        "apscheduler",
        "aiohttp.access",
    ):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    scheduler_log = logging.getLogger("apscheduler.scheduler")
    for old in [f for f in scheduler_log.filters if isinstance(f, SkippedRunsAreDebug)]:
        scheduler_log.removeFilter(old)  # configured again (a reload, a test)
    scheduler_log.addFilter(SkippedRunsAreDebug(level))
