"""deploy/install.sh, run for real into a --destdir (no user, no systemd, no /opt or /etc
touched): only tracked files are installed, no build output is left anywhere, the
virtualenv works, an upgrade keeps the configuration, secrets and virtualenv, and a missing
tool is named. Also the logrotate file, run by the real logrotate."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "install.sh"
PREFIX = "/srv/glacierd-test"  # not the default: the unit must be rewritten to it

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or not (REPO / ".git").exists(),
    reason="needs a git checkout and git",
)


def install(destdir: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        ["bash", str(INSTALL), "--destdir", str(destdir), "--prefix", PREFIX, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout


def tracked() -> set[str]:
    return {f for f in git("ls-files", "-z").split("\0") if f and (REPO / f).is_file()}


def files_under(root: Path, skip: str = ".venv") -> set[str]:
    found = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if rel.parts[0] != skip and (path.is_file() or path.is_symlink()):
            found.add(rel.as_posix())
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """One install (module-wide: the pip install takes a while); yields the destdir and the
    checkout's status (ignored files included) before and after."""
    destdir = tmp_path_factory.mktemp("destdir")
    before = git("status", "--porcelain", "--ignored", "--untracked-files=all")
    proc = install(destdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = git("status", "--porcelain", "--ignored", "--untracked-files=all")
    yield destdir, before, after


def test_only_tracked_files_are_installed(installed: tuple[Path, str, str]) -> None:
    destdir, _, _ = installed
    root = destdir / PREFIX.lstrip("/")
    assert files_under(root) == tracked()
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if rel.parts[0] == ".venv":
            continue
        assert path.name not in ("build", "__pycache__") and not path.name.endswith(".egg-info"), (
            rel
        )


def test_no_build_output_is_left_in_the_checkout(installed: tuple[Path, str, str]) -> None:
    _, before, after = installed
    assert after == before
    # What pip would leave in a checkout it builds in; "before" shows any left by whoever
    # set up this checkout's own virtualenv (an editable install may write an egg-info).
    for leftover in [REPO / "build", *REPO.glob("*.egg-info")]:
        assert leftover.name in before, f"install.sh left {leftover} in the checkout"


def test_the_virtualenv_runs_glacierd_with_its_migrations(
    installed: tuple[Path, str, str], tmp_path: Path, app_db: str
) -> None:
    destdir, _, _ = installed
    glacierd = destdir / PREFIX.lstrip("/") / ".venv" / "bin" / "glacierd"
    (tmp_path / "files").mkdir()
    config = tmp_path / "glacierd.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[database]\ndsn = "{pg.dsn_for(app_db)}"\n'
        f'[files]\nroot = "{tmp_path / "files"}"\n'
    )
    # Run from elsewhere, so that the checkout's glacierd/ cannot be what is imported.
    proc = subprocess.run(
        [str(glacierd), "--config", str(config), "migrate"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("GLACIERD_")},
    )
    assert proc.returncode == 0, proc.stderr
    assert "applied 0001_initial.sql" in proc.stdout


def test_configuration_secrets_unit_and_logrotate(installed: tuple[Path, str, str]) -> None:
    destdir, _, _ = installed
    conf = destdir / "etc" / "glacierd"
    assert stat.S_IMODE((conf / "glacierd.toml").stat().st_mode) == 0o640
    assert (conf / "glacierd.toml").read_text() == (
        REPO / "deploy" / "glacierd.example.toml"
    ).read_text()
    environment = conf / "environment"
    assert stat.S_IMODE(environment.stat().st_mode) == 0o600
    # The API token has a file of its own, which the operators' group may read
    # ([api] token_file in the example); the environment holds no second copy.
    assert not [ln for ln in environment.read_text().splitlines() if ln.startswith("GLACIERD_API")]
    token_file = conf / "api-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o640
    assert re.fullmatch(r"[0-9a-f]{64}\n", token_file.read_text())
    assert 'token_file = "/etc/glacierd/api-token"' in (conf / "glacierd.toml").read_text()
    unit = (destdir / "etc" / "systemd" / "system" / "glacierd.service").read_text()
    assert f"ExecStart={PREFIX}/.venv/bin/glacierd --config" in unit
    assert "/opt/glacierd" not in unit
    logrotate = destdir / "etc" / "logrotate.d" / "glacierd"
    assert logrotate.read_text() == (REPO / "deploy" / "logrotate" / "glacierd").read_text()
    assert (destdir / "var" / "lib" / "glacierd").is_dir()


