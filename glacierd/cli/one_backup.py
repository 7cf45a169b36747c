"""Commands on one backup, through the running daemon: show, retrieve, delete."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from glacierd.api import client
from glacierd.cli import exits
from glacierd.cli.common import (
    a_limit,
    add_json,
    add_tier,
    an_id,
    an_offset,
    print_json,
    stdin_is_a_terminal,
    when,
)
from glacierd.cli.registry import Command
from glacierd.config import Config
from glacierd.units import human_bytes


async def cmd_show(cfg: Config, args: argparse.Namespace) -> int:
    path = f"/backups/{args.backup_id}"
    if args.all:
        pages = [page async for page in client.pages(cfg, path, "archives", args.limit)]
        detail = {**pages[-1], "archives": [a for p in pages for a in p["archives"]]}
        detail.pop("next_offset", None)
    else:
        detail = await client.call(cfg, "GET", f"{path}?limit={args.limit}&offset={args.offset}")
    if args.json:
        print_json(detail)
        return exits.OK
    _print_backup(detail)
    archives = detail["archives"]
    total = detail.get("archive_count", len(archives))
    first = 1 if args.all else args.offset + 1
    print(f"\narchives {first}-{first + len(archives) - 1} of {total}:" if archives else "")
    print(f"{'ID':>7}  {'KIND':8}  {'STATUS':9}  {'SIZE':>10}  {'CLASS':12}  KEY")
    for a in archives:
        print(
            f"{a['id']:>7}  {a['kind']:8}  {a['status']:9}  {human_bytes(a['size'] or 0):>10}  "
            f"{a['storage_class'] or '-':12}  {a['key']}" + _retrieval_note(a)
        )
    if not args.all and detail.get("next_offset") is not None:
        print(
            f"next: glacierd show {args.backup_id} --offset {detail['next_offset']} "
            f"--limit {args.limit}"
        )
    return exits.OK


def _print_backup(b: dict[str, Any]) -> None:
    print(f"backup {b['id']}: {b['status']} ({b['trigger']}), store {b.get('store') or '-'}")
    print(f"  started   {when(b['started_at'])} UTC, finished {when(b['finished_at'])}")
    print(
        f"  database  {b['database'] or '-'}; {b['file_count']} files, {b['new_files']} new, "
        f"{b['skipped_files']} skipped; {human_bytes(b['bytes_uploaded'])} uploaded"
    )
    print(f"  retrieval {b['retrieval_status'] or '-'}")
    if b.get("error"):
        print(f"  error     {b['error']}")


def _retrieval_note(a: dict[str, Any]) -> str:
    if a.get("retrieval_error"):
        return f"  ({a['retrieval_error']})"
    if a["status"] == "pending" and a.get("expected_ready_at"):
        return f"  (expected ready by {when(a['expected_ready_at'])})"
    if a["status"] == "ready" and a.get("ready_until"):
        return f"  (readable until {when(a['ready_until'])})"
    return ""


async def cmd_retrieve(cfg: Config, args: argparse.Namespace) -> int:
    body = {"tier": args.tier} if args.tier else {}
    result = await client.call(cfg, "POST", f"/backups/{args.backup_id}/retrieve", body)
    if args.json:
        print_json(result)
        return exits.OK
    counts = ", ".join(
        f"{result[key]} {label}"
        for key, label in (
            ("requested", "requested"),
            ("already", "already under way or fetched"),
            ("ready", "readable at once"),
            ("on_disk", "files already on disk"),
        )
        if key in result
    )
    tier = result.get("tier") or "the store's default tier"
    print(f"backup {args.backup_id}: retrieval at {tier}: {counts or 'requested'}")
    return exits.OK


async def cmd_delete(cfg: Config, args: argparse.Namespace) -> int:
    if not args.yes:
        if not stdin_is_a_terminal():
            print(
                f"glacierd: deleting backup {args.backup_id} cannot be undone; add --yes to "
                "confirm (nobody is at a terminal to ask).",
                file=sys.stderr,
            )
            return exits.USAGE
        question = f"delete backup {args.backup_id} from the catalog and the store? [y/N] "
        answer = await asyncio.to_thread(input, question)
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return exits.OK
    result = await client.call(cfg, "DELETE", f"/backups/{args.backup_id}")
    print(
        f"backup {args.backup_id} deleted; {result.get('archives_deleted', 0)} archives no "
        "other backup uses were removed from the store"
    )
    return exits.OK


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backup_id", type=an_id, metavar="BACKUP_ID")
    add_json(parser)
    parser.add_argument("--limit", type=a_limit, default=50, help="archives per page (default 50)")
    parser.add_argument("--offset", type=an_offset, default=0, help="skip this many archives")
    parser.add_argument("--all", action="store_true", help="every archive, fetched page by page")


def _retrieve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backup_id", type=an_id, metavar="BACKUP_ID")
    add_tier(parser)
    add_json(parser)


def _delete_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backup_id", type=an_id, metavar="BACKUP_ID")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")


COMMANDS = [
    Command(
        "show",
        "show one backup and its archives, a page at a time",
        cmd_show,
        description="""
        Show one backup and its archives with their retrieval status (through the daemon),
        a page at a time: the last line is the command for the next page.
        """,
        examples=[
            ("glacierd show 12", "the backup and its first 50 archives"),
            ("glacierd show 12 --offset 50", "the next 50"),
            ("glacierd show 12 --all --json", "every archive, as JSON"),
        ],
        exit_codes=exits.API_COMMAND,
        arguments=_show_arguments,
        read_only=True,
    ),
    Command(
        "retrieve",
        "request retrieval of what a restore of a backup would need",
        cmd_retrieve,
        description="""
        Ask the store to make a backup readable (S3 RestoreObject, vault retrieval jobs)
        ahead of a restore: its database dump and every file not on disk. The daemon
        downloads each archive when the store says it is ready. Asking twice does no harm.
        """,
        examples=[
            ("glacierd retrieve 12", "at the store's default tier"),
            ("glacierd retrieve 12 --tier Bulk", "the cheapest tier (hours)"),
        ],
        exit_codes=exits.API_COMMAND,
        arguments=_retrieve_arguments,
        read_only=True,
    ),
    Command(
        "delete",
        "delete a backup (file archives other backups use are kept)",
        cmd_delete,
        description="""
        Delete a backup and its database dump from the catalog and the store. A file
        archive leaves the store only when no remaining backup references it. Asks for
        confirmation on a terminal; elsewhere it needs --yes.
        """,
        examples=[
            ("glacierd delete 3", "asks first"),
            ("glacierd delete 3 --yes", "in a script"),
        ],
        exit_codes=exits.API_COMMAND,
        arguments=_delete_arguments,
        read_only=True,
    ),
]
