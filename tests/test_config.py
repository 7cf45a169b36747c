"""Configuration: every bad setting gets one sentence naming it and the fix; the CLI shows
that sentence (no traceback) and exits 2; environment overrides; no password in output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from glacierd.config import ConfigError, config_from_dict
from tests.config_helpers import (
    DELETE,
    assert_one_line_error,
    base_settings,
    clean_env,
    merged,
    resolve,
    run_cli,
)
from tests.conftest import to_toml


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch)


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    return base_settings(tmp_path)


# (id, overrides, what the message starts with, fragments it must also contain)
BAD: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    (
        "dsn-missing",
        {"database": {"dsn": DELETE}},
        "database.dsn names no database",
        ("postgresql://user@host/dbname", "PGDATABASE"),
    ),
    (
        "dsn-without-dbname",
        {"database": {"dsn": "postgresql://postgres@127.0.0.1:5432"}},
        "database.dsn names no database",
        ("set it to postgresql://user@host/dbname",),
    ),
    (
        "database-section-missing",
        {"database": DELETE},
        "database.dsn names no database",
        ("set it to",),
    ),
    (
        "dsn-unknown-parameter",
        {"database": {"dsn": "host=h dbname=x colour=blue"}},
        "database.dsn (or GLACIERD_DATABASE_DSN) is not a valid libpq connection string",
        ("unknown parameter 'colour'", "write it as postgresql://"),
    ),
    (
        "dsn-garbage",
        {"database": {"dsn": "just some words"}},
        "database.dsn (or GLACIERD_DATABASE_DSN) is not a valid libpq connection string",
        ("write it as",),
    ),
    (
        "dsn-bad-port",
        {"database": {"dsn": "postgresql://h:99999/db"}},
        "database.dsn (or GLACIERD_DATABASE_DSN) is not a valid",
        ("from 1 to 65535",),
    ),
    (
        "dsn-bad-ipv6",
        {"database": {"dsn": "postgresql://u@[::1/db"}},
        "database.dsn (or GLACIERD_DATABASE_DSN) is not a valid",
        ("IPv6",),
    ),
    (
        "dsn-not-a-string",
        {"database": {"dsn": 5432}},
        "database.dsn must be a string",
        ("got 5432",),
    ),
    (
        "database-not-a-table",
        {"database": "postgresql://h/db"},
        "[database] must be a table",
        ("write it as a [database] section",),
    ),
    (
        "catalog-dsn-invalid",
        {"catalog": {"dsn": "host=h colour=blue"}},
        "catalog.dsn (or GLACIERD_CATALOG_DSN) is not a valid libpq connection string",
        (),
    ),
    (
        "catalog-schema",
        {"catalog": {"schema": "Glacier-D"}},
        "catalog.schema 'Glacier-D' is not a plain lower-case SQL identifier",
        ("'glacierd'",),
    ),
    (
        "files-root-missing",
        {"files": {"root": "{tmp}/nowhere"}},
        "files.root '{tmp}/nowhere' is not a directory",
        ("create it or point files.root",),
    ),
    (
        "files-root-is-a-file",
        {"files": {"root": "{tmp}/a-file"}},
        "files.root '{tmp}/a-file' is not a directory",
        ("create it",),
    ),
    (
        "files-root-relative",
        {"files": {"root": "files"}},
        "files.root must be an absolute path",
        ("got 'files'",),
    ),
    (
        "orphan-dir-relative",
        {"files": {"orphan_dir": "orphans"}},
        "files.orphan_dir must be an absolute path",
        ("got 'orphans'",),
    ),
    (
        "orphan-dir-inside-root",
        {"files": {"orphan_dir": "{tmp}/files/orphans"}},
        "files.orphan_dir lies inside files.root",
        ("put it beside the root", "{tmp}/orphan_files"),
    ),
    (
        "orphan-dir-is-root",
        {"files": {"orphan_dir": "{tmp}/files"}},
        "files.orphan_dir lies inside files.root",
        ("{tmp}/orphan_files",),
    ),
    (
        "upload-concurrency-zero",
        {"files": {"upload_concurrency": 0}},
        "files.upload_concurrency must be greater than zero",
        ("got 0",),
    ),
    (
        "state-dir-relative",
        {"state_dir": "state"},
        "state_dir must be an absolute path",
        ("got 'state'",),
    ),
    (
        "store-type-unknown",
        {"store": {"type": "ftp"}},
        "store.type is 'ftp'",
        ("use one of: local, s3, vault",),
    ),
    (
        "local-path-relative",
        {"store": {"local": {"path": "vault"}}},
        "store.local.path must be an absolute path",
        (),
    ),
    (
        "local-delay-negative",
        {"store": {"local": {"retrieval_delay_seconds": -1}}},
        "store.local.retrieval_delay_seconds must be zero or more",
        ("got -1",),
    ),
    (
        "typo-top-level-section",
        {"databse": {"dsn": "postgresql://h/db"}},
        "databse is not a known setting",
        ("check its spelling", "glacierd.example.toml"),
    ),
    (
        "typo-replacing-a-section",
        {"database": DELETE, "databse": {"dsn": "postgresql://h/db"}},
        "databse is not a known setting",
        ("check its spelling",),
    ),
    (
        "typo-top-level-key",
        {"state_dri": "/tmp/x"},
        "state_dri is not a known setting",
        ("check its spelling",),
    ),
    (
        "typo-in-database",
        {"database": {"pg_dmp": "/usr/bin/pg_dump"}},
        "database.pg_dmp is not a known setting",
        ("check its spelling",),
    ),
    ("typo-in-store", {"store": {"bucket": "b"}}, "store.bucket is not a known setting", ()),
    (
        "typo-in-store-local",
        {"store": {"local": {"pth": "/x"}}},
        "store.local.pth is not a known setting",
        (),
    ),
    (
        "typo-in-schedule",
        {"schedule": {"backup_corn": "0 3 * * *"}},
        "schedule.backup_corn is not a known setting",
        (),
    ),
    ("typo-in-api", {"api": {"hots": "127.0.0.1"}}, "api.hots is not a known setting", ()),
    (
        "typo-in-s3",
        {"store": {"type": "s3", "s3": {"bucket": "my-bucket", "regoin": "x"}}},
        "store.s3.regoin is not a known setting",
        (),
    ),
    (
        "cron-out-of-range",
        {"schedule": {"backup_cron": "61 * * * *"}},
        "schedule.backup_cron '61 * * * *'",
        ("is not valid", "'0 3 * * *'"),
    ),
    (
        "cron-words",
        {"schedule": {"backup_cron": "every day"}},
        "schedule.backup_cron 'every day'",
        ("five cron fields",),
    ),
    (
        "timezone-unknown",
        {"schedule": {"timezone": "Mars/Olympus_Mons"}},
        "schedule.timezone 'Mars/Olympus_Mons' is not a known timezone",
        ("IANA", "'UTC'"),
    ),
    (
        "timezone-escape",
        {"schedule": {"timezone": "../etc/passwd"}},
        "schedule.timezone '../etc/passwd' is not a known timezone",
        (),
    ),
    (
        "schedule-enabled-string",
        {"schedule": {"enabled": "no"}},
        "schedule.enabled must be true or false",
        ("got 'no'",),
    ),
    (
        "poll-interval-negative",
        {"schedule": {"poll_interval_seconds": -5}},
        "schedule.poll_interval_seconds must be greater than zero",
        (),
    ),
    (
        "api-host-any",
        {"api": {"host": "0.0.0.0"}},
        "api.host '0.0.0.0' is not a loopback address",
        ("127.0.0.1, ::1 or a unix socket",),
    ),
    ("api-host-any-v6", {"api": {"host": "::"}}, "api.host '::' is not a loopback address", ()),
    (
        "api-host-private",
        {"api": {"host": "10.0.0.1"}},
        "api.host '10.0.0.1' is not a loopback address",
        ("api.socket",),
    ),
    (
        "api-host-name",
        {"api": {"host": "example.com"}},
        "api.host 'example.com' is not a loopback address",
        (),
    ),
    ("api-port-zero", {"api": {"port": 0}}, "api.port 0 is out of range", ("between 1 and 65535",)),
    (
        "api-port-high",
        {"api": {"port": 65536}},
        "api.port 65536 is out of range",
        ("between 1 and 65535",),
    ),
    ("api-port-string", {"api": {"port": "80"}}, "api.port must be a whole number", ("got '80'",)),
    (
        "api-port-bool",
        {"api": {"port": True}},
        "api.port must be a whole number",
        ("not true/false",),
    ),
    ("api-port-float", {"api": {"port": 80.5}}, "api.port must be a whole number", ("got 80.5",)),
    (
        "api-socket-relative",
        {"api": {"socket": "glacierd.sock"}},
        "api.socket must be an absolute path",
        (),
    ),
    (
        "s3-without-bucket",
        {"store": {"type": "s3"}},
        "store.s3.bucket is missing",
        ("set it to the name of your S3 bucket",),
    ),
    (
        "s3-empty-bucket",
        {"store": {"type": "s3", "s3": {"bucket": ""}}},
        "store.s3.bucket is missing",
        (),
    ),
    (
        "s3-bucket-uppercase",
        {"store": {"type": "s3", "s3": {"bucket": "My_Bucket"}}},
        "store.s3.bucket 'My_Bucket' is not a valid bucket name",
        ("3–63 lower-case",),
    ),
    (
        "s3-bucket-short",
        {"store": {"type": "s3", "s3": {"bucket": "ab"}}},
        "store.s3.bucket 'ab' is not a valid bucket name",
        (),
    ),
    (
        "s3-bucket-trailing-hyphen",
        {"store": {"type": "s3", "s3": {"bucket": "backups-"}}},
        "store.s3.bucket 'backups-' is not a valid bucket name",
        (),
    ),
    (
        "s3-storage-class",
        {"store": {"type": "s3", "s3": {"bucket": "b-1", "storage_class": "COLD"}}},
        "store.s3.storage_class is 'COLD'",
        ("use one of: GLACIER, DEEP_ARCHIVE, GLACIER_IR",),
    ),
    (
        "s3-storage-class-lowercase",
        {"store": {"type": "s3", "s3": {"bucket": "b-1", "database_storage_class": "glacier"}}},
        "store.s3.database_storage_class is 'glacier'",
        ("GLACIER",),
    ),
    (
        "s3-tier",
        {"store": {"type": "s3", "s3": {"bucket": "b-1", "default_tier": "Fast"}}},
        "store.s3.default_tier is 'Fast'",
        ("Expedited, Standard, Bulk",),
    ),
    (
        "s3-restore-days",
        {"store": {"type": "s3", "s3": {"bucket": "b-1", "restore_days": 0}}},
        "store.s3.restore_days must be greater than zero",
        (),
    ),
    (
        "vault-part-size-not-power",
        {"store": {"type": "vault", "vault": {"vault": "v", "part_size": 3 * 2**20}}},
        "store.vault.part_size 3145728 is not 1 MiB times a power of two",
        ("8388608",),
    ),
    (
        "vault-part-size-not-mib",
        {"store": {"type": "vault", "vault": {"vault": "v", "part_size": 1000}}},
        "store.vault.part_size 1000 is not 1 MiB times a power of two",
        (),
    ),
    (
        "vault-name-missing",
        {"store": {"type": "vault"}},
        "store.vault.vault is missing",
        ("your Glacier vault",),
    ),
    (
        "sns-enabled-without-topics",
        {"sns": {"enabled": True}},
        "sns.enabled is true but sns.topic_arns is empty",
        ("list the topic ARNs",),
    ),
    (
        "sns-bad-arn",
        {"sns": {"topic_arns": ["arn:aws:sqs:eu-west-1:123456789012:q"]}},
        "sns.topic_arns holds 'arn:aws:sqs:eu-west-1:123456789012:q'",
        ("not an SNS topic ARN", "arn:aws:sns:REGION:ACCOUNT:TOPIC"),
    ),
    ("sns-arn-not-string", {"sns": {"topic_arns": [42]}}, "sns.topic_arns holds 42", ()),
    (
        "sns-topics-not-list",
        {"sns": {"topic_arns": "arn:aws:sns:eu-west-1:1:t"}},
        "sns.topic_arns must be a list",
        (),
    ),
    ("sns-path", {"sns": {"path": "sns"}}, "sns.path 'sns' must start with '/'", ("'/sns'",)),
    (
        "sns-port",
        {"sns": {"port": 70000}},
        "sns.port 70000 is out of range",
        ("between 1 and 65535",),
    ),
    (
        "logging-format",
        {"logging": {"format": "xml"}},
        "logging.format is 'xml'",
        ("auto, json, console",),
    ),
    (
        "logging-level",
        {"logging": {"level": "verbose"}},
        "logging.level is 'verbose'",
        ("debug, info, warning, error",),
    ),
    (
        "logging-file-relative",
        {"logging": {"file": "glacierd.log"}},
        "logging.file must be an absolute path",
        (),
    ),
    (
        "restore-snapshot-string",
        {"restore": {"snapshot": "yes"}},
        "restore.snapshot must be true or false",
        ("got 'yes'",),
    ),
    (
        "restore-keep-zero",
        {"restore": {"snapshot_keep": 0}},
        "restore.snapshot_keep must be greater than zero",
        (),
    ),
    (
        "shutdown-timeout",
        {"shutdown_timeout_seconds": 0},
        "shutdown_timeout_seconds must be greater than zero",
        (),
    ),
]


@pytest.mark.parametrize(
    ("overrides", "starts", "fragments"),
    [pytest.param(o, s, f, id=i) for i, o, s, f in BAD],
)
def test_bad_setting_gets_one_clear_sentence(
    base: dict[str, Any],
    tmp_path: Path,
    overrides: dict[str, Any],
    starts: str,
    fragments: tuple[str, ...],
) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    data = merged(base, resolve(overrides, tmp_path))
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    message = str(err.value)
    assert message.startswith(resolve(starts, tmp_path)), message
    for fragment in fragments:
        assert resolve(fragment, tmp_path) in message, message
    assert "\n" not in message
    assert message.endswith("."), message
    assert "Traceback" not in message


def test_base_settings_are_valid(base: dict[str, Any], tmp_path: Path) -> None:
    cfg = config_from_dict(base)
    assert cfg.database.conninfo.params == {
        "user": "postgres",
        "host": "127.0.0.1",
        "port": "5432",
        "dbname": "app",
    }
    # The catalog lives in the backed-up database unless told otherwise.
    assert cfg.catalog.conninfo == cfg.database.conninfo
    assert cfg.catalog.schema == "glacierd"
    assert cfg.files.root == tmp_path / "files"
    assert cfg.files.orphan_dir == tmp_path / "orphans"
    assert cfg.store.type == "local" and cfg.store.name == "local"
    assert cfg.store.local is not None and cfg.store.local.path == tmp_path / "state" / "vault"
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.api.base_url == "http://127.0.0.1:8470"


def test_defaults_when_optional_sections_are_absent(tmp_path: Path) -> None:
    cfg = config_from_dict({"database": {"dsn": "dbname=app"}, "state_dir": str(tmp_path)})
    assert cfg.files.root is None
    assert cfg.store.local is not None and cfg.store.local.path == tmp_path / "vault"
    assert (cfg.schedule.backup_cron, cfg.schedule.timezone) == ("0 3 * * *", "UTC")
    assert (cfg.api.host, cfg.api.port) == ("127.0.0.1", 8470)
    assert cfg.sns.enabled is False
    assert (cfg.logging.format, cfg.logging.level) == ("auto", "info")


def test_orphan_dir_defaults_beside_the_root(base: dict[str, Any], tmp_path: Path) -> None:
    cfg = config_from_dict(merged(base, {"files": {"orphan_dir": DELETE}}))
    assert cfg.files.orphan_dir == tmp_path / "orphan_files"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.53"])
def test_loopback_api_hosts_are_accepted(base: dict[str, Any], host: str) -> None:
    cfg = config_from_dict(merged(base, {"api": {"host": host, "port": 9000}}))
    assert cfg.api.host == host
    expected = "http://[::1]:9000" if host == "::1" else f"http://{host}:9000"
    assert cfg.api.base_url == expected


@pytest.mark.parametrize("port", [1, 65535])
def test_port_bounds_are_accepted(base: dict[str, Any], port: int) -> None:
    assert config_from_dict(merged(base, {"api": {"port": port}})).api.port == port


def test_valid_s3_store(base: dict[str, Any]) -> None:
    cfg = config_from_dict(
        merged(
            base,
            {
                "store": {
                    "type": "s3",
                    "name": "offsite",
                    "s3": {
                        "bucket": "my-backups.example",
                        "prefix": "/app/db",
                        "region": "eu-west-1",
                        "storage_class": "DEEP_ARCHIVE",
                        "files_storage_class": "GLACIER_IR",
                    },
                }
            },
        )
    )
    s3 = cfg.store.s3
    assert cfg.store.type == "s3" and cfg.store.name == "offsite"
    assert s3 is not None and s3.bucket == "my-backups.example"
    assert s3.prefix == "app/db/"
    assert s3.class_for("database") == "DEEP_ARCHIVE"
    assert s3.class_for("file") == "GLACIER_IR"


def test_valid_vault_store(base: dict[str, Any]) -> None:
    cfg = config_from_dict(
        merged(
            base,
            {
                "store": {
                    "type": "vault",
                    "vault": {
                        "vault": "archive",
                        "part_size": 16 * 2**20,
                        "account_id": "123456789012",
                    },
                }
            },
        )
    )
    vault = cfg.store.vault
    assert vault is not None
    assert (vault.vault, vault.part_size, vault.account_id) == (
        "archive",
        16 * 2**20,
        "123456789012",
    )


@pytest.mark.parametrize("cron", ["0 3 * * *", "*/5 * * * * *", "30 2 * * mon-fri"])
def test_valid_cron_and_timezone(base: dict[str, Any], cron: str) -> None:
    cfg = config_from_dict(
        merged(base, {"schedule": {"backup_cron": cron, "timezone": "Europe/Berlin"}})
    )
    trigger = cfg.schedule.trigger()
    assert str(trigger.timezone) == "Europe/Berlin"


def test_sns_enabled_with_topics(base: dict[str, Any]) -> None:
    arn = "arn:aws:sns:eu-west-1:123456789012:glacierd"
    cfg = config_from_dict(merged(base, {"sns": {"enabled": True, "topic_arns": [arn]}}))
    assert cfg.sns.enabled and cfg.sns.topic_arns == (arn,)


def test_env_dsn_overrides_the_file(base: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLACIERD_DATABASE_DSN", "postgresql://envuser@envhost:6543/envdb")
    cfg = config_from_dict(base)  # the file's dsn is still a known, accepted setting
    assert cfg.database.conninfo.params == {
        "user": "envuser",
        "host": "envhost",
        "port": "6543",
        "dbname": "envdb",
    }
    assert cfg.catalog.conninfo == cfg.database.conninfo


def test_env_dsn_supplies_a_missing_dsn(
    base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLACIERD_DATABASE_DSN", "host=envhost dbname=envdb")
    monkeypatch.setenv("GLACIERD_CATALOG_DSN", "host=cathost dbname=catdb")
    cfg = config_from_dict(merged(base, {"database": {"dsn": DELETE}}))
    assert cfg.database.conninfo.params == {"host": "envhost", "dbname": "envdb"}
    assert cfg.catalog.conninfo.params == {"host": "cathost", "dbname": "catdb"}


def test_invalid_env_dsn_names_the_variable(
    base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLACIERD_DATABASE_DSN", "host=h colour=blue")
    with pytest.raises(ConfigError, match=r"\(or GLACIERD_DATABASE_DSN\)"):
        config_from_dict(base)


def test_pgdatabase_satisfies_a_dsn_without_dbname(
    base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGDATABASE", "fromenv")
    cfg = config_from_dict(merged(base, {"database": {"dsn": "host=h"}}))
    assert cfg.database.conninfo.dbname == "fromenv"


# ---------------------------------------------------------------------------------------------
# The CLI: `glacierd --config X check-config` as an operator runs it.


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        pytest.param(
            {"api": {"host": "0.0.0.0"}}, ("api.host '0.0.0.0' is not a loopback",), id="api-host"
        ),
        pytest.param({"api": {"port": "80"}}, ("api.port must be a whole number",), id="port-type"),
        pytest.param({"store": {"type": "s3"}}, ("store.s3.bucket is missing",), id="s3-bucket"),
        pytest.param({"databse": {}}, ("databse is not a known setting",), id="typo"),
        pytest.param(
            {"database": {"dsn": "postgresql://u@[::1/db"}},
            ("database.dsn (or GLACIERD_DATABASE_DSN) is not a valid",),
            id="bad-uri",
        ),
        pytest.param(
            {"files": {"root": "/nonexistent/glacierd-files"}},
            ("files.root '/nonexistent/glacierd-files' is not a directory",),
            id="root",
        ),
    ],
)
def test_cli_check_config_reports_bad_settings(
    base: dict[str, Any], tmp_path: Path, overrides: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    path = tmp_path / "glacierd.toml"
    path.write_text(to_toml(merged(base, overrides)))
    assert_one_line_error(run_cli(path), *fragments)


def test_cli_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    assert_one_line_error(
        run_cli(missing), f"configuration file {missing} does not exist", "--config PATH"
    )


def test_cli_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[database]\ndsn = "postgresql://h/db\n')
    assert_one_line_error(run_cli(path), f"configuration file {path} is not valid TOML", "line 2")


def test_cli_config_is_a_directory(tmp_path: Path) -> None:
    assert_one_line_error(run_cli(tmp_path), f"configuration file {tmp_path} cannot be read")


def test_cli_valid_config(base: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "glacierd.toml"
    path.write_text(to_toml(base))
    proc = run_cli(path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"configuration {path} is valid: database postgres@127.0.0.1:5432/app, store local "
        f"(local), files {tmp_path / 'files'}, schedule '0 3 * * *' UTC"
    )


def test_cli_env_dsn_wins_and_password_never_shown(base: dict[str, Any], tmp_path: Path) -> None:
    # (A password in the file itself is refused: see test_a_password_in_the_file_dsn_is_refused.)
    data = merged(base, {"database": {"dsn": "postgresql://fileuser@filehost/filedb"}})
    path = tmp_path / "glacierd.toml"
    path.write_text(to_toml(data))
    proc = run_cli(
        path, env={"GLACIERD_DATABASE_DSN": "postgresql://envuser:hunter2secret@envhost:6543/envdb"}
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "database envuser@envhost:6543/envdb," in out
    assert "filehost" not in out
    assert "hunter2secret" not in out


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:hunter2secret@h:99999/db",
        "host=h password=hunter2secret colour=blue",
        "host=h password=hunter2 secret dbname=x",
        "=x password=hunter2secret",
    ],
)
def test_cli_invalid_dsn_error_hides_the_password(
    base: dict[str, Any], tmp_path: Path, dsn: str
) -> None:
    path = tmp_path / "glacierd.toml"
    path.write_text(to_toml(merged(base, {"database": {"dsn": dsn}})))
    line = assert_one_line_error(run_cli(path), "database.dsn")
    assert "hunter2" not in line and "secret" not in line


def test_a_section_for_another_store_type_is_refused(base: dict[str, Any]) -> None:
    data = merged(base, {"store": {"s3": {"bukket": "typo"}}})
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert str(err.value) == (
        "[store.s3] is set but store.type is 'local'; remove that section or set store.type = 's3'."
    )


def test_vault_part_size_is_capped_at_4_gib(base: dict[str, Any]) -> None:
    data = merged(
        base, {"store": {"type": "vault", "vault": {"vault": "v", "part_size": 8192 * 2**20}}}
    )
    with pytest.raises(ConfigError, match="power of two up to 4 GiB"):
        config_from_dict(data)


@pytest.mark.parametrize("partition", ["aws", "aws-cn", "aws-us-gov"])
def test_sns_topics_in_every_partition(base: dict[str, Any], partition: str) -> None:
    arn = f"arn:{partition}:sns:us-east-1:123456789012:glacierd"
    cfg = config_from_dict(merged(base, {"sns": {"enabled": True, "topic_arns": [arn]}}))
    assert cfg.sns.topic_arns == (arn,)


# ---------------------------------------------------------------------------------------------
# Secrets and test-only settings that must not reach a production configuration.


@pytest.mark.parametrize(
    ("section", "dsn"),
    [
        ("database", "postgresql://app:hunter2secret@db.example/app"),
        ("database", "host=db.example dbname=app password='hunter2secret'"),
        ("catalog", "postgresql://cat:hunter2secret@db.example/catalog"),
    ],
)
def test_a_password_in_the_file_dsn_is_refused(
    base: dict[str, Any], tmp_path: Path, section: str, dsn: str
) -> None:
    path = tmp_path / "glacierd.toml"
    path.write_text(to_toml(merged(base, {section: {"dsn": dsn}})))
    line = assert_one_line_error(run_cli(path), f"{section}.dsn contains a password")
    assert "hunter2" not in line
    assert ".pgpass" in line and "GLACIERD_" in line  # where it goes instead


def test_a_password_in_the_file_is_refused_even_when_the_environment_overrides_it(
    base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = merged(base, {"database": {"dsn": "postgresql://u:hunter2secret@h/db"}})
    monkeypatch.setenv("GLACIERD_DATABASE_DSN", "postgresql://u@h/db")
    with pytest.raises(ConfigError, match=r"^database\.dsn contains a password"):
        config_from_dict(data)


def test_a_password_in_the_environment_dsn_is_accepted(
    base: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLACIERD_DATABASE_DSN", "postgresql://u:hunter2secret@h/db")
    cfg = config_from_dict(base)
    assert cfg.database.conninfo.params["password"] == "hunter2secret"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "sns.example.com"])
def test_cert_url_override_on_a_public_sns_listener_is_refused(
    base: dict[str, Any], host: str
) -> None:
    data = merged(
        base,
        {
            "sns": {
                "enabled": True,
                "host": host,
                "topic_arns": ["arn:aws:sns:eu-west-1:123456789012:glacierd"],
                "cert_url_override": "http://127.0.0.1:9/cert.pem",
            }
        },
    )
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    message = str(err.value)
    assert message.startswith("sns.cert_url_override is for tests only"), message
    assert host in message and "remove sns.cert_url_override" in message


def test_cert_url_override_on_loopback_is_accepted(base: dict[str, Any]) -> None:
    data = merged(
        base,
        {
            "sns": {
                "enabled": True,
                "host": "127.0.0.1",
                "topic_arns": ["arn:aws:sns:eu-west-1:123456789012:glacierd"],
                "cert_url_override": "http://127.0.0.1:9/cert.pem",
            }
        },
    )
    assert config_from_dict(data).sns.cert_url_override == "http://127.0.0.1:9/cert.pem"
