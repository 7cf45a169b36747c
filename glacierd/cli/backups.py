"""Commands that work on the catalog and the store directly (no daemon needed): backup, list."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console

from glacierd.catalog import Catalog
from glacierd.catalog import backups as backup_rows
from glacierd.catalog.migrations import catalog_state
from glacierd.cli import exits
from glacierd.cli.common import a_limit, add_json, an_id, print_json, when
from glacierd.cli.progress import BackupProgress
from glacierd.cli.registry import Command
from glacierd.config import Config
from glacierd.context import open_context
from glacierd.operations import inventory
from glacierd.operations.backup import run_backup
from glacierd.operations.errors import OperationError
from glacierd.units import human_bytes


async def cmd_backup(cfg: Config, args: argparse.Namespace) -> int:
    async with open_context(cfg) as ctx:
        if sys.stderr.isatty() and not args.json:
            with BackupProgress(Console(stderr=True)) as progress:
                summary = await run_backup(ctx, "cli", progress)
        else:
            summary = await run_backup(ctx, "cli")
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
    return exits.OK


async def _read_backups(cfg: Config, limit: int, before: int | None) -> list[dict[str, Any]] | None:
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
        rows = await backup_rows.list_backups(catalog.pool, catalog, limit, before)
    finally:
        await catalog.close()
    return [inventory.backup_summary(r) for r in rows]


async def cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    rows = await _read_backups(cfg, args.limit, args.before)
    if args.json:
        print_json(rows or [])
        return exits.OK
    if rows is None:
        print(
            f"no backups yet (the catalog schema {cfg.catalog.schema} does not exist yet; "
            "'glacierd migrate' or the daemon's start creates it)"
        )
        return exits.OK
    older = f" older than backup {args.before}" if args.before else ""
    if not rows:
        print(f"no backups{older}" if older else "no backups yet")
        return exits.OK
    print(f"backups{older}, newest first; this configuration's store {_store(cfg)}")
    header = ("ID", "STATUS", "STARTED (UTC)", "STORE", "FILES", "NEW", "UPLOADED", "RETRIEVAL")
    print("{:>5}  {:9}  {:19}  {:10}  {:>7}  {:>6}  {:>10}  {}".format(*header))
    for r in rows:
        print(
            f"{r['id']:>5}  {r['status']:9}  {when(r['started_at']):19}  "
            f"{r['store'] or '-':10}  {r['file_count']:>7}  {r['new_files']:>6}  "
            f"{human_bytes(r['bytes_uploaded']):>10}  {r['retrieval_status'] or '-'}"
            + (f"  error: {r['error']}" if r["error"] else "")
        )
    if len(rows) == args.limit:
        print(f"older: glacierd list --limit {args.limit} --before {rows[-1]['id']}")
    return exits.OK


def _store(cfg: Config) -> str:
    return f"{cfg.store.name} ({cfg.store.type})"


def _backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    add_json(parser)
    parser.add_argument(
        "--limit", type=a_limit, default=50, help="at most this many (1-10000, default 50)"
    )
    parser.add_argument(
        "--before", type=an_id, metavar="ID", help="only backups older than this one (paging)"
    )


COMMANDS = [
    Command(
        "backup",
        "run one backup now and wait for it",
        cmd_backup,
        description="""
        Run one backup now, in this process, and wait for it. On a terminal it shows a
        progress bar (bytes, rate, time left) with the log printed above it; otherwise one
        summary line. Another backup or a restore running at the same time: exit 3.
        """,
        examples=[
            ("sudo -u glacierd glacierd backup", "back up now, with a progress bar"),
            ("glacierd backup --json", "the summary as JSON (no progress bar)"),
        ],
        exit_codes=(exits.OK, exits.FAILED, exits.USAGE, exits.BUSY, exits.INTERRUPTED),
        arguments=_backup_arguments,
    ),
    Command(
        "list",
        "list backups, newest first, page by page",
        cmd_list,
        description="""
        List backups, newest first, with the store each went to. Read-only: on a database
        without the catalog schema it says so and creates nothing; on an older schema it
        asks you to run 'migrate'. When a page is full, the last line is the command for
        the next (older) page.
        """,
        examples=[
            ("glacierd list", "the newest 50"),
            ("glacierd list --limit 20 --before 118", "the 20 before backup 118"),
            ("glacierd list --json", "as JSON"),
        ],
        exit_codes=exits.LOCAL_COMMAND,
        arguments=_list_arguments,
        read_only=True,
    ),
]
