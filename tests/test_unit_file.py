"""The systemd unit and the exit codes it relies on.

`RestartPreventExitStatus=2` stops systemd from restarting glacierd every 10 s for ever when
its configuration is wrong: that holds only if every configuration error makes `serve`
(and `check-config`) exit with 2 and nothing else does. The unit itself must pass
`systemd-analyze verify` and keep the hardening the README describes.
"""

from __future__ import annotations

import os
import re
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


# ----------------------------------------------------------------- the unit


def service_settings(text: str) -> dict[str, list[str]]:
    """The [Service] section's assignments, every value of a repeated key in order."""
    settings: dict[str, list[str]] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_stops_retrying_on_configuration_errors_only() -> None:
    from glacierd.cli import EXIT_BUSY, EXIT_CONFIG, EXIT_FAILED

    unit = service_settings(UNIT.read_text())
    assert unit["RestartPreventExitStatus"] == [str(EXIT_CONFIG)]
    assert EXIT_CONFIG not in (EXIT_FAILED, EXIT_BUSY)
    assert unit["Restart"] == ["on-failure"]
    # RestartPreventExitStatus= does not cover ExecStartPre= (systemd issue #11868): a
    # check there would be restarted every RestartSec= for ever.
    assert "ExecStartPre" not in unit
    assert unit["ExecStart"][0].endswith(" serve")
    # `systemctl reload` checks the file (failing visibly) before it sends SIGHUP.
    assert unit["ExecReload"][0].endswith(" check-config")
    assert unit["ExecReload"][1] == "/bin/kill -HUP $MAINPID"


def test_the_unit_has_the_watchdog_and_the_sandbox() -> None:
    unit = service_settings(UNIT.read_text())
    assert unit["Type"] == ["notify"]
    assert int(unit["WatchdogSec"][0]) >= 30
    assert unit["ProcSubset"] == ["pid"]
    assert unit["PrivateMounts"] == ["true"]
    assert unit["SystemCallFilter"] == ["@system-service", "~@privileged @resources", "@chown"]
    assert unit["SystemCallErrorNumber"] == ["EPERM"]
    # The drain: shutdown_timeout_seconds (default 30) and half of it again fit before
    # systemd's SIGKILL.
    assert float(unit["TimeoutStopSec"][0]) > 1.5 * 30


def _verifiable_copy(tmp_path: Path, drop_in: Path | None = None) -> Path:
    """The unit (and a drop-in) in tmp_path, with ExecStart's program pointing at one that
    exists here (verify checks that it does; /opt/glacierd is not installed on this host)."""
    program = Path(sys.executable)
    text = UNIT.read_text().replace("/opt/glacierd/.venv/bin/glacierd", str(program))
    unit = tmp_path / "glacierd.service"
    unit.write_text(text)
    if drop_in is not None:
        (tmp_path / "glacierd.service.d").mkdir()
        shutil.copy(drop_in, tmp_path / "glacierd.service.d" / "override.conf")
    return unit


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@needs_systemd_analyze
@pytest.mark.parametrize("with_drop_in", [False, True], ids=["unit", "unit+drop-in"])
def test_systemd_analyze_verify_passes(tmp_path: Path, with_drop_in: bool) -> None:
    unit = _verifiable_copy(tmp_path, DROP_IN if with_drop_in else None)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys too (it only warns): no output at all is the pass.
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


@needs_systemd_analyze
def test_systemd_analyze_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key in the drop-in is reported."""
    broken = tmp_path / "broken.conf"
    broken.write_text(DROP_IN.read_text() + "\nSupplementaryGroup=typo\n")
    unit = _verifiable_copy(tmp_path, broken)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Unknown key 'SupplementaryGroup'" in proc.stderr


@needs_systemd_analyze
def test_security_score_in_the_readme_is_the_real_one(tmp_path: Path) -> None:
    unit = _verifiable_copy(tmp_path)
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for glacierd\.service: (\d+\.\d)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    readme = (REPO / "README.md").read_text()
    claimed = re.search(r"`systemd-analyze security[^`]*` rates the unit (\d+\.\d)", readme)
    assert claimed, "the README records no systemd-analyze security score"
    assert claimed.group(1) == found.group(1)


def test_drop_in_example_sets_the_paths_and_groups() -> None:
    drop_in = service_settings(DROP_IN.read_text())
    assert drop_in["SupplementaryGroups"] and drop_in["ReadWritePaths"]
