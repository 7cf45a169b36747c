"""TLS for glacierd's own (asyncpg) connections, as libpq does it: sslmode, the CA and CRL
files, the client certificate, the protocol versions."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from glacierd.pgconnect.keywords import ConnInfoError, setting

# TLS keywords asyncpg's own DSN parser understands (used for sslmode allow/prefer).
_ASYNCPG_DSN_TLS = (
    "sslmode",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "sslnegotiation",
)


def tls_kwargs(params: dict[str, str]) -> dict[str, Any]:
    """asyncpg's TLS arguments for these parameters (reads the files they name)."""
    mode = setting(params, "sslmode")
    if setting(params, "sslrootcert") == "system" and mode is None:
        mode = "verify-full"  # as libpq does
    if mode == "disable":
        return {"ssl": False}
    if mode in (None, "allow", "prefer"):
        # No certificate is verified in these modes, and plain text remains possible:
        # asyncpg's own DSN handling does exactly that, client certificate included.
        query = {k: params[k] for k in _ASYNCPG_DSN_TLS if params.get(k)}
        if mode is not None:
            query["sslmode"] = mode
        return {"dsn": "postgresql://?" + urlencode(query)} if query else {}
    kwargs: dict[str, Any] = {"ssl": ssl_context(params, mode)}
    if setting(params, "sslnegotiation") == "direct":
        kwargs["direct_tls"] = True
    return kwargs


def ssl_context(params: dict[str, str], mode: str) -> ssl.SSLContext:
    """sslmode require / verify-ca / verify-full as libpq implements them."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = mode == "verify-full"
    root = setting(params, "sslrootcert")
    verify = False
    if root == "system":
        ctx.load_default_certs()
        verify = True
    else:
        root_path = Path(root) if root else _dot_postgresql("root.crt")
        if root_path is not None and root_path.exists():
            _load(
                lambda: ctx.load_verify_locations(cafile=str(root_path)),
                "sslrootcert",
                root_path,
            )
            verify = True
        elif mode != "require":
            raise ConnInfoError(
                f"sslmode={mode} needs the CA certificate, and sslrootcert "
                f"{root_path or '~/.postgresql/root.crt'} does not exist; set sslrootcert "
                "to the CA's certificate file"
            )
    if verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load_revocations(ctx, params)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cert = setting(params, "sslcert") or _dot_postgresql("postgresql.crt")
    key = setting(params, "sslkey") or _dot_postgresql("postgresql.key")
    if cert and Path(cert).is_file():
        password = params.get("sslpassword") or ""
        keyfile = str(key) if key and Path(key).is_file() else None
        _load(
            lambda: ctx.load_cert_chain(str(cert), keyfile, password=lambda: password),
            "sslcert/sslkey (or sslpassword)",
            cert,
        )
    ctx.minimum_version = _tls_version(setting(params, "ssl_min_protocol_version") or "TLSv1.2")
    if maximum := setting(params, "ssl_max_protocol_version"):
        ctx.maximum_version = _tls_version(maximum)
    return ctx


def _load_revocations(ctx: ssl.SSLContext, params: dict[str, str]) -> None:
    crl, crldir = setting(params, "sslcrl"), setting(params, "sslcrldir")
    if not crl and not crldir:
        default = _dot_postgresql("root.crl")
        crl = str(default) if default is not None else None
    if crl and Path(crl).is_file():
        _load(lambda: ctx.load_verify_locations(cafile=crl), "sslcrl", crl)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    if crldir and Path(crldir).is_dir():
        _load(lambda: ctx.load_verify_locations(capath=crldir), "sslcrldir", crldir)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN


def _dot_postgresql(name: str) -> Path | None:
    home = os.environ.get("HOME")
    return Path(home) / ".postgresql" / name if home else None


def _load(action: Callable[[], object], setting_name: str, path: object) -> None:
    try:
        action()
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise ConnInfoError(
            f"{setting_name} {path} cannot be loaded ({reason}); check the file"
        ) from None


def _tls_version(text: str) -> ssl.TLSVersion:
    versions = {
        "TLSv1": ssl.TLSVersion.TLSv1,
        "TLSv1.1": ssl.TLSVersion.TLSv1_1,
        "TLSv1.2": ssl.TLSVersion.TLSv1_2,
        "TLSv1.3": ssl.TLSVersion.TLSv1_3,
    }
    if text not in versions:
        raise ConnInfoError(f"{text!r} is not a TLS version; use TLSv1.2 or TLSv1.3")
    return versions[text]
