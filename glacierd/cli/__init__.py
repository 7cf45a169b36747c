"""The ``glacierd`` command.

Every command is declared once (``registry.Command``) in one of the group modules below:
its arguments, its examples and its exit codes, which ``--help`` shows. To add a command,
add a ``Command`` to a group's ``COMMANDS`` (or a new module to ``GROUPS``).

Every command but ``completion`` loads and validates the configuration first. An expected
error (a ConfigError, a store or database error, an error answer of the daemon) prints one
sentence and exits with the code ``exits`` gives it — never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from glacierd import __version__
from glacierd.api.client import ApiError, DaemonUnreachable
from glacierd.catalog.locks import BusyError
from glacierd.cli import backups, completion, daemon, exits, one_backup, restores
from glacierd.cli.registry import add_commands, collect
from glacierd.config import ConfigError, load_config
from glacierd.logs import configure_logging
from glacierd.operations.errors import EXPECTED

# The names the systemd unit's tests and older callers use.
EXIT_FAILED, EXIT_CONFIG, EXIT_BUSY = exits.FAILED, exits.USAGE, exits.BUSY

#: The command groups, in the order ``--help`` lists them.
GROUPS = (
    daemon.COMMANDS,
    backups.COMMANDS,
    one_backup.COMMANDS,
    restores.COMMANDS,
    completion.COMMANDS,
)
COMMANDS = collect(GROUPS)


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in exits.MEANING.items())
    parser = argparse.ArgumentParser(
        prog="glacierd",
        description="Back up PostgreSQL and attached files to Amazon Glacier.",
        epilog=f"'glacierd COMMAND --help' shows a command's examples.\n\nexit codes:\n{codes}\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"glacierd {__version__}")
    parser.add_argument(
        "--config",
        "-c",
        help="configuration file (default: $GLACIERD_CONFIG or /etc/glacierd/glacierd.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(sub, COMMANDS.values())
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = COMMANDS[args.command]
    if command.plain is not None:
        return command.plain(args, parser)
    assert command.run is not None
    try:
        cfg = load_config(args.config)
        configure_logging(cfg.logging, write_file=not command.read_only)
        return asyncio.run(command.run(cfg, args))
    except KeyboardInterrupt:
        print("glacierd: interrupted", file=sys.stderr)
        return exits.INTERRUPTED
    except Exception as exc:  # only the expected kinds: exit_code says which
        code = exit_code(exc)
        if code is None:
            raise
        print(f"glacierd: {exc}", file=sys.stderr)
        return code


def exit_code(exc: BaseException) -> int | None:
    """The exit code of an expected error (None: a bug, shown with its traceback)."""
    if isinstance(exc, ConfigError):
        return exits.USAGE
    if isinstance(exc, BusyError):
        return exits.BUSY
    if isinstance(exc, ApiError):
        return exits.for_http_status(exc.status)
    if isinstance(exc, DaemonUnreachable):
        return exits.UNAVAILABLE
    if isinstance(exc, EXPECTED):
        return exits.FAILED
    return None