def test_an_upgrade_keeps_configuration_secrets_and_virtualenv(
    installed: tuple[Path, str, str],
) -> None:
    destdir, _, _ = installed
    root = destdir / PREFIX.lstrip("/")
    conf = destdir / "etc" / "glacierd"
    (conf / "glacierd.toml").write_text("# edited by the operator\n")
    # An older install: the token in the environment file, no token file yet. The token
    # file gets that same token (the daemon refuses two different ones).
    (conf / "api-token").unlink()
    (conf / "environment").write_text("GLACIERD_API_TOKEN=" + "ab" * 32 + "\n")
    secrets = (conf / "environment").read_bytes()
    (root / ".venv" / "marker").write_text("the same virtualenv")
    (root / "glacierd" / "removed_module.py").write_text("# not in this version\n")
    (root / "build").mkdir()  # an older install.sh's leftovers
    edited_logrotate = destdir / "etc" / "logrotate.d" / "glacierd"
    edited_logrotate.write_text("# the operator's own rotation\n")

    proc = install(destdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (conf / "glacierd.toml").read_text() == "# edited by the operator\n"
    assert (conf / "environment").read_bytes() == secrets
    assert (conf / "api-token").read_text() == "ab" * 32 + "\n"
    assert (root / ".venv" / "marker").read_text() == "the same virtualenv"
    assert files_under(root) == tracked()
    assert edited_logrotate.read_text() == "# the operator's own rotation\n"
    assert "keeping" in proc.stdout and str(edited_logrotate) in proc.stdout


def test_a_missing_tool_is_named_and_nothing_is_installed(tmp_path: Path) -> None:
    """PATH without pg_dump (every other command still there)."""
    farm = tmp_path / "bin"
    farm.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = farm / entry.name
            if entry.name != "pg_dump" and not target.exists() and os.access(entry.path, os.X_OK):
                target.symlink_to(entry.path)
    destdir = tmp_path / "destdir"
    proc = install(destdir, env={"PATH": str(farm)})
    assert proc.returncode == 1
    assert proc.stderr.startswith("install.sh: missing: pg_dump;"), proc.stderr
    assert not any(destdir.iterdir())


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_logrotate_rotates_the_file_glacierd_keeps_writing(tmp_path: Path) -> None:
    """copytruncate: glacierd's log file (opened once, appending) goes on at the start of
    the truncated file; the old lines are in the rotated copy. Run by the real logrotate,
    with glacierd's own logging set-up writing."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log_file = logs / "glacierd.log"
    conf = tmp_path / "logrotate.conf"
    text = (REPO / "deploy" / "logrotate" / "glacierd").read_text()
    text = text.replace("/var/log/glacierd/", f"{logs}/").replace("su glacierd glacierd", "")
    conf.write_text(text)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, structlog\n"
            "from glacierd.config import LoggingConfig\n"
            "from glacierd.logs import configure_logging\n"
            "configure_logging(LoggingConfig(format='json', file=sys.argv[1]))\n"
            "log = structlog.get_logger('t')\n"
            "for line in sys.stdin:\n"
            "    log.info(line.strip())\n"
            "    print('logged', flush=True)\n",
            str(log_file),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    assert writer.stdin is not None and writer.stdout is not None
    try:
        writer.stdin.write("before.rotation\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "logged\n"
        state = tmp_path / "state"
        rotated = subprocess.run(
            ["logrotate", "--force", "--state", str(state), str(conf)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert rotated.returncode == 0, rotated.stderr
        writer.stdin.write("after.rotation\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == "logged\n"
    finally:
        writer.stdin.close()
        writer.wait(30)
    old = (logs / "glacierd.log.1").read_text()  # delaycompress: the newest stays plain
    assert "before.rotation" in old and "after.rotation" not in old
    current = log_file.read_bytes()
    assert current.startswith(b"{") and b"\0" not in current  # no hole where the old lines were
    assert b"after.rotation" in current and b"before.rotation" not in current
