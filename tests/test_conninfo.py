"""libpq connection strings: URI and keyword/value parsing, the environment pg_dump gets,
the asyncpg arguments, and descriptions that never show the password."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from glacierd.pgconnect.conninfo import ConnInfo, ConnInfoError, parse_conninfo

PG_VARS = (
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSSLMODE",
    "PGCONNECT_TIMEOUT",
    "PGAPPNAME",
    "PGOPTIONS",
)


@pytest.fixture(autouse=True)
def _no_pg_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's PG* variables must not leak into these expectations."""
    for var in PG_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "postgresql://alice@db.example.com:6543/shop",
            {"user": "alice", "host": "db.example.com", "port": "6543", "dbname": "shop"},
        ),
        (
            "postgres://alice:s3cret@localhost/shop",
            {"user": "alice", "password": "s3cret", "host": "localhost", "dbname": "shop"},
        ),
        # Percent-encoding in user, password and database name.
        (
            "postgresql://al%40ice:p%2Fw%3Ad@h/my%20db",
            {"user": "al@ice", "password": "p/w:d", "host": "h", "dbname": "my db"},
        ),
        ("postgresql://[::1]:5433/x", {"host": "::1", "port": "5433", "dbname": "x"}),
        (
            "postgresql://h/db?sslmode=require&application_name=nightly&connect_timeout=7",
            {
                "host": "h",
                "dbname": "db",
                "sslmode": "require",
                "application_name": "nightly",
                "connect_timeout": "7",
            },
        ),
        # A socket directory passed as a query parameter, database from the path.
        (
            "postgresql:///db?host=/var/run/postgresql",
            {"dbname": "db", "host": "/var/run/postgresql"},
        ),
        ("postgresql://h/", {"host": "h"}),
        ("  postgresql://h/db  ", {"host": "h", "dbname": "db"}),
    ],
)
def test_uri(text: str, expected: dict[str, str]) -> None:
    assert parse_conninfo(text).params == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "host=db port=5433 dbname=shop user=bob",
            {"host": "db", "port": "5433", "dbname": "shop", "user": "bob"},
        ),
        ("host = db   dbname=shop", {"host": "db", "dbname": "shop"}),
        ("dbname='my db' password='two words'", {"dbname": "my db", "password": "two words"}),
        (r"password='it\'s' user=x", {"password": "it's", "user": "x"}),
        (r"password='back\\slash'", {"password": "back\\slash"}),
        ("dbname=''", {"dbname": ""}),
        ("", {}),
        ("host=a host=b", {"host": "b"}),  # like libpq: the last one wins
    ],
)
def test_keyword_value(text: str, expected: dict[str, str]) -> None:
    assert parse_conninfo(text).params == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("host=h colour=blue", "unknown parameter 'colour'"),
        ("postgresql://h/db?colour=blue", "unknown parameter 'colour'"),
        ("host", "cannot read"),
        ("host=h =x", "cannot read"),
        ("postgresql://h:99999/db", "from 1 to 65535"),
        ("postgresql://u:pw@[::1/db", "IPv6"),
        ("host=h dbname='unterminated", "no closing quote"),
        ("host=h port=abc", "port must be a whole number"),
        ("postgresql://h/db?connect_timeout=soon", "connect_timeout must be a whole number"),
    ],
)
def test_invalid_strings_raise_conninfo_error(text: str, message: str) -> None:
    with pytest.raises(ConnInfoError, match=message):
        parse_conninfo(text)


@pytest.mark.parametrize(
    "text",
    [
        "=bad password=hunter2secret",
        "host=h password=hunter2 secret",
        "host=h ==x password='hunter2secret'",
    ],
)
def test_parse_errors_do_not_quote_the_password(text: str) -> None:
    with pytest.raises(ConnInfoError) as err:
        parse_conninfo(text)
    assert "hunter2" not in str(err.value)
    assert "secret" not in str(err.value)


