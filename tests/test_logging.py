"""Logging: secrets redacted, JSON lines for journald, readable lines on a terminal, an
optional log file, and a real backup whose DSN carries a password that never shows."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from glacierd.config import LoggingConfig
from glacierd.logs import configure_logging, redact, redact_text
from glacierd.pgconnect.conninfo import parse_conninfo
from glacierd.sources.database import PgDump
from tests import pg
from tests.conftest import to_toml

SECRET = "hunter2secret"


# ------------------------------------------------------------------------------------------
# redaction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://app:hunter2secret@db:5432/shop", "postgresql://app:***@db:5432/shop"),
        (
            "connecting to postgres://app:hunter2secret@db/shop failed: timeout",
            "connecting to postgres://app:***@db/shop failed: timeout",
        ),
        ("postgresql://:hunter2secret@db/shop", "postgresql://:***@db/shop"),
        (
            "two: postgresql://a:hunter2secret@h1/x and postgresql://b:other-secret@h2/y",
            "two: postgresql://a:***@h1/x and postgresql://b:***@h2/y",
        ),
        ("host=db password=hunter2secret dbname=shop", "host=db password=*** dbname=shop"),
        ("host=db password = hunter2secret dbname=shop", "host=db password = *** dbname=shop"),
        ("host=db password='hunter2 secret' dbname=shop", "host=db password=*** dbname=shop"),
        (r"host=db password='it\'s hunter2secret' dbname=shop", "host=db password=*** dbname=shop"),
        ("PGPASSWORD=hunter2secret pg_dump", "PGPASSWORD=*** pg_dump"),
        ("aws_secret_access_key = hunter2secret", "aws_secret_access_key = ***"),
        (
            "AWS_SECRET_ACCESS_KEY=hunter2secret region=eu-west-1",
            "AWS_SECRET_ACCESS_KEY=*** region=eu-west-1",
        ),
        ("aws_secret_access_key: hunter2secret", "aws_secret_access_key: ***"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://app@db:5432/shop",
        "postgresql://db:5432/shop?sslmode=require",
        "backup 7 completed: 3 files, 12 KiB",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
    ],
)
def test_redact_text_leaves_harmless_text_alone(text: str) -> None:
    assert redact_text(text) == text


def test_redact_event_dict() -> None:
    event = {
        "event": "catalog.connect postgresql://u:hunter2secret@h/db",
        "password": "hunter2secret",
        "db_password": "x",
        "api_token": "tok-123",
        "Authorization": "Bearer abc",
        "aws_credentials": {"key": "k"},
        "empty_password": "",
        "dsn": "host=h password=hunter2secret",
        "count": 3,
        "path": "ab/cd/abcd1234",
    }
    out = redact(None, "info", dict(event))
    assert out == {
        "event": "catalog.connect postgresql://u:***@h/db",
        "password": "***",
        "db_password": "***",
        "api_token": "***",
        "Authorization": "***",
        "aws_credentials": "***",
        "empty_password": "",
        "dsn": "host=h password=***",
        "count": 3,
        "path": "ab/cd/abcd1234",
    }


# ------------------------------------------------------------------------------------------
# configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # every line must be one JSON object


def test_json_output_is_one_object_per_line(
    restore_logging: None, capsys: pytest.CaptureFixture
) -> None:
    configure_logging(LoggingConfig(format="json", level="info"), tty=False)
    log = structlog.get_logger("glacierd.test")
    log.info("backup.started", backup_id=7, dsn=f"postgresql://u:{SECRET}@h/db")
    log.debug("backup.detail", hidden=True)  # below the level: not written
    try:
        raise RuntimeError(f"could not connect with password={SECRET}\nsecond line")
    except RuntimeError:
        log.exception("backup.failed", backup_id=7)
    logging.getLogger("some.library").warning("retrying postgresql://u:%s@h/db", SECRET)
    logging.getLogger("botocore").info("request headers: ...")  # library chatter suppressed

    err = capsys.readouterr().err
    events = json_lines(err)
    assert [e["event"] for e in events] == [
        "backup.started",
        "backup.failed",
        "retrying postgresql://u:***@h/db",
    ]
    started, failed, foreign = events
    assert started["backup_id"] == 7 and started["level"] == "info"
    assert started["logger"] == "glacierd.test"
    assert started["dsn"] == "postgresql://u:***@h/db"
    assert started["timestamp"].endswith("Z")
    assert failed["level"] == "error"
    assert "RuntimeError: could not connect with password=***" in failed["exception"]
    assert "Traceback" in failed["exception"]
    assert foreign["level"] == "warning" and foreign["logger"] == "some.library"
    assert SECRET not in err


def test_debug_level_writes_debug_events(
    restore_logging: None, capsys: pytest.CaptureFixture
) -> None:
    configure_logging(LoggingConfig(format="json", level="debug"), tty=False)
    structlog.get_logger("glacierd.test").debug("backup.detail", n=1)
    [event] = json_lines(capsys.readouterr().err)
    assert (event["event"], event["level"], event["n"]) == ("backup.detail", "debug", 1)


@pytest.mark.parametrize(
    ("fmt", "tty", "colours"),
    [("auto", True, True), ("console", False, False), ("console", True, True)],
)
def test_console_output_for_a_terminal(
    restore_logging: None, capsys: pytest.CaptureFixture, fmt: str, tty: bool, colours: bool
) -> None:
    configure_logging(LoggingConfig(format=fmt, level="info"), tty=tty)
    structlog.get_logger("glacierd.test").warning(
        "backup.file_skipped", path="ab/cd/x", reason="outside-root", password=SECRET
    )
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    with pytest.raises(json.JSONDecodeError):
        json.loads(err)
    assert "backup.file_skipped" in err
    assert "outside-root" in err and "ab/cd/x" in err
    assert ("\x1b[" in err) is colours
    assert SECRET not in err


def test_auto_without_a_terminal_is_json(
    restore_logging: None, capsys: pytest.CaptureFixture
) -> None:
    configure_logging(LoggingConfig(format="auto", level="info"), tty=False)
    structlog.get_logger("glacierd.test").info("service.started", port=8470)
    [event] = json_lines(capsys.readouterr().err)
    assert event["event"] == "service.started" and event["port"] == 8470


def test_log_file_gets_json_lines(
    restore_logging: None, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    path = tmp_path / "logs" / "nested" / "glacierd.log"  # the folder is created
    configure_logging(LoggingConfig(format="console", level="info", file=path), tty=True)
    log = structlog.get_logger("glacierd.test")
    log.info("backup.started", backup_id=1)
    log.info("backup.completed", backup_id=1, dsn=f"host=h password={SECRET}")
    for handler in logging.getLogger().handlers:
        handler.flush()
    events = json_lines(path.read_text())
    assert [(e["event"], e["backup_id"]) for e in events] == [
        ("backup.started", 1),
        ("backup.completed", 1),
    ]
    assert events[1]["dsn"] == "host=h password=***"
    # The terminal still gets readable lines, not JSON.
    err = capsys.readouterr().err
    assert "backup.started" in err and not err.lstrip().startswith("{")
    assert SECRET not in path.read_text() + err


# ------------------------------------------------------------------------------------------
# a real backup with a password in the DSN


def test_pg_dump_argv_never_holds_the_password() -> None:
    info = parse_conninfo(f"postgresql://postgres:{SECRET}@127.0.0.1:5432/shop")
    dump = PgDump("pg_dump", info, ["--exclude-schema=glacierd"])
    argv = dump.argv()
    assert argv[0].endswith("pg_dump") and argv[1:] == [
        "--format=custom",
        "--no-password",
        "--exclude-schema=glacierd",
    ]
    assert not any(SECRET in a or "postgresql://" in a for a in argv)
    env = info.libpq_env()  # the password travels in the environment instead
    assert env["PGPASSWORD"] == SECRET and env["PGDATABASE"] == "shop"


class RecordingPgDump:
    """A pg_dump wrapper that records its arguments and whether PGPASSWORD reached it."""

    def __init__(self, folder: Path) -> None:
        self.record = folder / "pg_dump.record"
        self.tool = folder / "pg_dump_wrapper"
        self.tool.write_text(
            "#!/bin/sh\n"
            f"printf '%s\\n' \"$0\" \"$@\" > '{self.record}'\n"
            f"printf 'PGPASSWORD=%s\\n' \"$PGPASSWORD\" >> '{self.record}'\n"
            'exec pg_dump "$@"\n'
        )
        self.tool.chmod(self.tool.stat().st_mode | stat.S_IXUSR)

    def argv(self) -> list[str]:
        return self.record.read_text().splitlines()[:-1]

    def env_line(self) -> str:
        return self.record.read_text().splitlines()[-1]


def test_backup_with_password_in_dsn_never_logs_it(
    make_settings: Callable[..., dict],
    app_db: str,
    tmp_path: Path,
) -> None:
    recorder = RecordingPgDump(tmp_path)
    dsn = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/{app_db}"
    log_file = tmp_path / "log" / "glacierd.log"
    settings = make_settings(
        database={"pg_dump": str(recorder.tool)},
        logging={"format": "json", "level": "debug", "file": str(log_file)},
    )
    config = tmp_path / "glacierd.toml"
    config.write_text(to_toml(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GLACIERD_"))}
    # A password may not sit in the file's dsn (refused at load); the environment's may.
    env["GLACIERD_DATABASE_DSN"] = dsn
    proc = subprocess.run(
        [sys.executable, "-m", "glacierd", "--config", str(config), "backup", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["new_files"] == 3 and summary["database_bytes"] > 0

    events = json_lines(proc.stderr)
    names = [e["event"] for e in events]
    assert "backup.started" in names and "backup.completed" in names
    assert "backup.database_stored" in names
    assert json_lines(log_file.read_text()) == events  # the file holds the same lines
    everything = proc.stdout + proc.stderr + log_file.read_text()
    assert SECRET not in everything

    argv = recorder.argv()
    assert argv[0] == str(recorder.tool)
    assert argv[1:3] == ["--format=custom", "--no-password"]
    assert not any(SECRET in a or app_db in a for a in argv)
    assert recorder.env_line() == f"PGPASSWORD={SECRET}"  # it went through the environment

    # The catalog holds no password either (it would show in GET /backups).
    dump = subprocess.run(
        [
            "psql",
            "-X",
            "-At",
            "-d",
            pg.dsn_for(app_db),
            "-c",
            "SELECT b::text FROM glacierd.backups b UNION ALL "
            "SELECT a::text FROM glacierd.archives a",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "completed" in dump and SECRET not in dump
