"""The ``glacierd`` command: serve, backup, list, migrate, check-config.

Every command loads and validates the configuration first; a ConfigError (or any expected
operational error) prints one sentence and exits non-zero — no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from glacierd import __version__
from glacierd.api import client
from glacierd.catalog import Catalog
from glacierd.catalog import backups as backup_rows
from glacierd.catalog.locks import BusyError
from glacierd.catalog.migrations import catalog_state, migrate
from glacierd.config import TIERS, Config, ConfigError, load_config
from glacierd.context import open_context
from glacierd.health.command import HELP as CHECK_HELP
from glacierd.health.command import add_arguments as check_arguments
from glacierd.health.command import cmd_check
from glacierd.logs import configure_logging, log_file_problem
from glacierd.operations import inventory
from glacierd.operations.backup import Progress, run_backup
from glacierd.operations.errors import EXPECTED, OperationError
from glacierd.units import human_bytes

EXIT_FAILED, EXIT_CONFIG, EXIT_BUSY = 1, 2, 3
LIST_LIMIT_MAX = 10000
# Commands that only look: they create no catalog schema, no log file or directory, no
# vault directory (they log to stderr only).
READ_ONLY = {"list", "check-config", "doctor", "restore", "restore-status", "check"}


class ProgressLine:
    """A single self-overwriting progress line on a terminal."""

    def __init__(self) -> None:
        self.last = ""

    def __call__(self, p: Progress) -> None:
        if p.stage == "database":
            text = f"backup {p.backup_id}: dumping database {human_bytes(p.database_bytes)}"
        elif p.stage == "files":
            text = (
                f"backup {p.backup_id}: files {p.files_done}/{p.files_total} "
                f"({human_bytes(p.bytes_done)} of {human_bytes(p.bytes_total)})"
            )
        else:
            text = f"backup {p.backup_id}: {p.stage}"
        if text != self.last:
            sys.stderr.write("\r\x1b[K" + text)
            sys.stderr.flush()
            self.last = text

    def finish(self) -> None:
        if self.last:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


async def cmd_serve(cfg: Config, args: argparse.Namespace) -> int:
    from glacierd.service import serve

    return await serve(cfg)


async def cmd_backup(cfg: Config, args: argparse.Namespace) -> int:
    show = sys.stderr.isatty() and not args.json
    line = ProgressLine() if show else None
    async with open_context(cfg) as ctx:
        try:
            summary = await run_backup(ctx, "cli", line)
        finally:
            if line:
                line.finish()
    if args.json:
        print(json.dumps(summary))
    else:
        dumped, uploaded = summary["database_bytes"], summary["bytes_uploaded"]
        print(
            f"backup {summary['backup_id']} completed: database {human_bytes(dumped)}, "
            f"{summary['file_count']} files ({summary['new_files']} new, "
            f"{summary['skipped_files']} skipped), {human_bytes(uploaded)} uploaded "
            f"in {summary['duration_s']} s"
        )
    return 0


async def _read_backups(cfg: Config, limit: int) -> list[dict[str, Any]] | None:
    """The newest backups, or None when the catalog schema does not exist yet; never
    creates or upgrades the schema (``list`` is read-only)."""
    catalog = Catalog(cfg.catalog.conninfo, cfg.catalog.schema)
    await catalog.open()
    try:
        state = await catalog_state(catalog)
        if not state.exists:
            return None
        if state.pending:
            raise OperationError(
                f"the catalog schema {cfg.catalog.schema} needs {', '.join(state.pending)}, "
                "which this glacierd brings",
                "run 'glacierd migrate' (or start the daemon) first",
            )
        rows = await backup_rows.list_backups(catalog.pool, catalog, limit)
    finally:
        await catalog.close()
    return [inventory.backup_summary(r) for r in rows]


async def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    rows = await _read_backups(cfg, args.limit)
    if args.json:
        print(json.dumps(rows or [], indent=2))
        return 0
    if rows is None:
        print(
            f"no backups yet (the catalog schema {cfg.catalog.schema} does not exist yet; "
            "'glacierd migrate' or the daemon's start creates it)"
        )
        return 0
    if not rows:
        print("no backups yet")
        return 0
    header = ("ID", "STATUS", "STARTED (UTC)", "FILES", "NEW", "UPLOADED", "RETRIEVAL")
    print("{:>5}  {:9}  {:19}  {:>7}  {:>6}  {:>10}  {}".format(*header))
    for r in rows:
        started = (r["started_at"] or "")[:19].replace("T", " ")
        retrieval = r["retrieval_status"] or "-"
        print(
            f"{r['id']:>5}  {r['status']:9}  {started:19}  {r['file_count']:>7}  "
            f"{r['new_files']:>6}  {human_bytes(r['bytes_uploaded']):>10}  {retrieval}"
            + (f"  error: {r['error']}" if r["error"] else "")
        )
    return 0


def _print_restore(r: dict[str, Any]) -> None:
    line = f"restore {r['id']}: {r['state']}"
    by_status = r.get("archives", {}).get("by_status", {})
    if by_status:
        line += " (" + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) + ")"
    if r.get("expected_ready_at") and r["state"] == "retrieving":
        line += f", expected ready by {r['expected_ready_at']}"
    if r.get("error"):
        line += f" — {r['error']}"
    print(line, flush=True)


async def _follow(cfg: Config, restore_id: int, wait: bool, interval: float = 2.0) -> int:
    last = None
    while True:
        r = await client.call(cfg, "GET", f"/restores/{restore_id}")
        shown = (r["state"], json.dumps(r.get("archives", {}).get("by_status")))
        if shown != last:
            _print_restore(r)
            last = shown
        if r["state"] in ("restored", "failed") or not wait:
            return 1 if r["state"] == "failed" else 0
        await asyncio.sleep(interval)


async def cmd_restore(cfg: Config, args: argparse.Namespace) -> int:
    body = {"database": not args.no_database, "files": not args.no_files, "dry_run": args.dry_run}
    if args.tier:
        body["tier"] = args.tier
    result = await client.call(cfg, "POST", f"/backups/{args.backup_id}/restore", body)
    if args.dry_run:
        print(json.dumps(result, indent=2))
        return 0
    return await _follow(cfg, result["id"], args.wait)


async def cmd_restore_status(cfg: Config, args: argparse.Namespace) -> int:
    return await _follow(cfg, args.restore_id, args.wait)


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
    return 0


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
    return 0


async def cmd_doctor(cfg: Config, args: argparse.Namespace) -> int:
    from glacierd.doctor import as_json, render, run_checks

    results = await run_checks(cfg)
    print(json.dumps(as_json(results), indent=2) if args.json else render(results))
    return 0 if all(r.ok for r in results) else EXIT_FAILED


Command = Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]]
COMMANDS: dict[str, tuple[str, Command]] = {
    "serve": ("run the daemon: scheduler, control API, SNS endpoint", cmd_serve),
    "backup": ("run one backup now and wait for it", cmd_backup),
    "list": ("list backups", cmd_list),
    "restore": (
        "restore a backup through the running daemon (retrieval, fetch, restore)",
        cmd_restore,
    ),
    "restore-status": ("show a restore request's progress", cmd_restore_status),
    "migrate": ("create or upgrade the catalog schema", cmd_migrate),
    "check-config": ("validate the configuration and exit", cmd_check_config),
    "doctor": ("check the database, tools, catalog, store, disk and SNS setup", cmd_doctor),
    "check": (CHECK_HELP, cmd_check),
}


def _list_limit(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if not 0 < value <= LIST_LIMIT_MAX:
        raise argparse.ArgumentTypeError(
            f"--limit must be a whole number from 1 to {LIST_LIMIT_MAX}; got {text!r}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glacierd", description="Back up PostgreSQL and attached files to Amazon Glacier."
    )
    parser.add_argument("--version", action="version", version=f"glacierd {__version__}")
    parser.add_argument(
        "--config",
        "-c",
        help="configuration file (default: $GLACIERD_CONFIG or /etc/glacierd/glacierd.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers: dict[str, argparse.ArgumentParser] = {}
    for name, (help_text, _) in COMMANDS.items():
        parsers[name] = sub.add_parser(name, help=help_text, description=help_text)
    parsers["backup"].add_argument("--json", action="store_true", help="print the summary as JSON")
    parsers["list"].add_argument("--json", action="store_true", help="print JSON")
    parsers["list"].add_argument(
        "--limit", type=_list_limit, default=50, help=f"at most this many (1-{LIST_LIMIT_MAX})"
    )
    parsers["doctor"].add_argument("--json", action="store_true", help="print the results as JSON")
    check_arguments(parsers["check"])
    restore = parsers["restore"]
    restore.add_argument("backup_id", type=int, help="the backup to restore (glacierd list)")
    restore.add_argument("--tier", choices=TIERS)
    restore.add_argument("--no-database", action="store_true", help="restore files only")
    restore.add_argument("--no-files", action="store_true", help="restore the database only")
    restore.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    restore.add_argument("--wait", action="store_true", help="follow it until it ends")
    status = parsers["restore-status"]
    status.add_argument("restore_id", type=int)
    status.add_argument("--wait", action="store_true", help="follow it until it ends")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
        configure_logging(cfg.logging, write_file=args.command not in READ_ONLY)
    except ConfigError as exc:
        print(f"glacierd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _, handler = COMMANDS[args.command]
    try:
        return asyncio.run(handler(cfg, args))
    except ConfigError as exc:
        print(f"glacierd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BusyError as exc:
        print(f"glacierd: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except EXPECTED as exc:
        print(f"glacierd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("glacierd: interrupted", file=sys.stderr)
        return 130