def test_libpq_env_maps_every_parameter_and_keeps_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GLACIERD_UNRELATED", "kept")
    monkeypatch.setenv("PGPASSFILE", "/home/op/.pgpass")
    info = parse_conninfo(
        "host=db hostaddr=10.1.2.3 port=5433 dbname=shop user=bob password=pw sslmode=verify-full "
        "sslrootcert=/ca.pem sslcert=/c.pem sslkey=/k.pem connect_timeout=5 "
        "application_name=app options='-c search_path=x'"
    )
    env = info.libpq_env()
    assert {k: v for k, v in env.items() if k.startswith("PG")} == {
        "PGHOST": "db",
        "PGHOSTADDR": "10.1.2.3",
        "PGPORT": "5433",
        "PGDATABASE": "shop",
        "PGUSER": "bob",
        "PGPASSWORD": "pw",
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": "/ca.pem",
        "PGSSLCERT": "/c.pem",
        "PGSSLKEY": "/k.pem",
        "PGCONNECT_TIMEOUT": "5",
        "PGAPPNAME": "app",
        "PGOPTIONS": "-c search_path=x",
        "PGPASSFILE": "/home/op/.pgpass",  # the operator's own variable still reaches libpq
    }
    assert env["GLACIERD_UNRELATED"] == "kept"


def test_libpq_env_parameter_overrides_operator_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "operator-host")
    monkeypatch.setenv("PGUSER", "operator")
    env = parse_conninfo("host=configured dbname=d").libpq_env()
    assert env["PGHOST"] == "configured"
    assert env["PGUSER"] == "operator"
    assert env["PGDATABASE"] == "d"


def test_asyncpg_kwargs_full() -> None:
    info = parse_conninfo(
        "postgresql://bob:pw@db:5433/shop?sslmode=require&connect_timeout=9"
        "&application_name=nightly&passfile=/p"
    )
    kwargs = info.asyncpg_kwargs()
    # sslmode=require: encrypted, the certificate not checked (no root certificate given).
    context = kwargs.pop("ssl")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    assert kwargs == {
        "host": "db",
        "port": 5433,
        "user": "bob",
        "password": "pw",
        "database": "shop",
        "timeout": 9.0,
        "passfile": "/p",
        "server_settings": {"application_name": "nightly"},
    }


def test_asyncpg_kwargs_minimal_leaves_the_rest_to_libpq_defaults() -> None:
    assert parse_conninfo("dbname=x").asyncpg_kwargs() == {
        "database": "x",
        "server_settings": {"application_name": "glacierd"},
    }


def test_asyncpg_kwargs_prefers_hostaddr() -> None:
    kwargs = parse_conninfo("host=name.example hostaddr=192.0.2.7 dbname=x").asyncpg_kwargs()
    assert kwargs["host"] == "192.0.2.7"


def test_describe_never_shows_the_password() -> None:
    info = parse_conninfo("postgresql://bob:hunter2secret@db.example:5433/shop")
    assert info.describe() == "bob@db.example:5433/shop"
    assert "hunter2" not in info.describe()


def test_describe_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ConnInfo({}).describe() == "(default user)@localhost:5432/(default database)"
    monkeypatch.setenv("PGHOST", "envhost")
    monkeypatch.setenv("PGPORT", "6000")
    monkeypatch.setenv("PGUSER", "envuser")
    monkeypatch.setenv("PGDATABASE", "envdb")
    assert ConnInfo({}).describe() == "envuser@envhost:6000/envdb"
    assert ConnInfo({}).dbname == "envdb"


def test_with_dbname_returns_a_copy() -> None:
    info = parse_conninfo("host=h dbname=a")
    other = info.with_dbname("b")
    assert other.params == {"host": "h", "dbname": "b"}
    assert info.params == {"host": "h", "dbname": "a"}


def test_a_bad_port_error_never_repeats_part_of_the_password() -> None:
    with pytest.raises(ConnInfoError) as err:
        parse_conninfo("postgresql://bob:s3cr/etPW@db.example/app")
    assert "s3cr" not in str(err.value) and "etPW" not in str(err.value)
    assert "percent-encode" in str(err.value)


