"""libpq parameters as asyncpg arguments, for glacierd's own connections.

Every libpq keyword is accepted, but asyncpg speaks fewer of them: ``asyncpg_kwargs`` maps
what it can (TLS files and modes into an SSL context, ``options`` into server settings), and
``asyncpg_problem`` names the few that would promise a guarantee asyncpg cannot keep.
"""

from __future__ import annotations

import random
from typing import Any

from glacierd.pgconnect.keywords import SSLMODES, ConnInfoError, setting
from glacierd.pgconnect.tls import tls_kwargs

# Keywords whose guarantee asyncpg cannot give at all.
_UNSUPPORTED = (
    "require_auth",
    "requirepeer",
    "oauth_issuer",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
    "scram_client_key",
    "scram_server_key",
)
# keyword -> (the value asyncpg cannot honour, what it demands, what to use instead)
_DEMANDS = {
    "channel_binding": ("require", "channel binding", "prefer"),
    "gssencmode": ("require", "GSSAPI encryption", "prefer"),
    "sslcertmode": ("require", "a server request for the client certificate", "allow"),
}


def asyncpg_problem(params: dict[str, str]) -> str | None:
    """Why glacierd's own (asyncpg) connections cannot honour these parameters, or None."""
    for key in _UNSUPPORTED:
        if params.get(key):
            return (
                f"{key} cannot be enforced on glacierd's own connections (asyncpg does not "
                f"support it); remove {key}"
            )
    for key, (refused, what, instead) in _DEMANDS.items():
        if setting(params, key) == refused:
            return (
                f"{key}={refused} cannot be honoured on glacierd's own connections (asyncpg "
                f"does not support {what}); use {key}={instead} or remove it"
            )
    replication = (params.get("replication") or "").lower()
    if replication not in ("", "0", "false", "off", "no"):
        return "replication connections cannot hold glacierd's catalog; remove replication"
    if (options := setting(params, "options")) is not None:
        try:
            server_settings(options)
        except ConnInfoError as exc:
            return str(exc)
    mode = setting(params, "sslmode")
    if mode is not None and mode not in SSLMODES:
        return f"sslmode {mode!r} is not one of {', '.join(SSLMODES)}"
    if setting(params, "sslrootcert") == "system" and mode not in (None, "verify-full"):
        return "sslrootcert=system needs sslmode=verify-full (or no sslmode)"
    return None


def asyncpg_kwargs(params: dict[str, str]) -> dict[str, Any]:
    """Arguments for asyncpg.connect / create_pool; unset ones fall back to PG* and .pgpass.

    Reads the TLS files named in the parameters (call it off the event loop); raises
    ConnInfoError with one sentence when one is missing or unreadable.
    """
    if problem := asyncpg_problem(params):
        raise ConnInfoError(problem)
    p = params
    kwargs: dict[str, Any] = {}
    host = p.get("hostaddr") or p.get("host")
    if host:
        hosts = host.split(",")
        ports = [int(x) for x in p["port"].split(",")] if "port" in p else None
        if setting(p, "load_balance_hosts") == "random":
            order = random.sample(range(len(hosts)), len(hosts))
            hosts = [hosts[i] for i in order]
            if ports is not None and len(ports) == len(order):
                ports = [ports[i] for i in order]
        kwargs["host"] = hosts if len(hosts) > 1 else hosts[0]
        if ports is not None:
            kwargs["port"] = ports if len(ports) > 1 else ports[0]
    elif "port" in p:
        kwargs["port"] = int(p["port"])
    for key, name in (
        ("user", "user"),
        ("password", "password"),
        ("dbname", "database"),
        ("passfile", "passfile"),
    ):
        if key in p:
            kwargs[name] = p[key]
    if (timeout := setting(p, "connect_timeout")) is not None and int(timeout) > 0:
        kwargs["timeout"] = float(timeout)
    for key in ("target_session_attrs", "krbsrvname", "gsslib"):
        if key in p:
            kwargs[key] = p[key]
    settings = server_settings(setting(p, "options") or "")
    settings["application_name"] = p.get("application_name", "glacierd")
    kwargs["server_settings"] = settings
    kwargs.update(tls_kwargs(p))
    return kwargs


def _split_options(text: str) -> list[str]:
    """Split an ``options`` value as the server does: on blanks, with backslash escapes."""
    words: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


def server_settings(options: str) -> dict[str, str]:
    """``options`` ("-c name=value --name=value") as asyncpg server_settings."""
    words = _split_options(options)
    settings: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c" and i + 1 < len(words):
            item, i = words[i + 1], i + 2
        elif word.startswith(("-c", "--")) and len(word) > 2:
            item, i = word[2:], i + 1
        else:
            raise ConnInfoError(
                f"options holds {word!r}, which glacierd's own connections cannot pass on; "
                "write each setting as -c name=value"
            )
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConnInfoError(f"options holds {item!r}; write it as -c name=value")
        settings[name.replace("-", "_")] = value
    return settings
