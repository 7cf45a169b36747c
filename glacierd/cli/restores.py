"""Restore commands, through the running daemon (it does the waiting for Glacier): restore,
restore-status, restores, snapshots, restore-snapshot."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from glacierd.api import client
from glacierd.cli import exits
from glacierd.cli.common import add_json, add_tier, add_wait, an_id, print_json, when
from glacierd.cli.registry import Command
from glacierd.config import Config
from glacierd.units import human_bytes

FOLLOW_SECONDS = 2.0


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


async def _follow(cfg: Config, restore_id: int, wait: bool) -> int:
    last = None
    while True:
        r = await client.call(cfg, "GET", f"/restores/{restore_id}")
        shown = (r["state"], json.dumps(r.get("archives", {}).get("by_status")))
        if shown != last:
            _print_restore(r)
            last = shown
        if r["state"] in ("restored", "failed") or not wait:
            return exits.FAILED if r["state"] == "failed" else exits.OK
        await asyncio.sleep(FOLLOW_SECONDS)


async def cmd_restore(cfg: Config, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"dry_run": args.dry_run}
    # Only what the operator chose: the daemon's configuration decides the rest (without
    # files.root, a restore is of the database only).
    for name in ("database", "files", "tier"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    result = await client.call(cfg, "POST", f"/backups/{args.backup_id}/restore", body)
    if args.dry_run:
        print_json(result)
        return exits.OK
    return await _follow(cfg, result["id"], args.wait)


async def cmd_restore_status(cfg: Config, args: argparse.Namespace) -> int:
    return await _follow(cfg, args.restore_id, args.wait)


async def cmd_restores(cfg: Config, args: argparse.Namespace) -> int:
    rows = (await client.call(cfg, "GET", "/restores"))["restores"]
    if args.json:
        print_json(rows)
        return exits.OK
    if not rows:
        print("no restores yet")
        return exits.OK
    print(f"{'ID':>5}  {'STATE':10}  {'FROM':14}  {'REQUESTED (UTC)':19}  FINISHED (UTC)")
    for r in rows:
        source = (
            f"snapshot {r['snapshot_id']}" if r.get("snapshot_id") else f"backup {r['backup_id']}"
        )
        print(
            f"{r['id']:>5}  {r['state']:10}  {source:14}  {when(r['created_at']):19}  "
            f"{when(r['finished_at'])}" + (f"  error: {r['error']}" if r.get("error") else "")
        )
    return exits.OK


async def cmd_snapshots(cfg: Config, args: argparse.Namespace) -> int:
    rows = (await client.call(cfg, "GET", "/snapshots"))["snapshots"]
    if args.json:
        print_json(rows)
        return exits.OK
    if not rows:
        print("no safety snapshots (a restore takes one before it changes the database)")
        return exits.OK
    print(f"{'ID':>5}  {'TAKEN (UTC)':19}  {'SIZE':>10}  {'DATABASE':16}  REASON")
    for s in rows:
        print(
            f"{s['id']:>5}  {when(s['created_at']):19}  {human_bytes(s['size'] or 0):>10}  "
            f"{s['database'] or '-':16}  {s['reason']}"
        )
    return exits.OK


async def cmd_restore_snapshot(cfg: Config, args: argparse.Namespace) -> int:
    result = await client.call(cfg, "POST", f"/snapshots/{args.snapshot_id}/restore", {})
    return await _follow(cfg, result["id"], args.wait)


def _restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backup_id", type=an_id, metavar="BACKUP_ID", help="from glacierd list")
    add_tier(parser)
    parser.add_argument(
        "--database",
        action=argparse.BooleanOptionalAction,
        help="restore the database (default: yes)",
    )
    parser.add_argument(
        "--files",
        action=argparse.BooleanOptionalAction,
        help="restore the attached files (default: yes when files.root is set)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    add_wait(parser)


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("restore_id", type=an_id, metavar="RESTORE_ID")
    add_wait(parser)


def _snapshot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("snapshot_id", type=an_id, metavar="SNAPSHOT_ID", help="from snapshots")
    add_wait(parser)


# A restore that ends failed exits 1, like any failed operation.
RESTORE_EXITS = exits.API_COMMAND

COMMANDS = [
    Command(
        "restore",
        "restore a backup through the running daemon (retrieval, fetch, restore)",
        cmd_restore,
        description="""
        Start a restore through the daemon: it requests the retrievals, downloads and
        verifies every archive, takes a safety snapshot, then restores the database and
        the files. One line per change of state; --wait follows it to the end. Without
        --database/--files the daemon's configuration decides: the database always, the
        files when files.root is set.
        """,
        examples=[
            ("glacierd restore 12 --dry-run", "the plan, as JSON; changes nothing"),
            ("glacierd restore 12 --tier Bulk --wait", "start it and follow it"),
            ("glacierd restore 12 --no-files", "the database only"),
        ],
        exit_codes=RESTORE_EXITS,
        arguments=_restore_arguments,
        read_only=True,
    ),
    Command(
        "restore-status",
        "show (or follow) a restore request",
        cmd_restore_status,
        examples=[
            ("glacierd restore-status 3", "its state now"),
            ("glacierd restore-status 3 --wait", "follow it until it ends"),
        ],
        exit_codes=RESTORE_EXITS,
        arguments=_status_arguments,
        read_only=True,
    ),
    Command(
        "restores",
        "list restore requests, newest first",
        cmd_restores,
        examples=[("glacierd restores", "a table"), ("glacierd restores --json", "as JSON")],
        exit_codes=exits.API_COMMAND,
        arguments=add_json,
        read_only=True,
    ),
    Command(
        "snapshots",
        "list the safety snapshots taken before restores",
        cmd_snapshots,
        description="""
        List the safety snapshots: a dump of the database taken just before a restore
        changed it. 'restore-snapshot ID' puts one back (no retrieval needed).
        """,
        examples=[("glacierd snapshots", "a table"), ("glacierd snapshots --json", "as JSON")],
        exit_codes=exits.API_COMMAND,
        arguments=add_json,
        read_only=True,
    ),
    Command(
        "restore-snapshot",
        "undo a restore: put a safety snapshot back into the database",
        cmd_restore_snapshot,
        description="""
        Restore a safety snapshot into the database (the files a restore put back or moved
        aside stay where it said). Needs no retrieval.
        """,
        examples=[("glacierd restore-snapshot 4 --wait", "undo the restore that took it")],
        exit_codes=RESTORE_EXITS,
        arguments=_snapshot_arguments,
        read_only=True,
    ),
]
