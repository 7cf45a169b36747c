"""Every command's --help shows examples and the exit codes it uses (with their meanings
from the one table), and the completion script is generated from the same parser and
completes in a real bash."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from glacierd.cli import COMMANDS, build_parser, exits

REPO = Path(__file__).resolve().parent.parent


def help_text(*argv: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_help_has_examples_and_exit_codes(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_text(name, capsys=capsys)
    examples = text.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert examples, text
    for line in examples:
        # "  glacierd show 12   # what it does"
        assert re.match(r"  \S.* +# \S", line), line
    assert any(f"glacierd {name}" in line or "glacierd " in line for line in examples)
    codes = text.split("exit codes:\n", 1)[1].strip().splitlines()
    shown = {int(line.split()[0]): line.split(None, 1)[1] for line in codes}
    assert shown == {code: exits.MEANING[code] for code in COMMANDS[name].exit_codes}
    assert 0 in shown and exits.USAGE in shown


def test_the_top_level_help_lists_every_command_and_every_exit_code() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "glacierd", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    for name, command in COMMANDS.items():
        assert re.search(rf"^    {re.escape(name)}\b", proc.stdout, re.M), name
        assert command.summary.split()[0] in proc.stdout
    for code, meaning in exits.MEANING.items():
        assert f"{code:>3}  {meaning}" in proc.stdout


def test_exit_codes_are_distinct_and_the_http_mapping_uses_them() -> None:
    assert len(set(exits.MEANING)) == len(exits.MEANING)
    assert exits.for_http_status(404) == exits.NOT_FOUND
    assert exits.for_http_status(409) == exits.BUSY
    assert exits.for_http_status(401) == exits.UNAVAILABLE
    assert exits.for_http_status(503) == exits.UNAVAILABLE
    assert exits.for_http_status(502) == exits.FAILED
    assert exits.for_http_status(422) == exits.FAILED


def completion(shell: str) -> str:
    # No configuration is read: a file that does not exist changes nothing.
    proc = subprocess.run(
        [sys.executable, "-m", "glacierd", "--config", "/nonexistent.toml", "completion", shell],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def complete_in_bash(script: str, words: list[str]) -> set[str]:
    """What bash offers for ``words`` (the last one being typed), with the script loaded."""
    words_literal = " ".join(f"'{w}'" for w in words)
    program = (
        f"{script}\n"
        f"COMP_WORDS=({words_literal}); COMP_CWORD={len(words) - 1}; "
        f'COMP_LINE="{" ".join(words)}"; COMP_POINT=${{#COMP_LINE}}\n'
        "_shtab_glacierd glacierd\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def test_bash_completion_completes_commands_options_and_tiers() -> None:
    script = completion("bash")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert complete_in_bash(script, ["glacierd", "sh"]) == {"show"}
    assert {"restore", "restore-status", "restores", "restore-snapshot"} <= complete_in_bash(
        script, ["glacierd", "res"]
    )
    assert "--tier" in complete_in_bash(script, ["glacierd", "retrieve", "--t"])
    assert complete_in_bash(script, ["glacierd", "retrieve", "--tier", ""]) == {
        "Expedited",
        "Standard",
        "Bulk",
    }


def test_zsh_completion_names_every_command() -> None:
    script = completion("zsh")
    assert script.startswith("#compdef glacierd")
    for name in COMMANDS:
        assert f'"{name}:' in script or f"{name}:" in script, name
    if shutil.which("zsh"):
        assert subprocess.run(["zsh", "-n"], input=script, text=True).returncode == 0
