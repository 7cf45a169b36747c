"""How a command is declared: one ``Command`` per verb, collected from the group modules.

A command is its name, a one-line summary, the coroutine that runs it, the arguments it
takes, examples, and the exit codes it can end with. ``--help`` of every command shows the
examples and the exit codes (with their meanings from ``exits``): both are part of the
declaration, so a command cannot be added without them.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from glacierd.cli import exits
from glacierd.config import Config

Handler = Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]]
#: A command that needs no configuration file (it is not even read); it gets the whole
#: command line's parser.
PlainHandler = Callable[[argparse.Namespace, argparse.ArgumentParser], int]
Arguments = Callable[[argparse.ArgumentParser], None]


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """For a command that takes none."""


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    #: The command, given the configuration (``plain`` instead for one that needs none).
    run: Handler | None
    #: (command line, what it does) pairs shown under "examples:".
    examples: Sequence[tuple[str, str]]
    exit_codes: Sequence[int]
    arguments: Arguments = no_arguments
    #: Longer text for ``--help`` (default: the summary).
    description: str | None = None
    #: It only looks: logs to stderr only and never creates the log file or its directory.
    read_only: bool = False
    #: Run instead of ``run``, without reading the configuration (``completion``).
    plain: PlainHandler | None = None

    def epilog(self) -> str:
        width = max(len(line) for line, _ in self.examples)
        examples = "\n".join(f"  {line.ljust(width)}  # {what}" for line, what in self.examples)
        codes = "\n".join(f"  {code:>3}  {exits.MEANING[code]}" for code in self.exit_codes)
        return f"examples:\n{examples}\n\nexit codes:\n{codes}\n"


def collect(groups: Iterable[Sequence[Command]]) -> dict[str, Command]:
    commands: dict[str, Command] = {}
    for group in groups:
        for command in group:
            assert command.name not in commands, f"command {command.name} declared twice"
            assert command.examples, f"command {command.name} needs examples"
            commands[command.name] = command
    return commands


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], commands: Iterable[Command]
) -> None:
    for command in commands:
        parser = sub.add_parser(
            command.name,
            help=command.summary,
            description=textwrap.dedent(command.description or command.summary).strip(),
            epilog=command.epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.arguments(parser)
