"""The CLI finds the control API's token by itself: ``[api] token_file``, a file the daemon
and the CLI both read, readable by an operators' group. The token is never on a command
line, a wrong file never means "no token", and an operator outside the group gets a
sentence saying how to get in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from glacierd.cli import exits
from tests.config_helpers import CONFIG_ENV, run_cli
from tests.conftest import to_toml
from tests.daemon import Daemon

TOKEN = "0123456789abcdef" * 4
REPO = Path(__file__).resolve().parent.parent


def token_file(path: Path, token: str = TOKEN, mode: int = 0o640) -> Path:
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


def no_token_env() -> dict[str, str]:
    return {"GLACIERD_API_TOKEN": ""}


def test_the_daemon_and_the_cli_read_the_token_file(
    daemon_factory: Callable[..., Daemon], make_settings: Callable[..., dict], tmp_path: Path
) -> None:
    path = token_file(tmp_path / "api-token")
    d = daemon_factory(make_settings(api={"token_file": str(path)}), env=no_token_env())
    assert d.request("GET", "/backups").status == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert d.request("GET", "/backups", headers=auth).status == 200

    proc = run_cli(d.config, "restores", env=no_token_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("no restores yet")

    # The same configuration without the file: the CLI has no token and says where to
    # find one.
    settings = make_settings(api={"port": int(d.base.rsplit(":", 1)[1])})
    without = tmp_path / "without-token.toml"
    without.write_text(to_toml(settings))
    proc = run_cli(without, "restores", env=no_token_env())
    assert proc.returncode == exits.UNAVAILABLE, proc.stderr
    assert "token_file" in proc.stderr and "sudo" in proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr

    # A different token in the file: refused by the daemon, exit 5 with its sentence.
    other = token_file(tmp_path / "other-token", "f" * 64)
    wrong = tmp_path / "wrong-token.toml"
    wrong.write_text(to_toml({**settings, "api": {**settings["api"], "token_file": str(other)}}))
    proc = run_cli(wrong, "restores", env=no_token_env())
    assert proc.returncode == exits.UNAVAILABLE, proc.stderr
    assert "missing or wrong bearer token" in proc.stderr
    assert TOKEN not in d.logs()
    d.stop()


@pytest.mark.parametrize(
    ("mode", "content", "env", "fragment"),
    [
        (0o644, TOKEN, "", "is open to every user (mode 0644); chmod o="),
        (0o640, "", "", "does not hold a token"),
        (0o640, "two words", "", "does not hold a token"),
        (0o640, TOKEN, "a" * 64, "hold different tokens"),
    ],
)
def test_a_wrong_token_file_stops_the_daemon_and_the_cli(
    tmp_path: Path,
    make_settings: Callable[..., dict],
    mode: int,
    content: str,
    env: str,
    fragment: str,
) -> None:
    path = token_file(tmp_path / "api-token", content, mode)
    config = tmp_path / "glacierd.toml"
    config.write_text(to_toml(make_settings(api={"token_file": str(path)})))
    for command in ("serve", "restores"):
        proc = run_cli(config, command, env={"GLACIERD_API_TOKEN": env})
        assert proc.returncode == exits.USAGE, (command, proc.stdout, proc.stderr)
        assert fragment in proc.stderr + proc.stdout, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout


def test_a_directory_is_no_token_file(tmp_path: Path, make_settings: Callable[..., dict]) -> None:
    config = tmp_path / "glacierd.toml"
    config.write_text(to_toml(make_settings(api={"token_file": str(tmp_path)})))
    proc = run_cli(config, "restores", env=no_token_env())
    assert proc.returncode == exits.USAGE
    assert f"api.token_file {tmp_path} cannot be read" in proc.stderr


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that an unprivileged user can reach (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="glacierd-token-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def run_as_nobody(config: Path, groups: list[int], *args: str) -> subprocess.CompletedProcess[str]:
    """``glacierd --config CONFIG ARGS`` as the user nobody with these supplementary groups
    (the modules are imported first: the checkout may be where nobody cannot read)."""
    script = (
        "import os, sys\n"
        # What runs later imports lazily from the interpreter, which may be where nobody
        # cannot read: import it now.
        "import concurrent.futures.thread, encodings.idna, glacierd.cli\n"
        f"os.setgroups({groups!r}); os.setgid(65534); os.setuid(65534)\n"
        "sys.exit(glacierd.cli.main(sys.argv[1:]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    env["GLACIERD_API_TOKEN"] = ""
    return subprocess.run(
        [sys.executable, "-c", script, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_an_operator_in_the_group_needs_no_token_by_hand(
    daemon_factory: Callable[..., Daemon],
    make_settings: Callable[..., dict],
    shared_dir: Path,
) -> None:
    """The installed layout: the token file is root:GROUP 0640. A user in the group runs the
    CLI as is; one outside it is told how to get in."""
    group = 4242  # no such group on this machine: nobody is in it unless we say so
    path = token_file(shared_dir / "api-token")
    os.chown(path, 0, group)
    settings = make_settings(api={"token_file": str(path)})
    settings["files"] = {}  # nobody may not enter pytest's directories
    d = daemon_factory(settings, env=no_token_env())
    config = shared_dir / "glacierd.toml"
    config.write_text(to_toml(settings))
    config.chmod(0o644)

    outside = run_as_nobody(config, [], "restores")
    assert outside.returncode == exits.USAGE, outside.stderr
    assert outside.stderr.strip() == (
        f"glacierd: api.token_file {path} cannot be read (Permission denied); run the "
        "command as a member of the group that owns it (usermod -aG glacierd-operators "
        "$USER, then log in again) or with sudo."
    )
    inside = run_as_nobody(config, [group], "restores")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.startswith("no restores yet")
    d.stop()
