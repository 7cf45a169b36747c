"""Every libpq keyword works for pg_dump and for glacierd's own (asyncpg) connections alike,
TLS above all: checked against a real PostgreSQL with ssl=on that only accepts TLS with a
client certificate.

The module starts a throwaway cluster of its own (initdb into a temporary directory, run as
the postgres user on a free port, removed at the end): the shared cluster on 5432 is never
reconfigured. Its certificates come from a CA made here with ``cryptography``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from glacierd.catalog.pool import Catalog, CatalogError
from glacierd.config import ConfigError, config_from_dict
from glacierd.context import open_context
from glacierd.operations.backup import run_backup
from glacierd.pgconnect.conninfo import parse_conninfo
from glacierd.sources.database import DatabaseSourceError, PgDump
from tests import pg
from tests.daemon import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
KEY_PASSWORD = "client-key-passphrase"


# ------------------------------------------------------------------- certificates


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, password: str | None = None) -> None:
    encryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    path.chmod(0o600)


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    dns: str | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer[0].subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False
        )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class TlsCluster:
    dir: Path
    port: int
    ca: Path
    other_ca: Path
    crl: Path
    client_cert: Path
    client_key: Path

    def dsn(self, **extra: str) -> str:
        params = {
            "host": "localhost",
            "port": str(self.port),
            "dbname": "tlsapp",
            "user": "postgres",
            "sslmode": "verify-full",
            "sslrootcert": str(self.ca),
            "sslcert": str(self.client_cert),
            "sslkey": str(self.client_key),
            "sslpassword": KEY_PASSWORD,
            **extra,
        }
        return " ".join(f"{k}='{v}'" for k, v in params.items() if v != "")


def _make_certificates(folder: Path) -> dict[str, Path]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("glacierd test CA", ca_key, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    # Only the name "localhost": connecting to 127.0.0.1 with verify-full must fail.
    server = _cert(
        "localhost",
        server_key,
        (ca, ca_key),
        dns="localhost",
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("postgres", client_key, (ca, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("some other CA", other_key, None, ca=True)
    now = dt.datetime.now(dt.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=1))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(server.serial_number)
            .revocation_date(now - dt.timedelta(minutes=1))
            .build()
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "ca": folder / "ca.pem",
        "other_ca": folder / "other-ca.pem",
        "server": folder / "server.pem",
        "server_key": folder / "server.key",
        "client": folder / "client.pem",
        "client_key": folder / "client.key",
        "crl": folder / "revoked-server.crl",
    }
    paths["ca"].write_bytes(_pem(ca))
    paths["other_ca"].write_bytes(_pem(other))
    paths["server"].write_bytes(_pem(server))
    _write_key(paths["server_key"], server_key)
    paths["client"].write_bytes(_pem(client))
    _write_key(paths["client_key"], client_key, KEY_PASSWORD)
    paths["crl"].write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return paths


def _as_postgres(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[TlsCluster]:
    if os.geteuid() != 0 or not (BIN / "initdb").exists() or not shutil.which("runuser"):
        pytest.skip("needs root, runuser and PostgreSQL 15's initdb to start a TLS cluster")
    folder = Path(tempfile.mkdtemp(prefix="glacierd-tls-"))
    data = folder / "data"
    port = free_port()
    try:
        certs = _make_certificates(folder)
        shutil.chown(certs["server_key"], "postgres", "postgres")
        shutil.chown(folder, "postgres", "postgres")
        folder.chmod(0o755)
        _as_postgres(str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{folder}'\nssl = on\n"
                f"ssl_cert_file = '{certs['server']}'\nssl_key_file = '{certs['server_key']}'\n"
                f"ssl_ca_file = '{certs['ca']}'\nfsync = off\nmax_connections = 30\n"
                "shared_buffers = 16MB\n"
            )
        # TLS with a client certificate, or nothing (besides the test's own unix socket).
        (data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 cert\n"
        )
        _as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "start")
        asyncio.run(_create_app_database(folder, port))
        yield TlsCluster(
            folder,
            port,
            certs["ca"],
            certs["other_ca"],
            certs["crl"],
            certs["client"],
            certs["client_key"],
        )
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    str(BIN / "pg_ctl"),
                    "-D",
                    str(data),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
            )
        shutil.rmtree(folder, ignore_errors=True)


async def _create_app_database(socket_dir: Path, port: int) -> None:
    conn = await asyncpg.connect(host=str(socket_dir), port=port, user="postgres")
    try:
        await conn.execute("CREATE DATABASE tlsapp")
    finally:
        await conn.close()
    conn = await asyncpg.connect(
        host=str(socket_dir), port=port, user="postgres", database="tlsapp"
    )
    try:
        await conn.execute(pg.SAMPLE_SCHEMA)
    finally:
        await conn.close()


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, Any]:
    """A configuration without a dsn in the file: tests give it in GLACIERD_DATABASE_DSN,
    where a secret such as sslpassword may go."""
    return {
        "state_dir": str(tmp_path / "state"),
        "database": {},
        "store": {"type": "local", "local": {"path": str(tmp_path / "vault")}},
        "schedule": {"enabled": False},
        "api": {"port": free_port()},
    }


@pytest.fixture(autouse=True)
def _no_operator_pg_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("PG")]:
        monkeypatch.delenv(var)


async def _dump_bytes(dsn: str) -> int:
    """Run pg_dump (libpq) with the dsn's parameters; the number of bytes it wrote."""
    total = 0
    async with aclosing(PgDump("pg_dump", parse_conninfo(dsn)).chunks()) as chunks:
        async for chunk in chunks:
            total += len(chunk)
    return total


