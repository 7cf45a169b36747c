"""The systemd unit and the exit codes it relies on.

`RestartPreventExitStatus=2` stops systemd from restarting glacierd every 10 s for ever when
its configuration is wrong: that holds only if every configuration error makes `serve`
(and `check-config`) exit with 2 and nothing else does. The unit itself must pass
`systemd-analyze verify` and keep the hardening the README describes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from tests.config_helpers import CONFIG_ENV, assert_one_line_error, base_settings, run_cli

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "glacierd.service"
DROP_IN = REPO / "deploy" / "glacierd.service.d" / "override.conf.example"
EXIT_CONFIG = 2

# ----------------------------------------------------------------- exit codes


def _write(path: Path, settings: dict) -> Path:
    path.write_text(tomli_w.dumps(settings))
    return path


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_config_file_that_is_not_utf8_exits_2(tmp_path: Path, command: str) -> None:
    config = _write(tmp_path / "glacierd.toml", base_settings(tmp_path))
    with config.open("ab") as f:
        f.write(b"# caf\xe9 written in Latin-1\n")
    proc = run_cli(config, command)
    assert_one_line_error(proc, str(config), "UTF-8")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that an unprivileged user can reach (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="glacierd-unit-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path)


def _run_unprivileged(config: Path, command: str) -> subprocess.CompletedProcess[str]:
    """`glacierd --config CONFIG COMMAND` as the user nobody (or as the current user when
    not root). The modules are imported before the switch: the interpreter and the
    checkout may live where nobody cannot read."""
    if os.geteuid() != 0:
        return run_cli(config, command)
    script = (
        "import os, sys\n"
        "import glacierd.cli, glacierd.service\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "sys.exit(glacierd.cli.main(sys.argv[1:]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    return subprocess.run(
        [sys.executable, "-c", script, "--config", str(config), command],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_files_root_glacierd_may_not_read_exits_2(shared_dir: Path, command: str) -> None:
    """A files root inside a folder the glacierd user cannot enter (an app's private
    directory, a missing SupplementaryGroups=) is a configuration error, not a crash."""
    settings = base_settings(shared_dir)
    private = shared_dir / "private"
    (private / "files").mkdir(parents=True)
    settings["files"]["root"] = str(private / "files")
    config = _write(shared_dir / "glacierd.toml", settings)
    config.chmod(0o644)
    private.chmod(0o000 if os.geteuid() != 0 else 0o700)
    proc = _run_unprivileged(config, command)
    line = assert_one_line_error(proc, "files.root", str(private / "files"))
    assert "cannot be read" in line


@pytest.mark.parametrize("command", ["check-config", "serve"])
@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda t: "[api\nport = 1\n", id="not-toml"),
        pytest.param(lambda t: tomli_w.dumps({**base_settings(t), "colour": "blue"}), id="key"),
        pytest.param(
            lambda t: tomli_w.dumps(
                {**base_settings(t), "schedule": {"backup_cron": "61 * * * *"}}
            ),
            id="cron",
        ),
        pytest.param(
            lambda t: tomli_w.dumps({**base_settings(t), "logging": {"file": str(t)}}),
            id="log-file-is-a-directory",
        ),
    ],
)
def test_configuration_errors_exit_2(tmp_path: Path, command: str, breakage) -> None:
    config = tmp_path / "glacierd.toml"
    config.write_text(breakage(tmp_path))
    assert_one_line_error(run_cli(config, command))


def test_missing_configuration_file_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(run_cli(tmp_path / "absent.toml", "serve"), "does not exist")


def test_database_that_is_down_is_not_a_configuration_error(tmp_path: Path) -> None:
    """A database that does not answer (yet) is retried by systemd: exit 1, not 2."""
    settings = base_settings(tmp_path)
    settings["database"]["dsn"] = "postgresql://postgres@127.0.0.1:1/app?connect_timeout=2"
    proc = run_cli(_write(tmp_path / "glacierd.toml", settings), "serve")
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
