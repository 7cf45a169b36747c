"""Configuration problems: all reported at once, in file order, each with its setting, what
is wrong (detail) and what to do (fix); misspelt names get a suggestion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from glacierd.config import ConfigError, ConfigProblem, config_from_dict
from tests.config_helpers import DELETE, base_settings, clean_env, merged, run_cli
from tests.conftest import to_toml

SPELLING = "check its spelling against deploy/glacierd.example.toml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env(monkeypatch)


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    return base_settings(tmp_path)


def problems(data: dict[str, Any]) -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    return err.value.problems


# Six problems in five sections; written in this order in the file (dicts keep order).
SEVERAL = {
    "state_dir": "relative/state",
    "database": {"pg_dmp": "/usr/bin/pg_dump"},
    "store": {"type": "s3", "s3": {"bucket": "Bad_Bucket", "restore_days": 0}},
    "api": {"host": "0.0.0.0", "port": "80"},
    "logging": {"level": "loud"},
}
SEVERAL_SENTENCES = [
    "state_dir must be an absolute path; got 'relative/state'.",
    "database.pg_dmp is not a known setting (did you mean database.pg_dump?); " + SPELLING + ".",
    "store.s3.bucket 'Bad_Bucket' is not a valid bucket name; use 3–63 lower-case letters, "
    "digits, dots and hyphens.",
    "store.s3.restore_days must be greater than zero; got 0.",
    "api.host '0.0.0.0' is not a loopback address; the control API must stay on 127.0.0.1, "
    "::1 or a unix socket (api.socket) — put a proxy in front if needed.",
    "api.port must be a whole number; got '80'.",
    "logging.level is 'loud'; use one of: debug, info, warning, error.",
]


def test_every_problem_is_reported_at_once_in_file_order(base: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(merged(base, SEVERAL), Path("/etc/glacierd/glacierd.toml"))
    found = err.value.problems
    assert [p.sentence for p in found] == SEVERAL_SENTENCES
    assert [p.setting for p in found] == [
        "state_dir",
        "database.pg_dmp",
        "store.s3.bucket",
        "store.s3.restore_days",
        "api.host",
        "api.port",
        "logging.level",
    ]
    assert str(err.value).splitlines() == [
        "configuration file /etc/glacierd/glacierd.toml has 7 problems:",
        *(f"  {sentence}" for sentence in SEVERAL_SENTENCES),
    ]
    assert err.value.detail == "configuration file /etc/glacierd/glacierd.toml has 7 problems"
    assert err.value.fix is not None and "check-config" in err.value.fix


def test_cli_prints_every_problem(base: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "glacierd.toml"
    path.write_text(to_toml(merged(base, SEVERAL)))
    proc = run_cli(path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"glacierd: configuration file {path} has 7 problems:",
        *(f"  {sentence}" for sentence in SEVERAL_SENTENCES),
    ]


def test_each_problem_carries_detail_and_fix(base: dict[str, Any]) -> None:
    (host,) = problems(merged(base, {"api": {"host": "10.0.0.1"}}))
    assert host == ConfigProblem(
        "api.host '10.0.0.1' is not a loopback address",
        "the control API must stay on 127.0.0.1, ::1 or a unix socket (api.socket) — put a "
        "proxy in front if needed",
        "api.host",
    )
    assert host.sentence == f"{host.detail}; {host.fix}."
    # A type error keeps the wording it always had; its halves still say what and how.
    (port,) = problems(merged(base, {"api": {"port": True}}))
    assert (port.setting, port.detail, port.fix) == (
        "api.port",
        "api.port is true, not a whole number",
        "write a whole number",
    )
    assert port.sentence == "api.port must be a whole number, not true/false."
    # A rule across settings names the setting to change.
    (orphans,) = problems(merged(base, {"files": {"orphan_dir": base["files"]["root"] + "/o"}}))
    assert orphans.setting == "files.orphan_dir"
    assert orphans.detail == "files.orphan_dir lies inside files.root"


def test_a_single_problem_is_the_error_itself(base: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(merged(base, {"schedule": {"timezone": "Mars/Olympus_Mons"}}))
    error = err.value
    assert (error.detail, error.fix) == (
        "schedule.timezone 'Mars/Olympus_Mons' is not a known timezone",
        "use an IANA name such as 'UTC' or 'Europe/Berlin'",
    )
    assert str(error) == f"{error.detail}; {error.fix}."
    assert len(error.problems) == 1 and error.problems[0].setting == "schedule.timezone"


def test_config_error_raised_in_code_keeps_its_sentence() -> None:
    error = ConfigError("logging.file /x cannot be opened", "create its directory")
    assert str(error) == "logging.file /x cannot be opened; create its directory."
    assert (error.detail, error.fix) == ("logging.file /x cannot be opened", "create its directory")
    whole = ConfigError("a sentence that says both; and how.")
    assert str(whole) == "a sentence that says both; and how."


@pytest.mark.parametrize(
    ("overrides", "sentence"),
    [
        pytest.param(
            {"database": DELETE, "databse": {"dsn": "postgresql://h/db"}},
            "databse is not a known setting (did you mean [database]?)",
            id="top-level",
        ),
        pytest.param(
            {"schedul": {"enabled": False}},
            "schedul is not a known setting (did you mean [schedule]?)",
            id="top-level-beside-the-default",
        ),
        pytest.param(
            {"store": {"type": "s3", "s33": {"bucket": "my-bucket"}}},
            "store.s33 is not a known setting (did you mean [store.s3]?)",
            id="nested",
        ),
        pytest.param(
            {"store": {"type": "vault", "valut": {"vault": "v"}}},
            "store.valut is not a known setting (did you mean [store.vault]?)",
            id="nested-vault",
        ),
    ],
)
def test_a_misspelt_section_is_named_and_its_absence_adds_nothing(
    base: dict[str, Any], overrides: dict[str, Any], sentence: str
) -> None:
    # Without the suggestion's rule, the missing [database] dsn (or store bucket/vault)
    # would be reported too, although the misspelling is the one thing to fix.
    (only,) = problems(merged(base, overrides))
    assert only.sentence == f"{sentence}; {SPELLING}."


def test_a_misspelt_section_does_not_hide_other_problems(base: dict[str, Any]) -> None:
    found = problems(merged(base, {"databse": {}, "api": {"port": 0}}))
    assert [p.setting for p in found] == ["api.port", "databse"]


@pytest.mark.parametrize(
    ("overrides", "setting", "meant"),
    [
        ({"database": {"pg_dmp": "x"}}, "database.pg_dmp", "database.pg_dump"),
        ({"api": {"hots": "127.0.0.1"}}, "api.hots", "api.host"),
        ({"state_dri": "/x"}, "state_dri", "state_dir"),
        ({"store": {"local": {"pth": "/x"}}}, "store.local.pth", "store.local.path"),
        ({"restore": {"snapshots": True}}, "restore.snapshots", "restore.snapshot"),
        # The right name in the wrong section: where it belongs.
        ({"store": {"bucket": "b"}}, "store.bucket", "store.s3.bucket"),
        ({"dsn": "host=h"}, "dsn", "database.dsn or catalog.dsn"),
        (
            {"logging": {"topic_arns": []}},
            "logging.topic_arns",
            "sns.topic_arns or sqs.topic_arns",
        ),
    ],
)
def test_a_misspelt_key_gets_a_suggestion(
    base: dict[str, Any], overrides: dict[str, Any], setting: str, meant: str
) -> None:
    (only,) = problems(merged(base, overrides))
    assert only.setting == setting
    assert only.detail == f"{setting} is not a known setting (did you mean {meant}?)"
    assert only.fix == SPELLING


def test_an_unknown_key_like_nothing_known_gets_no_guess(base: dict[str, Any]) -> None:
    (only,) = problems(merged(base, {"api": {"xyzzy": 1}}))
    assert only.sentence == f"api.xyzzy is not a known setting; {SPELLING}."


def test_no_password_in_any_problem(base: dict[str, Any]) -> None:
    data = merged(
        base,
        {
            "database": {"dsn": "postgresql://app:hunter2secret@db.example/app"},
            "catalog": {"dsn": "host=h password=hunter2secret colour=blue"},
            "api": {"port": -1},
        },
    )
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    text = str(err.value) + repr([vars(p) for p in err.value.problems])
    assert "hunter2" not in text
    # In file order: [catalog] comes last, added to the base settings.
    assert [p.setting for p in err.value.problems] == ["database.dsn", "api.port", "catalog.dsn"]
    # Nothing chained either: a traceback would print pydantic's errors, inputs included.
    assert err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (["postgresql://app:hunter2secret@db.example/app"], "a list"),
        ({"password": "hunter2secret"}, "a table"),
    ],
)
def test_a_dsn_of_the_wrong_type_is_not_shown(base: dict[str, Any], dsn: Any, shown: str) -> None:
    (only,) = problems(merged(base, {"database": {"dsn": dsn}}))
    assert only.sentence == f"database.dsn must be a string; got {shown}."
    assert (only.detail, only.fix) == (f"database.dsn is {shown}, not a string", "write a string")
