"""The control API's bearer token: from an environment variable or from a file.

The daemon reads its environment from /etc/glacierd/environment (root-only), which an
operator cannot read. ``[api] token_file`` names a file that the daemon and the CLI both read:
install.sh creates /etc/glacierd/api-token owned by root, group glacierd-operators, mode 0640,
so an operator in that group (or root, through sudo) runs ``glacierd show 3`` and the CLI
finds the token itself. The token never appears on a command line.

Rules, checked whenever the token is read (a wrong file must never mean "no token", which
would open the API to every local user):

- the variable ``token_env`` names wins when it is set and the file is not; when both are set
  they must hold the same token;
- the file must be readable, hold one line of visible ASCII (it goes into an HTTP header),
  and give other users no access at all (mode 0640 or stricter).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from glacierd.config.errors import ConfigError

MAX_TOKEN_BYTES = 4096
SETTING = "api.token_file"


def read_api_token(
    token_env: str, token_file: Path | None, environ: Mapping[str, str] = os.environ
) -> str | None:
    """The token clients must send, or None when neither source sets one (blocking: reads
    ``token_file``)."""
    from_env = environ.get(token_env) or None
    if token_file is None:
        return from_env
    from_file = _read_token_file(token_file)
    if from_env is not None and from_env != from_file:
        raise ConfigError(
            f"${token_env} and {SETTING} {token_file} hold different tokens",
            f"keep one: remove {token_env} from the environment (/etc/glacierd/environment) "
            f"or {SETTING} from the configuration",
        )
    return from_file


def _read_token_file(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{SETTING} {path} cannot be read ({exc.strerror})",
            "run the command as a member of the group that owns it (usermod -aG "
            "glacierd-operators $USER, then log in again) or with sudo",
        ) from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{SETTING} {path} is not a regular file", "point it at the token file")
    if mode & stat.S_IRWXO:
        raise ConfigError(
            f"{SETTING} {path} is open to every user (mode {stat.S_IMODE(mode):04o})",
            f"chmod o= {path} (install.sh makes it 0640 root:glacierd-operators)",
        )
    token = data.strip()
    if not token or len(data) > MAX_TOKEN_BYTES or not all(33 <= b < 127 for b in token):
        raise ConfigError(
            f"{SETTING} {path} does not hold a token (one line of letters and digits)",
            f"write one into it, for example with: openssl rand -hex 32 > {path}",
        )
    return token.decode("ascii")
