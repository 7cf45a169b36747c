"""Commands about the daemon itself and its set-up: serve, migrate, check-config, doctor."""

from __future__ import annotations

import argparse
import json

from glacierd.catalog import Catalog
from glacierd.catalog.migrations import migrate
from glacierd.cli import exits
from glacierd.cli.registry import Command
from glacierd.config import Config
from glacierd.health.command import add_arguments as check_arguments
from glacierd.health.command import cmd_check
from glacierd.logs import log_file_problem

CONFIG = "/etc/glacierd/glacierd.toml"


async def cmd_serve(cfg: Config, args: argparse.Namespace) -> int:
    from glacierd.service import serve

    return await serve(cfg)


async def cmd_migrate(cfg: Config, args: argparse.Namespace) -> int:
    catalog = Catalog(cfg.catalog.conninfo, cfg.catalog.schema)
    await catalog.open()
    try:
        applied = await migrate(catalog)
    finally:
        await catalog.close()
    print(
        f"catalog schema {cfg.catalog.schema}: "
        + (f"applied {', '.join(applied)}" if applied else "up to date")
    )
    return exits.OK


async def cmd_check_config(cfg: Config, args: argparse.Namespace) -> int:
    if cfg.logging.file is not None and (problem := log_file_problem(cfg.logging.file)):
        raise problem
    schedule = (
        f"schedule '{cfg.schedule.backup_cron}' {cfg.schedule.timezone}"
        if cfg.schedule.enabled
        else "schedule disabled"
    )
    print(
        f"configuration {cfg.path} is valid: database {cfg.database.conninfo.describe()}, "
        f"store {cfg.store.name} ({cfg.store.type}), files {cfg.files.root or '(none)'}, "
        f"{schedule}"
    )
    return exits.OK


async def cmd_doctor(cfg: Config, args: argparse.Namespace) -> int:
    from glacierd.doctor import as_json, render, run_checks

    results = await run_checks(cfg)
    print(json.dumps(as_json(results), indent=2) if args.json else render(results))
    return exits.OK if all(r.ok for r in results) else exits.FAILED


def _doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


COMMANDS = [
    Command(
        "serve",
        "run the daemon: scheduler, control API, SNS endpoint, SQS queue",
        cmd_serve,
        description="""
        Run the daemon: catalog migrations, recovery of interrupted work, the control API,
        the SNS endpoint and the SQS queue (when enabled), the backup schedule, polling and
        downloads. systemd runs it (glacierd.service); it stops cleanly on SIGTERM and
        re-reads the configuration on SIGHUP.
        """,
        examples=[
            (f"glacierd --config {CONFIG} serve", "what the systemd unit runs"),
            ("systemctl reload glacierd", "re-read the configuration (SIGHUP)"),
        ],
        exit_codes=(exits.OK, exits.FAILED, exits.USAGE),
    ),
    Command(
        "migrate",
        "create or upgrade the catalog schema",
        cmd_migrate,
        description="Create or upgrade the catalog schema ('serve' does this at start).",
        examples=[
            ("sudo -u glacierd glacierd migrate", "before the first start, or after an upgrade")
        ],
        exit_codes=exits.LOCAL_COMMAND,
    ),
    Command(
        "check-config",
        "validate the configuration and exit",
        cmd_check_config,
        description="""
        Validate the configuration (every problem at once, one sentence each) and that the
        log file could be opened; connects to nothing and creates nothing.
        """,
        examples=[
            (f"glacierd --config {CONFIG} check-config", "after editing the file"),
        ],
        exit_codes=(exits.OK, exits.USAGE),
        read_only=True,
    ),
    Command(
        "doctor",
        "check the database, tools, catalog, store, disk and SNS setup",
        cmd_doctor,
        description="""
        Check the configuration, the database, pg_dump/pg_restore/psql, the catalog, the
        store's credentials (with a probe object), the disk and the SNS settings: one line
        per check.
        """,
        examples=[
            ("sudo -u glacierd glacierd doctor", "one line per check"),
            ("glacierd doctor --json", "the results as JSON"),
        ],
        exit_codes=(exits.OK, exits.FAILED, exits.USAGE),
        arguments=_doctor_arguments,
        read_only=True,
    ),
    Command(
        "check",
        "check health for monitoring: exit 0 if healthy, 1 with one line per problem",
        cmd_check,
        description="""
        Evaluate health as GET /health does, straight against the catalog and the store (so
        it answers when the daemon is down or hung): the last backup failed or is too old, a
        scheduled run was missed, a retrieval or restore is stuck, the store does not
        answer, state_dir is short of space. Creates nothing.
        """,
        examples=[
            ("sudo -u glacierd glacierd check", "one summary line, or one line per problem"),
            ("glacierd check --json", "what GET /health returns"),
        ],
        exit_codes=(exits.OK, exits.FAILED, exits.USAGE),
        arguments=check_arguments,
        read_only=True,
    ),
]