# ------------------------------------------------------------------------ tests


async def test_a_backup_over_verified_tls_with_a_client_certificate(
    tls_cluster: TlsCluster, settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server takes TLS with a client certificate only: the catalog (asyncpg) and
    # pg_dump (libpq) each need sslrootcert, sslcert, sslkey and sslpassword to get in.
    monkeypatch.setenv("GLACIERD_DATABASE_DSN", tls_cluster.dsn())
    async with open_context(config_from_dict(settings)) as ctx:
        row = await ctx.catalog.pool.fetchrow(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        assert row["ssl"] is True and row["version"].startswith("TLS")
        summary = await run_backup(ctx, "cli")
    assert summary["database_bytes"] > 0


async def test_more_libpq_keywords_work_for_both(
    tls_cluster: TlsCluster, settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = tls_cluster.dsn(
        keepalives="1",
        keepalives_idle="30",
        keepalives_interval="5",
        keepalives_count="3",
        tcp_user_timeout="20000",
        target_session_attrs="read-write",
        channel_binding="prefer",
        gssencmode="disable",
        ssl_min_protocol_version="TLSv1.2",
        options="-c statement_timeout=4321 -c search_path=public",
        connect_timeout="10",
    )
    monkeypatch.setenv("GLACIERD_DATABASE_DSN", dsn)
    async with open_context(config_from_dict(settings)) as ctx:
        assert await ctx.catalog.pool.fetchval("SHOW statement_timeout") == "4321ms"
        summary = await run_backup(ctx, "cli")
    assert summary["database_bytes"] > 0


async def test_the_wrong_ca_is_refused_by_both(
    tls_cluster: TlsCluster, settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = tls_cluster.dsn(sslrootcert=str(tls_cluster.other_ca))
    monkeypatch.setenv("GLACIERD_DATABASE_DSN", dsn)
    with pytest.raises(CatalogError) as err:
        async with open_context(config_from_dict(settings)):
            pass
    message = str(err.value)
    assert "presented a certificate that was not accepted" in message, message
    assert "sslrootcert" in message and KEY_PASSWORD not in message
    with pytest.raises(DatabaseSourceError, match="certificate verify failed"):
        await _dump_bytes(dsn)


async def test_verify_full_checks_the_host_name_and_verify_ca_does_not(
    tls_cluster: TlsCluster,
) -> None:
    by_address = tls_cluster.dsn(host="127.0.0.1")  # the certificate names only localhost
    catalog = Catalog(parse_conninfo(by_address), "glacierd")
    with pytest.raises(CatalogError, match="not accepted"):
        await catalog.open()
    with pytest.raises(DatabaseSourceError, match="does not match host name"):
        await _dump_bytes(by_address)

    ca_only = tls_cluster.dsn(host="127.0.0.1", sslmode="verify-ca")
    catalog = Catalog(parse_conninfo(ca_only), "glacierd")
    await catalog.open()
    try:
        assert await catalog.pool.fetchval("SELECT current_database()") == "tlsapp"
    finally:
        await catalog.close()
    assert await _dump_bytes(ca_only) > 0


async def test_sslcrl_revokes_the_server_certificate_for_both(tls_cluster: TlsCluster) -> None:
    dsn = tls_cluster.dsn(sslcrl=str(tls_cluster.crl))
    catalog = Catalog(parse_conninfo(dsn), "glacierd")
    with pytest.raises(CatalogError, match="revoked"):
        await catalog.open()
    with pytest.raises(DatabaseSourceError, match="certificate verify failed"):
        await _dump_bytes(dsn)


async def test_a_missing_root_certificate_is_one_sentence(
    tls_cluster: TlsCluster, tmp_path: Path
) -> None:
    missing = tmp_path / "absent-ca.pem"
    catalog = Catalog(parse_conninfo(tls_cluster.dsn(sslrootcert=str(missing))), "glacierd")
    with pytest.raises(CatalogError) as err:
        await catalog.open()
    message = str(err.value)
    assert f"sslrootcert {missing} does not exist" in message, message
    assert "\n" not in message


async def test_a_service_from_pg_service_conf_works_for_both(
    tls_cluster: TlsCluster,
    settings: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service_file = tmp_path / "pg_service.conf"
    lines = [f"{k}={v}" for k, v in parse_conninfo(tls_cluster.dsn()).params.items()]
    service_file.write_text("# ours\n[other]\nhost=nowhere\n\n[tls]\n" + "\n".join(lines) + "\n")
    service_file.chmod(0o600)
    monkeypatch.setenv("PGSERVICEFILE", str(service_file))
    # In the file: no secret there, the service holds sslpassword.
    cfg = config_from_dict({**settings, "database": {"dsn": "service=tls application_name=svc"}})
    assert cfg.database.conninfo.describe() == f"postgres@localhost:{tls_cluster.port}/tlsapp"
    async with open_context(cfg) as ctx:
        assert await ctx.catalog.pool.fetchval("SHOW application_name") == "svc"
        summary = await run_backup(ctx, "cli")
    assert summary["database_bytes"] > 0


def test_an_undefined_service_is_one_sentence(
    settings: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "none.conf"))
    monkeypatch.setenv("PGSYSCONFDIR", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        config_from_dict({**settings, "database": {"dsn": "service=nope dbname=x"}})
    message = str(err.value)
    assert "service 'nope' is not defined in" in message and str(tmp_path / "none.conf") in message


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("channel_binding=require", "channel_binding=require cannot be honoured"),
        ("gssencmode=require", "gssencmode=require cannot be honoured"),
        ("require_auth=scram-sha-256", "require_auth cannot be enforced"),
        ("requirepeer=postgres", "requirepeer cannot be enforced"),
        ("replication=database", "replication connections cannot hold"),
        ("options='-B 10'", "options holds '-B'"),
    ],
)
def test_what_asyncpg_cannot_honour_is_refused_at_start(
    settings: dict[str, Any], extra: str, fragment: str
) -> None:
    dsn = f"host=localhost dbname=app {extra}"
    with pytest.raises(ConfigError) as err:
        config_from_dict({**settings, "database": {"dsn": dsn}})
    message = str(err.value)
    assert message.startswith("database.dsn (or GLACIERD_DATABASE_DSN) cannot be used by"), message
    assert fragment in message, message


def test_sslpassword_in_the_file_is_refused(settings: dict[str, Any]) -> None:
    dsn = "host=localhost dbname=app sslpassword=hunter2secret"
    with pytest.raises(ConfigError) as err:
        config_from_dict({**settings, "database": {"dsn": dsn}})
    assert str(err.value).startswith("database.dsn contains a secret (sslpassword)")
    assert "hunter2" not in str(err.value)