LIBPQ_KEYWORDS = {
    "host": "h",
    "hostaddr": "192.0.2.1",
    "port": "5432",
    "dbname": "d",
    "user": "u",
    "passfile": "/p",
    "require_auth": "scram-sha-256",
    "channel_binding": "prefer",
    "connect_timeout": "5",
    "client_encoding": "UTF8",
    "options": "-c work_mem=64MB",
    "application_name": "a",
    "fallback_application_name": "f",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
    "replication": "database",
    "gssencmode": "disable",
    "sslmode": "verify-full",
    "sslnegotiation": "postgres",
    "sslcompression": "0",
    "sslcert": "/c.pem",
    "sslkey": "/k.pem",
    "sslcertmode": "allow",
    "sslpassword": "kp",
    "sslrootcert": "/ca.pem",
    "sslcrl": "/crl.pem",
    "sslcrldir": "/crls",
    "sslsni": "1",
    "requirepeer": "postgres",
    "ssl_min_protocol_version": "TLSv1.2",
    "ssl_max_protocol_version": "TLSv1.3",
    "krbsrvname": "postgres",
    "gsslib": "gssapi",
    "gssdelegation": "0",
    "target_session_attrs": "read-write",
    "load_balance_hosts": "disable",
}


@pytest.mark.parametrize(("key", "value"), LIBPQ_KEYWORDS.items())
def test_every_libpq_keyword_is_accepted(key: str, value: str) -> None:
    assert parse_conninfo(f"{key}='{value}'").params == {key: value}
    assert parse_conninfo(f"postgresql:///?{key}={value}").params == {key: value}


def test_keywords_without_a_variable_reach_libpq_through_a_private_service_file() -> None:
    info = parse_conninfo(
        "host=h dbname=d keepalives_idle=30 tcp_user_timeout=9000 sslpassword='k p'"
    )
    env = info.libpq_env()
    assert env["PGHOST"] == "h" and env["PGDATABASE"] == "d"
    path = Path(env["PGSERVICEFILE"])
    assert env["PGSERVICE"] == "glacierd"
    assert (
        path.read_text()
        == "[glacierd]\nkeepalives_idle=30\ntcp_user_timeout=9000\nsslpassword=k p\n"
    )
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert "k p" not in " ".join(v for k, v in env.items() if k != "PGSERVICE")
    # The same values reuse the same file.
    assert info.libpq_env()["PGSERVICEFILE"] == str(path)


def test_a_resolved_service_is_not_read_again_by_libpq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "svc.conf").write_text("[prod]\nhost=db.example\nport=6000\ndbname=shop\n")
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "svc.conf"))
    monkeypatch.setenv("PGSERVICE", "prod")  # the operator's own variable names it
    info = parse_conninfo("dbname=other")
    assert info.params == {"host": "db.example", "port": "6000", "dbname": "other"}
    env = info.libpq_env()
    assert "PGSERVICE" not in env  # a service's values would outrank PGDATABASE=other
    assert (env["PGHOST"], env["PGPORT"], env["PGDATABASE"]) == ("db.example", "6000", "other")


@pytest.mark.parametrize(
    ("options", "settings"),
    [
        ("-c search_path=app", {"search_path": "app"}),
        ("-csearch_path=app --work-mem=64MB", {"search_path": "app", "work_mem": "64MB"}),
        # libpq unquotes \\ to \, the server then reads "\ " as an escaped blank.
        (r"-c search_path=a\\ b -c lock_timeout=5s", {"search_path": "a b", "lock_timeout": "5s"}),
    ],
)
def test_options_become_server_settings(options: str, settings: dict[str, str]) -> None:
    kwargs = parse_conninfo(f"dbname=x options='{options}'").asyncpg_kwargs()
    assert kwargs["server_settings"] == {**settings, "application_name": "glacierd"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keepalives=yes", "keepalives must be a whole number"),
        ("sslmode=verify", "sslmode 'verify' is not one of"),
        ("port=5432,x", "port must be a whole number"),
    ],
)
def test_bad_keyword_values(text: str, message: str) -> None:
    with pytest.raises(ConnInfoError, match=message):
        parse_conninfo(text)
