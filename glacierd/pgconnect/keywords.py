"""Every libpq connection keyword, the environment variable libpq reads it from, and the
checks a value must pass before glacierd accepts it."""

from __future__ import annotations

import os

# Every libpq keyword (PostgreSQL 18) -> its environment variable, None where libpq has none.
KEYWORDS: dict[str, str | None] = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "fallback_application_name": None,
    "keepalives": None,
    "keepalives_idle": None,
    "keepalives_interval": None,
    "keepalives_count": None,
    "tcp_user_timeout": None,
    "replication": None,
    "gssencmode": "PGGSSENCMODE",
    "sslmode": "PGSSLMODE",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE",
    "sslpassword": None,
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "sslkeylogfile": None,
    "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "min_protocol_version": "PGMINPROTOCOLVERSION",
    "max_protocol_version": "PGMAXPROTOCOLVERSION",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "service": "PGSERVICE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
    "oauth_issuer": None,
    "oauth_client_id": None,
    "oauth_client_secret": None,
    "oauth_scope": None,
    "scram_client_key": None,
    "scram_server_key": None,
}
ENV = {key: var for key, var in KEYWORDS.items() if var is not None}
# Secrets: never in the configuration file (the configuration refuses them there).
SECRET_KEYWORDS = ("password", "sslpassword", "oauth_client_secret", "scram_client_key")
_NUMERIC = (
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class ConnInfoError(ValueError):
    pass


def setting(params: dict[str, str], key: str) -> str | None:
    """The keyword's value, else its environment variable's (libpq's order)."""
    value = params.get(key)
    if value is None and (var := ENV.get(key)):
        value = os.environ.get(var)
    return value


def check_key(key: str) -> None:
    if key not in KEYWORDS:
        raise ConnInfoError(f"unknown parameter {key!r}")


def check_value(key: str, value: str) -> None:
    # Fail here, at start-up, not at connect time.
    if key in _NUMERIC and not value.strip().lstrip("-").isdigit():
        raise ConnInfoError(f"{key} must be a whole number, not {value!r}")
    if key == "port" and not all(p.strip().isdigit() for p in value.split(",")):
        raise ConnInfoError(f"port must be a whole number, not {value!r}")
    if key == "sslmode" and value not in SSLMODES:
        raise ConnInfoError(f"sslmode {value!r} is not one of {', '.join(SSLMODES)}")
    if "\n" in value or "\r" in value:
        # A line break would end the value early in the service file written for libpq.
        raise ConnInfoError(f"the value of {key} contains a line break")
