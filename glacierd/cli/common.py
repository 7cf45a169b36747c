"""What several commands share: argument types, JSON output, times in tables."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from glacierd.config import TIERS

LIMIT_MAX = 10000
#: Ids are PostgreSQL bigints.
ID_MAX = 2**63 - 1


def _whole(text: str, lowest: int, highest: int, what: str) -> int:
    value = int(text) if text.isascii() and text.strip().isdigit() else -1
    if not lowest <= value <= highest:
        raise argparse.ArgumentTypeError(
            f"{what} must be a whole number from {lowest} to {highest}; got {text!r}"
        )
    return value


def an_id(text: str) -> int:
    return _whole(text, 1, ID_MAX, "an id")


def a_limit(text: str) -> int:
    return _whole(text, 1, LIMIT_MAX, "--limit")


def an_offset(text: str) -> int:
    return _whole(text, 0, ID_MAX, "--offset")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_tier(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tier", choices=TIERS, help="retrieval tier (default: the store's default_tier)"
    )


def add_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true", help="follow it until it ends")


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def when(iso: str | None) -> str:
    """An API time as 'YYYY-MM-DD HH:MM:SS' (UTC), '-' for none."""
    return (iso or "-")[:19].replace("T", " ")


def stdin_is_a_terminal() -> bool:
    return sys.stdin.isatty()
