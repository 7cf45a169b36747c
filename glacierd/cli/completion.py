"""``glacierd completion bash|zsh``: a shell completion script, generated from the very parser
the command uses (shtab), so it always knows every command and option."""

from __future__ import annotations

import argparse

import shtab

from glacierd.cli import exits
from glacierd.cli.registry import Command

SHELLS = ("bash", "zsh")


def cmd_completion(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    print(shtab.complete(parser, shell=args.shell), end="")
    return exits.OK


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=SHELLS)


COMMANDS = [
    Command(
        "completion",
        "print a shell completion script (bash or zsh)",
        None,
        plain=cmd_completion,
        description="""
        Print a completion script for bash or zsh (commands, options, tiers). It needs no
        configuration file.
        """,
        examples=[
            (
                "glacierd completion bash | sudo tee /etc/bash_completion.d/glacierd",
                "for every bash",
            ),
            ("source <(glacierd completion bash)", "this shell only"),
            (
                "glacierd completion zsh > ~/.zfunc/_glacierd",
                "zsh (with ~/.zfunc in $fpath)",
            ),
        ],
        exit_codes=(exits.OK, exits.USAGE),
        arguments=_arguments,
    ),
]
